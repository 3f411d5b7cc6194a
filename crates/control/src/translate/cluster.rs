//! Clusters (CDS) and their endpoints (EDS): one per service port and per DestinationRule
//! subset, named as Istio names them, with the DestinationRule's traffic policy applied.

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use weft_api::networking::{self as net, SimpleLb};

use super::mtls::{self, ClusterTls};
use super::pb::{self, cluster, endpoint};
use super::{outbound_cluster_name, ClusterKey, Generated, Reuse, Scope, BLACKHOLE, INBOUND_PASSTHROUGH, PASSTHROUGH};
use crate::model::{labels_match, Discovery, Endpoint, Service, ServicePort};
use crate::protocol::Protocol;

/// Istio's "no limit" for circuit breakers.
const UNLIMITED: u32 = u32::MAX;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Circuit-breaker thresholds with Istio's defaults: no limit.
fn unlimited_thresholds() -> Option<cluster::CircuitBreakers> {
    Some(cluster::CircuitBreakers {
        thresholds: vec![cluster::circuit_breakers::Thresholds {
            max_connections: pb::u32v(UNLIMITED),
            max_pending_requests: pb::u32v(UNLIMITED),
            max_requests: pb::u32v(UNLIMITED),
            max_retries: pb::u32v(UNLIMITED),
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// `typed_extension_protocol_options` for the upstream HTTP protocol (and common options).
pub(super) fn http_protocol_options(h2: bool, common: Option<pb::core::HttpProtocolOptions>) -> HashMap<String, pb::Any> {
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
        explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
    };
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
    let protocol =
        if h2 { ProtocolConfig::Http2ProtocolOptions(Default::default()) } else { ProtocolConfig::HttpProtocolOptions(Default::default()) };
    let opts = HttpProtocolOptions {
        common_http_protocol_options: common,
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(protocol),
        })),
        ..Default::default()
    };
    pb::map([("envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(), pb::any(&opts))])
}

fn discovery(t: cluster::cluster::DiscoveryType) -> Option<cluster::cluster::ClusterDiscoveryType> {
    Some(cluster::cluster::ClusterDiscoveryType::Type(t as i32))
}

/// An outbound cluster and, for EDS, its endpoint set.
#[derive(Clone)]
pub(super) struct Built {
    cluster: Arc<pb::Cluster>,
    endpoints: Option<Arc<pb::Endpoints>>,
}

pub fn outbound(scope: &Scope<'_>, reuse: &Reuse, out: &mut Generated) {
    for svc in scope.services() {
        let dr = scope.model.destination_rule(&svc.hostname, &scope.node.namespace);
        let rule = dr.map(|d| (d.namespace.clone(), d.name.clone()));
        for port in &svc.ports {
            if port.protocol == Protocol::Udp {
                continue;
            }
            let top = dr.and_then(|d| d.spec.traffic_policy.as_ref());
            let subsets = dr.map(|d| d.spec.subsets.as_slice()).unwrap_or_default();
            let each = std::iter::once((String::new(), None)).chain(subsets.iter().map(|s| (s.name.clone(), Some(s))));
            for (subset_name, subset) in each {
                let name = outbound_cluster_name(port.port, &subset_name, &svc.hostname);
                let key = ClusterKey { name, rule: rule.clone(), identity: scope.node.identity };
                let held = reuse.clusters.lock().get(&key).cloned();
                let built = match held {
                    Some(b) => b,
                    None => {
                        let built = match subset {
                            None => add(scope, &key.name, svc, port, top, None),
                            Some(s) => {
                                let policy = merge_policy(top, s.traffic_policy.as_ref());
                                add(scope, &key.name, svc, port, policy.as_ref(), Some((s.name.as_str(), &s.labels)))
                            }
                        };
                        reuse.clusters.lock().entry(key.clone()).or_insert(built).clone()
                    }
                };
                if let Some(e) = built.endpoints {
                    out.endpoints.insert(key.name.clone(), e);
                }
                out.clusters.insert(key.name, built.cluster);
            }
        }
    }
}

/// A subset's policy replaces the top-level one field by field (Istio's merge).
fn merge_policy(top: Option<&net::TrafficPolicy>, subset: Option<&net::TrafficPolicy>) -> Option<net::TrafficPolicy> {
    match (top, subset) {
        (None, None) => None,
        (Some(t), None) => Some(t.clone()),
        (None, Some(s)) => Some(s.clone()),
        (Some(t), Some(s)) => Some(net::TrafficPolicy {
            load_balancer: s.load_balancer.clone().or_else(|| t.load_balancer.clone()),
            connection_pool: s.connection_pool.clone().or_else(|| t.connection_pool.clone()),
            outlier_detection: s.outlier_detection.clone().or_else(|| t.outlier_detection.clone()),
            tls: s.tls.clone().or_else(|| t.tls.clone()),
            port_level_settings: if s.port_level_settings.is_empty() {
                t.port_level_settings.clone()
            } else {
                s.port_level_settings.clone()
            },
            tunnel: None,
            proxy_protocol: None,
            retry_budget: s.retry_budget.clone().or_else(|| t.retry_budget.clone()),
        }),
    }
}

/// The settings that apply to `port`: port-level settings override the policy's own.
pub struct PortPolicy {
    pub load_balancer: Option<net::LoadBalancerSettings>,
    pub connection_pool: Option<net::ConnectionPoolSettings>,
    pub outlier_detection: Option<net::OutlierDetection>,
    pub tls: Option<net::ClientTlsSettings>,
}

pub fn port_policy(policy: Option<&net::TrafficPolicy>, port: u16) -> PortPolicy {
    let mut p = PortPolicy {
        load_balancer: policy.and_then(|p| p.load_balancer.clone()),
        connection_pool: policy.and_then(|p| p.connection_pool.clone()),
        outlier_detection: policy.and_then(|p| p.outlier_detection.clone()),
        tls: policy.and_then(|p| p.tls.clone()),
    };
    if let Some(pl) = policy.and_then(|pol| pol.port_level_settings.iter().find(|s| s.port.is_some_and(|n| n.number == u32::from(port)))) {
        if pl.load_balancer.is_some() {
            p.load_balancer = pl.load_balancer.clone();
        }
        if pl.connection_pool.is_some() {
            p.connection_pool = pl.connection_pool.clone();
        }
        if pl.outlier_detection.is_some() {
            p.outlier_detection = pl.outlier_detection.clone();
        }
        if pl.tls.is_some() {
            p.tls = pl.tls.clone();
        }
    }
    p
}

fn add(
    scope: &Scope<'_>,
    name: &str,
    svc: &Service,
    port: &ServicePort,
    policy: Option<&net::TrafficPolicy>,
    subset: Option<(&str, &std::collections::BTreeMap<String, String>)>,
) -> Built {
    use cluster::cluster::{DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbPolicy};
    let pp = port_policy(policy, port.port);
    let tcp = pp.connection_pool.as_ref().and_then(|c| c.tcp.as_ref());
    let http = pp.connection_pool.as_ref().and_then(|c| c.http.as_ref());
    let mut c = pb::Cluster {
        name: name.into(),
        connect_timeout: pb::duration(tcp.and_then(|t| t.connect_timeout).map(|d| d.0).unwrap_or(DEFAULT_CONNECT_TIMEOUT)),
        ..Default::default()
    };
    let endpoints: Vec<&Endpoint> = svc
        .endpoints
        .iter()
        .filter(|e| subset.is_none_or(|(_, s)| labels_match(s, &e.labels)) && e.ports.contains_key(&port.port))
        .collect();
    let model = scope.model;
    let in_mesh = |e: &Endpoint| mtls::endpoint_takes_mtls(model, svc, e, port.port);
    let mut eds = None;
    match svc.discovery {
        Discovery::Eds => {
            c.cluster_discovery_type = discovery(DiscoveryType::Eds);
            c.eds_cluster_config = Some(EdsClusterConfig { eds_config: pb::ads(), service_name: name.into() });
            eds = Some(Arc::new(load_assignment(name, &endpoints, port.port, &in_mesh)));
        }
        Discovery::Dns | Discovery::DnsRoundRobin => {
            let t = if svc.discovery == Discovery::Dns { DiscoveryType::StrictDns } else { DiscoveryType::LogicalDns };
            c.cluster_discovery_type = discovery(t);
            c.dns_lookup_family = DnsLookupFamily::V4Only as i32;
            c.load_assignment = Some(load_assignment(name, &endpoints, port.port, &in_mesh));
        }
        Discovery::Passthrough => {
            c.cluster_discovery_type = discovery(DiscoveryType::OriginalDst);
            c.lb_policy = LbPolicy::ClusterProvided as i32;
        }
    }
    if svc.discovery != Discovery::Passthrough {
        load_balancer(&mut c, pp.load_balancer.as_ref());
    }
    let mut breakers = unlimited_thresholds();
    if let Some(t) = breakers.as_mut().and_then(|b| b.thresholds.first_mut()) {
        let set = |field: &mut Option<pb::UInt32Value>, v: Option<u32>| {
            if let Some(v) = v.filter(|v| *v > 0) {
                *field = pb::u32v(v);
            }
        };
        set(&mut t.max_connections, tcp.and_then(|t| t.max_connections));
        set(&mut t.max_pending_requests, http.and_then(|h| h.http1_max_pending_requests));
        set(&mut t.max_requests, http.and_then(|h| h.http2_max_requests));
        set(&mut t.max_retries, http.and_then(|h| h.max_retries));
    }
    c.circuit_breakers = breakers;

    let common = pb::core::HttpProtocolOptions {
        idle_timeout: http.and_then(|h| h.idle_timeout).and_then(|t| pb::duration(t.0)),
        max_requests_per_connection: http.and_then(|h| h.max_requests_per_connection).filter(|n| *n > 0).and_then(pb::u32v),
        ..Default::default()
    };
    let h2 = port.protocol.is_http2()
        || http.and_then(|h| h.h2_upgrade_policy) == Some(net::H2UpgradePolicy::Upgrade) && port.protocol.is_http();
    let has_common = common != Default::default();
    if h2 || has_common {
        c.typed_extension_protocol_options = http_protocol_options(h2, has_common.then_some(common));
    }
    match mtls::cluster_tls(scope, svc, port.port, subset.map(|(n, _)| n).unwrap_or(""), pp.tls.as_ref(), h2) {
        ClusterTls::Plain => {}
        ClusterTls::All(ts) => c.transport_socket = Some(ts),
        ClusterTls::Auto(matches) => c.transport_socket_matches = matches,
    }
    if let Some(od) = &pp.outlier_detection {
        c.outlier_detection = Some(outlier(od));
        // Istio always sets the panic threshold with outlier detection: minHealthPercent, else 0.
        let min = od.min_health_percent.unwrap_or(0);
        let threshold = envoy_types::pb::envoy::r#type::v3::Percent { value: f64::from(min) };
        c.common_lb_config = Some(cluster::cluster::CommonLbConfig { healthy_panic_threshold: Some(threshold), ..Default::default() });
    }
    Built { cluster: Arc::new(c), endpoints: eds }
}

fn load_balancer(c: &mut pb::Cluster, lb: Option<&net::LoadBalancerSettings>) {
    use cluster::cluster::{LbConfig, LbPolicy, MaglevLbConfig, RingHashLbConfig};
    use envoy_types::pb::google::protobuf::UInt64Value;
    let Some(lb) = lb else { return };
    if let Some(h) = &lb.consistent_hash {
        if let Some(m) = &h.maglev {
            c.lb_policy = LbPolicy::Maglev as i32;
            if let Some(t) = m.table_size {
                c.lb_config = Some(LbConfig::MaglevLbConfig(MaglevLbConfig { table_size: Some(UInt64Value { value: t }) }));
            }
        } else {
            c.lb_policy = LbPolicy::RingHash as i32;
            let min = h.ring_hash.as_ref().and_then(|r| r.minimum_ring_size).or(h.minimum_ring_size);
            if let Some(min) = min {
                let ring = RingHashLbConfig { minimum_ring_size: Some(UInt64Value { value: min }), ..Default::default() };
                c.lb_config = Some(LbConfig::RingHashLbConfig(ring));
            }
        }
        return;
    }
    c.lb_policy = match lb.simple {
        Some(SimpleLb::Random) => LbPolicy::Random,
        Some(SimpleLb::RoundRobin) => LbPolicy::RoundRobin,
        Some(SimpleLb::LeastConn | SimpleLb::LeastRequest) => LbPolicy::LeastRequest,
        _ => return,
    } as i32;
}

fn outlier(od: &net::OutlierDetection) -> cluster::OutlierDetection {
    let percent = |on: bool| pb::u32v(if on { 100 } else { 0 });
    let five = od.consecutive_5xx_errors.or(od.consecutive_errors);
    let gateway = od.consecutive_gateway_errors;
    cluster::OutlierDetection {
        enforcing_success_rate: pb::u32v(0),
        consecutive_5xx: five.and_then(pb::u32v),
        enforcing_consecutive_5xx: percent(five.is_some_and(|n| n > 0)),
        consecutive_gateway_failure: gateway.and_then(pb::u32v),
        enforcing_consecutive_gateway_failure: percent(gateway.is_some_and(|n| n > 0)),
        interval: od.interval.and_then(|i| pb::duration(i.0)),
        base_ejection_time: od.base_ejection_time.and_then(|b| pb::duration(b.0)),
        max_ejection_percent: od.max_ejection_percent.filter(|m| *m > 0).and_then(pb::u32v),
        ..Default::default()
    }
}

/// The cluster the mesh's workloads are in (Istio's `CLUSTER_ID`; one cluster).
pub const CLUSTER_ID: &str = "Kubernetes";

fn load_assignment(name: &str, endpoints: &[&Endpoint], svc_port: u16, in_mesh: &dyn Fn(&Endpoint) -> bool) -> pb::Endpoints {
    let lb_endpoints: Vec<endpoint::LbEndpoint> = endpoints
        .iter()
        .filter_map(|e| {
            let port = *e.ports.get(&svc_port)?;
            let mut filter = Vec::new();
            if in_mesh(e) {
                filter.push(mtls::mesh_endpoint_metadata());
            }
            // Istio's own: the workload behind the address, which telemetry names peers by.
            if let Some(w) = e.istio_workload(CLUSTER_ID) {
                filter.push(("istio", pb::fields([("workload", pb::string(w))])));
            }
            Some(endpoint::LbEndpoint {
                host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(endpoint::Endpoint {
                    address: pb::socket_address(&e.address, port),
                    ..Default::default()
                })),
                load_balancing_weight: e.weight.filter(|w| *w > 0).and_then(pb::u32v),
                metadata: if filter.is_empty() { None } else { pb::metadata(filter) },
                ..Default::default()
            })
        })
        .collect();
    let endpoints =
        if lb_endpoints.is_empty() { Vec::new() } else { vec![endpoint::LocalityLbEndpoints { lb_endpoints, ..Default::default() }] };
    pb::Endpoints { cluster_name: name.into(), endpoints, ..Default::default() }
}

/// A cluster of `discovery_type` with Istio's defaults (connect timeout, no circuit limits).
fn plain(name: &str, t: cluster::cluster::DiscoveryType) -> pb::Cluster {
    pb::Cluster {
        name: name.into(),
        cluster_discovery_type: discovery(t),
        connect_timeout: pb::duration(DEFAULT_CONNECT_TIMEOUT),
        circuit_breakers: unlimited_thresholds(),
        ..Default::default()
    }
}

/// The clusters every proxy has: where unknown traffic goes, and where it is dropped.
pub fn builtin(out: &mut Generated) {
    use cluster::cluster::{DiscoveryType, LbPolicy};
    let blackhole = pb::Cluster { circuit_breakers: None, ..plain(BLACKHOLE, DiscoveryType::Static) };
    out.clusters.insert(BLACKHOLE.into(), Arc::new(blackhole));
    for name in [PASSTHROUGH, INBOUND_PASSTHROUGH] {
        let c = pb::Cluster { lb_policy: LbPolicy::ClusterProvided as i32, ..plain(name, DiscoveryType::OriginalDst) };
        out.clusters.insert(name.into(), Arc::new(c));
    }
}

/// `inbound|<port>||`: the local application at `endpoint` (on loopback, or where a Sidecar
/// ingress listener's `defaultEndpoint` says).
pub fn inbound(out: &mut Generated, port: u16, protocol: Protocol, endpoint: std::net::SocketAddr) {
    let name = super::inbound_cluster_name(port);
    let assignment = pb::one_endpoint(&name, &endpoint.ip().to_string(), endpoint.port());
    let mut c = pb::Cluster { load_assignment: Some(assignment), ..plain(&name, cluster::cluster::DiscoveryType::Static) };
    if protocol.is_http2() {
        c.typed_extension_protocol_options = http_protocol_options(true, None);
    }
    out.clusters.insert(name, Arc::new(c));
}
