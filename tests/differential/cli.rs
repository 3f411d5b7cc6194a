//! Command-line flags whose effect can be seen from outside, compared with Envoy run with the
//! same flags: `--service-zone` in `/server_info`, `--local-address-ip-version` in the address
//! the proxy appends to the requests it sends itself (a mirror copy), and
//! `--allow-unknown-static-fields` in `server.static_unknown_fields`.

use serde_json::{json, Value};
use weft_test_support::{free_port, ProxyKind, ProxyProcess};

use crate::harness::*;

async fn start_with(kind: ProxyKind, cfg: &Value, admin: u16, args: &[&str]) -> ProxyProcess {
    let text = serde_json::to_string_pretty(cfg).unwrap_or_default();
    match ProxyProcess::start_with_args(kind, WEFT, &text, admin, args).await {
        Ok(p) => p,
        Err(e) => panic!("{kind} failed to start: {e:#}"),
    }
}

#[tokio::test]
async fn service_zone_is_the_node_locality_zone() {
    for kind in [ProxyKind::Envoy, ProxyKind::Weft] {
        let admin = free_port();
        let cfg = json!({"node": {"id": "n1", "cluster": "c1", "locality": {"region": "r1", "zone": "z0"}},
                         "admin": {"address": addr(admin)}, "static_resources": {}});
        let p = start_with(kind, &cfg, admin, &["--service-zone", "z1"]).await;
        let info = p.admin_get("/server_info").await.echo();
        assert_eq!(info["node"]["locality"]["zone"], "z1", "{kind}: {info}");
        assert_eq!(info["node"]["locality"]["region"], "r1", "{kind}: {info}");
        assert_eq!(info["node"]["id"], "n1", "{kind}");
    }
}

#[tokio::test]
async fn allow_unknown_static_fields_counts_what_it_ignores() {
    for kind in [ProxyKind::Envoy, ProxyKind::Weft] {
        let admin = free_port();
        let cfg = json!({"admin": {"address": addr(admin)}, "static_resources": {"clusters": [
            {"name": "c", "connect_timeout": "1s", "not_a_field": 1}]}});
        let p = start_with(kind, &cfg, admin, &["--allow-unknown-static-fields"]).await;
        assert_eq!(p.stat("server.static_unknown_fields").await, 1, "{kind}");
    }
}

/// The node's own address is the first non-loopback address of the chosen family; a mirror
/// copy carries it in `x-forwarded-for`.
#[tokio::test]
async fn local_address_ip_version_picks_the_node_address_family() {
    let primary = weft_test_support::Upstream::start("primary").await;
    let shadow = weft_test_support::Upstream::start("shadow").await;
    let mut seen_by_kind = Vec::new();
    for version in ["v4", "v6"] {
        for kind in [ProxyKind::Envoy, ProxyKind::Weft] {
            let ports = Ports { admin: free_port(), listen: [free_port(), free_port(), free_port(), free_port()] };
            let cfg = http_bootstrap(
                &ports,
                json!([{"name": "all", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"}, "route": {"cluster": "primary", "request_mirror_policies": [{"cluster": "shadow"}]}}]}]),
                vec![cluster("primary", &[primary.port()], json!({})), cluster("shadow", &[shadow.port()], json!({}))],
                json!({}),
            );
            let p = start_with(kind, &cfg, ports.admin, &["--local-address-ip-version", version]).await;
            shadow.reset();
            let r = weft_test_support::send(&format!("127.0.0.1:{}", ports.listen[0]), weft_test_support::Req::get("/x").host("h"))
                .await
                .expect("request");
            assert_eq!(r.status, 200, "{kind}");
            let seen = shadow.wait_seen(1, std::time::Duration::from_secs(10)).await;
            let xff = seen[0]["headers"]["x-forwarded-for"][0].as_str().unwrap_or_default().to_string();
            seen_by_kind.push((version, kind, xff));
            drop(p);
        }
    }
    for pair in seen_by_kind.chunks(2) {
        assert_eq!(pair[1].2, pair[0].2, "{}: weft and Envoy append different node addresses", pair[0].0);
    }
    let v4: std::net::IpAddr = seen_by_kind[0].2.parse().expect("an address");
    let v6: std::net::IpAddr = seen_by_kind[2].2.parse().expect("an address");
    assert!(v4.is_ipv4() && v6.is_ipv6(), "{seen_by_kind:?}");
}

/// The Zipkin span's `localEndpoint` is the node's address of the chosen family (and the node's
/// cluster as the service), not the connection's address.
#[tokio::test]
async fn local_address_ip_version_is_the_span_local_endpoint() {
    let up = weft_test_support::Upstream::start("up").await;
    let mut seen = Vec::new();
    for version in ["v4", "v6"] {
        for kind in [ProxyKind::Envoy, ProxyKind::Weft] {
            let collector = weft_test_support::zipkin::Collector::start().expect("collector");
            let ports = Ports { admin: free_port(), listen: [free_port(), free_port(), free_port(), free_port()] };
            let tracing = json!({"random_sampling": {"value": 100}, "provider": {"name": "envoy.tracers.zipkin", "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
                "collector_cluster": "zipkin", "collector_endpoint": "/api/v2/spans", "collector_endpoint_version": "HTTP_JSON"}}});
            let mut cfg = http_bootstrap(
                &ports,
                json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}]}]),
                vec![cluster("up", &[up.port()], json!({})), cluster("zipkin", &[collector.port], json!({}))],
                json!({"tracing": tracing}),
            );
            cfg["node"] = json!({"id": "n1", "cluster": "c1"});
            let p = start_with(kind, &cfg, ports.admin, &["--local-address-ip-version", version]).await;
            let r = weft_test_support::send(&format!("127.0.0.1:{}", ports.listen[0]), weft_test_support::Req::get("/x").host("h"))
                .await
                .expect("request");
            assert_eq!(r.status, 200, "{kind}");
            let spans = weft_test_support::eventually(std::time::Duration::from_secs(15), "a span", || async {
                let s = collector.spans();
                (!s.is_empty()).then_some(s)
            })
            .await;
            seen.push((version, kind, spans[0]["localEndpoint"].clone()));
            drop(p);
        }
    }
    for pair in seen.chunks(2) {
        assert_eq!(pair[1].2, pair[0].2, "{}: weft's span endpoint differs from Envoy's", pair[0].0);
    }
    assert!(seen[0].2.get("ipv4").is_some() && seen[2].2.get("ipv6").is_some(), "{seen:?}");
}
