//! `envoy.config.bootstrap.v3.Bootstrap`: the file `weft proxy -c` reads.

use serde::Deserialize;

use crate::cluster::Cluster;
use crate::core::{Address, Ignored, Node, Unsupported};
use crate::filters::AccessLog;
use crate::listener::Listener;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    pub node: Option<Node>,
    #[serde(default)]
    pub static_resources: StaticResources,
    pub dynamic_resources: Option<Unsupported>,
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
