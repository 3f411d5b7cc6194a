//! On-demand cluster discovery: a sidecar fed over ADS is sent the clusters of the services it
//! has used, not the whole mesh's. A route or TCP proxy naming a service cluster the proxy
//! does not hold yet asks the control plane for it (the name joins the CDS subscription next
//! to `*`, as Envoy's on-demand CDS subscribes) and waits, bounded, until the cluster and its
//! endpoints have arrived. A name the control plane does not have, a control plane that is
//! away, or no answer within the deadline fails that request with the reason, as Envoy answers
//! for an unknown cluster; nothing is retried behind the caller's back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

/// Clusters fetched on demand are the mesh's service clusters; everything else (inbound,
/// passthrough, collectors) comes with the wildcard subscription.
pub fn is_lazy(name: &str) -> bool {
    name.starts_with("outbound|")
}

/// How long a request waits for a cluster it caused to be fetched (Envoy's on-demand CDS
/// default is 5 s as well).
pub const FETCH_DEADLINE: Duration = Duration::from_secs(5);

/// Refusals remembered at most (names the control plane said it does not have).
const MAX_REFUSED: usize = 4096;

/// Why a cluster could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    #[error("no cluster {0:?}")]
    Unknown(String),
    #[error("cluster {0:?} is not known to the control plane (not in the mesh, or outside this proxy's Sidecar egress hosts)")]
    NotFound(String),
    #[error("cluster {0:?} is not held yet and the control plane is unreachable, so it cannot be fetched")]
    Unreachable(String),
    #[error("cluster {name:?} was asked of the control plane and did not arrive within {}s", deadline.as_secs())]
    Timeout { name: String, deadline: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Asked for, not received yet.
    Pending,
    /// Received at least once.
    Held,
}

/// The proxy's side of on-demand discovery, shared by the cluster manager (which asks) and the
/// ADS handler (which subscribes and reports what arrived).
pub struct OnDemand {
    wanted: Mutex<BTreeMap<String, Want>>,
    /// Names the control plane said it does not have, and when, until asked for again.
    refused: Mutex<BTreeMap<String, Instant>>,
    /// Wakes the ADS client to send the changed subscription.
    pub subscribe: Arc<Notify>,
    /// Bumped whenever clusters or endpoints are applied, a name is refused or the connection
    /// changes: waiters re-check.
    changed: watch::Sender<u64>,
    connected: AtomicBool,
    deadline: Duration,
}

impl OnDemand {
    pub fn new(deadline: Duration) -> Arc<OnDemand> {
        Self::with_notify(deadline, Arc::new(Notify::new()))
    }

    /// One whose subscription changes wake `subscribe`: the virtual hosts' and the clusters'
    /// share the ADS client's one wake-up.
    pub fn with_notify(deadline: Duration, subscribe: Arc<Notify>) -> Arc<OnDemand> {
        Arc::new(OnDemand {
            wanted: Mutex::default(),
            refused: Mutex::default(),
            subscribe,
            changed: watch::channel(0).0,
            connected: AtomicBool::new(false),
            deadline,
        })
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The names to subscribe to next to the wildcard.
    pub fn names(&self) -> BTreeSet<String> {
        self.wanted.lock().keys().cloned().collect()
    }

    /// Asks for `name`; returns whether it is new to the subscription.
    pub fn ask(&self, name: &str) -> bool {
        self.refused.lock().remove(name);
        let fresh = self.wanted.lock().insert(name.to_owned(), Want::Pending).is_none();
        if fresh {
            self.subscribe.notify_one();
        }
        fresh
    }

    /// Whether `name` is asked for or held (a refusal takes it out).
    pub fn is_wanted(&self, name: &str) -> bool {
        self.wanted.lock().contains_key(name)
    }

    /// How many names are asked for and not received yet.
    pub fn pending(&self) -> usize {
        self.wanted.lock().values().filter(|w| **w == Want::Pending).count()
    }

    /// Stops asking for `name` (it never arrived).
    pub fn give_up(&self, name: &str) {
        let mut w = self.wanted.lock();
        if w.get(name) == Some(&Want::Pending) {
            w.remove(name);
        }
    }

    pub fn is_refused(&self, name: &str) -> bool {
        self.refused.lock().contains_key(name)
    }

    /// Whether the control plane refused `name` less than `within` ago: not worth asking again
    /// yet (a service added to the mesh since is found once this has passed).
    pub fn refused_within(&self, name: &str, within: Duration) -> bool {
        self.refused.lock().get(name).is_some_and(|at| at.elapsed() < within)
    }

    /// The control plane says it has none of `names` for this proxy.
    pub fn refuse(&self, names: &[String]) {
        let mut w = self.wanted.lock();
        let mut r = self.refused.lock();
        for n in names {
            if w.get(n) == Some(&Want::Pending) {
                w.remove(n);
                // Bounded: an application naming ever new hosts must not grow the proxy. The
                // oldest refusals go first; a forgotten one costs one more question.
                if r.len() >= MAX_REFUSED {
                    let mut ages: Vec<Instant> = r.values().copied().collect();
                    ages.sort_unstable();
                    let cut = ages[ages.len() / 2];
                    r.retain(|_, at| *at > cut);
                }
                r.insert(n.clone(), Instant::now());
            }
        }
        drop((w, r));
        self.bump();
    }

    /// An update was applied after which `present` says which names are held (the dynamic
    /// clusters; the hosts the route tables name). Names that arrived are held; held names that
    /// are gone (the service left the mesh) are dropped from the subscription, and will be
    /// asked for again if something uses them.
    pub fn applied(&self, present: &dyn Fn(&str) -> bool) {
        let mut w = self.wanted.lock();
        w.retain(|n, state| match (present(n), *state) {
            (true, _) => {
                *state = Want::Held;
                true
            }
            (false, Want::Held) => false,
            (false, Want::Pending) => true,
        });
        drop(w);
        self.bump();
    }

    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
        self.bump();
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_name_that_disappears_leaves_the_subscription_and_a_pending_one_stays() {
        let od = OnDemand::new(FETCH_DEADLINE);
        assert!(od.ask("outbound|80||a"));
        assert!(!od.ask("outbound|80||a"), "asked once");
        od.ask("outbound|80||b");
        od.applied(&|n| n == "outbound|80||a");
        assert_eq!(od.names().len(), 2, "b is still pending");
        od.applied(&|_| false);
        assert_eq!(od.names(), BTreeSet::from(["outbound|80||b".to_owned()]), "a was held and is gone");
        od.refuse(&["outbound|80||b".to_owned()]);
        assert!(od.names().is_empty());
        assert!(od.is_refused("outbound|80||b"));
        od.ask("outbound|80||b");
        assert!(!od.is_refused("outbound|80||b"), "asking again clears the refusal");
    }
}
