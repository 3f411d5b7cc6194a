//! Running the control plane: load the config dir, watch it, serve ADS and the debug API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use weft_api::mesh::MeshConfig;

use crate::ads::Ads;
use crate::state::Shared;
use crate::store;
use crate::wire::AdsService;

pub struct Options {
    /// The MeshConfig file `mesh` came from, watched: a change (a ConfigMap volume updated by
    /// the kubelet, an edit) reaches the next push, as istiod follows its mesh file.
    pub mesh_path: Option<PathBuf>,
    /// A directory of resources, watched; `None` when the API server is the only source.
    pub config_dir: Option<PathBuf>,
    /// The API server as a source (with or without a directory).
    pub kube: Option<weft_kube::Client>,
    /// On Kubernetes: the control plane's namespace, this replica's name and its revision, for
    /// the leader Lease and the webhook configurations it keeps the root in.
    pub cluster: ClusterIdentity,
    pub mesh: MeshConfig,
    pub xds_addr: SocketAddr,
    pub debug_addr: SocketAddr,
    pub debounce: Duration,
    /// The certificate authority, and the TLS port serving it next to xDS.
    pub ca: Option<CaOptions>,
    /// Start even when the config holds resources that would restrict traffic but that weft
    /// does not enforce (AuthorizationPolicy, …). Without it such a config is refused.
    pub allow_unenforced_security: bool,
    /// The service graph asks this Prometheus instead of scraping the proxies itself.
    pub prometheus: Option<crate::graph::Prometheus>,
    /// Scrape the connected proxies' metrics (`<proxy IP>:15090`) for the service graph when
    /// no Prometheus is given. Off by default: an embedding or a test with made-up proxy
    /// addresses must not send traffic to them; `weft control-plane` turns it on.
    pub scrape_proxies: bool,
}

impl Default for Options {
    /// Nothing to read, nothing but defaults, xDS and debug on ephemeral loopback ports (what a
    /// test or an embedding starts from).
    fn default() -> Options {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Options {
            mesh_path: None,
            config_dir: None,
            kube: None,
            cluster: ClusterIdentity::default(),
            mesh: MeshConfig::default(),
            xds_addr: loopback,
            debug_addr: loopback,
            debounce: Duration::from_millis(50),
            ca: None,
            allow_unenforced_security: false,
            prometheus: None,
            scrape_proxies: false,
        }
    }
}

/// Who this control-plane replica is on a cluster.
#[derive(Debug, Clone)]
pub struct ClusterIdentity {
    pub namespace: String,
    pub replica: String,
    pub revision: String,
}

impl Default for ClusterIdentity {
    fn default() -> Self {
        ClusterIdentity { namespace: "istio-system".into(), replica: format!("weft-{}", std::process::id()), revision: "default".into() }
    }
}

/// The CA's root of trust, who may ask it for certificates, and where it is served.
#[derive(Debug, Clone)]
pub struct CaOptions {
    /// Istio's `cacerts` layout; a root is generated and saved here when it holds none.
    pub dir: PathBuf,
    /// Bootstrap token files, one per workload; on Kubernetes pods' tokens are checked with the
    /// API server instead (or as well).
    pub token_dir: Option<PathBuf>,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// The TLS port for xDS and the certificate API (Istio: 15012).
    pub secure_addr: SocketAddr,
    /// The admission webhooks, served with the same certificate.
    pub webhook: Option<WebhookOptions>,
}

/// Where the admission webhooks are served (Istio: 15017) and what injection adds.
#[derive(Clone)]
pub struct WebhookOptions {
    pub addr: SocketAddr,
    pub values: weft_inject::Values,
    /// The files the values are read from (the mounted `istio-sidecar-injector` ConfigMap, the
    /// mesh file) and how to read them again: when one changes, injection follows, as istiod's
    /// injector follows its ConfigMap; values that do not read are logged and the last kept.
    pub reload: Option<ValuesSource>,
}

#[derive(Clone)]
pub struct ValuesSource {
    pub files: Vec<PathBuf>,
    pub read: Arc<dyn Fn() -> Result<weft_inject::Values, String> + Send + Sync>,
}

impl std::fmt::Debug for WebhookOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookOptions").field("addr", &self.addr).field("reload", &self.reload.as_ref().map(|r| &r.files)).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read config dir {dir}: {source}")]
    ConfigDir { dir: String, source: std::io::Error },
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("xDS server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("certificate authority: {0}")]
    Ca(#[from] crate::ca::CaError),
    #[error("the API server: {0}")]
    Kube(String),
    #[error("the config holds security resources weft does not enforce; refusing to start rather than fail open (remove them, or pass --allow-unenforced-security):\n{0}")]
    Unenforced(String),
}

pub struct Running {
    pub shared: Arc<Shared>,
    pub xds_addr: SocketAddr,
    pub debug_addr: SocketAddr,
    /// The TLS port, when the CA runs.
    pub secure_addr: Option<SocketAddr>,
    /// The admission webhooks' port, when they are served.
    pub webhook_addr: Option<SocketAddr>,
    pub ca: Option<Arc<crate::ca::Authority>>,
    grpc: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Loads, binds and starts serving; fails before serving anything if the dir or a port is bad.
/// With the API server as a source, serving starts once it has been listed whole.
pub async fn start(opts: Options) -> Result<Running, ServeError> {
    let mut file = match &opts.config_dir {
        Some(dir) => Some(store::load_dir(dir).map_err(|source| ServeError::ConfigDir { dir: dir.display().to_string(), source })?),
        None => None,
    };
    let mut kube_rx = None;
    let mut kube_view = None;
    if let Some(client) = opts.kube.clone() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(weft_kube::source::run(client, opts.debounce, tx));
        tracing::info!("waiting for the API server to be listed");
        let first = loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(v)) => break v,
                Ok(None) => return Err(ServeError::Kube("the API server source ended".into())),
                Err(_) => {
                    tracing::warn!("still waiting for the API server to be listed (is it reachable, and may weft list its resources?)")
                }
            }
        };
        kube_view = Some(first);
        kube_rx = Some(rx);
    }
    // Namespace labels for injection, as the source last listed them.
    let namespaces = Arc::new(arc_swap::ArcSwap::from_pointee(kube_view.as_ref().map(|v| v.namespaces.clone()).unwrap_or_default()));
    // The API server's own problems, for the leader to report as Events on their resources.
    let (problems_tx, problems_rx) = tokio::sync::watch::channel(kube_view.as_ref().map(|v| v.diagnostics.clone()).unwrap_or_default());
    let snapshot = merge(file.as_ref(), kube_view.as_ref());
    let unenforced: Vec<String> = snapshot.diagnostics.iter().filter(|d| d.is_unenforced_security()).map(|d| format!("  {d}")).collect();
    if !unenforced.is_empty() && !opts.allow_unenforced_security {
        return Err(ServeError::Unenforced(unenforced.join("\n")));
    }
    crate::state::log_diagnostics(&snapshot.diagnostics);
    let xds = listen(opts.xds_addr).map_err(|source| ServeError::Bind { what: "xDS", addr: opts.xds_addr, source })?;
    let debug =
        TcpListener::bind(opts.debug_addr).await.map_err(|source| ServeError::Bind { what: "debug", addr: opts.debug_addr, source })?;
    let xds_addr = xds.local_addr().unwrap_or(opts.xds_addr);
    let debug_addr = debug.local_addr().unwrap_or(opts.debug_addr);
    // Without a mesh file, the cluster's `istio` ConfigMap is the MeshConfig, as istiod reads it.
    let mut mesh = opts.mesh.clone();
    let cluster_mesh = match (&opts.kube, &opts.mesh_path) {
        (Some(client), None) => Some(MeshSource::ConfigMap {
            client: client.clone(),
            namespace: opts.cluster.namespace.clone(),
            revision: opts.cluster.revision.clone(),
        }),
        _ => None,
    };
    if let Some(source) = &cluster_mesh {
        if let Some(text) = source.read().await.map_err(ServeError::Kube)? {
            let (m, warnings) = weft_api::mesh::load_mesh_checked(&text, &source.origin()).map_err(|errors| {
                ServeError::Kube(format!(
                    "{}: invalid MeshConfig: {}",
                    source.origin(),
                    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                ))
            })?;
            for w in warnings {
                tracing::warn!("{w}");
            }
            tracing::info!(source = %source.origin(), "MeshConfig from the cluster");
            mesh = m;
        }
    }
    let shared = Shared::new(snapshot, mesh, opts.kube.is_none());
    tracing::info!(services = shared.current.borrow().model.services.len(), xds = %xds_addr, debug = %debug_addr, "control plane serving");

    // Each source's latest state; a change of either publishes both together.
    let (file_tx, mut file_rx) = tokio::sync::mpsc::channel(4);
    if let Some(dir) = opts.config_dir.clone() {
        tokio::spawn(store::watch(dir, Duration::from_millis(100), opts.debounce, file_tx));
    } else {
        drop(file_tx);
    }
    let (mesh_tx, mut mesh_rx) = tokio::sync::mpsc::channel(1);
    match (opts.mesh_path.clone(), cluster_mesh) {
        (Some(path), _) => {
            tokio::spawn(watch_mesh(MeshSource::File(path), shared.mesh(), mesh_tx));
        }
        (None, Some(source)) => {
            tokio::spawn(watch_mesh(source, shared.mesh(), mesh_tx));
        }
        (None, None) => drop(mesh_tx),
    }
    let s = shared.clone();
    let labels = namespaces.clone();
    tokio::spawn(async move {
        let mut kube_rx = kube_rx;
        loop {
            tokio::select! {
                Some(snap) = file_rx.recv() => file = Some(snap),
                Some(view) = async { match kube_rx.as_mut() { Some(rx) => rx.recv().await, None => None } } => {
                    let _ = problems_tx.send(view.diagnostics.clone());
                    labels.store(Arc::new(view.namespaces.clone()));
                    kube_view = Some(view);
                }
                Some(mesh) = mesh_rx.recv() => s.set_mesh(mesh),
                else => return,
            }
            s.publish(merge(file.as_ref(), kube_view.as_ref()));
        }
    });
    tokio::spawn(crate::debug::serve(debug, shared.clone()));
    match opts.prometheus.clone() {
        Some(p) => *shared.prometheus.write() = Some(p),
        None if opts.scrape_proxies => {
            tokio::spawn(crate::graph::scrape(shared.clone(), shared.graph.clone()));
        }
        None => {}
    }
    let idle = shared.clone();
    // A version lets go of its spare JSON itself once every group the version before had is
    // rebuilt; here, once no group was built for 5 s, go the first version's and that of a
    // change that reaches fewer groups than before (a namespace gone).
    tokio::spawn(crate::memory::return_free_memory(move || idle.current.borrow().cache.release_idle(Duration::from_secs(5))));

    let (ca, secure_addr, webhook_addr) = match &opts.ca {
        Some(c) => {
            let (ca, secure, webhook) =
                start_ca(c, &shared, opts.allow_unenforced_security, opts.kube.clone(), &opts.cluster, namespaces.clone()).await?;
            if let Some(client) = opts.kube.clone() {
                // One replica at a time publishes the root to namespaces and webhooks.
                let p = weft_kube::publish::Publisher {
                    client,
                    namespace: opts.cluster.namespace.clone(),
                    identity: opts.cluster.replica.clone(),
                    revision: opts.cluster.revision.clone(),
                    lease_seconds: weft_kube::publish::LEASE_SECONDS,
                };
                tokio::spawn(p.run_with_events(ca.watch_bundle(), problems_rx.clone()));
            }
            (Some(ca), Some(secure), webhook)
        }
        None => (None, None, None),
    };

    let svc = AdsService::new(Ads { shared: shared.clone() });
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(xds);
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(svc)
            .serve_with_incoming(incoming),
    );
    Ok(Running { shared, xds_addr, debug_addr, secure_addr, webhook_addr, ca, grpc })
}

/// Opens the root of trust and serves xDS and the certificate API over TLS on the secure port,
/// and the admission webhooks on theirs when asked.
async fn start_ca(
    c: &CaOptions,
    shared: &Arc<Shared>,
    allow_unenforced_security: bool,
    kube: Option<weft_kube::Client>,
    cluster: &ClusterIdentity,
    namespaces: Arc<arc_swap::ArcSwap<std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>>>,
) -> Result<(Arc<crate::ca::Authority>, SocketAddr, Option<SocketAddr>), ServeError> {
    use crate::ca::{serving, Authenticator, Authority, RootSource, Tokens};
    let trust_domain = shared.mesh().trust_domain;
    if let Some(client) = &kube {
        // One root for every replica and restart: the cluster's, before the directory is read.
        let generate = |dir: &std::path::Path| crate::ca::authority::generate_root(dir, &trust_domain).map_err(|e| e.to_string());
        let origin = weft_kube::ca_store::sync(client, &cluster.namespace, &c.dir, generate)
            .await
            .map_err(|e| crate::ca::CaError::Root(format!("the cluster's root of trust: {e}")))?;
        tracing::info!(?origin, namespace = %cluster.namespace, "the root of trust is the cluster's (Secret cacerts or istio-ca-secret)");
    }
    let (ca, source) = Authority::open(&c.dir, &trust_domain, c.default_ttl, c.max_ttl)?;
    let ca = Arc::new(ca);
    match source {
        RootSource::Generated => tracing::info!(dir = %c.dir.display(), %trust_domain, "generated a new root of trust"),
        RootSource::Plugged => tracing::info!(dir = %c.dir.display(), %trust_domain, "using the root of trust in the CA directory"),
    }
    let listener = listen(c.secure_addr).map_err(|source| ServeError::Bind { what: "secure xDS/CA", addr: c.secure_addr, source })?;
    let secure_addr = listener.local_addr().unwrap_or(c.secure_addr);
    let ips = if secure_addr.ip().is_unspecified() { vec![std::net::Ipv4Addr::LOCALHOST.into()] } else { vec![secure_addr.ip()] };
    let webhook = match &c.webhook {
        Some(w) => Some((
            listen(w.addr).map_err(|source| ServeError::Bind { what: "admission webhooks", addr: w.addr, source })?,
            (w.values.clone(), w.reload.clone()),
        )),
        None => None,
    };
    let mut ips = ips;
    if let Some((l, _)) = &webhook {
        let ip = l.local_addr().map(|a| a.ip()).unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        if !ip.is_unspecified() && !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    // The control plane's own Service, when a revision or another namespace renames it.
    let service = if cluster.revision == "default" { "istiod".to_owned() } else { format!("istiod-{}", cluster.revision) };
    let extra = vec![format!("{service}.{}.svc", cluster.namespace), format!("{service}.{}.svc.cluster.local", cluster.namespace)];
    let cert = serving::ServingCert::new(ca.clone(), ips, extra)?;
    let tls = cert.server_config()?;
    let webhook_addr = match webhook {
        Some((listener, values)) => {
            let addr = listener.local_addr().ok();
            let (values, reload) = values;
            let hooks = Arc::new(crate::webhook::Webhooks {
                values: arc_swap::ArcSwap::from_pointee(values),
                allow_unenforced_security,
                kube: kube.clone(),
                namespaces,
            });
            if let Some(source) = reload {
                tokio::spawn(crate::webhook::follow_values(hooks.clone(), source));
            }
            tokio::spawn(crate::webhook::serve(listener, cert.server_config_with_alpn(&[b"h2", b"http/1.1"])?, hooks));
            tracing::info!(webhook = ?addr, "admission webhooks served over TLS");
            addr
        }
        None => None,
    };
    tokio::spawn(cert.renew());
    let watched = ca.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            watched.reload_if_changed();
        }
    });
    let authn = Arc::new(Authenticator { tokens: c.token_dir.as_deref().map(Tokens::new), kube: kube.clone() });
    let svc = crate::ca::service::CaService { ca: ca.clone(), authn: authn.clone(), stats: shared.ca_stats.clone() };
    // xDS on the TLS port takes the same tokens as the CA (the pod's agent sends its token).
    let ads = crate::wire::AuthenticatedAds::new(AdsService::new(Ads { shared: shared.clone() }), authn);
    tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(ads)
            .add_service(svc)
            .serve_with_incoming(serving::incoming(listener, tls)),
    );
    tracing::info!(secure = %secure_addr, "xDS and the certificate API served over TLS");
    Ok((ca, secure_addr, webhook_addr))
}

/// Polls the MeshConfig file and sends each valid new version; an invalid one is logged with
/// its errors and the mesh in force kept.
/// Where the MeshConfig comes from: a file (the mounted ConfigMap), or the ConfigMap itself
/// read through the API server.
enum MeshSource {
    File(PathBuf),
    ConfigMap { client: weft_kube::Client, namespace: String, revision: String },
}

impl MeshSource {
    /// The text now; `None` when there is none (no file yet, no ConfigMap: the defaults).
    async fn read(&self) -> Result<Option<String>, String> {
        match self {
            MeshSource::File(path) => Ok(std::fs::read_to_string(path).ok()),
            MeshSource::ConfigMap { client, namespace, revision } => weft_kube::meshconfig::text(client, namespace, revision).await,
        }
    }

    fn origin(&self) -> String {
        match self {
            MeshSource::File(path) => path.display().to_string(),
            MeshSource::ConfigMap { namespace, revision, .. } => format!("ConfigMap {namespace}/{}", weft_kube::meshconfig::name(revision)),
        }
    }

    /// How often it is read again: a file every second, the API server every five.
    fn period(&self) -> Duration {
        match self {
            MeshSource::File(_) => Duration::from_secs(1),
            MeshSource::ConfigMap { .. } => Duration::from_secs(5),
        }
    }
}

async fn watch_mesh(source: MeshSource, first: MeshConfig, tx: tokio::sync::mpsc::Sender<MeshConfig>) {
    // The first poll compares with the mesh in force, not with the source: it may have changed
    // between being read at start and this task first running.
    let mut last_text: Option<String> = None;
    let mut current = first;
    loop {
        tokio::time::sleep(source.period()).await;
        let text = match source.read().await {
            Ok(Some(t)) => t,
            // A removed ConfigMap: istiod's defaults, as when there was none.
            Ok(None) if matches!(source, MeshSource::ConfigMap { .. }) => String::new(),
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("reading the MeshConfig, keeping the one in force: {e}");
                continue;
            }
        };
        if last_text.as_deref() == Some(text.as_str()) {
            continue;
        }
        last_text = Some(text.clone());
        match weft_api::mesh::load_mesh_checked(&text, &source.origin()) {
            Ok((mesh, _)) if mesh == current => {}
            Ok((mesh, warnings)) => {
                for w in warnings {
                    tracing::warn!("{w}");
                }
                let mut mesh = mesh;
                if mesh.trust_domain != current.trust_domain {
                    // Certificates keep the CA's trust domain, so config must too, or every
                    // client would expect SANs no server has.
                    tracing::warn!(from = %current.trust_domain, to = %mesh.trust_domain, "the mesh's trust domain changed: kept until the control plane restarts (the CA issues for the one it started with)");
                    mesh.trust_domain = current.trust_domain.clone();
                }
                tracing::info!(source = %source.origin(), "mesh config changed");
                current = mesh.clone();
                if tx.send(mesh).await.is_err() {
                    return;
                }
            }
            Err(errors) => {
                for e in errors {
                    tracing::error!("mesh config not applied, keeping the one in force: {e}");
                }
            }
        }
    }
}

/// The files' resources and the API server's, as one snapshot; a resource in both is reported
/// and the file's kept.
fn merge(file: Option<&store::Snapshot>, kube: Option<&weft_kube::source::View>) -> store::Snapshot {
    let mut snap = file.cloned().unwrap_or_default();
    if let Some(v) = kube {
        snap.objects.extend(v.objects.iter().cloned());
        snap.diagnostics.extend(v.diagnostics.iter().cloned());
        snap.pods = v.pods.clone();
        snap.gateway_api.extend(v.gateway_api.iter().cloned());
        weft_api::drop_duplicates(&mut snap.objects, &mut snap.diagnostics);
    }
    snap
}

impl Running {
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.grpc.await {
            Ok(r) => r.map_err(ServeError::from),
            Err(_) => Ok(()),
        }
    }
}

/// Binds with a deep accept queue: a fleet of proxies reconnecting at once (after a control
/// plane restart) must not overflow it, which would reset their connections.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}
