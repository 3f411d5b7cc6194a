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

use weft_api::networking::{self as net, ServerTlsMode};
use weft_api::Resource;

use super::listener::{chain, hcm, hcm_filter, l4_clusters, listener, Routes};
use super::pb::{self, listener::FilterChain, listener::FilterChainMatch, tls};
use super::route::{hash_policy, vs_routes, Bound};
use super::{credential, tcp_proxy_to, Generated, Scope};
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
        let terminates = matches!(
            mode,
            Some(ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual | ServerTlsMode::IstioMutual)
        );
        match proto.as_str() {
            "HTTP" | "HTTP2" | "GRPC" => Kind::Http,
            "HTTPS" if terminates => Kind::Https,
            "TLS" if terminates => Kind::TlsTerminated,
            "HTTPS" | "TLS" => Kind::Passthrough,
            _ => Kind::Tcp,
        }
    }

    /// Whether a VirtualService of `ns` may bind to the server: a host `ns/name` admits only
    /// that namespace's (`.` the gateway's own, `*` any, `~` none), a host without one any.
    fn admits_namespace(&self, ns: &str) -> bool {
        self.server.hosts.iter().any(|h| match h.split_once('/') {
            None | Some(("*", _)) => true,
            Some((".", _)) => ns == self.gateway.namespace,
            Some((n, _)) => n == ns,
        })
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
        let http = |name: &str| hcm_filter(&hcm(scope, Side::Client, &format!("outbound_0.0.0.0_{port}"), Routes::Rds(name.into())));
        let mut chains = Vec::new();
        let plain: Vec<&Bind<'_>> = binds.iter().filter(|b| b.kind() == Kind::Http).collect();
        if !plain.is_empty() {
            let name = format!("http.{port}");
            let redirect = plain.iter().any(|b| b.server.tls.as_ref().is_some_and(|t| t.https_redirect));
            out.routes.insert(name.clone(), route_config(scope, &name, &plain, port, redirect));
            chains.push(chain(&name, vec![http(&name)]));
        }
        for b in binds.iter().filter(|b| b.kind() == Kind::Https) {
            let name = b.https_route_name();
            let mut c = chain(&name, vec![http(&name)]);
            if terminate(scope, &mut c, b, &["h2", "http/1.1"], out) {
                out.routes.insert(name.clone(), route_config(scope, &name, &[b], port, false));
                chains.push(c);
            }
        }
        for b in binds.iter().filter(|b| b.kind() == Kind::TlsTerminated) {
            if let Some(clusters) = l4_route(scope, b, port) {
                let mut c = chain(&b.https_route_name(), vec![tcp_proxy_to(&clusters)]);
                if terminate(scope, &mut c, b, &[], out) {
                    chains.push(c);
                }
            }
        }
        for b in binds.iter().filter(|b| b.kind() == Kind::Passthrough) {
            passthrough_chains(scope, b, port, &mut chains);
        }
        for b in binds.iter().filter(|b| b.kind() == Kind::Tcp) {
            if let Some(clusters) = l4_route(scope, b, port) {
                chains.push(chain(&format!("tcp.{port}"), vec![tcp_proxy_to(&clusters)]));
            }
        }
        if chains.is_empty() {
            continue;
        }
        let sni = chains.iter().any(|c| c.filter_chain_match.as_ref().is_some_and(|m| !m.server_names.is_empty()))
            || chains.iter().any(|c| c.transport_socket.is_some());
        let name = format!("0.0.0.0_{port}");
        // OUTBOUND, as istiod marks gateway listeners: what a gateway sends is the client side.
        let l = pb::Listener {
            filter_chains: chains,
            listener_filters: if sni { vec![super::listener::tls_inspector()] } else { Vec::new() },
            ..listener(&name, "0.0.0.0", port, pb::core::TrafficDirection::Outbound)
        };
        out.listeners.insert(name, l);
    }
}

/// The VirtualServices bound to `b`'s gateway.
fn bound_virtual_services<'a>(scope: &Scope<'a>, b: &Bind<'_>) -> Vec<&'a Resource<net::VirtualService>> {
    let bound = b.bound();
    let ns = &scope.node.namespace;
    scope
        .model
        .virtual_services
        .iter()
        .filter(|vs| bound.named_in(&vs.spec.gateways, &vs.namespace) && crate::model::exported_to(&vs.spec.export_to, &vs.namespace, ns))
        .filter(|vs| b.admits_namespace(&vs.namespace))
        .collect()
}

/// A route configuration with a virtual host per host the servers and the bound
/// VirtualServices have in common: the more specific of the two names (a `*` VirtualService
/// under a `web.example.com` server serves `web.example.com`). As Istio does at gateways,
/// several VirtualServices for one host are merged; routes of a VirtualService naming the host
/// exactly come before those of one matching it by wildcard.
fn route_config(scope: &Scope<'_>, name: &str, binds: &[&Bind<'_>], port: u16, https_redirect: bool) -> pb::RouteConfiguration {
    // domain → (exact contributions, wildcard contributions)
    let mut hosts: BTreeMap<String, (Vec<pb::route::Route>, Vec<pb::route::Route>)> = BTreeMap::new();
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
            let hash =
                dest.map(|d| hash_policy(scope, &scope.model.resolve_host(&d.destination.host, &vs.namespace), port)).unwrap_or_default();
            let routes = vs_routes(scope, vs, port, b.bound(), &hash);
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
    let vhosts = order
        .into_iter()
        .filter_map(|h| {
            let (exact, wild) = hosts.remove(&h)?;
            let domains = if h == "*" { vec!["*".to_string()] } else { vec![h.clone(), format!("{h}:{port}")] };
            let require_tls = if https_redirect { pb::route::virtual_host::TlsRequirementType::All } else { Default::default() };
            Some(pb::VirtualHost {
                name: format!("{h}:{port}"),
                domains,
                routes: exact.into_iter().chain(wild).collect(),
                require_tls: require_tls as i32,
                ..Default::default()
            })
        })
        .collect();
    pb::RouteConfiguration { name: name.into(), virtual_hosts: vhosts, validate_clusters: pb::boolv(false), ..Default::default() }
}

/// Adds the TLS termination of `b` to `chain`: its certificate (from the files the Gateway
/// names, or for `credentialName` the Secret sent over SDS), SNI matching its hosts, and for
/// MUTUAL the client certificate check. False when the server's credential cannot be served:
/// the chain is then left out (and why is logged), so the gateway's other servers still work.
fn terminate(scope: &Scope<'_>, chain: &mut FilterChain, b: &Bind<'_>, alpn: &[&str], out: &mut Generated) -> bool {
    use tls::common_tls_context::{CombinedCertificateValidationContext, ValidationContextType};
    let Some(server_tls) = &b.server.tls else { return true };
    if server_tls.mode == Some(ServerTlsMode::IstioMutual) {
        // The mesh's own mTLS, as a sidecar's inbound side: the gateway's SVID, the caller's
        // certificate required and checked against the mesh bundle (Istio's egress gateway).
        if !scope.node.identity {
            ::tracing::warn!(
                gateway = %format!("{}/{}", b.gateway.namespace, b.gateway.name),
                server = b.index,
                proxy = %scope.node.id,
                "ISTIO_MUTUAL needs the gateway's workload certificate, which this proxy has not got, so this server is left out"
            );
            return false;
        }
        chain.transport_socket = Some(super::mtls::inbound_transport_socket(!alpn.is_empty()));
        match_server_names(chain, b);
        return true;
    }
    let mut common = tls::CommonTlsContext::default();
    let mutual = matches!(server_tls.mode, Some(ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual));
    let mut sds_ca = None;
    if let Some(cred) = &server_tls.credential_name {
        match credential::resolve(scope, cred, mutual, out) {
            Ok(names) => {
                common.tls_certificate_sds_secret_configs = vec![credential::sds_ref(&names.cert)];
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
    } else if let (Some(cert), Some(key)) = (&server_tls.server_certificate, &server_tls.private_key) {
        common.tls_certificates =
            vec![tls::TlsCertificate { certificate_chain: pb::file(cert), private_key: pb::file(key), ..Default::default() }];
    }
    common.alpn_protocols = alpn.iter().map(|a| a.to_string()).collect();
    let params = tls::TlsParameters {
        tls_minimum_protocol_version: tls_version(server_tls.min_protocol_version.as_deref()) as i32,
        tls_maximum_protocol_version: tls_version(server_tls.max_protocol_version.as_deref()) as i32,
        cipher_suites: server_tls.cipher_suites.clone(),
        ..Default::default()
    };
    if params != tls::TlsParameters::default() {
        common.tls_params = Some(params);
    }
    if mutual {
        use tls::subject_alt_name_matcher::SanType;
        let sans = server_tls
            .subject_alt_names
            .iter()
            .map(|s| tls::SubjectAltNameMatcher { san_type: SanType::Dns as i32, matcher: Some(pb::exact(s)), ..Default::default() })
            .collect();
        let vc = tls::CertificateValidationContext {
            trusted_ca: server_tls.ca_certificates.as_deref().and_then(pb::file),
            match_typed_subject_alt_names: sans,
            ..Default::default()
        };
        common.validation_context_type = Some(match &sds_ca {
            // The CA from SDS, the SAN check from the Gateway (Istio's combined context).
            Some(ca) => ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
                default_validation_context: Some(vc),
                validation_context_sds_secret_config: Some(credential::sds_ref(ca)),
                ..Default::default()
            }),
            None => ValidationContextType::ValidationContext(vc),
        });
    }
    let ctx = tls::DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: (server_tls.mode == Some(ServerTlsMode::Mutual)).then_some(pb::BoolValue { value: true }),
        ..Default::default()
    };
    chain.transport_socket = Some(super::mtls::transport_socket(&ctx));
    match_server_names(chain, b);
    true
}

/// A terminating chain matches the server's hosts by SNI (none when one is `*`).
fn match_server_names(chain: &mut FilterChain, b: &Bind<'_>) {
    let names = b.server_names();
    if !names.is_empty() {
        chain.filter_chain_match = Some(FilterChainMatch { server_names: names, ..Default::default() });
    }
}

/// Istio's `TLSV1_2` style names as Envoy's protocol versions (`TLS_AUTO`: unset).
fn tls_version(v: Option<&str>) -> tls::tls_parameters::TlsProtocol {
    use tls::tls_parameters::TlsProtocol;
    match v {
        Some("TLSV1_0") => TlsProtocol::TlSv10,
        Some("TLSV1_1") => TlsProtocol::TlSv11,
        Some("TLSV1_2") => TlsProtocol::TlSv12,
        Some("TLSV1_3") => TlsProtocol::TlSv13,
        _ => TlsProtocol::TlsAuto,
    }
}

/// The destinations, by weight, of the first bound `tcp` route that applies to `b`'s port.
fn l4_route(scope: &Scope<'_>, b: &Bind<'_>, port: u16) -> Option<Vec<(String, u32)>> {
    for vs in bound_virtual_services(scope, b) {
        if !vs.spec.hosts.iter().any(|h| b.allows(h)) {
            continue;
        }
        for r in &vs.spec.tcp {
            let applies = r.matches.is_empty() || r.matches.iter().any(|m| b.l4_match_applies(m.port, &m.gateways, &vs.namespace));
            let clusters = l4_clusters(scope, &r.route, &vs.namespace, port);
            if applies && !clusters.is_empty() {
                return Some(clusters);
            }
        }
    }
    None
}

/// One filter chain per SNI name of each bound `tls` route: the stream goes, still encrypted,
/// to the route's destination.
fn passthrough_chains(scope: &Scope<'_>, b: &Bind<'_>, port: u16, chains: &mut Vec<FilterChain>) {
    let mut seen = BTreeSet::new();
    for vs in bound_virtual_services(scope, b) {
        for r in &vs.spec.tls {
            let clusters = l4_clusters(scope, &r.route, &vs.namespace, port);
            if clusters.is_empty() {
                continue;
            }
            for m in &r.matches {
                if m.port.is_some_and(|p| p != u32::from(port))
                    || !(m.gateways.is_empty() || b.bound().named_in(&m.gateways, &vs.namespace))
                {
                    continue;
                }
                let names: Vec<String> = m.sni_hosts.iter().filter(|h| b.allows(h) && seen.insert((*h).clone())).cloned().collect();
                let Some(first) = names.first() else { continue };
                chains.push(FilterChain {
                    filter_chain_match: Some(FilterChainMatch { server_names: names.clone(), ..Default::default() }),
                    ..chain(&format!("tls.{port}.{first}"), vec![tcp_proxy_to(&clusters)])
                });
            }
        }
    }
}
