//! Further scenarios: DNS clusters, original-destination by header, cluster_header,
//! per-weighted-cluster headers, virtual-host retry policy with attempt counts, router and
//! server header options, request ids in responses, TCP weighted clusters and idle timeouts,
//! and stream/request timeouts.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncReadExt;
use weft_test_support::{eventually, Req, TcpEcho, Upstream};

use crate::harness::*;

#[tokio::test]
async fn strict_and_logical_dns_clusters() {
    let up = Upstream::start("dns").await;
    let port = up.port();
    let runs = both(|p| {
        let dns = |name: &str, kind: &str| {
            json!({"name": name, "type": kind, "connect_timeout": "1s", "dns_lookup_family": "V4_ONLY",
                "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "localhost", "port_value": port}}}}]}]}})
        };
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/strict"}, "route": {"cluster": "strict"}},
                {"match": {"prefix": "/logical"}, "route": {"cluster": "logical", "auto_host_rewrite": true}},
            ]}]),
            vec![dns("strict", "STRICT_DNS"), dns("logical", "LOGICAL_DNS")],
            json!({}),
        )
    })
    .await;
    let seen = same(&runs, &[Req::get("/strict"), Req::get("/logical")]).await;
    assert_eq!(seen[0]["status"], 200);
    assert_eq!(seen[1]["body"]["headers"]["host"][0], "localhost");
}

#[tokio::test]
async fn original_dst_cluster_from_header_and_cluster_header_routing() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let (pa, pb) = (a.port(), b.port());
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/dst"}, "route": {"cluster": "dst"}},
                {"match": {"prefix": "/by-header"}, "route": {"cluster_header": "x-cluster"}},
            ]}]),
            vec![
                json!({"name": "dst", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "1s", "original_dst_lb_config": {"use_http_header": true}}),
                cluster("a", &[pa], json!({})),
                cluster("b", &[pb], json!({})),
            ],
            json!({}),
        )
    })
    .await;
    let seen = same(
        &runs,
        &[
            Req::get("/dst").header("x-envoy-original-dst-host", &format!("127.0.0.1:{pb}")),
            Req::get("/by-header").header("x-cluster", "a"),
            Req::get("/by-header").header("x-cluster", "nope"),
        ],
    )
    .await;
    assert_eq!(seen[0]["body"]["upstream"], "b");
    assert_eq!(seen[1]["body"]["upstream"], "a");
    assert_eq!(seen[2]["status"], 503);
}

#[tokio::test]
async fn weighted_cluster_entries_carry_their_own_headers() {
    let up = Upstream::start("up").await;
    let port = up.port();
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
                {"name": "only", "weight": 100, "request_headers_to_add": [{"header": {"key": "x-subset", "value": "v1"}}],
                 "response_headers_to_add": [{"header": {"key": "x-picked", "value": "only"}}], "host_rewrite_literal": "v1.internal"}]}}}]}]),
            vec![cluster("only", &[port], json!({}))],
            json!({}),
        )
    })
    .await;
    let seen = same(&runs, &[Req::get("/")]).await;
    assert_eq!(seen[0]["body"]["headers"]["x-subset"][0], "v1");
    assert_eq!(seen[0]["body"]["headers"]["host"][0], "v1.internal");
    assert_eq!(seen[0]["headers"]["x-picked"], "only");
}

#[tokio::test]
async fn virtual_host_retry_policy_and_attempt_counts() {
    let up = Upstream::start("up").await;
    let port = up.port();
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "include_request_attempt_count": true, "include_attempt_count_in_response": true,
                "retry_policy": {"retry_on": "5xx", "num_retries": 2, "retry_back_off": {"base_interval": "0.005s"}},
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}]}]),
            vec![cluster("up", &[port], json!({}))],
            json!({}),
        )
    })
    .await;
    for r in &runs {
        up.reset();
        let reply = r.send(Req::get("/").header("x-echo-fail-first", "2")).await;
        assert_eq!(reply.status, 200, "{}", r.kind);
        assert_eq!(reply.header("x-envoy-attempt-count").as_deref(), Some("3"), "{}", r.kind);
        assert_eq!(reply.echo()["headers"]["x-envoy-attempt-count"][0], "3", "{}", r.kind);
        assert_eq!(r.stat("cluster.up.upstream_rq_retry_success").await, 1, "{}", r.kind);
    }
}

#[tokio::test]
async fn router_and_server_header_options() {
    let up = Upstream::start("up").await;
    let port = up.port();
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up", "prefix_rewrite": "/x"}}]}]),
            vec![cluster("up", &[port], json!({}))],
            json!({"server_name": "mesh-edge", "always_set_request_id_in_response": true,
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", "suppress_envoy_headers": true}}]}),
        )
    })
    .await;
    let seen = same(&runs, &[Req::get("/a").header("x-request-id", "rid-1")]).await;
    assert_eq!(seen[0]["headers"]["server"], "mesh-edge");
    assert!(seen[0]["headers"].get("x-envoy-upstream-service-time").is_none());
    assert!(seen[0]["body"]["headers"].get("x-envoy-expected-rq-timeout-ms").is_none());
    assert!(seen[0]["body"]["headers"].get("x-envoy-original-path").is_none());
    for r in &runs {
        let reply = r.send(Req::get("/a").header("x-request-id", "rid-1")).await;
        assert_eq!(reply.header("x-request-id").as_deref(), Some("rid-1"), "{}", r.kind);
    }
}

#[tokio::test]
async fn tcp_weighted_clusters_and_idle_timeout() {
    let (a, b) = (TcpEcho::start("a").await, TcpEcho::start("b").await);
    let (pa, pb) = (a.port(), b.port());
    let runs = both(|p| {
        json!({"admin": admin(p), "static_resources": {
            "listeners": [{"name": "tcp", "address": addr(p.listen[0]), "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "split", "idle_timeout": "0.3s",
                "weighted_clusters": {"clusters": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}]}}}]}]}],
            "clusters": [cluster("a", &[pa], json!({})), cluster("b", &[pb], json!({}))]}})
    })
    .await;
    for r in &runs {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let mut s = tokio::net::TcpStream::connect(r.addr()).await.expect("connect");
            let mut buf = [0u8; 2];
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await;
            seen.insert(buf);
        }
        assert_eq!(seen.len(), 2, "{}: both weighted clusters used", r.kind);
        // An idle connection is closed by the proxy after 0.3s.
        let mut s = tokio::net::TcpStream::connect(r.addr()).await.expect("connect");
        let mut buf = [0u8; 64];
        let mut got = 0;
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => got += n,
                }
            }
        })
        .await;
        assert_eq!(closed, Ok(true), "{}: idle connection not closed", r.kind);
        eventually(Duration::from_secs(5), "idle timeout counter", || async {
            (r.stat("tcp.split.idle_timeout").await >= 1).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn timeout_disabled_with_zero_and_slow_upstream_completes() {
    let up = Upstream::start("up").await;
    let port = up.port();
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up", "timeout": "0s"}}]}]),
            vec![cluster("up", &[port], json!({}))],
            json!({}),
        )
    })
    .await;
    let seen = same(&runs, &[Req::get("/").header("x-echo-delay-ms", "300")]).await;
    assert_eq!(seen[0]["status"], 200);
    assert!(seen[0]["body"]["headers"].get("x-envoy-expected-rq-timeout-ms").is_none());
}

#[tokio::test]
async fn config_yaml_flag_merges_over_the_file() {
    let up = Upstream::start("up").await;
    let port = up.port();
    for kind in [weft_test_support::ProxyKind::Envoy, weft_test_support::ProxyKind::Weft] {
        let p = Ports { admin: weft_test_support::free_port(), listen: [weft_test_support::free_port(), 0, 0, 0] };
        let base = http_bootstrap(
            &p,
            json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}]}]),
            vec![cluster("up", &[port], json!({}))],
            json!({}),
        );
        let text = serde_json::to_string(&base).unwrap_or_default();
        let over = "node: {id: merged-node, cluster: merged-cluster}";
        let proc =
            weft_test_support::ProxyProcess::start_with_args(kind, WEFT, &text, p.admin, &["--config-yaml", over]).await.expect("start");
        let info: serde_json::Value = serde_json::from_slice(&proc.admin_get("/server_info").await.body).unwrap_or_default();
        let id = info["node"]["id"].as_str().or(info["command_line_options"]["service_node"].as_str()).unwrap_or_default().to_string();
        assert_eq!(id, "merged-node", "{kind}: {info}");
        let r = weft_test_support::send(&format!("127.0.0.1:{}", p.listen[0]), Req::get("/")).await.expect("request");
        assert_eq!(r.status, 200, "{kind}");
    }
}

/// Sends request headers promising a body, then only part of it, and returns the status line
/// and body the proxy answers with.
async fn stalled_upload(addr: &str) -> (String, String) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: test.local\r\nContent-Length: 100\r\n\r\npartial").await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.lines().next().unwrap_or_default().to_string();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[tokio::test]
async fn request_timeout_and_stream_idle_timeout() {
    let up = Upstream::start("up").await;
    let port = up.port();
    let runs = both(|p| {
        let vh =
            json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up", "timeout": "0s"}}]}]);
        let b = http_bootstrap(p, vh.clone(), vec![cluster("up", &[port], json!({}))], json!({"stream_idle_timeout": "0.3s"}));
        with_second_listener(b, p, "req", vh, json!({"request_timeout": "0.3s"}))
    })
    .await;
    let seen = same(&runs, &[Req::get("/").header("x-echo-delay-ms", "2000")]).await;
    // Envoy answers 504 when the request is complete and the upstream is what went idle.
    assert_eq!((seen[0]["status"].as_u64(), seen[0]["body"].as_str()), (Some(504), Some("stream timeout")));
    let mut got = Vec::new();
    for r in &runs {
        got.push(stalled_upload(&r.addr_n(1)).await);
        assert!(r.stat("http.ingress.downstream_rq_idle_timeout").await >= 1, "{}", r.kind);
    }
    assert_eq!(got[1], got[0], "weft vs envoy for a stalled upload");
    assert_eq!(got[0], ("HTTP/1.1 408 Request Timeout".to_string(), "request timeout".to_string()));
}

/// The connection manager's `idle_timeout`: a request that outlasts it is not cut, and once the
/// connection has had no request for that long it is closed and counted.
#[tokio::test]
async fn idle_keep_alive_connections_close_after_the_idle_timeout() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start("up").await;
    let port = up.port();
    let runs = both(|p| {
        let vh = json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}]}]);
        http_bootstrap(p, vh, vec![cluster("up", &[port], json!({}))], json!({"common_http_protocol_options": {"idle_timeout": "0.5s"}}))
    })
    .await;
    for r in &runs {
        let mut s = tokio::net::TcpStream::connect(r.addr()).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: test.local\r\nx-echo-delay-ms: 1000\r\n\r\n").await.expect("write");
        let mut out = Vec::new();
        // Envoy drains first (drain_timeout 5 s, then a delayed close); weft closes at once.
        let closed = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await.is_ok();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200"), "{}: the slow request was cut: {text:?}", r.kind);
        assert!(closed, "{}: the idle connection stayed open", r.kind);
        assert_eq!(r.stat("http.ingress.downstream_cx_idle_timeout").await, 1, "{}", r.kind);
    }
}

/// A cluster's `idle_timeout`: an upstream HTTP/1 connection with no request for that long is
/// closed and counted, and the next request opens a new one.
#[tokio::test]
async fn idle_upstream_connections_close_after_the_cluster_idle_timeout() {
    let up = Upstream::start("up").await;
    let port = up.port();
    let runs = both(|p| {
        let vh = json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}]}]);
        let options = json!({"typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "common_http_protocol_options": {"idle_timeout": "0.5s"},
            "explicit_http_config": {"http_protocol_options": {}}}}});
        http_bootstrap(p, vh, vec![cluster("up", &[port], options)], json!({}))
    })
    .await;
    for r in &runs {
        assert_eq!(r.send(Req::get("/")).await.status, 200, "{}", r.kind);
        eventually(Duration::from_secs(20), "the idle upstream connection closes", || async {
            (r.stat("cluster.up.upstream_cx_idle_timeout").await == 1 && r.stat("cluster.up.upstream_cx_active").await == 0).then_some(())
        })
        .await;
        assert_eq!(r.send(Req::get("/")).await.status, 200, "{}: after the idle close", r.kind);
        assert_eq!(r.stat("cluster.up.upstream_cx_total").await, 2, "{}", r.kind);
    }
}

/// HTTP/1.0 is refused unless `http_protocol_options.accept_http_10` allows it, as in Envoy.
#[tokio::test]
async fn http_10_needs_accept_http_10() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start("up").await;
    let port = up.port();
    let runs = both(|p| {
        let vh = json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}]}]);
        let b = http_bootstrap(p, vh.clone(), vec![cluster("up", &[port], json!({}))], json!({}));
        with_second_listener(b, p, "ten", vh, json!({"http_protocol_options": {"accept_http_10": true}}))
    })
    .await;
    let mut got = Vec::new();
    for r in &runs {
        let mut seen = Vec::new();
        for addr in [r.addr(), r.addr_n(1)] {
            let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
            s.write_all(b"GET /ten HTTP/1.0\r\nHost: test.local\r\n\r\n").await.expect("write");
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
            let text = String::from_utf8_lossy(&out).into_owned();
            // hyper answers an HTTP/1.0 request in HTTP/1.0, Envoy its refusal in HTTP/1.1: the
            // code and the refusal's body are what count.
            let status = text.lines().next().unwrap_or_default().split(' ').nth(1).unwrap_or_default().to_string();
            let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
            seen.push((status, if addr == r.addr() { body } else { String::new() }));
        }
        got.push(seen);
    }
    assert_eq!(got[1], got[0], "weft vs Envoy for HTTP/1.0");
    assert_eq!(got[0][0].0, "426", "{:?}", got[0]);
    assert_eq!(got[0][1].0, "200", "{:?}", got[0]);
}

/// A route configuration's `internal_only_headers` are removed from requests that are not
/// marked internal, before routing, as in Envoy.
#[tokio::test]
async fn internal_only_headers_are_stripped_from_external_requests() {
    let up = Upstream::start("up").await;
    let port = up.port();
    let runs = both(|p| {
        let vh = json!([{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/", "headers": [{"name": "x-secret", "present_match": true}]}, "direct_response": {"status": 200, "body": {"inline_string": "saw the secret"}}},
            {"match": {"prefix": "/"}, "route": {"cluster": "up"}},
        ]}]);
        json!({
            "admin": admin(p),
            "static_resources": {
                "listeners": [listener("http", p.listen[0], json!([hcm(json!({"name": "local", "virtual_hosts": vh, "internal_only_headers": ["x-secret"]}), json!({}))]))],
                "clusters": [cluster("up", &[port], json!({}))],
            }
        })
    })
    .await;
    let seen = same(
        &runs,
        &[
            Req::get("/a").header("x-secret", "1"),
            Req::get("/b").header("x-secret", "1").header("x-envoy-internal", "true"),
            Req::get("/c").header("x-other", "1"),
        ],
    )
    .await;
    assert!(seen[0]["body"]["headers"].get("x-secret").is_none(), "{}", seen[0]);
}
