//! The harness weft's tests share: start real Envoy and `weft proxy` from the same bootstrap,
//! sample upstreams that echo what they receive, an HTTP client, and network namespaces with
//! iptables for capture tests. Everything binds ephemeral loopback ports and is cleaned up
//! on drop, also when a test fails.
//!
//! Never compiled into the product binary.

pub mod client;
pub mod mesh;
pub mod netns;
pub mod proxy;
pub mod upstream;

pub use client::{send, Reply, Req};
pub use proxy::{envoy_path, ProxyKind, ProxyProcess};
pub use upstream::{TcpEcho, Upstream};

/// A free TCP port on 127.0.0.1 (bound, then released; a race is possible but rare).
pub fn free_port() -> u16 {
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
