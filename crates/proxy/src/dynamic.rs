//! Configuration that changes at run time: what the ADS client receives (clusters, endpoints,
//! listeners, routes) validated whole and then applied without dropping traffic.
//!
//! Each update is all or nothing: every resource is validated (and every new socket bound)
//! before anything changes, so a bad update leaves the proxy exactly as it was and is
//! NACKed with the resource name and field path. Unchanged resources keep their runtime
//! state (pools, health, open connections); a replaced listener keeps its socket, new
//! connections go to the new generation, and the old one is retired: HTTP/1 responses close
//! their connection, HTTP/2 connections get GOAWAY, and what is left closes after the drain
//! time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use weft_xds::ads_client::Resource;
use weft_xds::proto::{ALL_TYPES, CLUSTER, ENDPOINT, LISTENER, NAME_TABLE, ROUTE, SECRET, VIRTUAL_HOST};

use crate::config::cluster::{endpoints_from_wire, Discovery};
use crate::config::listener::{ClusterNames, NetworkAction, RouteSource};
use crate::config::route::RouteTable;
use crate::config::{ClusterConfig, ListenerConfig};
use crate::drain::Drain;
use crate::http::rds;
use crate::listener::{accept_loop, ListenerRuntime, ListenerSlot, Listeners};
use crate::server::BuildCtx;

struct DynListener {
    hash: u64,
    rt: Arc<ListenerRuntime>,
    /// The SDS secrets its TLS contexts fetch over ADS.
    sds: Arc<BTreeSet<String>>,
    /// The bound socket's slot, for listeners with `bind_to_port`.
    slot: Option<Arc<ListenerSlot>>,
}

/// What was applied, by resource: the hash of its encoding and what it became. A resource
/// whose hash is unchanged is not decoded or validated again.
#[derive(Default)]
struct State {
    listeners: BTreeMap<String, DynListener>,
    clusters: HashMap<String, (u64, Arc<ClusterConfig>)>,
    routes: HashMap<String, (u64, Arc<RouteTable>)>,
    /// Route configurations that say `vhds`, as they arrived: their tables are built again, with
    /// the virtual hosts fetched so far, when either changes (both are small: the catch-all, and
    /// the hosts this proxy used).
    vhds_routes: HashMap<String, Arc<weft_xds::route::RouteConfiguration>>,
    /// Virtual hosts fetched over VHDS, by resource name (`<route configuration>/<name>`).
    vhosts: HashMap<String, (u64, Arc<weft_xds::route::VirtualHost>)>,
    /// EDS resources (the mesh's workloads too), with the telemetry peers each names.
    endpoints: HashMap<String, (u64, Arc<crate::istio_metrics::PeerSet>)>,
}

/// A listener resource validated: its hash, its config and the SDS secrets it names.
type Checked = (u64, Arc<ListenerConfig>, Arc<BTreeSet<String>>);

/// The proxy's dynamic configuration, fed by the ADS client.
pub struct Dynamic {
    ctx: BuildCtx,
    listeners: Arc<Listeners>,
    static_listeners: Vec<Arc<ListenerRuntime>>,
    drain: Drain,
    drain_time: Duration,
    state: tokio::sync::Mutex<State>,
    wanted: Mutex<HashMap<&'static str, BTreeSet<String>>>,
    /// What was last accepted, per type, for `/config_dump`: the encoded resources, shared with
    /// the ADS client's record and decoded only when dumped.
    raw: Mutex<BTreeMap<&'static str, BTreeMap<String, Resource>>>,
    /// The SDS secrets last accepted, by name only.
    secret_names: Mutex<Vec<String>>,
    /// Which types have been applied at least once; the proxy is ready when all have.
    received: [AtomicBool; ALL_TYPES.len()],
    /// The DNS proxy, fed the name table (NDS).
    dns: Option<Arc<crate::dns::Dns>>,
}

fn type_index(t: &str) -> usize {
    ALL_TYPES.iter().position(|k| *k == t).unwrap_or(ALL_TYPES.len() - 1)
}

/// Joins per-resource errors into one NACK message (the first few, and how many more).
fn joined(errors: Vec<String>) -> Result<(), String> {
    if errors.is_empty() {
        return Ok(());
    }
    let n = errors.len();
    let mut msg = errors.into_iter().take(3).collect::<Vec<_>>().join("; ");
    if n > 3 {
        msg.push_str(&format!("; and {} more", n - 3));
    }
    Err(msg)
}

/// Decodes one resource into its wire type; errors name the resource and the field path.
fn decode<W: serde::de::DeserializeOwned>(r: &Resource, path: &str) -> Result<W, String> {
    weft_xds::load::from_value::<W>(json(r, path)?, path).map_err(|e| e.to_string())
}

/// A route configuration that says `vhds`, with the virtual hosts fetched for it.
fn with_vhosts(
    rc: &weft_xds::route::RouteConfiguration,
    vhosts: &HashMap<String, (u64, Arc<weft_xds::route::VirtualHost>)>,
    path: &str,
) -> Result<RouteTable, String> {
    let mut fetched: Vec<(&String, &Arc<weft_xds::route::VirtualHost>)> =
        vhosts.iter().filter(|(n, _)| rds::split_alias(n).is_some_and(|(table, _)| table == rc.name)).map(|(n, (_, v))| (n, v)).collect();
    fetched.sort_by(|a, b| a.0.cmp(b.0));
    let mut whole = rc.clone();
    whole.virtual_hosts.extend(fetched.into_iter().map(|(_, v)| (**v).clone()));
    RouteTable::from_wire(&whole, path, &ClusterNames::Dynamic).map_err(|e| e.to_string())
}

/// The resource as proto3 JSON; an error names the resource.
fn json(r: &Resource, path: &str) -> Result<serde_json::Value, String> {
    r.json().map_err(|e| format!("{path}: {e}"))
}

/// Validates every resource of an update with `convert(index, name, path, resource)`; returns
/// the results and every error (so the NACK names them all, not only the first).
fn validate_each<T>(
    set: &BTreeMap<String, Resource>,
    kind: &str,
    convert: impl Fn(usize, &str, &str, &Resource) -> Result<T, String>,
) -> (Vec<(String, T)>, Vec<String>) {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for (i, (name, r)) in set.iter().enumerate() {
        match convert(i, name, &format!("{kind} {name}"), r) {
            Ok(t) => ok.push((name.clone(), t)),
            Err(e) => errors.push(e),
        }
    }
    (ok, errors)
}

impl Dynamic {
    pub fn new(
        ctx: BuildCtx,
        listeners: Arc<Listeners>,
        static_listeners: Vec<Arc<ListenerRuntime>>,
        drain: Drain,
        drain_time: Duration,
        dns: Option<Arc<crate::dns::Dns>>,
    ) -> Arc<Self> {
        Arc::new(Dynamic {
            ctx,
            listeners,
            static_listeners,
            drain,
            drain_time,
            state: tokio::sync::Mutex::new(State::default()),
            wanted: Mutex::new(HashMap::new()),
            raw: Mutex::new(BTreeMap::new()),
            secret_names: Mutex::default(),
            received: Default::default(),
            dns,
        })
    }

    /// The DNS proxy, if this sidecar runs one.
    pub fn dns(&self) -> Option<&Arc<crate::dns::Dns>> {
        self.dns.as_ref()
    }

    /// Hands the name table to the DNS proxy. An update with no table (a control plane that
    /// sends none for this proxy) leaves the proxy answering nothing itself.
    fn apply_names(&self, set: &BTreeMap<String, Resource>) -> Result<(), String> {
        let Some(dns) = &self.dns else { return Err("a name table, but this proxy runs no DNS proxy".into()) };
        dns.apply(set)
    }

    /// True once clusters, listeners, and the endpoints and routes they name have arrived.
    pub fn is_initialized(&self) -> bool {
        let wanted = self.wanted.lock();
        let got = |t: &str| self.received[type_index(t)].load(Ordering::Acquire);
        got(CLUSTER)
            && got(LISTENER)
            && (got(ENDPOINT) || wanted.get(ENDPOINT).is_none_or(|w| w.is_empty()))
            && (got(ROUTE) || wanted.get(ROUTE).is_none_or(|w| w.is_empty()))
            && (got(SECRET) || wanted.get(SECRET).is_none_or(|w| w.is_empty()))
            // The virtual hosts of the working set, once VHDS is subscribed to.
            && (got(VIRTUAL_HOST) || self.ctx.routes.on_demand().is_none() || !self.ctx.routes.any_on_demand())
            // The workload's DNS is answered once names have arrived.
            && self.dns.as_ref().is_none_or(|d| d.ready())
    }

    /// The accepted dynamic resources, as Envoy's config dump lists them (decoded now).
    pub fn dump(&self, type_url: &str) -> BTreeMap<String, serde_json::Value> {
        if type_url == SECRET {
            return self.secret_names.lock().iter().map(|n| (n.clone(), serde_json::json!({"name": n}))).collect();
        }
        let held = self.raw.lock().get(type_url).cloned().unwrap_or_default();
        let _pool = weft_xds::proto::hold_pool();
        let mut out: BTreeMap<String, serde_json::Value> = held.into_iter().filter_map(|(n, r)| r.json().ok().map(|j| (n, j))).collect();
        if type_url == ROUTE {
            // A route configuration that fetches virtual hosts on demand is shown with those
            // fetched so far, as Envoy's dump shows it.
            for (name, v) in self.dump(VIRTUAL_HOST) {
                let table = rds::split_alias(&name).map(|(t, _)| t).unwrap_or_default();
                if let Some(hosts) = out.get_mut(table).and_then(|rc| rc.get_mut("virtual_hosts")).and_then(|h| h.as_array_mut()) {
                    hosts.push(v);
                }
            }
        }
        out
    }

    async fn apply_clusters(&self, set: &BTreeMap<String, Resource>) -> Result<(), String> {
        let mut st = self.state.lock().await;
        let old = &st.clusters;
        let (cfgs, errors) = validate_each(set, "cluster", |_, name, path, r| {
            if self.ctx.clusters.is_static(name) {
                return Err(format!("cluster {name:?}: a static cluster of that name exists"));
            }
            if let Some((_, cfg)) = old.get(name).filter(|(h, _)| *h == r.hash) {
                return Ok(cfg.clone());
            }
            let c = decode::<weft_xds::cluster::Cluster>(r, path)?;
            ClusterConfig::from_wire(&c, path).map(Arc::new).map_err(|e| e.to_string())
        });
        joined(errors)?;
        let applied: HashMap<String, (u64, Arc<ClusterConfig>)> =
            cfgs.iter().filter_map(|(n, c)| set.get(n).map(|r| (n.clone(), (r.hash, c.clone())))).collect();
        let cfgs = cfgs.into_iter().map(|(_, c)| c).collect();
        let unchanged = |n: &str| old.get(n).is_some_and(|(h, _)| applied.get(n).is_some_and(|(now, _)| now == h));
        let services = self.ctx.clusters.apply_cds(cfgs, &unchanged).await;
        let m = &self.ctx.store.manager;
        for (n, (h, _)) in &applied {
            match old.get(n) {
                None => m.cluster_added.inc(),
                Some((o, _)) if o != h => m.cluster_modified.inc(),
                Some(_) => {}
            }
        }
        m.cluster_removed.add(old.keys().filter(|n| !applied.contains_key(*n)).count() as u64);
        m.active_clusters.set(self.ctx.clusters.names().len() as i64);
        st.clusters = applied;
        self.raw.lock().insert(CLUSTER, set.clone());
        let mut eds: BTreeSet<String> = services.into_iter().collect();
        if self.ctx.istio.is_some() {
            // The mesh's workloads, for telemetry to name peers (no cluster uses it).
            eds.insert(crate::istio_metrics::WORKLOADS.to_owned());
        }
        self.wanted.lock().insert(ENDPOINT, eds);
        self.received[0].store(true, Ordering::Release);
        Ok(())
    }

    async fn apply_endpoints(&self, set: &BTreeMap<String, Resource>) -> Result<(), String> {
        // Serialised with the other types, so EDS never interleaves with a CDS update.
        let mut st = self.state.lock().await;
        let workloads = crate::istio_metrics::WORKLOADS;
        let old = &st.endpoints;
        // Only what is new or changed is decoded; the rest keeps its endpoints and peers.
        let fresh: BTreeMap<String, Resource> =
            set.iter().filter(|(n, r)| old.get(*n).is_none_or(|(h, _)| *h != r.hash)).map(|(n, r)| (n.clone(), r.clone())).collect();
        let mesh = self.ctx.istio.as_ref();
        let (out, errors) = validate_each(&fresh, "endpoints", |_, name, path, r| {
            if name == workloads {
                // Indexed as it arrived, never decoded whole (see `PeerTable`).
                let table = mesh.map(|m| m.workloads_table(r.bytes().clone())).transpose().map_err(|e| format!("{path}: {e}"))?;
                return Ok((None, Arc::new(table.unwrap_or_default())));
            }
            let j = json(r, path)?;
            let peers = Arc::new(mesh.map(|m| m.peers_of(&j)).unwrap_or_default());
            let la = weft_xds::load::from_value::<weft_xds::cluster::ClusterLoadAssignment>(j, path).map_err(|e| e.to_string())?;
            let eps = endpoints_from_wire(&la, path, &Discovery::Eds { service_name: name.to_string() }).map_err(|e| e.to_string())?;
            Ok((Some(eps), peers))
        });
        joined(errors)?;
        let mut next: HashMap<String, (u64, Arc<crate::istio_metrics::PeerSet>)> =
            set.iter().filter_map(|(n, r)| old.get(n).filter(|(h, _)| *h == r.hash).map(|e| (n.clone(), e.clone()))).collect();
        let mut assignments = HashMap::new();
        for (name, (eps, peers)) in out {
            if let Some(eps) = eps {
                assignments.insert(name.clone(), eps);
            }
            let hash = set.get(&name).map(|r| r.hash).unwrap_or_default();
            next.insert(name, (hash, peers));
        }
        // Something new or changed, or something gone.
        let peers_changed = !fresh.is_empty() || next.len() != old.len();
        self.ctx.clusters.apply_eds(assignments);
        if let (Some(mesh), true) = (mesh, peers_changed) {
            // The workloads first: they carry the service accounts the service endpoints lack.
            let first = next.get(workloads).map(|(_, p)| p);
            let mut rest: Vec<(&String, &Arc<crate::istio_metrics::PeerSet>)> =
                next.iter().filter(|(n, _)| n.as_str() != workloads).map(|(n, (_, p))| (n, p)).collect();
            rest.sort_by_key(|(n, _)| *n);
            mesh.set_peer_sets(first, rest.into_iter().map(|(_, p)| p.as_ref()));
        }
        st.endpoints = next;
        let clusters: BTreeMap<String, Resource> =
            set.iter().filter(|(n, _)| n.as_str() != workloads).map(|(n, r)| (n.clone(), r.clone())).collect();
        self.raw.lock().insert(ENDPOINT, clusters);
        self.received[1].store(true, Ordering::Release);
        Ok(())
    }

    async fn apply_routes(&self, set: &BTreeMap<String, Resource>) -> Result<(), String> {
        let mut st = self.state.lock().await;
        let (old, old_vhds, vhosts) = (&st.routes, &st.vhds_routes, &st.vhosts);
        let (tables, errors) = validate_each(set, "route", |_, name, path, r| {
            if let Some((_, t)) = old.get(name).filter(|(h, _)| *h == r.hash) {
                return Ok((old_vhds.get(name).cloned(), t.clone()));
            }
            let rc = decode::<weft_xds::route::RouteConfiguration>(r, path)?;
            if rc.vhds.is_some() {
                let t = with_vhosts(&rc, vhosts, path)?;
                return Ok((Some(Arc::new(rc)), Arc::new(t)));
            }
            RouteTable::from_wire(&rc, path, &ClusterNames::Dynamic).map(|t| (None, Arc::new(t))).map_err(|e| e.to_string())
        });
        joined(errors)?;
        st.vhds_routes = tables.iter().filter_map(|(n, (rc, _))| rc.clone().map(|rc| (n.clone(), rc))).collect();
        st.routes = tables.iter().filter_map(|(n, (_, t))| set.get(n).map(|r| (n.clone(), (r.hash, t.clone())))).collect();
        self.ctx.routes.replace(tables.into_iter().map(|(n, (_, t))| (n, t)).collect());
        self.raw.lock().insert(ROUTE, set.clone());
        if let Some(od) = self.ctx.routes.on_demand() {
            od.applied(&|alias| self.ctx.routes.resolves(alias));
        }
        self.received[3].store(true, Ordering::Release);
        Ok(())
    }

    /// VHDS: the virtual hosts fetched so far, each for the route configuration its name
    /// starts with. Every table that fetches on demand is built again with them, and any error
    /// rejects the whole update.
    async fn apply_vhosts(&self, set: &BTreeMap<String, Resource>) -> Result<(), String> {
        let mut st = self.state.lock().await;
        let held = &st.vhosts;
        let (decoded, errors) = validate_each(set, "virtual host", |_, name, path, r| {
            if let Some((_, v)) = held.get(name).filter(|(h, _)| *h == r.hash) {
                return Ok((r.hash, v.clone()));
            }
            if rds::split_alias(name).is_none() {
                return Err(format!("{path}: a VHDS resource is named <route configuration>/<virtual host>"));
            }
            decode::<weft_xds::route::VirtualHost>(r, path).map(|v| (r.hash, Arc::new(v)))
        });
        joined(errors)?;
        // A virtual host without domains is weft's control plane saying it has none for the
        // host asked (its name is what was asked): an answer, not config.
        let (refused, vhosts): (Vec<_>, Vec<_>) = decoded.into_iter().partition(|(_, (_, v))| v.domains.is_empty());
        let vhosts: HashMap<String, (u64, Arc<weft_xds::route::VirtualHost>)> = vhosts.into_iter().collect();
        let (rebuilt, errors) = {
            let mut ok = Vec::new();
            let mut errors = Vec::new();
            for (name, rc) in &st.vhds_routes {
                match with_vhosts(rc, &vhosts, &format!("route {name}")) {
                    Ok(t) => ok.push((name.clone(), Arc::new(t))),
                    Err(e) => errors.push(e),
                }
            }
            (ok, errors)
        };
        joined(errors)?;
        for (name, t) in rebuilt {
            if let Some(entry) = st.routes.get_mut(&name) {
                entry.1 = t;
            }
        }
        st.vhosts = vhosts;
        self.ctx.routes.replace(st.routes.iter().map(|(n, (_, t))| (n.clone(), t.clone())).collect());
        self.raw
            .lock()
            .insert(VIRTUAL_HOST, set.iter().filter(|(n, _)| st.vhosts.contains_key(*n)).map(|(n, r)| (n.clone(), r.clone())).collect());
        if let Some(od) = self.ctx.routes.on_demand() {
            let refused: Vec<String> = refused.into_iter().map(|(n, _)| n).collect();
            if !refused.is_empty() {
                od.refuse(&refused);
            }
            od.applied(&|alias| self.ctx.routes.resolves(alias));
        }
        self.received[type_index(VIRTUAL_HOST)].store(true, Ordering::Release);
        Ok(())
    }

    async fn apply_listeners(&self, set: &BTreeMap<String, Resource>) -> Result<(), String> {
        let mut st = self.state.lock().await;
        // 1. Validate everything.
        let held = &st.listeners;
        let (cfgs, mut errors) = validate_each(set, "listener", |i, name, path, r| {
            if self.static_listeners.iter().any(|l| l.cfg.name == name) {
                return Err(format!("listener {name:?}: a static listener of that name exists"));
            }
            if let Some(l) = held.get(name).filter(|l| l.hash == r.hash) {
                return Ok((r.hash, l.rt.cfg.clone(), l.sds.clone()));
            }
            let j = json(r, path)?;
            let mut sds = BTreeSet::new();
            crate::tls::ads_secret_names(&j, &mut sds);
            let l = weft_xds::load::from_value::<weft_xds::listener::Listener>(j, path).map_err(|e| e.to_string())?;
            let c = ListenerConfig::from_wire(&l, path, &ClusterNames::Dynamic, i).map_err(|e| e.to_string())?;
            Ok((r.hash, Arc::new(c), Arc::new(sds)))
        });
        let cfgs: BTreeMap<String, Checked> = cfgs.into_iter().collect();
        let mut bound_addrs: HashMap<SocketAddr, String> =
            self.static_listeners.iter().filter(|l| l.cfg.bind_to_port).map(|l| (l.cfg.address, l.cfg.name.clone())).collect();
        for (name, (_, c, _)) in &cfgs {
            if c.bind_to_port {
                if let Some(other) = bound_addrs.insert(c.address, name.clone()) {
                    errors.push(format!("listener {name}: address: {} is already used by listener {other:?}", c.address));
                }
            }
        }
        joined(errors)?;

        // 2. Build new generations and bind new sockets; nothing is live yet.
        let mut built: BTreeMap<String, Arc<ListenerRuntime>> = BTreeMap::new();
        let mut sockets: BTreeMap<String, TcpListener> = BTreeMap::new();
        for (name, (h, cfg, _)) in &cfgs {
            let old = st.listeners.get(name);
            if old.is_some_and(|o| o.hash == *h) {
                continue;
            }
            let rt = ListenerRuntime::build(cfg.clone(), &self.ctx, self.drain.child())
                .map_err(|e| format!("listener {name}: cannot open access log: {e}"))?;
            built.insert(name.clone(), Arc::new(rt));
            let keeps_socket = old.is_some_and(|o| o.slot.is_some() && o.rt.cfg.address == cfg.address);
            if cfg.bind_to_port && !keeps_socket {
                let sock =
                    TcpListener::bind(cfg.address).await.map_err(|e| format!("listener {name}: cannot bind {}: {e}", cfg.address))?;
                sockets.insert(name.clone(), sock);
            }
        }

        // 3. Commit.
        let mut next: BTreeMap<String, DynListener> = BTreeMap::new();
        let mut old_all = std::mem::take(&mut st.listeners);
        let m = &self.ctx.store.manager;
        for (name, (h, cfg, sds)) in cfgs {
            let old = old_all.remove(&name);
            match &old {
                None => m.listener_added.inc(),
                Some(o) if o.hash != h => m.listener_modified.inc(),
                Some(_) => {}
            }
            let Some(rt) = built.remove(&name) else {
                // Unchanged.
                if let Some(o) = old {
                    next.insert(name, o);
                }
                continue;
            };
            let mut slot = None;
            match (sockets.remove(&name), old) {
                (Some(sock), old) => {
                    let s = ListenerSlot::new(rt.clone());
                    self.listeners.register(&s);
                    tokio::spawn(accept_loop(sock, s.clone(), self.listeners.clone(), self.drain.clone()));
                    slot = Some(s);
                    if let Some(o) = old {
                        self.retire(o);
                    }
                }
                (None, Some(o)) => {
                    if let (Some(s), true) = (&o.slot, cfg.bind_to_port) {
                        s.current.store(rt.clone());
                        slot = Some(s.clone());
                        o.rt.drain.retire(self.drain_time);
                    } else {
                        self.retire(o);
                    }
                }
                (None, None) => {}
            }
            next.insert(name, DynListener { hash: h, rt, slot, sds });
        }
        for (_, gone) in old_all {
            tracing::info!(listener = %gone.rt.cfg.name, "listener removed; draining");
            m.listener_removed.inc();
            self.retire(gone);
        }
        let mut all: Vec<Arc<ListenerRuntime>> = self.static_listeners.clone();
        all.extend(next.values().map(|l| l.rt.clone()));
        m.total_listeners_active.set(all.len() as i64);
        self.listeners.all.store(Arc::new(all));
        let rds: BTreeSet<String> = next
            .values()
            .flat_map(|l| l.rt.cfg.filter_chains.iter().chain(l.rt.cfg.default_chain.iter()))
            .filter_map(|c| match &c.action {
                NetworkAction::Http(h) => match &h.routes {
                    RouteSource::Rds(n) => Some(n.clone()),
                    RouteSource::Inline(_) => None,
                },
                NetworkAction::Tcp(_) => None,
            })
            .collect();
        let sds: BTreeSet<String> = next.values().flat_map(|l| l.sds.iter().cloned()).collect();
        st.listeners = next;
        self.raw.lock().insert(LISTENER, set.clone());
        {
            let mut wanted = self.wanted.lock();
            wanted.insert(ROUTE, rds);
            wanted.insert(SECRET, sds);
        }
        self.received[type_index(LISTENER)].store(true, Ordering::Release);
        Ok(())
    }

    /// SDS over ADS: the certificates a gateway's listeners name, checked whole and then
    /// swapped in; every TLS context reads them at its next handshake.
    fn apply_secrets(&self, set: &BTreeMap<String, Resource>) -> Result<(), String> {
        let (named, errors) = validate_each(set, "secret", |_, _, path, r| {
            let s = decode::<weft_xds::tls::Secret>(r, path)?;
            crate::tls::named_secret(&s, path).map_err(|e| e.to_string())
        });
        joined(errors)?;
        crate::tls::secrets::store().set_named(named.into_iter().collect());
        // Names only: a config dump never shows a key (`dump` reads these, never the secrets).
        *self.secret_names.lock() = set.keys().cloned().collect();
        self.received[type_index(SECRET)].store(true, Ordering::Release);
        Ok(())
    }

    /// Stops a listener generation taking new connections and winds its connections down.
    fn retire(&self, l: DynListener) {
        if let Some(s) = &l.slot {
            s.close();
        }
        l.rt.drain.retire(self.drain_time);
    }
}

impl weft_xds::ads_client::Handler for Dynamic {
    fn apply<'a>(
        &'a self,
        type_url: &'static str,
        resources: &'a BTreeMap<String, Resource>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let m = &self.ctx.store.manager;
            match type_url {
                CLUSTER => {
                    let r = self.apply_clusters(resources).await;
                    if r.is_ok() { &m.cds_update_success } else { &m.cds_update_rejected }.inc();
                    r
                }
                ENDPOINT => self.apply_endpoints(resources).await,
                LISTENER => {
                    let r = self.apply_listeners(resources).await;
                    if r.is_ok() { &m.lds_update_success } else { &m.lds_update_rejected }.inc();
                    r
                }
                ROUTE => self.apply_routes(resources).await,
                SECRET => self.apply_secrets(resources),
                VIRTUAL_HOST => {
                    let r = self.apply_vhosts(resources).await;
                    if r.is_ok() { &m.vhds_update_success } else { &m.vhds_update_rejected }.inc();
                    r
                }
                NAME_TABLE => self.apply_names(resources),
                other => Err(format!("unsupported resource type {other}")),
            }
        })
    }

    fn wanted(&self, type_url: &'static str) -> BTreeSet<String> {
        if type_url == CLUSTER {
            return self.ctx.clusters.on_demand().map(|od| od.names()).unwrap_or_default();
        }
        if type_url == VIRTUAL_HOST {
            // `*`: the virtual hosts the workload used before come at once (the control plane
            // keeps its working set), and the hosts asked for since.
            return match self.ctx.routes.on_demand().filter(|_| self.ctx.routes.any_on_demand()) {
                Some(od) => std::iter::once("*".to_owned()).chain(od.names()).collect(),
                None => BTreeSet::new(),
            };
        }
        self.wanted.lock().get(type_url).cloned().unwrap_or_default()
    }

    fn connected(&self, up: bool) {
        self.ctx.store.manager.connected_state.set(i64::from(up));
        if let Some(od) = self.ctx.clusters.on_demand() {
            od.set_connected(up);
        }
        if let Some(od) = self.ctx.routes.on_demand() {
            od.set_connected(up);
        }
    }

    fn on_demand(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.ctx.clusters.on_demand().map(|od| od.subscribe.clone())
    }

    fn quiet(&self) {
        crate::memory::trim();
    }

    fn not_found(&self, type_url: &'static str, names: &[String]) {
        match type_url {
            CLUSTER => self.ctx.clusters.on_demand().map(|od| od.refuse(names)),
            VIRTUAL_HOST => self.ctx.routes.on_demand().map(|od| od.refuse(names)),
            _ => None,
        };
    }
}
