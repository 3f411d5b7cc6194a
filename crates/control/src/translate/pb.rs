//! The Envoy v3 messages the translation builds: `envoy-types`' prost structs, the wire form
//! itself, so a misspelt field fails to compile and nothing stands between translation and
//! the protobuf encoding (ARCHITECTURE.md, "Choice of Envoy v3 types"). Small constructors for
//! what every module writes live here.

pub use envoy_types::pb::envoy::config::cluster::v3 as cluster;
pub use envoy_types::pb::envoy::config::core::v3 as core;
pub use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
pub use envoy_types::pb::envoy::config::listener::v3 as listener;
pub use envoy_types::pb::envoy::config::route::v3 as route;
pub use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
pub use envoy_types::pb::google::protobuf::{value::Kind, Any, BoolValue, Duration, ListValue, Struct, UInt32Value, Value};

use std::collections::HashMap;
use std::hash::RandomState;
use std::sync::LazyLock;

pub use envoy_types::pb::envoy::config::accesslog::v3::AccessLog;
pub use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
pub use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;

pub type Cluster = cluster::Cluster;
pub type Endpoints = endpoint::ClusterLoadAssignment;
pub type Listener = listener::Listener;
pub type RouteConfiguration = route::RouteConfiguration;
pub type Secret = tls::Secret;
pub type VirtualHost = route::VirtualHost;

/// `m` packed into an `Any` under its own type name.
pub fn any<M: prost::Message + prost::Name>(m: &M) -> Any {
    Any { type_url: M::type_url(), value: m.encode_to_vec() }
}

/// A network filter: `name` with `config` as its `typed_config`.
pub fn filter<M: prost::Message + prost::Name>(name: &str, config: &M) -> listener::Filter {
    listener::Filter { name: name.into(), config_type: Some(listener::filter::ConfigType::TypedConfig(any(config))) }
}

/// A listener filter: `name` with `config` as its `typed_config`.
pub fn listener_filter<M: prost::Message + prost::Name>(name: &str, config: &M) -> listener::ListenerFilter {
    listener::ListenerFilter {
        name: name.into(),
        config_type: Some(listener::listener_filter::ConfigType::TypedConfig(any(config))),
        ..Default::default()
    }
}

/// An HTTP filter: `name` with `config` as its `typed_config`.
pub fn http_filter<M: prost::Message + prost::Name>(name: &str, config: &M) -> hcm::HttpFilter {
    hcm::HttpFilter { name: name.into(), config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(config))), ..Default::default() }
}

/// A gRPC service reached through the cluster of this name, with `authority` as `:authority`.
pub fn envoy_grpc(cluster: &str, authority: &str) -> core::GrpcService {
    use core::grpc_service::{EnvoyGrpc, TargetSpecifier};
    let target = EnvoyGrpc { cluster_name: cluster.into(), authority: authority.into(), ..Default::default() };
    core::GrpcService { target_specifier: Some(TargetSpecifier::EnvoyGrpc(target)), ..Default::default() }
}

/// `address/len`, a whole address's range.
pub fn cidr(ip: std::net::IpAddr) -> core::CidrRange {
    core::CidrRange { address_prefix: ip.to_string(), prefix_len: u32v(if ip.is_ipv4() { 32 } else { 128 }) }
}

pub fn cidr_range(net: &ipnet::IpNet) -> core::CidrRange {
    core::CidrRange { address_prefix: net.network().to_string(), prefix_len: u32v(net.prefix_len().into()) }
}

pub fn duration(d: std::time::Duration) -> Option<Duration> {
    // No Duration weft writes comes near i64 seconds.
    Some(Duration { seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX), nanos: d.subsec_nanos() as i32 })
}

pub fn u32v(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

pub fn boolv(value: bool) -> Option<BoolValue> {
    Some(BoolValue { value })
}

/// One hasher for every map the translation builds. prost encodes a map in its iteration
/// order, and each `RandomState` orders differently: with one, equal maps built the same way
/// encode to the same bytes, so an unchanged resource keeps its hash (and is not pushed again).
static HASHER: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// A map for a message field, with entries in key order (see [`HASHER`]).
pub fn map<K: Ord + std::hash::Hash, V>(entries: impl IntoIterator<Item = (K, V)>) -> HashMap<K, V> {
    let mut sorted: Vec<(K, V)> = entries.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut m = HashMap::with_capacity_and_hasher(sorted.len(), HASHER.clone());
    m.extend(sorted);
    m
}

pub fn string(s: impl Into<String>) -> Value {
    Value { kind: Some(Kind::StringValue(s.into())) }
}

/// A `Struct` of these fields.
pub fn fields<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value)>) -> Struct {
    Struct { fields: map(entries.into_iter().map(|(k, v)| (k.into(), v))) }
}

/// Free-form JSON (metadata weft and Istio define as JSON) as a protobuf `Value`.
fn json_value(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(a) => Kind::ListValue(ListValue { values: a.iter().map(json_value).collect() }),
        J::Object(o) => Kind::StructValue(json_struct(o)),
    };
    Value { kind: Some(kind) }
}

pub fn json_struct(o: &serde_json::Map<String, serde_json::Value>) -> Struct {
    fields(o.iter().map(|(k, v)| (k.clone(), json_value(v))))
}

/// `filter_metadata` of these filters.
pub fn metadata<K: Into<String>>(filters: impl IntoIterator<Item = (K, Struct)>) -> Option<core::Metadata> {
    Some(core::Metadata { filter_metadata: map(filters.into_iter().map(|(k, v)| (k.into(), v))), ..Default::default() })
}

/// The ADS stream the resource that names it came on (`{ads: {}, resource_api_version: V3}`).
pub fn ads() -> Option<core::ConfigSource> {
    Some(core::ConfigSource {
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(core::AggregatedConfigSource {})),
        resource_api_version: core::ApiVersion::V3 as i32,
        ..Default::default()
    })
}

pub fn exact(s: &str) -> envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher {
    use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
    StringMatcher { match_pattern: Some(MatchPattern::Exact(s.into())), ..Default::default() }
}

pub fn file(path: &str) -> Option<core::DataSource> {
    Some(core::DataSource { specifier: Some(core::data_source::Specifier::Filename(path.into())), ..Default::default() })
}

pub fn inline_string(s: &str) -> Option<core::DataSource> {
    Some(core::DataSource { specifier: Some(core::data_source::Specifier::InlineString(s.into())), ..Default::default() })
}

/// An endpoint set of one address, for `cluster`.
pub fn one_endpoint(cluster: &str, address: &str, port: u16) -> Endpoints {
    let lb_endpoint = endpoint::LbEndpoint {
        host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(endpoint::Endpoint {
            address: socket_address(address, port),
            ..Default::default()
        })),
        ..Default::default()
    };
    Endpoints {
        cluster_name: cluster.into(),
        endpoints: vec![endpoint::LocalityLbEndpoints { lb_endpoints: vec![lb_endpoint], ..Default::default() }],
        ..Default::default()
    }
}

pub fn inline_bytes(b: &[u8]) -> Option<core::DataSource> {
    Some(core::DataSource { specifier: Some(core::data_source::Specifier::InlineBytes(b.to_vec())), ..Default::default() })
}

pub fn socket_address(address: &str, port: u16) -> Option<core::Address> {
    use core::socket_address::PortSpecifier;
    let sa =
        core::SocketAddress { address: address.into(), port_specifier: Some(PortSpecifier::PortValue(port.into())), ..Default::default() };
    Some(core::Address { address: Some(core::address::Address::SocketAddress(sa)) })
}
