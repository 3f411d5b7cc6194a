//! Listeners at run time: accept, listener filters (original destination, TLS and HTTP
//! inspection), the hand-off to the listener owning the original destination, and filter
//! chain selection with Envoy's match order.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};

use crate::config::listener::{ChainMatch, FilterChain, ListenerConfig, NetworkAction};
use crate::drain::Drain;
use crate::http::Hcm;
use crate::sniff::{self, Sniff};
use crate::stats::{GaugeGuard, ListenerStats};
use crate::tcp::TcpProxy;
use crate::transport::{accept_tls, Stream};

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// What the listener learned about a downstream connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub id: u64,
    pub remote: SocketAddr,
    /// The local address, restored to the pre-redirect destination by `original_dst`.
    pub local: SocketAddr,
    pub original_dst: Option<SocketAddr>,
    pub sni: Option<String>,
    pub alpn: Vec<String>,
    pub transport: &'static str,
    /// Set once a TLS handshake with the downstream completed.
    pub tls: Option<crate::transport::TlsInfo>,
}

impl ConnInfo {
    /// `https` on a connection whose TLS the proxy terminated, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

pub enum ChainRuntime {
    Http(Arc<Hcm>),
    Tcp(Arc<TcpProxy>),
}

pub struct Chain {
    pub cfg: Arc<FilterChain>,
    pub run: ChainRuntime,
}

/// One generation of a listener: its config, built filter chains, and the drain that winds
/// its connections down when a newer generation replaces it.
pub struct ListenerRuntime {
    pub cfg: Arc<ListenerConfig>,
    pub chains: Vec<Chain>,
    pub default_chain: Option<Chain>,
    pub stats: Arc<ListenerStats>,
    pub drain: Drain,
}

impl ListenerRuntime {
    pub fn build(cfg: Arc<ListenerConfig>, ctx: &crate::server::BuildCtx, drain: Drain) -> std::io::Result<Self> {
        let mut chains = Vec::new();
        for c in &cfg.filter_chains {
            chains.push(Chain::build(c.clone(), ctx, cfg.inbound, cfg.mesh_traffic)?);
        }
        let default_chain = match &cfg.default_chain {
            Some(c) => Some(Chain::build(c.clone(), ctx, cfg.inbound, cfg.mesh_traffic)?),
            None => None,
        };
        let stats = ctx.store.listener(&cfg.stat_prefix);
        // Every mesh listener carries the proxy's plan (the control plane writes the same one on
        // each), so the latest one built is the plan in force.
        if let (Some(mesh), true) = (&ctx.istio, cfg.mesh_traffic) {
            mesh.set_plan(cfg.stats_plan.clone());
        }
        Ok(ListenerRuntime { cfg, chains, default_chain, stats, drain })
    }
}

/// The current generation of every listener, for `use_original_dst` hand-off, and the bound
/// sockets' slots, for `/drain_listeners`.
pub struct Listeners {
    pub all: ArcSwap<Vec<Arc<ListenerRuntime>>>,
    slots: parking_lot::Mutex<Vec<std::sync::Weak<ListenerSlot>>>,
    /// The overload manager's `global_downstream_max_connections` (`u64::MAX`: none) and the
    /// connections counted against it.
    global_limit: std::sync::atomic::AtomicU64,
    global_active: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            all: Default::default(),
            slots: Default::default(),
            global_limit: std::sync::atomic::AtomicU64::new(u64::MAX),
            global_active: Default::default(),
        }
    }
}

/// A downstream connection counted against the global limit, until it closes.
struct GlobalSlot(Option<Arc<std::sync::atomic::AtomicU64>>);

impl Drop for GlobalSlot {
    fn drop(&mut self) {
        if let Some(a) = &self.0 {
            a.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Listeners {
    /// Envoy's `envoy.resource_monitors.global_downstream_max_connections`: at most `limit`
    /// downstream connections at once on listeners without `ignore_global_conn_limit`.
    pub fn set_global_limit(&self, limit: Option<u64>) {
        self.global_limit.store(limit.unwrap_or(u64::MAX), Ordering::Release);
    }

    /// Counts a new connection of `rt`; `None` when the global limit is reached.
    fn admit(&self, rt: &ListenerRuntime) -> Option<GlobalSlot> {
        let limit = self.global_limit.load(Ordering::Acquire);
        if rt.cfg.ignore_global_conn_limit || limit == u64::MAX {
            return Some(GlobalSlot(None));
        }
        self.global_active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1))
            .ok()
            .map(|_| GlobalSlot(Some(self.global_active.clone())))
    }

    /// Records a bound socket's slot (forgotten once its accept loop ends).
    pub fn register(&self, slot: &Arc<ListenerSlot>) {
        let mut slots = self.slots.lock();
        slots.retain(|s| s.strong_count() > 0);
        slots.push(Arc::downgrade(slot));
    }

    /// The slots of every socket still accepting.
    pub fn slots(&self) -> Vec<Arc<ListenerSlot>> {
        self.slots.lock().iter().filter_map(std::sync::Weak::upgrade).filter(|s| !s.is_closed()).collect()
    }
}

impl Listeners {
    /// The listener owning `dst`: exact address first, then a wildcard address on that port.
    fn owner(&self, dst: SocketAddr, except: &str) -> Option<Arc<ListenerRuntime>> {
        let all = self.all.load();
        let others = || all.iter().filter(|l| l.cfg.name != except);
        others()
            .find(|l| l.cfg.address == dst)
            .or_else(|| {
                others().find(|l| {
                    l.cfg.address.port() == dst.port() && l.cfg.address.ip().is_unspecified() && l.cfg.address.is_ipv4() == dst.is_ipv4()
                })
            })
            .cloned()
    }
}

/// A bound socket and the listener generation that serves what it accepts; swapping
/// `current` moves new connections to a new generation without closing the socket.
pub struct ListenerSlot {
    pub current: ArcSwap<ListenerRuntime>,
    closed: tokio::sync::Notify,
    is_closed: std::sync::atomic::AtomicBool,
}

impl ListenerSlot {
    pub fn new(rt: Arc<ListenerRuntime>) -> Arc<Self> {
        Arc::new(ListenerSlot {
            current: ArcSwap::new(rt),
            closed: tokio::sync::Notify::new(),
            is_closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Stops accepting and closes the socket; open connections are left to their drain.
    /// Returns false when it was closed already.
    pub fn close(&self) -> bool {
        let first = !self.is_closed.swap(true, std::sync::atomic::Ordering::AcqRel);
        self.closed.notify_one();
        first
    }

    pub fn is_closed(&self) -> bool {
        self.is_closed.load(std::sync::atomic::Ordering::Acquire)
    }
}

pub async fn accept_loop(listener: TcpListener, slot: Arc<ListenerSlot>, all: Arc<Listeners>, drain: Drain) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    let rt = slot.current.load_full();
                    let all = all.clone();
                    tokio::spawn(async move { handle(stream, remote, rt, all).await });
                }
                Err(e) => {
                    tracing::warn!(listener = %slot.current.load().cfg.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = slot.closed.notified() => return,
            _ = drain.signaled() => return,
        }
    }
}

async fn handle(stream: TcpStream, remote: SocketAddr, mut rt: Arc<ListenerRuntime>, all: Arc<Listeners>) {
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    // Counted on the listener that accepted it, before any original-destination hand-off, as
    // Envoy does; over the limit the connection is reset at once.
    let Some(_global) = all.admit(&rt) else {
        rt.stats.downstream_global_cx_overflow.inc();
        let _ = stream.set_zero_linger();
        return;
    };
    let mut info = ConnInfo {
        id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
        remote,
        local,
        original_dst: None,
        sni: None,
        alpn: Vec::new(),
        transport: "raw_buffer",
        tls: None,
    };
    if rt.cfg.original_dst {
        if let Some(dst) = crate::sockopt::original_dst(&stream, local.is_ipv6()) {
            info.local = dst;
        }
        info.original_dst = Some(info.local);
        if rt.cfg.use_original_dst {
            match all.owner(info.local, &rt.cfg.name) {
                Some(owner) => {
                    tracing::trace!(from = %rt.cfg.name, to = %owner.cfg.name, dst = %info.local, "handed off by original destination");
                    rt = owner;
                }
                None => tracing::trace!(listener = %rt.cfg.name, dst = %info.local, "no listener owns the original destination"),
            }
        }
    }
    rt.stats.downstream_cx_total.inc();
    let _active = GaugeGuard::new(rt.stats.clone());

    if (rt.cfg.tls_inspector || rt.cfg.http_inspector) && !inspect(&stream, &rt, &mut info).await {
        rt.stats.downstream_pre_cx_timeout.inc();
        if !rt.cfg.continue_on_listener_filters_timeout {
            return;
        }
    }
    let Some(chain) = select_chain(&rt, &info) else {
        rt.stats.no_filter_chain_match.inc();
        // Envoy says this at debug; it is how a plaintext caller meets a STRICT mTLS port, so
        // weft says it where an operator looks.
        tracing::info!(listener = %rt.cfg.name, remote = %remote, port = info.local.port(), transport = info.transport,
            "connection refused: no filter chain matches (plaintext to an mTLS-only port?)");
        return;
    };
    let stream = match &chain.cfg.tls {
        None => Stream::Plain(stream),
        Some(tls) => match accept_tls(tls, stream, remote, chain.cfg.handshake_timeout, &rt.stats.ssl).await {
            Ok((s, tls)) => {
                info.tls = Some(tls);
                s
            }
            Err(e) => {
                // Verification failures are what an operator looks for; the rest is noise
                // from clients that went away or spoke something else.
                if e.verification {
                    tracing::warn!(listener = %rt.cfg.name, chain = %chain.cfg.name, "{e}");
                } else {
                    tracing::debug!(listener = %rt.cfg.name, chain = %chain.cfg.name, "{e}");
                }
                rt.stats.downstream_cx_destroy.inc();
                crate::memory::connection_closed();
                return;
            }
        },
    };
    let info = Arc::new(info);
    let drain = rt.drain.clone();
    match &chain.run {
        ChainRuntime::Http(h) => h.clone().serve(stream, info, drain).await,
        ChainRuntime::Tcp(t) => t.clone().serve(stream, info, drain).await,
    }
    rt.stats.downstream_cx_destroy.inc();
    crate::memory::connection_closed();
}

/// Runs `tls_inspector` and `http_inspector` on peeked bytes; false on timeout.
async fn inspect(stream: &TcpStream, rt: &ListenerRuntime, info: &mut ConnInfo) -> bool {
    let deadline = Instant::now() + rt.cfg.listener_filters_timeout;
    let mut buf = vec![0u8; 16 * 1024 + 5];
    let mut tls_done = !rt.cfg.tls_inspector;
    let mut http_done = !rt.cfg.http_inspector;
    let mut wait = Duration::from_micros(200);
    let mut last_n = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline.into(), stream.peek(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(n)) => n,
            Err(_) => return false,
        };
        let bytes = &buf[..n];
        if !tls_done {
            match sniff::client_hello(bytes) {
                Sniff::Done(Some(h)) => {
                    info.transport = "tls";
                    info.sni = h.sni;
                    info.alpn = h.alpn;
                    tls_done = true;
                    http_done = true;
                }
                Sniff::Done(None) => tls_done = true,
                Sniff::NeedMore => {}
            }
        }
        if tls_done && !http_done {
            match sniff::http(bytes) {
                Sniff::Done(Some(p)) => {
                    info.alpn = vec![p.to_string()];
                    http_done = true;
                }
                Sniff::Done(None) => http_done = true,
                Sniff::NeedMore => {}
            }
        }
        if tls_done && http_done {
            return true;
        }
        if n == buf.len() {
            return true;
        }
        // More bytes are needed and peek returns at once while data is buffered: back off.
        if Instant::now() >= deadline {
            return false;
        }
        if n > last_n {
            wait = Duration::from_micros(200);
        } else {
            wait = (wait * 2).min(Duration::from_millis(20));
        }
        last_n = n;
        tokio::time::sleep(wait).await;
    }
}

fn in_ranges(ranges: &[ipnet::IpNet], ip: IpAddr) -> Option<u8> {
    ranges.iter().filter(|n| n.contains(&ip)).map(|n| n.prefix_len()).max()
}

fn ip_of(a: SocketAddr) -> IpAddr {
    match a.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        ip => ip,
    }
}

/// Narrows candidates by one criterion: specific matches win; otherwise the ones that do not
/// set the criterion.
fn narrow(cands: Vec<&Chain>, score: impl Fn(&ChainMatch) -> Option<Option<u32>>) -> Vec<&Chain> {
    // score: None = criterion unset; Some(None) = set, no match; Some(Some(s)) = match with specificity s.
    let best = cands.iter().filter_map(|c| score(&c.cfg.matcher).flatten()).max();
    match best {
        Some(b) => cands.into_iter().filter(|c| score(&c.cfg.matcher) == Some(Some(b))).collect(),
        None => cands.into_iter().filter(|c| score(&c.cfg.matcher).is_none()).collect(),
    }
}

fn sni_score(names: &[String], sni: Option<&str>) -> Option<Option<u32>> {
    if names.is_empty() {
        return None;
    }
    let Some(sni) = sni else { return Some(None) };
    let mut best = None;
    for n in names {
        let s = if n == sni {
            Some(u32::MAX)
        } else if let Some(suffix) = n.strip_prefix('*') {
            (sni.len() > suffix.len() && sni.ends_with(suffix)).then_some(suffix.len() as u32)
        } else {
            None
        };
        best = best.max(s);
    }
    Some(best)
}

pub fn select_chain<'a>(rt: &'a ListenerRuntime, info: &ConnInfo) -> Option<&'a Chain> {
    let local_ip = ip_of(info.local);
    let remote_ip = ip_of(info.remote);
    let mut c: Vec<&Chain> = rt.chains.iter().collect();
    c = narrow(c, |m| m.destination_port.map(|p| (p == info.local.port()).then_some(1)));
    c = narrow(c, |m| (!m.prefix_ranges.is_empty()).then(|| in_ranges(&m.prefix_ranges, local_ip).map(u32::from)));
    c = narrow(c, |m| sni_score(&m.server_names, info.sni.as_deref()));
    c = narrow(c, |m| m.transport_protocol.as_ref().map(|t| (t == info.transport).then_some(1)));
    c = narrow(c, |m| {
        (!m.application_protocols.is_empty()).then(|| m.application_protocols.iter().any(|p| info.alpn.contains(p)).then_some(1))
    });
    c = narrow(c, |m| {
        (!m.direct_source_prefix_ranges.is_empty()).then(|| in_ranges(&m.direct_source_prefix_ranges, remote_ip).map(u32::from))
    });
    c = narrow(c, |m| {
        use weft_xds::listener::ConnectionSourceType as T;
        let local_src = remote_ip.is_loopback() || remote_ip == local_ip;
        match m.source_type {
            T::Any => None,
            T::SameIpOrLoopback => Some(local_src.then_some(1)),
            T::External => Some((!local_src).then_some(1)),
        }
    });
    c = narrow(c, |m| (!m.source_prefix_ranges.is_empty()).then(|| in_ranges(&m.source_prefix_ranges, remote_ip).map(u32::from)));
    c = narrow(c, |m| (!m.source_ports.is_empty()).then(|| m.source_ports.contains(&info.remote.port()).then_some(1)));
    c.first().copied().or(rt.default_chain.as_ref())
}

impl Chain {
    /// `inbound`: the listener's traffic direction, which side of a request it reports;
    /// `mesh`: whether it reports Istio's metrics at all.
    pub fn build(cfg: Arc<FilterChain>, ctx: &crate::server::BuildCtx, inbound: bool, mesh: bool) -> std::io::Result<Chain> {
        use crate::istio_metrics::Reporter;
        let reporter = if inbound { Reporter::Destination } else { Reporter::Source };
        let istio = ctx.istio.clone().filter(|_| mesh);
        let run = match &cfg.action {
            NetworkAction::Http(h) => ChainRuntime::Http(Arc::new(Hcm {
                cfg: h.clone(),
                stats: ctx.store.http(&h.stat_prefix),
                store: ctx.store.clone(),
                clusters: ctx.clusters.clone(),
                routes: ctx.routes.clone(),
                loggers: Arc::new(crate::access_log::open_all(&h.access_log, ctx)?),
                reporter: h.tracing.as_ref().and_then(|t| t.exporter.as_ref()).map(|e| ctx.tracer.reporter(e)),
                tracer: ctx.tracer.clone(),
                istio: istio.clone().map(|m| (m, reporter)),
            })),
            NetworkAction::Tcp(t) => ChainRuntime::Tcp(Arc::new(TcpProxy {
                cfg: t.clone(),
                stats: ctx.store.tcp(&t.stat_prefix),
                clusters: ctx.clusters.clone(),
                loggers: Arc::new(crate::access_log::open_all(&t.access_log, ctx)?),
                istio: istio.clone().map(|m| (m, reporter)),
            })),
        };
        Ok(Chain { cfg, run })
    }
}
