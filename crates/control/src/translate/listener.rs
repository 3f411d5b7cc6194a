//! Listeners (LDS) for a sidecar: `virtualOutbound` on 15001 hands captured connections to a
//! listener per destination port; `virtualInbound` on 15006 delivers to the local application.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use weft_api::networking::{self as net, OutboundMode};

use super::mtls::{self, Inbound};
use super::{cluster, inbound_cluster_name, outbound_cluster_name, socket_address, tcp_proxy, Generated, Scope};
use super::{BLACKHOLE, INBOUND_PASSTHROUGH, INBOUND_PORT, OUTBOUND_PORT, PASSTHROUGH};
use crate::model::labels_match;
use crate::protocol::Protocol;

/// ALPN values the HTTP inspector reports for plaintext HTTP.
const HTTP_ALPN: [&str; 3] = ["http/1.0", "http/1.1", "h2c"];

fn http_inspector() -> Value {
    json!({"name": "envoy.filters.listener.http_inspector", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"}})
}

pub(super) fn tls_inspector() -> Value {
    json!({"name": "envoy.filters.listener.tls_inspector", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}})
}

fn original_dst() -> Value {
    json!({"name": "envoy.filters.listener.original_dst", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}})
}

fn unknown_destination(scope: &Scope<'_>) -> &'static str {
    match scope.outbound {
        OutboundMode::AllowAny => PASSTHROUGH,
        OutboundMode::RegistryOnly => BLACKHOLE,
    }
}

/// Istio's access log line, less `%CONNECTION_TERMINATION_DETAILS%` (which weft's proxy does
/// not record): route name and response flags say why a request was refused — `block_all`
/// for an undeclared host under REGISTRY_ONLY.
pub const ISTIO_ACCESS_LOG_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" \
%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% \
%DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \
\"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% \
%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// MeshConfig `accessLogFile` as Envoy's file access logger, or None when it is off.
fn access_log(mesh: &weft_api::mesh::MeshConfig) -> Option<Value> {
    let path = mesh.access_log_file.as_deref().filter(|p| !p.is_empty())?;
    let format = mesh.access_log_format.as_deref().filter(|f| !f.is_empty()).unwrap_or(ISTIO_ACCESS_LOG_FORMAT);
    Some(json!({"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": path,
        "log_format": {"text_format_source": {"inline_string": format}},
    }}))
}

/// Puts the mesh's access log on every `tcp_proxy` of `listeners` (HTTP connection managers
/// get theirs in [`hcm`]), so a connection sent to the BlackHoleCluster is logged too.
pub(super) fn add_tcp_access_logs(mesh: &weft_api::mesh::MeshConfig, listeners: &mut std::collections::BTreeMap<String, Value>) {
    let Some(log) = access_log(mesh) else { return };
    let add = |chain: &mut Value| {
        for f in chain["filters"].as_array_mut().into_iter().flatten() {
            if f["name"] == "envoy.filters.network.tcp_proxy" {
                f["typed_config"]["access_log"] = json!([log.clone()]);
            }
        }
    };
    for l in listeners.values_mut() {
        l["filter_chains"].as_array_mut().into_iter().flatten().for_each(add);
        if let Some(d) = l.get_mut("default_filter_chain") {
            add(d);
        }
    }
}

/// An HTTP connection manager with the mesh's filters; `routes` is an RDS name or an inline
/// route configuration. MeshConfig `defaultConfig.tracing.sampling` becomes the percentage of
/// requests traced, as istiod sets it.
pub(super) fn hcm(scope: &Scope<'_>, stat_prefix: &str, routes: Value) -> Value {
    let mut cfg = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "http_filters": [
            {"name": "envoy.filters.http.fault", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    });
    if let Some(p) = scope.model.mesh.default_config.tracing.as_ref().and_then(|t| t.sampling) {
        cfg["tracing"] = json!({"random_sampling": {"value": p}});
    }
    if let Some(log) = access_log(&scope.model.mesh) {
        cfg["access_log"] = json!([log]);
    }
    match routes {
        Value::String(name) => cfg["rds"] = json!({"route_config_name": name, "config_source": {"ads": {}, "resource_api_version": "V3"}}),
        inline => cfg["route_config"] = inline,
    }
    json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": cfg})
}

pub fn outbound(scope: &Scope<'_>, out: &mut Generated) {
    let fallback = unknown_destination(scope);
    out.listeners.insert(
        "virtualOutbound".into(),
        json!({
            "name": "virtualOutbound",
            "address": socket_address("0.0.0.0", OUTBOUND_PORT),
            "use_original_dst": true,
            "traffic_direction": "OUTBOUND",
            "filter_chains": [
                {"name": "virtualOutbound-blackhole", "filter_chain_match": {"destination_port": OUTBOUND_PORT}, "filters": [tcp_proxy(BLACKHOLE, BLACKHOLE)]},
                {"name": "virtualOutbound-catchall-tcp", "filters": [tcp_proxy(fallback, fallback)]},
            ],
        }),
    );

    // One listener per destination port, shared by every service on that port.
    let mut ports: BTreeMap<u16, Vec<(&crate::model::Service, Protocol)>> = BTreeMap::new();
    for svc in &scope.services {
        for p in &svc.ports {
            if p.protocol != Protocol::Udp && p.port != OUTBOUND_PORT && p.port != INBOUND_PORT {
                ports.entry(p.port).or_default().push((svc, p.protocol));
            }
        }
    }
    for (port, services) in ports {
        let name = format!("0.0.0.0_{port}");
        let mut chains = Vec::new();
        let mut any_http = false;
        for (svc, proto) in &services {
            if proto.is_http() {
                any_http = true;
                continue;
            }
            if *proto == Protocol::Auto {
                any_http = true;
            }
            // Non-HTTP traffic is told apart by destination address, so it needs the VIP.
            let Some(vip) = svc.vip else { continue };
            let cluster = tcp_destination(scope, &svc.hostname, port);
            chains.push(json!({
                "name": format!("{vip}_{port}"),
                "filter_chain_match": {"prefix_ranges": [{"address_prefix": vip.to_string(), "prefix_len": if vip.is_ipv4() { 32 } else { 128 }}]},
                "filters": [tcp_proxy(&cluster, &cluster)],
            }));
            if *proto == Protocol::Auto {
                // Sniffed port: HTTP to the VIP still goes through the HTTP routes.
                chains.push(json!({
                    "name": format!("{vip}_{port}-http"),
                    "filter_chain_match": {"prefix_ranges": [{"address_prefix": vip.to_string(), "prefix_len": if vip.is_ipv4() { 32 } else { 128 }}],
                                           "application_protocols": HTTP_ALPN},
                    "filters": [hcm(scope, &format!("outbound_{name}"), json!(port.to_string()))],
                }));
            }
        }
        if any_http {
            chains.push(json!({
                "name": name,
                "filter_chain_match": {"application_protocols": HTTP_ALPN},
                "filters": [hcm(scope, &format!("outbound_{name}"), json!(port.to_string()))],
            }));
        }
        let mut l = json!({
            "name": name,
            "address": socket_address("0.0.0.0", port),
            "bind_to_port": false,
            "traffic_direction": "OUTBOUND",
            "filter_chains": chains,
            "default_filter_chain": {"name": "PassthroughFilterChain", "filters": [tcp_proxy(fallback, fallback)]},
        });
        if any_http {
            l["listener_filters"] = json!([http_inspector()]);
        }
        out.listeners.insert(name, l);
    }
}

/// The cluster for TCP traffic to `host:port`: a VirtualService `tcp` route when one applies
/// (first destination; weighted TCP splits are in the route's order), else the service.
fn tcp_destination(scope: &Scope<'_>, host: &str, port: u16) -> String {
    if let Some(vs) = scope.virtual_service(host) {
        for r in &vs.spec.tcp {
            let applies = r.matches.is_empty() || r.matches.iter().any(|m| m.port.is_none_or(|p| p == u32::from(port)));
            if let (true, Some(d)) = (applies, r.route.first()) {
                return l4_cluster(scope, &d.destination, &vs.namespace, port);
            }
        }
    }
    outbound_cluster_name(port, "", host)
}

/// The cluster of an L4 (`tcp`/`tls`) route destination; its port defaults to `port`.
pub(super) fn l4_cluster(scope: &Scope<'_>, d: &net::Destination, vs_ns: &str, port: u16) -> String {
    let host = scope.model.resolve_host(&d.host, vs_ns);
    let dport = d.port.map(|p| p.number as u16).unwrap_or(port);
    outbound_cluster_name(dport, d.subset.as_deref().unwrap_or(""), &host)
}

pub fn inbound(scope: &Scope<'_>, out: &mut Generated) {
    let node = scope.node;
    // The ports this workload serves: every Service port that selects it.
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
    let mut chains = vec![json!({
        "name": "virtualInbound-blackhole",
        "filter_chain_match": {"destination_port": INBOUND_PORT},
        "filters": [tcp_proxy(BLACKHOLE, BLACKHOLE)],
    })];
    let (mut sniff, mut tls) = (false, false);
    let mut seen = BTreeSet::new();
    for (port, proto) in &served {
        if !seen.insert(*port) || *proto == Protocol::Udp {
            continue;
        }
        cluster::inbound(out, *port, *proto);
        let chain = InboundPort { scope, port: *port, proto: *proto };
        let mode = mtls::inbound_mode(scope.model, &node.namespace, &node.labels, Some(*port));
        match mtls::servable(scope, mode) {
            None => {
                tracing::warn!(proxy = %node.id, port, "STRICT mTLS on a proxy without a workload identity: the port refuses every connection")
            }
            Some(Inbound::Disable) => {
                sniff |= *proto == Protocol::Auto;
                chains.extend(chain.plain(None));
            }
            Some(Inbound::Strict) => {
                tls = true;
                chains.extend(chain.mutual(false));
            }
            Some(Inbound::Permissive) => {
                tls = true;
                sniff |= *proto == Protocol::Auto;
                chains.extend(chain.mutual(true));
                // The application's own TLS, not the mesh's: passed through untouched.
                let cluster = inbound_cluster_name(*port);
                chains.push(json!({"name": format!("0.0.0.0_{port}-tls"), "filter_chain_match": {"destination_port": port, "transport_protocol": "tls"},
                    "filters": [tcp_proxy(&cluster, &cluster)]}));
                chains.extend(chain.plain(Some("raw_buffer")));
            }
        }
    }
    // Ports no Service names: passed to where the caller was going, under the workload's mode.
    let passthrough = tcp_proxy(INBOUND_PASSTHROUGH, INBOUND_PASSTHROUGH);
    match mtls::servable(scope, mtls::inbound_mode(scope.model, &node.namespace, &node.labels, None)) {
        None => {}
        Some(Inbound::Disable) => chains.push(json!({"name": "virtualInbound", "filter_chain_match": {}, "filters": [passthrough]})),
        Some(Inbound::Strict) => {
            tls = true;
            chains.push(json!({"name": "virtualInbound-mtls", "filter_chain_match": {"transport_protocol": "tls"},
                "transport_socket": mtls::inbound_transport_socket(false), "filters": [passthrough]}));
        }
        Some(Inbound::Permissive) => {
            tls = true;
            chains.push(
                json!({"name": "virtualInbound", "filter_chain_match": {"transport_protocol": "raw_buffer"}, "filters": [passthrough]}),
            );
            chains
                .push(json!({"name": "virtualInbound-tls", "filter_chain_match": {"transport_protocol": "tls"}, "filters": [passthrough]}));
        }
    }
    let mut listener_filters = vec![original_dst()];
    if tls {
        listener_filters.push(tls_inspector());
    }
    if sniff {
        listener_filters.push(http_inspector());
    }
    out.listeners.insert(
        "virtualInbound".into(),
        json!({
            "name": "virtualInbound",
            "address": socket_address("0.0.0.0", INBOUND_PORT),
            "traffic_direction": "INBOUND",
            "listener_filters": listener_filters,
            "filter_chains": chains,
        }),
    );
}

/// The inbound filter chains of one workload port.
struct InboundPort<'a> {
    scope: &'a Scope<'a>,
    port: u16,
    proto: Protocol,
}

impl InboundPort<'_> {
    fn name(&self) -> String {
        format!("0.0.0.0_{}", self.port)
    }

    /// The inbound HTTP connection manager: one route to the application. The client's
    /// identity reaches the application in `x-forwarded-client-cert`, which a caller can never
    /// set itself (Istio's SANITIZE_SET).
    fn hcm(&self) -> Value {
        let cluster = inbound_cluster_name(self.port);
        let routes = json!({"name": cluster, "virtual_hosts": [{"name": format!("inbound|http|{}", self.port), "domains": ["*"],
            "routes": [{"name": "default", "match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}]}]});
        let mut f = hcm(self.scope, &format!("inbound_0.0.0.0_{}", self.port), routes);
        f["typed_config"]["forward_client_cert_details"] = json!("SANITIZE_SET");
        f["typed_config"]["set_current_client_cert_details"] = json!({"subject": true, "dns": true, "uri": true});
        f
    }

    fn tcp(&self) -> Value {
        let cluster = inbound_cluster_name(self.port);
        tcp_proxy(&cluster, &cluster)
    }

    /// Plaintext chains; `transport` restricts them to `raw_buffer` next to TLS chains.
    fn plain(&self, transport: Option<&str>) -> Vec<Value> {
        let m = |alpn: Option<Value>| {
            let mut m = json!({"destination_port": self.port});
            if let Some(t) = transport {
                m["transport_protocol"] = json!(t);
            }
            if let Some(a) = alpn {
                m["application_protocols"] = a;
            }
            m
        };
        let name = self.name();
        if self.proto.is_http() {
            vec![json!({"name": name, "filter_chain_match": m(None), "filters": [self.hcm()]})]
        } else if self.proto == Protocol::Auto {
            vec![
                json!({"name": format!("{name}-http"), "filter_chain_match": m(Some(json!(HTTP_ALPN))), "filters": [self.hcm()]}),
                json!({"name": name, "filter_chain_match": m(None), "filters": [self.tcp()]}),
            ]
        } else {
            vec![json!({"name": name, "filter_chain_match": m(None), "filters": [self.tcp()]})]
        }
    }

    /// mTLS chains. `mesh_only`: next to plaintext and the application's own TLS, mesh
    /// connections are told apart by Istio's ALPN.
    fn mutual(&self, mesh_only: bool) -> Vec<Value> {
        let m = |alpn: Option<Value>| {
            let mut m = json!({"destination_port": self.port, "transport_protocol": "tls"});
            if let Some(a) = alpn {
                m["application_protocols"] = a;
            }
            m
        };
        let name = format!("{}-mtls", self.name());
        if self.proto.is_http() {
            let alpn = mesh_only.then(mtls::mesh_alpn_all);
            vec![
                json!({"name": name, "filter_chain_match": m(alpn), "transport_socket": mtls::inbound_transport_socket(true), "filters": [self.hcm()]}),
            ]
        } else if self.proto == Protocol::Auto {
            // The protocol cannot be sniffed inside TLS: Istio's clients say HTTP in the ALPN.
            vec![
                json!({"name": format!("{name}-http"), "filter_chain_match": m(Some(mtls::mesh_http_alpn())),
                    "transport_socket": mtls::inbound_transport_socket(true), "filters": [self.hcm()]}),
                json!({"name": name, "filter_chain_match": m(mesh_only.then(mtls::mesh_alpn)),
                    "transport_socket": mtls::inbound_transport_socket(false), "filters": [self.tcp()]}),
            ]
        } else {
            let alpn = mesh_only.then(mtls::mesh_alpn_all);
            vec![
                json!({"name": name, "filter_chain_match": m(alpn), "transport_socket": mtls::inbound_transport_socket(false), "filters": [self.tcp()]}),
            ]
        }
    }
}
