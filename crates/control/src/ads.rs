//! The ADS server (gRPC, `envoy.service.discovery.v3.AggregatedDiscoveryService`): state of the
//! world and incremental (delta) xDS for clusters, endpoints, listeners and routes.
//!
//! Each connection regenerates its proxy's resources when the mesh config changes and sends
//! only what changed for it: nothing at all when its config is unaffected, only changed EDS/RDS
//! resources in state-of-the-world, only changed and removed resources in delta. Types go out
//! in Envoy's warming order: CDS, EDS, LDS, RDS.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::{value::Kind, Struct};
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;
use weft_xds::proto::{self, ALL_TYPES, CLUSTER, SECRET, VIRTUAL_HOST};

use crate::node::ProxyNode;
use crate::push::{Names, ProxyConfig, Res, Sel};
use crate::state::{unix_now, MeshState, ProxyStatus, Shared, TypeStatus};
use crate::wire::{Caller, Handler, Outgoing, Requests, Sender};

/// A response this big (a proxy's first full config, typically) needs a push slot.
const LARGE_PUSH: usize = 256 * 1024;
/// How long a large response waits for a slot before it goes out anyway.
const ADMIT_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Ads {
    pub shared: Arc<Shared>,
}

impl Handler for Ads {
    fn sotw(&self, requests: Requests<DiscoveryRequest>, out: Sender, caller: Option<Caller>) {
        let mut conn = Conn::new(self.shared.clone(), false);
        conn.caller = caller;
        tokio::spawn(async move { conn.run::<Sotw>(requests, out).await });
    }

    fn delta(&self, requests: Requests<DeltaDiscoveryRequest>, out: Sender, caller: Option<Caller>) {
        let mut conn = Conn::new(self.shared.clone(), true);
        conn.caller = caller;
        tokio::spawn(async move { conn.run::<Delta>(requests, out).await });
    }
}

/// What differs between state-of-the-world and delta xDS: how a request is read and how a
/// push is shaped. The event loop and the bookkeeping are shared.
trait Wire {
    type Req: prost::Message + Default + Send + 'static;
    fn on_request(conn: &mut Conn, req: Self::Req, tx: &Sender) -> impl std::future::Future<Output = Result<(), Status>> + Send;
    fn push(conn: &mut Conn, t: &'static str, always: bool, tx: &Sender) -> impl std::future::Future<Output = Result<(), ()>> + Send;
}

struct Sotw;
struct Delta;

impl Wire for Sotw {
    type Req = DiscoveryRequest;
    async fn on_request(conn: &mut Conn, req: DiscoveryRequest, tx: &Sender) -> Result<(), Status> {
        conn.on_sotw_request(req, tx).await
    }
    async fn push(conn: &mut Conn, t: &'static str, always: bool, tx: &Sender) -> Result<(), ()> {
        conn.push_sotw(t, always, tx).await
    }
}

impl Wire for Delta {
    type Req = DeltaDiscoveryRequest;
    async fn on_request(conn: &mut Conn, req: DeltaDiscoveryRequest, tx: &Sender) -> Result<(), Status> {
        conn.on_delta_request(req, tx).await
    }
    async fn push(conn: &mut Conn, t: &'static str, always: bool, tx: &Sender) -> Result<(), ()> {
        conn.push_delta(t, always, tx).await
    }
}

/// One type's subscription on one stream.
struct Sub {
    /// What the subscription covers. Names are shared with the config's where they name a
    /// resource weft has, and the set with other proxies that asked for the same.
    sel: Sel,
    /// Names subscribed since the last push (delta): those the config lacks are answered as
    /// removed, which tells an on-demand proxy the control plane has no such resource.
    asked: BTreeSet<Arc<str>>,
    /// What the proxy was last sent.
    sent: Sent,
    nonce: String,
    started: bool,
    /// The config the last push (or no-op check) of this type was computed from: when the
    /// type's sets are the same `Arc`s now, nothing can have changed.
    checked: Option<ProxyConfig>,
    /// VHDS over state of the world: the names the last request listed, so a host is answered
    /// as having no virtual host once, when first asked, not again in every later request
    /// (an ACK or NACK) that still lists it.
    last_hosts: BTreeSet<String>,
}

impl Default for Sub {
    fn default() -> Sub {
        Sub {
            sel: Sel::All,
            asked: BTreeSet::new(),
            sent: Sent::default(),
            nonce: String::new(),
            started: false,
            checked: None,
            last_hosts: BTreeSet::new(),
        }
    }
}

/// What a proxy holds of one type. Not a list per proxy: the config and subscription the last
/// push was computed from (both shared), less what it unsubscribed since, plus what a
/// reconnecting delta client said it already had.
#[derive(Default)]
struct Sent {
    from: Option<(ProxyConfig, Sel)>,
    dropped: BTreeSet<Arc<str>>,
    known: BTreeMap<Arc<str>, u64>,
}

impl Sent {
    fn hash(&self, t: &str, name: &str) -> Option<u64> {
        if self.dropped.contains(name) {
            return None;
        }
        let sent = self.from.as_ref().filter(|(_, sel)| sel.covers(t, name));
        sent.and_then(|(config, _)| config.hash(t, name)).or_else(|| self.known.get(name).copied())
    }

    /// Every name the proxy holds (possibly repeated).
    fn names<'a>(&'a self, t: &'a str) -> impl Iterator<Item = &'a Arc<str>> + 'a {
        let sent = self.from.as_ref().map(|(config, sel)| config.names(t, sel)).into_iter().flatten();
        sent.filter(|n| !self.dropped.contains(n.as_ref())).chain(self.known.keys())
    }

    fn remove(&mut self, name: &str) {
        self.known.remove(name);
        if self.from.is_some() {
            self.dropped.insert(Arc::from(name));
        }
    }

    fn clear(&mut self) {
        *self = Sent::default();
    }

    fn replace(&mut self, config: &ProxyConfig, sel: &Sel) {
        *self = Sent { from: Some((config.clone(), sel.clone())), ..Sent::default() };
    }
}

struct Conn {
    shared: Arc<Shared>,
    id: u64,
    delta: bool,
    node: Option<ProxyNode>,
    state: Arc<MeshState>,
    config: ProxyConfig,
    subs: BTreeMap<&'static str, Sub>,
    nonce: u64,
    /// A push slot (see `admit`), and the type whose answer releases it.
    slot: Option<(&'static str, OwnedSemaphorePermit)>,
    /// The authenticated caller, on the TLS port.
    caller: Option<Caller>,
    /// Hosts the proxy asked VHDS for that named no virtual host (bounded): asked again at each
    /// new mesh version, so a service added since is sent without the proxy asking again.
    unresolved_hosts: BTreeSet<Arc<str>>,
}

/// Unresolved hosts remembered per connection at most.
const MAX_UNRESOLVED: usize = 256;

/// The workload a proxy belongs to, for its working set: replicas and restarts of one
/// workload share it.
fn working_set_key(t: &str, node: &ProxyNode) -> String {
    let app = ["app", "app.kubernetes.io/name", "service.istio.io/canonical-name"]
        .iter()
        .find_map(|k| node.labels.get(*k).cloned())
        .or_else(|| node.workload_name.clone())
        .unwrap_or_else(|| node.name.clone());
    format!("{}:{}/{}/{app}", proto::short_name(t), node.namespace, node.service_account.as_deref().unwrap_or(""))
}

pub fn struct_to_json(s: &Struct) -> serde_json::Value {
    serde_json::Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect())
}

fn value_to_json(v: &envoy_types::pb::google::protobuf::Value) -> serde_json::Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::json!(n),
        Some(Kind::StringValue(s)) => serde_json::json!(s),
        Some(Kind::BoolValue(b)) => serde_json::json!(b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => serde_json::Value::Array(l.values.iter().map(value_to_json).collect()),
    }
}

impl Conn {
    fn new(shared: Arc<Shared>, delta: bool) -> Conn {
        let id = shared.connection_id();
        let state = shared.current.borrow().clone();
        Conn {
            shared,
            id,
            delta,
            node: None,
            state,
            config: ProxyConfig::default(),
            subs: BTreeMap::new(),
            nonce: 0,
            slot: None,
            caller: None,
            unresolved_hosts: BTreeSet::new(),
        }
    }

    /// Reads the node from the first request; refuses a node weft cannot place.
    fn identify(&mut self, node: Option<&Node>) -> Result<(), Status> {
        if self.node.is_some() {
            return Ok(());
        }
        let Some(n) = node else { return Err(Status::invalid_argument("the first request must carry the node")) };
        let meta = n.metadata.as_ref().map(struct_to_json).unwrap_or_default();
        let mut node = ProxyNode::parse(&n.id, &meta).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(Caller(id)) = &self.caller {
            // A token for one namespace gets no other namespace's config (istiod's check).
            let other_account = node.service_account.as_deref().is_some_and(|sa| sa != id.service_account);
            if node.namespace != id.namespace || other_account {
                tracing::warn!(node = %node.id, caller = %format!("{}/{}", id.namespace, id.service_account), "xDS stream refused: the proxy's namespace or service account is not its identity's");
                return Err(Status::permission_denied(format!(
                    "the proxy says {:?}/{:?}, its token is for {:?}/{:?}",
                    node.namespace,
                    node.service_account.as_deref().unwrap_or(""),
                    id.namespace,
                    id.service_account
                )));
            }
        }
        node.enrich(&self.state.model);
        tracing::info!(conn = self.id, node = %node.id, delta = self.delta, "proxy connected");
        self.config = self.state.cache.config(&self.state.model, &node, None);
        self.shared.proxies.lock().insert(
            self.id,
            ProxyStatus {
                proxy: node.name.clone(),
                node_id: node.id.clone(),
                connection: self.id,
                delta: self.delta,
                connected_at: unix_now(),
                types: BTreeMap::new(),
                last_config: Some(self.config.clone()),
                clusters: None,
                virtual_hosts: None,
            },
        );
        self.node = Some(node);
        Ok(())
    }

    fn status(&self, type_url: &str, f: impl FnOnce(&mut TypeStatus)) {
        if let Some(p) = self.shared.proxies.lock().get_mut(&self.id) {
            f(p.types.entry(proto::short_name(type_url).to_string()).or_default());
        }
    }

    fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        format!("{}-{}", self.id, self.nonce)
    }

    /// Regenerates for a new mesh state; returns whether this proxy's config changed.
    fn regenerate(&mut self, state: Arc<MeshState>) -> bool {
        self.state = state;
        let Some(node) = self.node.as_mut() else { return false };
        node.enrich(&self.state.model);
        let c = self.state.cache.config(&self.state.model, node, Some(&self.config));
        if c.same(&self.config) {
            // Unchanged for this proxy; hold the new version's parts so the old can be freed.
            self.config = c;
            return false;
        }
        self.config = c;
        if let Some(p) = self.shared.proxies.lock().get_mut(&self.id) {
            p.last_config = Some(self.config.clone());
        }
        // Service clusters and virtual hosts the mesh no longer has leave an on-demand
        // subscription (the push removes them from the proxy); they come back if the proxy
        // asks again.
        for t in [CLUSTER, VIRTUAL_HOST] {
            let Some(Sel::Demand(names)) = self.subs.get(t).map(|s| s.sel.clone()) else { continue };
            let mut want: BTreeSet<Arc<str>> = names.iter().cloned().collect();
            if t == VIRTUAL_HOST {
                // A host that named nothing may name a service added since; a wildcard held
                // brings the more specific hosts it would shadow, also new ones.
                let aliases = &self.config.shared.aliases;
                self.unresolved_hosts.retain(|h| match aliases.resolve(h) {
                    Some(found) => {
                        want.extend(found);
                        false
                    }
                    None => true,
                });
                let companions: Vec<Arc<str>> = want.iter().flat_map(|n| aliases.companions_of(n)).collect();
                want.extend(companions);
            }
            if want.len() != names.len() || names.iter().any(|n| self.config.hash(t, n).is_none()) {
                let kept = self.demand_names(t, None, want);
                if let Some(sub) = self.subs.get_mut(t) {
                    sub.sel = Sel::Demand(kept);
                }
            }
        }
        true
    }

    /// Whether type `t` is scoped to what the proxy asked for: CDS of a proxy that fetches
    /// service clusters on first use.
    fn demands(&self, t: &str) -> bool {
        (t == CLUSTER || t == VIRTUAL_HOST) && self.node.as_ref().is_some_and(|n| n.on_demand)
    }

    /// What a proxy asking VHDS for `names` (`<route configuration>/<host>`) means: the
    /// virtual hosts they resolve to, and the names that resolve to none.
    fn resolve_hosts<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> (BTreeSet<Arc<str>>, Vec<Arc<str>>) {
        let (mut found, mut missing): (BTreeSet<Arc<str>>, Vec<Arc<str>>) = (BTreeSet::new(), Vec::new());
        for n in names {
            match self.config.shared.aliases.resolve(n) {
                Some(r) => found.extend(r),
                None => missing.push(Arc::from(n)),
            }
        }
        for m in &missing {
            self.remember_unresolved(m);
        }
        (found, missing)
    }

    /// Keeps `host`, which named no virtual host, to resolve again at each mesh version.
    fn remember_unresolved(&mut self, host: &Arc<str>) {
        if self.unresolved_hosts.len() < MAX_UNRESOLVED {
            self.unresolved_hosts.insert(host.clone());
        }
    }

    /// The service clusters an on-demand proxy gets: what it had, what it asks for now, and
    /// what proxies of its workload used before (so a restarted or added replica has its
    /// working set at once), less what the mesh no longer has. What it asks for joins its
    /// workload's working set.
    fn demand_names(&self, t: &'static str, before: Option<&BTreeSet<Arc<str>>>, listed: BTreeSet<Arc<str>>) -> Names {
        let mut names: BTreeSet<Arc<str>> = before.map(|b| b.iter().cloned().collect()).unwrap_or_default();
        names.extend(listed.iter().cloned());
        if let Some(key) = self.node.as_ref().map(|n| working_set_key(t, n)) {
            let mut sets = self.shared.working_sets.lock();
            let set = sets.entry(key).or_default();
            set.extend(listed.into_iter().filter(|n| self.config.hash(t, n).is_some()));
            set.retain(|n| self.config.hash(t, n).is_some());
            names.extend(set.iter().cloned());
        }
        names.retain(|n| self.config.hash(t, n).is_some());
        self.state.cache.intern_names(names)
    }

    /// The proxy unsubscribed from `names` (delta): its workload no longer uses them.
    fn forget_demand(&self, t: &'static str, names: &[&String]) {
        if names.is_empty() {
            return;
        }
        if let Some(key) = self.node.as_ref().map(|n| working_set_key(t, n)) {
            if let Some(set) = self.shared.working_sets.lock().get_mut(&key) {
                for n in names {
                    set.remove(n.as_str());
                }
            }
        }
    }

    /// Resources of type `t` its subscription covers, encoded and hashed.
    fn wanted(&self, t: &str) -> BTreeMap<Arc<str>, Arc<Res>> {
        if t == SECRET && !self.may_have_secrets() {
            return BTreeMap::new();
        }
        match self.subs.get(t) {
            Some(sub) => self.config.select(t, &sub.sel),
            None => self.config.select(t, &Sel::All),
        }
    }

    /// Whether this stream may carry a gateway's TLS secrets: an authenticated caller (its
    /// namespace was checked against the node's, and the config holds only that namespace's
    /// secrets), or any caller where the plaintext port is trusted with them (no API server).
    fn may_have_secrets(&self) -> bool {
        self.caller.is_some() || self.shared.plaintext_secrets
    }

    /// Large responses wait for one of a bounded number of slots, held until the proxy ACKs or
    /// NACKs, so a fleet connecting at once does not have every full config in flight (and in
    /// memory) together. A connection that holds a slot keeps it for its next large push:
    /// Envoy ACKs CDS only once the clusters' EDS has arrived, so waiting for a second slot
    /// could stall on proxies that wait on us. A proxy that never answers cannot stall the
    /// others for long: after `ADMIT_WAIT` the response goes out without a slot.
    async fn admit(&mut self, t: &'static str, resources: &[Arc<Res>]) {
        let bytes: usize = resources.iter().map(|r| r.encoded.len()).sum();
        if bytes < LARGE_PUSH {
            return;
        }
        if let Some((owner, _)) = self.slot.as_mut() {
            *owner = t;
            return;
        }
        let permit = tokio::time::timeout(ADMIT_WAIT, self.shared.push_slots.clone().acquire_owned()).await;
        self.slot = permit.ok().and_then(Result::ok).map(|p| (t, p));
    }

    /// The connection's event loop, shared by both protocols: requests from the proxy, and
    /// new mesh generations to push.
    async fn run<W: Wire>(mut self, mut input: Requests<W::Req>, tx: Sender) {
        let mut changes = self.shared.current.subscribe();
        'conn: loop {
            tokio::select! {
                msg = input.message() => match msg {
                    Ok(Some(req)) => {
                        if let Err(status) = W::on_request(&mut self, req, &tx).await {
                            let _ = tx.send(Err(status)).await;
                            break;
                        }
                    }
                    Ok(None) | Err(_) => break,
                },
                changed = changes.changed() => {
                    if changed.is_err() { break; }
                    let state = changes.borrow_and_update().clone();
                    if self.regenerate(state) {
                        for t in ALL_TYPES {
                            if self.subs.get(t).is_some_and(|s| s.started) && W::push(&mut self, t, false, &tx).await.is_err() {
                                break 'conn;
                            }
                        }
                    }
                }
            }
        }
        self.disconnect();
    }

    /// Records the proxy's answer to the response carrying the type's current nonce. An ACK
    /// confirms `acked` (or, when the protocol carries no version, what was last sent).
    fn on_reply(&mut self, t: &'static str, error: Option<&str>, acked: Option<String>) {
        if self.slot.as_ref().is_some_and(|(owner, _)| *owner == t) {
            self.slot = None;
        }
        match error {
            Some(err) => {
                tracing::warn!(conn = self.id, type_ = proto::short_name(t), error = %err, "proxy rejected config (NACK); it keeps its last good config");
                let msg = err.to_string();
                self.status(t, |s| s.nack = Some(msg));
            }
            None => self.status(t, |s| {
                s.acked_version = acked.or_else(|| s.sent_version.clone());
                s.nack = None;
            }),
        }
    }

    /// Bookkeeping after deciding to send `wanted` for `t`: what the proxy now has, a fresh
    /// nonce, and the status `proxy-status` shows. Returns the version and nonce to send.
    fn record_push(&mut self, t: &'static str, count: usize) -> (String, String) {
        let nonce = self.next_nonce();
        let sub = self.subs.entry(t).or_default();
        sub.sent.replace(&self.config, &sub.sel);
        if t == CLUSTER || t == VIRTUAL_HOST {
            let sel = sub.sel.clone();
            if let Some(p) = self.shared.proxies.lock().get_mut(&self.id) {
                *if t == CLUSTER { &mut p.clusters } else { &mut p.virtual_hosts } = Some(sel);
            }
        }
        let sub = self.subs.entry(t).or_default();
        sub.checked = Some(self.config.clone());
        sub.nonce = nonce.clone();
        let version = self.state.version.to_string();
        self.status(t, |s| {
            s.sent_version = Some(version.clone());
            s.sent_nonce = Some(nonce.clone());
            s.resources = count;
        });
        (version, nonce)
    }

    // ----- state of the world -----

    async fn on_sotw_request(&mut self, req: DiscoveryRequest, tx: &Sender) -> Result<(), Status> {
        self.identify(req.node.as_ref())?;
        let Some(t) = proto::known_type(&req.type_url) else {
            tracing::debug!(conn = self.id, type_url = %req.type_url, "unsupported type requested; ignoring");
            return Ok(());
        };
        let sub = self.subs.entry(t).or_default();
        if !req.response_nonce.is_empty() {
            if req.response_nonce != sub.nonce {
                return Ok(()); // Stale: answers a response that has been superseded.
            }
            self.on_reply(t, req.error_detail.as_ref().map(|e| e.message.as_str()), Some(req.version_info.clone()));
        }
        let wildcard = proto::is_wildcard_type(t) && req.resource_names.is_empty() || req.resource_names.iter().any(|n| n == "*");
        let mut listed = req.resource_names.iter().filter(|n| *n != "*").map(|n| self.config.intern(t, n)).collect::<BTreeSet<_>>();
        // VHDS is asked by host: each resolves to a virtual host, or is answered as having none.
        let mut unknown_hosts = Vec::new();
        if t == VIRTUAL_HOST {
            (listed, unknown_hosts) = self.resolve_hosts(req.resource_names.iter().filter(|n| *n != "*").map(String::as_str));
            let sub = self.subs.entry(t).or_default();
            unknown_hosts.retain(|h| !sub.last_hosts.contains(h.as_ref()));
            sub.last_hosts = req.resource_names.iter().cloned().collect();
        }
        let sel = if wildcard && self.demands(t) {
            let before = self.subs.get(t).and_then(|s| s.sel.listed().cloned());
            Sel::Demand(self.demand_names(t, before.as_deref(), listed))
        } else if wildcard {
            Sel::All
        } else {
            Sel::Named(self.state.cache.intern_names(listed))
        };
        if t == SECRET && !req.resource_names.is_empty() && !self.may_have_secrets() {
            self.refuse_secrets(&req.resource_names);
        }
        let on_demand = self.node.as_ref().is_some_and(|n| n.on_demand);
        let sub = self.subs.entry(t).or_default();
        let first = !sub.started;
        let resubscribed = sel != sub.sel;
        sub.asked.extend(unknown_hosts);
        if first || resubscribed || !sub.asked.is_empty() {
            sub.started = true;
            sub.sel = sel;
            // A changed subscription gets the full current set for it. A weft proxy that
            // fetches on demand keeps the EDS and RDS resources a response leaves out, so it
            // gets only what it did not have: the first use of a service does not resend every
            // endpoint set it holds (nor the mesh's workloads).
            if !on_demand || first {
                sub.sent.clear();
            }
            self.push_sotw(t, true, tx).await.map_err(|_| Status::cancelled("stream closed"))?;
        }
        Ok(())
    }

    /// True when type `t` cannot have changed since it was last pushed or checked.
    fn unchanged_since_check(&mut self, t: &'static str) -> bool {
        let config = &self.config;
        self.subs.get(t).and_then(|s| s.checked.as_ref()).is_some_and(|c| config.type_unchanged(t, c))
    }

    fn mark_checked(&mut self, t: &'static str) {
        let c = self.config.clone();
        self.subs.entry(t).or_default().checked = Some(c);
    }

    async fn push_sotw(&mut self, t: &'static str, always: bool, tx: &Sender) -> Result<(), ()> {
        if !always && self.unchanged_since_check(t) {
            return Ok(());
        }
        let wanted = self.wanted(t);
        let sub = self.subs.entry(t).or_default();
        let changed = |n: &str, r: &Res| sub.sent.hash(t, n) != Some(r.hash);
        let removed = sub.sent.names(t).any(|n| !wanted.contains_key(n));
        if !always && !removed && !wanted.iter().any(|(n, r)| changed(n, r)) {
            self.mark_checked(t);
            return Ok(());
        }
        // CDS and LDS are state of the world: every response carries every resource. EDS and
        // RDS responses need only the changed ones.
        let full = proto::is_full_state(t);
        // `always` answers a request, which must get a response; what it carries is still only
        // what the proxy lacks, unless it holds nothing (`sent` cleared).
        let mut resources: Vec<Arc<Res>> = wanted.iter().filter(|(n, r)| full || changed(n, r)).map(|(_, r)| r.clone()).collect();
        // Hosts asked of VHDS that name no virtual host: said so, once, by a virtual host of
        // that name with no domains (state of the world has no "does not exist").
        resources.extend(std::mem::take(&mut sub.asked).into_iter().map(|alias| no_such_host(&alias)));
        let count = wanted.len();
        // Not held while waiting for a slot: a fleet waiting to be admitted would each hold one.
        drop(wanted);
        let (version, nonce) = self.record_push(t, count);
        self.admit(t, &resources).await;
        tracing::debug!(conn = self.id, type_ = proto::short_name(t), version = %version, resources = resources.len(), "push");
        tx.send(Ok(Outgoing::Sotw { version, type_url: t.to_string(), nonce, resources })).await.map_err(|_| ())
    }

    // ----- delta -----

    async fn on_delta_request(&mut self, req: DeltaDiscoveryRequest, tx: &Sender) -> Result<(), Status> {
        self.identify(req.node.as_ref())?;
        let Some(t) = proto::known_type(&req.type_url) else { return Ok(()) };
        if t == SECRET && !req.resource_names_subscribe.is_empty() && !self.may_have_secrets() {
            self.refuse_secrets(&req.resource_names_subscribe);
        }
        let sub = self.subs.entry(t).or_default();
        if !req.response_nonce.is_empty() && req.response_nonce == sub.nonce {
            // Delta requests carry no version: an ACK confirms what was last sent.
            self.on_reply(t, req.error_detail.as_ref().map(|e| e.message.as_str()), None);
        }
        let demands = self.demands(t);
        // VHDS is asked by host: what a host resolves to joins the subscription; a host that
        // names no virtual host is answered as removed.
        let (hosts_found, hosts_missing) = if t == VIRTUAL_HOST {
            self.resolve_hosts(req.resource_names_subscribe.iter().filter(|n| *n != "*").map(String::as_str))
        } else {
            Default::default()
        };
        let sub = self.subs.entry(t).or_default();
        let first = !sub.started;
        if first {
            sub.started = true;
            let wildcard = proto::is_wildcard_type(t) && req.resource_names_subscribe.is_empty();
            sub.sel = if wildcard { Sel::All } else { Sel::Named(Names::default()) };
            // What the proxy already has (after a reconnect) need not be sent again.
            for (n, v) in &req.initial_resource_versions {
                if let Ok(h) = v.parse::<u64>() {
                    sub.sent.known.insert(Arc::from(n.as_str()), h);
                }
            }
        }
        let mut resubscribed = false;
        let mut listed: BTreeSet<Arc<str>> = sub.sel.listed().map(|n| n.iter().cloned().collect()).unwrap_or_default();
        let mut wildcard = sub.sel == Sel::All || matches!(sub.sel, Sel::Demand(_));
        for n in &req.resource_names_subscribe {
            if n == "*" {
                resubscribed |= !wildcard;
                wildcard = true;
            } else if t != VIRTUAL_HOST && !listed.contains(n.as_str()) {
                let n = self.config.intern(t, n);
                listed.insert(n.clone());
                sub.asked.insert(n);
                resubscribed = true;
            }
        }
        for r in hosts_found {
            resubscribed |= listed.insert(r);
        }
        resubscribed |= !hosts_missing.is_empty();
        sub.asked.extend(hosts_missing);
        for n in &req.resource_names_unsubscribe {
            listed.remove(n.as_str());
            sub.sent.remove(n);
        }
        let unsubscribed: Vec<&String> = req.resource_names_unsubscribe.iter().filter(|n| *n != "*").collect();
        if resubscribed || !unsubscribed.is_empty() || (first && wildcard && demands) {
            let sel = if wildcard && demands {
                // `listed` started from what the subscription covered, so what was
                // unsubscribed is gone from it.
                self.forget_demand(t, &unsubscribed);
                Sel::Demand(self.demand_names(t, None, listed))
            } else if wildcard {
                Sel::All
            } else {
                Sel::Named(self.state.cache.intern_names(listed))
            };
            let sub = self.subs.entry(t).or_default();
            resubscribed |= sel != sub.sel;
            sub.sel = sel;
        }
        let sub = self.subs.entry(t).or_default();
        if resubscribed || !req.resource_names_unsubscribe.is_empty() {
            // The names changed, and what they now cover may sit in sets that did not change
            // since the last push (resources the proxy dropped and now wants back): the next
            // push compares by name, not by set.
            sub.checked = None;
        }
        if first || resubscribed {
            self.push_delta(t, first, tx).await.map_err(|_| Status::cancelled("stream closed"))?;
        }
        Ok(())
    }

    async fn push_delta(&mut self, t: &'static str, always: bool, tx: &Sender) -> Result<(), ()> {
        if !always && self.unchanged_since_check(t) {
            return Ok(());
        }
        let wanted = self.wanted(t);
        let sub = self.subs.entry(t).or_default();
        let resources: Vec<Arc<Res>> = wanted.values().filter(|r| sub.sent.hash(t, &r.name) != Some(r.hash)).cloned().collect();
        let mut removed: BTreeSet<&Arc<str>> = sub.sent.names(t).filter(|n| !wanted.contains_key(*n)).collect();
        // Asked for and not had: said as removed, the delta protocol's "does not exist".
        removed.extend(sub.asked.iter().filter(|n| !wanted.contains_key(*n)));
        let removed: Vec<String> = removed.into_iter().map(|n| n.to_string()).collect();
        sub.asked.clear();
        if !always && resources.is_empty() && removed.is_empty() {
            self.mark_checked(t);
            return Ok(());
        }
        let count = wanted.len();
        drop(wanted);
        let (version, nonce) = self.record_push(t, count);
        self.admit(t, &resources).await;
        tx.send(Ok(Outgoing::Delta { version, type_url: t.to_string(), nonce, resources, removed })).await.map_err(|_| ())
    }

    fn refuse_secrets(&self, names: &[String]) {
        let node = self.node.as_ref().map(|n| n.id.as_str()).unwrap_or("?");
        tracing::warn!(
            conn = self.id,
            node,
            secrets = ?names,
            "a proxy asked for TLS secrets on the unauthenticated xDS port; they go only to an authenticated proxy of their \
             namespace (connect to the TLS port, 15012, with the pod's token)"
        );
    }

    fn disconnect(&self) {
        if let Some(n) = &self.node {
            tracing::info!(conn = self.id, node = %n.id, "proxy disconnected");
        }
        self.shared.proxies.lock().remove(&self.id);
    }
}

/// VHDS's answer, over state of the world, to a host that names no virtual host: a virtual host
/// of the name asked with no domains (one a proxy could never route by).
fn no_such_host(alias: &str) -> Arc<Res> {
    use prost::Message;
    let vh = envoy_types::pb::envoy::config::route::v3::VirtualHost { name: alias.to_owned(), ..Default::default() };
    let any = proto::Any { type_url: VIRTUAL_HOST.into(), value: vh.encode_to_vec() };
    Arc::new(Res { name: Arc::from(alias), hash: 0, encoded: any.encode_to_vec().into() })
}
