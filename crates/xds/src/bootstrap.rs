//! `envoy.config.bootstrap.v3.Bootstrap`: the file `weft proxy -c` reads.

use serde::Deserialize;

use crate::cluster::Cluster;
use crate::core::{Address, ApiVersion, ConfigSource, Ignored, Node, ProtoDuration, StringMatcher, Unsupported};
use crate::filters::AccessLog;
use crate::listener::Listener;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    pub node: Option<Node>,
    #[serde(default)]
    pub static_resources: StaticResources,
    pub dynamic_resources: Option<DynamicResources>,
    pub admin: Option<Admin>,
    pub layered_runtime: Option<LayeredRuntime>,
    pub stats_config: Option<StatsConfig>,
    /// Accepted when empty (Istio writes `[]`): weft has no stats sink, so any sink is refused.
    #[serde(default)]
    pub stats_sinks: Vec<Unsupported>,
    /// How often stats go to sinks; with none (the only case weft accepts) it changes nothing.
    pub stats_flush_interval: Option<ProtoDuration>,
    pub overload_manager: Option<OverloadManager>,
    pub cluster_manager: Option<ClusterManager>,
    pub watchdogs: Option<Ignored>,
    pub tracing: Option<Unsupported>,
    pub node_context_params: Option<Ignored>,
    #[serde(default)]
    pub bootstrap_extensions: Vec<BootstrapExtension>,
    pub default_socket_interface: Option<Unsupported>,
    pub deferred_stat_options: Option<DeferredStatOptions>,
    /// The format of weft's own log lines (as `--log-format`, which must not be given too).
    pub application_log_config: Option<ApplicationLogConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationLogConfig {
    pub log_format: Option<ApplicationLogFormat>,
}

/// One of the two (Envoy's oneof): an spdlog pattern, or a JSON object whose string values are
/// spdlog patterns.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationLogFormat {
    pub text_format: Option<String>,
    pub json_format: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticResources {
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    pub secrets: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub address: Option<Address>,
    pub access_log_path: Option<String>,
    #[serde(default)]
    pub access_log: Vec<AccessLog>,
    pub profile_path: Option<Ignored>,
    pub socket_options: Option<Unsupported>,
    pub ignore_global_conn_limit: Option<Ignored>,
}

/// Where listeners and clusters come from at run time: weft supports one ADS stream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicResources {
    pub ads_config: Option<ApiConfigSource>,
    pub cds_config: Option<ConfigSource>,
    pub lds_config: Option<ConfigSource>,
    pub cds_resources_locator: Option<Unsupported>,
    pub lds_resources_locator: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfigSource {
    pub api_type: ApiType,
    pub transport_api_version: Option<ApiVersion>,
    #[serde(default)]
    pub grpc_services: Vec<GrpcService>,
    pub set_node_on_first_message_only: Option<bool>,
    pub refresh_delay: Option<Ignored>,
    pub request_timeout: Option<Ignored>,
    pub rate_limit_settings: Option<Ignored>,
    pub cluster_names: Option<Unsupported>,
    pub config_validators: Option<Unsupported>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ApiType {
    #[serde(rename = "GRPC")]
    Grpc,
    #[serde(rename = "DELTA_GRPC")]
    DeltaGrpc,
    #[serde(rename = "AGGREGATED_GRPC")]
    AggregatedGrpc,
    #[serde(rename = "AGGREGATED_DELTA_GRPC")]
    AggregatedDeltaGrpc,
    #[serde(rename = "REST")]
    Rest,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcService {
    pub envoy_grpc: Option<EnvoyGrpc>,
    pub timeout: Option<ProtoDuration>,
    pub google_grpc: Option<Unsupported>,
    pub initial_metadata: Option<Unsupported>,
    pub retry_policy: Option<Ignored>,
}

/// The control plane as a cluster of the bootstrap's `static_resources`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvoyGrpc {
    pub cluster_name: String,
    pub authority: Option<String>,
    pub retry_policy: Option<Ignored>,
    pub max_receive_message_length: Option<Ignored>,
    pub skip_envoy_headers: Option<Ignored>,
}

/// `envoy.config.metrics.v3.StatsConfig`: how stats are named and which exist.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    #[serde(default)]
    pub stats_tags: Vec<TagSpecifier>,
    pub use_all_default_tags: Option<bool>,
    pub stats_matcher: Option<StatsMatcher>,
    pub histogram_bucket_settings: Option<Unsupported>,
}

/// A tag: `regex` extracts it from the stat name (Envoy's first capture group is removed from
/// the name, the second is the value); `fixed_value` adds it to every stat; neither names one
/// of Envoy's default tags.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagSpecifier {
    #[serde(default)]
    pub tag_name: String,
    pub regex: Option<String>,
    pub fixed_value: Option<String>,
}

/// Which stats exist: one of the three.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsMatcher {
    pub reject_all: Option<bool>,
    pub exclusion_list: Option<ListStringMatcher>,
    pub inclusion_list: Option<ListStringMatcher>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListStringMatcher {
    #[serde(default)]
    pub patterns: Vec<StringMatcher>,
}

/// `envoy.config.overload.v3.OverloadManager`: weft implements the resource monitor Istio
/// configures (`envoy.resource_monitors.global_downstream_max_connections`) and no action.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverloadManager {
    pub refresh_interval: Option<ProtoDuration>,
    #[serde(default)]
    pub resource_monitors: Vec<ResourceMonitor>,
    #[serde(default)]
    pub actions: Vec<Unsupported>,
    #[serde(default)]
    pub loadshed_points: Vec<Unsupported>,
    pub buffer_factor: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceMonitor {
    #[serde(default)]
    pub name: String,
    pub typed_config: Option<ResourceMonitorConfig>,
}

crate::typed_any! {
    /// Resource monitors weft implements.
    pub enum ResourceMonitorConfig {
        DownstreamConnections(DownstreamConnectionsConfig) =
            "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownstreamConnectionsConfig {
    /// An int64, which proto3 JSON may write as a string.
    pub max_active_downstream_connections: Option<serde_json::Value>,
}

/// `envoy.config.bootstrap.v3.Bootstrap.DeferredStatOptions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeferredStatOptions {
    #[serde(default)]
    pub enable_deferred_creation_stats: bool,
}

/// A bootstrap extension (`TypedExtensionConfig`); its `typed_config` is checked by the proxy,
/// which knows the extensions it has.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapExtension {
    #[serde(default)]
    pub name: String,
    pub typed_config: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `envoy.config.bootstrap.v3.LayeredRuntime`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayeredRuntime {
    #[serde(default)]
    pub layers: Vec<RuntimeLayer>,
}

/// One layer; the proxy checks each static key (it knows which ones it honours).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeLayer {
    #[serde(default)]
    pub name: String,
    pub static_layer: Option<serde_json::Map<String, serde_json::Value>>,
    pub admin_layer: Option<crate::filters::EmptyObject>,
    pub disk_layer: Option<Unsupported>,
    pub rtds_layer: Option<Unsupported>,
}

/// `cluster_manager`: every field changes what the proxy does (a source address to bind, zone
/// awareness, an outlier event log, load reports), and weft implements none, so each is refused
/// by name; an empty block is accepted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterManager {
    pub local_cluster_name: Option<Unsupported>,
    pub outlier_detection: Option<Unsupported>,
    pub upstream_bind_config: Option<Unsupported>,
    pub load_stats_config: Option<Unsupported>,
    pub enable_deferred_cluster_creation: Option<Unsupported>,
}
