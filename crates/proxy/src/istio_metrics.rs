//! Istio's standard metrics (`istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_request_bytes`, `istio_response_bytes`), with Istio's label set in Istio's order, its
//! histogram buckets and its `unknown`s, served next to the proxy's own stats on
//! `/stats/prometheus` (and so on 15090 and, merged, on 15020).
//!
//! A proxy reports them when it is a mesh proxy (its node metadata names its namespace, as
//! every sidecar and gateway bootstrap does), as Istio's sidecars do by default. Each request is
//! counted once per side: the client's proxy as `reporter="source"` on its outbound listeners
//! (gateways too), the server's as `reporter="destination"` on its inbound ones.
//!
//! **Who the peer is** comes from what the proxy already holds, so it works whatever runs on
//! the other side — a weft sidecar, a stock Envoy sidecar (which sends no peer metadata), or no
//! sidecar: the control plane puts Istio's `istio.workload` metadata on every EDS endpoint
//! (`name;namespace;canonical service;canonical revision;cluster`), and the proxy keeps an
//! address → workload table of every endpoint it was sent. The upstream host of a request names
//! the destination; the downstream address names the source (and the peer certificate its
//! principal, over mTLS). An address the table does not have is `unknown`, as Istio reports a
//! peer that exchanged no metadata.
//!
//! Memory stays bounded: label values come from the registry, status codes and flags, except
//! the inbound `destination_service`, taken from the request's authority — so series are capped
//! at [`MAX_SERIES`] per proxy and the authority at 256 bytes; a request that would open a
//! series past the cap is counted in `istio_metrics_series_dropped_total` instead.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::http::info::RequestInfo;
use crate::listener::ConnInfo;

mod plan;
pub use plan::{Metric, Plan};

/// Istio's label names, in the order Istio's stats filter writes them.
pub const LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

fn unknown() -> Workload {
    Workload {
        name: UNKNOWN.into(),
        namespace: UNKNOWN.into(),
        service: UNKNOWN.into(),
        revision: UNKNOWN.into(),
        cluster: UNKNOWN.into(),
        app: UNKNOWN.into(),
        version: UNKNOWN.into(),
        principal: UNKNOWN.into(),
    }
}

/// Istio's buckets for `istio_request_duration_milliseconds`.
const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0, 600000.0, 1800000.0,
    3600000.0,
];
/// Istio's buckets for `istio_request_bytes` and `istio_response_bytes`.
const SIZE_BUCKETS: [f64; 10] = [1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0, 10000000.0, 100000000.0, 1000000000.0];

/// The EDS resource the control plane lists the mesh's workloads and service addresses in
/// (its `peers` module), asked for by name.
pub const WORKLOADS: &str = "weft.workloads";

/// Series one proxy keeps at most.
pub const MAX_SERIES: usize = 10_000;
/// The longest authority kept as an inbound `destination_service`.
const MAX_AUTHORITY: usize = 256;

const UNKNOWN: &str = "unknown";
const DOMAIN_SUFFIX: &str = ".svc.cluster.local";

/// A workload as telemetry names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub service: String,
    pub revision: String,
    pub cluster: String,
    pub app: String,
    pub version: String,
    pub principal: String,
}

impl Workload {
    /// Istio's endpoint metadata `name;namespace;canonical service;canonical revision;cluster`.
    pub fn from_istio(text: &str) -> Option<Workload> {
        let mut parts = text.split(';');
        let (name, namespace, service, revision, cluster) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if name.is_empty() || namespace.is_empty() {
            return None;
        }
        let or_unknown = |s: &str| if s.is_empty() { UNKNOWN.to_owned() } else { s.to_owned() };
        Some(Workload {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            service: or_unknown(service),
            revision: or_unknown(revision),
            cluster: or_unknown(cluster),
            // Endpoint metadata carries the canonical names only; Istio reports them as both.
            app: or_unknown(service),
            version: or_unknown(revision),
            principal: UNKNOWN.to_owned(),
        })
    }

    /// The proxy's own workload, from its node metadata (what every Istio bootstrap carries).
    fn from_node(meta: &serde_json::Map<String, serde_json::Value>) -> Option<Workload> {
        let s = |k: &str| meta.get(k).and_then(serde_json::Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
        let namespace = s("NAMESPACE")?;
        let labels = meta.get("LABELS").and_then(serde_json::Value::as_object);
        let label =
            |keys: &[&str]| keys.iter().find_map(|k| labels.and_then(|l| l.get(*k)).and_then(serde_json::Value::as_str).map(str::to_owned));
        let name = s("WORKLOAD_NAME").unwrap_or_else(|| UNKNOWN.to_owned());
        let service = label(&["service.istio.io/canonical-name", "app.kubernetes.io/name", "app"]).unwrap_or_else(|| name.clone());
        let revision =
            label(&["service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"]).unwrap_or_else(|| "latest".into());
        let trust_domain = s("TRUST_DOMAIN").unwrap_or_else(|| "cluster.local".into());
        Some(Workload {
            principal: s("SERVICE_ACCOUNT")
                .map_or_else(|| UNKNOWN.to_owned(), |sa| format!("spiffe://{trust_domain}/ns/{namespace}/sa/{sa}")),
            app: label(&["app"]).unwrap_or_else(|| UNKNOWN.to_owned()),
            version: label(&["version"]).unwrap_or_else(|| UNKNOWN.to_owned()),
            cluster: s("CLUSTER_ID").unwrap_or_else(|| "Kubernetes".into()),
            name,
            namespace,
            service,
            revision,
        })
    }
}

/// Which side of a request a listener reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    /// The client's proxy (outbound listeners, gateways).
    Source,
    /// The server's proxy (inbound listeners).
    Destination,
}

#[derive(Clone)]
struct Histogram<const N: usize> {
    counts: [u64; N],
    count: u64,
    sum: f64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram { counts: [0; N], count: 0, sum: 0.0 }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&mut self, bounds: &[f64; N], v: f64) {
        if let Some(i) = bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }

    fn merge(&mut self, other: &Histogram<N>) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64; N]) {
        let mut cumulative = 0;
        for (b, c) in bounds.iter().zip(self.counts.iter()) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{}\"}} {cumulative}", number(*b));
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", number(self.sum));
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// A bucket bound or sum as Envoy's Prometheus output prints it (`%.32g`: `0.5`, `1000000000`).
fn number(v: f64) -> String {
    format!("{v}")
}

#[derive(Default)]
struct Series {
    /// A gRPC series also counts messages.
    grpc: bool,
    request_messages: u64,
    response_messages: u64,
    requests: u64,
    duration: Histogram<19>,
    request_bytes: Histogram<10>,
    response_bytes: Histogram<10>,
}

/// The addresses one ClusterLoadAssignment names: workloads, and service VIPs. The mesh's
/// workloads table is kept as a [`PeerTable`] instead, read entry by entry.
#[derive(Default)]
pub struct PeerSet {
    workloads: Vec<(IpAddr, Arc<Workload>)>,
    services: Vec<(IpAddr, String)>,
    table: Option<PeerTable>,
}

/// The mesh's workloads table (`weft.workloads`, one entry per address in the mesh) as it
/// arrived, its protobuf encoding, with an index from address to entry: an entry is decoded
/// when telemetry first names that address. A sidecar talks to few of the mesh's addresses, so
/// it keeps about 40 bytes per address instead of a decoded workload for each.
pub struct PeerTable {
    bytes: Arc<[u8]>,
    /// Where each address's `LbEndpoint` is in `bytes`.
    index: HashMap<IpAddr, (u32, u32)>,
    /// Entries decoded so far (bounded: forgotten all at once when full, and decoded again).
    seen: Mutex<HashMap<IpAddr, Entry>>,
    trust_domain: String,
}

/// What an address is: a workload (with the first service it backs), or a service's VIP.
#[derive(Clone, Default)]
struct Entry {
    workload: Option<Arc<Workload>>,
    /// Shared, so a lookup of the workload copies no string.
    service: Option<Arc<str>>,
}

/// Decoded table entries kept at most.
const SEEN_MAX: usize = 4096;

impl PeerTable {
    /// Indexes a ClusterLoadAssignment's endpoints by address; only the index is built now.
    fn read(bytes: Arc<[u8]>, trust_domain: &str) -> Result<PeerTable, String> {
        use envoy_types::pb::envoy::config::endpoint::v3::LbEndpoint;
        use prost::Message;
        let mut index = HashMap::new();
        // ClusterLoadAssignment.endpoints (2), each LocalityLbEndpoints.lb_endpoints (2).
        weft_xds::proto::each_message(&bytes, 2, |at, locality| {
            weft_xds::proto::each_message(locality, 2, |within, lbe| {
                let e = LbEndpoint::decode(lbe).map_err(|e| format!("lb_endpoint: {e}"))?;
                if let Some(ip) = address_of(&e) {
                    let start = u32::try_from(at + within).map_err(|_| "workloads table over 4 GiB".to_owned())?;
                    let len = u32::try_from(lbe.len()).map_err(|_| "workloads table over 4 GiB".to_owned())?;
                    index.entry(ip).or_insert((start, len));
                }
                Ok(())
            })
        })?;
        Ok(PeerTable { bytes, index, seen: Mutex::default(), trust_domain: trust_domain.to_owned() })
    }

    fn entry(&self, ip: &IpAddr) -> Option<Entry> {
        let &(start, len) = self.index.get(ip)?;
        if let Some(e) = self.seen.lock().get(ip) {
            return Some(e.clone());
        }
        let slice = self.bytes.get(start as usize..start as usize + len as usize)?;
        let e = <envoy_types::pb::envoy::config::endpoint::v3::LbEndpoint as prost::Message>::decode(slice).ok()?;
        let entry = entry_of(&e, &self.trust_domain);
        let mut seen = self.seen.lock();
        if seen.len() >= SEEN_MAX {
            seen.clear();
        }
        seen.insert(*ip, entry.clone());
        Some(entry)
    }
}

fn address_of(e: &envoy_types::pb::envoy::config::endpoint::v3::LbEndpoint) -> Option<IpAddr> {
    use envoy_types::pb::envoy::config::core::v3::address::Address as Kind;
    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
    let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else { return None };
    match ep.address.as_ref()?.address.as_ref()? {
        Kind::SocketAddress(sa) => sa.address.parse().ok(),
        _ => None,
    }
}

/// The `istio` metadata of a table entry: the workload (`name;namespace;…`, with its service
/// account as a principal) and the service.
fn entry_of(e: &envoy_types::pb::envoy::config::endpoint::v3::LbEndpoint, trust_domain: &str) -> Entry {
    use envoy_types::pb::google::protobuf::value::Kind;
    let istio = e.metadata.as_ref().and_then(|m| m.filter_metadata.get("istio"));
    let text = |k: &str| match istio.and_then(|s| s.fields.get(k)).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => Some(s.as_str()),
        _ => None,
    };
    let workload = text("workload").and_then(Workload::from_istio).map(|mut w| {
        if let Some(sa) = text("service_account") {
            w.principal = format!("spiffe://{trust_domain}/ns/{}/sa/{sa}", w.namespace);
        }
        Arc::new(w)
    });
    Entry { workload, service: text("service").map(Arc::from) }
}

/// What an address is: a workload's, or a service's VIP.
#[derive(Default)]
struct PeerMaps {
    workloads: HashMap<IpAddr, Arc<Workload>>,
    services: HashMap<IpAddr, String>,
}

impl PeerMaps {
    /// Adds `set`'s addresses this does not have yet (the first to name one wins; the
    /// workloads table, looked up first, wins over all of them).
    fn add(&mut self, set: &PeerSet) {
        for (ip, service) in &set.services {
            self.services.entry(*ip).or_insert_with(|| service.clone());
        }
        for (ip, w) in &set.workloads {
            self.workloads.entry(*ip).or_insert_with(|| w.clone());
        }
    }
}

/// The mesh's workloads table (it names every address in the mesh) and, on top, what the
/// endpoint sets name that it lacks: a service's first use does not rebuild the table.
#[derive(Default)]
struct Peers {
    table: Option<Arc<PeerSet>>,
    extra: PeerMaps,
}

impl Peers {
    fn table(&self) -> Option<&PeerTable> {
        self.table.as_ref().and_then(|s| s.table.as_ref())
    }

    /// The table's answer first, then the endpoint sets', field by field (a table entry may
    /// name a workload but no service, which an external service's endpoints then name).
    fn workload(&self, ip: &IpAddr) -> Option<Arc<Workload>> {
        self.table().and_then(|t| t.entry(ip)).and_then(|e| e.workload).or_else(|| self.extra.workloads.get(ip).cloned())
    }

    fn service(&self, ip: &IpAddr) -> Option<String> {
        self.table()
            .and_then(|t| t.entry(ip))
            .and_then(|e| e.service)
            .map(|s| s.to_string())
            .or_else(|| self.extra.services.get(ip).cloned())
    }
}

/// One proxy's Istio metrics.
pub struct Mesh {
    me: Workload,
    peers: ArcSwap<Peers>,
    series: Mutex<HashMap<String, Series>>,
    tcp: Mutex<HashMap<String, TcpSeries>>,
    dropped: AtomicU64,
    /// The Telemetry API's changes (`plan`).
    plan: ArcSwap<Plan>,
}

/// What a request or connection is, for naming its two sides.
struct Facts<'a> {
    conn: &'a ConnInfo,
    upstream_host: Option<std::net::SocketAddr>,
    upstream_tls: bool,
    upstream_cluster: Option<&'a str>,
    authority: &'a str,
}

struct Sides {
    peer: Option<Arc<Workload>>,
    service: Option<String>,
    security: &'static str,
    principal: Option<String>,
}

#[derive(Default)]
struct TcpSeries {
    opened: u64,
    closed: u64,
    sent: u64,
    received: u64,
}

impl Mesh {
    /// `Some` for a mesh proxy: one whose node metadata names its namespace.
    pub fn from_node(meta: &serde_json::Map<String, serde_json::Value>) -> Option<Arc<Mesh>> {
        let me = Workload::from_node(meta)?;
        Some(Arc::new(Mesh {
            me,
            peers: ArcSwap::default(),
            series: Mutex::default(),
            tcp: Mutex::default(),
            dropped: AtomicU64::new(0),
            plan: ArcSwap::default(),
        }))
    }

    /// Applies the Telemetry API's changes. A changed plan starts the series over (Prometheus
    /// sees a counter reset), since their labels change with it; the same plan pushed again
    /// changes nothing.
    pub fn set_plan(&self, plan: Plan) {
        if **self.plan.load() == plan {
            return;
        }
        let mut series = self.series.lock();
        let mut tcp = self.tcp.lock();
        self.plan.store(Arc::new(plan));
        series.clear();
        tcp.clear();
    }

    /// How often an open TCP connection reports its bytes (Istio's `tcp_reporting_duration`,
    /// the Telemetry API's `reportingInterval`).
    pub fn reporting_interval(&self) -> std::time::Duration {
        self.plan.load().reporting_interval.unwrap_or(std::time::Duration::from_secs(15))
    }

    /// The values of the side's upserted expressions, appended to a series key.
    fn extra(&self, reporter: Reporter, key: &mut String, act: &dyn weft_cel::Activation) {
        let plan = self.plan.load();
        let side = match reporter {
            Reporter::Source => &plan.client,
            Reporter::Destination => &plan.server,
        };
        for p in &side.extra {
            let mut v = p.label(act).unwrap_or_else(|| UNKNOWN.to_owned());
            // A label value is bounded like an authority, and never holds the key separator.
            v.retain(|c| c != SEP && !c.is_control());
            if v.len() > MAX_AUTHORITY {
                let mut cut = MAX_AUTHORITY;
                while !v.is_char_boundary(cut) {
                    cut -= 1;
                }
                v.truncate(cut);
            }
            key.push_str(&v);
            key.push(SEP);
        }
    }

    /// Replaces the address → workload table with the `istio.workload` metadata of every
    /// endpoint in `assignments` (ClusterLoadAssignments, proto3 JSON).
    pub fn set_peers<'a>(&self, assignments: impl Iterator<Item = &'a serde_json::Value>) {
        let sets: Vec<PeerSet> = assignments.map(|cla| self.peers_of(cla)).collect();
        self.set_peer_sets(None, sets.iter());
    }

    /// The peers one ClusterLoadAssignment names, read once per version of it (the proxy
    /// keeps these, not the assignment's JSON).
    pub fn peers_of(&self, cla: &serde_json::Value) -> PeerSet {
        let mut set = PeerSet::default();
        let lbs = cla.get("endpoints").and_then(|e| e.as_array()).into_iter().flatten();
        for lbe in lbs.flat_map(|l| l.get("lb_endpoints").and_then(|e| e.as_array()).into_iter().flatten()) {
            let Some(ip) = lbe.pointer("/endpoint/address/socket_address/address").and_then(|a| a.as_str()).and_then(|a| a.parse().ok())
            else {
                continue;
            };
            let istio = lbe.pointer("/metadata/filter_metadata/istio");
            if let Some(service) = istio.and_then(|i| i.get("service")).and_then(|s| s.as_str()) {
                set.services.push((ip, service.to_owned()));
            }
            let Some(mut w) = istio.and_then(|i| i.get("workload")).and_then(|w| w.as_str()).and_then(Workload::from_istio) else {
                continue;
            };
            if let Some(sa) = istio.and_then(|i| i.get("service_account")).and_then(|s| s.as_str()) {
                w.principal = format!("spiffe://{}/ns/{}/sa/{sa}", self.trust_domain(), w.namespace);
            }
            set.workloads.push((ip, Arc::new(w)));
        }
        set
    }

    /// The mesh's workloads table, from its protobuf encoding (see [`PeerTable`]).
    pub fn workloads_table(&self, bytes: Arc<[u8]>) -> Result<PeerSet, String> {
        Ok(PeerSet { table: Some(PeerTable::read(bytes, self.trust_domain())?), ..PeerSet::default() })
    }

    /// Replaces the address → workload table with `base` (the mesh's workloads) and then
    /// `rest`; the first to name an address wins.
    pub fn set_peer_sets<'a>(&self, base: Option<&'a Arc<PeerSet>>, rest: impl Iterator<Item = &'a PeerSet>) {
        let table = base.filter(|b| b.table.is_some()).cloned();
        let mut extra = PeerMaps::default();
        for set in base.filter(|b| b.table.is_none()).into_iter().map(Arc::as_ref).chain(rest) {
            extra.add(set);
        }
        self.peers.store(Arc::new(Peers { table, extra }));
    }

    /// The trust domain of this proxy's own principal.
    fn trust_domain(&self) -> &str {
        self.me.principal.strip_prefix("spiffe://").and_then(|p| p.split('/').next()).unwrap_or("cluster.local")
    }

    fn peer(&self, ip: Option<IpAddr>) -> Option<Arc<Workload>> {
        let ip = ip?;
        // An IPv4 peer seen on a dual-stack socket.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.peers.load().workload(&ip)
    }

    /// The service whose VIP `host` is.
    fn service_at(&self, host: &str) -> Option<String> {
        let ip: IpAddr = host.parse().ok()?;
        self.peers.load().service(&ip)
    }

    /// Who the two sides of a request or connection are, from this proxy's side `reporter`:
    /// the peer (from the table), the service, the security policy and the peer's principal
    /// when known otherwise than from the table.
    fn sides(&self, reporter: Reporter, f: &Facts<'_>) -> Sides {
        let me = &self.me;
        match reporter {
            Reporter::Source => {
                let peer = self.peer(f.upstream_host.map(|a| a.ip()));
                // The server's identity is known only over mTLS (the table's, which the SAN
                // check the control plane configures has verified).
                let principal = if f.upstream_tls { peer.as_ref().map(|p| p.principal.clone()) } else { Some(UNKNOWN.to_owned()) };
                let service = f.upstream_cluster.and_then(outbound_service).map(str::to_owned);
                Sides { peer, service, security: UNKNOWN, principal }
            }
            Reporter::Destination => {
                let peer = self.peer(Some(f.conn.remote.ip()));
                let mtls = f.conn.tls.as_ref().filter(|t| t.peer.is_some());
                let host = f.authority.rsplit_once(':').map_or(f.authority, |(h, _)| h);
                let service = self.service_at(host).or_else(|| inbound_service(f.authority, &me.namespace));
                let principal = Some(mtls.and_then(|t| t.peer_uri()).unwrap_or(UNKNOWN).to_owned());
                Sides { peer, service, security: if mtls.is_some() { "mutual_tls" } else { "none" }, principal }
            }
        }
    }

    /// A series key: the values of `names` (Istio's labels, HTTP's or TCP's) in order.
    fn key(&self, reporter: Reporter, sides: &Sides, protocol: &str, status: &str, grpc_status: &str, flags: &str) -> String {
        let unknown = unknown();
        let peer = sides.peer.as_deref().unwrap_or(&unknown);
        let (source, destination) = match reporter {
            Reporter::Source => (&self.me, peer),
            Reporter::Destination => (peer, &self.me),
        };
        let principal = sides.principal.as_deref();
        let (source_principal, destination_principal) = match reporter {
            Reporter::Source => (source.principal.as_str(), principal.unwrap_or(&destination.principal)),
            Reporter::Destination => (principal.unwrap_or(&source.principal), destination.principal.as_str()),
        };
        let service = sides.service.as_deref().unwrap_or(UNKNOWN);
        let (service_name, service_namespace) = match service.strip_suffix(DOMAIN_SUFFIX).and_then(|h| h.split_once('.')) {
            Some((name, ns)) => (name, ns),
            None => (service, destination.namespace.as_str()),
        };
        let values: [&str; 25] = [
            match reporter {
                Reporter::Source => "source",
                Reporter::Destination => "destination",
            },
            &source.name,
            &source.service,
            &source.revision,
            &source.namespace,
            source_principal,
            &source.app,
            &source.version,
            &source.cluster,
            &destination.name,
            &destination.namespace,
            destination_principal,
            &destination.app,
            &destination.version,
            service,
            &destination.service,
            &destination.revision,
            service_name,
            service_namespace,
            &destination.cluster,
            protocol,
            status,
            grpc_status,
            flags,
            sides.security,
        ];
        // One string per request as the series' key: the values, separated by a byte no
        // label value holds. TCP has no response code or gRPC status.
        let tcp = protocol == "tcp";
        let mut key = String::with_capacity(values.iter().map(|v| v.len() + 1).sum());
        for (i, v) in values.iter().enumerate() {
            if tcp && (i == 21 || i == 22) {
                continue;
            }
            key.push_str(v);
            key.push(SEP);
        }
        key
    }

    /// Counts one finished HTTP request.
    pub fn record_http(&self, reporter: Reporter, info: &RequestInfo, duration_ms: f64) {
        let grpc = info
            .req_headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        let grpc_status = if grpc {
            info.resp_trailers
                .get("grpc-status")
                .or_else(|| info.resp_headers.get("grpc-status"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        } else {
            ""
        };
        let facts = Facts {
            conn: &info.conn,
            upstream_host: info.upstream_host,
            upstream_tls: info.upstream_tls,
            upstream_cluster: info.upstream_cluster.as_deref(),
            authority: &info.authority,
        };
        let sides = self.sides(reporter, &facts);
        let mut key =
            self.key(reporter, &sides, if grpc { "grpc" } else { "http" }, &info.status.to_string(), grpc_status, &info.flags_text());
        self.extra(reporter, &mut key, &crate::attributes::Attributes(info));
        // Never both locks at once: the other kind's count first.
        let others = self.tcp.lock().len();
        let mut series = self.series.lock();
        let len = series.len() + others;
        let Some(s) = self.capped(&mut series, len, key) else { return };
        s.requests += 1;
        s.grpc = grpc;
        if grpc {
            s.request_messages += info.request_body.messages.load(Ordering::Relaxed);
            s.response_messages += info.resp_messages;
        }
        // The body bytes that came, or what Content-Length announced when none were read.
        let received = info.request_body.received.load(Ordering::Relaxed).max(info.bytes_received);
        s.duration.observe(&DURATION_BUCKETS, duration_ms);
        s.request_bytes.observe(&SIZE_BUCKETS, received as f64);
        s.response_bytes.observe(&SIZE_BUCKETS, info.bytes_sent as f64);
    }

    /// Counts a TCP connection opened through the proxy; the key to close it with (`None` when
    /// the series cap was reached).
    pub fn tcp_opened(
        &self,
        reporter: Reporter,
        conn: &ConnInfo,
        upstream: Option<std::net::SocketAddr>,
        upstream_tls: bool,
        cluster: Option<&str>,
    ) -> Option<String> {
        let facts =
            Facts { conn, upstream_host: upstream, upstream_tls, upstream_cluster: cluster, authority: conn.sni.as_deref().unwrap_or("") };
        let sides = self.sides(reporter, &facts);
        let mut key = self.key(reporter, &sides, "tcp", "", "", "-");
        let ctx = TcpOpen { conn, upstream, cluster };
        self.extra(reporter, &mut key, &crate::attributes::Attributes(&ctx));
        let others = self.series.lock().len();
        let mut tcp = self.tcp.lock();
        let len = tcp.len() + others;
        let s = self.capped(&mut tcp, len, key.clone())?;
        s.opened += 1;
        Some(key)
    }

    /// The series under `key`, made when there is room: `None`, counted as dropped, when `len`
    /// series (of both kinds) are already held.
    fn capped<'m, T: Default>(&self, map: &'m mut HashMap<String, T>, len: usize, key: String) -> Option<&'m mut T> {
        if len >= MAX_SERIES && !map.contains_key(&key) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(map.entry(key).or_default())
    }

    /// Adds bytes an open TCP connection carried since it last reported.
    pub fn tcp_bytes(&self, key: &str, received: u64, sent: u64) {
        if let Some(s) = self.tcp.lock().get_mut(key) {
            s.received += received;
            s.sent += sent;
        }
    }

    /// Counts a TCP connection `tcp_opened` counted as closed, with the bytes it carried since
    /// it last reported.
    pub fn tcp_closed(&self, key: &str, received: u64, sent: u64) {
        if let Some(s) = self.tcp.lock().get_mut(key) {
            s.closed += 1;
            s.received += received;
            s.sent += sent;
        }
    }

    /// The metrics in Prometheus' text format, each with the labels the plan gives it.
    pub fn render(&self) -> String {
        let plan = self.plan.load_full();
        let mut out = String::new();
        let series = self.series.lock();
        let counter = |out: &mut String, metric: Metric, name: &str, get: fn(&Series) -> Option<u64>| {
            let mut rows: BTreeMap<String, u64> = BTreeMap::new();
            for (k, s) in series.iter() {
                if let (Some(v), Some(l)) = (get(s), project(&plan, k, false, metric)) {
                    *rows.entry(l).or_default() += v;
                }
            }
            let _ = writeln!(out, "# TYPE {name} counter");
            for (l, v) in rows {
                let _ = writeln!(out, "{name}{{{l}}} {v}");
            }
        };
        fn histogram<const N: usize>(
            out: &mut String,
            series: &HashMap<String, Series>,
            plan: &Plan,
            metric: Metric,
            name: &str,
            get: fn(&Series) -> &Histogram<N>,
            bounds: &[f64; N],
        ) {
            let mut rows: BTreeMap<String, Histogram<N>> = BTreeMap::new();
            for (k, s) in series.iter() {
                if let Some(l) = project(plan, k, false, metric) {
                    rows.entry(l).or_default().merge(get(s));
                }
            }
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (l, h) in rows {
                h.render(out, name, &l, bounds);
            }
        }
        counter(&mut out, Metric::RequestCount, "istio_requests_total", |s| Some(s.requests));
        histogram(
            &mut out,
            &series,
            &plan,
            Metric::RequestDuration,
            "istio_request_duration_milliseconds",
            |s| &s.duration,
            &DURATION_BUCKETS,
        );
        counter(&mut out, Metric::GrpcRequestMessages, "istio_request_messages_total", |s| s.grpc.then_some(s.request_messages));
        counter(&mut out, Metric::GrpcResponseMessages, "istio_response_messages_total", |s| s.grpc.then_some(s.response_messages));
        histogram(&mut out, &series, &plan, Metric::RequestSize, "istio_request_bytes", |s| &s.request_bytes, &SIZE_BUCKETS);
        histogram(&mut out, &series, &plan, Metric::ResponseSize, "istio_response_bytes", |s| &s.response_bytes, &SIZE_BUCKETS);
        drop(series);
        let tcp = self.tcp.lock();
        for (metric, name, get) in [
            (Metric::TcpOpenedConnections, "istio_tcp_connections_opened_total", (|s: &TcpSeries| s.opened) as fn(&TcpSeries) -> u64),
            (Metric::TcpClosedConnections, "istio_tcp_connections_closed_total", |s| s.closed),
            (Metric::TcpSentBytes, "istio_tcp_sent_bytes_total", |s| s.sent),
            (Metric::TcpReceivedBytes, "istio_tcp_received_bytes_total", |s| s.received),
        ] {
            let mut rows: BTreeMap<String, u64> = BTreeMap::new();
            for (k, s) in tcp.iter() {
                if let Some(l) = project(&plan, k, true, metric) {
                    *rows.entry(l).or_default() += get(s);
                }
            }
            let _ = writeln!(out, "# TYPE {name} counter");
            for (l, v) in rows {
                let _ = writeln!(out, "{name}{{{l}}} {v}");
            }
        }
        let _ = writeln!(out, "# TYPE istio_metrics_series_dropped_total counter");
        let _ = writeln!(out, "istio_metrics_series_dropped_total {}", self.dropped.load(Ordering::Relaxed));
        out
    }

    /// Series held now (for tests and the memory bound).
    pub fn series_count(&self) -> usize {
        self.series.lock().len()
    }
}

/// Separates label values in a series key: a control character no value can hold (they come
/// from the control plane's registry, status codes, flags, and header values and authorities,
/// which HTTP parsing keeps free of control characters).
const SEP: char = '\u{1f}';

/// A series' labels for `metric` in Prometheus' form, as the plan of the series' side has them;
/// `None` when that side does not report the metric. TCP series lack `response_code` and
/// `grpc_response_status`.
fn project(plan: &Plan, key: &str, tcp: bool, metric: Metric) -> Option<String> {
    let values: Vec<&str> = key.split(SEP).collect();
    let side = if values.first() == Some(&"source") { &plan.client } else { &plan.server };
    let m = side.metric(metric)?;
    let names = LABELS.iter().enumerate().filter(|(i, _)| !tcp || (*i != 21 && *i != 22)).map(|(_, n)| *n);
    let mut pairs: Vec<(&str, &str)> = names.zip(values.iter().copied()).collect();
    let standard = pairs.len();
    pairs.retain(|(n, _)| !m.removed.iter().any(|r| r == n));
    for (label, i) in &m.upserts {
        let v = values.get(standard + i).copied().unwrap_or(UNKNOWN);
        match pairs.iter_mut().find(|(n, _)| n == label) {
            Some(p) => p.1 = v,
            None => pairs.push((label.as_str(), v)),
        }
    }
    let mut s = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"));
    }
    Some(s)
}

/// What a TCP connection that has just opened can tell an expression.
struct TcpOpen<'a> {
    conn: &'a ConnInfo,
    upstream: Option<std::net::SocketAddr>,
    cluster: Option<&'a str>,
}

impl crate::config::access_log::FormatContext for TcpOpen<'_> {
    fn value(&self, c: &crate::config::access_log::Command) -> Option<String> {
        use crate::config::access_log::Command;
        match c {
            Command::UpstreamHost => self.upstream.map(|u| u.to_string()),
            Command::UpstreamCluster => self.cluster.map(str::to_owned),
            Command::Protocol | Command::ResponseCode => None,
            other => crate::http::info::conn_value(self.conn, other),
        }
    }
}

/// The service of an outbound cluster (`outbound|9080|v1|reviews.default.svc.cluster.local`).
fn outbound_service(cluster: &str) -> Option<&str> {
    let mut parts = cluster.split('|');
    (parts.next()? == "outbound").then_some(())?;
    parts.nth(2).filter(|h| !h.is_empty())
}

/// The service an inbound request was sent to: its authority without the port, a short name
/// completed in the proxy's namespace.
fn inbound_service(authority: &str, namespace: &str) -> Option<String> {
    let host = authority.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(authority, |(h, _)| h);
    if host.is_empty() || host.len() > MAX_AUTHORITY || host.parse::<IpAddr>().is_ok() {
        return None;
    }
    Some(if host.contains('.') { host.to_ascii_lowercase() } else { format!("{}.{namespace}{DOMAIN_SUFFIX}", host.to_ascii_lowercase()) })
}

#[cfg(test)]
mod tests;
