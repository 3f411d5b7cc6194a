//! MeshConfig `defaultConfig.tracing`: the sampling percentage and the Zipkin collector every
//! HTTP connection manager reports to, as istiod configures Envoy, with W3C trace context
//! propagated next to B3.

use serde_json::{json, Value};

use super::{duration, outbound_cluster_name, socket_address, Generated, Scope};

/// The cluster for a collector outside the registry.
pub const ZIPKIN_CLUSTER: &str = "zipkin";
/// istiod's default sampling when tracing is on and no percentage is given.
const DEFAULT_SAMPLING: f64 = 1.0;

/// The HCM `tracing` block, or `None` when the mesh does not trace.
pub fn hcm_tracing(scope: &Scope<'_>) -> Option<Value> {
    if !scope.model.mesh.enable_tracing {
        return None;
    }
    let t = scope.model.mesh.default_config.tracing.as_ref()?;
    let collector = collector_cluster(scope);
    let sampling = t.sampling.or(collector.as_ref().map(|_| DEFAULT_SAMPLING))?;
    let mut v = json!({"random_sampling": {"value": sampling}});
    if let Some(cluster) = collector {
        v["provider"] = json!({"name": "envoy.tracers.zipkin", "typed_config": {
            "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
            "collector_cluster": cluster,
            "collector_endpoint": "/api/v2/spans",
            "collector_endpoint_version": "HTTP_JSON",
            "trace_id_128bit": true,
            "shared_span_context": false,
            // W3C `traceparent` in and out next to B3, so callers that speak only W3C (most
            // OpenTelemetry SDKs) stay in one trace across the mesh.
            "trace_context_option": "USE_B3_WITH_W3C_PROPAGATION",
        }});
    }
    Some(v)
}

/// The collector's cluster: the registry service's outbound cluster when the address names a
/// service this proxy sees (so reports follow its endpoints and mTLS), else [`ZIPKIN_CLUSTER`].
fn collector_cluster(scope: &Scope<'_>) -> Option<String> {
    let z = scope.model.mesh.default_config.tracing.as_ref()?.zipkin.as_ref()?;
    let (host, port) = z.host_port()?;
    let fqdn = scope.model.resolve_host(host, &scope.model.mesh.root_namespace);
    let known = scope.services.iter().any(|s| s.hostname == fqdn && s.ports.iter().any(|p| p.port == port));
    Some(if known { outbound_cluster_name(port, "", &fqdn) } else { ZIPKIN_CLUSTER.to_string() })
}

/// The [`ZIPKIN_CLUSTER`] for a collector outside the registry: STATIC for an address,
/// STRICT_DNS for a name.
pub fn collector(scope: &Scope<'_>, out: &mut Generated) {
    if collector_cluster(scope).as_deref() != Some(ZIPKIN_CLUSTER) {
        return;
    }
    let Some((host, port)) = scope.model.mesh.default_config.tracing.as_ref().and_then(|t| t.zipkin.as_ref()).and_then(|z| z.host_port())
    else {
        return;
    };
    let kind = if host.parse::<std::net::IpAddr>().is_ok() { "STATIC" } else { "STRICT_DNS" };
    out.clusters.insert(
        ZIPKIN_CLUSTER.into(),
        json!({
            "name": ZIPKIN_CLUSTER, "type": kind, "connect_timeout": duration(std::time::Duration::from_secs(10)),
            "load_assignment": {"cluster_name": ZIPKIN_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(host, port)}}]}]},
        }),
    );
}
