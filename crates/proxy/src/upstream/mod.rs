//! Upstream clusters: hosts and their health, load balancing, connection pools, circuit
//! breakers, outlier detection, active health checks and DNS refresh.

pub mod error;
pub mod health;
pub mod host;
pub mod lb;
pub mod on_demand;
pub mod pool;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::config::cluster::{Discovery, EndpointAddress, EndpointConfig};
use crate::config::ClusterConfig;
use crate::stats::{ClusterStats, Store};

pub use error::UpstreamError;
pub use host::Host;

/// The live hosts of a cluster; replaced whole when DNS changes membership.
pub struct HostSet {
    pub hosts: Vec<Arc<Host>>,
}

/// A cluster at run time.
pub struct Cluster {
    pub cfg: Arc<ClusterConfig>,
    pub stats: Arc<ClusterStats>,
    pub hosts: ArcSwap<HostSet>,
    /// Bumped whenever membership or any host's health changes, so LB tables are rebuilt.
    pub health_version: AtomicU64,
    lb_cache: Mutex<Option<Arc<lb::LbSnapshot>>>,
    /// ORIGINAL_DST hosts, created on demand.
    original_dst: Mutex<HashMap<SocketAddr, Arc<Host>>>,
    /// Woken when a connection slot frees up, for requests waiting in the pending queue.
    pub slot_freed: tokio::sync::Notify,
    pub retries_active: AtomicU64,
    /// Whether EDS has given this cluster its endpoints yet (always true for other kinds): an
    /// on-demand fetch waits for them.
    endpoints_known: std::sync::atomic::AtomicBool,
}

impl Cluster {
    pub fn new(cfg: Arc<ClusterConfig>, store: &Store) -> Arc<Self> {
        let stats = store.cluster(cfg.stat_name());
        let hosts: Vec<Arc<Host>> = cfg
            .endpoints
            .iter()
            .filter_map(|e| match e.address {
                EndpointAddress::Ip(addr) => Some(Host::new(addr, e, &cfg)),
                EndpointAddress::Dns { .. } | EndpointAddress::Pipe(_) => None,
            })
            .collect();
        let c = Arc::new(Cluster {
            stats,
            hosts: ArcSwap::from_pointee(HostSet { hosts }),
            health_version: AtomicU64::new(1),
            lb_cache: Mutex::new(None),
            original_dst: Mutex::new(HashMap::new()),
            slot_freed: tokio::sync::Notify::new(),
            retries_active: AtomicU64::new(0),
            endpoints_known: std::sync::atomic::AtomicBool::new(!matches!(cfg.discovery, Discovery::Eds { .. })),
            cfg,
        });
        c.update_membership_stats();
        c
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn health_changed(&self) {
        self.health_version.fetch_add(1, Ordering::Release);
        self.update_membership_stats();
    }

    fn update_membership_stats(&self) {
        let hosts = self.hosts.load();
        self.stats.membership_total.set(hosts.hosts.len() as i64);
        self.stats.membership_healthy.set(hosts.hosts.iter().filter(|h| h.is_healthy()).count() as i64);
        self.stats.ejections_active.set(hosts.hosts.iter().filter(|h| h.is_ejected()).count() as i64);
    }

    /// The current LB snapshot, rebuilt if health or membership changed.
    pub fn lb_snapshot(&self) -> Arc<lb::LbSnapshot> {
        let v = self.health_version.load(Ordering::Acquire);
        let mut cache = self.lb_cache.lock();
        if let Some(s) = cache.as_ref() {
            if s.version == v {
                return s.clone();
            }
        }
        let snap = Arc::new(lb::LbSnapshot::build(&self.cfg, &self.hosts.load().hosts, v));
        *cache = Some(snap.clone());
        snap
    }

    /// The host for an ORIGINAL_DST cluster.
    pub fn original_dst_host(&self, addr: SocketAddr) -> Arc<Host> {
        let mut m = self.original_dst.lock();
        m.entry(addr)
            .or_insert_with(|| {
                let e = EndpointConfig {
                    address: EndpointAddress::Ip(addr),
                    weight: 1,
                    priority: 0,
                    declared_unhealthy: false,
                    health_check_port: None,
                    socket_match: Default::default(),
                };
                Host::new(addr, &e, &self.cfg)
            })
            .clone()
    }

    /// Replaces EDS membership, keeping hosts (and their pools, health and outlier state)
    /// whose address, weight and priority are unchanged.
    pub fn set_endpoints(&self, eps: &[EndpointConfig]) {
        self.endpoints_known.store(true, Ordering::Release);
        let current = self.hosts.load();
        let mut next = Vec::with_capacity(eps.len());
        for e in eps {
            let EndpointAddress::Ip(addr) = e.address else { continue };
            let tls = self.cfg.tls_for(&e.socket_match);
            let same_tls = |h: &Host| match (&h.tls, &tls) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            match current.hosts.iter().find(|h| h.addr == addr && h.weight == e.weight && h.priority == e.priority && same_tls(h)) {
                Some(h) if h.is_declared_unhealthy() == e.declared_unhealthy => next.push(h.clone()),
                _ => next.push(Host::new(addr, e, &self.cfg)),
            }
        }
        let same = next.len() == current.hosts.len() && next.iter().zip(current.hosts.iter()).all(|(a, b)| Arc::ptr_eq(a, b));
        if !same {
            self.hosts.store(Arc::new(HostSet { hosts: next }));
            self.health_changed();
        }
    }

    /// Replaces DNS-resolved membership, keeping hosts (and their pools) that remain.
    pub fn set_resolved(&self, addrs: Vec<(SocketAddr, EndpointConfig)>) {
        let current = self.hosts.load();
        let mut next = Vec::new();
        let mut changed = current.hosts.len() != addrs.len();
        for (addr, e) in addrs {
            match current.hosts.iter().find(|h| h.addr == addr) {
                Some(h) => next.push(h.clone()),
                None => {
                    changed = true;
                    next.push(Host::new(addr, &e, &self.cfg));
                }
            }
        }
        if changed {
            self.hosts.store(Arc::new(HostSet { hosts: next }));
            self.health_changed();
        }
    }
}

/// All clusters, by name: the bootstrap's static ones, and those CDS adds, replaces and
/// removes at run time. Lookups see one consistent map; a replaced cluster keeps serving the
/// requests that already hold it.
pub struct ClusterManager {
    clusters: ArcSwap<HashMap<String, Arc<Cluster>>>,
    static_names: std::collections::HashSet<String>,
    store: Arc<Store>,
    /// The last endpoints EDS gave per service name, so a cluster that CDS replaces starts
    /// with them instead of empty.
    assignments: Mutex<HashMap<String, Arc<Vec<EndpointConfig>>>>,
    /// Set when the proxy fetches service clusters on first use (`on_demand`).
    on_demand: std::sync::OnceLock<Arc<on_demand::OnDemand>>,
}

/// How long a new cluster may take to warm (first DNS answer, first health-check round).
const WARM_DEADLINE: Duration = Duration::from_secs(15);

impl ClusterManager {
    pub fn new(cfgs: &[Arc<ClusterConfig>], store: &Arc<Store>) -> Arc<Self> {
        let clusters = cfgs.iter().map(|c| (c.name.clone(), Cluster::new(c.clone(), store))).collect();
        Arc::new(ClusterManager {
            clusters: ArcSwap::from_pointee(clusters),
            static_names: cfgs.iter().map(|c| c.name.clone()).collect(),
            store: store.clone(),
            assignments: Mutex::new(HashMap::new()),
            on_demand: std::sync::OnceLock::new(),
        })
    }

    /// Turns on on-demand discovery of service clusters (a proxy fed over ADS).
    pub fn enable_on_demand(&self, od: Arc<on_demand::OnDemand>) {
        let _ = self.on_demand.set(od);
    }

    pub fn on_demand(&self) -> Option<&Arc<on_demand::OnDemand>> {
        self.on_demand.get()
    }

    /// The cluster `name` once it can take traffic: held, and for an EDS cluster with its
    /// endpoints received.
    fn ready(&self, name: &str) -> Option<Arc<Cluster>> {
        self.get(name).filter(|c| c.endpoints_known.load(Ordering::Acquire))
    }

    /// The cluster `name`, fetched from the control plane first if it is a service cluster
    /// this proxy has not used yet (see `on_demand`). Waits at most the fetch deadline.
    pub async fn get_or_fetch(&self, name: &str) -> Result<Arc<Cluster>, on_demand::Missing> {
        use on_demand::Missing;
        let Some(od) = self.on_demand.get().filter(|_| on_demand::is_lazy(name)) else {
            return self.get(name).ok_or_else(|| Missing::Unknown(name.to_owned()));
        };
        if let Some(c) = self.ready(name) {
            return Ok(c);
        }
        let mut changes = od.watch();
        if od.ask(name) {
            self.store.manager.on_demand_requested.inc();
            tracing::debug!(cluster = name, "fetching a cluster on first use");
        }
        let deadline = tokio::time::Instant::now() + od.deadline();
        loop {
            if let Some(c) = self.ready(name) {
                return Ok(c);
            }
            let failed = if od.is_refused(name) {
                Missing::NotFound(name.to_owned())
            } else if !od.is_connected() {
                Missing::Unreachable(name.to_owned())
            } else if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                Missing::Timeout { name: name.to_owned(), deadline: od.deadline() }
            } else {
                continue;
            };
            // An EDS cluster that arrived without endpoints still serves (no healthy upstream)
            // rather than being reported as missing.
            if let Some(c) = self.get(name) {
                return Ok(c);
            }
            od.give_up(name);
            self.store.manager.on_demand_failed.inc();
            return Err(failed);
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.load().get(name).cloned()
    }

    /// Every cluster right now.
    pub fn all(&self) -> Arc<HashMap<String, Arc<Cluster>>> {
        self.clusters.load_full()
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.clusters.load().keys().cloned().collect();
        v.sort();
        v
    }

    pub fn is_static(&self, name: &str) -> bool {
        self.static_names.contains(name)
    }

    /// Starts DNS refresh and health checking for every cluster; returns once each has had
    /// its first resolution and health-check round (or the deadline passed), as Envoy's
    /// cluster warming does.
    pub async fn start(&self) {
        let all: Vec<Arc<Cluster>> = self.clusters.load().values().cloned().collect();
        warm(&all).await;
    }

    /// Makes `wanted` the set of dynamic clusters (state-of-the-world CDS): clusters whose
    /// config is unchanged are kept as they are (hosts, pools, health); changed ones are
    /// replaced and warmed before they take traffic; the rest are removed. Static clusters
    /// cannot be replaced. Returns the EDS service names now wanted.
    pub async fn apply_cds(&self, wanted: Vec<Arc<ClusterConfig>>, unchanged: &(dyn Fn(&str) -> bool + Sync)) -> Vec<String> {
        let current = self.clusters.load_full();
        let mut next: HashMap<String, Arc<Cluster>> =
            current.iter().filter(|(n, _)| self.static_names.contains(*n)).map(|(n, c)| (n.clone(), c.clone())).collect();
        let mut fresh = Vec::new();
        for cfg in wanted {
            if self.static_names.contains(&cfg.name) {
                continue;
            }
            match current.get(&cfg.name) {
                Some(c) if unchanged(&cfg.name) => {
                    next.insert(cfg.name.clone(), c.clone());
                }
                _ => {
                    let c = Cluster::new(cfg.clone(), &self.store);
                    if let Discovery::Eds { service_name } = &cfg.discovery {
                        if let Some(eps) = self.assignments.lock().get(service_name).cloned() {
                            c.set_endpoints(&eps);
                        }
                    }
                    fresh.push(c.clone());
                    next.insert(cfg.name.clone(), c);
                }
            }
        }
        warm(&fresh).await;
        let services = eds_services(next.values());
        self.assignments.lock().retain(|k, _| services.contains(k));
        self.clusters.store(Arc::new(next));
        if let Some(od) = self.on_demand.get() {
            let now = self.clusters.load();
            od.applied(&|n| now.contains_key(n));
        }
        services
    }

    /// Applies EDS: the endpoints of every cluster whose service name is in `assignments`.
    pub fn apply_eds(&self, assignments: HashMap<String, Vec<EndpointConfig>>) {
        let clusters = self.clusters.load();
        let mut stored = self.assignments.lock();
        for (service, eps) in assignments {
            let eps = Arc::new(eps);
            for c in clusters.values() {
                if matches!(&c.cfg.discovery, Discovery::Eds { service_name } if *service_name == service) {
                    c.set_endpoints(&eps);
                }
            }
            stored.insert(service, eps);
        }
        drop(stored);
        if let Some(od) = self.on_demand.get() {
            od.bump();
        }
    }
}

fn eds_services<'a>(clusters: impl Iterator<Item = &'a Arc<Cluster>>) -> Vec<String> {
    let mut v: Vec<String> = clusters
        .filter_map(|c| match &c.cfg.discovery {
            Discovery::Eds { service_name } => Some(service_name.clone()),
            _ => None,
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

async fn warm(clusters: &[Arc<Cluster>]) {
    for c in clusters {
        if let Some(o) = &c.cfg.outlier {
            tokio::spawn(host::outlier_interval(Arc::downgrade(c), o.interval));
        }
    }
    let mut waits = Vec::new();
    for c in clusters {
        if let Discovery::StrictDns { refresh } | Discovery::LogicalDns { refresh } = c.cfg.discovery {
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(dns_refresh(Arc::downgrade(c), refresh, tx));
            waits.push(rx);
        }
    }
    let _ = tokio::time::timeout(WARM_DEADLINE, futures::future::join_all(waits)).await;
    let mut waits = Vec::new();
    for c in clusters {
        if !c.cfg.health_checks.is_empty() {
            waits.push(health::start(c.clone()));
        }
    }
    let _ = tokio::time::timeout(WARM_DEADLINE, futures::future::join_all(waits)).await;
}

async fn resolve(cfg: &ClusterConfig) -> Vec<(SocketAddr, EndpointConfig)> {
    let mut out = Vec::new();
    let logical = matches!(cfg.discovery, Discovery::LogicalDns { .. });
    for e in &cfg.endpoints {
        let EndpointAddress::Dns { host, port } = &e.address else { continue };
        match tokio::net::lookup_host((host.as_str(), *port)).await {
            Ok(addrs) => {
                let mut addrs: Vec<SocketAddr> = addrs.collect();
                // Envoy's default lookup family AUTO prefers IPv6 only when there is no IPv4;
                // weft prefers IPv4 the same way for predictability on dual-stack loopback.
                addrs.sort_by_key(|a| a.is_ipv6());
                addrs.dedup();
                if logical {
                    addrs.truncate(1);
                }
                out.extend(addrs.into_iter().map(|a| (a, e.clone())));
            }
            Err(err) => tracing::warn!(cluster = %cfg.name, %host, error = %err, "DNS resolution failed"),
        }
    }
    out
}

async fn dns_refresh(cluster: std::sync::Weak<Cluster>, every: Duration, first: tokio::sync::oneshot::Sender<()>) {
    let mut first = Some(first);
    loop {
        let Some(c) = cluster.upgrade() else { return };
        c.stats.update_attempt.inc();
        let resolved = resolve(&c.cfg).await;
        if resolved.is_empty() && !c.cfg.endpoints.is_empty() {
            c.stats.update_failure.inc();
        } else {
            c.stats.update_success.inc();
        }
        // Keep the last good membership when resolution fails entirely.
        if !resolved.is_empty() || c.hosts.load().hosts.is_empty() {
            c.set_resolved(resolved);
        }
        drop(c);
        if let Some(tx) = first.take() {
            let _ = tx.send(());
        }
        tokio::time::sleep(every).await;
    }
}
