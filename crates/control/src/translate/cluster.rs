//! Clusters (CDS) and their endpoints (EDS): one per service port and per DestinationRule
//! subset, named as Istio names them, with the DestinationRule's traffic policy applied.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use weft_api::networking::{self as net, SimpleLb};

use super::mtls::{self, ClusterTls};
use super::pb;
use super::{
    duration, outbound_cluster_name, socket_address, ClusterKey, Generated, Reuse, Scope, BLACKHOLE, INBOUND_PASSTHROUGH, PASSTHROUGH,
};
use crate::model::{labels_match, Discovery, Endpoint, Service, ServicePort};
use crate::protocol::Protocol;

/// Istio's "no limit" for circuit breakers.
const UNLIMITED: u32 = u32::MAX;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Circuit-breaker thresholds with Istio's defaults: no limit.
fn unlimited_thresholds() -> Value {
    json!({"max_connections": UNLIMITED, "max_pending_requests": UNLIMITED, "max_requests": UNLIMITED, "max_retries": UNLIMITED})
}

/// `typed_extension_protocol_options` for the upstream HTTP protocol (and common options).
fn http_protocol_options(h2: bool, common: Option<Map<String, Value>>) -> Value {
    let mut opts = Map::new();
    opts.insert("@type".into(), json!("type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"));
    if let Some(common) = common {
        opts.insert("common_http_protocol_options".into(), Value::Object(common));
    }
    let explicit = if h2 { json!({"http2_protocol_options": {}}) } else { json!({"http_protocol_options": {}}) };
    opts.insert("explicit_http_config".into(), explicit);
    json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts})
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
                        let Some(built) = built else { continue };
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
) -> Option<Built> {
    let pp = port_policy(policy, port.port);
    let mut c = Map::new();
    c.insert("name".into(), json!(name));
    let tcp = pp.connection_pool.as_ref().and_then(|c| c.tcp.as_ref());
    let http = pp.connection_pool.as_ref().and_then(|c| c.http.as_ref());
    c.insert("connect_timeout".into(), duration(tcp.and_then(|t| t.connect_timeout).map(|d| d.0).unwrap_or(DEFAULT_CONNECT_TIMEOUT)));
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
            c.insert("type".into(), json!("EDS"));
            c.insert("eds_cluster_config".into(), json!({"eds_config": {"ads": {}, "resource_api_version": "V3"}, "service_name": name}));
            eds = Some(Arc::new(pb::from_json(name, &load_assignment(name, &endpoints, port.port, &in_mesh))?));
        }
        Discovery::Dns | Discovery::DnsRoundRobin => {
            c.insert("type".into(), json!(if svc.discovery == Discovery::Dns { "STRICT_DNS" } else { "LOGICAL_DNS" }));
            c.insert("dns_lookup_family".into(), json!("V4_ONLY"));
            c.insert("load_assignment".into(), load_assignment(name, &endpoints, port.port, &in_mesh));
        }
        Discovery::Passthrough => {
            c.insert("type".into(), json!("ORIGINAL_DST"));
            c.insert("lb_policy".into(), json!("CLUSTER_PROVIDED"));
        }
    }
    if svc.discovery != Discovery::Passthrough {
        load_balancer(&mut c, pp.load_balancer.as_ref());
    }
    let mut thresholds = unlimited_thresholds();
    let set = |t: &mut Value, k: &str, v: Option<u32>| {
        if let Some(v) = v.filter(|v| *v > 0) {
            t[k] = json!(v);
        }
    };
    set(&mut thresholds, "max_connections", tcp.and_then(|t| t.max_connections));
    set(&mut thresholds, "max_pending_requests", http.and_then(|h| h.http1_max_pending_requests));
    set(&mut thresholds, "max_requests", http.and_then(|h| h.http2_max_requests));
    set(&mut thresholds, "max_retries", http.and_then(|h| h.max_retries));
    c.insert("circuit_breakers".into(), json!({"thresholds": [thresholds]}));

    let mut common = Map::new();
    if let Some(t) = http.and_then(|h| h.idle_timeout) {
        common.insert("idle_timeout".into(), duration(t.0));
    }
    if let Some(n) = http.and_then(|h| h.max_requests_per_connection).filter(|n| *n > 0) {
        common.insert("max_requests_per_connection".into(), json!(n));
    }
    let h2 = port.protocol.is_http2()
        || http.and_then(|h| h.h2_upgrade_policy) == Some(net::H2UpgradePolicy::Upgrade) && port.protocol.is_http();
    if h2 || !common.is_empty() {
        let common = (!common.is_empty()).then_some(common);
        c.insert("typed_extension_protocol_options".into(), http_protocol_options(h2, common));
    }
    match mtls::cluster_tls(scope, svc, port.port, subset.map(|(n, _)| n).unwrap_or(""), pp.tls.as_ref(), h2) {
        ClusterTls::Plain => {}
        ClusterTls::All(ts) => {
            c.insert("transport_socket".into(), ts);
        }
        ClusterTls::Auto(matches) => {
            c.insert("transport_socket_matches".into(), matches);
        }
    }
    if let Some(od) = &pp.outlier_detection {
        c.insert("outlier_detection".into(), outlier(od));
        // Istio always sets the panic threshold with outlier detection: minHealthPercent, else 0.
        let min = od.min_health_percent.unwrap_or(0);
        c.insert("common_lb_config".into(), json!({"healthy_panic_threshold": {"value": f64::from(min)}}));
    }
    Some(Built { cluster: Arc::new(pb::from_json(name, &Value::Object(c))?), endpoints: eds })
}

fn load_balancer(c: &mut Map<String, Value>, lb: Option<&net::LoadBalancerSettings>) {
    let Some(lb) = lb else { return };
    if let Some(h) = &lb.consistent_hash {
        if let Some(m) = &h.maglev {
            c.insert("lb_policy".into(), json!("MAGLEV"));
            if let Some(t) = m.table_size {
                c.insert("maglev_lb_config".into(), json!({"table_size": t}));
            }
        } else {
            c.insert("lb_policy".into(), json!("RING_HASH"));
            let min = h.ring_hash.as_ref().and_then(|r| r.minimum_ring_size).or(h.minimum_ring_size);
            if let Some(min) = min {
                c.insert("ring_hash_lb_config".into(), json!({"minimum_ring_size": min}));
            }
        }
        return;
    }
    let policy = match lb.simple {
        Some(SimpleLb::Random) => "RANDOM",
        Some(SimpleLb::RoundRobin) => "ROUND_ROBIN",
        Some(SimpleLb::LeastConn | SimpleLb::LeastRequest) => "LEAST_REQUEST",
        _ => return,
    };
    c.insert("lb_policy".into(), json!(policy));
}

fn outlier(od: &net::OutlierDetection) -> Value {
    let mut o = Map::new();
    o.insert("enforcing_success_rate".into(), json!(0));
    let five = od.consecutive_5xx_errors.or(od.consecutive_errors);
    match five {
        Some(n) => {
            o.insert("consecutive_5xx".into(), json!(n));
            o.insert("enforcing_consecutive_5xx".into(), json!(if n > 0 { 100 } else { 0 }));
        }
        None => {
            o.insert("enforcing_consecutive_5xx".into(), json!(0));
        }
    }
    match od.consecutive_gateway_errors {
        Some(n) => {
            o.insert("consecutive_gateway_failure".into(), json!(n));
            o.insert("enforcing_consecutive_gateway_failure".into(), json!(if n > 0 { 100 } else { 0 }));
        }
        None => {
            o.insert("enforcing_consecutive_gateway_failure".into(), json!(0));
        }
    }
    if let Some(i) = od.interval {
        o.insert("interval".into(), duration(i.0));
    }
    if let Some(b) = od.base_ejection_time {
        o.insert("base_ejection_time".into(), duration(b.0));
    }
    if let Some(m) = od.max_ejection_percent.filter(|m| *m > 0) {
        o.insert("max_ejection_percent".into(), json!(m));
    }
    Value::Object(o)
}

/// The cluster the mesh's workloads are in (Istio's `CLUSTER_ID`; one cluster).
pub const CLUSTER_ID: &str = "Kubernetes";

fn load_assignment(name: &str, endpoints: &[&Endpoint], svc_port: u16, in_mesh: &dyn Fn(&Endpoint) -> bool) -> Value {
    let lb_endpoints: Vec<Value> = endpoints
        .iter()
        .filter_map(|e| {
            let port = *e.ports.get(&svc_port)?;
            let mut lbe = json!({"endpoint": {"address": socket_address(&e.address, port)}});
            if let Some(w) = e.weight.filter(|w| *w > 0) {
                lbe["load_balancing_weight"] = json!(w);
            }
            let mut filter = serde_json::Map::new();
            if in_mesh(e) {
                filter.extend(mtls::mesh_endpoint_metadata()["filter_metadata"].as_object().cloned().unwrap_or_default());
            }
            // Istio's own: the workload behind the address, which telemetry names peers by.
            if let Some(w) = e.istio_workload(CLUSTER_ID) {
                filter.insert("istio".into(), json!({"workload": w}));
            }
            if !filter.is_empty() {
                lbe["metadata"] = json!({"filter_metadata": filter});
            }
            Some(lbe)
        })
        .collect();
    if lb_endpoints.is_empty() {
        return json!({"cluster_name": name});
    }
    json!({"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}]})
}

/// The clusters every proxy has: where unknown traffic goes, and where it is dropped.
pub fn builtin(out: &mut Generated) {
    let timeout = duration(DEFAULT_CONNECT_TIMEOUT);
    let blackhole = json!({"name": BLACKHOLE, "type": "STATIC", "connect_timeout": timeout});
    out.clusters.extend(pb::from_json(BLACKHOLE, &blackhole).map(|c| (BLACKHOLE.to_owned(), Arc::new(c))));
    for name in [PASSTHROUGH, INBOUND_PASSTHROUGH] {
        let c = json!({"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": timeout,
                   "circuit_breakers": {"thresholds": [unlimited_thresholds()]}});
        out.clusters.extend(pb::from_json(name, &c).map(|c| (name.to_owned(), Arc::new(c))));
    }
}

/// `inbound|<port>||`: the local application at `endpoint` (on loopback, or where a Sidecar
/// ingress listener's `defaultEndpoint` says).
pub fn inbound(out: &mut Generated, port: u16, protocol: Protocol, endpoint: std::net::SocketAddr) {
    let name = super::inbound_cluster_name(port);
    let address = socket_address(&endpoint.ip().to_string(), endpoint.port());
    let mut c = json!({
        "name": name, "type": "STATIC", "connect_timeout": duration(DEFAULT_CONNECT_TIMEOUT),
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]},
        "circuit_breakers": {"thresholds": [unlimited_thresholds()]},
    });
    if protocol.is_http2() {
        c["typed_extension_protocol_options"] = http_protocol_options(true, None);
    }
    if let Some(c) = pb::from_json(&name, &c) {
        out.clusters.insert(name, Arc::new(c));
    }
}
