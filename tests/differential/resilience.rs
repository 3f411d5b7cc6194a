//! Circuit breakers, outlier detection, active health checks and the fault filter.

use std::time::{Duration, Instant};

use serde_json::json;
use weft_test_support::{eventually, Req, Upstream};

use crate::harness::*;

async fn concurrent(run: &Run, n: usize, req: Req) -> Vec<(u16, Option<String>)> {
    let futs = (0..n).map(|_| run.send(req.clone()));
    let mut out: Vec<(u16, Option<String>)> =
        futures::future::join_all(futs).await.into_iter().map(|r| (r.status, r.header("x-envoy-overloaded"))).collect();
    out.sort();
    out
}

#[tokio::test]
async fn circuit_breaker_overflow_answers_503_overloaded() {
    let up = Upstream::start("up").await;
    let port = up.port();
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/pending"}, "route": {"cluster": "pending"}},
                {"match": {"prefix": "/requests"}, "route": {"cluster": "requests"}},
            ]}]),
            vec![
                cluster(
                    "pending",
                    &[port],
                    json!({"circuit_breakers": {"thresholds": [{"max_connections": 1, "max_pending_requests": 1}]}}),
                ),
                cluster("requests", &[port], json!({"circuit_breakers": {"thresholds": [{"max_requests": 1}]}})),
            ],
            json!({}),
        )
    })
    .await;
    for r in &runs {
        // One slow request holds the only connection; wait until the upstream has it.
        up.reset();
        let first = r.send(Req::get("/pending").header("x-echo-delay-ms", "500"));
        let rest = async {
            eventually(Duration::from_secs(5), "the first request to reach the upstream", || async { (up.requests() == 1).then_some(()) })
                .await;
            concurrent(r, 2, Req::get("/pending").header("x-echo-delay-ms", "10")).await
        };
        let (first, got) = tokio::join!(first, rest);
        assert_eq!(first.status, 200, "{}", r.kind);
        assert_eq!(got, [(200, None), (503, Some("true".into()))], "{} pending overflow {got:?}", r.kind);
        assert_eq!(r.stat("cluster.pending.upstream_rq_pending_overflow").await, 1, "{}", r.kind);

        up.reset();
        let first = r.send(Req::get("/requests").header("x-echo-delay-ms", "500"));
        let second = async {
            eventually(Duration::from_secs(5), "the first request to reach the upstream", || async { (up.requests() == 1).then_some(()) })
                .await;
            r.send(Req::get("/requests")).await
        };
        let (first, second) = tokio::join!(first, second);
        assert_eq!(
            (first.status, second.status, second.header("x-envoy-overloaded")),
            (200, 503, Some("true".into())),
            "{} request overflow",
            r.kind
        );
        assert_eq!(second.text(), "upstream connect error or disconnect/reset before headers. reset reason: overflow", "{}", r.kind);
    }
    // The overflow 503s are counted by status code and class as Envoy counts them, and a class
    // no response fell in is not listed at all (not even as 0).
    let mut codes = Vec::new();
    for r in &runs {
        let text = r.proxy.admin_get("/stats").await.text();
        let mut listed: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("cluster.pending.upstream_rq_") || l.starts_with("cluster.requests.upstream_rq_"))
            .filter(|l| {
                let name = l.split(':').next().unwrap_or_default();
                let code = name.rsplit('_').next().unwrap_or_default();
                code.len() == 3 && (code.ends_with("xx") || code.chars().all(|c| c.is_ascii_digit()))
            })
            .map(str::to_owned)
            .collect();
        listed.sort();
        codes.push(listed);
    }
    assert!(codes[0].iter().any(|l| l == "cluster.pending.upstream_rq_503: 1"), "envoy: {:?}", codes[0]);
    assert_eq!(codes[1], codes[0], "weft vs envoy: upstream_rq_<code> and <class> counters after overflows");
    let e = runs[0].send(Req::get("/requests")).await;
    assert_eq!(e.status, 200);
}

/// Two hosts behind one cluster with `outlier`; the second answers every request `bad_status`.
async fn good_and_bad(bad_status: u16, outlier: serde_json::Value) -> (Upstream, Upstream, [Run; 2]) {
    let (good, bad) = (Upstream::start("good").await, Upstream::start("bad").await);
    bad.set_status(bad_status);
    let ports = [good.port(), bad.port()];
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "svc"}}]}]),
            vec![cluster("svc", &ports, json!({ "outlier_detection": outlier.clone() }))],
            json!({}),
        )
    })
    .await;
    (good, bad, runs)
}

async fn count_status(r: &Run, n: usize, status: u16) -> usize {
    let mut hits = 0;
    for _ in 0..n {
        if r.send(Req::get("/")).await.status == status {
            hits += 1;
        }
    }
    hits
}

#[tokio::test]
async fn outlier_detection_ejects_a_failing_host() {
    let outlier = json!({"consecutive_5xx": 3, "interval": "10s", "base_ejection_time": "60s", "max_ejection_percent": 100});
    let (_good, bad, runs) = good_and_bad(500, outlier).await;
    for r in &runs {
        assert_eq!(count_status(r, 30, 500).await, 3, "{}: the bad host should be ejected after 3 consecutive 5xx", r.kind);
        assert_eq!(r.stat("cluster.svc.outlier_detection.ejections_enforced_total").await, 1, "{}", r.kind);
        assert_eq!(r.stat("cluster.svc.outlier_detection.ejections_active").await, 1, "{}", r.kind);
        let clusters = r.proxy.admin_get("/clusters").await.text();
        let bad_line = format!("svc::127.0.0.1:{}::health_flags::/failed_outlier_check", bad.port());
        assert!(clusters.contains(&bad_line), "{}: /clusters lacks {bad_line}:\n{clusters}", r.kind);
    }
}

#[tokio::test]
async fn gateway_error_outlier_ejection_when_enforced() {
    let outlier = json!({"consecutive_5xx": 0, "consecutive_gateway_failure": 2, "enforcing_consecutive_gateway_failure": 100,
        "interval": "10s", "base_ejection_time": "60s", "max_ejection_percent": 50});
    let (_good, _bad, runs) = good_and_bad(502, outlier).await;
    for r in &runs {
        assert_eq!(count_status(r, 20, 502).await, 2, "{}", r.kind);
        assert_eq!(r.stat("cluster.svc.outlier_detection.ejections_enforced_consecutive_gateway_failure").await, 1, "{}", r.kind);
    }
}

#[tokio::test]
async fn active_http_and_tcp_health_checks() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    b.set_status(503);
    let dead = weft_test_support::free_port();
    let (pa, pb) = (a.port(), b.port());
    let runs = both(|p| {
        let hc = json!({"timeout": "1s", "interval": "0.2s", "unhealthy_threshold": 1, "healthy_threshold": 1, "no_traffic_interval": "0.2s", "http_health_check": {"path": "/healthz"}});
        let tcp = json!({"timeout": "1s", "interval": "0.2s", "unhealthy_threshold": 1, "healthy_threshold": 1, "no_traffic_interval": "0.2s", "tcp_health_check": {}});
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/http"}, "route": {"cluster": "http"}},
                {"match": {"prefix": "/tcp"}, "route": {"cluster": "tcp"}},
            ]}]),
            vec![
                cluster("http", &[pa, pb], json!({"health_checks": [hc], "common_lb_config": {"healthy_panic_threshold": {"value": 0}}})),
                cluster("tcp", &[pa, dead], json!({"health_checks": [tcp], "common_lb_config": {"healthy_panic_threshold": {"value": 0}}})),
            ],
            json!({}),
        )
    })
    .await;
    for r in &runs {
        let via = |path: &'static str| async move {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..10 {
                let reply = r.send(Req::get(path)).await;
                seen.insert((reply.status, reply.header("x-upstream").unwrap_or_default()));
            }
            seen
        };
        eventually(Duration::from_secs(10), "unhealthy hosts to be excluded", || async {
            (via("/http").await == [(200, "a".to_string())].into() && via("/tcp").await == [(200, "a".to_string())].into()).then_some(())
        })
        .await;
    }
    b.set_status(0);
    for r in &runs {
        eventually(Duration::from_secs(10), "the recovered host to return", || async {
            (r.stat("cluster.http.membership_healthy").await == 2).then_some(())
        })
        .await;
        assert!(r.stat("cluster.http.health_check.success").await > 0, "{}", r.kind);
    }
}

#[tokio::test]
async fn fault_injection_abort_delay_and_header_control() {
    let up = Upstream::start("up").await;
    let port = up.port();
    let fault = |cfg: serde_json::Value| {
        let mut tc = json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"});
        merge(&mut tc, cfg);
        json!({"name": "envoy.filters.http.fault", "typed_config": tc})
    };
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}]}]),
            vec![cluster("up", &[port], json!({}))],
            json!({"http_filters": [
                fault(json!({"abort": {"http_status": 503, "percentage": {"numerator": 100}}, "headers": [{"name": "x-fault", "string_match": {"exact": "abort"}}]})),
                fault(json!({"delay": {"fixed_delay": "0.3s", "percentage": {"numerator": 100}}, "headers": [{"name": "x-fault", "string_match": {"exact": "delay"}}]})),
                fault(json!({"abort": {"header_abort": {}, "percentage": {"numerator": 100}}, "delay": {"header_delay": {}, "percentage": {"numerator": 100}}})),
                fault(json!({"abort": {"http_status": 500, "percentage": {"numerator": 0}}})),
                router()]}),
        )
    })
    .await;
    let seen =
        same(&runs, &[Req::get("/").header("x-fault", "abort"), Req::get("/").header("x-envoy-fault-abort-request", "429"), Req::get("/")])
            .await;
    assert_eq!((seen[0]["status"].as_u64(), seen[0]["body"].as_str()), (Some(503), Some("fault filter abort")));
    assert_eq!(seen[1]["status"], 429);
    assert_eq!(seen[2]["status"], 200);
    for r in &runs {
        let t = Instant::now();
        assert_eq!(r.send(Req::get("/").header("x-fault", "delay")).await.status, 200);
        // Envoy's timers fire a few ms early; allow that slack.
        assert!(t.elapsed() >= Duration::from_millis(280), "{}: fixed delay not applied: {:?}", r.kind, t.elapsed());
        let t = Instant::now();
        assert_eq!(r.send(Req::get("/").header("x-envoy-fault-delay-request", "250")).await.status, 200);
        assert!(t.elapsed() >= Duration::from_millis(230), "{}: header delay not applied", r.kind);
        assert_eq!(r.stat("http.ingress.fault.aborts_injected").await, 2, "{}", r.kind);
        assert_eq!(r.stat("http.ingress.fault.delays_injected").await, 2, "{}", r.kind);
    }
}

#[tokio::test]
async fn retry_circuit_breaker_limits_concurrent_retries() {
    let up = Upstream::start("up").await;
    let port = up.port();
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up",
                "retry_policy": {"retry_on": "5xx", "num_retries": 3, "retry_back_off": {"base_interval": "0.2s", "max_interval": "0.2s"}}}}]}]),
            vec![cluster("up", &[port], json!({"circuit_breakers": {"thresholds": [{"max_retries": 0}]}}))],
            json!({}),
        )
    })
    .await;
    for r in &runs {
        up.reset();
        let reply = r.send(Req::get("/").header("x-echo-status", "503")).await;
        assert_eq!((reply.status, up.requests()), (503, 1), "{}: no retry budget, no retry", r.kind);
        assert_eq!(r.stat("cluster.up.upstream_rq_retry_overflow").await, 1, "{}", r.kind);
    }
}
