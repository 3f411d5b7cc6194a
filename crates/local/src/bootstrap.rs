//! The sidecar's Envoy bootstrap, shaped like the one pilot-agent writes: Istio's node ID and
//! metadata, ADS to the control plane, admin on localhost only, and the two static listeners
//! every Istio sidecar has — 15021 (`/healthz/ready`) and 15090 (`/stats/prometheus`) — which
//! capture leaves alone so probes and scrapers reach them directly.
//!
//! In explicit mode all sidecars share the machine's network namespace, so each binds these
//! on its own loopback address instead of 0.0.0.0 / 127.0.0.1, and tells the control plane it
//! is not captured (`INTERCEPTION_MODE: NONE`) and where its HTTP proxy listens
//! (`HTTP_PROXY_PORT`), as pilot-agent passes `ISTIO_META_*` on.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{json, Value};

pub struct Node<'a> {
    pub address: Ipv4Addr,
    pub name: &'a str,
    pub namespace: &'a str,
    pub service_account: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// Explicit mode: the HTTP proxy port; admin, health and stats bind `address`.
    pub explicit: Option<u16>,
}

pub const ADMIN_PORT: u16 = 15000;
pub const HEALTH_PORT: u16 = 15021;
pub const STATS_PORT: u16 = 15090;

/// The bootstrap for `node`, fetching config from `xds` (the control plane's plaintext ADS).
pub fn sidecar(node: &Node<'_>, xds: std::net::SocketAddr) -> Value {
    let ns = node.namespace;
    let (admin, listen) = match node.explicit {
        Some(_) => (node.address.to_string(), node.address.to_string()),
        None => ("127.0.0.1".to_string(), "0.0.0.0".to_string()),
    };
    let metadata = json!({
        "NAMESPACE": ns,
        "LABELS": node.labels,
        "SERVICE_ACCOUNT": node.service_account,
        "WORKLOAD_NAME": node.name,
        "CLUSTER_ID": "Kubernetes",
        "INSTANCE_IPS": node.address.to_string(),
    });
    let mut boot = base(Base {
        id: &format!("sidecar~{}~{}.{ns}~{ns}.svc.cluster.local", node.address, node.name),
        cluster: &format!("{}.{ns}", node.labels.get("app").map(String::as_str).unwrap_or(node.name)),
        metadata,
        admin: &admin,
        admin_port: ADMIN_PORT,
        listen: &listen,
        xds: static_cluster("xds-grpc", &xds.ip().to_string(), xds.port(), true),
        sds_pipe: None,
    });
    if let Some(port) = node.explicit {
        boot["node"]["metadata"]["INTERCEPTION_MODE"] = json!("NONE");
        boot["node"]["metadata"]["HTTP_PROXY_PORT"] = json!(port.to_string());
    }
    boot
}

/// The bootstrap of a gateway workload: the same, as a `router~` node (a gateway proxy, never
/// captured, binding the ports its Gateways' servers name).
pub fn gateway(node: &Node<'_>, xds: std::net::SocketAddr) -> Value {
    let mut boot = sidecar(node, xds);
    let ns = node.namespace;
    boot["node"]["id"] = json!(format!("router~{}~{}.{ns}~{ns}.svc.cluster.local", node.address, node.name));
    boot
}

/// A pod's bootstrap, as pilot-agent writes it in a Kubernetes pod: ADS through the agent's
/// xDS proxy on a Unix socket (`xds_pipe`), and for a stock Envoy its identity over SDS on
/// another (`sds_pipe`).
pub struct PodBootstrap<'a> {
    pub id: &'a str,
    pub cluster: &'a str,
    pub metadata: Value,
    pub admin_port: u16,
    pub xds_pipe: &'a str,
    pub sds_pipe: Option<&'a str>,
}

pub fn pod(b: &PodBootstrap<'_>) -> Value {
    base(Base {
        id: b.id,
        cluster: b.cluster,
        metadata: b.metadata.clone(),
        admin: "127.0.0.1",
        admin_port: b.admin_port,
        listen: "0.0.0.0",
        xds: pipe_cluster("xds-grpc", b.xds_pipe),
        sds_pipe: b.sds_pipe,
    })
}

struct Base<'a> {
    id: &'a str,
    cluster: &'a str,
    metadata: Value,
    admin: &'a str,
    admin_port: u16,
    listen: &'a str,
    xds: Value,
    sds_pipe: Option<&'a str>,
}

fn base(b: Base<'_>) -> Value {
    let mut clusters = vec![b.xds, static_cluster("admin", b.admin, b.admin_port, false)];
    if let Some(p) = b.sds_pipe {
        clusters.push(pipe_cluster("sds-grpc", p));
    }
    json!({
        "node": {"id": b.id, "cluster": b.cluster, "metadata": b.metadata},
        "admin": {"address": {"socket_address": {"address": b.admin, "port_value": b.admin_port}}},
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": clusters,
            "listeners": [
                admin_route_listener("health", b.listen, HEALTH_PORT, "/healthz/ready", "/ready"),
                admin_route_listener("prometheus", b.listen, STATS_PORT, "/stats/prometheus", "/stats/prometheus"),
            ],
        },
    })
}

/// A gRPC cluster on a Unix socket, as Istio's bootstraps name the agent's.
fn pipe_cluster(name: &str, path: &str) -> Value {
    json!({
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": path}}}}]}]},
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
    })
}

fn static_cluster(name: &str, address: &str, port: u16, http2: bool) -> Value {
    let mut c = json!({
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}}}]}]},
    });
    if http2 {
        c["typed_extension_protocol_options"] = json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}});
    }
    c
}

/// A listener on `address` (every address of the namespace, or the sidecar's own in explicit
/// mode) that serves one admin path, rewritten.
fn admin_route_listener(name: &str, address: &str, port: u16, path: &str, admin_path: &str) -> Value {
    json!({
        "name": name,
        "address": {"socket_address": {"address": address, "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{"name": name, "domains": ["*"], "routes": [
                    {"match": {"path": path}, "route": {"cluster": "admin", "prefix_rewrite": admin_path}},
                ]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            },
        }]}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_sidecars_bind_their_own_address_and_say_they_are_not_captured() {
        let labels = BTreeMap::from([("app".to_string(), "reviews".to_string())]);
        let mut node = Node {
            address: Ipv4Addr::new(127, 77, 0, 4),
            name: "reviews-v1",
            namespace: "default",
            service_account: "r",
            labels: &labels,
            explicit: None,
        };
        let xds = std::net::SocketAddr::from(([127, 77, 0, 1], 15010));
        let captured = sidecar(&node, xds);
        assert_eq!(captured["admin"]["address"]["socket_address"]["address"], "127.0.0.1");
        assert_eq!(captured["static_resources"]["listeners"][0]["address"]["socket_address"]["address"], "0.0.0.0");
        assert!(captured["node"]["metadata"].get("INTERCEPTION_MODE").is_none());

        node.explicit = Some(15080);
        let b = sidecar(&node, xds);
        assert_eq!(b["node"]["id"], "sidecar~127.77.0.4~reviews-v1.default~default.svc.cluster.local");
        assert_eq!(b["node"]["metadata"]["INTERCEPTION_MODE"], "NONE");
        assert_eq!(b["node"]["metadata"]["HTTP_PROXY_PORT"], "15080");
        assert_eq!(b["admin"]["address"]["socket_address"]["address"], "127.77.0.4");
        for l in b["static_resources"]["listeners"].as_array().into_iter().flatten() {
            assert_eq!(l["address"]["socket_address"]["address"], "127.77.0.4", "{l}");
        }
        assert_eq!(
            b["static_resources"]["clusters"][1]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]["address"],
            "127.77.0.4"
        );
    }
}
