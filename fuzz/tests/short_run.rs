//! The short run of every fuzz target that CI makes, on stable Rust and without libFuzzer:
//! each seed in `corpus/<target>/` (among them every crash found so far, kept as a
//! regression seed), then mutations of the seeds — bit flips, interesting bytes, inserted
//! tokens, deletions, duplications, splices between seeds — drawn from a fixed seed, until
//! [`MUTATIONS`] inputs or [`BUDGET`] have been spent. The same inputs come every run, so a
//! failure here reproduces.
//!
//! A failure names the target and writes the input to a file whose path it prints; a panic
//! anywhere in the process counts, including one in a task the target's proxy spawned (the
//! panic hook records it). One test per target, so `cargo nextest` runs each in its own
//! process and two at a time.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// Time for mutations per target, after the seeds.
const BUDGET: Duration = Duration::from_millis(2500);
/// Most mutated inputs per target: bounds the run on a fast machine.
const MUTATIONS: usize = 20_000;
/// Longest mutated input: long runs explore length; here it only costs time.
const MAX_LEN: usize = 32 * 1024;

/// Tokens worth inserting whole: framing, separators and numbers the parsers branch on.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b": ",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked\r\n",
    b"0\r\n\r\n",
    b"Host: a\r\n",
    b" HTTP/1.1\r\n",
    b"%2e",
    b"%2f",
    b"/../",
    b"//",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b"- ",
    b"---\n",
    b"&a ",
    b"*a",
    b"!!binary ",
    b"null",
    b"true",
    b"-1",
    b"0",
    b"4294967296",
    b"18446744073709551616",
    b"1e309",
    b"65536",
    b"NaN",
    b"::",
    b"/32",
    b"\x00",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
];

/// Bytes worth setting one byte to.
const BYTES: &[u8] = b"\0\r\n\t :;,/%.\\\"'{}[]-_#?=&*@0129afAFxX\x7f\x80\xff";

/// The first panic since the last input, from any thread.
static PANICKED: Mutex<Option<String>> = Mutex::new(None);

fn record_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let mut p = PANICKED.lock().unwrap_or_else(|e| e.into_inner());
            if p.is_none() {
                let thread = std::thread::current().name().unwrap_or("unnamed").to_owned();
                *p = Some(format!("thread '{thread}': {info}"));
            }
            drop(p);
            default(info);
        }));
    });
}

/// xorshift64*: small, fixed and good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// FNV-1a: a fixed seed per target name, and names for written inputs.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut d = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(d.len() + 1);
        match rng.below(8) {
            0 if !d.is_empty() => {
                let i = at.min(d.len() - 1);
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => {
                let i = at.min(d.len() - 1);
                d[i] = BYTES[rng.below(BYTES.len())];
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                d.splice(at..at, t.iter().copied());
            }
            3 => {
                let end = (at + 1 + rng.below(16)).min(d.len());
                d.drain(at.min(end)..end);
            }
            4 if !d.is_empty() => {
                // A run of the input again, somewhere else (repeated headers, list items).
                let start = rng.below(d.len());
                let end = (start + 1 + rng.below(64)).min(d.len());
                let run = d[start..end].to_vec();
                let to = rng.below(d.len() + 1);
                d.splice(to..to, run);
            }
            5 => {
                // The head of this input, the tail of another.
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                d.truncate(at);
                d.extend_from_slice(&other[from..]);
            }
            6 => d.truncate(at),
            _ => {
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                d.splice(at..at, bytes);
            }
        }
    }
    d.truncate(MAX_LEN);
    d
}

fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))).collect()
}

/// Runs one input; on a panic, writes the input out and fails naming the target.
fn one(name: &str, target: weft_fuzz::Target, input: &[u8], origin: &str) {
    let unwound = std::panic::catch_unwind(|| target(input)).is_err();
    let recorded = PANICKED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if !unwound && recorded.is_none() {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("weft-fuzz");
    let path = dir.join(format!("{name}-{:016x}", fnv(input)));
    let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input));
    panic!(
        "fuzz target {name} failed on {origin} ({} bytes), written to {} ({written:?}):\n{}\n\
         reproduce: cargo +nightly fuzz run --fuzz-dir fuzz/libfuzzer {name} {}",
        input.len(),
        path.display(),
        recorded.as_deref().unwrap_or("(panicked; see the output above)"),
        path.display(),
    );
}

fn short_run(name: &str) {
    record_panics();
    let Some(&(_, target)) = weft_fuzz::TARGETS.iter().find(|(n, _)| *n == name) else { panic!("no fuzz target {name}") };
    let seeds = corpus(name);
    assert!(!seeds.is_empty(), "corpus/{name} has no seeds");
    let started = Instant::now();
    for (path, input) in &seeds {
        one(name, target, input, &format!("seed {}", path.display()));
    }
    let seeded = started.elapsed();
    let inputs: Vec<Vec<u8>> = seeds.into_iter().map(|(_, d)| d).collect();
    let mut rng = Rng(fnv(name.as_bytes()) | 1);
    let mut n = 0;
    let mutating = Instant::now();
    while n < MUTATIONS && mutating.elapsed() < BUDGET {
        let input = mutate(&mut rng, &inputs);
        n += 1;
        one(name, target, &input, &format!("mutation {n}"));
    }
    eprintln!("{name}: {} seeds in {seeded:.1?}, then {n} mutations in {:.1?}, no failure", inputs.len(), mutating.elapsed());
}

#[test]
fn targets_and_corpora_match() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut dirs: Vec<String> =
        std::fs::read_dir(&dir).expect("corpus/").filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    dirs.sort();
    let mut names: Vec<String> = weft_fuzz::TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    let mut tested: Vec<String> = TESTED.iter().map(|n| n.to_string()).collect();
    tested.sort();
    assert_eq!(dirs, names, "every target has a corpus directory, and every corpus directory a target");
    assert_eq!(tested, names, "every target has a short run below");
}

macro_rules! short_runs {
    ($($name:ident),* $(,)?) => {
        const TESTED: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                short_run(stringify!($name));
            }
        )*
    };
}

short_runs!(http1, h2, framing_scan, bootstrap, xds, istio, cni, capture_options, path_norm, sniff, dns);
