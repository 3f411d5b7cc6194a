//! Gateways (`router~` proxies): a listener per `Gateway` server port.
//!
//! - HTTP servers (HTTP, HTTP2, GRPC) route with the VirtualServices bound to the gateway by
//!   `gateways:`, through the same route translation sidecars get; `httpsRedirect` answers
//!   plaintext with a redirect to https.
//! - HTTPS and TLS servers in SIMPLE or MUTUAL mode terminate TLS with the server's certificate
//!   (a filter chain per server, chosen by SNI), then route as HTTP (HTTPS) or forward the TCP
//!   stream (TLS).
//! - PASSTHROUGH servers do not terminate: the bound VirtualServices' `tls` routes pick a
//!   destination by the ClientHello's SNI and the encrypted stream is forwarded as it is.
//! - TCP servers forward to the bound VirtualServices' `tcp` route.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use weft_api::networking::{self as net, ServerTlsMode};
use weft_api::Resource;

use super::listener::{hcm, l4_cluster};
use super::route::{hash_policy, vs_routes, Bound};
use super::{credential, socket_address, tcp_proxy, Generated, Scope};
use crate::model::{host_matches, labels_match};
use crate::telemetry::Side;

/// One server of a Gateway that selects this proxy.
struct Bind<'a> {
    gateway: &'a Resource<net::Gateway>,
    server: &'a net::Server,
    index: usize,
}

/// What a server does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    /// Terminate TLS, then HTTP.
    Https,
    /// Terminate TLS, then forward the stream.
    TlsTerminated,
    Passthrough,
    Tcp,
}

impl Bind<'_> {
    fn bound(&self) -> Bound<'_> {
        Bound::Gateway { namespace: &self.gateway.namespace, name: &self.gateway.name }
    }

    fn kind(&self) -> Kind {
        let proto = self.server.port.protocol.as_deref().unwrap_or("").to_ascii_uppercase();
        let mode = self.server.tls.as_ref().and_then(|t| t.mode);
        let terminates = matches!(mode, Some(ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual));
        match proto.as_str() {
            "HTTP" | "HTTP2" | "GRPC" => Kind::Http,
            "HTTPS" if terminates => Kind::Https,
            "TLS" if terminates => Kind::TlsTerminated,
            "HTTPS" | "TLS" => Kind::Passthrough,
            _ => Kind::Tcp,
        }
    }

    /// The server's hosts without their `namespace/` part.
    fn hosts(&self) -> impl Iterator<Item = &str> {
        self.server.hosts.iter().map(|h| h.split_once('/').map(|(_, n)| n).unwrap_or(h))
    }

    /// SNI names a TLS filter chain matches: the server's hosts, none when one is `*`.
    fn server_names(&self) -> Vec<String> {
        if self.hosts().any(|h| h == "*") {
            Vec::new()
        } else {
            self.hosts().map(str::to_string).collect()
        }
    }

    /// Whether the server may serve `host` (a VirtualService host or SNI name).
    fn allows(&self, host: &str) -> bool {
        self.hosts().any(|h| host_matches(h, host) || host_matches(host, h))
    }

    /// Whether a `tcp`/`tls` match (its `port` and own `gateways`) applies to this server.
    fn l4_match_applies(&self, match_port: Option<u32>, match_gateways: &[String], vs_ns: &str) -> bool {
        match_port.is_none_or(|p| p == self.server.port.number) && self.bound().admits(match_gateways, vs_ns)
    }

    /// Istio's route name for a terminating server: `https.<port>.<server name>.<gw>.<ns>`.
    fn https_route_name(&self) -> String {
        let server = self.server.name.clone().or_else(|| self.server.port.name.clone()).unwrap_or_else(|| self.index.to_string());
        format!("https.{}.{server}.{}.{}", self.server.port.number, self.gateway.name, self.gateway.namespace)
    }
}

pub fn generate(scope: &Scope<'_>, out: &mut Generated) {
    let node = scope.node;
    let mut ports: BTreeMap<u16, Vec<Bind<'_>>> = BTreeMap::new();
    for g in scope.model.gateways.iter().filter(|g| !g.spec.selector.is_empty() && labels_match(&g.spec.selector, &node.labels)) {
        for (index, server) in g.spec.servers.iter().enumerate() {
            ports.entry(server.port.number as u16).or_default().push(Bind { gateway: g, server, index });
        }
    }
    for (port, binds) in ports {
        let mut chains = Vec::new();
        let plain: Vec<&Bind<'_>> = binds.iter().filter(|b| b.kind() == Kind::Http).collect();
        if !plain.is_empty() {
            let name = format!("http.{port}");
            let redirect = plain.iter().any(|b| b.server.tls.as_ref().is_some_and(|t| t.https_redirect));
            super::pb::put(&mut out.routes, name.clone(), &route_config(scope, &name, &plain, port, redirect));
            chains.push(json!({"name": name, "filters": [hcm(scope, Side::Client, &format!("outbound_0.0.0.0_{port}"), json!(name))]}));
        }
        for b in binds.iter().filter(|b| b.kind() == Kind::Https) {
            let name = b.https_route_name();
            let mut chain = json!({"name": name, "filters": [hcm(scope, Side::Client, &format!("outbound_0.0.0.0_{port}"), json!(name))]});
            if terminate(scope, &mut chain, b, &["h2", "http/1.1"], out) {
                super::pb::put(&mut out.routes, name.clone(), &route_config(scope, &name, &[b], port, false));
                chains.push(chain);
            }
        }
        for b in binds.iter().filter(|b| b.kind() == Kind::TlsTerminated) {
            if let Some(cluster) = l4_route(scope, b, port) {
                let mut chain = json!({"name": b.https_route_name(), "filters": [tcp_proxy(&cluster, &cluster)]});
                if terminate(scope, &mut chain, b, &[], out) {
                    chains.push(chain);
                }
            }
        }
        for b in binds.iter().filter(|b| b.kind() == Kind::Passthrough) {
            passthrough_chains(scope, b, port, &mut chains);
        }
        for b in binds.iter().filter(|b| b.kind() == Kind::Tcp) {
            if let Some(cluster) = l4_route(scope, b, port) {
                chains.push(json!({"name": format!("tcp.{port}"), "filters": [tcp_proxy(&cluster, &cluster)]}));
            }
        }
        if chains.is_empty() {
            continue;
        }
        let sni = chains.iter().any(|c| c.get("filter_chain_match").is_some_and(|m| m.get("server_names").is_some()))
            || chains.iter().any(|c| c.get("transport_socket").is_some());
        let name = format!("0.0.0.0_{port}");
        // OUTBOUND, as istiod marks gateway listeners: what a gateway sends is the client side.
        let mut listener =
            json!({"name": name, "address": socket_address("0.0.0.0", port), "traffic_direction": "OUTBOUND", "filter_chains": chains});
        if sni {
            listener["listener_filters"] = json!([super::listener::tls_inspector()]);
        }
        super::pb::put(&mut out.listeners, name, &listener);
    }
}

/// The VirtualServices bound to `b`'s gateway.
fn bound_virtual_services<'a>(scope: &Scope<'a>, b: &Bind<'_>) -> Vec<&'a Resource<net::VirtualService>> {
    let bound = b.bound();
    scope.model.virtual_services.iter().filter(|vs| bound.named_in(&vs.spec.gateways, &vs.namespace)).collect()
}

/// A route configuration with a virtual host per host the servers and the bound
/// VirtualServices have in common: the more specific of the two names (a `*` VirtualService
/// under a `web.example.com` server serves `web.example.com`). As Istio does at gateways,
/// several VirtualServices for one host are merged; routes of a VirtualService naming the host
/// exactly come before those of one matching it by wildcard.
fn route_config(scope: &Scope<'_>, name: &str, binds: &[&Bind<'_>], port: u16, https_redirect: bool) -> Value {
    // domain → (exact contributions, wildcard contributions)
    let mut hosts: BTreeMap<String, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for b in binds {
        for vs in bound_virtual_services(scope, b) {
            let mut domains = BTreeSet::new();
            for h in &vs.spec.hosts {
                for sh in b.hosts() {
                    if host_matches(sh, h) {
                        domains.insert((h.clone(), true));
                    } else if host_matches(h, sh) {
                        domains.insert((sh.to_string(), false));
                    }
                }
            }
            if domains.is_empty() {
                continue;
            }
            let dest = vs.spec.http.iter().flat_map(|r| r.route.first()).next();
            let hash = dest.and_then(|d| hash_policy(scope, &scope.model.resolve_host(&d.destination.host, &vs.namespace), port));
            let routes = vs_routes(scope, vs, port, b.bound(), hash.as_ref());
            for (domain, exact) in domains {
                let entry = hosts.entry(domain.clone()).or_insert_with(|| {
                    order.push(domain.clone());
                    Default::default()
                });
                let exact = exact && !domain.contains('*');
                if exact { &mut entry.0 } else { &mut entry.1 }.extend(routes.iter().cloned());
            }
        }
    }
    let vhosts: Vec<Value> = order
        .into_iter()
        .filter_map(|h| {
            let (exact, wild) = hosts.remove(&h)?;
            let domains = if h == "*" { json!(["*"]) } else { json!([h, format!("{h}:{port}")]) };
            let mut vh =
                json!({"name": format!("{h}:{port}"), "domains": domains, "routes": exact.into_iter().chain(wild).collect::<Vec<_>>()});
            if https_redirect {
                vh["require_tls"] = json!("ALL");
            }
            Some(vh)
        })
        .collect();
    json!({"name": name, "virtual_hosts": vhosts, "validate_clusters": false})
}

/// Adds the TLS termination of `b` to `chain`: its certificate (from the files the Gateway
/// names, or for `credentialName` the Secret sent over SDS), SNI matching its hosts, and for
/// MUTUAL the client certificate check. False when the server's credential cannot be served:
/// the chain is then left out (and why is logged), so the gateway's other servers still work.
fn terminate(scope: &Scope<'_>, chain: &mut Value, b: &Bind<'_>, alpn: &[&str], out: &mut Generated) -> bool {
    let Some(tls) = &b.server.tls else { return true };
    let mut common = Map::new();
    let mutual = matches!(tls.mode, Some(ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual));
    let mut sds_ca = None;
    if let Some(cred) = &tls.credential_name {
        match credential::resolve(scope, cred, mutual, out) {
            Ok(names) => {
                common.insert("tls_certificate_sds_secret_configs".into(), json!([credential::sds_ref(&names.cert)]));
                sds_ca = names.ca;
            }
            Err(why) => {
                ::tracing::warn!(
                    gateway = %format!("{}/{}", b.gateway.namespace, b.gateway.name),
                    server = b.index,
                    proxy = %scope.node.id,
                    "credentialName {cred:?} cannot be served, so this server is left out: {why}"
                );
                return false;
            }
        }
    } else if let (Some(cert), Some(key)) = (&tls.server_certificate, &tls.private_key) {
        common.insert("tls_certificates".into(), json!([{"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}]));
    }
    if !alpn.is_empty() {
        common.insert("alpn_protocols".into(), json!(alpn));
    }
    let mut params = Map::new();
    if let Some(v) = tls_version(tls.min_protocol_version.as_deref()) {
        params.insert("tls_minimum_protocol_version".into(), json!(v));
    }
    if let Some(v) = tls_version(tls.max_protocol_version.as_deref()) {
        params.insert("tls_maximum_protocol_version".into(), json!(v));
    }
    if !tls.cipher_suites.is_empty() {
        params.insert("cipher_suites".into(), json!(tls.cipher_suites));
    }
    if !params.is_empty() {
        common.insert("tls_params".into(), Value::Object(params));
    }
    if mutual {
        let mut vc = Map::new();
        if let Some(ca) = &tls.ca_certificates {
            vc.insert("trusted_ca".into(), json!({"filename": ca}));
        }
        if !tls.subject_alt_names.is_empty() {
            let sans: Vec<Value> = tls.subject_alt_names.iter().map(|s| json!({"san_type": "DNS", "matcher": {"exact": s}})).collect();
            vc.insert("match_typed_subject_alt_names".into(), Value::Array(sans));
        }
        match &sds_ca {
            // The CA from SDS, the SAN check from the Gateway (Istio's combined context).
            Some(ca) => common.insert(
                "combined_validation_context".into(),
                json!({"default_validation_context": Value::Object(vc), "validation_context_sds_secret_config": credential::sds_ref(ca)}),
            ),
            None => common.insert("validation_context".into(), Value::Object(vc)),
        };
    }
    let mut ctx = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": common,
    });
    if tls.mode == Some(ServerTlsMode::Mutual) {
        ctx["require_client_certificate"] = json!(true);
    }
    chain["transport_socket"] = json!({"name": "envoy.transport_sockets.tls", "typed_config": ctx});
    let names = b.server_names();
    if !names.is_empty() {
        chain["filter_chain_match"] = json!({"server_names": names});
    }
    true
}

/// Istio's `TLSV1_2` style names in Envoy's `TLSv1_2` form.
fn tls_version(v: Option<&str>) -> Option<&'static str> {
    match v? {
        "TLSV1_0" => Some("TLSv1_0"),
        "TLSV1_1" => Some("TLSv1_1"),
        "TLSV1_2" => Some("TLSv1_2"),
        "TLSV1_3" => Some("TLSv1_3"),
        _ => None,
    }
}

/// The destination of the first bound `tcp` route that applies to `b`'s port.
fn l4_route(scope: &Scope<'_>, b: &Bind<'_>, port: u16) -> Option<String> {
    for vs in bound_virtual_services(scope, b) {
        if !vs.spec.hosts.iter().any(|h| b.allows(h)) {
            continue;
        }
        for r in &vs.spec.tcp {
            let applies = r.matches.is_empty() || r.matches.iter().any(|m| b.l4_match_applies(m.port, &m.gateways, &vs.namespace));
            if let (true, Some(d)) = (applies, r.route.first()) {
                return Some(l4_cluster(scope, &d.destination, &vs.namespace, port));
            }
        }
    }
    None
}

/// One filter chain per SNI name of each bound `tls` route: the stream goes, still encrypted,
/// to the route's destination.
fn passthrough_chains(scope: &Scope<'_>, b: &Bind<'_>, port: u16, chains: &mut Vec<Value>) {
    let mut seen = BTreeSet::new();
    for vs in bound_virtual_services(scope, b) {
        for r in &vs.spec.tls {
            let Some(d) = r.route.first() else { continue };
            let cluster = l4_cluster(scope, &d.destination, &vs.namespace, port);
            for m in &r.matches {
                if m.port.is_some_and(|p| p != u32::from(port))
                    || !(m.gateways.is_empty() || b.bound().named_in(&m.gateways, &vs.namespace))
                {
                    continue;
                }
                let names: Vec<&String> = m.sni_hosts.iter().filter(|h| b.allows(h) && seen.insert((*h).clone())).collect();
                if names.is_empty() {
                    continue;
                }
                chains.push(json!({
                    "name": format!("tls.{port}.{}", names[0]),
                    "filter_chain_match": {"server_names": names},
                    "filters": [tcp_proxy(&cluster, &cluster)],
                }));
            }
        }
    }
}
