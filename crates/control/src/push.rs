//! What is pushed to proxies, built once and shared: the encoded resources of each group of
//! proxies that see the same outbound config, plus each proxy's own inbound part.
//!
//! Outbound config (clusters, endpoints, outbound listeners, routes) depends only on the
//! proxy's kind, namespace and the few labels some resource selects on (VirtualService
//! `sourceLabels`, Sidecar and Gateway selectors). Proxies that agree on those share one
//! generation, encoded to protobuf and hashed once per mesh version; a connection holds an
//! `Arc` of it and its own small inbound part. This is what keeps control-plane memory and
//! CPU flat as proxies are added.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message;
use weft_xds::proto::{self, Any, ALL_TYPES};

use crate::model::Model;
use crate::node::{Interception, ProxyKind, ProxyNode};
use crate::translate::{generate_inbound, generate_outbound, Generated, Reuse};

/// One resource, encoded and hashed.
#[derive(Debug)]
pub struct Res {
    pub name: Arc<str>,
    pub hash: u64,
    /// The `google.protobuf.Any` around it, encoded: what goes on the wire, shared by every
    /// proxy it is sent to.
    pub encoded: Bytes,
}

type Set = BTreeMap<Arc<str>, Arc<Res>>;

/// Resources by type (in `ALL_TYPES` order), by name. A type's set is shared with the
/// previous version when nothing in it changed, so "unchanged" is a pointer comparison.
#[derive(Debug, Default)]
pub struct Compiled {
    types: [Arc<Set>; ALL_TYPES.len()],
    /// Per type, the names a proxy that fetches on demand gets without asking (not
    /// [`is_lazy`]): an on-demand selection is these and what it lists, found without a walk
    /// over the mesh's thousands of service clusters and virtual hosts.
    eager: [Vec<Arc<str>>; ALL_TYPES.len()],
    /// For a group whose virtual hosts go by VHDS: which one each host asked for is.
    pub aliases: crate::translate::vhds::Aliases,
}

fn type_index(t: &str) -> Option<usize> {
    ALL_TYPES.iter().position(|k| *k == t)
}

/// Encoded resources by (type, hash of their encoding), so a resource that did not change
/// between versions, or that several groups share, is held once: one `Arc`, sent to every
/// proxy, and "unchanged" stays a pointer comparison.
#[derive(Default)]
pub struct Memo {
    map: Mutex<HashMap<(usize, u64), Arc<Res>>>,
    /// This version's shared messages (`translate::Reuse`), by address, with the `Arc` held so
    /// the address cannot be taken by another value: encoded once, not once per group.
    shared: Mutex<HashMap<usize, SharedRes>>,
}

struct SharedRes {
    /// Held so the address stays this message's.
    _msg: Arc<dyn std::any::Any + Send + Sync>,
    res: Arc<Res>,
}

impl Memo {
    /// `bytes`, the encoding of resource `name` of type `i`: the memo's `Res` when an equal
    /// resource was encoded before.
    fn encoded(&self, i: usize, type_url: &str, name: &str, value: Vec<u8>) -> Arc<Res> {
        let hash = xxhash_rust::xxh64::xxh64(&value, i as u64);
        let mut map = self.map.lock();
        if let Some(r) = map.get(&(i, hash)).filter(|r| *r.name == *name) {
            return r.clone();
        }
        let any = Any { type_url: type_url.into(), value };
        let r = Arc::new(Res { name: Arc::from(name), hash, encoded: any.encode_to_vec().into() });
        map.insert((i, hash), r.clone());
        r
    }

    /// A memo for the next version: what this one still holds.
    fn carried(&self) -> Memo {
        let map = self.map.lock().iter().filter(|(_, r)| Arc::strong_count(r) > 1).map(|(k, r)| (*k, r.clone())).collect();
        Memo { map: Mutex::new(map), shared: Mutex::default() }
    }
}

impl Compiled {
    /// Encodes every resource (reusing `memo`'s where the encoding is the same).
    pub fn encode(g: &Generated, memo: &Memo) -> Compiled {
        let mut types: [Set; ALL_TYPES.len()] = Default::default();
        for item in g.items() {
            let Some(i) = type_index(item.type_url) else { continue };
            let held = item.shared.as_ref().filter(|a| Arc::strong_count(a) > 2);
            if let Some(a) = held {
                if let Some(s) = memo.shared.lock().get(&(Arc::as_ptr(a) as *const () as usize)) {
                    types[i].insert(s.res.name.clone(), s.res.clone());
                    continue;
                }
            }
            let r = memo.encoded(i, item.type_url, item.name, (item.encode)());
            if let Some(a) = held {
                memo.shared.lock().insert(Arc::as_ptr(a) as *const () as usize, SharedRes { _msg: a.clone(), res: r.clone() });
            }
            types[i].insert(r.name.clone(), r);
        }
        let eager = std::array::from_fn(|i| types[i].keys().filter(|n| !is_lazy(ALL_TYPES[i], n)).cloned().collect());
        Compiled { types: types.map(Arc::new), eager, aliases: Default::default() }
    }

    /// What `sel` covers of `set` (type index `i`), each name with its resource.
    fn covered<'a>(&'a self, i: usize, sel: &'a Sel) -> Box<dyn Iterator<Item = (&'a Arc<str>, &'a Arc<Res>)> + 'a> {
        let set = self.types[i].as_ref();
        let listed = |names: &'a Names| names.iter().filter_map(move |n| set.get_key_value(n.as_ref()));
        match sel {
            Sel::All => Box::new(set.iter()),
            Sel::Named(names) => Box::new(listed(names)),
            Sel::Demand(names) => Box::new(self.eager[i].iter().filter_map(move |n| set.get_key_value(n.as_ref())).chain(listed(names))),
        }
    }

    /// Takes `previous`'s set for every type whose resources are the same ones.
    fn reuse(mut self, previous: &Compiled) -> Compiled {
        for (mine, old) in self.types.iter_mut().zip(previous.types.iter()) {
            if same_set(mine, old) {
                *mine = old.clone();
            }
        }
        self
    }

    /// The set of type `t`, as an `Arc` whose identity says whether it changed.
    pub fn set(&self, t: &str) -> Option<&Arc<Set>> {
        type_index(t).map(|i| &self.types[i])
    }

    pub fn of(&self, t: &str) -> Option<&Set> {
        type_index(t).map(|i| self.types[i].as_ref())
    }

    pub fn len(&self) -> usize {
        self.types.iter().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn same(&self, other: &Compiled) -> bool {
        self.types.iter().zip(other.types.iter()).all(|(a, b)| same_set(a, b))
    }
}

/// The same resources by name and content hash.
fn same_set(a: &Arc<Set>, b: &Arc<Set>) -> bool {
    Arc::ptr_eq(a, b) || a.len() == b.len() && a.iter().zip(b.iter()).all(|((na, ra), (nb, rb))| na == nb && ra.hash == rb.hash)
}

/// The resource names a proxy subscribed to for one type. Proxies of one group ask for the same
/// names (every EDS cluster of their config), so equal sets are interned per mesh version
/// (`Cache::intern_names`) and held once, not once per proxy.
pub type Names = Arc<BTreeSet<Arc<str>>>;

/// What a subscription covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sel {
    /// Everything (a wildcard subscription).
    All,
    /// These names only.
    Named(Names),
    /// Everything but the service clusters, plus the service clusters named: CDS for a proxy
    /// that fetches clusters on first use (`ads`, ARCHITECTURE.md "On-demand clusters").
    Demand(Names),
}

impl Sel {
    /// Whether a resource `name` of type `t` is covered.
    pub fn covers(&self, t: &str, name: &str) -> bool {
        match self {
            Sel::All => true,
            Sel::Named(n) => n.contains(name),
            Sel::Demand(n) => !is_lazy(t, name) || n.contains(name),
        }
    }

    /// The names listed, for a named or on-demand subscription.
    pub fn listed(&self) -> Option<&Names> {
        match self {
            Sel::All => None,
            Sel::Named(n) | Sel::Demand(n) => Some(n),
        }
    }
}

/// What a proxy that fetches on demand gets only when it asks: service clusters (and their
/// endpoint sets, by the same names), and every VHDS virtual host.
pub fn is_lazy(t: &str, name: &str) -> bool {
    t == proto::VIRTUAL_HOST || name.starts_with("outbound|")
}

/// Everything one proxy is sent: its group's shared part and its own.
#[derive(Debug, Default, Clone)]
pub struct ProxyConfig {
    pub shared: Arc<Compiled>,
    pub own: Arc<Compiled>,
}

impl ProxyConfig {
    /// The resources of type `t` that `sel` covers.
    pub fn select(&self, t: &str, sel: &Sel) -> BTreeMap<Arc<str>, Arc<Res>> {
        let mut out = BTreeMap::new();
        let Some(i) = type_index(t) else { return out };
        for part in [&self.shared, &self.own] {
            out.extend(part.covered(i, sel).map(|(k, v)| (k.clone(), v.clone())));
        }
        out
    }

    /// The content hash of resource `name` of type `t`, if this config has it.
    pub fn hash(&self, t: &str, name: &str) -> Option<u64> {
        [&self.own, &self.shared].iter().find_map(|part| part.of(t).and_then(|set| set.get(name)).map(|r| r.hash))
    }

    /// The names of type `t` this config has that `sel` covers (duplicates possible when both
    /// parts have a name).
    pub fn names<'a>(&'a self, t: &'a str, sel: &'a Sel) -> Box<dyn Iterator<Item = &'a Arc<str>> + 'a> {
        let Some(i) = type_index(t) else { return Box::new(std::iter::empty()) };
        Box::new([&self.shared, &self.own].into_iter().flat_map(move |part| part.covered(i, sel).map(|(k, _)| k)))
    }

    /// `name` as an `Arc` shared with the resource of that name when there is one, so the
    /// names each proxy subscribes to are not each a copy.
    pub fn intern(&self, t: &str, name: &str) -> Arc<str> {
        [&self.shared, &self.own]
            .iter()
            .find_map(|part| part.of(t).and_then(|set| set.get_key_value(name)).map(|(k, _)| k.clone()))
            .unwrap_or_else(|| Arc::from(name))
    }

    /// Whether type `t` is exactly what `other` had (pointer identity of the sets).
    pub fn type_unchanged(&self, t: &str, other: &ProxyConfig) -> bool {
        let same = |a: Option<&Arc<Set>>, b: Option<&Arc<Set>>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same(self.shared.set(t), other.shared.set(t)) && same(self.own.set(t), other.own.set(t))
    }

    /// Whether this proxy would be sent exactly the same as with `other`.
    pub fn same(&self, other: &ProxyConfig) -> bool {
        (Arc::ptr_eq(&self.shared, &other.shared) || self.shared.same(&other.shared)) && self.own.same(&other.own)
    }

    /// The proxy's config as proto3 JSON, for the debug API: the clusters (and their endpoints)
    /// its CDS subscription covers, the virtual hosts its VHDS subscription covers (each in its
    /// route configuration, under its own name, as a route configuration that lists it shows
    /// it), and everything else.
    pub fn to_json(&self, clusters: &Sel, vhosts: &Sel) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (t, key) in ALL_TYPES.iter().zip(["clusters", "endpoints", "listeners", "routes"]) {
            let sel = if *t == proto::CLUSTER || *t == proto::ENDPOINT { clusters } else { &Sel::All };
            let list: Vec<serde_json::Value> = self
                .select(t, &Sel::All)
                .iter()
                .filter(|(n, _)| sel.covers(proto::CLUSTER, n) || n.as_ref() == crate::translate::peers::WORKLOADS)
                .map(|(_, r)| r)
                .filter_map(|r| Any::decode(r.encoded.as_ref()).ok().and_then(|a| proto::from_any(&a).ok()))
                .collect();
            out.insert(key.to_string(), serde_json::Value::Array(list));
        }
        let decoded = |r: &Arc<Res>| Any::decode(r.encoded.as_ref()).ok().and_then(|a| proto::from_any(&a).ok());
        for (name, r) in self.select(proto::VIRTUAL_HOST, vhosts) {
            let Some((table, own)) = name.split_once('/') else { continue };
            let Some(mut vh) = decoded(&r) else { continue };
            vh["name"] = serde_json::json!(own);
            let routes = out.get_mut("routes").and_then(|r| r.as_array_mut());
            let rc = routes.and_then(|rs| rs.iter_mut().find(|rc| rc["name"] == table));
            if let Some(hosts) = rc.and_then(|rc| rc.get_mut("virtual_hosts")).and_then(|h| h.as_array_mut()) {
                hosts.push(vh);
            }
        }
        // Secrets by name only: their keys stay out of any dump.
        let secrets: Vec<serde_json::Value> =
            self.select(proto::SECRET, &Sel::All).keys().map(|n| serde_json::json!({"name": n.as_ref()})).collect();
        out.insert("secrets".into(), serde_json::Value::Array(secrets));
        serde_json::Value::Object(out)
    }
}

/// The labels any resource selects proxies by; only these can make two proxies' outbound
/// config differ.
pub fn selecting_label_keys(model: &Model) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for vs in &model.virtual_services {
        for h in &vs.spec.http {
            for m in &h.matches {
                keys.extend(m.source_labels.keys().cloned());
            }
        }
        for t in &vs.spec.tcp {
            for m in &t.matches {
                keys.extend(m.source_labels.keys().cloned());
            }
        }
        for t in &vs.spec.tls {
            for m in &t.matches {
                keys.extend(m.source_labels.keys().cloned());
            }
        }
    }
    for s in &model.sidecars {
        if let Some(w) = &s.spec.workload_selector {
            keys.extend(w.labels.keys().cloned());
        }
    }
    for g in &model.gateways {
        keys.extend(g.spec.selector.keys().cloned());
    }
    for t in &model.telemetries {
        if let Some(s) = &t.spec.selector {
            keys.extend(s.match_labels.keys().cloned());
        }
    }
    // An OpenTelemetry tracer names the workload's canonical service in its config.
    if model.mesh.extension_providers.iter().any(|p| matches!(p.provider, weft_api::mesh::Provider::OpenTelemetry(_))) {
        keys.extend(crate::translate::tracing::CANONICAL_LABELS.iter().map(|l| (*l).to_owned()));
    }
    keys
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    router: bool,
    identity: bool,
    /// Uncaptured proxies get no virtual or per-port outbound listeners.
    interception: Interception,
    /// Whether the proxy has an HTTP proxy listener (its `http_proxy` routes are shared).
    http_proxy: bool,
    /// HTTP/1.0 accepted (`HTTP10` metadata): every connection manager says so.
    http10: bool,
    /// A weft sidecar that fetches on first use: its virtual hosts go by VHDS.
    vhds: bool,
    /// DNS capture: a name table, and with auto-allocation, listeners for allocated addresses.
    dns: crate::node::Dns,
    namespace: String,
    labels: BTreeMap<String, String>,
}

/// Per mesh version: the shared outbound parts, built on first use.
pub struct Cache {
    keys: BTreeSet<String>,
    groups: Mutex<HashMap<GroupKey, Arc<std::sync::OnceLock<Arc<Compiled>>>>>,
    /// The previous version's groups, whose unchanged type sets are taken over.
    previous: HashMap<GroupKey, Arc<Compiled>>,
    /// Shared by the outbound groups and the proxies' own parts of this version; seeded from
    /// the previous version's.
    memo: Memo,
    /// What this version's groups translate alike (service clusters, endpoints, workloads).
    reuse: Reuse,
    /// Subscriptions by content hash; see [`Names`].
    names: Mutex<HashMap<u64, Vec<Names>>>,
    /// When a group was last built: `reuse` is let go of after a quiet while.
    last_build: Mutex<Option<std::time::Instant>>,
}

impl Cache {
    /// `previous`: the cache of the version this one replaces; what it encoded is reused
    /// (and what it held that this version no longer generates is dropped with it).
    pub fn new(model: &Model, previous: Option<&Cache>) -> Cache {
        // Only what something still holds (the previous version's groups) or used: the memo is
        // bounded by what is in use, not by history.
        let memo = previous.map(|p| p.memo.carried()).unwrap_or_default();
        let previous_groups = previous
            .map(|p| p.groups.lock().iter().filter_map(|(k, c)| c.get().map(|g| (k.clone(), g.clone()))).collect())
            .unwrap_or_default();
        Cache {
            keys: selecting_label_keys(model),
            groups: Mutex::new(HashMap::new()),
            previous: previous_groups,
            memo,
            reuse: Reuse::default(),
            names: Mutex::default(),
            last_build: Mutex::default(),
        }
    }

    /// `names` as the `Arc` of an equal subscription seen before in this version, or as a new
    /// one that later equal subscriptions will share.
    pub fn intern_names(&self, names: BTreeSet<Arc<str>>) -> Names {
        let mut h = xxhash_rust::xxh64::Xxh64::new(0);
        for n in &names {
            h.update(n.as_bytes());
            h.update(&[0]);
        }
        let mut map = self.names.lock();
        let bucket = map.entry(h.digest()).or_default();
        if let Some(same) = bucket.iter().find(|b| ***b == names) {
            return same.clone();
        }
        let names = Arc::new(names);
        bucket.push(names.clone());
        names
    }

    /// Lets go of the JSON kept for building further groups of this version when no group was
    /// built for `quiet`. A group built later (a proxy of a namespace not seen yet) is
    /// translated whole again; the memo still spares it the encoding.
    pub fn release_idle(&self, quiet: std::time::Duration) {
        let mut last = self.last_build.lock();
        if last.is_some_and(|t| t.elapsed() >= quiet) {
            *last = None;
            self.reuse.clear();
            self.memo.shared.lock().clear();
        }
    }

    #[cfg(test)]
    fn reuse_is_empty(&self) -> bool {
        self.memo.shared.lock().is_empty() && self.reuse.is_empty()
    }

    /// Number of distinct outbound groups built so far.
    pub fn groups(&self) -> usize {
        self.groups.lock().values().filter(|c| c.get().is_some()).count()
    }

    /// The config for `node`: the group's shared part (built once per group) and its own;
    /// `before` is what the proxy had, whose unchanged own sets are kept.
    pub fn config(&self, model: &Model, node: &ProxyNode, before: Option<&ProxyConfig>) -> ProxyConfig {
        let key = GroupKey {
            router: node.kind == ProxyKind::Router,
            identity: node.identity,
            interception: node.interception,
            http_proxy: node.http_proxy_port(&model.mesh).is_some(),
            http10: node.http10,
            vhds: node.on_demand,
            dns: node.dns,
            namespace: node.namespace.clone(),
            labels: node.labels.iter().filter(|(k, _)| self.keys.contains(*k)).map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        // Built outside the map's lock, so a slow first build does not stall other groups; a
        // connection of a group being built waits for that build rather than repeating it
        // (a change wakes every connection at once, and with a worker thread per core a
        // repeated build was often most of the change's CPU).
        let cell = self.groups.lock().entry(key.clone()).or_default().clone();
        let mut fresh = false;
        let shared = cell
            .get_or_init(|| {
                fresh = true;
                let mut generated = generate_outbound(model, node, &self.reuse);
                let aliases = if key.vhds { crate::translate::vhds::split(&mut generated) } else { Default::default() };
                let built = Compiled { aliases, ..Compiled::encode(&generated, &self.memo) };
                Arc::new(match self.previous.get(&key) {
                    Some(prev) => built.reuse(prev),
                    None => built,
                })
            })
            .clone();
        if fresh {
            *self.last_build.lock() = Some(std::time::Instant::now());
            // Every group of the version before is rebuilt: the change has fanned out.
            if !self.previous.is_empty() && self.groups() >= self.previous.len() {
                self.release_idle(std::time::Duration::ZERO);
            }
        }
        let mut own = Compiled::encode(&generate_inbound(model, node), &self.memo);
        if let Some(b) = before {
            own = own.reuse(&b.own);
        }
        let own = Arc::new(own);
        ProxyConfig { shared, own }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(yaml: &str) -> Model {
        let loaded = weft_api::load_text(yaml, "t.yaml");
        assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
        Model::build(&loaded.objects, Default::default())
    }

    fn node(ip: &str, app: &str) -> ProxyNode {
        let meta = serde_json::json!({"NAMESPACE": "default", "LABELS": {"app": app}});
        ProxyNode::parse(&format!("sidecar~{ip}~{app}-1.default~default.svc.cluster.local"), &meta).expect("node")
    }

    const MESH: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: default}\nspec:\n  selector: {app: a}\n  ports: [{name: http, port: 80}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: default}\nspec:\n  selector: {app: b}\n  ports: [{name: http, port: 80}]\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a, namespace: default}\nspec: {address: 10.0.0.1, labels: {app: a}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: b, namespace: default}\nspec: {address: 10.0.0.2, labels: {app: b}}\n";

    #[test]
    fn proxies_in_one_namespace_share_outbound_config_and_keep_their_own_inbound() {
        let m = model(MESH);
        let cache = Cache::new(&m, None);
        let a = cache.config(&m, &node("10.0.0.1", "a"), None);
        let b = cache.config(&m, &node("10.0.0.2", "b"), None);
        assert!(Arc::ptr_eq(&a.shared, &b.shared), "one group for one namespace");
        assert_eq!(cache.groups(), 1);
        // Each has its own inbound listener; the merged view has both parts.
        assert!(a.select(proto::LISTENER, &Sel::All).contains_key("virtualInbound"));
        assert!(a.select(proto::CLUSTER, &Sel::All).contains_key("outbound|80||b.default.svc.cluster.local"));
        assert!(a.select(proto::CLUSTER, &Sel::All).contains_key("inbound|80||"));
    }

    #[test]
    fn a_source_labels_match_splits_groups_by_that_label_only() {
        let vs = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b, namespace: default}\nspec:\n  hosts: [b]\n  http:\n  - match: [{sourceLabels: {app: a}}]\n    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}\n    route: [{destination: {host: b}}]\n  - route: [{destination: {host: b}}]\n";
        let m = model(&format!("{MESH}{vs}"));
        let cache = Cache::new(&m, None);
        let a = cache.config(&m, &node("10.0.0.1", "a"), None);
        let b = cache.config(&m, &node("10.0.0.2", "b"), None);
        assert!(!Arc::ptr_eq(&a.shared, &b.shared));
        assert!(!a.same(&b));
        assert_eq!(cache.groups(), 2);
    }

    #[test]
    fn uncaptured_proxies_with_a_proxy_port_are_a_group_of_their_own() {
        let m = model(MESH);
        let cache = Cache::new(&m, None);
        let meta =
            serde_json::json!({"NAMESPACE": "default", "LABELS": {"app": "a"}, "INTERCEPTION_MODE": "NONE", "HTTP_PROXY_PORT": "15080"});
        let explicit = |ip: &str| ProxyNode::parse(&format!("sidecar~{ip}~a-1.default~default.svc.cluster.local"), &meta).expect("node");
        let captured = cache.config(&m, &node("10.0.0.1", "a"), None);
        let one = cache.config(&m, &explicit("127.77.0.2"), None);
        let two = cache.config(&m, &explicit("127.77.0.4"), None);
        assert!(!Arc::ptr_eq(&captured.shared, &one.shared), "captured proxies keep their virtual listeners");
        assert!(Arc::ptr_eq(&one.shared, &two.shared), "the http_proxy routes are shared");
        assert_eq!(cache.groups(), 2);
        // The proxy listener binds each proxy's own address, so it is in the proxy's own part.
        assert!(one.select(proto::LISTENER, &Sel::All).contains_key("127.77.0.2_15080"));
        assert!(two.select(proto::LISTENER, &Sel::All).contains_key("127.77.0.4_15080"));
        assert!(one.select(proto::ROUTE, &Sel::All).contains_key("http_proxy"));
        assert!(!one.select(proto::LISTENER, &Sel::All).contains_key("virtualOutbound"));
    }

    #[test]
    fn namespaces_share_a_services_clusters_unless_their_destination_rules_differ() {
        let other = |ip: &str| {
            let meta = serde_json::json!({"NAMESPACE": "other", "LABELS": {"app": "c"}});
            ProxyNode::parse(&format!("sidecar~{ip}~c-1.other~other.svc.cluster.local"), &meta).expect("node")
        };
        let dr = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a, namespace: other}\nspec:\n  host: a.default.svc.cluster.local\n  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 3}}\n";
        let m = model(&format!("{MESH}{dr}"));
        let cache = Cache::new(&m, None);
        let here = cache.config(&m, &node("10.0.0.1", "a"), None);
        let there = cache.config(&m, &other("10.0.0.3"), None);
        assert_eq!(cache.groups(), 2);
        let cluster = |c: &ProxyConfig, name: &str| c.select(proto::CLUSTER, &Sel::All)[name].clone();
        let (b, a) = ("outbound|80||b.default.svc.cluster.local", "outbound|80||a.default.svc.cluster.local");
        assert!(Arc::ptr_eq(&cluster(&here, b), &cluster(&there, b)), "b has no rule: one cluster for both namespaces");
        // `other`'s DestinationRule applies to its own proxies only.
        let json = |r: Arc<Res>| proto::from_any(&Any::decode(r.encoded.as_ref()).expect("any")).expect("cluster");
        assert!(json(cluster(&there, a)).get("outlier_detection").is_some(), "other's rule applies in other");
        assert!(json(cluster(&here, a)).get("outlier_detection").is_none(), "and not in default");
        // Once the version's spare JSON is let go of, a later group is built whole again and
        // still shares the encoded resources.
        cache.release_idle(std::time::Duration::ZERO);
        assert!(cache.reuse_is_empty());
        let meta = serde_json::json!({"NAMESPACE": "third", "LABELS": {"app": "d"}});
        let third = ProxyNode::parse("sidecar~10.0.0.4~d-1.third~third.svc.cluster.local", &meta).expect("node");
        let late = cache.config(&m, &third, None);
        assert!(Arc::ptr_eq(&cluster(&here, b), &cluster(&late, b)));
        assert!(json(cluster(&late, a)).get("outlier_detection").is_none());
    }

    #[test]
    fn an_on_demand_sidecar_gets_virtual_hosts_by_host_within_its_sidecar_and_envoy_gets_routes_whole() {
        let extra = "---\napiVersion: v1\nkind: Service\nmetadata: {name: c, namespace: other}\nspec:\n  selector: {app: c}\n  ports: [{name: http, port: 80}]\n---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: default}\nspec:\n  egress: [{hosts: [\"./*\"]}]\n";
        let m = model(&format!("{MESH}{extra}"));
        let cache = Cache::new(&m, None);
        let meta = serde_json::json!({"NAMESPACE": "default", "LABELS": {"app": "a"}, "WEFT_ON_DEMAND": "true"});
        let lazy = ProxyNode::parse("sidecar~10.0.0.1~a-1.default~default.svc.cluster.local", &meta).expect("node");
        let lazy = cache.config(&m, &lazy, None);
        let whole = cache.config(&m, &node("10.0.0.2", "b"), None);
        let route_80 = |c: &ProxyConfig| {
            let j = c.to_json(&Sel::All, &Sel::Named(Names::default()));
            j["routes"].as_array().into_iter().flatten().find(|r| r["name"] == "80").cloned().expect("route configuration 80")
        };
        // Envoy (and a weft proxy with on-demand off) gets every virtual host in RDS, no VHDS.
        assert!(whole.select(proto::VIRTUAL_HOST, &Sel::All).is_empty());
        assert!(route_80(&whole)["vhds"].is_null());
        assert!(route_80(&whole)["virtual_hosts"].as_array().is_some_and(|v| v.len() > 1));
        // The on-demand sidecar's RDS keeps the catch-all and says vhds.
        let rds = route_80(&lazy);
        assert_eq!(rds["vhds"]["config_source"]["ads"], serde_json::json!({}), "{rds}");
        assert_eq!(rds["virtual_hosts"].as_array().map(Vec::len), Some(1), "{rds}");
        // A host resolves to its virtual host, which the VHDS set has; what the Sidecar hides
        // resolves to nothing, so it cannot be fetched.
        let vhosts = lazy.select(proto::VIRTUAL_HOST, &Sel::All);
        let b = lazy.shared.aliases.resolve("80/b.default.svc.cluster.local:80").expect("b resolves")[0].clone();
        assert!(vhosts.contains_key(&b), "{b}");
        assert_eq!(lazy.shared.aliases.resolve("80/b:80"), Some(vec![b.clone()]), "by its short name too");
        assert_eq!(lazy.shared.aliases.resolve("80/c.other.svc.cluster.local:80"), None, "outside the Sidecar's egress hosts");
        assert!(!vhosts.keys().any(|k| k.contains("c.other")));
        // An on-demand selection is what it names plus nothing lazy it did not ask for.
        let sel = Sel::Demand(Arc::new(std::iter::once(b.clone()).collect()));
        assert_eq!(lazy.select(proto::VIRTUAL_HOST, &sel).keys().cloned().collect::<Vec<_>>(), vec![b]);
    }
}
