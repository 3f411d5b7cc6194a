//! weft's web dashboard in a real browser: `weft demo` runs bookinfo with traffic, and headless
//! Chromium (Debian's), driven by Playwright (`tests/browser/dashboard.mjs`), loads the page
//! the demo prints, waits for the demo's services and mTLS edges with their numbers and locks,
//! opens a service's detail, checks every sidecar SYNCED and the findings view, and saves
//! screenshots of each view under the target directory (`dashboard-screenshots`). It also
//! checks the page asks nothing of any other origin (no CDN at run time).
//!
//! Needs root (network namespaces), `chromium` and `node` with `npm ci` run in `tests/browser`
//! (scripts/setup.sh does both); fails naming what is missing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weft_test_support::certs::TempDir;
use weft_test_support::netns::require_root_netadmin;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// The demo, stopped and taken down also when the test fails.
struct Demo {
    child: Child,
    dir: PathBuf,
    _tmp: TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        // Ctrl-C: the demo tears its mesh down itself; `weft down` covers a demo that cannot.
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new(WEFT).args(["down", "--run-dir"]).arg(&self.dir).output();
    }
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

#[test]
fn the_dashboard_shows_the_demo_mesh_in_chromium() {
    require_root_netadmin().unwrap_or_else(|e| panic!("{e:#}"));
    let chromium = weft_test_support::tool("chromium");
    drop(chromium);
    let _ = weft_test_support::tool("node");
    let browser = browser_dir();
    assert!(
        browser.join("node_modules/playwright-core").is_dir(),
        "this test needs Playwright in {}: run scripts/setup.sh (npm ci there)",
        browser.display()
    );

    let tmp = TempDir::new("dashboard").expect("temp dir");
    let dir = tmp.path().join("run");
    let debug = format!("127.0.0.1:{}", weft_test_support::free_port());
    let mut child = Command::new(WEFT)
        .args(["demo", "--duration", "240s", "--rate", "10", "--run-dir"])
        .arg(&dir)
        .args(["--subnet", "10.233.66.0/24", "--debug-address", &debug, "--ready-timeout", "90s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weft demo");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let demo = Demo { child, dir, _tmp: tmp };

    // The demo prints the dashboard's address once bookinfo is up.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("demo: {line}");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut seen = Vec::new();
    let url = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("the demo printed no dashboard address:\n{}", seen.join("\n")));
        if let Some(rest) = line.trim_start().strip_prefix("dashboard:") {
            break rest.split_whitespace().next().unwrap_or_default().to_owned();
        }
        seen.push(line);
    };
    assert_eq!(url, format!("http://{debug}/"), "the dashboard is on the control plane's loopback debug port");
    // Keep draining the demo's output so it never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});

    // `weft dashboard` finds the same page from the run directory.
    let out = Command::new(WEFT).args(["dashboard", "--no-browser", "--run-dir"]).arg(&demo.dir).output().expect("weft dashboard");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains(&url), "weft dashboard: {said} {}", String::from_utf8_lossy(&out.stderr));

    let svc = |s: &str| format!("{s}.default.svc.cluster.local");
    let expect = serde_json::json!({
        "services": [svc("productpage"), svc("details"), svc("reviews"), svc("ratings")],
        "workloads": ["productpage-v1.default", "details-v1.default", "reviews-v1.default", "reviews-v2.default", "reviews-v3.default", "ratings-v1.default"],
        "mtls_edges": [
            ["productpage-v1.default", svc("reviews")],
            [svc("reviews"), "reviews-v2.default"],
            [svc("details"), "details-v1.default"],
            [svc("ratings"), "ratings-v1.default"],
        ],
        "click_service": svc("reviews"),
        "detail_contains": ["reviews-v1", "reviews-v2", "reviews-v3", "v3", "bookinfo-reviews", "PeerAuthentication", "STRICT"],
        "proxies": ["productpage-v1.default", "reviews-v1.default", "ratings-v1.default"],
        "findings_min": 0,
    });
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).expect("screenshot dir");
    let expect_file = out_dir.join("expect.json");
    std::fs::write(&expect_file, expect.to_string()).expect("expect file");
    let out = Command::new("node")
        .arg(browser.join("dashboard.mjs"))
        .args(["--url", &url, "--timeout", "90"])
        .arg("--out")
        .arg(&out_dir)
        .arg("--expect")
        .arg(&expect_file)
        .output()
        .expect("node");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the dashboard in Chromium:\n{report}");
    for shot in ["topology.png", "detail.png", "proxies.png", "findings.png"] {
        let len = std::fs::metadata(out_dir.join(shot)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000, "{shot} is a real screenshot ({len} bytes)");
    }
    eprintln!("{report}\nscreenshots in {}", out_dir.display());
    drop(demo);
}
