//! Reporting spans to a Zipkin collector (API v2, JSON), batched as Envoy batches them: a
//! report when 5 spans are waiting, or every 5 seconds for fewer.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{Span, SpanKind};
use crate::report::{self, Batching, Posted, Report};
use crate::stats::ZipkinStats;
use crate::upstream::ClusterManager;

/// Envoy's `tracing.zipkin.min_flush_spans` and `tracing.zipkin.flush_interval_ms` defaults.
const MIN_FLUSH_SPANS: usize = 5;
const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Spans waiting beyond this (a collector far behind) are dropped, not buffered without end.
const QUEUE: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Collector {
    pub cluster: String,
    pub endpoint: String,
    /// The `Host` of reports: `collector_hostname`, else the cluster name (as Envoy).
    pub hostname: String,
    pub trace_id_128bit: bool,
    pub shared_span_context: bool,
    /// `trace_context_option: USE_B3_WITH_W3C_PROPAGATION`: W3C `traceparent` read when no B3
    /// context came, and written next to B3.
    pub w3c: bool,
}

/// One collector's queue; the task behind it sends the reports.
pub struct Reporter {
    tx: mpsc::Sender<Value>,
}

impl Reporter {
    pub fn start(c: Collector, clusters: Arc<ClusterManager>, stats: Arc<ZipkinStats>) -> Arc<Reporter> {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(c, clusters, stats, rx));
        Arc::new(Reporter { tx })
    }

    pub fn report(&self, span: Value) {
        if self.tx.try_send(span).is_err() {
            tracing::debug!("zipkin span queue full; span dropped");
        }
    }
}

async fn run(c: Collector, clusters: Arc<ClusterManager>, stats: Arc<ZipkinStats>, rx: mpsc::Receiver<Value>) {
    let batching = Batching { every: FLUSH_INTERVAL, limit: MIN_FLUSH_SPANS };
    report::run(rx, batching, |_| 1, || stats.timer_flushed.inc(), |spans| flush(&c, &clusters, &stats, spans)).await;
}

async fn flush(c: &Collector, clusters: &ClusterManager, stats: &ZipkinStats, spans: Vec<Value>) {
    let count = spans.len() as u64;
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let r = Report {
        cluster: &c.cluster,
        authority: &c.hostname,
        path: &c.endpoint,
        headers,
        body: Bytes::from(Value::Array(spans).to_string()),
        timeout: REPORT_TIMEOUT,
    };
    // Envoy counts spans as sent when the report leaves, whatever becomes of it; a report its
    // async client could not deliver (no host, refused, timed out) comes back as a local 503 or
    // 504, so it is counted as dropped, not failed.
    match report::post(clusters, r, || stats.spans_sent.add(count)).await {
        Posted::NoCluster => stats.reports_skipped_no_cluster.inc(),
        Posted::Unbuildable => stats.reports_failed.inc(),
        Posted::Answered(200 | 202) => stats.reports_sent.inc(),
        other => {
            tracing::debug!(collector = %c.cluster, outcome = %other, "zipkin report dropped");
            stats.reports_dropped.inc();
        }
    }
}

/// The span in Zipkin v2 JSON.
pub fn encode(span: &Span, kind: SpanKind, shared: bool, service: &str, local_ip: std::net::IpAddr) -> Value {
    let micros = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    let start = micros(span.start);
    let end = micros(std::time::SystemTime::now()).max(start);
    let mut endpoint = json!({"serviceName": service, "port": 0});
    match local_ip {
        std::net::IpAddr::V4(a) => endpoint["ipv4"] = json!(a.to_string()),
        std::net::IpAddr::V6(a) => endpoint["ipv6"] = json!(a.to_string()),
    }
    let (kind_name, annotation) = match kind {
        SpanKind::Client => ("CLIENT", "cr"),
        SpanKind::Server => ("SERVER", "ss"),
    };
    let mut v = json!({
        "traceId": span.trace_id.to_string(),
        "id": format!("{:016x}", span.id),
        "name": span.name,
        "kind": kind_name,
        "timestamp": start,
        "duration": end - start,
        "localEndpoint": endpoint,
        "tags": span.tags,
        "annotations": [{"timestamp": end, "value": annotation}],
    });
    for (k, val) in &span.custom {
        v["tags"][k.as_str()] = json!(val);
    }
    if let Some(p) = span.parent {
        v["parentId"] = json!(format!("{p:016x}"));
    }
    if shared {
        v["shared"] = json!(true);
    }
    v
}
