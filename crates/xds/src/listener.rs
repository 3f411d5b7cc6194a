//! `envoy.config.listener.v3`: listeners, filter chains and their match criteria.

use serde::Deserialize;

use crate::core::{Address, CidrRange, Ignored, ProtoDuration, Unsupported};
use crate::filters::{AccessLog, ListenerFilterConfig, NetworkFilterConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    #[serde(default)]
    pub name: String,
    pub address: Address,
    #[serde(default)]
    pub filter_chains: Vec<FilterChain>,
    pub default_filter_chain: Option<FilterChain>,
    #[serde(default)]
    pub listener_filters: Vec<ListenerFilter>,
    pub listener_filters_timeout: Option<ProtoDuration>,
    #[serde(default)]
    pub continue_on_listener_filters_timeout: bool,
    pub use_original_dst: Option<bool>,
    pub bind_to_port: Option<bool>,
    pub stat_prefix: Option<String>,
    #[serde(default)]
    pub traffic_direction: TrafficDirection,
    /// `filter_metadata["istio.stats"]` is read: the Telemetry API's metric changes, which
    /// weft's control plane writes there; the rest is carried and not acted on.
    pub metadata: Option<crate::core::Metadata>,
    pub per_connection_buffer_limit_bytes: Option<u32>,
    #[serde(default)]
    pub access_log: Vec<AccessLog>,
    pub enable_reuse_port: Option<bool>,
    pub transparent: Option<Unsupported>,
    pub freebind: Option<Unsupported>,
    pub socket_options: Option<Unsupported>,
    pub udp_listener_config: Option<Unsupported>,
    pub api_listener: Option<Unsupported>,
    pub connection_balance_config: Option<Unsupported>,
    pub additional_addresses: Option<Unsupported>,
    pub filter_chain_matcher: Option<Unsupported>,
    pub drain_type: Option<Ignored>,
    /// Exempt from the overload manager's global downstream connection limit.
    #[serde(default)]
    pub ignore_global_conn_limit: bool,
    /// Exempt from overload actions (weft implements none, so there is nothing to bypass).
    #[serde(default)]
    pub bypass_overload_manager: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFilter {
    pub name: String,
    pub typed_config: Option<ListenerFilterConfig>,
    pub filter_disabled: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterChain {
    #[serde(default)]
    pub name: String,
    pub filter_chain_match: Option<FilterChainMatch>,
    #[serde(default)]
    pub filters: Vec<Filter>,
    pub transport_socket: Option<crate::tls::TransportSocket>,
    pub transport_socket_connect_timeout: Option<ProtoDuration>,
    pub metadata: Option<Ignored>,
    pub use_proxy_proto: Option<Unsupported>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum ConnectionSourceType {
    #[default]
    #[serde(rename = "ANY")]
    Any,
    #[serde(rename = "SAME_IP_OR_LOOPBACK")]
    SameIpOrLoopback,
    #[serde(rename = "EXTERNAL")]
    External,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterChainMatch {
    pub destination_port: Option<u32>,
    #[serde(default)]
    pub prefix_ranges: Vec<CidrRange>,
    #[serde(default)]
    pub direct_source_prefix_ranges: Vec<CidrRange>,
    #[serde(default)]
    pub source_type: ConnectionSourceType,
    #[serde(default)]
    pub source_prefix_ranges: Vec<CidrRange>,
    #[serde(default)]
    pub source_ports: Vec<u32>,
    #[serde(default)]
    pub server_names: Vec<String>,
    #[serde(default)]
    pub transport_protocol: String,
    #[serde(default)]
    pub application_protocols: Vec<String>,
    pub address_suffix: Option<Unsupported>,
    pub suffix_len: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub name: String,
    pub typed_config: Option<NetworkFilterConfig>,
    pub config_discovery: Option<Unsupported>,
}

/// `Listener.traffic_direction`; sidecars mark their inbound and outbound listeners.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TrafficDirection {
    #[default]
    #[serde(rename = "UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "INBOUND")]
    Inbound,
    #[serde(rename = "OUTBOUND")]
    Outbound,
}
