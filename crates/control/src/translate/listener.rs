//! Outbound listeners (LDS) for a sidecar: `virtualOutbound` on 15001 hands captured
//! connections to a listener per destination port; the HTTP proxy listener takes requests an
//! application sends to it explicitly (`HTTP_PROXY`). The inbound side is `inbound.rs`.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{file_access_log::AccessLogFormat, FileAccessLog};
use weft_api::networking::{self as net, OutboundMode};

use super::pb::{self, hcm, listener};
use super::{outbound_cluster_name, tcp_proxy, Generated, Scope};
use super::{BLACKHOLE, INBOUND_PORT, OUTBOUND_PORT, PASSTHROUGH};
use crate::node::Interception;
use crate::protocol::Protocol;
use crate::telemetry::Side;
use weft_api::mesh::Provider;

/// ALPN values the HTTP inspector reports for plaintext HTTP.
pub(super) const HTTP_ALPN: [&str; 3] = ["http/1.0", "http/1.1", "h2c"];

/// The route configuration of the HTTP proxy listener (Istio's `RDSHttpProxy`).
pub const HTTP_PROXY_ROUTE: &str = "http_proxy";

pub(super) fn http_alpn() -> Vec<String> {
    HTTP_ALPN.iter().map(|s| s.to_string()).collect()
}

pub(super) fn http_inspector() -> listener::ListenerFilter {
    use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
    pb::listener_filter("envoy.filters.listener.http_inspector", &HttpInspector {})
}

pub(super) fn tls_inspector() -> listener::ListenerFilter {
    use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
    pb::listener_filter("envoy.filters.listener.tls_inspector", &TlsInspector::default())
}

pub(super) fn original_dst() -> listener::ListenerFilter {
    use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
    pb::listener_filter("envoy.filters.listener.original_dst", &OriginalDst::default())
}

/// A listener on `address:port` with Istio's direction (`OUTBOUND` or `INBOUND`).
pub(super) fn listener(name: &str, address: &str, port: u16, direction: pb::core::TrafficDirection) -> pb::Listener {
    pb::Listener {
        name: name.into(),
        address: pb::socket_address(address, port),
        traffic_direction: direction as i32,
        ..Default::default()
    }
}

/// A filter chain of these filters.
pub(super) fn chain(name: &str, filters: Vec<listener::Filter>) -> listener::FilterChain {
    listener::FilterChain { name: name.into(), filters, ..Default::default() }
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
fn file_log(path: &str, format: Option<&str>, labels: Option<&BTreeMap<String, String>>, filter: Option<&str>) -> pb::AccessLog {
    use pb::core::substitution_format_string::Format;
    let format = match labels {
        Some(labels) => Format::JsonFormat(pb::fields(labels.iter().map(|(k, v)| (k.clone(), pb::string(v))))),
        None => {
            let mut text = format.filter(|f| !f.is_empty()).unwrap_or(ISTIO_ACCESS_LOG_FORMAT).to_owned();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            Format::TextFormatSource(pb::inline_string(&text).unwrap_or_default())
        }
    };
    let log_format = pb::core::SubstitutionFormatString { format: Some(format), ..Default::default() };
    let config = FileAccessLog { path: path.into(), access_log_format: Some(AccessLogFormat::LogFormat(log_format)) };
    access_log("envoy.access_loggers.file", &config, filter)
}

fn access_log<M: prost::Message + prost::Name>(name: &str, config: &M, filter: Option<&str>) -> pb::AccessLog {
    use envoy_types::pb::envoy::config::accesslog::v3::access_log::ConfigType;
    pb::AccessLog { name: name.into(), filter: filter.map(cel_filter), config_type: Some(ConfigType::TypedConfig(pb::any(config))) }
}

/// Envoy's OpenTelemetry access logger, as istiod writes it for an `envoyOtelAls` provider:
/// the line (Istio's format, or the provider's `text`) as the record's body, `labels` as its
/// attributes, to the collector over OTLP/gRPC.
fn otel_log(scope: &Scope<'_>, name: &str, o: &weft_api::mesh::providers::OtelAlsProvider, filter: Option<&str>) -> pb::AccessLog {
    use envoy_types::pb::envoy::extensions::access_loggers::grpc::v3::CommonGrpcAccessLogConfig;
    use envoy_types::pb::envoy::extensions::access_loggers::open_telemetry::v3::OpenTelemetryAccessLogConfig;
    use envoy_types::pb::opentelemetry::proto::common::v1::{any_value, AnyValue, KeyValue, KeyValueList};
    let (cluster, host, _) = super::tracing::provider_collector(scope, "accesslog", name, &o.service, o.port);
    let format = o.log_format.as_ref();
    let text = |s: &str| Some(AnyValue { value: Some(any_value::Value::StringValue(s.into())) });
    let common = CommonGrpcAccessLogConfig {
        log_name: o.log_name.clone().unwrap_or_else(|| "otel_envoy_accesslog".into()),
        grpc_service: Some(pb::envoy_grpc(&cluster, &host)),
        transport_api_version: pb::core::ApiVersion::V3 as i32,
        ..Default::default()
    };
    // Deprecated in Envoy's proto for `grpc_service`, but what istiod writes and Envoy reads.
    #[allow(deprecated)]
    let mut config = OpenTelemetryAccessLogConfig { common_config: Some(common), ..Default::default() };
    match format.and_then(|l| l.labels.as_ref()) {
        Some(labels) => {
            let values = labels.iter().map(|(k, v)| KeyValue { key: k.clone(), value: text(v), ..Default::default() }).collect();
            config.attributes = Some(KeyValueList { values });
        }
        None => {
            let line = format.and_then(|l| l.text.as_deref()).filter(|t| !t.is_empty()).unwrap_or(ISTIO_ACCESS_LOG_FORMAT);
            config.body = text(line);
        }
    }
    access_log("envoy.access_loggers.open_telemetry", &config, filter)
}

fn cel_filter(expression: &str) -> envoy_types::pb::envoy::config::accesslog::v3::AccessLogFilter {
    use envoy_types::pb::envoy::config::accesslog::v3::{
        access_log_filter::FilterSpecifier, extension_filter, AccessLogFilter, ExtensionFilter,
    };
    use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
    let cel = ExpressionFilter { expression: expression.into(), ..Default::default() };
    let extension = ExtensionFilter {
        name: "envoy.access_loggers.extension_filters.cel".into(),
        config_type: Some(extension_filter::ConfigType::TypedConfig(pb::any(&cel))),
    };
    AccessLogFilter { filter_specifier: Some(FilterSpecifier::ExtensionFilter(extension)) }
}

/// The access logs of one side of the proxy: the Telemetry API's providers when it says
/// anything, else MeshConfig `accessLogFile`.
fn access_logs(scope: &Scope<'_>, side: Side) -> Vec<pb::AccessLog> {
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
    let logs = access_logs(scope, side);
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

/// Where an HTTP connection manager's routes come from.
pub(super) enum Routes {
    /// The route configuration of this name, over RDS.
    Rds(String),
    Inline(Box<pb::RouteConfiguration>),
}

/// An HTTP connection manager with the mesh's filters. MeshConfig `defaultConfig.tracing`
/// becomes the percentage of requests traced and the Zipkin collector, as istiod sets them.
pub(super) fn hcm(scope: &Scope<'_>, side: Side, stat_prefix: &str, routes: Routes) -> hcm::HttpConnectionManager {
    use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
    use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
    use hcm::http_connection_manager::RouteSpecifier;
    let route_specifier = match routes {
        Routes::Rds(name) => RouteSpecifier::Rds(hcm::Rds { route_config_name: name, config_source: pb::ads() }),
        Routes::Inline(config) => RouteSpecifier::RouteConfig(*config),
    };
    hcm::HttpConnectionManager {
        stat_prefix: stat_prefix.into(),
        http_filters: vec![
            pb::http_filter("envoy.filters.http.fault", &HttpFault::default()),
            pb::http_filter("envoy.filters.http.router", &Router::default()),
        ],
        tracing: super::tracing::hcm_tracing(scope, side),
        http_protocol_options: scope.node.http10.then(|| pb::core::Http1ProtocolOptions { accept_http_10: true, ..Default::default() }),
        access_log: access_logs(scope, side),
        route_specifier: Some(route_specifier),
        ..Default::default()
    }
}

/// The HTTP connection manager as a network filter.
pub(super) fn hcm_filter(config: &hcm::HttpConnectionManager) -> listener::Filter {
    pb::filter("envoy.filters.network.http_connection_manager", config)
}

pub fn outbound(scope: &Scope<'_>, out: &mut Generated) {
    use pb::core::TrafficDirection::Outbound;
    let fallback = unknown_destination(scope);
    let blackhole = listener::FilterChain {
        filter_chain_match: Some(listener::FilterChainMatch { destination_port: pb::u32v(OUTBOUND_PORT.into()), ..Default::default() }),
        ..chain("virtualOutbound-blackhole", vec![tcp_proxy(BLACKHOLE, BLACKHOLE)])
    };
    let virtual_outbound = pb::Listener {
        use_original_dst: pb::boolv(true),
        filter_chains: vec![blackhole, chain("virtualOutbound-catchall-tcp", vec![tcp_proxy(fallback, fallback)])],
        ..listener("virtualOutbound", "0.0.0.0", OUTBOUND_PORT, Outbound)
    };
    out.listeners.insert("virtualOutbound".into(), virtual_outbound);

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
        let http = || hcm_filter(&hcm(scope, Side::Client, &format!("outbound_{name}"), Routes::Rds(port.to_string())));
        let mut chains = Vec::new();
        let mut any_http = false;
        let mut sni = SniChains::default();
        for (svc, proto) in &services {
            if proto.is_http() {
                any_http = true;
                continue;
            }
            if *proto == Protocol::Auto {
                any_http = true;
            }
            if matches!(proto, Protocol::Tls | Protocol::Https) {
                sni.add(scope, svc, port);
            }
            // Other non-HTTP traffic is told apart by destination address, so it needs one.
            let ranges = svc.ranges_for(scope.node.dns.auto_allocated());
            let Some(first) = ranges.first() else { continue };
            let vip = if first.prefix_len() == first.max_prefix_len() { first.addr().to_string() } else { first.to_string() };
            let clusters = tcp_destination(scope, &svc.hostname, port);
            let to_vip = listener::FilterChainMatch { prefix_ranges: ranges.iter().map(pb::cidr_range).collect(), ..Default::default() };
            chains.push(listener::FilterChain {
                filter_chain_match: Some(to_vip.clone()),
                ..chain(&format!("{vip}_{port}"), vec![super::tcp_proxy_to(&clusters)])
            });
            if *proto == Protocol::Auto {
                // Sniffed port: HTTP to the VIP still goes through the HTTP routes.
                chains.push(listener::FilterChain {
                    filter_chain_match: Some(listener::FilterChainMatch { application_protocols: http_alpn(), ..to_vip }),
                    ..chain(&format!("{vip}_{port}-http"), vec![http()])
                });
            }
        }
        if any_http {
            chains.push(listener::FilterChain {
                filter_chain_match: Some(listener::FilterChainMatch { application_protocols: http_alpn(), ..Default::default() }),
                ..chain(&name, vec![http()])
            });
        }
        let any_tls = !sni.chains.is_empty();
        chains.extend(sni.chains);
        let mut listener_filters = Vec::new();
        if any_tls {
            listener_filters.push(tls_inspector());
        }
        if any_http {
            listener_filters.push(http_inspector());
        }
        let l = pb::Listener {
            bind_to_port: pb::boolv(false),
            filter_chains: chains,
            default_filter_chain: Some(chain("PassthroughFilterChain", vec![tcp_proxy(fallback, fallback)])),
            listener_filters,
            ..listener(&name, "0.0.0.0", port, Outbound)
        };
        out.listeners.insert(name, l);
    }
}
/// A port's filter chains for TLS told apart by SNI (Istio's TLS and HTTPS service ports):
/// a VirtualService's `tls` routes by their `sniHosts`, and a service with no VIP (a
/// ServiceEntry host, wildcards too) by its own name; a service with a VIP is also reached by
/// address. One chain per server name: Envoy refuses two that match alike.
#[derive(Default)]
struct SniChains {
    chains: Vec<listener::FilterChain>,
    names: std::collections::BTreeSet<String>,
}

impl SniChains {
    fn add(&mut self, scope: &Scope<'_>, svc: &crate::model::Service, port: u16) {
        let auto = scope.node.dns.auto_allocated();
        let ranges: Vec<pb::core::CidrRange> = svc.ranges_for(auto).iter().map(pb::cidr_range).collect();
        if let Some(vs) = scope.virtual_service(&svc.hostname) {
            let node = scope.node;
            for r in &vs.spec.tls {
                let clusters = l4_clusters(scope, &r.route, &vs.namespace, port);
                if clusters.is_empty() {
                    continue;
                }
                for m in &r.matches {
                    let applies = m.port.is_none_or(|p| p == u32::from(port))
                        && super::route::Bound::Mesh.admits(&m.gateways, &vs.namespace)
                        && crate::model::labels_match(&m.source_labels, &node.labels)
                        && m.source_namespace.as_ref().is_none_or(|ns| *ns == node.namespace);
                    if applies {
                        self.push(&m.sni_hosts, &ranges, &clusters, port);
                    }
                }
            }
        }
        if svc.vip_for(auto).is_none() {
            let cluster = outbound_cluster_name(port, "", &svc.hostname);
            self.push(std::slice::from_ref(&svc.hostname), &[], &[(cluster, 100)], port);
        }
    }

    fn push(&mut self, names: &[String], ranges: &[pb::core::CidrRange], clusters: &[(String, u32)], port: u16) {
        let names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).filter(|n| self.names.insert(n.clone())).collect();
        let Some(first) = names.first() else { return };
        let m = listener::FilterChainMatch {
            server_names: names.clone(),
            transport_protocol: "tls".into(),
            prefix_ranges: ranges.to_vec(),
            ..Default::default()
        };
        self.chains.push(listener::FilterChain {
            filter_chain_match: Some(m),
            ..chain(&format!("{first}_{port}"), vec![super::tcp_proxy_to(clusters)])
        });
    }
}

/// The clusters for TCP traffic to `host:port`, by weight: a VirtualService `tcp` route's
/// destinations when one applies, else the service.
fn tcp_destination(scope: &Scope<'_>, host: &str, port: u16) -> Vec<(String, u32)> {
    if let Some(vs) = scope.virtual_service(host) {
        for r in &vs.spec.tcp {
            let applies = r.matches.is_empty() || r.matches.iter().any(|m| m.port.is_none_or(|p| p == u32::from(port)));
            let clusters = l4_clusters(scope, &r.route, &vs.namespace, port);
            if applies && !clusters.is_empty() {
                return clusters;
            }
        }
    }
    vec![(outbound_cluster_name(port, "", host), 100)]
}

/// The clusters of an L4 (`tcp`/`tls`) route's destinations with their weights (validation
/// holds them to 100 in all; a route of one destination takes everything).
pub(super) fn l4_clusters(scope: &Scope<'_>, route: &[net::RouteDestination], vs_ns: &str, port: u16) -> Vec<(String, u32)> {
    let weight = |w: Option<i64>| if route.len() == 1 { 100 } else { u32::try_from(w.unwrap_or(0).clamp(0, 100)).unwrap_or(0) };
    route.iter().map(|d| (l4_cluster(scope, &d.destination, vs_ns, port), weight(d.weight))).collect()
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
    let mut manager = hcm(scope, Side::Client, &format!("outbound_{name}"), Routes::Rds(HTTP_PROXY_ROUTE.into()));
    manager.http_protocol_options.get_or_insert_with(Default::default).allow_absolute_url = pb::boolv(true);
    let l = pb::Listener {
        filter_chains: vec![chain(&name, vec![hcm_filter(&manager)])],
        ..listener(&name, &bind, port, pb::core::TrafficDirection::Outbound)
    };
    out.listeners.insert(name, l);
}
