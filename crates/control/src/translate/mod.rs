//! Istio's model → Envoy v3 resources for one proxy, built as `envoy-types` messages ([`pb`]):
//! what the ADS server encodes, unchanged, for `weft proxy` and Envoy alike.
//!
//! Everything a proxy gets comes from its *dependency set* (`Scope`): the services its
//! `Sidecar` egress hosts let it see, or all services when there is no `Sidecar`.
//!
//! A proxy whose traffic is captured (`INTERCEPTION_MODE` REDIRECT, the default, or TPROXY)
//! gets the virtual listeners 15001/15006; one that is not (`NONE`, Istio's explicit mode)
//! gets listeners that bind real ports instead: its `Sidecar` ingress listeners and, with an
//! HTTP proxy port, the listener its application sends `HTTP_PROXY` requests to.

mod cluster;
mod credential;
mod gateway;
mod inbound;
mod listener;
mod mtls;
mod names;
pub mod pb;
pub mod peers;
mod route;
pub mod tracing;
pub mod vhds;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use weft_api::networking::{self as net, OutboundMode};
use weft_api::Resource;

use crate::model::{host_matches, labels_match, Model, Service};
use crate::node::{Interception, ProxyKind, ProxyNode};
use crate::telemetry::Side;

pub use listener::HTTP_PROXY_ROUTE;

pub const PASSTHROUGH: &str = "PassthroughCluster";
pub const BLACKHOLE: &str = "BlackHoleCluster";
pub const INBOUND_PASSTHROUGH: &str = "InboundPassthroughCluster";
pub const OUTBOUND_PORT: u16 = 15001;
pub const INBOUND_PORT: u16 = 15006;

/// One proxy's resources, by type then resource name. Clusters and endpoint sets are shared
/// (`Arc`) because most of them come from [`Reuse`], built once per mesh version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generated {
    pub clusters: BTreeMap<String, Arc<pb::Cluster>>,
    pub endpoints: BTreeMap<String, Arc<pb::Endpoints>>,
    pub listeners: BTreeMap<String, pb::Listener>,
    pub routes: BTreeMap<String, pb::RouteConfiguration>,
    /// SDS secrets (`kubernetes://…`) the listeners name: a gateway's certificates.
    pub secrets: BTreeMap<String, pb::Secret>,
    /// VHDS: virtual hosts sent on demand (`vhds::split`), for weft sidecars that fetch so.
    pub virtual_hosts: BTreeMap<String, pb::VirtualHost>,
    /// NDS: the name table, for a sidecar that answers its workload's DNS.
    pub name_table: Option<weft_xds::name_table::NameTable>,
}

/// A resource of a [`Generated`]: its protobuf encoding, and the `Arc` it is shared through
/// when it has one (so what several groups share is encoded once).
pub struct Item<'a> {
    pub type_url: &'static str,
    pub name: &'a str,
    pub encode: Box<dyn Fn() -> Vec<u8> + 'a>,
    pub shared: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

fn shared_items<'a, M>(type_url: &'static str, set: &'a BTreeMap<String, Arc<M>>) -> impl Iterator<Item = Item<'a>>
where
    M: prost::Message + Send + Sync + 'static,
{
    set.iter().map(move |(name, m)| {
        let shared: Arc<dyn std::any::Any + Send + Sync> = m.clone();
        Item { type_url, name, encode: Box::new(move || m.encode_to_vec()), shared: Some(shared) }
    })
}

fn plain_items<'a, M: prost::Message>(type_url: &'static str, set: &'a BTreeMap<String, M>) -> impl Iterator<Item = Item<'a>> {
    set.iter().map(move |(name, m)| Item { type_url, name, encode: Box::new(move || m.encode_to_vec()), shared: None })
}

impl Generated {
    /// Every resource, by type in `weft_xds::proto::ALL_TYPES` order.
    pub fn items(&self) -> impl Iterator<Item = Item<'_>> {
        use weft_xds::proto::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, VIRTUAL_HOST};
        shared_items(CLUSTER, &self.clusters)
            .chain(shared_items(ENDPOINT, &self.endpoints))
            .chain(plain_items(LISTENER, &self.listeners))
            .chain(plain_items(ROUTE, &self.routes))
            .chain(plain_items(SECRET, &self.secrets))
            .chain(plain_items(VIRTUAL_HOST, &self.virtual_hosts))
            .chain(self.name_table.iter().map(|t| Item {
                type_url: weft_xds::name_table::NAME_TABLE,
                // Istio's one table has no name.
                name: "",
                encode: Box::new(move || prost::Message::encode_to_vec(t)),
                shared: None,
            }))
    }

    /// Every resource in proto3 JSON, as a proxy's `/config_dump` shows it (decoded from its
    /// encoding, as a proxy decodes it): for tests and tools, never on the way to the wire.
    pub fn to_json(&self) -> GeneratedJson {
        use weft_xds::proto::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, VIRTUAL_HOST};
        let mut out = GeneratedJson::default();
        for item in self.items() {
            let json = weft_xds::proto::from_bytes(item.type_url, &(item.encode)())
                .unwrap_or_else(|e| Value::String(format!("does not decode: {e}")));
            let set = match item.type_url {
                CLUSTER => &mut out.clusters,
                ENDPOINT => &mut out.endpoints,
                LISTENER => &mut out.listeners,
                ROUTE => &mut out.routes,
                SECRET => &mut out.secrets,
                VIRTUAL_HOST => &mut out.virtual_hosts,
                _ => continue,
            };
            set.insert(item.name.to_owned(), json);
        }
        out
    }
}

/// A [`Generated`] in proto3 JSON ([`Generated::to_json`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GeneratedJson {
    pub clusters: BTreeMap<String, Value>,
    pub endpoints: BTreeMap<String, Value>,
    pub listeners: BTreeMap<String, Value>,
    pub routes: BTreeMap<String, Value>,
    pub secrets: BTreeMap<String, Value>,
    pub virtual_hosts: BTreeMap<String, Value>,
}

impl GeneratedJson {
    /// Resources that do not decode as the proxy decodes them, or whose own name (or
    /// `cluster_name`) is not the name they are sent under: `name: why`.
    pub fn faults(&self) -> Vec<String> {
        let sets = [&self.clusters, &self.endpoints, &self.listeners, &self.routes, &self.secrets, &self.virtual_hosts];
        let mut out = Vec::new();
        for (name, v) in sets.into_iter().flatten() {
            let own = v.get("name").or_else(|| v.get("cluster_name")).and_then(Value::as_str);
            if own != Some(name.as_str()) {
                out.push(format!("{name}: {v}"));
            }
        }
        out
    }
}

/// What a mesh version translates the same way for many proxies, built on first use and shared
/// by every proxy group of that version (`push::Cache` holds one per version): without it, each
/// namespace's group rebuilt every service's clusters and endpoints and the workloads table.
/// It matters while a change fans out to the groups; held afterwards it would only keep the
/// version's JSON in memory, so [`Reuse::clear`] lets go of it once it goes unused.
#[derive(Default)]
pub struct Reuse {
    clusters: parking_lot::Mutex<std::collections::HashMap<ClusterKey, cluster::Built>>,
    workloads: parking_lot::Mutex<Option<Arc<pb::Endpoints>>>,
}

/// What an outbound cluster (and its endpoint set) depends on beyond the mesh version: its
/// name (service, port, subset), the DestinationRule the proxy's namespace selects for it, and
/// whether the proxy has a certificate for auto mTLS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClusterKey {
    name: String,
    rule: Option<(String, String)>,
    identity: bool,
}

impl Reuse {
    fn workloads(&self, model: &Model) -> Arc<pb::Endpoints> {
        self.workloads.lock().get_or_insert_with(|| Arc::new(peers::workloads(model))).clone()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.workloads.lock().is_none() && self.clusters.lock().is_empty()
    }

    /// Drops everything held; what is asked for afterwards is built again.
    pub fn clear(&self) {
        *self.workloads.lock() = None;
        self.clusters.lock().clear();
    }
}

/// What one proxy may see, decided once per generation.
pub struct Scope<'a> {
    pub model: &'a Model,
    pub node: &'a ProxyNode,
    /// The services the `Sidecar`'s egress hosts let the proxy see; `None`: all of them
    /// (not listed, since every proxy's inbound half builds a scope too).
    visible: Option<Vec<&'a Arc<Service>>>,
    pub outbound: OutboundMode,
    /// The `Sidecar` that applies to the proxy, if any.
    pub sidecar: Option<&'a Resource<net::Sidecar>>,
    /// What the Telemetry API says about the proxy.
    pub telemetry: crate::telemetry::Resolved,
}

impl<'a> Scope<'a> {
    pub fn new(model: &'a Model, node: &'a ProxyNode) -> Scope<'a> {
        let sidecar = sidecar_for(model, node);
        let egress: Vec<&str> =
            sidecar.map(|s| s.spec.egress.iter().flat_map(|e| e.hosts.iter().map(String::as_str)).collect()).unwrap_or_default();
        // Not listed when the proxy sees everything (the usual case), since every proxy's
        // inbound half builds a scope too.
        let narrowed = !egress.is_empty() || model.services.iter().any(|s| !s.export_to.is_empty());
        let visible = narrowed.then(|| {
            model
                .services
                .iter()
                .filter(|s| crate::model::exported_to(&s.export_to, &s.namespace, &node.namespace))
                .filter(|s| egress.is_empty() || egress.iter().any(|h| egress_allows(h, s, &node.namespace)))
                .collect()
        });
        let outbound = sidecar
            .and_then(|s| s.spec.outbound_traffic_policy.as_ref().map(|p| p.mode))
            .unwrap_or(model.mesh.outbound_traffic_policy.mode);
        let telemetry = crate::telemetry::resolve(model, &node.namespace, &node.labels);
        Scope { model, node, visible, outbound, sidecar, telemetry }
    }

    /// The services this proxy sees.
    pub fn services(&self) -> Box<dyn Iterator<Item = &'a Arc<Service>> + '_> {
        match &self.visible {
            Some(v) => Box::new(v.iter().copied()),
            None => Box::new(self.model.services.iter()),
        }
    }

    /// The VirtualService that routes `host` for this proxy's mesh traffic (first by
    /// namespace/name when several claim it; `weft analyze` reports the conflict).
    pub fn virtual_service(&self, host: &str) -> Option<&'a Resource<net::VirtualService>> {
        self.model.virtual_services.iter().find(|vs| {
            route::Bound::Mesh.named_in(&vs.spec.gateways, &vs.namespace)
                && crate::model::exported_to(&vs.spec.export_to, &vs.namespace, &self.node.namespace)
                && vs.spec.hosts.iter().any(|h| host_matches(&self.model.resolve_host(h, &vs.namespace), host))
        })
    }
}

/// The Sidecar resource that applies to `node`: one selecting it in its namespace, else the
/// namespace default, else the mesh default in the root namespace.
fn sidecar_for<'a>(model: &'a Model, node: &ProxyNode) -> Option<&'a Resource<net::Sidecar>> {
    let all = &model.sidecars;
    all.iter()
        .find(|s| s.namespace == node.namespace && s.spec.workload_selector.as_ref().is_some_and(|w| labels_match(&w.labels, &node.labels)))
        .or_else(|| all.iter().find(|s| s.namespace == node.namespace && s.spec.workload_selector.is_none()))
        .or_else(|| all.iter().find(|s| s.namespace == model.mesh.root_namespace && s.spec.workload_selector.is_none()))
}

/// `ns/host` egress entries: `*/…` any namespace, `./…` the proxy's own, `~/…` none.
fn egress_allows(entry: &str, svc: &Service, proxy_ns: &str) -> bool {
    let Some((ns, host)) = entry.split_once('/') else { return false };
    let ns_ok = match ns {
        "*" => true,
        "." => svc.namespace == proxy_ns,
        "~" => false,
        other => svc.namespace == other,
    };
    ns_ok && (host_matches(host, &svc.hostname) || svc.short_name.as_deref().is_some_and(|n| n == host && svc.namespace == proxy_ns))
}

/// Every resource `node` should have.
pub fn generate(model: &Model, node: &ProxyNode) -> Generated {
    let mut out = generate_outbound(model, node, &Reuse::default());
    let own = generate_inbound(model, node);
    out.clusters.extend(own.clusters);
    out.endpoints.extend(own.endpoints);
    out.listeners.extend(own.listeners);
    out.routes.extend(own.routes);
    out.secrets.extend(own.secrets);
    out
}

/// Everything except the proxy's own inbound side: it depends only on the proxy's kind,
/// namespace and selecting labels, so proxies that agree on those share it (`push::Cache`).
/// `reuse` must belong to `model`'s version.
pub fn generate_outbound(model: &Model, node: &ProxyNode, reuse: &Reuse) -> Generated {
    let scope = Scope::new(model, node);
    let mut out = Generated::default();
    cluster::outbound(&scope, reuse, &mut out);
    cluster::builtin(&mut out);
    out.endpoints.insert(peers::WORKLOADS.into(), reuse.workloads(model));
    tracing::collectors(&scope, &mut out);
    match node.kind {
        ProxyKind::Sidecar => {
            // Without capture nothing reaches the virtual listener or the per-port listeners
            // behind it; Istio would bind those per-port listeners on 127.0.0.1, which on one
            // machine every workload shares (see ARCHITECTURE.md), so weft leaves them out.
            if node.interception != Interception::None {
                listener::outbound(&scope, &mut out);
                route::outbound(&scope, &mut out);
            }
            if node.http_proxy_port(&model.mesh).is_some() {
                route::http_proxy(&scope, &mut out);
            }
            if node.dns != crate::node::Dns::Off {
                out.name_table = Some(names::build(&scope));
            }
        }
        ProxyKind::Router => gateway::generate(&scope, &mut out),
    }
    listener::add_tcp_access_logs(&scope, Side::Client, &mut out.listeners);
    add_stats_plan(&scope, &mut out.listeners);
    out
}

/// The Telemetry API's metric changes as listener metadata (`istio.stats`), on every mesh
/// listener, where weft proxies read them (their Istio metrics) and Envoy, which has no Istio
/// stats filter, carries them unread. Left out when nothing changes.
fn add_stats_plan(scope: &Scope<'_>, listeners: &mut BTreeMap<String, pb::Listener>) {
    let m = &scope.telemetry.metrics;
    if m.is_default() {
        return;
    }
    let side = |s: &crate::telemetry::MetricsSide| {
        let metrics: serde_json::Map<String, Value> = s
            .overrides
            .iter()
            .map(|(metric, o)| (metric.name().to_owned(), serde_json::json!({"disabled": o.disabled, "tags": o.tags})))
            .collect();
        serde_json::json!({"disabled": s.disabled || m.off, "metrics": metrics})
    };
    let mut plan = serde_json::json!({"client": side(&m.client), "server": side(&m.server)});
    if let Some(d) = m.reporting_interval {
        plan["reporting_interval"] = Value::String(duration_text(d));
    }
    let plan = plan.as_object().map(pb::json_struct).unwrap_or_default();
    for l in listeners.values_mut().filter(|l| l.traffic_direction != 0) {
        l.metadata = pb::metadata([("istio.stats", plan.clone())]);
    }
}

/// The proxy's own inbound listeners and clusters, and its HTTP proxy listener, which binds
/// the proxy's own address (sidecars only).
pub fn generate_inbound(model: &Model, node: &ProxyNode) -> Generated {
    let mut out = Generated::default();
    if node.kind == ProxyKind::Sidecar {
        let scope = Scope::new(model, node);
        inbound::inbound(&scope, &mut out);
        if let Some(port) = node.http_proxy_port(&model.mesh) {
            listener::http_proxy(&scope, port, &mut out);
        }
        listener::add_tcp_access_logs(&scope, Side::Server, &mut out.listeners);
        add_stats_plan(&scope, &mut out.listeners);
    }
    out
}

pub fn outbound_cluster_name(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

pub fn inbound_cluster_name(port: u16) -> String {
    format!("inbound|{port}||")
}

/// A `Duration` in proto3 JSON, for the metadata weft writes as JSON.
fn duration_text(d: std::time::Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.9}s", d.as_secs_f64()).trim_end_matches('0').to_string()
    }
}

/// A TCP proxy to `clusters` by weight (a VirtualService `tcp` or `tls` route's
/// destinations); one cluster takes everything. Stats go under the first one's name.
pub fn tcp_proxy_to(clusters: &[(String, u32)]) -> pb::listener::Filter {
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::{
        weighted_cluster::ClusterWeight, ClusterSpecifier, WeightedCluster,
    };
    let stat = clusters.first().map(|c| c.0.as_str()).unwrap_or(BLACKHOLE);
    if clusters.len() < 2 {
        return tcp_proxy(stat, stat);
    }
    let weighted = WeightedCluster {
        clusters: clusters
            .iter()
            .map(|(name, weight)| ClusterWeight { name: name.clone(), weight: *weight, ..Default::default() })
            .collect(),
    };
    let config = pb::TcpProxy {
        stat_prefix: stat.into(),
        cluster_specifier: Some(ClusterSpecifier::WeightedClusters(weighted)),
        ..Default::default()
    };
    pb::filter("envoy.filters.network.tcp_proxy", &config)
}

pub fn tcp_proxy(stat_prefix: &str, cluster: &str) -> pb::listener::Filter {
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier;
    let config = pb::TcpProxy {
        stat_prefix: stat_prefix.into(),
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    };
    pb::filter("envoy.filters.network.tcp_proxy", &config)
}
