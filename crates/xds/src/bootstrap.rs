//! `envoy.config.bootstrap.v3.Bootstrap`: the file `weft proxy -c` reads.

use serde::Deserialize;

use crate::cluster::Cluster;
use crate::core::{Address, ApiVersion, ConfigSource, Ignored, Node, ProtoDuration, Unsupported};
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
    pub layered_runtime: Option<Ignored>,
    pub stats_config: Option<Unsupported>,
    pub stats_sinks: Option<Unsupported>,
    pub stats_flush_interval: Option<Ignored>,
    pub overload_manager: Option<Unsupported>,
    pub cluster_manager: Option<Ignored>,
    pub watchdogs: Option<Ignored>,
    pub tracing: Option<Unsupported>,
    pub node_context_params: Option<Ignored>,
    pub bootstrap_extensions: Option<Unsupported>,
    pub default_socket_interface: Option<Unsupported>,
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
