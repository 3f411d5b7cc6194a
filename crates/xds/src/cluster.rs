//! `envoy.config.cluster.v3` and `envoy.config.endpoint.v3`: clusters, endpoints, circuit
//! breakers, outlier detection, health checks and upstream protocol options.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::core::{Address, Ignored, Percent, ProtoDuration, Unsupported};
use crate::filters::{CommonHttpProtocolOptions, Http1ProtocolOptions, Http2ProtocolOptions};
use crate::typed_any;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum DiscoveryType {
    #[default]
    #[serde(rename = "STATIC")]
    Static,
    #[serde(rename = "STRICT_DNS")]
    StrictDns,
    #[serde(rename = "LOGICAL_DNS")]
    LogicalDns,
    #[serde(rename = "EDS")]
    Eds,
    #[serde(rename = "ORIGINAL_DST")]
    OriginalDst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum LbPolicy {
    #[default]
    #[serde(rename = "ROUND_ROBIN")]
    RoundRobin,
    #[serde(rename = "LEAST_REQUEST")]
    LeastRequest,
    #[serde(rename = "RING_HASH")]
    RingHash,
    #[serde(rename = "RANDOM")]
    Random,
    #[serde(rename = "MAGLEV")]
    Maglev,
    #[serde(rename = "CLUSTER_PROVIDED")]
    ClusterProvided,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum DnsLookupFamily {
    #[default]
    #[serde(rename = "AUTO")]
    Auto,
    #[serde(rename = "V4_ONLY")]
    V4Only,
    #[serde(rename = "V6_ONLY")]
    V6Only,
    #[serde(rename = "V4_PREFERRED")]
    V4Preferred,
    #[serde(rename = "ALL")]
    All,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    #[serde(rename = "type", default)]
    pub type_: DiscoveryType,
    pub connect_timeout: Option<ProtoDuration>,
    #[serde(default)]
    pub lb_policy: LbPolicy,
    pub load_assignment: Option<ClusterLoadAssignment>,
    pub circuit_breakers: Option<CircuitBreakers>,
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    pub typed_extension_protocol_options: Option<BTreeMap<String, ProtocolOptionsConfig>>,
    pub http2_protocol_options: Option<Http2ProtocolOptions>,
    pub http_protocol_options: Option<Http1ProtocolOptions>,
    pub common_http_protocol_options: Option<CommonHttpProtocolOptions>,
    pub max_requests_per_connection: Option<u32>,
    #[serde(default)]
    pub dns_lookup_family: DnsLookupFamily,
    pub dns_refresh_rate: Option<ProtoDuration>,
    #[serde(default)]
    pub respect_dns_ttl: bool,
    pub common_lb_config: Option<CommonLbConfig>,
    pub ring_hash_lb_config: Option<RingHashLbConfig>,
    pub maglev_lb_config: Option<MaglevLbConfig>,
    pub least_request_lb_config: Option<LeastRequestLbConfig>,
    pub original_dst_lb_config: Option<OriginalDstLbConfig>,
    pub per_connection_buffer_limit_bytes: Option<u32>,
    pub cleanup_interval: Option<ProtoDuration>,
    pub upstream_connection_options: Option<UpstreamConnectionOptions>,
    pub metadata: Option<Ignored>,
    pub alt_stat_name: Option<String>,
    pub transport_socket: Option<crate::tls::TransportSocket>,
    #[serde(default)]
    pub transport_socket_matches: Vec<TransportSocketMatch>,
    pub eds_cluster_config: Option<EdsClusterConfig>,
    pub cluster_type: Option<Unsupported>,
    pub load_balancing_policy: Option<Unsupported>,
    pub lb_subset_config: Option<Unsupported>,
    pub upstream_bind_config: Option<Unsupported>,
    pub dns_resolvers: Option<Unsupported>,
    pub typed_dns_resolver_config: Option<Unsupported>,
    pub filters: Option<Unsupported>,
    pub track_cluster_stats: Option<Ignored>,
    pub ignore_health_on_host_removal: Option<bool>,
    pub close_connections_on_host_health_failure: Option<bool>,
}

/// `envoy.config.cluster.v3.UpstreamConnectionOptions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConnectionOptions {
    pub tcp_keepalive: Option<TcpKeepalive>,
    pub set_local_interface_name_on_upstream_connections: Option<Unsupported>,
    pub happy_eyeballs_config: Option<Unsupported>,
}

/// `envoy.config.core.v3.TcpKeepalive`: unset values are the system's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpKeepalive {
    pub keepalive_probes: Option<u32>,
    pub keepalive_time: Option<u32>,
    pub keepalive_interval: Option<u32>,
}

/// A transport socket for the endpoints whose `envoy.transport_socket_match` metadata has
/// every key of `match` (an empty match takes every endpoint).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSocketMatch {
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "match")]
    pub match_: serde_json::Map<String, serde_json::Value>,
    pub transport_socket: Option<crate::tls::TransportSocket>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdsClusterConfig {
    pub eds_config: Option<crate::core::ConfigSource>,
    pub service_name: Option<String>,
}

typed_any! {
    /// Upstream protocol options (`typed_extension_protocol_options` values).
    pub enum ProtocolOptionsConfig {
        Http(Box<HttpProtocolOptions>) = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProtocolOptions {
    pub common_http_protocol_options: Option<CommonHttpProtocolOptions>,
    pub upstream_http_protocol_options: Option<Ignored>,
    pub explicit_http_config: Option<ExplicitHttpConfig>,
    pub use_downstream_protocol_config: Option<UseDownstreamHttpConfig>,
    pub auto_config: Option<Unsupported>,
    pub http_filters: Option<Unsupported>,
    pub header_validation_config: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplicitHttpConfig {
    pub http_protocol_options: Option<Http1ProtocolOptions>,
    pub http2_protocol_options: Option<Http2ProtocolOptions>,
    pub http3_protocol_options: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UseDownstreamHttpConfig {
    pub http_protocol_options: Option<Http1ProtocolOptions>,
    pub http2_protocol_options: Option<Http2ProtocolOptions>,
    pub http3_protocol_options: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterLoadAssignment {
    #[serde(default)]
    pub cluster_name: String,
    #[serde(default)]
    pub endpoints: Vec<LocalityLbEndpoints>,
    pub policy: Option<LoadAssignmentPolicy>,
    pub named_endpoints: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadAssignmentPolicy {
    pub overprovisioning_factor: Option<u32>,
    pub endpoint_stale_after: Option<Ignored>,
    pub drop_overloads: Option<Unsupported>,
    #[serde(default)]
    pub weighted_priority_health: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalityLbEndpoints {
    pub locality: Option<Ignored>,
    #[serde(default)]
    pub lb_endpoints: Vec<LbEndpoint>,
    pub load_balancing_weight: Option<u32>,
    #[serde(default)]
    pub priority: u32,
    pub proximity: Option<Ignored>,
    pub metadata: Option<Ignored>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum HealthStatus {
    #[default]
    #[serde(rename = "UNKNOWN")]
    Unknown,
    #[serde(rename = "HEALTHY")]
    Healthy,
    #[serde(rename = "UNHEALTHY")]
    Unhealthy,
    #[serde(rename = "DRAINING")]
    Draining,
    #[serde(rename = "TIMEOUT")]
    Timeout,
    #[serde(rename = "DEGRADED")]
    Degraded,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbEndpoint {
    pub endpoint: Option<Endpoint>,
    #[serde(default)]
    pub health_status: HealthStatus,
    pub load_balancing_weight: Option<u32>,
    pub metadata: Option<crate::core::Metadata>,
    pub endpoint_name: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub address: Address,
    pub health_check_config: Option<EndpointHealthCheckConfig>,
    #[serde(default)]
    pub hostname: String,
    pub additional_addresses: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointHealthCheckConfig {
    pub port_value: Option<u32>,
    pub hostname: Option<String>,
    pub address: Option<Unsupported>,
    #[serde(default)]
    pub disable_active_health_check: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    #[serde(default)]
    pub thresholds: Vec<Thresholds>,
    pub per_host_thresholds: Option<Unsupported>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum RoutingPriority {
    #[default]
    #[serde(rename = "DEFAULT")]
    Default,
    #[serde(rename = "HIGH")]
    High,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    #[serde(default)]
    pub priority: RoutingPriority,
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_retries: Option<u32>,
    pub retry_budget: Option<Unsupported>,
    #[serde(default)]
    pub track_remaining: bool,
    pub max_connection_pools: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    pub consecutive_5xx: Option<u32>,
    pub interval: Option<ProtoDuration>,
    pub base_ejection_time: Option<ProtoDuration>,
    pub max_ejection_time: Option<ProtoDuration>,
    pub max_ejection_percent: Option<u32>,
    pub enforcing_consecutive_5xx: Option<u32>,
    pub consecutive_gateway_failure: Option<u32>,
    pub enforcing_consecutive_gateway_failure: Option<u32>,
    pub split_external_local_origin_errors: Option<bool>,
    pub consecutive_local_origin_failure: Option<u32>,
    pub enforcing_consecutive_local_origin_failure: Option<u32>,
    pub enforcing_success_rate: Option<u32>,
    pub success_rate_minimum_hosts: Option<Ignored>,
    pub success_rate_request_volume: Option<Ignored>,
    pub success_rate_stdev_factor: Option<Ignored>,
    pub failure_percentage_threshold: Option<Unsupported>,
    pub enforcing_failure_percentage: Option<u32>,
    pub max_ejection_time_jitter: Option<ProtoDuration>,
    pub always_eject_one_host: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub timeout: Option<ProtoDuration>,
    pub interval: Option<ProtoDuration>,
    pub initial_jitter: Option<ProtoDuration>,
    pub interval_jitter: Option<ProtoDuration>,
    pub interval_jitter_percent: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    pub healthy_threshold: Option<u32>,
    pub no_traffic_interval: Option<ProtoDuration>,
    pub no_traffic_healthy_interval: Option<ProtoDuration>,
    pub unhealthy_interval: Option<ProtoDuration>,
    pub unhealthy_edge_interval: Option<ProtoDuration>,
    pub healthy_edge_interval: Option<ProtoDuration>,
    pub reuse_connection: Option<bool>,
    pub http_health_check: Option<HttpHealthCheck>,
    pub tcp_health_check: Option<TcpHealthCheck>,
    pub grpc_health_check: Option<Unsupported>,
    pub custom_health_check: Option<Unsupported>,
    pub event_log_path: Option<Ignored>,
    #[serde(default)]
    pub always_log_health_check_failures: bool,
    pub tls_options: Option<Unsupported>,
    pub transport_socket_match_criteria: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpHealthCheck {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub expected_statuses: Vec<crate::core::Int64Range>,
    #[serde(default)]
    pub request_headers_to_add: Vec<crate::core::HeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    pub codec_client_type: Option<Unsupported>,
    pub send: Option<Unsupported>,
    pub receive: Option<Unsupported>,
    pub retriable_statuses: Option<Unsupported>,
    pub service_name_matcher: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpHealthCheck {
    pub send: Option<Payload>,
    #[serde(default)]
    pub receive: Vec<Payload>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub text: Option<String>,
    pub binary: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommonLbConfig {
    pub healthy_panic_threshold: Option<Percent>,
    pub zone_aware_lb_config: Option<Unsupported>,
    pub locality_weighted_lb_config: Option<Ignored>,
    pub update_merge_window: Option<Ignored>,
    pub ignore_new_hosts_until_first_hc: Option<bool>,
    pub close_connections_on_host_set_change: Option<bool>,
    pub consistent_hashing_lb_config: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingHashLbConfig {
    pub minimum_ring_size: Option<u64>,
    pub maximum_ring_size: Option<u64>,
    pub hash_function: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaglevLbConfig {
    pub table_size: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeastRequestLbConfig {
    pub choice_count: Option<u32>,
    pub active_request_bias: Option<Unsupported>,
    pub slow_start_config: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginalDstLbConfig {
    #[serde(default)]
    pub use_http_header: bool,
    pub http_header_name: Option<String>,
    pub upstream_port_override: Option<u32>,
}
