//! Tracing on each HTTP connection manager, as istiod configures Envoy: from the Telemetry API
//! when it (or MeshConfig `defaultProviders.tracing`) says anything for the proxy — the
//! provider of the proxy's side (a `zipkin` or `opentelemetry` extension provider), its
//! sampling percentage, custom tags, or no tracing where span reporting is disabled — and
//! otherwise from MeshConfig `defaultConfig.tracing` (sampling and the Zipkin collector). W3C
//! trace context is propagated next to B3 unless a provider asks for B3 only.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::trace::v3::tracing::{http::ConfigType, Http};
use envoy_types::pb::envoy::config::trace::v3::zipkin_config::{CollectorEndpointVersion, TraceContextOption};
use envoy_types::pb::envoy::config::trace::v3::{OpenTelemetryConfig, ZipkinConfig};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;
use envoy_types::pb::envoy::r#type::tracing::v3::{custom_tag, CustomTag};
use envoy_types::pb::envoy::r#type::v3::Percent;
use weft_api::mesh::providers::{OtelProvider, ZipkinProvider};
use weft_api::mesh::Provider;

use super::pb::{self, cluster};
use super::{outbound_cluster_name, Generated, Scope};
use crate::telemetry::{Side, TracingSpec};

/// The cluster for a `tracing.zipkin.address` collector outside the registry.
pub const ZIPKIN_CLUSTER: &str = "zipkin";
/// istiod's default sampling when tracing is on and no percentage is given.
const DEFAULT_SAMPLING: f64 = 1.0;

/// The HCM `tracing` block for `side`, or `None` when that side does not trace.
pub fn hcm_tracing(scope: &Scope<'_>, side: Side) -> Option<Tracing> {
    match scope.telemetry.tracing(side) {
        Some(spec) => from_telemetry(scope, spec),
        None => legacy(scope),
    }
}

/// MeshConfig `defaultConfig.tracing`, as before the Telemetry API.
fn legacy(scope: &Scope<'_>) -> Option<Tracing> {
    if !scope.model.mesh.enable_tracing {
        return None;
    }
    let t = scope.model.mesh.default_config.tracing.as_ref()?;
    let collector = legacy_collector(scope);
    let sampling = t.sampling.or(collector.as_ref().map(|_| DEFAULT_SAMPLING))?;
    let provider = collector.map(|(cluster, _)| zipkin_tracer(&cluster, "/api/v2/spans", true, true, None));
    Some(Tracing { random_sampling: Some(Percent { value: sampling }), provider, ..Default::default() })
}

/// A tracer provider (`name` with its config packed in `typed_config`).
fn typed_tracer<M: prost::Message + prost::Name>(name: &str, config: &M) -> Http {
    Http { name: name.into(), config_type: Some(ConfigType::TypedConfig(pb::any(config))) }
}

fn zipkin_tracer(cluster: &str, endpoint: &str, trace_id_128bit: bool, w3c: bool, hostname: Option<&str>) -> Http {
    let cfg = ZipkinConfig {
        collector_cluster: cluster.into(),
        collector_endpoint: endpoint.into(),
        collector_endpoint_version: CollectorEndpointVersion::HttpJson as i32,
        trace_id_128bit,
        shared_span_context: pb::boolv(false),
        // W3C `traceparent` in and out next to B3, so callers that speak only W3C (most
        // OpenTelemetry SDKs) stay in one trace across the mesh.
        trace_context_option: if w3c { TraceContextOption::UseB3WithW3cPropagation } else { TraceContextOption::UseB3 } as i32,
        collector_hostname: hostname.unwrap_or_default().into(),
        ..Default::default()
    };
    typed_tracer("envoy.tracers.zipkin", &cfg)
}

fn from_telemetry(scope: &Scope<'_>, spec: &TracingSpec) -> Option<Tracing> {
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
    let custom_tags: Vec<CustomTag> = spec
        .custom_tags
        .iter()
        .filter_map(|(name, tag)| {
            let r#type = if let Some(l) = &tag.literal {
                custom_tag::Type::Literal(custom_tag::Literal { value: l.value.clone() })
            } else if let Some(e) = &tag.environment {
                custom_tag::Type::Environment(custom_tag::Environment {
                    name: e.name.clone(),
                    default_value: e.default_value.clone().unwrap_or_default(),
                })
            } else {
                let h = tag.header.as_ref()?;
                custom_tag::Type::RequestHeader(custom_tag::Header {
                    name: h.name.clone(),
                    default_value: h.default_value.clone().unwrap_or_default(),
                })
            };
            Some(CustomTag { tag: name.clone(), r#type: Some(r#type) })
        })
        .collect();
    Some(Tracing { random_sampling: Some(Percent { value: sampling }), provider: Some(tracer), custom_tags, ..Default::default() })
}

fn zipkin_provider(z: &ZipkinProvider, cluster: &str, host: &str) -> Http {
    let w3c = z.trace_context_option.as_deref() != Some("USE_B3");
    zipkin_tracer(cluster, z.path.as_deref().unwrap_or("/api/v2/spans"), z.enable_64bit_trace_id != Some(true), w3c, Some(host))
}

/// The labels a workload's canonical service name is read from, in Istio's order.
pub const CANONICAL_LABELS: [&str; 3] = ["service.istio.io/canonical-name", "app.kubernetes.io/name", "app"];

/// Envoy's OpenTelemetry tracer: OTLP over gRPC to the collector, or over HTTP when the
/// provider says `http` (Jaeger takes both, on 4317 and 4318).
fn otel_provider(scope: &Scope<'_>, o: &OtelProvider, cluster: &str, host: &str, port: u16) -> Http {
    let mut cfg = OpenTelemetryConfig::default();
    // Spans name the workload as Istio's do, `canonical service.namespace`, from labels only
    // (`push::selecting_label_keys` keeps proxies that differ in them apart).
    if let Some(service) = CANONICAL_LABELS.iter().find_map(|l| scope.node.labels.get(*l)) {
        cfg.service_name = format!("{service}.{}", scope.node.namespace);
    }
    match &o.http {
        Some(h) => {
            let path = h.path.as_deref().unwrap_or("/v1/traces");
            let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
            let timeout = h.timeout.map(|t| t.0).unwrap_or(Duration::from_secs(1));
            cfg.http_service = Some(pb::core::HttpService {
                http_uri: Some(pb::core::HttpUri {
                    uri: format!("http://{host}:{port}{path}"),
                    http_upstream_type: Some(pb::core::http_uri::HttpUpstreamType::Cluster(cluster.into())),
                    timeout: pb::duration(timeout),
                }),
                ..Default::default()
            });
        }
        None => {
            let grpc = pb::core::grpc_service::EnvoyGrpc { cluster_name: cluster.into(), authority: host.into(), ..Default::default() };
            cfg.grpc_service = Some(pb::core::GrpcService {
                target_specifier: Some(pb::core::grpc_service::TargetSpecifier::EnvoyGrpc(grpc)),
                ..Default::default()
            });
        }
    }
    typed_tracer("envoy.tracers.opentelemetry", &cfg)
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

fn static_cluster(name: &str, host: &str, port: u16, http2: bool) -> pb::Cluster {
    use cluster::cluster::{ClusterDiscoveryType, DiscoveryType};
    let kind = if host.parse::<std::net::IpAddr>().is_ok() { DiscoveryType::Static } else { DiscoveryType::StrictDns };
    pb::Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(kind as i32)),
        connect_timeout: pb::duration(Duration::from_secs(10)),
        load_assignment: Some(pb::one_endpoint(name, host, port)),
        // gRPC collectors take HTTP/2.
        typed_extension_protocol_options: if http2 { super::cluster::http_protocol_options(true, None) } else { Default::default() },
        ..Default::default()
    }
}

/// The clusters of collectors outside the registry that this proxy's tracing and access logs
/// name.
pub fn collectors(scope: &Scope<'_>, out: &mut Generated) {
    if scope.telemetry.tracing.is_none() {
        if let Some((name, Some((host, port)))) = legacy_collector(scope) {
            let c = static_cluster(&name, &host, port, false);
            out.clusters.insert(name, Arc::new(c));
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
            let c = static_cluster(&cluster, &host, port, grpc);
            out.clusters.insert(cluster, Arc::new(c));
        }
    }
    // Access logs over OTLP/gRPC.
    for side in [Side::Client, Side::Server] {
        for l in scope.telemetry.logs(side).unwrap_or_default() {
            if let Provider::EnvoyOtelAls(o) = &l.provider.provider {
                let (cluster, host, port) = provider_collector(scope, "accesslog", &l.provider.name, &o.service, o.port);
                if cluster.starts_with("accesslog|") {
                    let c = static_cluster(&cluster, &host, port, true);
                    out.clusters.insert(cluster, Arc::new(c));
                }
            }
        }
    }
}
