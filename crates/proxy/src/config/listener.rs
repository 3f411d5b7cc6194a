//! Listeners, filter chains and the network filters on them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use weft_xds::filters::{CodecType, FaultAbort, FaultDelay, HttpFilterConfig, ListenerFilterConfig, NetworkFilterConfig};
use weft_xds::listener as wire;

use weft_xds::tls::TransportSocketConfig;

use super::access_log::AccessLogConfig;
use crate::tls::{transport_context, ServerTls};

/// Envoy waits for a downstream TLS handshake without limit by default; a bound keeps a
/// client that never finishes from holding a connection forever.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
use super::route::{HeaderMatch, RouteTable};
use super::{socket_addr, ConfigError, Result};

/// Cluster names known at validation time, so references can be checked. Configuration from
/// xDS cannot be checked this way (clusters come and go independently of the listeners and
/// routes naming them), and a reference to a missing cluster is answered at request time
/// with 503 and `NC`, as Envoy does.
pub enum ClusterNames<'a> {
    /// The bootstrap's clusters, and which of them reach their endpoint over a Unix socket.
    Static(&'a HashMap<String, usize>, &'a std::collections::HashSet<String>),
    Dynamic,
}

impl ClusterNames<'_> {
    pub fn check(&self, name: &str, path: &str) -> Result<()> {
        match self {
            ClusterNames::Static(names, _) if !names.contains_key(name) => Err(ConfigError::new(path, format!("unknown cluster {name:?}"))),
            ClusterNames::Static(_, pipes) if pipes.contains(name) => Err(ConfigError::new(
                path,
                format!("cluster {name:?} reaches its endpoint over a Unix socket (pipe), which weft can only dial as the control plane"),
            )),
            _ => Ok(()),
        }
    }
}

#[derive(Debug)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    /// Envoy's stat scope for this listener: `listener.<ip>_<port>.`
    pub stat_prefix: String,
    pub bind_to_port: bool,
    pub use_original_dst: bool,
    pub original_dst: bool,
    pub tls_inspector: bool,
    pub http_inspector: bool,
    pub filter_chains: Vec<Arc<FilterChain>>,
    pub default_chain: Option<Arc<FilterChain>>,
    pub listener_filters_timeout: Duration,
    pub continue_on_listener_filters_timeout: bool,
    pub access_log: Vec<AccessLogConfig>,
    /// `traffic_direction: INBOUND` (what `/drain_listeners?inboundonly` drains).
    pub inbound: bool,
    /// The listener carries mesh traffic (its direction is INBOUND or OUTBOUND, as istiod sets
    /// on sidecar and gateway listeners): only such traffic counts in Istio's metrics, not a
    /// bootstrap's own stats or admin listeners.
    pub mesh_traffic: bool,
    /// The Telemetry API's changes to Istio's metrics, from `metadata.filter_metadata
    /// ["istio.stats"]`; the default when absent.
    pub stats_plan: crate::istio_metrics::Plan,
    /// Not counted against the overload manager's global connection limit.
    pub ignore_global_conn_limit: bool,
}

#[derive(Debug)]
pub struct FilterChain {
    pub name: String,
    pub matcher: ChainMatch,
    pub action: NetworkAction,
    /// TLS terminated before the network filter sees the stream.
    pub tls: Option<Arc<ServerTls>>,
    /// How long a downstream may take to complete the TLS handshake
    /// (`transport_socket_connect_timeout`).
    pub handshake_timeout: Duration,
}

#[derive(Debug, Default, Clone)]
pub struct ChainMatch {
    pub destination_port: Option<u16>,
    pub prefix_ranges: Vec<IpNet>,
    pub server_names: Vec<String>,
    pub transport_protocol: Option<String>,
    pub application_protocols: Vec<String>,
    pub source_type: wire::ConnectionSourceType,
    pub source_prefix_ranges: Vec<IpNet>,
    pub direct_source_prefix_ranges: Vec<IpNet>,
    pub source_ports: Vec<u16>,
}

#[derive(Debug)]
pub enum NetworkAction {
    Tcp(Arc<TcpProxyConfig>),
    Http(Arc<HttpConnectionManagerConfig>),
}

#[derive(Debug)]
pub struct TcpProxyConfig {
    pub stat_prefix: String,
    /// (cluster, weight); a single cluster has weight 1.
    pub clusters: Vec<(String, u32)>,
    pub idle_timeout: Option<Duration>,
    pub max_connect_attempts: u32,
    /// Bytes each direction's copy buffer holds (`per_connection_buffer_limit_bytes`, halved,
    /// at most 16 KiB).
    pub copy_buffer: usize,
    pub access_log: Vec<AccessLogConfig>,
}

/// Envoy's default `per_connection_buffer_limit_bytes`.
pub const DEFAULT_BUFFER_LIMIT: u32 = 1024 * 1024;
/// The least weft can buffer per connection: hyper's HTTP/1 read buffer.
pub const MIN_BUFFER_LIMIT: u32 = 8192;
/// hyper's HTTP/2 server windows, kept when the buffer limit allows them.
const DOWNSTREAM_H2_WINDOW: u32 = 1024 * 1024;
/// HTTP/2 starts every connection window at 65535 bytes and only raises it (RFC 9113 §6.9.2).
pub const H2_MIN_CONNECTION_WINDOW: u32 = 65_535;

/// `per_connection_buffer_limit_bytes` of a listener or cluster, at `path`.
pub fn buffer_limit(v: Option<u32>, path: &str) -> Result<u32> {
    match v {
        None => Ok(DEFAULT_BUFFER_LIMIT),
        Some(n) if n >= MIN_BUFFER_LIMIT => Ok(n),
        Some(n) => Err(ConfigError::new(
            path.to_string(),
            format!("{n} is below {MIN_BUFFER_LIMIT}, the least weft buffers per connection (an HTTP/1 read buffer)"),
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Auto,
    Http1,
    Http2,
}

#[derive(Debug)]
pub struct HttpConnectionManagerConfig {
    pub stat_prefix: String,
    pub codec: Codec,
    pub routes: RouteSource,
    /// Fault filters in filter order: (filter name, its own config). A route or virtual host
    /// may override a filter's config by name (`typed_per_filter_config`).
    pub faults: Vec<(String, Arc<FaultConfig>)>,
    pub suppress_envoy_headers: bool,
    /// RFC 3986 path normalization before routing (`normalize_path`).
    pub normalize_path: bool,
    /// Runs of `/` collapsed before routing (`merge_slashes`).
    pub merge_slashes: bool,
    pub stream_idle_timeout: Option<Duration>,
    /// `max_request_headers_kb` in bytes: a larger HTTP/1 head is answered 431.
    pub max_request_headers_bytes: usize,
    pub request_timeout: Option<Duration>,
    /// From the first byte of an HTTP/1 request head to its last (`request_headers_timeout`).
    pub request_headers_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    /// A connection older than this is drained (`common_http_protocol_options`).
    pub max_connection_duration: Option<Duration>,
    /// After this many requests a connection is closed (HTTP/1) or sent GOAWAY (HTTP/2).
    pub max_requests_per_connection: Option<u32>,
    /// Request header fields allowed (Envoy's default 100; more is answered 431).
    pub max_headers_count: usize,
    pub headers_with_underscores: weft_xds::filters::HeadersWithUnderscoresAction,
    pub drain_timeout: Duration,
    pub access_log: Vec<AccessLogConfig>,
    pub use_remote_address: bool,
    pub xff_num_trusted_hops: u32,
    pub skip_xff_append: bool,
    pub generate_request_id: bool,
    pub preserve_external_request_id: bool,
    pub always_set_request_id_in_response: bool,
    pub server_name: http::HeaderValue,
    pub server_header: ServerHeader,
    pub websocket: bool,
    pub h2_max_concurrent_streams: Option<u32>,
    pub h2_initial_stream_window: Option<u32>,
    pub h2_initial_connection_window: Option<u32>,
    /// Envoy's HTTP/2 flood limits (`http2_protocol_options`).
    pub h2_flood_limits: crate::http::h2_floods::FloodLimits,
    pub accept_http_10: bool,
    pub xfcc: crate::http::xfcc::XfccConfig,
    pub tracing: Option<crate::trace::TraceConfig>,
}

/// Where an HTTP connection manager's routes come from.
#[derive(Debug)]
pub enum RouteSource {
    Inline(Arc<RouteTable>),
    /// Fetched over ADS by name; looked up per request, so a route update reaches open
    /// connections at once.
    Rds(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerHeader {
    Overwrite,
    AppendIfAbsent,
    PassThrough,
}

/// The `envoy.filters.http.fault` filter.
#[derive(Debug)]
pub struct FaultConfig {
    pub delay: Option<FaultDelayConfig>,
    pub abort: Option<FaultAbortConfig>,
    pub upstream_cluster: Option<String>,
    pub headers: Vec<HeaderMatch>,
    pub max_active_faults: Option<u32>,
}

#[derive(Debug)]
pub struct FaultDelayConfig {
    /// `None` means the delay comes from the `x-envoy-fault-delay-request` header.
    pub fixed: Option<Duration>,
    /// Probability in parts per million.
    pub per_million: u32,
}

#[derive(Debug)]
pub struct FaultAbortConfig {
    /// `None` means the status comes from the `x-envoy-fault-abort-request` header.
    pub status: Option<http::StatusCode>,
    pub grpc_status: Option<u32>,
    pub per_million: u32,
}

impl ListenerConfig {
    pub fn from_wire(l: &wire::Listener, path: &str, clusters: &ClusterNames, index: usize) -> Result<Self> {
        let address = socket_addr(&l.address, &format!("{path}.address"))?;
        let name = if l.name.is_empty() { format!("listener_{index}") } else { l.name.clone() };
        let mut original_dst = false;
        let mut tls_inspector = false;
        let mut http_inspector = false;
        for (i, f) in l.listener_filters.iter().enumerate() {
            let fpath = format!("{path}.listener_filters[{i}]");
            match (&f.typed_config, f.name.as_str()) {
                (Some(ListenerFilterConfig::OriginalDst(_)), _) | (None, "envoy.filters.listener.original_dst") => original_dst = true,
                (Some(ListenerFilterConfig::TlsInspector(_)), _) | (None, "envoy.filters.listener.tls_inspector") => tls_inspector = true,
                (Some(ListenerFilterConfig::HttpInspector(_)), _) | (None, "envoy.filters.listener.http_inspector") => {
                    http_inspector = true
                }
                (None, other) => {
                    return Err(ConfigError::new(
                        format!("{fpath}.name"),
                        format!("listener filter {other:?} is not supported; give a typed_config"),
                    ))
                }
            }
        }
        let buffer_limit = buffer_limit(l.per_connection_buffer_limit_bytes, &format!("{path}.per_connection_buffer_limit_bytes"))?;
        let mut chains = Vec::new();
        for (i, c) in l.filter_chains.iter().enumerate() {
            chains.push(Arc::new(FilterChain::from_wire(
                c,
                &format!("{path}.filter_chains[{i}]"),
                clusters,
                l.traffic_direction,
                buffer_limit,
            )?));
        }
        let default_chain = match &l.default_filter_chain {
            Some(c) => Some(Arc::new(FilterChain::from_wire(
                c,
                &format!("{path}.default_filter_chain"),
                clusters,
                l.traffic_direction,
                buffer_limit,
            )?)),
            None => None,
        };
        if chains.is_empty() && default_chain.is_none() {
            return Err(ConfigError::new(format!("{path}.filter_chains"), "a listener needs at least one filter chain"));
        }
        check_duplicate_matches(&chains, path)?;
        let mut access_log = Vec::new();
        for (i, a) in l.access_log.iter().enumerate() {
            access_log.push(AccessLogConfig::from_wire(a, &format!("{path}.access_log[{i}]"))?);
        }
        let stat_prefix = match &l.stat_prefix {
            Some(p) if !p.is_empty() => p.clone(),
            _ => format!("{}_{}", address.ip(), address.port()),
        };
        Ok(ListenerConfig {
            name,
            address,
            stat_prefix,
            bind_to_port: l.bind_to_port.unwrap_or(true),
            use_original_dst: l.use_original_dst.unwrap_or(false),
            // As in Envoy: `use_original_dst` adds the original_dst listener filter itself.
            original_dst: original_dst || l.use_original_dst == Some(true),
            tls_inspector,
            http_inspector,
            filter_chains: chains,
            default_chain,
            listener_filters_timeout: l.listener_filters_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(15)),
            continue_on_listener_filters_timeout: l.continue_on_listener_filters_timeout,
            access_log,
            inbound: l.traffic_direction == weft_xds::listener::TrafficDirection::Inbound,
            mesh_traffic: l.traffic_direction != weft_xds::listener::TrafficDirection::Unspecified,
            stats_plan: match l.metadata.as_ref().and_then(|m| m.filter_metadata.get("istio.stats")) {
                Some(v) => crate::istio_metrics::Plan::from_metadata(
                    &serde_json::Value::Object(v.clone()),
                    &format!("{path}.metadata.filter_metadata.istio.stats"),
                )?,
                None => crate::istio_metrics::Plan::default(),
            },
            ignore_global_conn_limit: l.ignore_global_conn_limit,
        })
    }
}

fn check_duplicate_matches(chains: &[Arc<FilterChain>], path: &str) -> Result<()> {
    for (i, a) in chains.iter().enumerate() {
        for b in &chains[..i] {
            if format!("{:?}", a.matcher) == format!("{:?}", b.matcher) {
                return Err(ConfigError::new(
                    format!("{path}.filter_chains[{i}].filter_chain_match"),
                    "multiple filter chains with the same matching rules are defined",
                ));
            }
        }
    }
    Ok(())
}

fn cidrs(ranges: &[weft_xds::core::CidrRange], path: &str) -> Result<Vec<IpNet>> {
    ranges
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let ip: std::net::IpAddr = r.address_prefix.parse().map_err(|_| {
                ConfigError::new(format!("{path}[{i}].address_prefix"), format!("{:?} is not an IP address", r.address_prefix))
            })?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = r.prefix_len.unwrap_or(max);
            let len = u8::try_from(len)
                .ok()
                .filter(|l| u32::from(*l) <= max)
                .ok_or_else(|| ConfigError::new(format!("{path}[{i}].prefix_len"), format!("{len} is out of range for {ip}")))?;
            IpNet::new(ip, len).map(|n| n.trunc()).map_err(|e| ConfigError::new(format!("{path}[{i}]"), e.to_string()))
        })
        .collect()
}

impl FilterChain {
    fn from_wire(
        c: &wire::FilterChain,
        path: &str,
        clusters: &ClusterNames,
        direction: wire::TrafficDirection,
        buffer_limit: u32,
    ) -> Result<Self> {
        let m = c.filter_chain_match.clone().unwrap_or_default();
        let mpath = format!("{path}.filter_chain_match");
        let destination_port = match m.destination_port {
            Some(p) => Some(
                u16::try_from(p)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| ConfigError::new(format!("{mpath}.destination_port"), format!("{p} is out of range (1-65535)")))?,
            ),
            None => None,
        };
        let source_ports = m
            .source_ports
            .iter()
            .enumerate()
            .map(|(i, p)| u16::try_from(*p).map_err(|_| ConfigError::new(format!("{mpath}.source_ports[{i}]"), "out of range")))
            .collect::<Result<Vec<_>>>()?;
        for (i, n) in m.server_names.iter().enumerate() {
            if n.is_empty() || (n.contains('*') && !(n.starts_with("*.") && n[2..].find('*').is_none())) {
                return Err(ConfigError::new(
                    format!("{mpath}.server_names[{i}]"),
                    format!("{n:?}: only exact names and a leading \"*.\" wildcard are supported"),
                ));
            }
        }
        let matcher = ChainMatch {
            destination_port,
            prefix_ranges: cidrs(&m.prefix_ranges, &format!("{mpath}.prefix_ranges"))?,
            server_names: m.server_names.iter().map(|s| s.to_ascii_lowercase()).collect(),
            transport_protocol: Some(m.transport_protocol.clone()).filter(|s| !s.is_empty()),
            application_protocols: m.application_protocols.clone(),
            source_type: m.source_type,
            source_prefix_ranges: cidrs(&m.source_prefix_ranges, &format!("{mpath}.source_prefix_ranges"))?,
            direct_source_prefix_ranges: cidrs(&m.direct_source_prefix_ranges, &format!("{mpath}.direct_source_prefix_ranges"))?,
            source_ports,
        };
        if c.filters.is_empty() {
            return Err(ConfigError::new(format!("{path}.filters"), "a filter chain needs a terminal network filter"));
        }
        if c.filters.len() > 1 {
            return Err(ConfigError::new(
                format!("{path}.filters[1]"),
                "not supported: weft runs exactly one terminal network filter (tcp_proxy or http_connection_manager) per chain",
            ));
        }
        let fpath = format!("{path}.filters[0]");
        let f = &c.filters[0];
        let action = match &f.typed_config {
            Some(NetworkFilterConfig::TcpProxy(t)) => {
                NetworkAction::Tcp(Arc::new(tcp_proxy(t, &format!("{fpath}.typed_config"), clusters, buffer_limit)?))
            }
            Some(NetworkFilterConfig::HttpConnectionManager(h)) => {
                NetworkAction::Http(Arc::new(hcm(h, &format!("{fpath}.typed_config"), clusters, direction, buffer_limit)?))
            }
            None => return Err(ConfigError::new(format!("{fpath}.typed_config"), "required")),
        };
        let tpath = format!("{path}.transport_socket.typed_config");
        let tls = match transport_context(c.transport_socket.as_ref(), &format!("{path}.transport_socket"))? {
            None => None,
            Some(TransportSocketConfig::DownstreamTls(ctx)) => Some(Arc::new(ServerTls::from_wire(ctx, &tpath)?)),
            Some(_) => {
                return Err(ConfigError::new(tpath, "a listener terminates TLS with a DownstreamTlsContext, not an UpstreamTlsContext"))
            }
        };
        let handshake_timeout = c.transport_socket_connect_timeout.map(|d| d.0).unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
        Ok(FilterChain { name: c.name.clone(), matcher, action, tls, handshake_timeout })
    }
}

fn tcp_proxy(t: &weft_xds::filters::TcpProxy, path: &str, clusters: &ClusterNames, buffer_limit: u32) -> Result<TcpProxyConfig> {
    let list = match (&t.cluster, &t.weighted_clusters) {
        (Some(c), None) => {
            clusters.check(c, &format!("{path}.cluster"))?;
            vec![(c.clone(), 1)]
        }
        (None, Some(w)) => {
            let mut v = Vec::new();
            for (i, c) in w.clusters.iter().enumerate() {
                clusters.check(&c.name, &format!("{path}.weighted_clusters.clusters[{i}].name"))?;
                v.push((c.name.clone(), c.weight));
            }
            if v.iter().all(|(_, w)| *w == 0) {
                return Err(ConfigError::new(format!("{path}.weighted_clusters"), "weights must not all be zero"));
            }
            v
        }
        _ => return Err(ConfigError::new(path, "exactly one of cluster or weighted_clusters is required")),
    };
    let mut access_log = Vec::new();
    for (i, a) in t.access_log.iter().enumerate() {
        access_log.push(AccessLogConfig::from_wire(a, &format!("{path}.access_log[{i}]"))?);
    }
    Ok(TcpProxyConfig {
        copy_buffer: (buffer_limit as usize / 2).min(16 * 1024),
        stat_prefix: t.stat_prefix.clone(),
        clusters: list,
        // Envoy's default idle timeout for tcp_proxy is one hour; "0s" disables it.
        idle_timeout: match t.idle_timeout {
            Some(d) if d.0.is_zero() => None,
            Some(d) => Some(d.0),
            None => Some(Duration::from_secs(3600)),
        },
        max_connect_attempts: t.max_connect_attempts.unwrap_or(1).max(1),
        access_log,
    })
}

pub(crate) fn per_million(p: &Option<weft_xds::core::FractionalPercent>) -> u32 {
    use weft_xds::core::Denominator;
    match p {
        None => 1_000_000,
        Some(p) => {
            let n = u64::from(p.numerator);
            let scaled = match p.denominator {
                Denominator::Hundred => n * 10_000,
                Denominator::TenThousand => n * 100,
                Denominator::Million => n,
            };
            scaled.min(1_000_000) as u32
        }
    }
}

pub(crate) fn fault(f: &weft_xds::filters::HttpFault, path: &str) -> Result<FaultConfig> {
    let delay = match &f.delay {
        Some(FaultDelay { fixed_delay, header_delay, percentage }) => {
            let fixed = match (fixed_delay, header_delay) {
                (Some(d), None) => Some(d.0),
                (None, Some(_)) => None,
                _ => return Err(ConfigError::new(format!("{path}.delay"), "exactly one of fixed_delay or header_delay is required")),
            };
            Some(FaultDelayConfig { fixed, per_million: per_million(percentage) })
        }
        None => None,
    };
    let abort = match &f.abort {
        Some(FaultAbort { http_status, grpc_status, header_abort, percentage }) => {
            let status = match (http_status, grpc_status, header_abort) {
                (Some(s), None, None) => Some(
                    http::StatusCode::from_u16(u16::try_from(*s).unwrap_or(0))
                        .ok()
                        .filter(|s| (200..600).contains(&s.as_u16()))
                        .ok_or_else(|| ConfigError::new(format!("{path}.abort.http_status"), format!("{s} is not in [200, 600)")))?,
                ),
                (None, Some(_), None) | (None, None, Some(_)) => None,
                _ => {
                    return Err(ConfigError::new(
                        format!("{path}.abort"),
                        "exactly one of http_status, grpc_status or header_abort is required",
                    ))
                }
            };
            Some(FaultAbortConfig { status, grpc_status: *grpc_status, per_million: per_million(percentage) })
        }
        None => None,
    };
    let mut headers = Vec::new();
    for (i, h) in f.headers.iter().enumerate() {
        headers.push(HeaderMatch::from_wire(h, &format!("{path}.headers[{i}]"))?);
    }
    if !f.downstream_nodes.is_empty() {
        return Err(ConfigError::new(format!("{path}.downstream_nodes"), "not supported"));
    }
    Ok(FaultConfig {
        delay,
        abort,
        upstream_cluster: f.upstream_cluster.clone().filter(|c| !c.is_empty()),
        headers,
        max_active_faults: f.max_active_faults,
    })
}

fn hcm(
    h: &weft_xds::filters::HttpConnectionManager,
    path: &str,
    clusters: &ClusterNames,
    direction: wire::TrafficDirection,
    buffer_limit: u32,
) -> Result<HttpConnectionManagerConfig> {
    let codec = match h.codec_type {
        CodecType::Auto => Codec::Auto,
        CodecType::Http1 => Codec::Http1,
        CodecType::Http2 => Codec::Http2,
        CodecType::Http3 => return Err(ConfigError::new(format!("{path}.codec_type"), "HTTP3 is not supported")),
    };
    if h.stream_error_on_invalid_http_message == Some(true) {
        return Err(ConfigError::new(
            format!("{path}.stream_error_on_invalid_http_message"),
            "not supported: an invalid message closes its connection (Envoy's default)",
        ));
    }
    let routes = match (&h.route_config, &h.rds) {
        (Some(rc), None) => RouteSource::Inline(Arc::new(RouteTable::from_wire(rc, &format!("{path}.route_config"), clusters)?)),
        (None, Some(rds)) => {
            if matches!(clusters, ClusterNames::Static(..)) {
                return Err(ConfigError::new(format!("{path}.rds"), "needs a control plane (dynamic_resources.ads_config)"));
            }
            if rds.config_source.ads.is_none() {
                return Err(ConfigError::new(format!("{path}.rds.config_source"), "only ads: {} is supported"));
            }
            if rds.route_config_name.is_empty() {
                return Err(ConfigError::new(format!("{path}.rds.route_config_name"), "required"));
            }
            RouteSource::Rds(rds.route_config_name.clone())
        }
        (Some(_), Some(_)) => return Err(ConfigError::new(path, "route_config and rds are mutually exclusive")),
        (None, None) => return Err(ConfigError::new(format!("{path}.route_config"), "one of route_config or rds is required")),
    };

    let mut faults = Vec::new();
    let mut suppress_envoy_headers = false;
    let mut saw_router = false;
    for (i, f) in h.http_filters.iter().enumerate() {
        let fpath = format!("{path}.http_filters[{i}]");
        if saw_router {
            return Err(ConfigError::new(fpath, "the router filter must be the last HTTP filter"));
        }
        if f.disabled {
            continue;
        }
        match &f.typed_config {
            Some(HttpFilterConfig::Router(r)) => {
                saw_router = true;
                suppress_envoy_headers = r.suppress_envoy_headers;
            }
            Some(HttpFilterConfig::Fault(fc)) => faults.push((f.name.clone(), Arc::new(fault(fc, &format!("{fpath}.typed_config"))?))),
            None if f.name == "envoy.filters.http.router" => saw_router = true,
            None => return Err(ConfigError::new(format!("{fpath}.typed_config"), "required")),
        }
    }
    if !saw_router {
        return Err(ConfigError::new(format!("{path}.http_filters"), "the last HTTP filter must be envoy.filters.http.router"));
    }
    let mut access_log = Vec::new();
    for (i, a) in h.access_log.iter().enumerate() {
        access_log.push(AccessLogConfig::from_wire(a, &format!("{path}.access_log[{i}]"))?);
    }
    let mut websocket = false;
    for (i, u) in h.upgrade_configs.iter().enumerate() {
        if u.upgrade_type.eq_ignore_ascii_case("websocket") {
            websocket = u.enabled.unwrap_or(true);
        } else {
            return Err(ConfigError::new(
                format!("{path}.upgrade_configs[{i}].upgrade_type"),
                format!("{:?} is not supported (websocket is)", u.upgrade_type),
            ));
        }
    }
    let server_name = h.server_name.clone().unwrap_or_else(|| "envoy".to_string());
    let server_name = http::HeaderValue::from_str(&server_name)
        .map_err(|_| ConfigError::new(format!("{path}.server_name"), "not a valid header value"))?;
    let opt = |d: Option<weft_xds::core::ProtoDuration>, default: Option<Duration>| match d {
        Some(d) if d.0.is_zero() => None,
        Some(d) => Some(d.0),
        None => default,
    };
    let common = h.common_http_protocol_options.clone().unwrap_or_default();
    if common.max_stream_duration.is_some() {
        return Err(ConfigError::new(
            format!("{path}.common_http_protocol_options.max_stream_duration"),
            "not supported: bound a request with request_timeout or the route's timeout",
        ));
    }
    let max_headers_count = match common.max_headers_count {
        None => 100,
        Some(n @ 1..) => n as usize,
        Some(0) => return Err(ConfigError::new(format!("{path}.common_http_protocol_options.max_headers_count"), "must be at least 1")),
    };
    let h2 = h.http2_protocol_options.clone().unwrap_or_default();
    h2_unsupported(&h2, &format!("{path}.http2_protocol_options"))?;
    Ok(HttpConnectionManagerConfig {
        stat_prefix: h.stat_prefix.clone(),
        codec,
        routes,
        faults,
        suppress_envoy_headers,
        normalize_path: h.normalize_path.unwrap_or(false),
        merge_slashes: h.merge_slashes,
        stream_idle_timeout: opt(h.stream_idle_timeout, Some(Duration::from_secs(300))),
        max_request_headers_bytes: match h.max_request_headers_kb {
            None => 60 * 1024,
            Some(kb @ 1..=8192) => kb as usize * 1024,
            Some(kb) => {
                return Err(ConfigError::new(format!("{path}.max_request_headers_kb"), format!("{kb} is not between 1 and 8192 (KiB)")))
            }
        },
        request_timeout: opt(h.request_timeout, None),
        request_headers_timeout: opt(h.request_headers_timeout, None),
        idle_timeout: opt(common.idle_timeout, Some(Duration::from_secs(3600))),
        max_connection_duration: opt(common.max_connection_duration, None),
        max_requests_per_connection: common.max_requests_per_connection.filter(|n| *n > 0),
        max_headers_count,
        headers_with_underscores: common.headers_with_underscores_action.unwrap_or(weft_xds::filters::HeadersWithUnderscoresAction::Allow),
        drain_timeout: h.drain_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(5)),
        access_log,
        use_remote_address: h.use_remote_address.unwrap_or(false),
        xff_num_trusted_hops: h.xff_num_trusted_hops,
        skip_xff_append: h.skip_xff_append,
        generate_request_id: h.generate_request_id.unwrap_or(true),
        preserve_external_request_id: h.preserve_external_request_id,
        always_set_request_id_in_response: h.always_set_request_id_in_response,
        server_name,
        server_header: match h.server_header_transformation {
            None | Some(weft_xds::filters::ServerHeaderTransformation::Overwrite) => ServerHeader::Overwrite,
            Some(weft_xds::filters::ServerHeaderTransformation::AppendIfAbsent) => ServerHeader::AppendIfAbsent,
            Some(weft_xds::filters::ServerHeaderTransformation::PassThrough) => ServerHeader::PassThrough,
        },
        websocket,
        h2_max_concurrent_streams: h2.max_concurrent_streams,
        // What a client may send ahead of the upstream reading it is what weft buffers: the
        // flow-control windows stay within the connection's buffer limit unless set.
        h2_initial_stream_window: h2.initial_stream_window_size.or(Some(buffer_limit.min(DOWNSTREAM_H2_WINDOW))),
        h2_initial_connection_window: h2
            .initial_connection_window_size
            .or(Some(buffer_limit.clamp(H2_MIN_CONNECTION_WINDOW, DOWNSTREAM_H2_WINDOW))),
        h2_flood_limits: h2_flood_limits(&h2),
        accept_http_10: h.http_protocol_options.as_ref().map(|o| o.accept_http_10).unwrap_or(false),
        xfcc: xfcc(h, path)?,
        tracing: h.tracing.as_ref().map(|t| crate::trace::TraceConfig::from_wire(t, direction, &format!("{path}.tracing"))).transpose()?,
    })
}

/// What of `http2_protocol_options` weft cannot do, refused rather than ignored.
pub fn h2_unsupported(h2: &weft_xds::filters::Http2ProtocolOptions, path: &str) -> Result<()> {
    if h2.hpack_table_size.is_some_and(|n| n != 4096) {
        return Err(ConfigError::new(format!("{path}.hpack_table_size"), "not supported: weft's HPACK table is 4096 bytes"));
    }
    if h2.allow_connect == Some(true) {
        return Err(ConfigError::new(format!("{path}.allow_connect"), "not supported: weft does not route CONNECT"));
    }
    Ok(())
}

/// `http2_protocol_options`' flood limits over Envoy's defaults. `max_outbound_frames` bounds
/// a queue weft does not have: h2 stops reading while it cannot write, so any value holds.
fn h2_flood_limits(h2: &weft_xds::filters::Http2ProtocolOptions) -> crate::http::h2_floods::FloodLimits {
    let d = crate::http::h2_floods::FloodLimits::default();
    let or = |v: Option<u32>, default: u64| v.map_or(default, u64::from);
    crate::http::h2_floods::FloodLimits {
        max_outbound_control_frames: or(h2.max_outbound_control_frames, d.max_outbound_control_frames),
        max_consecutive_inbound_frames_with_empty_payload: or(
            h2.max_consecutive_inbound_frames_with_empty_payload,
            d.max_consecutive_inbound_frames_with_empty_payload,
        ),
        max_inbound_priority_frames_per_stream: or(h2.max_inbound_priority_frames_per_stream, d.max_inbound_priority_frames_per_stream),
        max_inbound_window_update_frames_per_data_frame_sent: or(
            h2.max_inbound_window_update_frames_per_data_frame_sent,
            d.max_inbound_window_update_frames_per_data_frame_sent,
        ),
    }
}

/// `forward_client_cert_details` and `set_current_client_cert_details`.
fn xfcc(h: &weft_xds::filters::HttpConnectionManager, path: &str) -> Result<crate::http::xfcc::XfccConfig> {
    use crate::http::xfcc::{Details, XfccConfig};
    let mode = h.forward_client_cert_details.unwrap_or_default();
    let d = h.set_current_client_cert_details.clone().unwrap_or_default();
    for (set, field) in [(d.cert, "cert"), (d.chain, "chain")] {
        if set {
            return Err(ConfigError::new(
                format!("{path}.set_current_client_cert_details.{field}"),
                "not supported (subject, uri and dns are)",
            ));
        }
    }
    Ok(XfccConfig { mode, details: Details { subject: d.subject.unwrap_or(false), uri: d.uri, dns: d.dns } })
}
