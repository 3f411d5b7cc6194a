//! Outbound listeners (LDS) for a sidecar: `virtualOutbound` on 15001 hands captured
//! connections to a listener per destination port; the HTTP proxy listener takes requests an
//! application sends to it explicitly (`HTTP_PROXY`). The inbound side is `inbound.rs`.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use weft_api::networking::{self as net, OutboundMode};

use super::pb;
use super::{outbound_cluster_name, socket_address, tcp_proxy, Generated, Scope};
use super::{BLACKHOLE, INBOUND_PORT, OUTBOUND_PORT, PASSTHROUGH};
use crate::node::Interception;
use crate::protocol::Protocol;
use crate::telemetry::Side;
use weft_api::mesh::Provider;

/// ALPN values the HTTP inspector reports for plaintext HTTP.
pub(super) const HTTP_ALPN: [&str; 3] = ["http/1.0", "http/1.1", "h2c"];

/// The route configuration of the HTTP proxy listener (Istio's `RDSHttpProxy`).
pub const HTTP_PROXY_ROUTE: &str = "http_proxy";

pub(super) fn http_inspector() -> Value {
    json!({"name": "envoy.filters.listener.http_inspector", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"}})
}

pub(super) fn tls_inspector() -> Value {
    json!({"name": "envoy.filters.listener.tls_inspector", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}})
}

pub(super) fn original_dst() -> Value {
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

/// A file access log: Envoy's file logger with `format` (text) or `labels` (JSON lines), and a
/// CEL filter (Envoy's `envoy.access_loggers.extension_filters.cel`, as istiod writes it).
fn file_log(path: &str, format: Option<&str>, labels: Option<&BTreeMap<String, String>>, filter: Option<&str>) -> Value {
    let log_format = match labels {
        Some(labels) => json!({"json_format": labels}),
        None => {
            let mut text = format.filter(|f| !f.is_empty()).unwrap_or(ISTIO_ACCESS_LOG_FORMAT).to_owned();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            json!({"text_format_source": {"inline_string": text}})
        }
    };
    let mut log = json!({"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": path,
        "log_format": log_format,
    }});
    if let Some(expression) = filter {
        log["filter"] = cel_filter(expression);
    }
    log
}

/// Envoy's OpenTelemetry access logger, as istiod writes it for an `envoyOtelAls` provider:
/// the line (Istio's format, or the provider's `text`) as the record's body, `labels` as its
/// attributes, to the collector over OTLP/gRPC.
fn otel_log(scope: &Scope<'_>, name: &str, o: &weft_api::mesh::providers::OtelAlsProvider, filter: Option<&str>) -> Value {
    let (cluster, host, _) = super::tracing::provider_collector(scope, "accesslog", name, &o.service, o.port);
    let format = o.log_format.as_ref();
    let mut cfg = json!({
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig",
        "common_config": {
            "log_name": o.log_name.clone().unwrap_or_else(|| "otel_envoy_accesslog".into()),
            "grpc_service": {"envoy_grpc": {"cluster_name": cluster, "authority": host}},
            "transport_api_version": "V3",
        },
    });
    match format.and_then(|l| l.labels.as_ref()) {
        Some(labels) => {
            let values: Vec<Value> = labels.iter().map(|(k, v)| json!({"key": k, "value": {"string_value": v}})).collect();
            cfg["attributes"] = json!({"values": values});
        }
        None => {
            let text = format.and_then(|l| l.text.as_deref()).filter(|t| !t.is_empty()).unwrap_or(ISTIO_ACCESS_LOG_FORMAT);
            cfg["body"] = json!({"string_value": text});
        }
    }
    let mut log = json!({"name": "envoy.access_loggers.open_telemetry", "typed_config": cfg});
    if let Some(expression) = filter {
        log["filter"] = cel_filter(expression);
    }
    log
}

fn cel_filter(expression: &str) -> Value {
    json!({"extension_filter": {"name": "envoy.access_loggers.extension_filters.cel", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
        "expression": expression,
    }}})
}

/// The access logs of one side of the proxy: the Telemetry API's providers when it says
/// anything, else MeshConfig `accessLogFile`.
fn access_logs(scope: &Scope<'_>, side: Side) -> Vec<Value> {
    match scope.telemetry.logs(side) {
        Some(specs) => specs
            .iter()
            .filter_map(|s| match &s.provider.provider {
                Provider::EnvoyFileAccessLog(f) => {
                    let format = f.log_format.as_ref();
                    Some(file_log(
                        &f.path,
                        format.and_then(|l| l.text.as_deref()),
                        format.and_then(|l| l.labels.as_ref()),
                        s.filter.as_deref(),
                    ))
                }
                Provider::EnvoyOtelAls(o) => Some(otel_log(scope, &s.provider.name, o, s.filter.as_deref())),
                _ => None,
            })
            .collect(),
        None => {
            let mesh = &scope.model.mesh;
            mesh.access_log_file
                .as_deref()
                .filter(|p| !p.is_empty())
                .map(|path| file_log(path, mesh.access_log_format.as_deref(), None, None))
                .into_iter()
                .collect()
        }
    }
}

/// Puts the side's access logs on every `tcp_proxy` of `listeners` (HTTP connection managers
/// get theirs in [`hcm`]), so a connection sent to the BlackHoleCluster is logged too.
pub(super) fn add_tcp_access_logs(scope: &Scope<'_>, side: Side, listeners: &mut std::collections::BTreeMap<String, pb::Listener>) {
    use prost::Message as _;
    let logs: Vec<pb::AccessLog> = access_logs(scope, side).iter().filter_map(|l| pb::from_json("access log", l)).collect();
    if logs.is_empty() {
        return;
    }
    let add = |chain: &mut pb::listener::FilterChain| {
        for f in chain.filters.iter_mut().filter(|f| f.name == "envoy.filters.network.tcp_proxy") {
            let Some(pb::listener::filter::ConfigType::TypedConfig(any)) = &mut f.config_type else { continue };
            // The proxy was built by this module a moment ago: it decodes.
            let Ok(mut tcp) = pb::TcpProxy::decode(any.value.as_slice()) else { continue };
            tcp.access_log = logs.clone();
            *any = pb::any(&tcp);
        }
    };
    for l in listeners.values_mut() {
        l.filter_chains.iter_mut().for_each(add);
        if let Some(d) = &mut l.default_filter_chain {
            add(d);
        }
    }
}

/// An HTTP connection manager with the mesh's filters; `routes` is an RDS name or an inline
/// route configuration. MeshConfig `defaultConfig.tracing` becomes the percentage of requests
/// traced and the Zipkin collector, as istiod sets them.
pub(super) fn hcm(scope: &Scope<'_>, side: Side, stat_prefix: &str, routes: Value) -> Value {
    let mut cfg = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "http_filters": [
            {"name": "envoy.filters.http.fault", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    });
    if let Some(t) = super::tracing::hcm_tracing(scope, side) {
        cfg["tracing"] = t;
    }
    if scope.node.http10 {
        cfg["http_protocol_options"] = json!({"accept_http_10": true});
    }
    let logs = access_logs(scope, side);
    if !logs.is_empty() {
        cfg["access_log"] = json!(logs);
    }
    match routes {
        Value::String(name) => cfg["rds"] = json!({"route_config_name": name, "config_source": {"ads": {}, "resource_api_version": "V3"}}),
        inline => cfg["route_config"] = inline,
    }
    json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": cfg})
}

pub fn outbound(scope: &Scope<'_>, out: &mut Generated) {
    let fallback = unknown_destination(scope);
    super::pb::put(
        &mut out.listeners,
        "virtualOutbound".into(),
        &json!({
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
    for svc in scope.services() {
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
                    "filters": [hcm(scope, Side::Client, &format!("outbound_{name}"), json!(port.to_string()))],
                }));
            }
        }
        if any_http {
            chains.push(json!({
                "name": name,
                "filter_chain_match": {"application_protocols": HTTP_ALPN},
                "filters": [hcm(scope, Side::Client, &format!("outbound_{name}"), json!(port.to_string()))],
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
        super::pb::put(&mut out.listeners, name, &l);
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

/// The HTTP proxy listener (Istio's `proxyHttpPort`): HTTP/1.1 requests in absolute form
/// (`GET http://reviews:9080/…`, what clients send to their `HTTP_PROXY`) routed by the
/// `http_proxy` route configuration, which knows every visible service as `host:port`.
///
/// It binds a real port. Istio binds it on 127.0.0.1, the pod's own loopback; a proxy whose
/// traffic is not captured (`INTERCEPTION_MODE: NONE`) binds it on its own address instead,
/// because on one machine (`weft up --explicit`) 127.0.0.1 is shared by every workload while
/// each has a loopback address of its own.
pub fn http_proxy(scope: &Scope<'_>, port: u16, out: &mut Generated) {
    let bind = match scope.node.interception {
        Interception::None => scope.node.ip.to_string(),
        Interception::Redirect | Interception::Tproxy => "127.0.0.1".to_string(),
    };
    let name = format!("{bind}_{port}");
    let mut manager = hcm(scope, Side::Client, &format!("outbound_{name}"), json!(HTTP_PROXY_ROUTE));
    manager["typed_config"]["http_protocol_options"] = json!({"allow_absolute_url": true});
    super::pb::put(
        &mut out.listeners,
        name.clone(),
        &json!({
            "name": name,
            "address": socket_address(&bind, port),
            "traffic_direction": "OUTBOUND",
            "filter_chains": [{"name": name, "filters": [manager]}],
        }),
    );
}
