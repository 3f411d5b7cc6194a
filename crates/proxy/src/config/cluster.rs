//! Clusters: discovery, endpoints, load-balancing policy, circuit breakers, outlier detection,
//! active health checks and upstream protocol.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use weft_xds::cluster::{self as wire, DiscoveryType, LbPolicy as WireLb, ProtocolOptionsConfig};
use weft_xds::core::Address;

use weft_xds::tls::TransportSocketConfig;

use crate::tls::{transport_context, ClientTls};

use super::{port_value, socket_addr, ConfigError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    Static,
    StrictDns {
        refresh: Duration,
    },
    LogicalDns {
        refresh: Duration,
    },
    OriginalDst,
    /// Endpoints arrive over ADS as the `ClusterLoadAssignment` named `service_name`.
    Eds {
        service_name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest { choice_count: u32 },
    Random,
    RingHash { min_ring: u64, max_ring: u64 },
    Maglev { table_size: u64 },
    ClusterProvided,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
    /// Use the downstream request's protocol.
    Downstream,
}

/// Where an endpoint is: a literal address, or a DNS name resolved by the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointAddress {
    Ip(SocketAddr),
    Dns {
        host: String,
        port: u16,
    },
    /// A Unix domain socket of a STATIC cluster. weft dials one only as the control plane
    /// (`ads_config`, Istio's `xds-grpc`); a route or proxy to such a cluster is refused.
    Pipe(String),
}

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub address: EndpointAddress,
    pub weight: u32,
    pub priority: u32,
    /// Declared health from EDS/static config (`health_status`).
    pub declared_unhealthy: bool,
    pub health_check_port: Option<u16>,
    /// The endpoint's `envoy.transport_socket_match` metadata, matched against the cluster's
    /// `transport_socket_matches`.
    pub socket_match: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy)]
pub struct CircuitBreakerConfig {
    pub max_connections: u64,
    pub max_pending_requests: u64,
    pub max_requests: u64,
    pub max_retries: u64,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        // Envoy's defaults.
        CircuitBreakerConfig { max_connections: 1024, max_pending_requests: 1024, max_requests: 1024, max_retries: 3 }
    }
}

#[derive(Debug, Clone)]
pub struct OutlierConfig {
    pub consecutive_5xx: u32,
    pub enforcing_consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    pub enforcing_consecutive_gateway_failure: u32,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

#[derive(Debug, Clone)]
pub enum HealthCheckKind {
    Http { path: String, host: Option<String>, expected: Vec<(u16, u16)> },
    Tcp { send: Option<Vec<u8>>, receive: Vec<Vec<u8>> },
}

#[derive(Debug, Clone)]
pub struct HealthCheckConfig {
    pub kind: HealthCheckKind,
    pub timeout: Duration,
    pub interval: Duration,
    /// Envoy checks a cluster that has never carried traffic this rarely (default 60s).
    pub no_traffic_interval: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

/// TCP keepalive for upstream connections; `None` leaves the system's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpKeepaliveConfig {
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
    pub probes: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: String,
    pub alt_stat_name: Option<String>,
    pub discovery: Discovery,
    pub connect_timeout: Duration,
    pub lb: LbPolicy,
    pub endpoints: Vec<EndpointConfig>,
    pub overprovisioning_factor: u32,
    pub circuit_breakers: CircuitBreakerConfig,
    pub outlier: Option<OutlierConfig>,
    pub health_checks: Vec<HealthCheckConfig>,
    pub protocol: UpstreamProtocol,
    pub idle_timeout: Option<Duration>,
    pub max_requests_per_connection: Option<u32>,
    /// `upstream_connection_options.tcp_keepalive`: SO_KEEPALIVE on upstream connections,
    /// with (time, interval, probes) where given.
    pub tcp_keepalive: Option<TcpKeepaliveConfig>,
    pub healthy_panic_threshold: f64,
    pub h2_max_concurrent_streams: Option<u32>,
    pub h2_initial_stream_window: Option<u32>,
    pub h2_initial_connection_window: Option<u32>,
    pub original_dst_header: Option<http::HeaderName>,
    /// TLS originated to every host (`transport_socket`), unless a match below picks another.
    pub tls: Option<Arc<ClientTls>>,
    /// `transport_socket_matches`, in order.
    pub tls_matches: Vec<SocketMatch>,
}

/// One `transport_socket_matches` entry: endpoints whose metadata has every key get `tls`
/// (`None` for plaintext).
#[derive(Debug, Clone)]
pub struct SocketMatch {
    pub name: String,
    pub keys: serde_json::Map<String, serde_json::Value>,
    pub tls: Option<Arc<ClientTls>>,
}

/// The metadata namespace Envoy reads transport socket matches from.
pub const SOCKET_MATCH_KEY: &str = "envoy.transport_socket_match";

impl ClusterConfig {
    /// The TLS an endpoint with this `envoy.transport_socket_match` metadata is reached with:
    /// the first matching entry's, else the cluster's own.
    pub fn tls_for(&self, meta: &serde_json::Map<String, serde_json::Value>) -> Option<Arc<ClientTls>> {
        match self.tls_matches.iter().find(|m| m.keys.iter().all(|(k, v)| meta.get(k) == Some(v))) {
            Some(m) => m.tls.clone(),
            None => self.tls.clone(),
        }
    }

    /// Stat scope name (`cluster.<this>.`).
    pub fn stat_name(&self) -> &str {
        self.alt_stat_name.as_deref().unwrap_or(&self.name)
    }

    /// True when its endpoints are Unix sockets (see [`EndpointAddress::Pipe`]).
    pub fn is_pipe(&self) -> bool {
        self.endpoints.iter().any(|e| matches!(e.address, EndpointAddress::Pipe(_)))
    }

    pub fn from_wire(c: &wire::Cluster, path: &str) -> Result<Self> {
        if c.name.is_empty() {
            return Err(ConfigError::new(format!("{path}.name"), "required"));
        }
        let dns_refresh = c.dns_refresh_rate.map(|d| d.0).unwrap_or(Duration::from_secs(5));
        if dns_refresh < Duration::from_millis(1) {
            return Err(ConfigError::new(format!("{path}.dns_refresh_rate"), "must be at least 1ms"));
        }
        let discovery = match c.type_ {
            DiscoveryType::Static => Discovery::Static,
            DiscoveryType::StrictDns => Discovery::StrictDns { refresh: dns_refresh },
            DiscoveryType::LogicalDns => Discovery::LogicalDns { refresh: dns_refresh },
            DiscoveryType::OriginalDst => Discovery::OriginalDst,
            DiscoveryType::Eds => {
                let eds = c.eds_cluster_config.clone().unwrap_or_default();
                if eds.eds_config.as_ref().is_some_and(|s| s.ads.is_none()) {
                    return Err(ConfigError::new(format!("{path}.eds_cluster_config.eds_config"), "only ads: {} is supported"));
                }
                Discovery::Eds { service_name: eds.service_name.filter(|n| !n.is_empty()).unwrap_or_else(|| c.name.clone()) }
            }
        };
        if c.eds_cluster_config.is_some() && !matches!(discovery, Discovery::Eds { .. }) {
            return Err(ConfigError::new(format!("{path}.eds_cluster_config"), "only valid with type EDS"));
        }
        let lb = match c.lb_policy {
            WireLb::RoundRobin => LbPolicy::RoundRobin,
            WireLb::LeastRequest => {
                LbPolicy::LeastRequest { choice_count: c.least_request_lb_config.as_ref().and_then(|l| l.choice_count).unwrap_or(2).max(2) }
            }
            WireLb::Random => LbPolicy::Random,
            WireLb::RingHash => {
                let r = c.ring_hash_lb_config.clone().unwrap_or_default();
                let min = r.minimum_ring_size.unwrap_or(1024);
                let max = r.maximum_ring_size.unwrap_or(8 * 1024 * 1024);
                if min > max || max > 8 * 1024 * 1024 {
                    return Err(ConfigError::new(
                        format!("{path}.ring_hash_lb_config"),
                        "minimum_ring_size must not exceed maximum_ring_size (at most 8M)",
                    ));
                }
                if let Some(f) = &r.hash_function {
                    if f != "XX_HASH" {
                        return Err(ConfigError::new(
                            format!("{path}.ring_hash_lb_config.hash_function"),
                            format!("{f:?} is not supported (XX_HASH is)"),
                        ));
                    }
                }
                LbPolicy::RingHash { min_ring: min, max_ring: max }
            }
            WireLb::Maglev => {
                let size = c.maglev_lb_config.as_ref().and_then(|m| m.table_size).unwrap_or(65537);
                if !is_prime(size) || size > 5_000_011 {
                    return Err(ConfigError::new(
                        format!("{path}.maglev_lb_config.table_size"),
                        format!("{size} must be a prime number no larger than 5000011"),
                    ));
                }
                LbPolicy::Maglev { table_size: size }
            }
            WireLb::ClusterProvided => LbPolicy::ClusterProvided,
        };
        match (&discovery, lb) {
            (Discovery::OriginalDst, LbPolicy::ClusterProvided) => {}
            (Discovery::OriginalDst, _) => {
                return Err(ConfigError::new(format!("{path}.lb_policy"), "cluster type ORIGINAL_DST requires lb_policy CLUSTER_PROVIDED"))
            }
            (_, LbPolicy::ClusterProvided) => {
                return Err(ConfigError::new(format!("{path}.lb_policy"), "CLUSTER_PROVIDED is only valid with cluster type ORIGINAL_DST"))
            }
            _ => {}
        }

        let la = c.load_assignment.clone().unwrap_or_default();
        if matches!(discovery, Discovery::Eds { .. }) && !la.endpoints.is_empty() {
            return Err(ConfigError::new(format!("{path}.load_assignment"), "EDS clusters get their endpoints from the control plane"));
        }
        let endpoints = endpoints_from_wire(&la, &format!("{path}.load_assignment"), &discovery)?;
        if matches!(discovery, Discovery::LogicalDns { .. }) && endpoints.len() != 1 {
            return Err(ConfigError::new(format!("{path}.load_assignment"), "LOGICAL_DNS clusters must have exactly one endpoint"));
        }
        if matches!(discovery, Discovery::OriginalDst) && !endpoints.is_empty() {
            return Err(ConfigError::new(format!("{path}.load_assignment"), "ORIGINAL_DST clusters must not have endpoints"));
        }

        let mut cb = CircuitBreakerConfig::default();
        if let Some(t) =
            c.circuit_breakers.as_ref().and_then(|cbs| cbs.thresholds.iter().find(|t| t.priority == wire::RoutingPriority::Default))
        {
            if let Some(v) = t.max_connections {
                cb.max_connections = u64::from(v);
            }
            if let Some(v) = t.max_pending_requests {
                cb.max_pending_requests = u64::from(v);
            }
            if let Some(v) = t.max_requests {
                cb.max_requests = u64::from(v);
            }
            if let Some(v) = t.max_retries {
                cb.max_retries = u64::from(v);
            }
        }

        let outlier = c.outlier_detection.as_ref().map(|o| {
            let base = o.base_ejection_time.map(|d| d.0).unwrap_or(Duration::from_secs(30));
            OutlierConfig {
                consecutive_5xx: o.consecutive_5xx.unwrap_or(5),
                enforcing_consecutive_5xx: o.enforcing_consecutive_5xx.unwrap_or(100),
                consecutive_gateway_failure: o.consecutive_gateway_failure.unwrap_or(5),
                enforcing_consecutive_gateway_failure: o.enforcing_consecutive_gateway_failure.unwrap_or(0),
                interval: o.interval.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
                base_ejection_time: base,
                max_ejection_time: o.max_ejection_time.map(|d| d.0).unwrap_or(Duration::from_secs(300)).max(base),
                max_ejection_percent: o.max_ejection_percent.unwrap_or(10).min(100),
            }
        });
        if let Some(o) = &outlier {
            if o.interval.is_zero() {
                return Err(ConfigError::new(format!("{path}.outlier_detection.interval"), "must be greater than zero"));
            }
        }

        let mut health_checks = Vec::new();
        for (i, h) in c.health_checks.iter().enumerate() {
            health_checks.push(health_check(h, &format!("{path}.health_checks[{i}]"))?);
        }
        if health_checks.len() > 1 {
            return Err(ConfigError::new(format!("{path}.health_checks[1]"), "not supported: at most one health checker per cluster"));
        }

        let mut protocol = UpstreamProtocol::Http1;
        let mut common = c.common_http_protocol_options.clone();
        let mut h2 = c.http2_protocol_options.clone();
        if h2.is_some() {
            protocol = UpstreamProtocol::Http2;
        }
        if let Some(opts) = &c.typed_extension_protocol_options {
            for (key, v) in opts {
                let ProtocolOptionsConfig::Http(o) = v;
                if key != "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" {
                    return Err(ConfigError::new(
                        format!("{path}.typed_extension_protocol_options.{key}"),
                        "the key must be envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    ));
                }
                if let Some(e) = &o.explicit_http_config {
                    if e.http2_protocol_options.is_some() {
                        protocol = UpstreamProtocol::Http2;
                        h2 = e.http2_protocol_options.clone();
                    } else {
                        protocol = UpstreamProtocol::Http1;
                    }
                } else if o.use_downstream_protocol_config.is_some() {
                    protocol = UpstreamProtocol::Downstream;
                    h2 = o.use_downstream_protocol_config.as_ref().and_then(|u| u.http2_protocol_options.clone());
                }
                if o.common_http_protocol_options.is_some() {
                    common = o.common_http_protocol_options.clone();
                }
            }
        }
        let common = common.unwrap_or_default();
        let buffer_limit =
            super::listener::buffer_limit(c.per_connection_buffer_limit_bytes, &format!("{path}.per_connection_buffer_limit_bytes"))?;
        // What weft does not apply to upstream connections is refused, never ignored.
        for (field, set) in [
            ("max_connection_duration", common.max_connection_duration.is_some()),
            ("max_stream_duration", common.max_stream_duration.is_some()),
            ("max_headers_count", common.max_headers_count.is_some()),
            ("headers_with_underscores_action", common.headers_with_underscores_action.is_some()),
        ] {
            if set {
                return Err(ConfigError::new(
                    format!("{path}.common_http_protocol_options.{field}"),
                    "not supported on a cluster (weft applies it to a connection manager only)",
                ));
            }
        }
        let h2 = h2.unwrap_or_default();
        super::listener::h2_unsupported(&h2, &format!("{path}.http2_protocol_options"))?;
        for (field, set) in [
            ("max_outbound_frames", h2.max_outbound_frames.is_some()),
            ("max_outbound_control_frames", h2.max_outbound_control_frames.is_some()),
            ("max_consecutive_inbound_frames_with_empty_payload", h2.max_consecutive_inbound_frames_with_empty_payload.is_some()),
            ("max_inbound_priority_frames_per_stream", h2.max_inbound_priority_frames_per_stream.is_some()),
            ("max_inbound_window_update_frames_per_data_frame_sent", h2.max_inbound_window_update_frames_per_data_frame_sent.is_some()),
        ] {
            if set {
                return Err(ConfigError::new(
                    format!("{path}.http2_protocol_options.{field}"),
                    "not supported on a cluster (weft guards downstream connections against floods)",
                ));
            }
        }
        let connect_timeout = c.connect_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(5));
        if connect_timeout.is_zero() {
            return Err(ConfigError::new(format!("{path}.connect_timeout"), "must be greater than zero"));
        }
        let original_dst_header =
            match &c.original_dst_lb_config {
                Some(o) if o.use_http_header => {
                    let name = o.http_header_name.clone().unwrap_or_else(|| "x-envoy-original-dst-host".into());
                    Some(http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| {
                        ConfigError::new(format!("{path}.original_dst_lb_config.http_header_name"), "not a valid header name")
                    })?)
                }
                _ => None,
            };
        let tls = upstream_tls(c.transport_socket.as_ref(), &format!("{path}.transport_socket"))?;
        let mut tls_matches = Vec::new();
        for (i, m) in c.transport_socket_matches.iter().enumerate() {
            let mpath = format!("{path}.transport_socket_matches[{i}]");
            if m.name.is_empty() {
                return Err(ConfigError::new(format!("{mpath}.name"), "required"));
            }
            let ts = m.transport_socket.as_ref().ok_or_else(|| ConfigError::new(format!("{mpath}.transport_socket"), "required"))?;
            let tls = upstream_tls(Some(ts), &format!("{mpath}.transport_socket"))?;
            tls_matches.push(SocketMatch { name: m.name.clone(), keys: m.match_.clone(), tls });
        }
        Ok(ClusterConfig {
            name: c.name.clone(),
            alt_stat_name: c.alt_stat_name.clone().filter(|s| !s.is_empty()),
            discovery,
            connect_timeout,
            lb,
            endpoints,
            overprovisioning_factor: la.policy.and_then(|p| p.overprovisioning_factor).unwrap_or(140),
            circuit_breakers: cb,
            outlier,
            health_checks,
            protocol,
            idle_timeout: common.idle_timeout.map(|d| d.0).or(Some(Duration::from_secs(3600))).filter(|d| !d.is_zero()),
            max_requests_per_connection: common.max_requests_per_connection.or(c.max_requests_per_connection).filter(|m| *m > 0),
            tcp_keepalive: c.upstream_connection_options.as_ref().and_then(|o| o.tcp_keepalive.as_ref()).map(|k| TcpKeepaliveConfig {
                time: k.keepalive_time.map(|s| Duration::from_secs(u64::from(s))),
                interval: k.keepalive_interval.map(|s| Duration::from_secs(u64::from(s))),
                probes: k.keepalive_probes,
            }),
            healthy_panic_threshold: c
                .common_lb_config
                .as_ref()
                .and_then(|l| l.healthy_panic_threshold.as_ref())
                .map(|p| p.value)
                .unwrap_or(50.0),
            h2_max_concurrent_streams: h2.max_concurrent_streams,
            // A response read ahead of a slow client is what weft buffers for this connection:
            // the windows stay within the buffer limit unless set (hyper's client defaults are
            // 2 and 5 MiB).
            h2_initial_stream_window: h2.initial_stream_window_size.or(Some(buffer_limit.min(UPSTREAM_H2_STREAM_WINDOW))),
            h2_initial_connection_window: h2
                .initial_connection_window_size
                .or(Some(buffer_limit.clamp(super::listener::H2_MIN_CONNECTION_WINDOW, UPSTREAM_H2_CONNECTION_WINDOW))),
            original_dst_header,
            tls,
            tls_matches,
        })
    }
}

/// A cluster-side transport socket: TLS with an `UpstreamTlsContext`, or plaintext.
fn upstream_tls(ts: Option<&weft_xds::tls::TransportSocket>, path: &str) -> Result<Option<Arc<ClientTls>>> {
    match transport_context(ts, path)? {
        None => Ok(None),
        Some(TransportSocketConfig::UpstreamTls(ctx)) => Ok(Some(Arc::new(ClientTls::from_wire(ctx, &format!("{path}.typed_config"))?))),
        Some(_) => Err(ConfigError::new(
            format!("{path}.typed_config"),
            "a cluster originates TLS with an UpstreamTlsContext, not a DownstreamTlsContext",
        )),
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut i = 2;
    while i * i <= n {
        if n.is_multiple_of(i) {
            return false;
        }
        i += 1;
    }
    true
}

fn endpoint_address(a: &Address, path: &str, discovery: &Discovery) -> Result<EndpointAddress> {
    match discovery {
        Discovery::StrictDns { .. } | Discovery::LogicalDns { .. } => {
            let sa = a.socket_address.as_ref().ok_or_else(|| ConfigError::new(path, "only socket_address is supported"))?;
            let port = port_value(sa.port_value, &format!("{path}.socket_address.port_value"))?;
            Ok(EndpointAddress::Dns { host: sa.address.clone(), port })
        }
        Discovery::Static if a.pipe.is_some() => {
            let pipe = a.pipe.as_ref().map(|p| p.path.clone()).unwrap_or_default();
            if pipe.is_empty() {
                return Err(ConfigError::new(format!("{path}.pipe.path"), "required"));
            }
            if a.socket_address.is_some() {
                return Err(ConfigError::new(path, "socket_address and pipe are mutually exclusive"));
            }
            Ok(EndpointAddress::Pipe(pipe))
        }
        _ => socket_addr(a, path).map(EndpointAddress::Ip),
    }
}

fn health_check(h: &wire::HealthCheck, path: &str) -> Result<HealthCheckConfig> {
    let timeout = h.timeout.map(|d| d.0).ok_or_else(|| ConfigError::new(format!("{path}.timeout"), "required"))?;
    let interval = h.interval.map(|d| d.0).ok_or_else(|| ConfigError::new(format!("{path}.interval"), "required"))?;
    if timeout.is_zero() || interval.is_zero() {
        return Err(ConfigError::new(path, "timeout and interval must be greater than zero"));
    }
    let kind = match (&h.http_health_check, &h.tcp_health_check) {
        (Some(hh), None) => {
            if !hh.path.starts_with('/') {
                return Err(ConfigError::new(format!("{path}.http_health_check.path"), "required, and must start with '/'"));
            }
            let mut expected = Vec::new();
            for (i, r) in hh.expected_statuses.iter().enumerate() {
                if r.start < 100 || r.end > 600 || r.start >= r.end {
                    return Err(ConfigError::new(
                        format!("{path}.http_health_check.expected_statuses[{i}]"),
                        "must be a non-empty range within [100, 600)",
                    ));
                }
                expected.push((r.start as u16, r.end as u16));
            }
            if expected.is_empty() {
                expected.push((200, 201));
            }
            HealthCheckKind::Http { path: hh.path.clone(), host: Some(hh.host.clone()).filter(|h| !h.is_empty()), expected }
        }
        (None, Some(t)) => {
            let payload = |p: &wire::Payload, pp: String| -> Result<Vec<u8>> {
                match (&p.text, &p.binary) {
                    (Some(t), None) => hex(t).ok_or_else(|| ConfigError::new(format!("{pp}.text"), "must be hex-encoded")),
                    (None, Some(b)) => {
                        super::route::decode_base64(b).ok_or_else(|| ConfigError::new(format!("{pp}.binary"), "must be base64"))
                    }
                    _ => Err(ConfigError::new(pp, "exactly one of text or binary is required")),
                }
            };
            let send = t.send.as_ref().map(|p| payload(p, format!("{path}.tcp_health_check.send"))).transpose()?;
            let receive = t
                .receive
                .iter()
                .enumerate()
                .map(|(i, p)| payload(p, format!("{path}.tcp_health_check.receive[{i}]")))
                .collect::<Result<Vec<_>>>()?;
            HealthCheckKind::Tcp { send, receive }
        }
        _ => return Err(ConfigError::new(path, "exactly one of http_health_check or tcp_health_check is required")),
    };
    Ok(HealthCheckConfig {
        kind,
        timeout,
        interval,
        no_traffic_interval: h.no_traffic_interval.map(|d| d.0).filter(|d| !d.is_zero()).unwrap_or(Duration::from_secs(60)),
        unhealthy_threshold: h
            .unhealthy_threshold
            .ok_or_else(|| ConfigError::new(format!("{path}.unhealthy_threshold"), "required"))?
            .max(1),
        healthy_threshold: h.healthy_threshold.ok_or_else(|| ConfigError::new(format!("{path}.healthy_threshold"), "required"))?.max(1),
    })
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The endpoints of a `ClusterLoadAssignment` (a cluster's `load_assignment`, or an EDS
/// resource), checked: weights at least 1, priorities contiguous from 0.
pub fn endpoints_from_wire(la: &wire::ClusterLoadAssignment, path: &str, discovery: &Discovery) -> Result<Vec<EndpointConfig>> {
    let mut endpoints = Vec::new();
    for (li, loc) in la.endpoints.iter().enumerate() {
        let lpath = format!("{path}.endpoints[{li}]");
        for (ei, e) in loc.lb_endpoints.iter().enumerate() {
            let epath = format!("{lpath}.lb_endpoints[{ei}]");
            let ep = e.endpoint.as_ref().ok_or_else(|| ConfigError::new(format!("{epath}.endpoint"), "required"))?;
            let address = endpoint_address(&ep.address, &format!("{epath}.endpoint.address"), discovery)?;
            let weight = e.load_balancing_weight.unwrap_or(1);
            if weight == 0 {
                return Err(ConfigError::new(format!("{epath}.load_balancing_weight"), "must be at least 1"));
            }
            let health_check_port = match &ep.health_check_config {
                Some(h) if h.port_value.unwrap_or(0) != 0 => {
                    Some(port_value(h.port_value, &format!("{epath}.endpoint.health_check_config.port_value"))?)
                }
                _ => None,
            };
            endpoints.push(EndpointConfig {
                address,
                weight,
                priority: loc.priority,
                declared_unhealthy: matches!(
                    e.health_status,
                    wire::HealthStatus::Unhealthy | wire::HealthStatus::Draining | wire::HealthStatus::Timeout
                ),
                health_check_port,
                socket_match: e.metadata.as_ref().and_then(|m| m.filter_metadata.get(SOCKET_MATCH_KEY)).cloned().unwrap_or_default(),
            });
        }
    }
    let mut priorities: Vec<u32> = endpoints.iter().map(|e| e.priority).collect();
    priorities.sort_unstable();
    priorities.dedup();
    if priorities.iter().enumerate().any(|(i, p)| *p as usize != i) {
        return Err(ConfigError::new(format!("{path}.endpoints"), "priorities must be contiguous from 0"));
    }
    Ok(endpoints)
}

/// hyper's HTTP/2 client windows, kept when the buffer limit allows them.
const UPSTREAM_H2_STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const UPSTREAM_H2_CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
