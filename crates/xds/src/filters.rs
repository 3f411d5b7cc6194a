//! Extension configs weft implements: listener filters, network filters (HTTP connection
//! manager, TCP proxy), HTTP filters (router, fault) and access loggers.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::core::{DataSource, FractionalPercent, Ignored, Percent, ProtoDuration, Unsupported};
use crate::route::RouteConfiguration;
use crate::typed_any;

typed_any! {
    /// Listener filters.
    pub enum ListenerFilterConfig {
        OriginalDst(OriginalDst) = "envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
        TlsInspector(TlsInspector) = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        HttpInspector(HttpInspector) = "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginalDst {
    pub upstream_ip_address_source: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsInspector {
    pub enable_ja3_fingerprinting: Option<Ignored>,
    pub initial_read_buffer_size: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpInspector {}

typed_any! {
    /// Network filters.
    pub enum NetworkFilterConfig {
        HttpConnectionManager(Box<HttpConnectionManager>) =
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        TcpProxy(TcpProxy) = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProxy {
    pub stat_prefix: String,
    pub cluster: Option<String>,
    pub weighted_clusters: Option<TcpWeightedClusters>,
    pub idle_timeout: Option<ProtoDuration>,
    #[serde(default)]
    pub access_log: Vec<AccessLog>,
    pub max_connect_attempts: Option<u32>,
    pub metadata_match: Option<Unsupported>,
    pub tunneling_config: Option<Unsupported>,
    pub hash_policy: Option<Unsupported>,
    pub on_demand: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpWeightedClusters {
    pub clusters: Vec<TcpClusterWeight>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpClusterWeight {
    pub name: String,
    pub weight: u32,
    pub metadata_match: Option<Unsupported>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum CodecType {
    #[default]
    #[serde(rename = "AUTO")]
    Auto,
    #[serde(rename = "HTTP1")]
    Http1,
    #[serde(rename = "HTTP2")]
    Http2,
    #[serde(rename = "HTTP3")]
    Http3,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConnectionManager {
    pub stat_prefix: String,
    #[serde(default)]
    pub codec_type: CodecType,
    pub route_config: Option<RouteConfiguration>,
    pub rds: Option<Rds>,
    pub scoped_routes: Option<Unsupported>,
    #[serde(default)]
    pub http_filters: Vec<HttpFilter>,
    pub stream_idle_timeout: Option<ProtoDuration>,
    pub request_timeout: Option<ProtoDuration>,
    pub request_headers_timeout: Option<ProtoDuration>,
    /// Largest request header block, in KiB (Envoy: 60 by default, at most 8192).
    pub max_request_headers_kb: Option<u32>,
    pub drain_timeout: Option<ProtoDuration>,
    /// Only how long a closing connection lingers for its peer to read: accepted, not applied.
    pub delayed_close_timeout: Option<Ignored>,
    #[serde(default)]
    pub access_log: Vec<AccessLog>,
    pub use_remote_address: Option<bool>,
    #[serde(default)]
    pub xff_num_trusted_hops: u32,
    #[serde(default)]
    pub skip_xff_append: bool,
    pub generate_request_id: Option<bool>,
    #[serde(default)]
    pub preserve_external_request_id: bool,
    #[serde(default)]
    pub always_set_request_id_in_response: bool,
    pub server_name: Option<String>,
    pub server_header_transformation: Option<ServerHeaderTransformation>,
    pub http_protocol_options: Option<Http1ProtocolOptions>,
    pub http2_protocol_options: Option<Http2ProtocolOptions>,
    pub common_http_protocol_options: Option<CommonHttpProtocolOptions>,
    #[serde(default)]
    pub upgrade_configs: Vec<UpgradeConfig>,
    pub normalize_path: Option<bool>,
    #[serde(default)]
    pub merge_slashes: bool,
    pub tracing: Option<HcmTracing>,
    pub internal_address_config: Option<Unsupported>,
    pub forward_client_cert_details: Option<ForwardClientCertDetails>,
    pub set_current_client_cert_details: Option<SetCurrentClientCertDetails>,
    pub path_with_escaped_slashes_action: Option<Unsupported>,
    pub local_reply_config: Option<Unsupported>,
    pub original_ip_detection_extensions: Option<Unsupported>,
    pub add_user_agent: Option<Unsupported>,
    pub via: Option<Unsupported>,
    pub stream_error_on_invalid_http_message: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ServerHeaderTransformation {
    #[serde(rename = "OVERWRITE")]
    Overwrite,
    #[serde(rename = "APPEND_IF_ABSENT")]
    AppendIfAbsent,
    #[serde(rename = "PASS_THROUGH")]
    PassThrough,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http1ProtocolOptions {
    pub allow_absolute_url: Option<bool>,
    #[serde(default)]
    pub accept_http_10: bool,
    pub default_host_for_http_10: Option<String>,
    pub header_key_format: Option<Unsupported>,
    pub enable_trailers: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http2ProtocolOptions {
    pub max_concurrent_streams: Option<u32>,
    pub initial_stream_window_size: Option<u32>,
    pub initial_connection_window_size: Option<u32>,
    pub allow_connect: Option<bool>,
    pub connection_keepalive: Option<Ignored>,
    pub hpack_table_size: Option<u32>,
    pub max_outbound_frames: Option<u32>,
    pub max_outbound_control_frames: Option<u32>,
    pub max_consecutive_inbound_frames_with_empty_payload: Option<u32>,
    pub max_inbound_priority_frames_per_stream: Option<u32>,
    pub max_inbound_window_update_frames_per_data_frame_sent: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommonHttpProtocolOptions {
    pub idle_timeout: Option<ProtoDuration>,
    pub max_connection_duration: Option<ProtoDuration>,
    pub max_headers_count: Option<u32>,
    pub max_stream_duration: Option<ProtoDuration>,
    pub max_requests_per_connection: Option<u32>,
    pub headers_with_underscores_action: Option<HeadersWithUnderscoresAction>,
}

/// What a connection manager does with a request header whose name has an underscore (such
/// names can be read as hyphens by CGI-style applications, so a proxy may want them gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum HeadersWithUnderscoresAction {
    #[serde(rename = "ALLOW")]
    Allow,
    #[serde(rename = "REJECT_REQUEST")]
    RejectRequest,
    #[serde(rename = "DROP_HEADER")]
    DropHeader,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeConfig {
    pub upgrade_type: String,
    pub enabled: Option<bool>,
    pub filters: Option<Unsupported>,
}

/// Routes fetched by name over ADS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rds {
    pub config_source: crate::core::ConfigSource,
    pub route_config_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFilter {
    pub name: String,
    pub typed_config: Option<HttpFilterConfig>,
    #[serde(default)]
    pub is_optional: bool,
    #[serde(default)]
    pub disabled: bool,
    pub config_discovery: Option<Unsupported>,
}

typed_any! {
    /// Per-route overrides of an HTTP filter's config (`typed_per_filter_config` values),
    /// keyed by the filter's name.
    pub enum PerFilterConfig {
        Fault(Box<HttpFault>) = "envoy.extensions.filters.http.fault.v3.HTTPFault",
    }
}

typed_any! {
    /// HTTP filters.
    pub enum HttpFilterConfig {
        Router(Router) = "envoy.extensions.filters.http.router.v3.Router",
        Fault(Box<HttpFault>) = "envoy.extensions.filters.http.fault.v3.HTTPFault",
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Router {
    pub dynamic_stats: Option<bool>,
    #[serde(default)]
    pub suppress_envoy_headers: bool,
    #[serde(default)]
    pub start_child_span: bool,
    pub upstream_log: Option<Unsupported>,
    pub upstream_http_filters: Option<Unsupported>,
    pub respect_expected_rq_timeout: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
    pub upstream_cluster: Option<String>,
    #[serde(default)]
    pub headers: Vec<crate::route::HeaderMatcher>,
    #[serde(default)]
    pub downstream_nodes: Vec<String>,
    pub max_active_faults: Option<u32>,
    pub response_rate_limit: Option<Unsupported>,
    pub delay_percent_runtime: Option<Ignored>,
    pub abort_percent_runtime: Option<Ignored>,
    pub delay_duration_runtime: Option<Ignored>,
    pub abort_http_status_runtime: Option<Ignored>,
    pub max_active_faults_runtime: Option<Ignored>,
    pub abort_grpc_status_runtime: Option<Ignored>,
    #[serde(default)]
    pub disable_downstream_cluster_stats: bool,
    pub filter_metadata: Option<Ignored>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    pub fixed_delay: Option<ProtoDuration>,
    pub header_delay: Option<EmptyObject>,
    pub percentage: Option<FractionalPercent>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    pub http_status: Option<u32>,
    pub grpc_status: Option<u32>,
    pub header_abort: Option<EmptyObject>,
    pub percentage: Option<FractionalPercent>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyObject {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    #[serde(default)]
    pub name: String,
    pub typed_config: Option<AccessLogConfig>,
    pub filter: Option<AccessLogFilter>,
}

/// `envoy.config.accesslog.v3.AccessLogFilter`: only the CEL extension filter (what istiod
/// writes for a Telemetry `filter.expression`); the others are refused by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFilter {
    pub extension_filter: Option<ExtensionFilter>,
    pub status_code_filter: Option<Unsupported>,
    pub duration_filter: Option<Unsupported>,
    pub not_health_check_filter: Option<Unsupported>,
    pub traceable_filter: Option<Unsupported>,
    pub runtime_filter: Option<Unsupported>,
    pub and_filter: Option<Unsupported>,
    pub or_filter: Option<Unsupported>,
    pub header_filter: Option<Unsupported>,
    pub response_flag_filter: Option<Unsupported>,
    pub grpc_status_filter: Option<Unsupported>,
    pub metadata_filter: Option<Unsupported>,
    pub log_type_filter: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionFilter {
    #[serde(default)]
    pub name: String,
    pub typed_config: Option<AccessLogFilterConfig>,
}

typed_any! {
    /// Access log extension filters.
    pub enum AccessLogFilterConfig {
        Cel(CelExpressionFilter) = "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CelExpressionFilter {
    #[serde(default)]
    pub expression: String,
}

typed_any! {
    /// Access loggers.
    pub enum AccessLogConfig {
        File(FileAccessLog) = "envoy.extensions.access_loggers.file.v3.FileAccessLog",
        Stdout(StreamAccessLog) = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
        Stderr(StreamAccessLog) = "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
        OpenTelemetry(OtelAccessLogConfig) = "envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig",
    }
}

/// Envoy's OpenTelemetry access logger: log records over OTLP/gRPC (`LogsService/Export`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtelAccessLogConfig {
    pub common_config: Option<CommonGrpcAccessLogConfig>,
    pub body: Option<OtelAnyValue>,
    pub attributes: Option<OtelKeyValueList>,
    pub resource_attributes: Option<OtelKeyValueList>,
    pub stat_prefix: Option<Ignored>,
    #[serde(default)]
    pub disable_builtin_labels: bool,
    pub formatters: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommonGrpcAccessLogConfig {
    #[serde(default)]
    pub log_name: String,
    pub grpc_service: Option<GrpcService>,
    pub transport_api_version: Option<Ignored>,
    pub buffer_flush_interval: Option<ProtoDuration>,
    pub buffer_size_bytes: Option<u32>,
    pub filter_state_objects_to_log: Option<Unsupported>,
    pub grpc_stream_retry_policy: Option<Unsupported>,
}

/// OTLP's `AnyValue` in proto3 JSON: weft formats string values.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtelAnyValue {
    pub string_value: Option<String>,
    pub bool_value: Option<Unsupported>,
    pub int_value: Option<Unsupported>,
    pub double_value: Option<Unsupported>,
    pub array_value: Option<Unsupported>,
    pub kvlist_value: Option<Unsupported>,
    pub bytes_value: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtelKeyValueList {
    #[serde(default)]
    pub values: Vec<OtelKeyValue>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtelKeyValue {
    #[serde(default)]
    pub key: String,
    pub value: Option<OtelAnyValue>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccessLog {
    pub path: String,
    pub format: Option<String>,
    pub json_format: Option<BTreeMap<String, serde_json::Value>>,
    pub log_format: Option<SubstitutionFormatString>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamAccessLog {
    pub log_format: Option<SubstitutionFormatString>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubstitutionFormatString {
    pub text_format: Option<String>,
    pub text_format_source: Option<DataSource>,
    pub json_format: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub omit_empty_values: bool,
    pub content_type: Option<String>,
    pub formatters: Option<Unsupported>,
    pub json_format_options: Option<Ignored>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ForwardClientCertDetails {
    #[default]
    Sanitize,
    ForwardOnly,
    AppendForward,
    SanitizeSet,
    AlwaysForwardOnly,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetCurrentClientCertDetails {
    pub subject: Option<bool>,
    #[serde(default)]
    pub cert: bool,
    #[serde(default)]
    pub chain: bool,
    #[serde(default)]
    pub dns: bool,
    #[serde(default)]
    pub uri: bool,
}

/// `HttpConnectionManager.tracing`: which requests are traced and where spans go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HcmTracing {
    pub client_sampling: Option<Percent>,
    pub random_sampling: Option<Percent>,
    pub overall_sampling: Option<Percent>,
    #[serde(default)]
    pub verbose: bool,
    pub max_path_tag_length: Option<u32>,
    #[serde(default)]
    pub custom_tags: Vec<CustomTag>,
    pub provider: Option<TracingProvider>,
    pub spawn_upstream_span: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingProvider {
    #[serde(default)]
    pub name: String,
    pub typed_config: Option<TracerConfig>,
}

typed_any! {
    /// Tracers.
    pub enum TracerConfig {
        Zipkin(ZipkinConfig) = "envoy.config.trace.v3.ZipkinConfig",
        OpenTelemetry(OpenTelemetryConfig) = "envoy.config.trace.v3.OpenTelemetryConfig",
    }
}

/// Envoy's OpenTelemetry tracer: spans exported over OTLP, by gRPC or HTTP.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenTelemetryConfig {
    pub grpc_service: Option<GrpcService>,
    pub http_service: Option<HttpService>,
    #[serde(default)]
    pub service_name: String,
    pub resource_detectors: Option<Unsupported>,
    pub sampler: Option<Unsupported>,
    /// Deprecated in Envoy; batching follows Envoy's flush defaults.
    pub max_cache_size: Option<Ignored>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcService {
    pub envoy_grpc: Option<EnvoyGrpc>,
    pub google_grpc: Option<Unsupported>,
    pub timeout: Option<crate::core::ProtoDuration>,
    pub initial_metadata: Option<Unsupported>,
    pub retry_policy: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvoyGrpc {
    #[serde(default)]
    pub cluster_name: String,
    #[serde(default)]
    pub authority: String,
    pub retry_policy: Option<Unsupported>,
    pub max_receive_message_length: Option<Ignored>,
    pub skip_envoy_headers: Option<Ignored>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpService {
    pub http_uri: HttpUri,
    pub request_headers_to_add: Option<Unsupported>,
    pub retry_policy: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpUri {
    #[serde(default)]
    pub uri: String,
    #[serde(default)]
    pub cluster: String,
    pub timeout: Option<crate::core::ProtoDuration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZipkinConfig {
    #[serde(default)]
    pub collector_cluster: String,
    #[serde(default)]
    pub collector_endpoint: String,
    #[serde(default)]
    pub trace_id_128bit: bool,
    /// Envoy's default is true.
    pub shared_span_context: Option<bool>,
    #[serde(default)]
    pub collector_endpoint_version: ZipkinEndpointVersion,
    #[serde(default)]
    pub collector_hostname: String,
    #[serde(default)]
    pub split_spans_for_request: bool,
    #[serde(default)]
    pub trace_context_option: TraceContextOption,
    pub collector_service: Option<Unsupported>,
}

/// Which trace context headers the Zipkin tracer reads and writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TraceContextOption {
    /// B3 only (Envoy's default).
    #[default]
    #[serde(rename = "USE_B3")]
    UseB3,
    /// B3 first, else W3C `traceparent`; both written.
    #[serde(rename = "USE_B3_WITH_W3C_PROPAGATION")]
    UseB3WithW3cPropagation,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ZipkinEndpointVersion {
    #[default]
    #[serde(rename = "DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE")]
    Unset,
    #[serde(rename = "HTTP_JSON")]
    HttpJson,
    #[serde(rename = "HTTP_PROTO")]
    HttpProto,
    #[serde(rename = "GRPC")]
    Grpc,
}

/// `type.tracing.v3.CustomTag`: one of its kinds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomTag {
    pub tag: String,
    pub literal: Option<LiteralTag>,
    pub environment: Option<EnvironmentTag>,
    pub request_header: Option<HeaderTag>,
    /// Dynamic metadata tags name what weft does not keep; their default value is used.
    pub metadata: Option<MetadataTag>,
    pub value: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiteralTag {
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentTag {
    pub name: String,
    #[serde(default)]
    pub default_value: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderTag {
    pub name: String,
    #[serde(default)]
    pub default_value: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataTag {
    pub kind: Option<Ignored>,
    pub metadata_key: Option<Ignored>,
    #[serde(default)]
    pub default_value: String,
}
