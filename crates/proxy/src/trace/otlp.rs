//! Reporting spans over OTLP (OpenTelemetry's protocol, what Jaeger and every OpenTelemetry
//! collector take), as Envoy's OpenTelemetry tracer does: protobuf `ExportTraceServiceRequest`s
//! by gRPC (`TraceService/Export`) or by HTTP (`POST /v1/traces`), batched like Zipkin reports
//! (5 spans, or every 5 seconds), with W3C trace context.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use prost::Message;
use tokio::sync::mpsc;

use super::{Span, SpanKind};
use crate::report::{self, Batching, Posted, Report};
use crate::stats::OtelStats;
use crate::upstream::ClusterManager;

const MIN_FLUSH_SPANS: usize = 5;
const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
const QUEUE: usize = 10_000;
const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http { path: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collector {
    pub cluster: String,
    /// The `:authority` (gRPC) or `Host` (HTTP) of reports.
    pub authority: String,
    pub transport: Transport,
    pub timeout: Duration,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

/// One collector's queue; the task behind it sends the reports.
pub struct Reporter {
    tx: mpsc::Sender<proto::Span>,
}

impl Reporter {
    pub fn start(c: Collector, clusters: Arc<ClusterManager>, stats: Arc<OtelStats>) -> Arc<Reporter> {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(c, clusters, stats, rx));
        Arc::new(Reporter { tx })
    }

    pub fn report(&self, span: proto::Span) {
        if self.tx.try_send(span).is_err() {
            tracing::debug!("OpenTelemetry span queue full; span dropped");
        }
    }
}

async fn run(c: Collector, clusters: Arc<ClusterManager>, stats: Arc<OtelStats>, rx: mpsc::Receiver<proto::Span>) {
    let batching = Batching { every: FLUSH_INTERVAL, limit: MIN_FLUSH_SPANS };
    report::run(rx, batching, |_| 1, || stats.timer_flushed.inc(), |spans| flush(&c, &clusters, &stats, spans)).await;
}

/// The request body: the export request, framed for gRPC when sent by gRPC.
pub fn body(c: &Collector, spans: Vec<proto::Span>) -> Bytes {
    let req = proto::ExportTraceServiceRequest {
        resource_spans: vec![proto::ResourceSpans {
            resource: Some(proto::Resource { attributes: vec![proto::KeyValue::text("service.name", &c.service_name)] }),
            scope_spans: vec![proto::ScopeSpans { scope: Some(proto::InstrumentationScope { name: "weft".into() }), spans }],
        }],
    };
    let msg = req.encode_to_vec();
    match c.transport {
        Transport::Http { .. } => Bytes::from(msg),
        Transport::Grpc => report::grpc_frame(&msg),
    }
}

async fn flush(c: &Collector, clusters: &ClusterManager, stats: &OtelStats, spans: Vec<proto::Span>) {
    let count = spans.len() as u64;
    let mut headers = HeaderMap::new();
    let path = match &c.transport {
        Transport::Grpc => {
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
            GRPC_PATH
        }
        Transport::Http { path } => {
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
            path.as_str()
        }
    };
    let r = Report { cluster: &c.cluster, authority: &c.authority, path, headers, body: body(c, spans), timeout: c.timeout };
    match report::post(clusters, r, || stats.spans_sent.add(count)).await {
        Posted::Unbuildable => stats.reports_failed.inc(),
        Posted::Answered(200 | 202) => stats.reports_sent.inc(),
        other => {
            tracing::debug!(collector = %c.cluster, outcome = %other, "OTLP span report dropped");
            stats.reports_dropped.inc();
        }
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// The span as OTLP: Envoy's tags as string attributes, custom tags too.
pub fn encode(span: &Span, kind: SpanKind) -> proto::Span {
    let start = nanos(span.start);
    let end = nanos(SystemTime::now()).max(start);
    let mut trace_id = Vec::with_capacity(16);
    trace_id.extend_from_slice(&span.trace_id.high.to_be_bytes());
    trace_id.extend_from_slice(&span.trace_id.low.to_be_bytes());
    let mut attributes: Vec<proto::KeyValue> = span.tags.iter().map(|(k, v)| proto::KeyValue::text(k, v)).collect();
    attributes.extend(span.custom.iter().map(|(k, v)| proto::KeyValue::text(k, v)));
    let error = span.tags.get("error").is_some_and(|e| e == "true");
    proto::Span {
        trace_id,
        span_id: span.id.to_be_bytes().to_vec(),
        trace_state: String::new(),
        parent_span_id: span.parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: span.name.clone(),
        kind: match kind {
            SpanKind::Server => 2,
            SpanKind::Client => 3,
        },
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        status: error.then_some(proto::Status { message: String::new(), code: 2 }),
    }
}

/// The OTLP messages weft sends (`opentelemetry/proto/{collector/trace,trace,common,resource}/v1`),
/// with their field numbers; fields weft never sets are left out.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        pub trace_state: String,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub name: String,
        /// SERVER = 2, CLIENT = 3.
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(string, tag = "2")]
        pub message: String,
        /// ERROR = 2.
        #[prost(int32, tag = "3")]
        pub code: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    impl KeyValue {
        pub fn text(key: &str, value: &str) -> KeyValue {
            KeyValue { key: key.into(), value: Some(AnyValue { string_value: value.into() }) }
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(string, tag = "1")]
        pub string_value: String,
    }
}
