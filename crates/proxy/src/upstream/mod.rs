//! Upstream clusters: hosts and their health, load balancing, connection pools, circuit
//! breakers, outlier detection, active health checks and DNS refresh.

pub mod error;
pub mod health;
pub mod host;
pub mod lb;
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
}

impl Cluster {
    pub fn new(cfg: Arc<ClusterConfig>, store: &Store) -> Arc<Self> {
        let stats = store.cluster(cfg.stat_name());
        let hosts: Vec<Arc<Host>> = cfg
            .endpoints
            .iter()
            .filter_map(|e| match e.address {
                EndpointAddress::Ip(addr) => Some(Host::new(addr, e, &cfg)),
                EndpointAddress::Dns { .. } => None,
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
                };
                Host::new(addr, &e, &self.cfg)
            })
            .clone()
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

/// All clusters of the running config, by name.
pub struct ClusterManager {
    pub clusters: HashMap<String, Arc<Cluster>>,
}

impl ClusterManager {
    pub fn new(cfgs: &[Arc<ClusterConfig>], store: &Store) -> Arc<Self> {
        let clusters = cfgs.iter().map(|c| (c.name.clone(), Cluster::new(c.clone(), store))).collect();
        Arc::new(ClusterManager { clusters })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }

    /// Starts DNS refresh and health checking; returns once every cluster has had its first
    /// resolution and health-check round (or `deadline` passed), as Envoy's cluster warming does.
    pub async fn start(&self, deadline: Duration) {
        for c in self.clusters.values() {
            if let Some(o) = &c.cfg.outlier {
                tokio::spawn(host::outlier_interval(Arc::downgrade(c), o.interval));
            }
        }
        let mut waits = Vec::new();
        for c in self.clusters.values() {
            if let Discovery::StrictDns { refresh } | Discovery::LogicalDns { refresh } = c.cfg.discovery {
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(dns_refresh(Arc::downgrade(c), refresh, tx));
                waits.push(rx);
            }
        }
        let _ = tokio::time::timeout(deadline, futures::future::join_all(waits)).await;
        let mut waits = Vec::new();
        for c in self.clusters.values() {
            if !c.cfg.health_checks.is_empty() {
                waits.push(health::start(c.clone()));
            }
        }
        let _ = tokio::time::timeout(deadline, futures::future::join_all(waits)).await;
    }
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
