//! The `tcp_proxy` network filter: one upstream connection per downstream connection, bytes
//! copied both ways with half-close, an idle timeout, and Envoy's byte counters.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::transport::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::access_log::AccessLogger;
use crate::config::access_log::{Command, FormatContext};
use crate::config::cluster::Discovery;
use crate::config::listener::TcpProxyConfig;
use crate::drain::Drain;
use crate::http::info::{conn_value, format_time};
use crate::listener::ConnInfo;
use crate::stats::TcpStats;
use crate::upstream::{pool, ClusterManager};

pub struct TcpProxy {
    pub cfg: Arc<TcpProxyConfig>,
    pub stats: Arc<TcpStats>,
    pub clusters: Arc<ClusterManager>,
    pub loggers: Arc<Vec<Arc<AccessLogger>>>,
    /// Istio's TCP metrics, and the side this listener reports (mesh proxies only).
    pub istio: Option<(Arc<crate::istio_metrics::Mesh>, crate::istio_metrics::Reporter)>,
}

struct TcpLog<'a> {
    conn: &'a ConnInfo,
    start: SystemTime,
    started: Instant,
    cluster: Option<String>,
    upstream: Option<std::net::SocketAddr>,
    rx: u64,
    tx: u64,
    flags: &'static str,
}

impl FormatContext for TcpLog<'_> {
    fn value(&self, c: &Command) -> Option<String> {
        Some(match c {
            Command::StartTime(f) => format_time(self.start, f.as_deref()),
            Command::BytesReceived => self.rx.to_string(),
            Command::BytesSent => self.tx.to_string(),
            Command::Duration => self.started.elapsed().as_millis().to_string(),
            Command::UpstreamHost => return self.upstream.map(|u| u.to_string()),
            Command::UpstreamCluster => return self.cluster.clone(),
            Command::ResponseFlags => self.flags.to_string(),
            Command::Protocol | Command::ResponseCode => return None,
            other => return conn_value(self.conn, other),
        })
    }
}

impl TcpProxy {
    fn choose(&self) -> &str {
        let list = &self.cfg.clusters;
        if list.len() == 1 {
            return &list[0].0;
        }
        let total: u64 = list.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut r = rand::random::<u64>() % total.max(1);
        for (n, w) in list {
            if r < u64::from(*w) {
                return n;
            }
            r -= u64::from(*w);
        }
        &list[0].0
    }

    pub async fn serve(self: Arc<Self>, mut down: Stream, conn: Arc<ConnInfo>, drain: Drain) {
        let _token = drain.token();
        self.stats.downstream_cx_total.inc();
        let mut log = TcpLog {
            conn: &conn,
            start: SystemTime::now(),
            started: Instant::now(),
            cluster: None,
            upstream: None,
            rx: 0,
            tx: 0,
            flags: "-",
        };
        let name = self.choose().to_string();
        if name == crate::blocked::BLACKHOLE_CLUSTER {
            crate::blocked::record_connection(conn.original_dst, conn.sni.as_deref());
        }
        let cluster = match self.clusters.get_or_fetch(&name).await {
            Ok(c) => c,
            Err(missing) => {
                if !matches!(missing, crate::upstream::on_demand::Missing::Unknown(_)) {
                    tracing::warn!(error = %missing, "TCP connection closed: no upstream cluster");
                }
                self.stats.downstream_cx_no_route.inc();
                log.flags = "NC";
                self.write_log(&log);
                return;
            }
        };
        log.cluster = Some(name);
        let mut up = None;
        for _ in 0..self.cfg.max_connect_attempts {
            let host = match cluster.cfg.discovery {
                Discovery::OriginalDst => conn.original_dst.map(|d| cluster.original_dst_host(d)),
                _ => cluster.lb_snapshot().pick(None),
            };
            let Some(host) = host else {
                cluster.stats.upstream_cx_none_healthy.inc();
                log.flags = "UH";
                break;
            };
            log.upstream = Some(host.addr);
            if cluster.stats.upstream_cx_active.get() as u64 >= cluster.cfg.circuit_breakers.max_connections {
                cluster.stats.upstream_cx_overflow.inc();
                log.flags = "UO";
                break;
            }
            match pool::connect(&cluster, &host).await {
                Ok(s) => {
                    up = Some((s, host));
                    break;
                }
                Err(_) => {
                    log.flags = "UF";
                    host.report(crate::upstream::host::Outcome::LocalFailure, &cluster);
                }
            }
        }
        let Some((mut up, host)) = up else {
            self.write_log(&log);
            return;
        };
        log.flags = "-";
        cluster.stats.upstream_cx_total.inc();
        cluster.stats.upstream_cx_active.inc();
        host.cx_active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let istio = self.istio.as_ref().and_then(|(mesh, reporter)| {
            mesh.tcp_opened(*reporter, &conn, Some(host.addr), host.tls.is_some(), log.cluster.as_deref()).map(|key| (mesh, key))
        });
        // Istio reports a long-lived connection's bytes every 15 s, not only at its close, so
        // a day-long database connection shows on the graph while it runs.
        let mut reported = (0u64, 0u64);
        let (rx, tx, idle) = {
            let mut report = |rx: u64, tx: u64| {
                if let Some((mesh, key)) = &istio {
                    mesh.tcp_bytes(key, rx - reported.0, tx - reported.1);
                }
                reported = (rx, tx);
            };
            let every = istio.as_ref().map_or(TCP_REPORTING_INTERVAL, |(mesh, _)| mesh.reporting_interval());
            splice(&mut down, &mut up, self.cfg.idle_timeout, self.cfg.copy_buffer, &self.stats, every, &mut report).await
        };
        cluster.stats.upstream_cx_active.dec();
        cluster.stats.upstream_cx_destroy.inc();
        host.cx_active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        cluster.stats.upstream_cx_tx_bytes_total.add(rx);
        cluster.stats.upstream_cx_rx_bytes_total.add(tx);
        if idle {
            self.stats.idle_timeout.inc();
            log.flags = "SI";
        }
        log.rx = rx;
        log.tx = tx;
        if let Some((mesh, key)) = istio {
            mesh.tcp_closed(&key, rx - reported.0, tx - reported.1);
        }
        self.write_log(&log);
    }

    fn write_log(&self, log: &TcpLog) {
        for l in self.loggers.iter() {
            l.log(log);
        }
    }
}

/// How often a connection that stays open reports its bytes (Istio's `tcp_reporting_duration`)
/// unless the Telemetry API's `reportingInterval` says otherwise.
const TCP_REPORTING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

/// Copies both ways until both sides closed or the idle timeout fired, telling `report` the
/// totals so far every `every`.
/// Returns (bytes from downstream, bytes to downstream, idle timeout fired).
async fn splice<D, U>(
    down: &mut D,
    up: &mut U,
    idle: Option<std::time::Duration>,
    buffer: usize,
    stats: &TcpStats,
    every: std::time::Duration,
    report: &mut (dyn FnMut(u64, u64) + Send),
) -> (u64, u64, bool)
where
    D: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut dr, mut dw) = tokio::io::split(down);
    let (mut ur, mut uw) = tokio::io::split(up);
    let mut b1 = vec![0u8; buffer];
    let mut b2 = vec![0u8; buffer];
    let (mut rx, mut tx) = (0u64, 0u64);
    let (mut down_open, mut up_open) = (true, true);
    let far = std::time::Duration::from_secs(100 * 365 * 24 * 3600);
    let idle_for = idle.unwrap_or(far);
    let sleep = tokio::time::sleep(idle_for);
    tokio::pin!(sleep);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while down_open || up_open {
        tokio::select! {
            _ = ticker.tick() => report(rx, tx),
            r = dr.read(&mut b1), if down_open => match r {
                Ok(0) | Err(_) => {
                    down_open = false;
                    let _ = uw.shutdown().await;
                }
                Ok(n) => {
                    if uw.write_all(&b1[..n]).await.is_err() { break; }
                    rx += n as u64;
                    stats.downstream_cx_rx_bytes_total.add(n as u64);
                    sleep.as_mut().reset(tokio::time::Instant::now() + idle_for);
                }
            },
            r = ur.read(&mut b2), if up_open => match r {
                Ok(0) | Err(_) => {
                    up_open = false;
                    let _ = dw.shutdown().await;
                }
                Ok(n) => {
                    if dw.write_all(&b2[..n]).await.is_err() { break; }
                    tx += n as u64;
                    stats.downstream_cx_tx_bytes_total.add(n as u64);
                    sleep.as_mut().reset(tokio::time::Instant::now() + idle_for);
                }
            },
            _ = &mut sleep => return (rx, tx, true),
        }
    }
    (rx, tx, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that stays open reports its bytes every 15 s, before it closes, and its
    /// close reports the rest.
    #[tokio::test(start_paused = true)]
    async fn an_open_connection_reports_its_bytes_every_15_s() {
        let (mut client, mut down) = tokio::io::duplex(1024);
        let (mut up, mut server) = tokio::io::duplex(1024);
        let (tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
        let spliced = tokio::spawn(async move {
            let mut report = |r: u64, t: u64| {
                let _ = tx.send((r, t, tokio::time::Instant::now()));
            };
            splice(&mut down, &mut up, None, 64, &TcpStats::default(), TCP_REPORTING_INTERVAL, &mut report).await
        });
        let start = tokio::time::Instant::now();
        let mut buf = [0u8; 100];
        client.write_all(&[1; 100]).await.expect("client writes");
        server.read_exact(&mut buf).await.expect("server reads");
        server.write_all(&[2; 50]).await.expect("server writes");
        client.read_exact(&mut buf[..50]).await.expect("client reads");

        let (r, t, at) = reports.recv().await.expect("a report while the connection is open");
        assert_eq!((r, t), (100, 50));
        assert_eq!(at - start, TCP_REPORTING_INTERVAL);

        client.write_all(&[3; 10]).await.expect("client writes again");
        server.read_exact(&mut buf[..10]).await.expect("server reads again");
        let (r, t, at) = reports.recv().await.expect("the next report");
        assert_eq!((r, t), (110, 50));
        assert_eq!(at - start, 2 * TCP_REPORTING_INTERVAL);

        drop(client);
        drop(server);
        let (rx, tx, idle) = spliced.await.expect("splice ends");
        assert_eq!((rx, tx, idle), (110, 50, false));
    }
}
