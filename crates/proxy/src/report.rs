//! What the proxy's own reporters share — Zipkin spans (`trace::zipkin`), OTLP spans
//! (`trace::otlp`) and OTLP log records (`access_log::otlp`): a bounded queue drained into
//! batches by one task, and each batch POSTed to the collector's cluster as a request the proxy
//! makes itself. A collector that is slow or down costs reports, never a request.

use std::future::Future;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use tokio::sync::mpsc;

use crate::http::router::{send_detached, Detached};
use crate::upstream::{ClusterManager, UpstreamError};

/// When a batch leaves: once the weights of its items reach `limit`, or every `every` for a
/// smaller one.
pub struct Batching {
    pub every: Duration,
    pub limit: usize,
}

/// Drains `rx` into batches and hands each to `flush`: when full, on each tick of the timer
/// (`on_timer` called first) when not empty, and what is left when the queue closes.
pub async fn run<T, F, Fut>(mut rx: mpsc::Receiver<T>, b: Batching, weight: fn(&T) -> usize, on_timer: impl Fn(), mut flush: F)
where
    F: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut batch = Vec::new();
    let mut weighed = 0usize;
    let mut tick = tokio::time::interval(b.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            item = rx.recv() => match item {
                Some(item) => {
                    weighed += weight(&item);
                    batch.push(item);
                    if weighed >= b.limit {
                        weighed = 0;
                        flush(std::mem::take(&mut batch)).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if !batch.is_empty() {
                    on_timer();
                    weighed = 0;
                    flush(std::mem::take(&mut batch)).await;
                }
            }
        }
    }
    if !batch.is_empty() {
        flush(batch).await;
    }
}

/// A report to a collector.
pub struct Report<'a> {
    pub cluster: &'a str,
    /// `Host` (HTTP/1) or `:authority` (HTTP/2).
    pub authority: &'a str,
    pub path: &'a str,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub timeout: Duration,
}

/// How a report ended.
pub enum Posted {
    /// The proxy has no such cluster; nothing was sent.
    NoCluster,
    /// The cluster has no healthy host.
    NoHost,
    /// The path or authority cannot make a request.
    Unbuildable,
    Answered(u16),
    Failed(UpstreamError),
    TimedOut,
}

impl std::fmt::Display for Posted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Posted::NoCluster => f.write_str("no such cluster"),
            Posted::NoHost => f.write_str("no healthy host"),
            Posted::Unbuildable => f.write_str("not a valid request"),
            Posted::Answered(s) => write!(f, "answered {s}"),
            Posted::Failed(e) => write!(f, "{e}"),
            Posted::TimedOut => f.write_str("timed out"),
        }
    }
}

/// POSTs `r` to a host of its cluster; `on_cluster` runs once the cluster is known (Envoy counts
/// spans as sent from there, whatever becomes of the report). A host-less cluster counts
/// `upstream_cx_none_healthy`, as a routed request would.
pub async fn post(clusters: &ClusterManager, r: Report<'_>, on_cluster: impl FnOnce()) -> Posted {
    // A collector is a mesh service like any other: a proxy that fetches clusters on first
    // use fetches it with the first report.
    let Ok(cluster) = clusters.get_or_fetch(r.cluster).await else { return Posted::NoCluster };
    on_cluster();
    let Some(host) = cluster.lb_snapshot().pick(None) else {
        cluster.stats.upstream_cx_none_healthy.inc();
        return Posted::NoHost;
    };
    let wire = crate::http::router::wire_of(&cluster);
    let Some(req) =
        crate::http::router::upstream_request(wire, &http::Method::POST, r.authority, r.path, r.headers, crate::body::full(r.body))
    else {
        return Posted::Unbuildable;
    };
    match send_detached(&cluster, &host, req, wire, r.timeout).await {
        Detached::Answered(s) => Posted::Answered(s),
        Detached::Failed(e) => Posted::Failed(e),
        Detached::TimedOut => Posted::TimedOut,
    }
}

/// A gRPC message on the wire: the uncompressed flag and the length before the bytes.
pub fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(msg.len() + 5);
    b.put_u8(0);
    b.put_u32(u32::try_from(msg.len()).unwrap_or(u32::MAX));
    b.put_slice(msg);
    b.freeze()
}
