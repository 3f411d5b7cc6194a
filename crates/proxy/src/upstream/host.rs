//! One upstream host: its health flags, outlier-detection state, request counts and pool.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::pool::Pool;
use super::Cluster;
use crate::config::cluster::EndpointConfig;
use crate::config::ClusterConfig;
use crate::tls::ClientTls;

const FAILED_ACTIVE_HC: u8 = 1;
const FAILED_OUTLIER: u8 = 2;
const DECLARED_UNHEALTHY: u8 = 4;

#[derive(Default)]
struct OutlierState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejected_at: Option<Instant>,
    ejection_time: Duration,
    times_ejected: u32,
}

pub struct Host {
    pub addr: SocketAddr,
    pub weight: u32,
    pub priority: u32,
    pub health_check_port: Option<u16>,
    flags: AtomicU8,
    pub active_requests: AtomicU64,
    pub rq_total: AtomicU64,
    pub rq_success: AtomicU64,
    pub rq_error: AtomicU64,
    pub cx_active: AtomicU64,
    outlier: Mutex<OutlierState>,
    pub pool: Pool,
    /// The TLS this host is reached with (the cluster's, or a transport socket match's).
    pub tls: Option<Arc<ClientTls>>,
}

/// What a finished request tells outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    /// Connect failure, reset or timeout: counts as a gateway error (and as a 5xx when local
    /// origin errors are not split, Envoy's default).
    LocalFailure,
}

impl Host {
    pub fn new(addr: SocketAddr, e: &EndpointConfig, cfg: &ClusterConfig) -> Arc<Host> {
        let mut flags = 0;
        if !cfg.health_checks.is_empty() {
            // Envoy: hosts of a health-checked cluster start failed until the first check passes.
            flags |= FAILED_ACTIVE_HC;
        }
        if e.declared_unhealthy {
            flags |= DECLARED_UNHEALTHY;
        }
        Arc::new(Host {
            addr,
            weight: e.weight,
            priority: e.priority,
            health_check_port: e.health_check_port,
            flags: AtomicU8::new(flags),
            active_requests: AtomicU64::new(0),
            rq_total: AtomicU64::new(0),
            rq_success: AtomicU64::new(0),
            rq_error: AtomicU64::new(0),
            cx_active: AtomicU64::new(0),
            outlier: Mutex::new(OutlierState::default()),
            pool: Pool::default(),
            tls: cfg.tls_for(&e.socket_match),
        })
    }

    pub fn is_declared_unhealthy(&self) -> bool {
        self.flags.load(Ordering::Acquire) & DECLARED_UNHEALTHY != 0
    }

    pub fn is_healthy(&self) -> bool {
        self.flags.load(Ordering::Acquire) == 0
    }

    pub fn is_ejected(&self) -> bool {
        self.flags.load(Ordering::Acquire) & FAILED_OUTLIER != 0
    }

    pub fn failed_active_hc(&self) -> bool {
        self.flags.load(Ordering::Acquire) & FAILED_ACTIVE_HC != 0
    }

    /// Envoy's `/clusters` health flags text.
    pub fn health_flags(&self) -> String {
        let f = self.flags.load(Ordering::Acquire);
        let mut parts = Vec::new();
        if f & FAILED_ACTIVE_HC != 0 {
            parts.push("/failed_active_hc");
        }
        if f & FAILED_OUTLIER != 0 {
            parts.push("/failed_outlier_check");
        }
        if f & DECLARED_UNHEALTHY != 0 {
            parts.push("/failed_eds_health");
        }
        if parts.is_empty() {
            "healthy".into()
        } else {
            parts.concat()
        }
    }

    /// Sets or clears the active-health-check failure; returns whether it changed.
    pub fn set_active_hc_failed(&self, failed: bool) -> bool {
        let prev = if failed {
            self.flags.fetch_or(FAILED_ACTIVE_HC, Ordering::AcqRel)
        } else {
            self.flags.fetch_and(!FAILED_ACTIVE_HC, Ordering::AcqRel)
        };
        (prev & FAILED_ACTIVE_HC != 0) != failed
    }

    /// Feeds outlier detection; ejects at once when a consecutive threshold is reached.
    pub fn report(&self, outcome: Outcome, cluster: &Cluster) {
        let Some(cfg) = &cluster.cfg.outlier else { return };
        let (is_5xx, is_gateway) = match outcome {
            Outcome::Status(s) => (s >= 500, matches!(s, 502..=504)),
            Outcome::LocalFailure => (true, true),
        };
        let mut st = self.outlier.lock();
        if !is_5xx {
            st.consecutive_5xx = 0;
            st.consecutive_gateway = 0;
            return;
        }
        st.consecutive_5xx += 1;
        if is_gateway {
            st.consecutive_gateway += 1;
        } else {
            st.consecutive_gateway = 0;
        }
        let mut eject_for = None;
        if cfg.consecutive_gateway_failure > 0 && st.consecutive_gateway >= cfg.consecutive_gateway_failure {
            st.consecutive_gateway = 0;
            if rand::random::<u32>() % 100 < cfg.enforcing_consecutive_gateway_failure {
                eject_for = Some(false);
            }
        }
        if eject_for.is_none() && cfg.consecutive_5xx > 0 && st.consecutive_5xx >= cfg.consecutive_5xx {
            st.consecutive_5xx = 0;
            if rand::random::<u32>() % 100 < cfg.enforcing_consecutive_5xx {
                eject_for = Some(true);
            }
        }
        let Some(by_5xx) = eject_for else { return };
        if self.is_ejected() {
            return;
        }
        let hosts = cluster.hosts.load();
        let total = hosts.hosts.len().max(1) as u64;
        let ejected = hosts.hosts.iter().filter(|h| h.is_ejected()).count() as u64;
        // Envoy always allows ejecting one host, then stops at max_ejection_percent.
        if ejected > 0 && ejected * 100 / total >= u64::from(cfg.max_ejection_percent) {
            cluster.stats.ejections_overflow.inc();
            return;
        }
        st.times_ejected += 1;
        st.ejected_at = Some(Instant::now());
        st.ejection_time = (cfg.base_ejection_time * st.times_ejected).min(cfg.max_ejection_time);
        drop(st);
        self.flags.fetch_or(FAILED_OUTLIER, Ordering::AcqRel);
        cluster.stats.ejections_enforced_total.inc();
        if by_5xx {
            cluster.stats.ejections_enforced_consecutive_5xx.inc();
        } else {
            cluster.stats.ejections_enforced_consecutive_gateway_failure.inc();
        }
        tracing::info!(cluster = %cluster.name(), host = %self.addr, "outlier detection: host ejected");
        cluster.health_changed();
    }

    /// Called on the outlier interval: returns the host to service once its ejection expired.
    pub fn maybe_uneject(&self, now: Instant) -> bool {
        let mut st = self.outlier.lock();
        match st.ejected_at {
            Some(at) if now.duration_since(at) >= st.ejection_time => {
                st.ejected_at = None;
                drop(st);
                self.flags.fetch_and(!FAILED_OUTLIER, Ordering::AcqRel);
                true
            }
            _ => false,
        }
    }
}

/// Runs the outlier-detection interval timer for a cluster (un-ejection happens on ticks).
pub async fn outlier_interval(cluster: std::sync::Weak<Cluster>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(c) = cluster.upgrade() else { return };
        let now = Instant::now();
        let mut changed = false;
        for h in &c.hosts.load().hosts {
            changed |= h.maybe_uneject(now);
        }
        if changed {
            c.health_changed();
        }
    }
}
