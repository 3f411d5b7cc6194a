//! The config the control plane serves right now, and what each connected proxy has of it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::Serialize;
use weft_api::mesh::MeshConfig;
use weft_api::Diagnostic;

use crate::model::Model;
use crate::store::Snapshot;

/// One immutable generation of the mesh config.
pub struct MeshState {
    pub version: u64,
    pub model: Model,
    pub diagnostics: Vec<Diagnostic>,
    /// What `weft analyze` says about this config (the diagnostics plus the analyzers'), for
    /// the dashboard.
    pub findings: Vec<Diagnostic>,
    /// Generated config shared between proxies, for this version.
    pub cache: crate::push::Cache,
}

impl MeshState {
    /// `previous`: the version this one replaces, whose encoded resources are reused where
    /// unchanged.
    pub fn new(version: u64, snapshot: Snapshot, mesh: MeshConfig, previous: Option<&MeshState>) -> MeshState {
        let model = Model::build_with_pods(&snapshot.objects, &snapshot.pods, mesh);
        let findings = crate::analyze::analyze(&snapshot, &model);
        let cache = crate::push::Cache::new(&model, previous.map(|p| &p.cache));
        MeshState { version, model, diagnostics: snapshot.diagnostics, findings, cache }
    }
}

/// How far a proxy has got with one resource type.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    /// Version of the last response sent, if any.
    pub sent_version: Option<String>,
    pub sent_nonce: Option<String>,
    /// Version the proxy last ACKed.
    pub acked_version: Option<String>,
    /// The proxy's error for the last response it rejected, until it ACKs a later one.
    pub nack: Option<String>,
    pub resources: usize,
}

impl TypeStatus {
    /// istioctl's words: SYNCED, NOT SENT, STALE (sent, not ACKed yet), NACKED.
    pub fn state(&self) -> &'static str {
        match (&self.sent_nonce, &self.nack) {
            (_, Some(_)) => "NACKED",
            (None, None) => "NOT SENT",
            (Some(_), None) if self.acked_version.is_some() && self.acked_version == self.sent_version => "SYNCED",
            _ => "STALE",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProxyStatus {
    pub proxy: String,
    pub node_id: String,
    pub connection: u64,
    pub delta: bool,
    pub connected_at: u64,
    /// Keyed by the short type name (CDS, EDS, LDS, RDS).
    pub types: BTreeMap<String, TypeStatus>,
    #[serde(skip)]
    pub last_config: Option<crate::push::ProxyConfig>,
    /// What its CDS subscription covers (an on-demand proxy holds only what it asked for).
    #[serde(skip)]
    pub clusters: Option<crate::push::Sel>,
    /// What its VHDS subscription covers (the virtual hosts an on-demand proxy used).
    #[serde(skip)]
    pub virtual_hosts: Option<crate::push::Sel>,
}

/// Large pushes in flight at once: enough to keep both directions of a few dozen streams busy,
/// few enough that their buffers stay a small multiple of one proxy's config.
const PUSH_SLOTS: usize = 64;

/// Shared by the ADS connections, the file watcher and the debug endpoints.
pub struct Shared {
    pub current: tokio::sync::watch::Sender<Arc<MeshState>>,
    /// The MeshConfig the next push is built with; a changed mesh file replaces it.
    mesh: parking_lot::RwLock<MeshConfig>,
    pub proxies: Mutex<BTreeMap<u64, ProxyStatus>>,
    /// Slots for large pushes in flight (sent, not yet answered); see `ads::Conn::admit`.
    pub push_slots: Arc<tokio::sync::Semaphore>,
    /// The certificate authority's counters (zero when it does not run).
    pub ca_stats: Arc<crate::ca::service::CaStats>,
    /// Whether a gateway's TLS secrets may go to a proxy on the unauthenticated plaintext
    /// port: only without an API server, where they come from files on this machine (see
    /// ARCHITECTURE.md). Otherwise only an authenticated caller of their namespace gets them.
    pub plaintext_secrets: bool,
    /// The service graph, from the proxies' Istio metrics (`graph`).
    pub graph: Arc<crate::graph::Graph>,
    /// The service clusters each workload's proxies fetched on demand (`ads`), so a proxy
    /// that restarts, or a new replica, is sent them at once. Keyed by namespace, service
    /// account and app; names the mesh no longer has are pruned when next looked at.
    pub working_sets: Mutex<std::collections::HashMap<String, std::collections::BTreeSet<Arc<str>>>>,
    /// Where the graph comes from instead of the control plane's own scrapes.
    pub prometheus: parking_lot::RwLock<Option<crate::graph::Prometheus>>,
    next_conn: AtomicU64,
    next_version: AtomicU64,
}

impl Shared {
    pub fn new(snapshot: Snapshot, mesh: MeshConfig, plaintext_secrets: bool) -> Arc<Shared> {
        let state = Arc::new(MeshState::new(1, snapshot, mesh.clone(), None));
        let (tx, _) = tokio::sync::watch::channel(state);
        Arc::new(Shared {
            current: tx,
            mesh: parking_lot::RwLock::new(mesh),
            proxies: Mutex::new(BTreeMap::new()),
            push_slots: Arc::new(tokio::sync::Semaphore::new(PUSH_SLOTS)),
            ca_stats: Default::default(),
            plaintext_secrets,
            graph: Arc::default(),
            working_sets: Mutex::default(),
            prometheus: parking_lot::RwLock::new(None),
            next_conn: AtomicU64::new(1),
            next_version: AtomicU64::new(2),
        })
    }

    /// The MeshConfig in force.
    pub fn mesh(&self) -> MeshConfig {
        self.mesh.read().clone()
    }

    /// Replaces the MeshConfig; the next publish uses it.
    pub fn set_mesh(&self, mesh: MeshConfig) {
        *self.mesh.write() = mesh;
    }

    /// Publishes a new snapshot to every connection.
    pub fn publish(&self, snapshot: Snapshot) {
        let version = self.next_version.fetch_add(1, Ordering::Relaxed);
        log_diagnostics(&snapshot.diagnostics);
        let previous = self.current.borrow().clone();
        let state = MeshState::new(version, snapshot, self.mesh(), Some(&previous));
        tracing::info!(version, services = state.model.services.len(), "config changed; pushing");
        self.current.send_replace(Arc::new(state));
    }

    pub fn connection_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Puts a snapshot's diagnostics in the log: errors (resources left out) and warnings.
pub fn log_diagnostics(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        match d.level {
            // Said apart from other errors: the config meant to restrict traffic, and does not.
            weft_api::Level::Error if d.is_unenforced_security() => tracing::error!("NOT ENFORCED: {d}"),
            weft_api::Level::Error => tracing::error!("rejected: {d}"),
            weft_api::Level::Warning => tracing::warn!("{d}"),
        }
    }
}
