//! The harness weft's tests share: start real Envoy and `weft proxy` from the same bootstrap,
//! sample upstreams that echo what they receive, an HTTP client, and network namespaces with
//! iptables for capture tests. Everything binds ephemeral loopback ports and is cleaned up
//! on drop, also when a test fails.
//!
//! Never compiled into the product binary.

pub mod apiserver;
pub mod certs;
pub mod client;
pub mod mesh;
pub mod netns;
pub mod otlp;
pub mod proxy;
pub mod upstream;
pub mod zipkin;

pub use client::{send, Reply, Req};
pub use proxy::{envoy_path, ProxyKind, ProxyProcess};
pub use upstream::{TcpEcho, Upstream};

/// The Debian package of each external program the tests run; `scripts/setup.sh` installs them.
const TOOL_PACKAGES: &[(&str, &str)] = &[
    ("curl", "curl"),
    ("openssl", "openssl"),
    ("python3", "python3"),
    ("ip", "iproute2"),
    ("iptables", "iptables"),
    ("nsenter", "util-linux"),
    ("setpriv", "util-linux"),
    ("kill", "procps"),
    ("chromium", "chromium"),
    ("node", "nodejs"),
];

/// A `Command` for an external program a test needs. When the program is not installed the
/// test fails naming the package that provides it, instead of with a bare "No such file".
pub fn tool(name: &str) -> std::process::Command {
    let found = std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()));
    if !found {
        let package = TOOL_PACKAGES.iter().find(|(n, _)| *n == name).map_or(name, |(_, p)| *p);
        panic!("this test needs `{name}`, which is not installed: run scripts/setup.sh (Debian package {package})");
    }
    std::process::Command::new(name)
}

/// In Prometheus text, the sum of every series whose line holds all of `parts`; `None` when
/// there is none.
pub fn prometheus_sum(stats: &str, parts: &[&str]) -> Option<f64> {
    let values: Vec<f64> = stats
        .lines()
        .filter(|l| !l.starts_with('#') && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Ports handed out by `free_port`: below the kernel's ephemeral range (32768–60999 by
/// default). A port the kernel picks for `bind(0)` is also what it picks for the local end of
/// outgoing connections, so between the check and the proxy's own bind another test's client
/// could take it ("Address already in use" in CI).
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free TCP port on 127.0.0.1 for a test to bind later. Each test process starts at its own
/// offset (by PID) and walks forward, so concurrent test processes rarely try the same port,
/// and every candidate is checked by binding it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let _ = NEXT.compare_exchange(u32::MAX, std::process::id().wrapping_mul(97) % span, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..span {
        let i = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = TEST_PORTS.start + i as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// Polls `f` until it returns `Some`, or fails after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: std::time::Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    let mut wait = std::time::Duration::from_millis(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_millis(200));
    }
}
