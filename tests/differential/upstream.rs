//! Load balancing, weighted clusters, retries, timeouts and upstream failures.

use std::collections::BTreeMap;

use serde_json::json;
use weft_test_support::{Req, Upstream};

use crate::harness::*;

async fn distribution(run: &Run, n: usize, req: impl Fn(usize) -> Req) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for i in 0..n {
        let r = run.send(req(i)).await;
        *m.entry(r.header("x-upstream").unwrap_or_else(|| format!("status {}", r.status))).or_insert(0) += 1;
    }
    m
}

fn share(m: &BTreeMap<String, usize>, k: &str, n: usize) -> f64 {
    *m.get(k).unwrap_or(&0) as f64 / n as f64
}

#[tokio::test]
async fn weighted_clusters_split_within_tolerance() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let (pa, pb) = (a.port(), b.port());
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
                {"name": "a", "weight": 90}, {"name": "b", "weight": 10}]}}}]}]),
            vec![cluster("a", &[pa], json!({})), cluster("b", &[pb], json!({}))],
            json!({}),
        )
    })
    .await;
    let n = 1000;
    for r in &runs {
        let m = distribution(r, n, |_| Req::get("/")).await;
        let sa = share(&m, "a", n);
        // 90/10 over 1000 requests: 3 standard deviations is under 3 points.
        assert!((sa - 0.9).abs() < 0.035, "{}: a got {sa} of traffic: {m:?}", r.kind);
        assert_eq!(m.values().sum::<usize>(), n, "{}: {m:?}", r.kind);
    }
}

#[tokio::test]
async fn round_robin_endpoint_weights_and_random() {
    let ups = [Upstream::start("e1").await, Upstream::start("e2").await, Upstream::start("e3").await];
    let ports: Vec<u16> = ups.iter().map(|u| u.port()).collect();
    let runs = both(|p| {
        let weighted = json!({"load_assignment": {"cluster_name": "weighted", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": addr(ports[0])}, "load_balancing_weight": 1},
            {"endpoint": {"address": addr(ports[1])}, "load_balancing_weight": 3}]}]}});
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/rr"}, "route": {"cluster": "rr"}},
                {"match": {"prefix": "/weighted"}, "route": {"cluster": "weighted"}},
                {"match": {"prefix": "/random"}, "route": {"cluster": "random"}},
                {"match": {"prefix": "/least"}, "route": {"cluster": "least"}},
            ]}]),
            vec![
                cluster("rr", &ports, json!({})),
                cluster("weighted", &[], weighted),
                cluster("random", &ports, json!({"lb_policy": "RANDOM"})),
                cluster("least", &ports, json!({"lb_policy": "LEAST_REQUEST"})),
            ],
            json!({}),
        )
    })
    .await;
    for r in &runs {
        let m = distribution(r, 300, |_| Req::get("/rr")).await;
        assert_eq!(m.values().copied().collect::<Vec<_>>(), [100, 100, 100], "{} round robin: {m:?}", r.kind);
        let m = distribution(r, 400, |_| Req::get("/weighted")).await;
        assert_eq!((m.get("e1").copied(), m.get("e2").copied()), (Some(100), Some(300)), "{} weighted: {m:?}", r.kind);
        for path in ["/random", "/least"] {
            let m = distribution(r, 600, |_| Req::get(path)).await;
            for k in ["e1", "e2", "e3"] {
                let s = share(&m, k, 600);
                assert!((s - 1.0 / 3.0).abs() < 0.08, "{} {path}: {k} got {s}: {m:?}", r.kind);
            }
        }
    }
}

#[tokio::test]
async fn hash_policies_are_sticky() {
    let ups = [Upstream::start("h1").await, Upstream::start("h2").await, Upstream::start("h3").await, Upstream::start("h4").await];
    let ports: Vec<u16> = ups.iter().map(|u| u.port()).collect();
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/ring"}, "route": {"cluster": "ring", "hash_policy": [{"header": {"header_name": "x-user"}}]}},
                {"match": {"prefix": "/maglev"}, "route": {"cluster": "maglev", "hash_policy": [{"cookie": {"name": "session"}}]}},
                {"match": {"prefix": "/source"}, "route": {"cluster": "ring", "hash_policy": [{"connection_properties": {"source_ip": true}}]}},
            ]}]),
            vec![cluster("ring", &ports, json!({"lb_policy": "RING_HASH"})), cluster("maglev", &ports, json!({"lb_policy": "MAGLEV"}))],
            json!({}),
        )
    })
    .await;
    for r in &runs {
        let mut owners = std::collections::BTreeSet::new();
        for user in 0..20 {
            let m = distribution(r, 5, |_| Req::get("/ring").header("x-user", &format!("user-{user}"))).await;
            assert_eq!(m.len(), 1, "{}: user-{user} was not sticky: {m:?}", r.kind);
            owners.extend(m.into_keys());
            let m = distribution(r, 5, |_| Req::get("/maglev").header("cookie", &format!("a=b; session=s{user}"))).await;
            assert_eq!(m.len(), 1, "{}: session s{user} was not sticky: {m:?}", r.kind);
        }
        assert!(owners.len() >= 3, "{}: 20 keys landed on only {owners:?}", r.kind);
        let m = distribution(r, 10, |_| Req::get("/source")).await;
        assert_eq!(m.len(), 1, "{}: source IP hashing was not sticky: {m:?}", r.kind);
    }
}

#[tokio::test]
async fn priorities_and_panic_mode() {
    let ups = [Upstream::start("p0").await, Upstream::start("p1").await];
    let (p0, p1) = (ups[0].port(), ups[1].port());
    let runs = both(|p| {
        let failover = json!({"load_assignment": {"cluster_name": "failover", "endpoints": [
            {"priority": 0, "lb_endpoints": [{"endpoint": {"address": addr(p0)}, "health_status": "UNHEALTHY"}]},
            {"priority": 1, "lb_endpoints": [{"endpoint": {"address": addr(p1)}}]}]}});
        let panic = json!({"load_assignment": {"cluster_name": "panic", "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": addr(p0)}, "health_status": "UNHEALTHY"}]}]}});
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/failover"}, "route": {"cluster": "failover"}},
                {"match": {"prefix": "/panic"}, "route": {"cluster": "panic"}},
                {"match": {"prefix": "/empty"}, "route": {"cluster": "empty"}},
            ]}]),
            vec![cluster("failover", &[], failover), cluster("panic", &[], panic), cluster("empty", &[], json!({}))],
            json!({}),
        )
    })
    .await;
    for r in &runs {
        let m = distribution(r, 20, |_| Req::get("/failover")).await;
        assert_eq!(m.get("p1"), Some(&20), "{}: unhealthy priority 0 should fail over: {m:?}", r.kind);
        // All hosts unhealthy is below the panic threshold: Envoy sends to them anyway.
        let m = distribution(r, 5, |_| Req::get("/panic")).await;
        assert_eq!(m.get("p0"), Some(&5), "{}: panic mode: {m:?}", r.kind);
    }
    let seen = same(&runs, &[Req::get("/empty")]).await;
    assert_eq!((seen[0]["status"].as_u64(), seen[0]["body"].as_str()), (Some(503), Some("no healthy upstream")));
    // How the local 503 is counted (or not) under the cluster's status codes, as Envoy does.
    let mut codes = Vec::new();
    for r in &runs {
        let text = r.proxy.admin_get("/stats").await.text();
        codes.push(text.lines().filter(|l| l.starts_with("cluster.empty.upstream_rq_5")).map(str::to_owned).collect::<Vec<_>>());
    }
    assert_eq!(codes[1], codes[0], "weft vs envoy: cluster.empty.upstream_rq_5xx after no healthy upstream");
}

#[tokio::test]
async fn retries_count_attempts_like_envoy() {
    let up = Upstream::start("up").await;
    let port = up.port();
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/5xx"}, "route": {"cluster": "up", "retry_policy": {"retry_on": "5xx", "num_retries": 2, "retry_back_off": {"base_interval": "0.005s"}}}},
                {"match": {"prefix": "/gateway"}, "route": {"cluster": "up", "retry_policy": {"retry_on": "gateway-error", "num_retries": 3, "retry_back_off": {"base_interval": "0.005s"}}}},
                {"match": {"prefix": "/codes"}, "route": {"cluster": "up", "retry_policy": {"retry_on": "retriable-status-codes", "retriable_status_codes": [418], "num_retries": 1, "retry_back_off": {"base_interval": "0.005s"}}}},
                {"match": {"prefix": "/4xx"}, "route": {"cluster": "up", "retry_policy": {"retry_on": "retriable-4xx", "num_retries": 2, "retry_back_off": {"base_interval": "0.005s"}}}},
                {"match": {"prefix": "/none"}, "route": {"cluster": "up"}},
            ]}]),
            vec![cluster("up", &[port], json!({}))],
            json!({}),
        )
    })
    .await;
    let cases: Vec<(Req, u16, u64)> = vec![
        (Req::get("/5xx").header("x-echo-status", "503"), 503, 3),
        (Req::get("/5xx").header("x-echo-status", "500"), 500, 3),
        (Req::get("/5xx").header("x-echo-status", "404"), 404, 1),
        (Req::get("/gateway").header("x-echo-status", "500"), 500, 1),
        (Req::get("/gateway").header("x-echo-status", "502"), 502, 4),
        (Req::get("/codes").header("x-echo-status", "418"), 418, 2),
        (Req::get("/4xx").header("x-echo-status", "409"), 409, 3),
        (Req::get("/none").header("x-echo-status", "503"), 503, 1),
        (Req::get("/5xx").header("x-echo-fail-first", "1"), 200, 2),
        (Req::get("/5xx").method("POST").header("x-echo-status", "503").body("payload"), 503, 3),
    ];
    for (req, status, attempts) in cases {
        let mut got = Vec::new();
        for r in &runs {
            up.reset();
            let reply = r.send(req.clone()).await;
            got.push((reply.status, up.requests()));
        }
        assert_eq!(got[1], got[0], "weft vs envoy for {} {:?}", req.path, req.headers);
        assert_eq!(got[0], (status, attempts), "envoy for {} {:?}", req.path, req.headers);
    }
    for r in &runs {
        assert_eq!(r.stat("cluster.up.upstream_rq_retry").await, 2 + 2 + 3 + 1 + 2 + 1 + 2, "{}", r.kind);
    }
}

#[tokio::test]
async fn timeouts_and_per_try_timeouts() {
    let up = Upstream::start("up").await;
    let port = up.port();
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/slow"}, "route": {"cluster": "up", "timeout": "0.2s"}},
                {"match": {"prefix": "/pertry"}, "route": {"cluster": "up", "timeout": "5s",
                    "retry_policy": {"retry_on": "5xx", "num_retries": 2, "per_try_timeout": "0.15s", "retry_back_off": {"base_interval": "0.005s"}}}},
            ]}]),
            vec![cluster("up", &[port], json!({}))],
            json!({}),
        )
    })
    .await;
    let seen = same(&runs, &[Req::get("/slow").header("x-echo-delay-ms", "1000"), Req::get("/slow").header("x-echo-delay-ms", "10")]).await;
    assert_eq!((seen[0]["status"].as_u64(), seen[0]["body"].as_str()), (Some(504), Some("upstream request timeout")));
    assert_eq!(seen[1]["status"], 200);
    for r in &runs {
        up.reset();
        let reply = r.send(Req::get("/pertry").header("x-echo-delay-ms", "1000")).await;
        assert_eq!((reply.status, up.requests()), (504, 3), "{}", r.kind);
        assert_eq!(r.stat("cluster.up.upstream_rq_per_try_timeout").await, 3, "{}", r.kind);
    }
}

#[tokio::test]
async fn connect_failure_and_retry_on_connect_failure() {
    let dead = weft_test_support::free_port();
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/plain"}, "route": {"cluster": "dead"}},
                {"match": {"prefix": "/retry"}, "route": {"cluster": "dead", "retry_policy": {"retry_on": "connect-failure", "num_retries": 2, "retry_back_off": {"base_interval": "0.005s"}}}},
            ]}]),
            vec![cluster("dead", &[dead], json!({}))],
            json!({}),
        )
    })
    .await;
    let seen = same(&runs, &[Req::get("/plain"), Req::get("/retry")]).await;
    assert_eq!(seen[0]["status"], 503);
    assert!(seen[0]["body"]
        .as_str()
        .unwrap_or_default()
        .starts_with("upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"));
    assert!(seen[1]["body"].as_str().unwrap_or_default().contains("retried and the latest reset reason"));
    for r in &runs {
        assert_eq!(r.stat("cluster.dead.upstream_rq_retry").await, 2, "{}", r.kind);
        assert_eq!(r.stat("cluster.dead.upstream_cx_connect_fail").await, 4, "{}", r.kind);
    }
}
