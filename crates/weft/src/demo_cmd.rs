//! `weft demo`: bookinfo on one machine through `weft up`, with mTLS on, a steady bounded
//! stream of requests to the product page, and a live view of what each service answered
//! and whether each hop between sidecars was mutual TLS. Ctrl-C (or --duration) tears it all
//! down. Without root, or without a tool the namespaces need, it runs in explicit mode by
//! itself and says so.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use crate::local_cmd::NetArgs;

const MESH: &str = include_str!("../../../samples/bookinfo/mesh.yaml");
const EXAMPLES: &[(&str, &str)] = &[
    ("virtual-service-reviews-v3.yaml", include_str!("../../../samples/bookinfo/virtual-service-reviews-v3.yaml")),
    ("virtual-service-reviews-jason-v2.yaml", include_str!("../../../samples/bookinfo/virtual-service-reviews-jason-v2.yaml")),
    ("fault-ratings-abort.yaml", include_str!("../../../samples/bookinfo/fault-ratings-abort.yaml")),
];

#[derive(Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Stop (and tear down) after this long, e.g. 30s; default: run until Ctrl-C.
    #[arg(long)]
    duration: Option<String>,
    /// Requests per second sent to the product page (1 to 100).
    #[arg(long, default_value_t = 5)]
    rate: u32,
    /// Exit with 1 unless every service answered and every hop between sidecars was mTLS.
    #[arg(long)]
    check: bool,
}

/// What one service answered so far.
#[derive(Debug, Default, Clone)]
struct Tally {
    answered: u64,
    ok: u64,
    /// Hops into this service that carried a SPIFFE peer identity (mTLS), and that did not.
    mtls: u64,
    plaintext: u64,
}

impl Tally {
    /// A hop into the service: mTLS when the service saw a SPIFFE peer identity.
    fn count_peer(&mut self, peer: Option<&Value>) {
        match peer.and_then(Value::as_str) {
            Some(p) if p.starts_with("spiffe://") => self.mtls += 1,
            _ => self.plaintext += 1,
        }
    }
}

#[derive(Debug, Default)]
struct Totals {
    sent: u64,
    services: BTreeMap<&'static str, Tally>,
    reviews_versions: BTreeMap<String, u64>,
    /// Requests sent before the first page came back (the mesh was still starting).
    sent_before_first_ok: Option<u64>,
}

pub fn run(args: DemoArgs) -> ExitCode {
    if !(1..=100).contains(&args.rate) {
        eprintln!("weft demo: --rate {}: between 1 and 100 requests per second", args.rate);
        return ExitCode::from(2);
    }
    let duration = match args.duration.as_deref().map(crate::local_cmd::parse_duration).transpose() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("weft demo: --duration: {e}");
            return ExitCode::from(2);
        }
    };
    let mesh_file = std::env::temp_dir().join(format!("weft-demo-bookinfo-{}.yaml", std::process::id()));
    if let Err(e) = std::fs::write(&mesh_file, MESH) {
        eprintln!("weft demo: {}: {e}", mesh_file.display());
        return ExitCode::from(1);
    }
    // Explicit when asked, or when namespaces cannot be built here: say why, and what the
    // user gives up (nothing but capture: the same mesh, mTLS and routing).
    let explicit = args.net.explicit || {
        match weft_local::host::namespaces_blocked() {
            None => false,
            Some(why) => {
                say!("weft demo: {why}.");
                say!("weft demo: running in explicit mode instead: no namespaces or capture; each service gets loopback addresses");
                say!("           of its own from {} and calls the others through its sidecar (HTTP_PROXY).", args.net.loopback);
                say!("           (run as root, with iproute2, iptables and util-linux, for the captured mesh)\n");
                true
            }
        }
    };
    let opts = match args.net.options(mesh_file.clone(), explicit) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("weft demo: {e}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone());
    let started = crate::local_cmd::start(&opts);
    let _ = std::fs::remove_file(&mesh_file);
    let running = match started {
        Ok(r) => r,
        Err(code) => return code,
    };
    crate::local_cmd::print_running(&opts, &running);
    let examples = opts.run_dir.join("examples");
    let _ = std::fs::create_dir_all(&examples);
    for (name, text) in EXAMPLES {
        let _ = std::fs::write(examples.join(name), text);
    }
    let page = running.state.workloads.iter().find(|w| w.id == "default/productpage-v1").and_then(|w| w.address.parse::<Ipv4Addr>().ok());
    let Some(page) = page else {
        eprintln!("weft demo: productpage did not get an address");
        let _ = weft_local::down::down(&opts.run_dir);
        return ExitCode::from(1);
    };
    let run_dir = opts.run_dir.display();
    say!("\nbookinfo is up, with mutual TLS between every sidecar{}.", if explicit { " (explicit mode)" } else { "" });
    say!("  product page:  http://{page}:9080/productpage   (from this machine{})", if explicit { ": productpage's sidecar" } else { "" });
    say!("  dashboard:     http://{}/   (live topology, services, sidecars' sync status; or `weft dashboard`)", opts.debug_address);
    say!("\ntry next, in another terminal:");
    say!("  weft apply -f {run_dir}/examples/virtual-service-reviews-v3.yaml --run-dir {run_dir}    all reviews from v3 (red stars)");
    say!("  weft apply -f {run_dir}/examples/fault-ratings-abort.yaml --run-dir {run_dir}           fail half the calls to ratings");
    say!("  weft delete -f {run_dir}/examples/fault-ratings-abort.yaml --run-dir {run_dir}          and take the fault away");
    say!("  weft proxy-status --control-plane {}   every sidecar's config, SYNCED or not", opts.debug_address);
    say!("  weft status --run-dir {run_dir}");
    say!("\nsending {} requests/s to productpage; Ctrl-C stops and tears everything down\n", args.rate);

    let totals = drive(SocketAddr::from((page, 9080)), args.rate, duration, &stop);
    say!();
    report(&totals);
    let verdict = verdict(&totals);
    match weft_local::down::down(&opts.run_dir) {
        Ok(r) if explicit => say!("torn down: {} processes stopped", r.processes),
        Ok(r) => say!("torn down: {} processes stopped, {} namespaces removed", r.processes, r.namespaces),
        Err(e) => eprintln!("weft demo: teardown: {e}; run `weft down --run-dir {run_dir}`"),
    }
    match verdict {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) if args.check => {
            eprintln!("weft demo: check failed: {why}");
            ExitCode::from(1)
        }
        Err(_) => ExitCode::SUCCESS,
    }
}

fn watch_signals(stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else { return };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            stop.store(true, Ordering::SeqCst);
        });
    });
}

/// Sends `rate` requests a second until stopped or `duration` ends, printing a line every 2 s.
fn drive(page: SocketAddr, rate: u32, duration: Option<Duration>, stop: &AtomicBool) -> Totals {
    let mut totals = Totals::default();
    let start = Instant::now();
    let period = Duration::from_secs(1) / rate;
    let mut next = start;
    let mut window = (Instant::now(), 0u64);
    let mut base = totals.services.clone();
    while !stop.load(Ordering::SeqCst) && duration.is_none_or(|d| start.elapsed() < d) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(100)));
            continue;
        }
        next += period;
        one_request(page, &mut totals);
        window.1 += 1;
        if window.0.elapsed() >= Duration::from_secs(2) {
            let line = live_line(window.1 as f64 / window.0.elapsed().as_secs_f64(), &totals, &base);
            if writeln!(std::io::stdout(), "{line}").is_err() {
                // Nobody reads the output any more (`weft demo | head`): stop and tear down.
                break;
            }
            window = (Instant::now(), 0);
            base = totals.services.clone();
        }
    }
    totals
}

fn one_request(page: SocketAddr, t: &mut Totals) {
    t.sent += 1;
    let reply = weft_local::probe::get(page, "/api/v1/products/0", Duration::from_secs(5));
    let page_tally = t.services.entry("productpage").or_default();
    let Ok((code, body)) = reply else { return };
    page_tally.answered += 1;
    let Ok(json) = serde_json::from_str::<Value>(&body) else { return };
    if code != 200 {
        return;
    }
    page_tally.ok += 1;
    if t.sent_before_first_ok.is_none() {
        t.sent_before_first_ok = Some(t.sent - 1);
    }
    let hop = |t: &mut Totals, name: &'static str, body: &Value, peer_key: &str| {
        let tally = t.services.entry(name).or_default();
        tally.answered += 1;
        if body.get("error").is_none() {
            tally.ok += 1;
        }
        tally.count_peer(body.get(peer_key));
    };
    if let Some(details) = json.get("details") {
        hop(t, "details", details, "peer");
    }
    if let Some(reviews) = json.get("reviews") {
        if reviews.get("error").is_none() {
            hop(t, "reviews", reviews, "peer");
            if let Some(pod) = reviews.get("podname").and_then(Value::as_str) {
                *t.reviews_versions.entry(pod.to_owned()).or_default() += 1;
            }
            // v2 and v3 call ratings; a rating with an error means ratings did not answer.
            let ratings: Vec<&Value> =
                reviews.get("reviews").and_then(Value::as_array).into_iter().flatten().filter_map(|r| r.get("rating")).collect();
            if let Some(first) = ratings.first() {
                let tally = t.services.entry("ratings").or_default();
                tally.answered += 1;
                if first.get("error").is_none() {
                    tally.ok += 1;
                    tally.count_peer(reviews.get("ratings_peer"));
                }
            }
        } else {
            t.services.entry("reviews").or_default().answered += 1;
        }
    }
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "   -  ".into()
    } else {
        format!("{:5.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// One line for the last window: success per service, the hops' TLS, reviews versions so far.
fn live_line(rate: f64, t: &Totals, base: &BTreeMap<&'static str, Tally>) -> String {
    let mut line = format!("{rate:5.1} req/s ");
    for name in ["productpage", "details", "reviews", "ratings"] {
        let now = t.services.get(name).cloned().unwrap_or_default();
        let before = base.get(name).cloned().unwrap_or_default();
        let s = Tally {
            answered: now.answered - before.answered,
            ok: now.ok - before.ok,
            mtls: now.mtls - before.mtls,
            plaintext: now.plaintext - before.plaintext,
        };
        let tls = if s.mtls > 0 && s.plaintext == 0 {
            " mTLS"
        } else if s.plaintext > 0 && name != "productpage" {
            " PLAINTEXT"
        } else {
            ""
        };
        line.push_str(&format!("| {name} {}{tls} ", pct(s.ok, s.answered)));
    }
    let versions: Vec<String> = t.reviews_versions.iter().map(|(v, n)| format!("{v} {n}")).collect();
    line.push_str(&format!("| {}", versions.join(" ")));
    line
}

fn report(t: &Totals) {
    say!("{} requests sent; per service (answers, successes, hops in over mTLS / plaintext):", t.sent);
    for (name, s) in &t.services {
        say!("  {name:<12} {:>6} answered {:>6} ok   mTLS {:>6}  plaintext {:>6}", s.answered, s.ok, s.mtls, s.plaintext);
    }
    let versions: Vec<String> = t.reviews_versions.iter().map(|(v, n)| format!("{v}: {n}")).collect();
    say!("  reviews answered by: {}", versions.join(", "));
}

/// Every service answered, every hop between sidecars was mTLS, and once the mesh answered,
/// at least 90% of page requests succeeded.
fn verdict(t: &Totals) -> Result<(), String> {
    for name in ["productpage", "details", "reviews", "ratings"] {
        let s = t.services.get(name).cloned().unwrap_or_default();
        if s.ok == 0 {
            return Err(format!("{name} never answered successfully"));
        }
        if name != "productpage" && (s.plaintext > 0 || s.mtls == 0) {
            return Err(format!("{name}: {} hops over mTLS, {} in plaintext", s.mtls, s.plaintext));
        }
    }
    // Every successful page came at or after the first one, so all of them count.
    let ok = t.services.get("productpage").map_or(0, |s| s.ok);
    let sent = t.sent - t.sent_before_first_ok.unwrap_or(t.sent);
    if ok * 10 < sent * 9 {
        return Err(format!("only {ok} of {sent} page requests succeeded"));
    }
    Ok(())
}
