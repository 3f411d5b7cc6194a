//! The sidecar's DNS proxy (Istio's `ISTIO_META_DNS_CAPTURE`): it answers the workload's DNS
//! queries, which capture redirects from port 53 to it (127.0.0.1:15053 by default), over UDP
//! and TCP. Names of the mesh's services and ServiceEntries come from the name table the
//! control plane pushes (NDS, `weft_xds::name_table`); every other query goes, unchanged, to
//! the resolvers of the pod's `resolv.conf`, and their answer comes back unchanged.
//!
//! Bounded: at most [`MAX_INFLIGHT`] queries wait on an upstream at once (more are dropped,
//! and the client retries, as it would a lost datagram), at most [`MAX_TCP`] TCP connections,
//! each closed after [`TCP_IDLE`] without a query.

mod message;
mod resolv;
mod server;
mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::Semaphore;
use weft_xds::name_table::NameTable;

pub use table::Place;

/// The reply the proxy gives `msg` from a fixed table (the fuzz target's entry): `None` when it
/// is not answered or would go upstream.
#[doc(hidden)]
pub fn fuzz_reply(msg: &[u8], tcp: bool) -> Option<Vec<u8>> {
    static TABLE: std::sync::OnceLock<table::Table> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut nt = NameTable::default();
        let info = |ips: &[&str], short: &str| weft_xds::name_table::NameInfo {
            ips: ips.iter().map(|s| s.to_string()).collect(),
            registry: weft_xds::name_table::KUBERNETES.into(),
            shortname: short.into(),
            namespace: "default".into(),
            ..Default::default()
        };
        nt.table.insert("reviews.default.svc.cluster.local".into(), info(&["10.96.0.11", "fd00::11"], "reviews"));
        let many: Vec<String> = (0..200).map(|i| format!("10.1.{}.{}", i / 250, i % 250 + 1)).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        nt.table.insert("headless.default.svc.cluster.local".into(), info(&many, "headless"));
        nt.table.insert("*.example.com".into(), weft_xds::name_table::NameInfo { ips: vec!["240.240.0.1".into()], ..Default::default() });
        let place =
            Place { namespace: "default".into(), domain: "svc.cluster.local".into(), search: vec!["default.svc.cluster.local".into()] };
        table::Table::build(&nt, &place)
    });
    match server::local(Some(table), msg, tcp) {
        server::Local::Reply(r) => Some(r),
        server::Local::Drop | server::Local::Forward(_) => None,
    }
}

/// Where Istio's agent listens.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:15053";

/// Where the DNS proxy listens: `DNS_PROXY_ADDR` from the environment (Istio's agent
/// variable), else [`DEFAULT_LISTEN`].
pub fn listen_address(env: &[(String, String)]) -> Result<SocketAddr, String> {
    match env.iter().find(|(k, _)| k == "DNS_PROXY_ADDR").map(|(_, v)| v.as_str()).filter(|v| !v.is_empty()) {
        Some(a) => a.parse().map_err(|_| format!("DNS_PROXY_ADDR {a:?}: expected IP:PORT")),
        None => DEFAULT_LISTEN.parse().map_err(|_| format!("{DEFAULT_LISTEN}: not an address")),
    }
}
const MAX_INFLIGHT: usize = 256;
const MAX_TCP: usize = 64;
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How long one upstream resolver has to answer (Istio's agent: 5 s).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// How the DNS proxy is set up.
#[derive(Debug, Clone)]
pub struct DnsOptions {
    /// Addresses to answer on (UDP and TCP each).
    pub listen: Vec<SocketAddr>,
    /// The pod's resolver configuration: upstream servers and the search list.
    pub resolv_conf: PathBuf,
    /// The proxy's namespace (short names of its own services are answered).
    pub namespace: String,
    /// The cluster's service domain (`svc.cluster.local`).
    pub domain: String,
}

/// Counters, shown by the admin's `/stats` (Istio's agent exports the same three).
#[derive(Debug, Default)]
pub struct DnsStats {
    pub requests: AtomicU64,
    pub upstream_requests: AtomicU64,
    pub upstream_failures: AtomicU64,
}

/// The running DNS proxy.
pub struct Dns {
    table: ArcSwapOption<table::Table>,
    place: Place,
    upstreams: Vec<SocketAddr>,
    inflight: Arc<Semaphore>,
    tcp_slots: Arc<Semaphore>,
    pub stats: DnsStats,
    /// Where it listens, once bound.
    pub bound: Vec<SocketAddr>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns").field("bound", &self.bound).field("upstreams", &self.upstreams).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("DNS proxy: cannot read {path}: {source}")]
    ResolvConf { path: PathBuf, source: std::io::Error },
    #[error("DNS proxy: cannot listen on {addr} ({proto}): {source}")]
    Bind { addr: SocketAddr, proto: &'static str, source: std::io::Error },
}

impl Dns {
    /// Reads the resolver configuration and binds every address (UDP and TCP); serving starts
    /// on the current runtime. Queries before the first name table are answered SERVFAIL, as
    /// Istio's agent answers them.
    pub async fn start(opts: DnsOptions) -> Result<Arc<Dns>, DnsError> {
        let text =
            std::fs::read_to_string(&opts.resolv_conf).map_err(|source| DnsError::ResolvConf { path: opts.resolv_conf.clone(), source })?;
        let conf = resolv::parse(&text);
        let mut sockets = Vec::new();
        for addr in &opts.listen {
            let udp = tokio::net::UdpSocket::bind(addr).await.map_err(|source| DnsError::Bind { addr: *addr, proto: "udp", source })?;
            let bound = udp.local_addr().unwrap_or(*addr);
            let tcp = tokio::net::TcpListener::bind(bound).await.map_err(|source| DnsError::Bind { addr: bound, proto: "tcp", source })?;
            sockets.push((bound, udp, tcp));
        }
        // Never forward to itself (a resolv.conf that already names the proxy).
        let upstreams: Vec<SocketAddr> = conf.nameservers.into_iter().filter(|u| !sockets.iter().any(|(b, _, _)| b == u)).collect();
        if upstreams.is_empty() {
            tracing::warn!(file = %opts.resolv_conf.display(), "DNS proxy: no upstream nameserver; names outside the mesh will get SERVFAIL");
        }
        let dns = Arc::new(Dns {
            table: ArcSwapOption::empty(),
            place: Place { namespace: opts.namespace, domain: opts.domain, search: conf.search },
            upstreams,
            inflight: Arc::new(Semaphore::new(MAX_INFLIGHT)),
            tcp_slots: Arc::new(Semaphore::new(MAX_TCP)),
            stats: DnsStats::default(),
            bound: sockets.iter().map(|(b, _, _)| *b).collect(),
        });
        for (addr, udp, tcp) in sockets {
            tokio::spawn(server::serve_udp(dns.clone(), Arc::new(udp)));
            tokio::spawn(server::serve_tcp(dns.clone(), tcp));
            tracing::info!(%addr, upstreams = ?dns.upstreams, search = ?dns.place.search, "DNS proxy listening (UDP and TCP)");
        }
        Ok(dns)
    }

    /// Takes the name table an xDS update carries (none: an empty table).
    pub fn apply(&self, resources: &std::collections::BTreeMap<String, weft_xds::ads_client::Resource>) -> Result<(), String> {
        let table = match resources.values().next() {
            Some(r) => <NameTable as prost::Message>::decode(r.bytes().as_ref()).map_err(|e| format!("NDS name table: {e}"))?,
            None => NameTable::default(),
        };
        self.update(&table);
        Ok(())
    }

    /// Takes a new name table from the control plane.
    fn update(&self, nt: &NameTable) {
        let t = table::Table::build(nt, &self.place);
        tracing::debug!(hosts = nt.table.len(), names = t.name_count(), "DNS name table updated");
        self.table.store(Some(Arc::new(t)));
    }

    /// Whether a name table has arrived.
    pub fn ready(&self) -> bool {
        self.table.load().is_some()
    }

    /// The counters as `/stats` lines.
    pub fn stat_lines(&self) -> Vec<(String, u64)> {
        let s = &self.stats;
        vec![
            ("dns.requests_total".into(), s.requests.load(Ordering::Relaxed)),
            ("dns.upstream_requests_total".into(), s.upstream_requests.load(Ordering::Relaxed)),
            ("dns.upstream_failures_total".into(), s.upstream_failures.load(Ordering::Relaxed)),
        ]
    }
}

/// An ADS handler that takes only the name table: what `weft agent` subscribes to next to a
/// stock Envoy, whose own stream carries the rest (pilot-agent intercepts NDS on Envoy's
/// stream; a stream of its own is simpler and carries the same table).
pub struct NamesOnly(pub Arc<Dns>);

impl weft_xds::ads_client::Handler for NamesOnly {
    fn apply<'a>(
        &'a self,
        type_url: &'static str,
        resources: &'a std::collections::BTreeMap<String, weft_xds::ads_client::Resource>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            if type_url != weft_xds::name_table::NAME_TABLE {
                return Err(format!("{type_url}: the agent takes only the name table"));
            }
            self.0.apply(resources)
        })
    }

    fn wanted(&self, _type_url: &'static str) -> std::collections::BTreeSet<String> {
        std::collections::BTreeSet::new()
    }
}
