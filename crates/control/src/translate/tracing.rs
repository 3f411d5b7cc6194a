//! Tracing on each HTTP connection manager, as istiod configures Envoy: from the Telemetry API
//! when it (or MeshConfig `defaultProviders.tracing`) says anything for the proxy — the
//! provider of the proxy's side (a `zipkin` or `opentelemetry` extension provider), its
//! sampling percentage, custom tags, or no tracing where span reporting is disabled — and
//! otherwise from MeshConfig `defaultConfig.tracing` (sampling and the Zipkin collector). W3C
//! trace context is propagated next to B3 unless a provider asks for B3 only.

use serde_json::{json, Value};
use std::sync::Arc;
use weft_api::mesh::providers::{OtelProvider, ZipkinProvider};
use weft_api::mesh::Provider;

use super::{duration, outbound_cluster_name, socket_address, Generated, Scope};
use crate::telemetry::{Side, TracingSpec};

/// The cluster for a `tracing.zipkin.address` collector outside the registry.
pub const ZIPKIN_CLUSTER: &str = "zipkin";
/// istiod's default sampling when tracing is on and no percentage is given.
const DEFAULT_SAMPLING: f64 = 1.0;

/// The HCM `tracing` block for `side`, or `None` when that side does not trace.
pub fn hcm_tracing(scope: &Scope<'_>, side: Side) -> Option<Value> {
    match scope.telemetry.tracing(side) {
        Some(spec) => from_telemetry(scope, spec),
        None => legacy(scope),
    }
}

/// MeshConfig `defaultConfig.tracing`, as before the Telemetry API.
fn legacy(scope: &Scope<'_>) -> Option<Value> {
    if !scope.model.mesh.enable_tracing {
        return None;
    }
    let t = scope.model.mesh.default_config.tracing.as_ref()?;
    let collector = legacy_collector(scope);
    let sampling = t.sampling.or(collector.as_ref().map(|_| DEFAULT_SAMPLING))?;
    let mut v = json!({"random_sampling": {"value": sampling}});
    if let Some((cluster, _)) = collector {
        v["provider"] = zipkin_tracer(&cluster, "/api/v2/spans", true, true, None);
    }
    Some(v)
}

fn zipkin_tracer(cluster: &str, endpoint: &str, trace_id_128bit: bool, w3c: bool, hostname: Option<&str>) -> Value {
    let mut cfg = json!({
        "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
        "collector_cluster": cluster,
        "collector_endpoint": endpoint,
        "collector_endpoint_version": "HTTP_JSON",
        "trace_id_128bit": trace_id_128bit,
        "shared_span_context": false,
        // W3C `traceparent` in and out next to B3, so callers that speak only W3C (most
        // OpenTelemetry SDKs) stay in one trace across the mesh.
        "trace_context_option": if w3c { "USE_B3_WITH_W3C_PROPAGATION" } else { "USE_B3" },
    });
    if let Some(h) = hostname {
        cfg["collector_hostname"] = json!(h);
    }
    json!({"name": "envoy.tracers.zipkin", "typed_config": cfg})
}

fn from_telemetry(scope: &Scope<'_>, spec: &TracingSpec) -> Option<Value> {
    if spec.disabled {
        return None;
    }
    let provider = spec.provider.as_ref()?;
    let tracer = match &provider.provider {
        Provider::Zipkin(z) => {
            let (cluster, host, _) = provider_collector(scope, "tracing", &provider.name, &z.service, z.port);
            zipkin_provider(z, &cluster, &host)
        }
        Provider::OpenTelemetry(o) => {
            let (cluster, host, port) = provider_collector(scope, "tracing", &provider.name, &o.service, o.port);
            otel_provider(scope, o, &cluster, &host, port)
        }
        _ => return None,
    };
    let sampling =
        spec.sampling.or_else(|| scope.model.mesh.default_config.tracing.as_ref().and_then(|t| t.sampling)).unwrap_or(DEFAULT_SAMPLING);
    let mut v = json!({"random_sampling": {"value": sampling}, "provider": tracer});
    let tags: Vec<Value> = spec
        .custom_tags
        .iter()
        .filter_map(|(name, tag)| {
            if let Some(l) = &tag.literal {
                Some(json!({"tag": name, "literal": {"value": l.value}}))
            } else if let Some(e) = &tag.environment {
                Some(json!({"tag": name, "environment": {"name": e.name, "default_value": e.default_value.clone().unwrap_or_default()}}))
            } else {
                tag.header
                    .as_ref()
                    .map(|h| json!({"tag": name, "request_header": {"name": h.name, "default_value": h.default_value.clone().unwrap_or_default()}}))
            }
        })
        .collect();
    if !tags.is_empty() {
        v["custom_tags"] = json!(tags);
    }
    Some(v)
}

fn zipkin_provider(z: &ZipkinProvider, cluster: &str, host: &str) -> Value {
    let w3c = z.trace_context_option.as_deref() != Some("USE_B3");
    zipkin_tracer(cluster, z.path.as_deref().unwrap_or("/api/v2/spans"), z.enable_64bit_trace_id != Some(true), w3c, Some(host))
}

/// Envoy's OpenTelemetry tracer: OTLP over gRPC to the collector, or over HTTP when the
/// provider says `http` (Jaeger takes both, on 4317 and 4318).
/// The labels a workload's canonical service name is read from, in Istio's order.
pub const CANONICAL_LABELS: [&str; 3] = ["service.istio.io/canonical-name", "app.kubernetes.io/name", "app"];

fn otel_provider(scope: &Scope<'_>, o: &OtelProvider, cluster: &str, host: &str, port: u16) -> Value {
    let mut cfg = json!({"@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"});
    // Spans name the workload as Istio's do, `canonical service.namespace`, from labels only
    // (`push::selecting_label_keys` keeps proxies that differ in them apart).
    if let Some(service) = CANONICAL_LABELS.iter().find_map(|l| scope.node.labels.get(*l)) {
        cfg["service_name"] = json!(format!("{service}.{}", scope.node.namespace));
    }
    match &o.http {
        Some(h) => {
            let path = h.path.as_deref().unwrap_or("/v1/traces");
            let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
            let timeout = h.timeout.map(|t| t.0).unwrap_or(std::time::Duration::from_secs(1));
            cfg["http_service"] =
                json!({"http_uri": {"uri": format!("http://{host}:{port}{path}"), "cluster": cluster, "timeout": duration(timeout)}});
        }
        None => cfg["grpc_service"] = json!({"envoy_grpc": {"cluster_name": cluster, "authority": host}}),
    }
    json!({"name": "envoy.tracers.opentelemetry", "typed_config": cfg})
}

/// A provider's `service` (`host`, or `namespace/host`) as a registry host, if it is one.
fn provider_host(scope: &Scope<'_>, service: &str) -> String {
    let host = service.split_once('/').map_or(service, |(_, h)| h);
    scope.model.resolve_host(host, &scope.model.mesh.root_namespace)
}

/// The cluster a provider's reports go to: the registry service's outbound cluster when the
/// provider's service is one this proxy sees (so reports follow its endpoints and mTLS), else
/// a cluster of the provider's own, `<prefix>|<name>` (`collectors` makes it). Also the host
/// and port.
pub(super) fn provider_collector(scope: &Scope<'_>, prefix: &str, name: &str, service: &str, port: u32) -> (String, String, u16) {
    let port = u16::try_from(port).unwrap_or(0);
    let fqdn = provider_host(scope, service);
    let known = scope.services().any(|s| s.hostname == fqdn && s.ports.iter().any(|p| p.port == port));
    let host = service.split_once('/').map_or(service, |(_, h)| h).to_owned();
    if known {
        (outbound_cluster_name(port, "", &fqdn), fqdn, port)
    } else {
        (format!("{prefix}|{name}"), host, port)
    }
}

/// The collector's cluster for `defaultConfig.tracing.zipkin.address`.
fn legacy_collector(scope: &Scope<'_>) -> Option<(String, Option<(String, u16)>)> {
    let z = scope.model.mesh.default_config.tracing.as_ref()?.zipkin.as_ref()?;
    let (host, port) = z.host_port()?;
    let fqdn = scope.model.resolve_host(host, &scope.model.mesh.root_namespace);
    let known = scope.services().any(|s| s.hostname == fqdn && s.ports.iter().any(|p| p.port == port));
    Some(if known { (outbound_cluster_name(port, "", &fqdn), None) } else { (ZIPKIN_CLUSTER.to_string(), Some((host.to_owned(), port))) })
}

fn static_cluster(name: &str, host: &str, port: u16, http2: bool) -> Value {
    let kind = if host.parse::<std::net::IpAddr>().is_ok() { "STATIC" } else { "STRICT_DNS" };
    let mut c = json!({
        "name": name, "type": kind, "connect_timeout": duration(std::time::Duration::from_secs(10)),
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(host, port)}}]}]},
    });
    if http2 {
        c["typed_extension_protocol_options"] = json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }});
    }
    c
}

/// The clusters of collectors outside the registry that this proxy's tracing and access logs
/// name.
pub fn collectors(scope: &Scope<'_>, out: &mut Generated) {
    if scope.telemetry.tracing.is_none() {
        if let Some((name, Some((host, port)))) = legacy_collector(scope) {
            if let Some(c) = super::pb::from_json(&name, &static_cluster(&name, &host, port, false)) {
                out.clusters.insert(name.clone(), Arc::new(c));
            }
        }
    }
    for side in [Side::Client, Side::Server] {
        let Some(spec) = scope.telemetry.tracing(side).filter(|s| !s.disabled) else { continue };
        let Some(p) = &spec.provider else { continue };
        let (service, port, grpc) = match &p.provider {
            Provider::Zipkin(z) => (&z.service, z.port, false),
            Provider::OpenTelemetry(o) => (&o.service, o.port, o.http.is_none()),
            _ => continue,
        };
        let (cluster, host, port) = provider_collector(scope, "tracing", &p.name, service, port);
        if cluster.starts_with("tracing|") {
            if let Some(c) = super::pb::from_json(&cluster, &static_cluster(&cluster, &host, port, grpc)) {
                out.clusters.insert(cluster.clone(), Arc::new(c));
            }
        }
    }
    // Access logs over OTLP/gRPC.
    for side in [Side::Client, Side::Server] {
        for l in scope.telemetry.logs(side).unwrap_or_default() {
            if let Provider::EnvoyOtelAls(o) = &l.provider.provider {
                let (cluster, host, port) = provider_collector(scope, "accesslog", &l.provider.name, &o.service, o.port);
                if cluster.starts_with("accesslog|") {
                    if let Some(c) = super::pb::from_json(&cluster, &static_cluster(&cluster, &host, port, true)) {
                        out.clusters.insert(cluster.clone(), Arc::new(c));
                    }
                }
            }
        }
    }
}
