//! Starting and stopping a proxy: bind everything first (so a bad address fails before
//! anything serves), warm clusters, accept, and drain on SIGTERM or `/quitquitquit`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::admin::LogLevelSetter;
use crate::config::Config;
use crate::drain::Drain;
use weft_xds::ads_client::{AdsClient, ClientConfig};

use crate::dynamic::Dynamic;
use crate::http::rds::RouteStore;
use crate::listener::{accept_loop, ListenerRuntime, ListenerSlot, Listeners};
use crate::stats::Store;
use crate::upstream::ClusterManager;

/// Process settings that do not come from the bootstrap (Envoy's command-line flags).
#[derive(Clone)]
pub struct Options {
    pub concurrency: usize,
    /// How long SIGTERM or `/quitquitquit` waits for open connections to finish.
    pub drain_time: Duration,
    pub set_log_level: LogLevelSetter,
    /// `--local-address-ip-version v6`: the node's own address ([`node_address`]) is IPv6.
    pub local_address_v6: bool,
    /// Bootstrap fields `--allow-unknown-static-fields` let through, counted as Envoy does in
    /// `server.static_unknown_fields`.
    pub static_unknown_fields: u64,
    /// Every Envoy component's log level at start (`-l`, `--component-log-level`), which
    /// `/logging` lists and changes.
    pub log_levels: crate::applog::LogLevels,
    /// The DNS proxy, for a sidecar whose node metadata says `DNS_CAPTURE` (it answers from
    /// the name table the control plane sends, so only with ADS).
    pub dns: Option<crate::dns::DnsOptions>,
}

static NODE_ADDRESS: std::sync::OnceLock<(std::net::IpAddr, String)> = std::sync::OnceLock::new();

/// The node's own address, as Envoy's local info has it: the first non-loopback interface
/// address of the `--local-address-ip-version` family. It is the local endpoint of Zipkin spans
/// and what requests the proxy makes itself append to `x-forwarded-for`. IPv4 until
/// [`start`] sets it.
pub fn node_address() -> std::net::IpAddr {
    init_node_address(false).0
}

/// [`node_address`] as text.
pub fn node_address_text() -> &'static str {
    &init_node_address(false).1
}

fn init_node_address(v6: bool) -> &'static (std::net::IpAddr, String) {
    NODE_ADDRESS.get_or_init(|| {
        let ip = crate::sockopt::first_non_loopback(v6);
        (ip, ip.to_string())
    })
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listener {name:?}: cannot bind {addr}: {source}")]
    Bind { name: String, addr: std::net::SocketAddr, source: std::io::Error },
    #[error("admin: cannot bind {addr}: {source}")]
    AdminBind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot open access log: {0}")]
    AccessLog(std::io::Error),
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
}

/// What building a listener's filter chains needs.
#[derive(Clone)]
pub struct BuildCtx {
    /// Istio's metrics, for a mesh proxy.
    pub istio: Option<Arc<crate::istio_metrics::Mesh>>,
    pub store: Arc<Store>,
    pub clusters: Arc<ClusterManager>,
    pub routes: Arc<RouteStore>,
    pub tracer: Arc<crate::trace::Tracer>,
}

/// State the admin interface reads.
pub struct Shared {
    /// Istio's metrics, for a mesh proxy (rendered with the stats).
    pub istio: Option<Arc<crate::istio_metrics::Mesh>>,
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub clusters: Arc<ClusterManager>,
    pub routes: Arc<RouteStore>,
    pub listeners: Arc<Listeners>,
    pub drain: Drain,
    pub concurrency: usize,
    pub set_log_level: LogLevelSetter,
    pub log_levels: parking_lot::Mutex<crate::applog::LogLevels>,
    /// `--drain-time-s`: how long `/drain_listeners?graceful` keeps listeners accepting.
    pub drain_time: Duration,
    /// Present when a control plane feeds the proxy.
    pub dynamic: Option<Arc<Dynamic>>,
    pub xds: Option<AdsClient>,
    live: AtomicBool,
    shutdown: tokio::sync::Notify,
}

impl Shared {
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
            && !self.drain.is_draining()
            && !self.drain.is_failing_health_checks()
            && self.dynamic.as_ref().is_none_or(|d| d.is_initialized())
    }
    pub fn request_shutdown(&self) {
        self.shutdown.notify_one();
    }
}

/// A started proxy: its bound addresses and a handle to stop it.
pub struct Running {
    pub shared: Arc<Shared>,
    pub listener_addrs: Vec<(String, std::net::SocketAddr)>,
    pub admin_addr: Option<std::net::SocketAddr>,
}

/// Node metadata key saying whether this proxy fetches service clusters on first use.
pub const ON_DEMAND_META: &str = "WEFT_ON_DEMAND";

/// Binds every socket, warms clusters, and starts serving. Fails with nothing left bound.
/// With a control plane configured, the ADS client starts too; the proxy reports ready once
/// the first clusters, listeners, endpoints and routes have been applied.
pub async fn start(config: Config, opts: Options) -> Result<Running, StartError> {
    let config = Arc::new(config);
    init_node_address(opts.local_address_v6);
    let store = Store::with_settings(opts.concurrency, config.stats.clone());
    store.static_unknown_fields.add(opts.static_unknown_fields);
    let clusters = ClusterManager::new(&config.clusters, &store);
    let routes = Arc::new(RouteStore::default());
    let mut tracer = crate::trace::Tracer::new(config.node_id.clone(), config.node_cluster.clone(), clusters.clone(), store.clone());
    tracer.node_zone = config.node_locality.as_ref().map(|l| l.zone.clone()).unwrap_or_default();
    let tracer = Arc::new(tracer);
    let istio = crate::istio_metrics::Mesh::from_node(&config.node_metadata);
    let ctx = BuildCtx { istio: istio.clone(), store: store.clone(), clusters: clusters.clone(), routes: routes.clone(), tracer };
    let drain = Drain::new();

    let mut runtimes = Vec::new();
    for l in &config.listeners {
        runtimes.push(Arc::new(ListenerRuntime::build(l.clone(), &ctx, drain.child()).map_err(StartError::AccessLog)?));
    }

    let mut bound = Vec::new();
    for rt in &runtimes {
        if !rt.cfg.bind_to_port {
            continue;
        }
        let sock = TcpListener::bind(rt.cfg.address).await.map_err(|source| StartError::Bind {
            name: rt.cfg.name.clone(),
            addr: rt.cfg.address,
            source,
        })?;
        bound.push((rt.clone(), sock));
    }
    let admin = match &config.admin {
        Some(a) => Some(TcpListener::bind(a.address).await.map_err(|source| StartError::AdminBind { addr: a.address, source })?),
        None => None,
    };

    let listeners = Arc::new(Listeners::default());
    listeners.set_global_limit(config.overload.global_max_connections);
    listeners.all.store(Arc::new(runtimes.clone()));
    let (dynamic, xds) = match &config.ads {
        Some(ads) => {
            let dns = match &opts.dns {
                Some(o) => Some(crate::dns::Dns::start(o.clone()).await?),
                None => None,
            };
            let name_table = dns.is_some();
            let d = Dynamic::new(ctx.clone(), listeners.clone(), runtimes.clone(), drain.clone(), opts.drain_time, dns);
            // Service clusters are fetched on first use unless the node metadata says
            // WEFT_ON_DEMAND=false; the key tells the control plane to scope CDS so.
            let mut metadata = config.node_metadata.clone();
            // A gateway serves every route it is given, so it is sent every cluster.
            let gateway = config.node_id.starts_with("router~");
            let on_demand = !gateway && metadata.get(ON_DEMAND_META).is_none_or(|v| v.as_str() != Some("false"));
            metadata.insert(ON_DEMAND_META.into(), serde_json::json!(if on_demand { "true" } else { "false" }));
            if on_demand {
                use crate::upstream::on_demand::{OnDemand, FETCH_DEADLINE};
                let od = OnDemand::new(FETCH_DEADLINE);
                routes.enable_on_demand(OnDemand::with_notify(FETCH_DEADLINE, od.subscribe.clone()));
                clusters.enable_on_demand(od);
            }
            let mut node = weft_xds::ads_client::node(&config.node_id, &config.node_cluster, &metadata);
            node.locality = config.node_locality.as_ref().map(|l| envoy_types::pb::envoy::config::core::v3::Locality {
                region: l.region.clone(),
                zone: l.zone.clone(),
                sub_zone: l.sub_zone.clone(),
            });
            let client = AdsClient::start(
                ClientConfig {
                    endpoint: if ads.address.starts_with("unix:") { ads.address.clone() } else { format!("http://{}", ads.address) },
                    node,
                    delta: ads.delta,
                    backoff_base: Duration::from_millis(500),
                    backoff_max: Duration::from_secs(5),
                    envoy_types: true,
                    name_table,
                },
                d.clone(),
            );
            (Some(d), Some(client))
        }
        None => (None, None),
    };
    let shared = Arc::new(Shared {
        istio: istio.clone(),
        config: config.clone(),
        store: store.clone(),
        clusters: clusters.clone(),
        routes,
        listeners: listeners.clone(),
        drain: drain.clone(),
        concurrency: opts.concurrency,
        set_log_level: opts.set_log_level.clone(),
        log_levels: parking_lot::Mutex::new(opts.log_levels.clone()),
        drain_time: opts.drain_time,
        dynamic,
        xds,
        live: AtomicBool::new(false),
        shutdown: tokio::sync::Notify::new(),
    });
    let admin_addr = admin.as_ref().and_then(|a| a.local_addr().ok());
    if let Some(a) = admin {
        tokio::spawn(crate::admin::serve(a, shared.clone(), drain.clone()));
    }

    clusters.start().await;

    let mut listener_addrs = Vec::new();
    for (rt, sock) in bound {
        listener_addrs.push((rt.cfg.name.clone(), sock.local_addr().unwrap_or(rt.cfg.address)));
        let slot = ListenerSlot::new(rt);
        listeners.register(&slot);
        tokio::spawn(accept_loop(sock, slot, listeners.clone(), drain.clone()));
    }
    tokio::spawn(crate::heartbeat::run());
    tokio::spawn(crate::memory::return_after_bursts());
    shared.live.store(true, Ordering::Release);
    tracing::info!(listeners = listener_addrs.len(), control_plane = ?config.ads.as_ref().map(|a| &a.address), "weft proxy is live");
    Ok(Running { shared, listener_addrs, admin_addr })
}

impl Running {
    /// Waits for SIGTERM, SIGINT or `/quitquitquit`, then drains up to `drain_time`.
    pub async fn wait_and_drain(self, drain_time: Duration) {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term_fut = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = term_fut => tracing::info!("SIGTERM: draining"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
            _ = self.shared.shutdown.notified() => tracing::info!("quitquitquit: draining"),
        }
        self.shared.store.set_draining();
        let left = self.shared.drain.drain(drain_time).await;
        if left > 0 {
            tracing::warn!(open = left, "drain deadline reached; closing remaining connections");
        } else {
            tracing::info!("drained");
        }
    }
}
