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

use parking_lot::Mutex;
use weft_xds::proto::{self, Any, ALL_TYPES};

use crate::model::Model;
use crate::node::{ProxyKind, ProxyNode};
use crate::translate::{generate_inbound, generate_outbound, Generated};

/// One resource, encoded and hashed.
#[derive(Debug)]
pub struct Res {
    pub name: Arc<str>,
    pub hash: u64,
    pub any: Any,
}

/// Resources by type (in `ALL_TYPES` order), by name.
#[derive(Debug, Default)]
pub struct Compiled {
    types: [BTreeMap<Arc<str>, Arc<Res>>; 4],
}

fn type_index(t: &str) -> Option<usize> {
    ALL_TYPES.iter().position(|k| *k == t)
}

impl Compiled {
    /// Encodes every resource. A resource Envoy's schema refuses is a weft bug: it is left
    /// out and logged, never sent.
    pub fn encode(g: &Generated) -> Compiled {
        let mut c = Compiled::default();
        for (i, t) in ALL_TYPES.iter().enumerate() {
            let Some(set) = g.by_type(t) else { continue };
            for (name, v) in set {
                match proto::to_any(t, v) {
                    Ok(any) => {
                        let hash = xxhash_rust::xxh64::xxh64(&any.value, 0);
                        let name: Arc<str> = Arc::from(name.as_str());
                        c.types[i].insert(name.clone(), Arc::new(Res { name, hash, any }));
                    }
                    Err(e) => tracing::error!(resource = %name, error = %e, "generated resource is not valid Envoy config; not sent"),
                }
            }
        }
        c
    }

    pub fn of(&self, t: &str) -> Option<&BTreeMap<Arc<str>, Arc<Res>>> {
        type_index(t).map(|i| &self.types[i])
    }

    pub fn len(&self) -> usize {
        self.types.iter().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn same(&self, other: &Compiled) -> bool {
        self.types
            .iter()
            .zip(other.types.iter())
            .all(|(a, b)| a.len() == b.len() && a.iter().zip(b.iter()).all(|((na, ra), (nb, rb))| na == nb && ra.hash == rb.hash))
    }
}

/// Everything one proxy is sent: its group's shared part and its own.
#[derive(Debug, Default, Clone)]
pub struct ProxyConfig {
    pub shared: Arc<Compiled>,
    pub own: Arc<Compiled>,
}

impl ProxyConfig {
    /// The resources of type `t`, optionally restricted to `names`.
    pub fn select(&self, t: &str, names: Option<&BTreeSet<String>>) -> BTreeMap<Arc<str>, Arc<Res>> {
        let mut out = BTreeMap::new();
        for part in [&self.shared, &self.own] {
            if let Some(set) = part.of(t) {
                match names {
                    None => out.extend(set.iter().map(|(k, v)| (k.clone(), v.clone()))),
                    Some(names) => {
                        for n in names {
                            if let Some((k, v)) = set.get_key_value(n.as_str()) {
                                out.insert(k.clone(), v.clone());
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Whether this proxy would be sent exactly the same as with `other`.
    pub fn same(&self, other: &ProxyConfig) -> bool {
        (Arc::ptr_eq(&self.shared, &other.shared) || self.shared.same(&other.shared)) && self.own.same(&other.own)
    }

    /// The proxy's config as proto3 JSON, for the debug API.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (t, key) in ALL_TYPES.iter().zip(["clusters", "endpoints", "listeners", "routes"]) {
            let list: Vec<serde_json::Value> = self.select(t, None).values().filter_map(|r| proto::from_any(&r.any).ok()).collect();
            out.insert(key.to_string(), serde_json::Value::Array(list));
        }
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
    keys
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    router: bool,
    namespace: String,
    labels: BTreeMap<String, String>,
}

/// Per mesh version: the shared outbound parts, built on first use.
pub struct Cache {
    keys: BTreeSet<String>,
    groups: Mutex<HashMap<GroupKey, Arc<Compiled>>>,
}

impl Cache {
    pub fn new(model: &Model) -> Cache {
        Cache { keys: selecting_label_keys(model), groups: Mutex::new(HashMap::new()) }
    }

    /// Number of distinct outbound groups built so far.
    pub fn groups(&self) -> usize {
        self.groups.lock().len()
    }

    /// The config for `node`: the group's shared part (built once per group) and its own.
    pub fn config(&self, model: &Model, node: &ProxyNode) -> ProxyConfig {
        let key = GroupKey {
            router: node.kind == ProxyKind::Router,
            namespace: node.namespace.clone(),
            labels: node.labels.iter().filter(|(k, _)| self.keys.contains(*k)).map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        // Built outside the lock: a slow first build must not stall other groups. Two
        // connections racing on one new group both build it; the first stored wins.
        let existing = self.groups.lock().get(&key).cloned();
        let shared = match existing {
            Some(s) => s,
            None => {
                let built = Arc::new(Compiled::encode(&generate_outbound(model, node)));
                self.groups.lock().entry(key).or_insert(built).clone()
            }
        };
        let own = Arc::new(Compiled::encode(&generate_inbound(model, node)));
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
        let cache = Cache::new(&m);
        let a = cache.config(&m, &node("10.0.0.1", "a"));
        let b = cache.config(&m, &node("10.0.0.2", "b"));
        assert!(Arc::ptr_eq(&a.shared, &b.shared), "one group for one namespace");
        assert_eq!(cache.groups(), 1);
        // Each has its own inbound listener; the merged view has both parts.
        assert!(a.select(proto::LISTENER, None).contains_key("virtualInbound"));
        assert!(a.select(proto::CLUSTER, None).contains_key("outbound|80||b.default.svc.cluster.local"));
        assert!(a.select(proto::CLUSTER, None).contains_key("inbound|80||"));
    }

    #[test]
    fn a_source_labels_match_splits_groups_by_that_label_only() {
        let vs = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b, namespace: default}\nspec:\n  hosts: [b]\n  http:\n  - match: [{sourceLabels: {app: a}}]\n    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}\n    route: [{destination: {host: b}}]\n  - route: [{destination: {host: b}}]\n";
        let m = model(&format!("{MESH}{vs}"));
        let cache = Cache::new(&m);
        let a = cache.config(&m, &node("10.0.0.1", "a"));
        let b = cache.config(&m, &node("10.0.0.2", "b"));
        assert!(!Arc::ptr_eq(&a.shared, &b.shared));
        assert!(!a.same(&b));
        assert_eq!(cache.groups(), 2);
    }
}
