//! Active health checking (HTTP and TCP), with Envoy's thresholds and initial state: hosts
//! start failed and the first passing check makes them healthy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Cluster, Host};
use crate::body;
use crate::config::cluster::{HealthCheckConfig, HealthCheckKind};

/// Starts the checker; the receiver fires after the first round.
pub fn start(cluster: Arc<Cluster>) -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let weak = Arc::downgrade(&cluster);
    drop(cluster);
    tokio::spawn(run(weak, tx));
    rx
}

#[derive(Default, Clone, Copy)]
struct Streak {
    ok: u32,
    fail: u32,
}

async fn run(cluster: std::sync::Weak<Cluster>, first: tokio::sync::oneshot::Sender<()>) {
    let mut first = Some(first);
    let mut streaks: HashMap<SocketAddr, Streak> = HashMap::new();
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let Some(hc) = c.cfg.health_checks.first().cloned() else { return };
        let hosts: Vec<Arc<Host>> = c.hosts.load().hosts.clone();
        let results = futures::future::join_all(hosts.iter().map(|h| check(&c, h, &hc))).await;
        let mut changed = false;
        for (h, ok) in hosts.iter().zip(results) {
            c.stats.hc_attempt.inc();
            let s = streaks.entry(h.addr).or_default();
            if ok {
                c.stats.hc_success.inc();
                s.ok += 1;
                s.fail = 0;
                // The first success after start, or healthy_threshold in a row, restores the host.
                if h.failed_active_hc() && (s.ok >= hc.healthy_threshold || s.ok == 1 && first.is_some()) {
                    changed |= h.set_active_hc_failed(false);
                }
            } else {
                c.stats.hc_failure.inc();
                s.fail += 1;
                s.ok = 0;
                if !h.failed_active_hc() && s.fail >= hc.unhealthy_threshold {
                    changed |= h.set_active_hc_failed(true);
                    tracing::info!(cluster = %c.name(), host = %h.addr, "health check failed: host marked unhealthy");
                }
            }
        }
        c.stats.hc_healthy.set(hosts.iter().filter(|h| !h.failed_active_hc()).count() as i64);
        streaks.retain(|a, _| hosts.iter().any(|h| h.addr == *a));
        if changed {
            c.health_changed();
        }
        let had_traffic = c.stats.upstream_rq_total.get() > 0 || c.stats.upstream_cx_total.get() > 0;
        drop(c);
        if let Some(tx) = first.take() {
            let _ = tx.send(());
        }
        tokio::time::sleep(if had_traffic { hc.interval } else { hc.no_traffic_interval }).await;
    }
}

async fn check(c: &Cluster, h: &Host, hc: &HealthCheckConfig) -> bool {
    let addr = match h.health_check_port {
        Some(p) => SocketAddr::new(h.addr.ip(), p),
        None => h.addr,
    };
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        match &hc.kind {
            HealthCheckKind::Tcp { send, receive } => {
                if let Some(s) = send {
                    stream.write_all(s).await.ok()?;
                }
                let want: Vec<u8> = receive.concat();
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                while !want.is_empty() && !contains(&got, &want) {
                    let n = stream.read(&mut buf).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                Some(true)
            }
            HealthCheckKind::Http { path, host, expected } => {
                let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, body::Body>(TokioIo::new(stream)).await.ok()?;
                tokio::spawn(conn);
                let req = http::Request::get(path.as_str())
                    .header(http::header::HOST, host.clone().unwrap_or_else(|| c.cfg.name.clone()))
                    .header(http::header::USER_AGENT, "Envoy/HC")
                    .body(body::empty())
                    .ok()?;
                let resp = sender.send_request(req).await.ok()?;
                let status = resp.status().as_u16();
                let _ = resp.into_body().collect().await;
                Some(expected.iter().any(|(lo, hi)| (*lo..*hi).contains(&status)))
            }
        }
    };
    let ok = matches!(tokio::time::timeout(hc.timeout, fut).await, Ok(Some(true)));
    if !ok {
        c.stats.hc_network_failure.inc();
    }
    ok
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
