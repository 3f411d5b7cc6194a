//! Envoy's OpenTelemetry access logger: each access log line a log record (the line as its
//! body, formatted attributes), sent over OTLP/gRPC (`LogsService/Export`) when
//! `buffer_size_bytes` are waiting or every `buffer_flush_interval`, as Envoy batches them.
//! A collector that is down costs the records, never a request: the queue is bounded and
//! reports go out from their own task.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use prost::Message;
use tokio::sync::mpsc;

use crate::config::access_log::OtlpSink;
use crate::report::{self, Batching, Posted, Report};
use crate::trace::otlp::proto::{InstrumentationScope, KeyValue, Resource};
use crate::upstream::ClusterManager;

const GRPC_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
/// Records waiting beyond this (a collector far behind) are dropped, not buffered without end.
const QUEUE: usize = 10_000;

/// The OTLP logs messages weft sends, with their field numbers.
pub mod proto {
    use crate::trace::otlp::proto::{AnyValue, InstrumentationScope, KeyValue, Resource};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportLogsServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_logs: Vec<ResourceLogs>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceLogs {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_logs: Vec<ScopeLogs>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeLogs {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub log_records: Vec<LogRecord>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogRecord {
        #[prost(fixed64, tag = "1")]
        pub time_unix_nano: u64,
        #[prost(message, optional, tag = "5")]
        pub body: Option<AnyValue>,
        #[prost(message, repeated, tag = "6")]
        pub attributes: Vec<KeyValue>,
    }
}

/// One logger's queue; the task behind it sends the batches.
pub struct Reporter {
    tx: mpsc::Sender<proto::LogRecord>,
}

/// Who is logging: the node, for the built-in resource attributes.
pub struct Node {
    pub id: String,
    pub cluster: String,
    pub zone: String,
}

impl Reporter {
    pub fn start(sink: OtlpSink, node: &Node, clusters: Arc<ClusterManager>) -> Reporter {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut resource: Vec<KeyValue> = Vec::new();
        if sink.builtin_labels {
            for (k, v) in
                [("log_name", &sink.log_name), ("zone_name", &node.zone), ("cluster_name", &node.cluster), ("node_name", &node.id)]
            {
                resource.push(KeyValue::text(k, v));
            }
        }
        resource.extend(sink.resource.iter().map(|(k, v)| KeyValue::text(k, v)));
        tokio::spawn(run(sink, Resource { attributes: resource }, clusters, rx));
        Reporter { tx }
    }

    pub fn log(&self, body: String, attributes: Vec<(String, String)>) {
        let time_unix_nano = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_nanos()).unwrap_or(0)).unwrap_or(0);
        let record = proto::LogRecord {
            time_unix_nano,
            body: Some(crate::trace::otlp::proto::AnyValue { string_value: body }),
            attributes: attributes.iter().map(|(k, v)| KeyValue::text(k, v)).collect(),
        };
        if self.tx.try_send(record).is_err() {
            tracing::debug!("OpenTelemetry access log queue full; record dropped");
        }
    }
}

async fn run(sink: OtlpSink, resource: Resource, clusters: Arc<ClusterManager>, rx: mpsc::Receiver<proto::LogRecord>) {
    let batching = Batching { every: sink.flush, limit: sink.buffer_bytes };
    report::run(rx, batching, |r| r.encoded_len(), || {}, |records| send(&sink, &resource, &clusters, records)).await;
}

async fn send(sink: &OtlpSink, resource: &Resource, clusters: &ClusterManager, records: Vec<proto::LogRecord>) {
    let req = proto::ExportLogsServiceRequest {
        resource_logs: vec![proto::ResourceLogs {
            resource: Some(resource.clone()),
            scope_logs: vec![proto::ScopeLogs { scope: Some(InstrumentationScope { name: "weft".into() }), log_records: records }],
        }],
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    let r = Report {
        cluster: &sink.cluster,
        authority: &sink.authority,
        path: GRPC_PATH,
        headers,
        body: report::grpc_frame(&req.encode_to_vec()),
        timeout: sink.timeout,
    };
    match report::post(clusters, r, || {}).await {
        Posted::Answered(200) => {}
        other => tracing::debug!(collector = %sink.cluster, outcome = %other, "OpenTelemetry access log report dropped"),
    }
}
