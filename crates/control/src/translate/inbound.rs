//! The inbound side of a sidecar (LDS and CDS): the ports its workload serves, each with the
//! filter chains its PeerAuthentication mode asks for, delivering to the application.
//!
//! Where the ports come from is Istio's rule: the `Sidecar`'s `ingress` listeners when the
//! Sidecar that applies has any, else every Service port that selects the workload — except
//! for a proxy whose traffic is not captured (`INTERCEPTION_MODE: NONE`), which gets inbound
//! listeners only from `ingress`: the application itself holds its Service ports there.
//!
//! How they are reached: captured traffic arrives at `virtualInbound` (15006) and is told
//! apart by its original destination port; a listener that binds its port (NONE mode, or
//! `captureMode: NONE`) is a listener of its own with the very same chains.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use weft_api::networking::{CaptureMode, IngressListener};

use super::listener::{chain, hcm, hcm_filter, http_alpn, http_inspector, listener, original_dst, tls_inspector, Routes};
use super::mtls::{self, Inbound};
use super::pb::{self, listener::FilterChain, listener::FilterChainMatch};
use super::{cluster, inbound_cluster_name, tcp_proxy, Generated, Scope};
use super::{BLACKHOLE, INBOUND_PASSTHROUGH, INBOUND_PORT};
use crate::model::labels_match;
use crate::node::{Interception, ProxyNode};
use crate::protocol::Protocol;
use crate::telemetry::Side;

/// One port the workload serves.
struct Target {
    port: u16,
    proto: Protocol,
    /// Where the application listens.
    endpoint: SocketAddr,
    /// The address of a listener of its own; `None`: a chain of `virtualInbound`.
    bind: Option<IpAddr>,
}

/// The filter chains of one port and the listener filters they need.
struct PortChains {
    chains: Vec<FilterChain>,
    tls: bool,
    sniff: bool,
}

pub fn inbound(scope: &Scope<'_>, out: &mut Generated) {
    let node = scope.node;
    let captured = node.interception != Interception::None;
    let mut chains = vec![FilterChain {
        filter_chain_match: Some(FilterChainMatch { destination_port: pb::u32v(INBOUND_PORT.into()), ..Default::default() }),
        ..chain("virtualInbound-blackhole", vec![tcp_proxy(BLACKHOLE, BLACKHOLE)])
    }];
    let (mut sniff, mut tls) = (false, false);
    for t in targets(scope) {
        match t.bind {
            // A chain of virtualInbound, which only a captured proxy has.
            None if !captured => continue,
            None => {
                cluster::inbound(out, t.port, t.proto, t.endpoint);
                if let Some(c) = port_chains(scope, &t, "0.0.0.0") {
                    tls |= c.tls;
                    sniff |= c.sniff;
                    chains.extend(c.chains);
                }
            }
            Some(bind) => {
                cluster::inbound(out, t.port, t.proto, t.endpoint);
                bound_listener(scope, &t, bind, out);
            }
        }
    }
    if !captured {
        return;
    }
    // Ports no Service names: passed to where the caller was going, under the workload's mode.
    let passthrough = || vec![tcp_proxy(INBOUND_PASSTHROUGH, INBOUND_PASSTHROUGH)];
    let transport = |t: &str| Some(FilterChainMatch { transport_protocol: t.into(), ..Default::default() });
    match mtls::servable(scope, mtls::inbound_mode(scope.model, &node.namespace, &node.labels, None)) {
        None => {}
        Some(Inbound::Disable) => {
            chains.push(FilterChain { filter_chain_match: Some(FilterChainMatch::default()), ..chain("virtualInbound", passthrough()) })
        }
        Some(Inbound::Strict) => {
            tls = true;
            chains.push(FilterChain {
                filter_chain_match: transport("tls"),
                transport_socket: Some(mtls::inbound_transport_socket(false)),
                ..chain("virtualInbound-mtls", passthrough())
            });
        }
        Some(Inbound::Permissive) => {
            tls = true;
            chains.push(FilterChain { filter_chain_match: transport("raw_buffer"), ..chain("virtualInbound", passthrough()) });
            chains.push(FilterChain { filter_chain_match: transport("tls"), ..chain("virtualInbound-tls", passthrough()) });
        }
    }
    let mut listener_filters = vec![original_dst()];
    if tls {
        listener_filters.push(tls_inspector());
    }
    if sniff {
        listener_filters.push(http_inspector());
    }
    let virtual_inbound = pb::Listener {
        listener_filters,
        filter_chains: chains,
        ..listener("virtualInbound", "0.0.0.0", INBOUND_PORT, pb::core::TrafficDirection::Inbound)
    };
    out.listeners.insert("virtualInbound".into(), virtual_inbound);
}

/// The ports this workload serves, by port.
fn targets(scope: &Scope<'_>) -> Vec<Target> {
    let node = scope.node;
    if let Some(sidecar) = scope.sidecar.filter(|s| !s.spec.ingress.is_empty()) {
        let by_port: BTreeMap<u16, Target> =
            sidecar.spec.ingress.iter().filter_map(|l| ingress_target(node, l)).map(|t| (t.port, t)).collect();
        return by_port.into_values().collect();
    }
    if node.interception == Interception::None {
        return Vec::new();
    }
    // Every Service port that selects this workload, delivered to the application on loopback.
    let mut served: BTreeMap<u16, Protocol> = BTreeMap::new();
    let ip = node.ip.to_string();
    for svc in &scope.model.services {
        for ep in &svc.endpoints {
            let mine = ep.address == ip
                || (!node.labels.is_empty()
                    && labels_match(&ep.labels, &node.labels)
                    && !ep.labels.is_empty()
                    && svc.namespace == node.namespace);
            if !mine {
                continue;
            }
            for p in &svc.ports {
                if let Some(target) = ep.ports.get(&p.port) {
                    served.entry(*target).or_insert(p.protocol);
                }
            }
        }
    }
    served
        .into_iter()
        .filter(|(_, proto)| *proto != Protocol::Udp)
        .map(|(port, proto)| Target { port, proto, endpoint: SocketAddr::from((Ipv4Addr::LOCALHOST, port)), bind: None })
        .collect()
}

/// One `Sidecar` ingress listener, as Istio reads it: the protocol from `port.protocol` only
/// (none: sniffed); `defaultEndpoint` `0.0.0.0`/`::` means the workload's own address, no
/// `defaultEndpoint` the application on 127.0.0.1 at the same port (weft's inbound default);
/// `captureMode` DEFAULT binds a real port exactly when the proxy's traffic is not captured.
fn ingress_target(node: &ProxyNode, l: &IngressListener) -> Option<Target> {
    let port = u16::try_from(l.port.number).ok().filter(|p| *p > 0)?;
    let proto = l.port.protocol.as_deref().and_then(Protocol::parse).unwrap_or(Protocol::Auto);
    if proto == Protocol::Udp {
        return None;
    }
    let endpoint = match l.default_endpoint.as_deref().and_then(|e| e.parse::<SocketAddr>().ok()) {
        Some(a) if a.ip().is_unspecified() => SocketAddr::new(node.ip, a.port()),
        Some(a) => a,
        None => SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    };
    let bound = match l.capture_mode.unwrap_or_default() {
        CaptureMode::Default => node.interception == Interception::None,
        CaptureMode::None => true,
        CaptureMode::Iptables => false,
    };
    let bind = bound.then(|| l.bind.as_deref().and_then(|b| b.parse::<IpAddr>().ok()).unwrap_or_else(|| default_bind(node.ip)));
    Some(Target { port, proto, endpoint, bind })
}

/// Istio binds an ingress listener without `bind` to the proxy's address when it is a global
/// unicast one, else to the wildcard.
fn default_bind(ip: IpAddr) -> IpAddr {
    let global = match ip {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_unspecified() || v4.is_link_local() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || (v6.segments()[0] & 0xffc0) == 0xfe80),
    };
    match (global, ip) {
        (true, _) => ip,
        (false, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (false, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// The chains of one port under its PeerAuthentication mode; `None` when it can serve nothing
/// (STRICT on a proxy without a workload identity).
fn port_chains(scope: &Scope<'_>, t: &Target, bind: &str) -> Option<PortChains> {
    let node = scope.node;
    let chain = InboundPort { scope, port: t.port, proto: t.proto, bind };
    let mode = mtls::inbound_mode(scope.model, &node.namespace, &node.labels, Some(t.port));
    let mut out = PortChains { chains: Vec::new(), tls: false, sniff: false };
    match mtls::servable(scope, mode) {
        None => {
            tracing::warn!(proxy = %node.id, port = t.port, "STRICT mTLS on a proxy without a workload identity: the port refuses every connection");
            return None;
        }
        Some(Inbound::Disable) => {
            out.sniff = t.proto == Protocol::Auto;
            out.chains.extend(chain.plain(None));
        }
        Some(Inbound::Strict) => {
            out.tls = true;
            out.chains.extend(chain.mutual(false));
        }
        Some(Inbound::Permissive) => {
            out.tls = true;
            out.sniff = t.proto == Protocol::Auto;
            out.chains.extend(chain.mutual(true));
            // The application's own TLS, not the mesh's: passed through untouched.
            let cluster = inbound_cluster_name(t.port);
            let own_tls =
                FilterChainMatch { destination_port: pb::u32v(t.port.into()), transport_protocol: "tls".into(), ..Default::default() };
            out.chains.push(FilterChain {
                filter_chain_match: Some(own_tls),
                ..super::listener::chain(&format!("{}-tls", chain.name()), vec![tcp_proxy(&cluster, &cluster)])
            });
            out.chains.extend(chain.plain(Some("raw_buffer")));
        }
    }
    Some(out)
}

/// A listener of its own for one port (`<bind>_<port>`, as Istio names it), with the chains
/// `virtualInbound` would have for the port. A port that can serve nothing gets no listener:
/// one without filter chains is not a valid listener.
fn bound_listener(scope: &Scope<'_>, t: &Target, bind: IpAddr, out: &mut Generated) {
    let bind = bind.to_string();
    let Some(c) = port_chains(scope, t, &bind) else { return };
    let name = format!("{bind}_{}", t.port);
    let mut filters = Vec::new();
    if c.tls {
        filters.push(tls_inspector());
    }
    if c.sniff {
        filters.push(http_inspector());
    }
    let l = pb::Listener {
        filter_chains: c.chains,
        listener_filters: filters,
        ..listener(&name, &bind, t.port, pb::core::TrafficDirection::Inbound)
    };
    out.listeners.insert(name, l);
}

/// The inbound filter chains of one workload port.
struct InboundPort<'a> {
    scope: &'a Scope<'a>,
    port: u16,
    proto: Protocol,
    /// The address in the chains' names: `0.0.0.0` in `virtualInbound`, else the bound one.
    bind: &'a str,
}

impl InboundPort<'_> {
    fn name(&self) -> String {
        format!("{}_{}", self.bind, self.port)
    }

    /// The inbound HTTP connection manager: one route to the application. The client's
    /// identity reaches the application in `x-forwarded-client-cert`, which a caller can never
    /// set itself (Istio's SANITIZE_SET).
    fn hcm(&self) -> pb::listener::Filter {
        use super::route::{forward_to, match_all};
        use pb::hcm::http_connection_manager::{ForwardClientCertDetails, SetCurrentClientCertDetails};
        let cluster = inbound_cluster_name(self.port);
        let to_app = pb::route::Route {
            name: "default".into(),
            r#match: match_all(),
            action: Some(pb::route::route::Action::Route(forward_to(cluster.clone()))),
            ..Default::default()
        };
        let host = pb::VirtualHost {
            name: format!("inbound|http|{}", self.port),
            domains: vec!["*".into()],
            routes: vec![to_app],
            ..Default::default()
        };
        let routes = pb::RouteConfiguration { name: cluster, virtual_hosts: vec![host], ..Default::default() };
        let mut m = hcm(self.scope, Side::Server, &format!("inbound_{}", self.name()), Routes::Inline(Box::new(routes)));
        m.forward_client_cert_details = ForwardClientCertDetails::SanitizeSet as i32;
        m.set_current_client_cert_details =
            Some(SetCurrentClientCertDetails { subject: pb::boolv(true), dns: true, uri: true, ..Default::default() });
        hcm_filter(&m)
    }

    fn tcp(&self) -> pb::listener::Filter {
        let cluster = inbound_cluster_name(self.port);
        tcp_proxy(&cluster, &cluster)
    }

    fn chain(&self, name: &str, m: FilterChainMatch, filter: pb::listener::Filter, mtls: Option<bool>) -> FilterChain {
        FilterChain { filter_chain_match: Some(m), transport_socket: mtls.map(mtls::inbound_transport_socket), ..chain(name, vec![filter]) }
    }

    /// Plaintext chains; `transport` restricts them to `raw_buffer` next to TLS chains.
    fn plain(&self, transport: Option<&str>) -> Vec<FilterChain> {
        let m = |alpn: Vec<String>| FilterChainMatch {
            destination_port: pb::u32v(self.port.into()),
            transport_protocol: transport.unwrap_or_default().into(),
            application_protocols: alpn,
            ..Default::default()
        };
        let name = self.name();
        if self.proto.is_http() {
            vec![self.chain(&name, m(Vec::new()), self.hcm(), None)]
        } else if self.proto == Protocol::Auto {
            vec![self.chain(&format!("{name}-http"), m(http_alpn()), self.hcm(), None), self.chain(&name, m(Vec::new()), self.tcp(), None)]
        } else {
            vec![self.chain(&name, m(Vec::new()), self.tcp(), None)]
        }
    }

    /// mTLS chains. `mesh_only`: next to plaintext and the application's own TLS, mesh
    /// connections are told apart by Istio's ALPN.
    fn mutual(&self, mesh_only: bool) -> Vec<FilterChain> {
        let m = |alpn: Vec<String>| FilterChainMatch {
            destination_port: pb::u32v(self.port.into()),
            transport_protocol: "tls".into(),
            application_protocols: alpn,
            ..Default::default()
        };
        let only = |alpn: fn() -> Vec<String>| if mesh_only { alpn() } else { Vec::new() };
        let name = format!("{}-mtls", self.name());
        if self.proto.is_http() {
            vec![self.chain(&name, m(only(mtls::mesh_alpn_all)), self.hcm(), Some(true))]
        } else if self.proto == Protocol::Auto {
            // The protocol cannot be sniffed inside TLS: Istio's clients say HTTP in the ALPN.
            vec![
                self.chain(&format!("{name}-http"), m(mtls::mesh_http_alpn()), self.hcm(), Some(true)),
                self.chain(&name, m(only(mtls::mesh_alpn)), self.tcp(), Some(false)),
            ]
        } else {
            vec![self.chain(&name, m(only(mtls::mesh_alpn_all)), self.tcp(), Some(false))]
        }
    }
}
