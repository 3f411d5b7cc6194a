//! The ADS client: one gRPC stream to the control plane carrying clusters, endpoints,
//! listeners and routes, in state-of-the-world or incremental (delta) form.
//!
//! Resources arrive as protobuf `Any` and are kept in that compact form; the [`Handler`] gets the
//! whole current set of their type and decodes what is new or changed to proto3 JSON by
//! reflection (so it feeds the same serde types as a bootstrap file). The handler's verdict becomes the ACK or the NACK. EDS and RDS
//! names follow what the applied clusters and listeners refer to, as Envoy subscribes.
//! When the stream breaks, everything applied stays in force, and the client reconnects with
//! exponential backoff and full jitter, resuming from the versions it holds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{value::Kind, ListValue, Struct, Value};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::proto::{self, Any, CLUSTER, ENDPOINT, LISTENER, NAME_TABLE, ROUTE, SECRET, VIRTUAL_HOST};

/// One resource as it arrived: its protobuf encoding, several times smaller than its JSON, and
/// a hash of it. Held by the client (for partial responses and resumption) and shared with the
/// handler; decoded to proto3 JSON only when the handler needs it (a new or changed resource,
/// a config dump).
#[derive(Clone, Debug)]
pub struct Resource {
    pub type_url: &'static str,
    /// xxHash64 of the encoding: equal hashes mean the resource did not change.
    pub hash: u64,
    bytes: Arc<[u8]>,
}

impl Resource {
    pub fn new(type_url: &'static str, bytes: &[u8]) -> Resource {
        Resource { type_url, hash: xxhash_rust::xxh64::xxh64(bytes, 0), bytes: Arc::from(bytes) }
    }

    /// The resource's protobuf encoding (the `Any`'s value).
    pub fn bytes(&self) -> &Arc<[u8]> {
        &self.bytes
    }

    /// The resource as proto3 JSON (Envoy's snake_case names), decoded by reflection.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        proto::from_bytes(self.type_url, &self.bytes).map_err(|e| e.to_string())
    }
}

/// The name of an xDS resource: field 1 of each of the types weft serves (`name`, and
/// `cluster_name` of a ClusterLoadAssignment). Other fields are skipped unread.
#[derive(Clone, PartialEq, prost::Message)]
struct Named {
    #[prost(string, tag = "1")]
    name: String,
}

/// Applies configuration the control plane sent.
pub trait Handler: Send + Sync + 'static {
    /// Makes `resources` the whole current set of `type_url`. `Err`
    /// rejects the update, which must then leave everything as it was; the message goes back
    /// to the control plane in the NACK.
    fn apply<'a>(
        &'a self,
        type_url: &'static str,
        resources: &'a BTreeMap<String, Resource>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

    /// The names of `type_url` (EDS, RDS or SDS) that the applied clusters or listeners refer to.
    fn wanted(&self, type_url: &'static str) -> BTreeSet<String>;

    /// The stream to the control plane came up or went down.
    fn connected(&self, _up: bool) {}

    /// Notified when the proxy needs clusters it does not hold (`wanted(CLUSTER)` grew): the
    /// client then subscribes to them next to the wildcard, as Envoy's on-demand CDS does.
    fn on_demand(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }

    /// The control plane answered a subscription to `names` of `type_url` with "no such
    /// resource" (delta xDS: removed without ever being sent).
    fn not_found(&self, _type_url: &'static str, _names: &[String]) {}

    /// The stream has been quiet for a while and the client let go of what it needed only
    /// while decoding: a good moment to hand freed memory back to the system.
    fn quiet(&self) {}
}

/// How long the client keeps the decoded descriptor pool after the last response: long enough
/// for a burst of pushes to share one, short enough that an idle proxy does not carry it.
const POOL_IDLE: Duration = Duration::from_secs(10);

/// Waits until the pool has been unused for `POOL_IDLE` (forever when none is held).
async fn pool_idle(pool: &Option<(proto::PoolHandle, tokio::time::Instant)>) {
    match pool {
        Some((_, last)) => tokio::time::sleep_until(*last + POOL_IDLE).await,
        None => std::future::pending().await,
    }
}

/// Holds the pool from now for the next `POOL_IDLE`, so the handler's decoding of this burst
/// of responses shares one.
fn keep_pool(pool: &mut Option<(proto::PoolHandle, tokio::time::Instant)>) {
    let p = pool.take().map(|(p, _)| p).unwrap_or_else(proto::hold_pool);
    *pool = Some((p, tokio::time::Instant::now()));
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://host:port` of the control plane's ADS server.
    pub endpoint: String,
    pub node: Node,
    pub delta: bool,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Subscribe to Envoy's types (a proxy), or not (`weft agent`, which wants only names).
    pub envoy_types: bool,
    /// Subscribe to the NDS name table (a sidecar that answers its workload's DNS).
    pub name_table: bool,
}

impl ClientConfig {
    /// Whether the client subscribes to `t` at all.
    fn subscribes(&self, t: &str) -> bool {
        if t == NAME_TABLE {
            self.name_table
        } else {
            self.envoy_types
        }
    }
}

/// What the client knows, for the admin interface and logs.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClientStatus {
    pub connected: bool,
    pub connects: u64,
    /// Per short type name (CDS, EDS, LDS, RDS): the version last accepted.
    pub versions: BTreeMap<String, String>,
    /// Per short type name: the error of the last rejected update, if the last update was rejected.
    pub rejected: BTreeMap<String, String>,
    pub last_error: Option<String>,
    pub last_update_unix: u64,
}

#[derive(Default)]
struct TypeState {
    /// Last accepted version (SotW) and the nonce to answer with.
    version: String,
    nonce: String,
    /// Current names for EDS/RDS/SDS; CDS and LDS are wildcard, CDS plus the clusters fetched
    /// on demand.
    names: BTreeSet<String>,
    /// Accepted resources: name → (version, resource). Delta keeps per-resource versions.
    resources: BTreeMap<String, (String, Resource)>,
    /// Whether any update of this type was ever accepted: until then there is no "last good
    /// config" to keep, and the logs must not claim one.
    accepted: bool,
}

/// What a proxy keeps when an update or the stream fails, in words that are true.
fn kept(accepted: bool) -> &'static str {
    if accepted {
        "keeping the last good config"
    } else {
        "none was ever accepted, so there is no last good config to keep"
    }
}

/// The running client.
pub struct AdsClient {
    status: Arc<Mutex<ClientStatus>>,
}

impl AdsClient {
    /// Starts the client on the current runtime; it runs until the process ends.
    pub fn start(cfg: ClientConfig, handler: Arc<dyn Handler>) -> AdsClient {
        let status = Arc::new(Mutex::new(ClientStatus::default()));
        let st = status.clone();
        tokio::spawn(async move { run(cfg, handler, st).await });
        AdsClient { status }
    }

    pub fn status(&self) -> ClientStatus {
        self.status.lock().clone()
    }
}

async fn run(cfg: ClientConfig, handler: Arc<dyn Handler>, status: Arc<Mutex<ClientStatus>>) {
    let mut types: HashMap<&'static str, TypeState> = proto::ALL_TYPES.iter().map(|t| (*t, TypeState::default())).collect();
    let mut failures: u32 = 0;
    loop {
        let started = std::time::Instant::now();
        let result = if cfg.delta {
            stream_delta(&cfg, handler.as_ref(), &mut types, &status).await
        } else {
            stream_sotw(&cfg, handler.as_ref(), &mut types, &status).await
        };
        {
            let mut s = status.lock();
            s.connected = false;
            s.last_error = Some(result.clone());
        }
        handler.connected(false);
        // A stream that lived a while was healthy: start the backoff over.
        if started.elapsed() > Duration::from_secs(30) {
            failures = 0;
        }
        let wait = backoff(cfg.backoff_base, cfg.backoff_max, failures);
        failures = failures.saturating_add(1);
        tracing::warn!(endpoint = %cfg.endpoint, error = %result, retry_in_ms = wait.as_millis() as u64,
            "xDS stream to the control plane ended; {}", kept(types.values().any(|t| t.accepted)));
        tokio::time::sleep(wait).await;
    }
}

/// Exponential backoff with full jitter: uniform in [0, min(max, base·2^n)], at least 50 ms.
pub fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let cap = base.saturating_mul(1u32 << failures.min(20)).min(max);
    let ms = rand::random::<u64>() % (cap.as_millis() as u64 + 1);
    Duration::from_millis(ms.max(50))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

async fn connect(cfg: &ClientConfig) -> Result<AggregatedDiscoveryServiceClient<tonic::transport::Channel>, String> {
    let ep = tonic::transport::Endpoint::from_shared(cfg.endpoint.clone())
        .map_err(|e| format!("invalid xDS address {:?}: {e}", cfg.endpoint))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let ch = ep.connect().await.map_err(|e| format!("cannot connect to {}: {}", cfg.endpoint, error_chain(&e)))?;
    Ok(AggregatedDiscoveryServiceClient::new(ch).max_decoding_message_size(64 * 1024 * 1024))
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The types whose names follow `t`'s content (CDS → EDS, LDS → RDS and the SDS secrets its
/// TLS contexts name).
fn dependents(t: &'static str) -> &'static [&'static str] {
    match t {
        CLUSTER => &[ENDPOINT],
        LISTENER => &[ROUTE, SECRET],
        // A route configuration that says `vhds` starts the VHDS subscription.
        ROUTE => &[VIRTUAL_HOST],
        _ => &[],
    }
}

/// The resource names a request for `t` carries: none for a plain wildcard subscription, `*`
/// and the on-demand names when CDS has some (Envoy's wildcard-plus-names form).
fn request_names(t: &str, names: &BTreeSet<String>) -> Vec<String> {
    if !proto::is_wildcard_type(t) {
        return names.iter().cloned().collect();
    }
    if names.is_empty() {
        return Vec::new();
    }
    std::iter::once("*".to_owned()).chain(names.iter().cloned()).collect()
}

/// Takes over the names fetched on demand (clusters, and the hosts of virtual hosts); returns
/// each type whose names changed, with the names held before.
fn follow_demand(handler: &dyn Handler, types: &mut HashMap<&'static str, TypeState>) -> Vec<(&'static str, BTreeSet<String>)> {
    if handler.on_demand().is_none() {
        return Vec::new();
    }
    let mut changed = Vec::new();
    for t in [CLUSTER, VIRTUAL_HOST] {
        let want = handler.wanted(t);
        let st = types.get_mut(t).expect("all types present");
        if want != st.names {
            changed.push((t, std::mem::replace(&mut st.names, want)));
        }
    }
    changed
}

/// Waits for the handler's on-demand notification, or forever when it has none.
async fn demanded(notify: Option<&tokio::sync::Notify>) {
    match notify {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// Records a stream that came up, for the status, the handler and the log.
fn stream_up(cfg: &ClientConfig, handler: &dyn Handler, status: &Mutex<ClientStatus>, mode: &str) {
    {
        let mut s = status.lock();
        s.connected = true;
        s.connects += 1;
        s.last_error = None;
    }
    handler.connected(true);
    tracing::info!(endpoint = %cfg.endpoint, mode, "connected to the control plane");
}

/// After `t` was applied: for each dependent type (EDS after CDS; RDS and SDS after LDS) whose
/// names changed, takes them over, drops resources no longer named (so the next apply sees the
/// right set) and returns the type with the names it had before.
fn follow_names(
    handler: &dyn Handler,
    types: &mut HashMap<&'static str, TypeState>,
    t: &'static str,
) -> Vec<(&'static str, BTreeSet<String>)> {
    let mut changed = Vec::new();
    for &dep in dependents(t) {
        let want = handler.wanted(dep);
        let ds = types.get_mut(dep).expect("all types present");
        if want == ds.names {
            continue;
        }
        let before = std::mem::replace(&mut ds.names, want);
        let names = &ds.names;
        // A full-state type's names are not its resources' (VHDS asks by host); its next
        // response says what it holds.
        if !proto::is_full_state(dep) {
            ds.resources.retain(|k, _| names.contains(k));
        }
        changed.push((dep, before));
    }
    changed
}

/// Checks a resource's type and reads its name; the rest is decoded by the handler when needed.
fn decode(type_url: &'static str, any: &Any) -> Result<(String, Resource), String> {
    if any.type_url != type_url {
        return Err(format!("resource of type {} in a {} response", any.type_url, proto::short_name(type_url)));
    }
    let short = proto::short_name(type_url);
    if type_url == NAME_TABLE {
        // One unnamed table, as istiod sends it; the handler decodes it.
        return Ok((String::new(), Resource::new(type_url, &any.value)));
    }
    let named = <Named as prost::Message>::decode(any.value.as_slice()).map_err(|e| format!("{short} resource: {e}"))?;
    if named.name.is_empty() {
        return Err(format!("{short} resource without a name"));
    }
    Ok((named.name, Resource::new(type_url, &any.value)))
}

fn nack_status(message: &str) -> RpcStatus {
    // 3 = INVALID_ARGUMENT, what Envoy reports for a rejected update.
    RpcStatus { code: 3, message: message.to_string(), details: Vec::new() }
}

fn record(status: &Mutex<ClientStatus>, t: &str, result: &Result<(), String>, version: &str) {
    let mut s = status.lock();
    let short = proto::short_name(t).to_string();
    match result {
        Ok(()) => {
            s.versions.insert(short.clone(), version.to_string());
            s.rejected.remove(&short);
            s.last_update_unix = unix_now();
        }
        Err(e) => {
            s.rejected.insert(short, e.clone());
        }
    }
}

async fn stream_sotw(
    cfg: &ClientConfig,
    handler: &dyn Handler,
    types: &mut HashMap<&'static str, TypeState>,
    status: &Mutex<ClientStatus>,
) -> String {
    let mut client = match connect(cfg).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    let mut node = Some(cfg.node.clone());
    let mut request = |t: &'static str, st: &TypeState| DiscoveryRequest {
        version_info: st.version.clone(),
        node: node.take(),
        resource_names: request_names(t, &st.names),
        type_url: t.to_string(),
        response_nonce: st.nonce.clone(),
        error_detail: None,
        ..Default::default()
    };
    // Resume: wildcard CDS (and the clusters fetched on demand) and LDS; EDS, RDS and SDS
    // for the names already in use.
    follow_demand(handler, types);
    let notify = handler.on_demand();
    for t in proto::ALL_TYPES {
        let st = types.get_mut(t).expect("all types present");
        st.nonce.clear();
        if !proto::is_wildcard_type(t) && st.names.is_empty() || !cfg.subscribes(t) {
            continue;
        }
        if tx.send(request(t, st)).await.is_err() {
            return "request channel closed".into();
        }
    }
    let mut inbound = match client.stream_aggregated_resources(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(e) => return format!("ADS stream refused: {}", e.message()),
    };
    stream_up(cfg, handler, status, "state of the world");
    let mut pool = None;
    loop {
        let msg = tokio::select! {
            m = inbound.message() => m,
            () = pool_idle(&pool) => {
                pool = None;
                handler.quiet();
                continue;
            }
            () = demanded(notify.as_deref()) => {
                for (t, _) in follow_demand(handler, types) {
                    let st = types.get_mut(t).expect("all types present");
                    if tx.send(request(t, st)).await.is_err() {
                        return "request channel closed".into();
                    }
                }
                continue;
            }
        };
        let resp: DiscoveryResponse = match msg {
            Ok(Some(r)) => r,
            Ok(None) => return "the control plane closed the stream".into(),
            Err(e) => return format!("stream error: {}", e.message()),
        };
        let Some(t) = proto::known_type(&resp.type_url) else {
            tracing::warn!(type_url = %resp.type_url, "ignoring a response of a type weft did not ask for");
            continue;
        };
        let mut decoded = BTreeMap::new();
        let mut err = None;
        keep_pool(&mut pool);
        for any in &resp.resources {
            match decode(t, any) {
                Ok((name, json)) => {
                    if decoded.insert(name.clone(), json).is_some() {
                        err = Some(format!("{name}: sent twice in one response"));
                    }
                }
                Err(e) => err = Some(e),
            }
        }
        // CDS and LDS responses carry the whole set. EDS and RDS responses may carry only the
        // named resources that changed; the others keep what they had.
        let st = types.get_mut(t).expect("all types present");
        let mut next: BTreeMap<String, Resource> = if proto::is_full_state(t) {
            BTreeMap::new()
        } else {
            st.resources.iter().filter(|(k, _)| st.names.contains(*k)).map(|(k, (_, v))| (k.clone(), v.clone())).collect()
        };
        next.extend(decoded);
        let result = match err {
            Some(e) => Err(e),
            None => handler.apply(t, &next).await,
        };
        record(status, t, &result, &resp.version_info);
        st.nonce = resp.nonce.clone();
        let mut ack = match &result {
            Ok(()) => {
                st.version = resp.version_info.clone();
                st.resources = next.into_iter().map(|(k, v)| (k, (resp.version_info.clone(), v))).collect();
                st.accepted = true;
                tracing::debug!(type_url = t, version = %resp.version_info, resources = st.resources.len(), "accepted");
                request(t, st)
            }
            Err(e) => {
                tracing::warn!(type_url = t, version = %resp.version_info, error = %e, "rejected an xDS update; {}", kept(st.accepted));
                DiscoveryRequest { error_detail: Some(nack_status(e)), ..request(t, st) }
            }
        };
        ack.node = None;
        if tx.send(ack).await.is_err() {
            return "request channel closed".into();
        }
        {
            let mut follow: Vec<&'static str> =
                if result.is_ok() { follow_names(handler, types, t).into_iter().map(|(dep, _)| dep).collect() } else { Vec::new() };
            // After any update, also a rejected one and not only CDS: a notification that raced
            // a response is not lost, and names answered meanwhile leave the subscription.
            for (dep, _) in follow_demand(handler, types) {
                if !follow.contains(&dep) {
                    follow.push(dep);
                }
            }
            for dep in follow {
                let ds = types.get_mut(dep).expect("all types present");
                if tx.send(request(dep, ds)).await.is_err() {
                    return "request channel closed".into();
                }
            }
        }
    }
}

async fn stream_delta(
    cfg: &ClientConfig,
    handler: &dyn Handler,
    types: &mut HashMap<&'static str, TypeState>,
    status: &Mutex<ClientStatus>,
) -> String {
    let mut client = match connect(cfg).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    let mut node = Some(cfg.node.clone());
    // Resume: subscribe to what is in use and tell the server which versions are held.
    follow_demand(handler, types);
    let notify = handler.on_demand();
    for t in proto::ALL_TYPES {
        let st = types.get_mut(t).expect("all types present");
        let wildcard = proto::is_wildcard_type(t);
        if !wildcard && st.names.is_empty() || !cfg.subscribes(t) {
            continue;
        }
        let req = DeltaDiscoveryRequest {
            node: node.take(),
            type_url: t.to_string(),
            resource_names_subscribe: request_names(t, &st.names),
            initial_resource_versions: st.resources.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect(),
            ..Default::default()
        };
        if tx.send(req).await.is_err() {
            return "request channel closed".into();
        }
    }
    let mut inbound = match client.delta_aggregated_resources(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(e) => return format!("delta ADS stream refused: {}", e.message()),
    };
    stream_up(cfg, handler, status, "delta");
    let mut pool = None;
    loop {
        let msg = tokio::select! {
            m = inbound.message() => m,
            () = pool_idle(&pool) => {
                pool = None;
                handler.quiet();
                continue;
            }
            () = demanded(notify.as_deref()) => {
                for (t, before) in follow_demand(handler, types) {
                    if tx.send(resubscribe(t, &before, &types[t].names)).await.is_err() {
                        return "request channel closed".into();
                    }
                }
                continue;
            }
        };
        let resp: DeltaDiscoveryResponse = match msg {
            Ok(Some(r)) => r,
            Ok(None) => return "the control plane closed the stream".into(),
            Err(e) => return format!("stream error: {}", e.message()),
        };
        let Some(t) = proto::known_type(&resp.type_url) else {
            tracing::warn!(type_url = %resp.type_url, "ignoring a response of a type weft did not ask for");
            continue;
        };
        let st = types.get_mut(t).expect("all types present");
        let mut next = st.resources.clone();
        let mut err = None;
        keep_pool(&mut pool);
        for r in &resp.resources {
            let Some(any) = &r.resource else {
                err = Some(format!("{}: resource without a body", r.name));
                continue;
            };
            match decode(t, any) {
                Ok((name, res)) => {
                    next.insert(name, (r.version.clone(), res));
                }
                Err(e) => err = Some(format!("{}: {e}", r.name)),
            }
        }
        let mut never_held = Vec::new();
        for name in &resp.removed_resources {
            if next.remove(name).is_none() {
                never_held.push(name.clone());
            }
        }
        if !never_held.is_empty() {
            handler.not_found(t, &never_held);
        }
        let set: BTreeMap<String, Resource> = next.iter().map(|(k, (_, v))| (k.clone(), v.clone())).collect();
        let result = match err {
            Some(e) => Err(e),
            None => handler.apply(t, &set).await,
        };
        record(status, t, &result, &resp.system_version_info);
        let mut ack = DeltaDiscoveryRequest { type_url: t.to_string(), response_nonce: resp.nonce.clone(), ..Default::default() };
        match &result {
            Ok(()) => {
                st.resources = next;
                st.accepted = true;
                tracing::debug!(type_url = t, resources = st.resources.len(), "accepted");
            }
            Err(e) => {
                tracing::warn!(type_url = t, error = %e, "rejected an xDS update; {}", kept(st.accepted));
                ack.error_detail = Some(nack_status(e));
            }
        }
        if tx.send(ack).await.is_err() {
            return "request channel closed".into();
        }
        {
            let mut follow = if result.is_ok() { follow_names(handler, types, t) } else { Vec::new() };
            for (dep, before) in follow_demand(handler, types) {
                if !follow.iter().any(|(t, _)| *t == dep) {
                    follow.push((dep, before));
                }
            }
            for (dep, before) in follow {
                if tx.send(resubscribe(dep, &before, &types[dep].names)).await.is_err() {
                    return "request channel closed".into();
                }
            }
        }
    }
}

/// A delta request moving the subscription of `t` from `before` to `now`. A wildcard type that
/// gains its first on-demand names subscribes to `*` with them, so the wildcard stays.
fn resubscribe(t: &'static str, before: &BTreeSet<String>, now: &BTreeSet<String>) -> DeltaDiscoveryRequest {
    let mut subscribe: Vec<String> = now.difference(before).cloned().collect();
    if proto::is_wildcard_type(t) && before.is_empty() && !subscribe.is_empty() {
        subscribe.insert(0, "*".to_owned());
    }
    DeltaDiscoveryRequest {
        type_url: t.to_string(),
        resource_names_subscribe: subscribe,
        resource_names_unsubscribe: before.difference(now).cloned().collect(),
        ..Default::default()
    }
}

/// The node a proxy presents: id, cluster and metadata (a JSON object, as Istio's agent
/// sends `NAMESPACE`, `LABELS`, …).
pub fn node(id: &str, cluster: &str, metadata: &serde_json::Map<String, serde_json::Value>) -> Node {
    Node {
        id: id.to_string(),
        cluster: cluster.to_string(),
        metadata: Some(json_struct(metadata)),
        user_agent_name: "weft".to_string(),
        ..Default::default()
    }
}

fn json_struct(m: &serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct { fields: m.iter().map(|(k, v)| (k.clone(), json_value(v))).collect() }
}

fn json_value(v: &serde_json::Value) -> Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(ListValue { values: a.iter().map(json_value).collect() }),
        serde_json::Value::Object(o) => Kind::StructValue(json_struct(o)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_is_jittered() {
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(5);
        for n in 0..30 {
            let d = backoff(base, max, n);
            assert!(d <= max, "{d:?}");
            assert!(d >= Duration::from_millis(50));
        }
        let samples: BTreeSet<u128> = (0..50).map(|_| backoff(base, max, 10).as_millis()).collect();
        assert!(samples.len() > 10, "not jittered: {samples:?}");
    }

    #[test]
    fn node_metadata_becomes_a_protobuf_struct() {
        let meta = serde_json::json!({"NAMESPACE": "default", "LABELS": {"app": "reviews"}, "N": 2});
        let n = node("sidecar~10.0.0.1~r-1.default~default.svc.cluster.local", "r.default", meta.as_object().expect("object"));
        let fields = &n.metadata.expect("metadata").fields;
        assert_eq!(fields["NAMESPACE"].kind, Some(Kind::StringValue("default".into())));
        match &fields["LABELS"].kind {
            Some(Kind::StructValue(s)) => assert_eq!(s.fields["app"].kind, Some(Kind::StringValue("reviews".into()))),
            other => panic!("{other:?}"),
        }
    }
}
