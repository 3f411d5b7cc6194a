//! Per-host connection pools: HTTP/1.1 keep-alive connections (one request at a time each) and
//! one multiplexed HTTP/2 connection, under the cluster's connection and pending-request limits.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::TcpStream;

use super::{Cluster, Host, UpstreamError};
use crate::body::Body;
use crate::transport::{connect_tls, Stream};

struct Idle {
    sender: http1::SendRequest<Body>,
    used: u32,
    /// Which connection this is, for its idle-timeout watcher.
    id: u64,
    /// When it last went back on the list.
    since: std::time::Instant,
}

/// Numbers HTTP/1 upstream connections for their idle-timeout watchers.
static NEXT_CONN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<Option<http2::SendRequest<Body>>>,
    h2_connect: tokio::sync::Mutex<()>,
}

impl Pool {
    /// Drops connection `id` when it is on the list, finished with its last response, and has
    /// waited there `timeout`; hyper then closes it. False when it is busy or recently used.
    fn expire(&self, id: u64, timeout: std::time::Duration) -> bool {
        let mut idle = self.idle.lock();
        match idle.iter().position(|i| i.id == id && i.sender.is_ready() && i.since.elapsed() >= timeout) {
            Some(pos) => {
                idle.remove(pos);
                true
            }
            None => false,
        }
    }
}

/// The most of a response head hyper's client buffers: Envoy's 60 KiB header limit, and room.
const MAX_RESPONSE_HEAD: usize = 96 * 1024;

/// Which wire protocol to speak upstream for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Http1,
    Http2,
}

/// Opens a connection within the cluster's connect timeout, with TLS when the cluster has a
/// TLS transport socket.
pub async fn connect(cluster: &Cluster, host: &Host) -> Result<Stream, UpstreamError> {
    let addr = host.addr;
    let tcp = connect_tcp(cluster, addr).await?;
    let Some(tls) = &host.tls else { return Ok(Stream::Plain(tcp)) };
    let handshake = tokio::time::timeout(cluster.cfg.connect_timeout, connect_tls(tls, tcp, addr, &cluster.stats.ssl));
    match handshake.await {
        Ok(Ok((s, _))) => Ok(s),
        Err(_) => {
            cluster.stats.upstream_cx_connect_fail.inc();
            cluster.stats.upstream_cx_connect_timeout.inc();
            cluster.stats.ssl.connection_error.inc();
            Err(UpstreamError::ConnectFailure("TLS handshake timeout".into()))
        }
        Ok(Err(e)) => {
            cluster.stats.upstream_cx_connect_fail.inc();
            if e.verification {
                tracing::warn!(cluster = %cluster.cfg.name, "{e}");
            }
            Err(UpstreamError::ConnectFailure(format!("TLS error: {}", e.reason)))
        }
    }
}

async fn connect_tcp(cluster: &Cluster, addr: SocketAddr) -> Result<TcpStream, UpstreamError> {
    match tokio::time::timeout(cluster.cfg.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            if let Some(k) = &cluster.cfg.tcp_keepalive {
                let mut ka = socket2::TcpKeepalive::new();
                if let Some(t) = k.time {
                    ka = ka.with_time(t);
                }
                if let Some(i) = k.interval {
                    ka = ka.with_interval(i);
                }
                if let Some(n) = k.probes {
                    ka = ka.with_retries(n);
                }
                if let Err(e) = socket2::SockRef::from(&s).set_tcp_keepalive(&ka) {
                    tracing::debug!(cluster = %cluster.cfg.name, error = %e, "cannot set TCP keepalive");
                }
            }
            Ok(s)
        }
        Ok(Err(e)) => {
            cluster.stats.upstream_cx_connect_fail.inc();
            Err(UpstreamError::ConnectFailure(format!("delayed connect error: {}", io_reason(&e))))
        }
        Err(_) => {
            cluster.stats.upstream_cx_connect_fail.inc();
            cluster.stats.upstream_cx_connect_timeout.inc();
            Err(UpstreamError::ConnectFailure("connection timeout".into()))
        }
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "Connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "Connection reset by peer".into(),
        _ => e.to_string(),
    }
}

/// Accounts an open upstream connection until dropped.
struct CxGuard {
    cluster: Arc<Cluster>,
    host: Arc<Host>,
}

impl CxGuard {
    fn new(cluster: &Arc<Cluster>, host: &Arc<Host>, wire: Wire) -> Self {
        cluster.stats.upstream_cx_total.inc();
        cluster.stats.upstream_cx_active.inc();
        match wire {
            Wire::Http1 => cluster.stats.upstream_cx_http1_total.inc(),
            Wire::Http2 => cluster.stats.upstream_cx_http2_total.inc(),
        }
        host.cx_active.fetch_add(1, Ordering::Relaxed);
        CxGuard { cluster: cluster.clone(), host: host.clone() }
    }
}

impl Drop for CxGuard {
    fn drop(&mut self) {
        self.cluster.stats.upstream_cx_active.dec();
        self.cluster.stats.upstream_cx_destroy.inc();
        self.host.cx_active.fetch_sub(1, Ordering::Relaxed);
        self.cluster.slot_freed.notify_one();
    }
}

fn conn_limit_reached(cluster: &Cluster) -> bool {
    cluster.stats.upstream_cx_active.get() as u64 >= cluster.cfg.circuit_breakers.max_connections
}

/// Sends one request to `host`, reusing a pooled connection when one is free.
pub async fn send(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    req: http::Request<Body>,
    wire: Wire,
) -> Result<http::Response<Incoming>, UpstreamError> {
    match wire {
        Wire::Http1 => send_h1(cluster, host, req).await,
        Wire::Http2 => send_h2(cluster, host, req).await,
    }
}

async fn send_h1(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    mut req: http::Request<Body>,
) -> Result<http::Response<Incoming>, UpstreamError> {
    let mut pending: Option<PendingGuard> = None;
    loop {
        let idle = {
            // Connections go back on the list as soon as their response headers arrive and turn
            // ready by themselves when hyper finishes the body; take the newest ready one.
            let mut idle = host.pool.idle.lock();
            idle.retain(|i| !i.sender.is_closed());
            idle.iter().rposition(|i| i.sender.is_ready()).map(|pos| idle.remove(pos))
        };
        if let Some(mut i) = idle {
            drop(pending.take());
            match i.sender.try_send_request(req).await {
                Ok(resp) => {
                    i.used += 1;
                    i.since = std::time::Instant::now();
                    recycle(cluster, host, i);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // The pooled connection died before the request went out: use another.
                    Some(r) => {
                        req = r;
                        continue;
                    }
                    None => return Err(UpstreamError::from_exchange(e.into_error())),
                },
            }
        }
        if conn_limit_reached(cluster) {
            if pending.is_none() {
                cluster.stats.upstream_cx_overflow.inc();
                pending = Some(PendingGuard::enter(cluster)?);
            }
            // Busy connections turn ready without an event we can wait on cheaply; re-check often
            // while over the limit (the overload path only).
            tokio::select! {
                _ = cluster.slot_freed.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(1)) => {}
            }
            continue;
        }
        // Envoy counts a request waiting for its new connection as pending.
        if pending.is_none() {
            pending = Some(PendingGuard::enter(cluster)?);
        }
        let stream = connect(cluster, host).await?;
        drop(pending.take());
        let guard = CxGuard::new(cluster, host, Wire::Http1);
        let (mut sender, conn) = http1::Builder::new()
            // Bounds what a response head can make weft hold; the router refuses a header map
            // over Envoy's 60 KiB, so this leaves room for the status line and framing.
            .max_buf_size(MAX_RESPONSE_HEAD)
            .handshake::<_, Body>(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::ConnectFailure(e.to_string()))?;
        let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        let (c, h, timeout) = (cluster.clone(), host.clone(), cluster.cfg.idle_timeout);
        tokio::spawn(async move {
            let conn = conn.with_upgrades();
            tokio::pin!(conn);
            // The cluster's idle_timeout: one timer per connection; an expired connection is
            // taken off the list, and hyper closes it once nothing can send on it.
            let watch = async {
                let Some(t) = timeout else { return std::future::pending::<()>().await };
                loop {
                    tokio::time::sleep(t).await;
                    if h.pool.expire(id, t) {
                        c.stats.upstream_cx_idle_timeout.inc();
                        return std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = watch => {}
            }
            drop(guard);
        });
        match sender.try_send_request(req).await {
            Ok(resp) => {
                recycle(cluster, host, Idle { sender, used: 1, id, since: std::time::Instant::now() });
                return Ok(resp);
            }
            Err(e) => return Err(UpstreamError::from_exchange(e.into_error())),
        }
    }
}

/// Puts a connection back on the list; it is reused once hyper has read its response body.
fn recycle(cluster: &Arc<Cluster>, host: &Arc<Host>, idle: Idle) {
    if cluster.cfg.max_requests_per_connection.is_some_and(|m| idle.used >= m) {
        return;
    }
    host.pool.idle.lock().push(idle);
}

struct PendingGuard(Arc<Cluster>);

impl PendingGuard {
    /// Joins the pending queue, or overflows when `max_pending_requests` are already waiting.
    fn enter(c: &Arc<Cluster>) -> Result<Self, UpstreamError> {
        if c.stats.upstream_rq_pending_active.get() as u64 >= c.cfg.circuit_breakers.max_pending_requests {
            c.stats.upstream_rq_pending_overflow.inc();
            return Err(UpstreamError::Overflow);
        }
        c.stats.upstream_rq_pending_total.inc();
        c.stats.upstream_rq_pending_active.inc();
        Ok(PendingGuard(c.clone()))
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.stats.upstream_rq_pending_active.dec();
    }
}

async fn h2_sender(cluster: &Arc<Cluster>, host: &Arc<Host>) -> Result<http2::SendRequest<Body>, UpstreamError> {
    if let Some(s) = host.pool.h2.lock().as_ref().filter(|s| !s.is_closed()) {
        return Ok(s.clone());
    }
    let _serial = host.pool.h2_connect.lock().await;
    if let Some(s) = host.pool.h2.lock().as_ref().filter(|s| !s.is_closed()) {
        return Ok(s.clone());
    }
    if conn_limit_reached(cluster) {
        cluster.stats.upstream_cx_overflow.inc();
        cluster.stats.upstream_rq_pending_overflow.inc();
        return Err(UpstreamError::Overflow);
    }
    let stream = connect(cluster, host).await?;
    let guard = CxGuard::new(cluster, host, Wire::Http2);
    let mut b = http2::Builder::new(TokioExecutor::new());
    if let Some(w) = cluster.cfg.h2_initial_stream_window {
        b.initial_stream_window_size(w);
    }
    if let Some(w) = cluster.cfg.h2_initial_connection_window {
        b.initial_connection_window_size(w);
    }
    let (sender, conn) = b.handshake::<_, Body>(TokioIo::new(stream)).await.map_err(|e| UpstreamError::ConnectFailure(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
        drop(guard);
    });
    *host.pool.h2.lock() = Some(sender.clone());
    Ok(sender)
}

async fn send_h2(cluster: &Arc<Cluster>, host: &Arc<Host>, req: http::Request<Body>) -> Result<http::Response<Incoming>, UpstreamError> {
    let mut sender = h2_sender(cluster, host).await?;
    sender.ready().await.map_err(|e| UpstreamError::Reset(e.to_string()))?;
    sender.send_request(req).await.map_err(UpstreamError::from_exchange)
}
