//! Tracing with the Zipkin tracer: the sampling decision, the B3 headers the upstream gets, and
//! the spans a collector receives, from Envoy and from weft.

use std::time::Duration;

use serde_json::{json, Value};
use weft_test_support::zipkin::Collector;
use weft_test_support::{eventually, ProxyKind, Req, Upstream};

use crate::harness::*;

fn bootstrap(p: &Ports, upstream: u16, collector: u16) -> Value {
    let tracing = json!({
        "random_sampling": {"value": 50},
        "custom_tags": [
            {"tag": "mesh", "literal": {"value": "m1"}},
            {"tag": "tenant", "request_header": {"name": "x-tenant", "default_value": "none"}},
        ],
        "provider": {"name": "envoy.tracers.zipkin", "typed_config": {
            "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
            "collector_cluster": "zipkin",
            "collector_endpoint": "/api/v2/spans",
            "collector_endpoint_version": "HTTP_JSON",
            "trace_id_128bit": true,
            "shared_span_context": false,
        }},
    });
    let vhosts = json!([{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/checkout"}, "route": {"cluster": "up"}, "decorator": {"operation": "checkout"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "up"}},
    ]}]);
    let mut b = http_bootstrap(
        p,
        vhosts,
        vec![cluster("up", &[upstream], json!({})), cluster("zipkin", &[collector], json!({}))],
        json!({"tracing": tracing}),
    );
    b["node"] = json!({"id": "test-node", "cluster": "test-cluster"});
    b["static_resources"]["listeners"][0]["traffic_direction"] = json!("OUTBOUND");
    b
}

const CALLER_TRACE: &str = "463ac35c9f6413ad48485a3953bb6124";
const CALLER_SPAN: &str = "a2fb4a1d1a96d312";

/// (request, whether it is sampled): ids whose first 32 bits mod 10000 fall under 5000 are
/// sampled at 50 %.
fn requests() -> Vec<(Req, bool)> {
    let id = |head: &str| format!("{head}-1111-4222-8333-444455556666");
    vec![
        (Req::get("/a").header("x-request-id", &id("00000007")), true),
        (Req::get("/b").header("x-request-id", &id("00001f40")), false),
        (
            Req::get("/c")
                .header("x-request-id", &id("00001f42"))
                .header("x-b3-traceid", CALLER_TRACE)
                .header("x-b3-spanid", CALLER_SPAN)
                .header("x-b3-sampled", "1"),
            true,
        ),
        (Req::get("/d").header("x-request-id", &id("00001f41")).header("x-client-trace-id", "debug-me"), true),
        (Req::get("/checkout/1").header("x-request-id", &id("00000008")).header("x-tenant", "acme"), true),
        (Req::get("/e").header("x-request-id", &id("00002710")).header("x-b3-sampled", "0"), false),
    ]
}

/// What a caller can compare across proxies: everything but ids, times and the proxy's own
/// addresses and response sizes (their upstream headers differ).
fn comparable(span: &Value) -> Value {
    let mut s = span.clone();
    for k in ["id", "traceId", "parentId", "timestamp", "duration", "annotations", "localEndpoint"] {
        if let Some(o) = s.as_object_mut() {
            o.remove(k);
        }
    }
    if let Some(t) = s["tags"].as_object_mut() {
        t.remove("response_size");
    }
    s["annotation"] = span["annotations"][0]["value"].clone();
    s["service"] = span["localEndpoint"]["serviceName"].clone();
    s
}

#[tokio::test]
async fn zipkin_tracing_matches_envoy() {
    let up = Upstream::start("up").await;
    let mut seen = Vec::new();
    for kind in [ProxyKind::Envoy, ProxyKind::Weft] {
        let collector = Collector::start().expect("collector");
        let (upstream, cport) = (up.port(), collector.port);
        let run = start(kind, &move |p| bootstrap(p, upstream, cport)).await;
        let mut upstream_saw = Vec::new();
        for (req, sampled) in requests() {
            let reply = run.send(req.clone()).await;
            assert_eq!(reply.status, 200, "{kind} {}", req.path);
            let h = &reply.echo()["headers"];
            let one = |n: &str| h[n][0].as_str().unwrap_or("").to_string();
            assert_eq!(one("x-b3-sampled"), if sampled { "1" } else { "0" }, "{kind} {}: x-b3-sampled", req.path);
            assert_eq!(one("x-b3-traceid").len(), 32, "{kind} {}: a 128-bit trace id", req.path);
            assert_eq!(one("x-b3-spanid").len(), 16, "{kind} {}", req.path);
            if req.path == "/c" {
                assert_eq!(one("x-b3-traceid"), CALLER_TRACE, "{kind}: the caller's trace continues");
                assert_eq!(one("x-b3-parentspanid"), CALLER_SPAN, "{kind}: the caller's span is the parent");
            } else {
                assert!(h.get("x-b3-parentspanid").is_none(), "{kind} {}: a root span has no parent", req.path);
                assert_eq!(&one("x-b3-spanid"), &one("x-b3-traceid")[16..], "{kind} {}: root span id", req.path);
            }
            upstream_saw.push((req.path.clone(), one("x-request-id"), one("x-b3-sampled")));
        }
        let want = requests().iter().filter(|(_, s)| *s).count();
        // Fewer than five spans: the report goes out on the 5 s flush timer.
        let spans = eventually(Duration::from_secs(15), "spans at the collector", || async {
            let s = collector.spans();
            (s.len() >= want).then_some(s)
        })
        .await;
        assert_eq!(spans.len(), want, "{kind}: one span per sampled request");
        let sent = eventually(Duration::from_secs(5), "spans_sent", || async {
            let n = run.stat("tracing.zipkin.spans_sent").await;
            (n >= want as i64).then_some(n)
        })
        .await;
        assert_eq!(sent, want as i64, "{kind}: spans_sent");
        // Envoy counts every thread's timer; at least one of them sent this report.
        assert!(run.stat("tracing.zipkin.timer_flushed").await >= 1, "{kind}: timer_flushed");
        let c = spans.iter().find(|s| s["tags"]["http.url"] == json!("http://test.local/c")).expect("span of /c");
        assert_eq!(c["traceId"], json!(CALLER_TRACE));
        assert_eq!(c["parentId"], json!(CALLER_SPAN));
        let mut spans: Vec<Value> = spans.iter().map(comparable).collect();
        spans.sort_by_key(|s| s["tags"]["http.url"].as_str().unwrap_or("").to_string());
        seen.push((upstream_saw, spans));
    }
    assert_eq!(seen[1].0, seen[0].0, "weft vs envoy: request ids and sampling the upstream saw");
    assert_eq!(seen[1].1, seen[0].1, "weft vs envoy: spans at the collector");
    let spans = &seen[0].1;
    let checkout = spans.iter().find(|s| s["tags"]["http.url"] == json!("http://test.local/checkout/1")).expect("checkout span");
    assert_eq!(checkout["name"], json!("checkout"), "a route decorator names the span");
    assert_eq!(checkout["tags"]["tenant"], json!("acme"));
    assert_eq!(checkout["kind"], json!("CLIENT"));
    assert_eq!(seen[0].0[3].1, "00001f41-1111-b222-8333-444455556666", "x-client-trace-id forces the trace");
}

/// `trace_context_option: USE_B3_WITH_W3C_PROPAGATION`: W3C `traceparent` is read when no B3
/// context came, and written next to B3 on the way up — as Envoy does, header for header.
#[tokio::test]
async fn w3c_trace_context_matches_envoy() {
    let up = Upstream::start("up").await;
    let parent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let reqs = || {
        vec![
            Req::get("/w3c").header("traceparent", &parent).header("tracestate", "vendor=opaque"),
            Req::get("/w3c-unsampled").header("traceparent", &format!("00-{CALLER_TRACE}-{CALLER_SPAN}-00")),
            Req::get("/both")
                .header("traceparent", &parent)
                .header("x-b3-traceid", "0af7651916cd43dd8448eb211c80319c")
                .header("x-b3-spanid", "b7ad6b7169203331")
                .header("x-b3-sampled", "1"),
            Req::get("/none"),
            Req::get("/bad").header("traceparent", "00-zz-yy-01"),
        ]
    };
    let mut seen = Vec::new();
    for kind in [ProxyKind::Envoy, ProxyKind::Weft] {
        let collector = Collector::start().expect("collector");
        let (upstream, cport) = (up.port(), collector.port);
        let run = start(kind, &move |p| {
            let mut b = bootstrap(p, upstream, cport);
            let hcm = &mut b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
            hcm["tracing"]["provider"]["typed_config"]["trace_context_option"] = json!("USE_B3_WITH_W3C_PROPAGATION");
            hcm["tracing"]["random_sampling"] = json!({"value": 100});
            b
        })
        .await;
        let mut saw = Vec::new();
        for req in reqs() {
            let reply = run.send(req.clone()).await;
            assert_eq!(reply.status, 200, "{kind} {}", req.path);
            let h = &reply.echo()["headers"];
            let one = |n: &str| h[n][0].as_str().unwrap_or("-").to_string();
            let (trace, span) = (one("x-b3-traceid"), one("x-b3-spanid"));
            // Ids are random for new spans: compare their shape, and the caller's where kept.
            let tp = one("traceparent");
            let tp_shape = tp.replace(&trace, "<trace>").replace(&span, "<span>");
            saw.push((req.path.clone(), tp_shape, one("tracestate"), one("x-b3-parentspanid"), one("x-b3-sampled"), trace == CALLER_TRACE));
        }
        seen.push(saw);
    }
    assert_eq!(seen[1], seen[0], "weft vs envoy: B3 and W3C headers the upstream saw");
    let w3c = &seen[1][0];
    assert!(w3c.5 && w3c.3 == CALLER_SPAN, "a W3C caller's trace continues, its span the parent: {w3c:?}");
    assert_eq!((w3c.1.as_str(), w3c.2.as_str()), ("00-<trace>-<span>-01", "vendor=opaque"), "traceparent written, tracestate kept");
    assert!(!seen[1][2].5 && seen[1][2].3 == "b7ad6b7169203331", "B3 wins over W3C when both came: {:?}", seen[1][2]);
}

/// `random_sampling` at 0, 50 and 100 %: over a bounded number of requests without a request
/// id (so the proxy makes one), the share of sampled requests is what was asked, in Envoy and
/// in weft, and the collector gets exactly one span per sampled request.
#[tokio::test]
async fn random_sampling_rates_hold_over_many_requests() {
    const N: usize = 200;
    let up = Upstream::start("up").await;
    for kind in [ProxyKind::Envoy, ProxyKind::Weft] {
        for percent in [0u32, 50, 100] {
            let collector = Collector::start().expect("collector");
            let (upstream, cport) = (up.port(), collector.port);
            let run = start(kind, &move |p| {
                let mut b = bootstrap(p, upstream, cport);
                let hcm = &mut b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
                hcm["tracing"]["random_sampling"] = json!({"value": percent});
                b
            })
            .await;
            let mut sampled = 0;
            for i in 0..N {
                let reply = run.send(Req::get(&format!("/r{i}"))).await;
                assert_eq!(reply.status, 200, "{kind} {percent}%");
                if reply.echo()["headers"]["x-b3-sampled"][0] == "1" {
                    sampled += 1;
                }
            }
            match percent {
                0 => assert_eq!(sampled, 0, "{kind}: nothing sampled at 0 %"),
                100 => assert_eq!(sampled, N, "{kind}: everything sampled at 100 %"),
                // Binomial(200, 0.5): 100 ± 7; the bounds are more than 5 standard deviations out.
                _ => assert!((60..=140).contains(&sampled), "{kind}: {sampled} of {N} sampled at 50 %"),
            }
            // A forced trace last, so that at 0 % too there is a span to wait for.
            let forced = run.send(Req::get("/forced").header("x-client-trace-id", "forced")).await;
            assert_eq!(forced.echo()["headers"]["x-b3-sampled"][0], "1", "{kind}: x-client-trace-id forces a trace");
            let spans = eventually(Duration::from_secs(15), "every sampled span at the collector", || async {
                let s = collector.spans();
                let forced = s.iter().any(|s| s["tags"]["http.url"] == json!("http://test.local/forced"));
                (forced && s.len() > sampled).then_some(s)
            })
            .await;
            assert_eq!(spans.len(), sampled + 1, "{kind} {percent}%: one span per sampled request");
        }
    }
}

/// A collector that is down costs its spans, counted, never a request: with the collector
/// refusing connections, or accepting them and never answering, every request is answered at
/// once, and the collector's counters are Envoy's.
#[tokio::test]
async fn a_collector_that_is_down_never_blocks_a_request() {
    let up = Upstream::start("up").await;
    // Refused: a port nothing listens on. Silent: a listener whose backlog takes the connection
    // and nobody ever reads it (the report times out after 5 s).
    let refused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    for kind in [ProxyKind::Envoy, ProxyKind::Weft] {
        for (what, cport) in [("refusing", refused), ("silent", silent_port)] {
            let upstream = up.port();
            let run = start(kind, &move |p| {
                let mut b = bootstrap(p, upstream, cport);
                let hcm = &mut b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
                hcm["tracing"]["random_sampling"] = json!({"value": 100});
                b
            })
            .await;
            // 20 sampled requests: four full batches of spans go to the collector meanwhile.
            for i in 0..20 {
                let reply = tokio::time::timeout(Duration::from_secs(3), run.send(Req::get(&format!("/d{i}"))))
                    .await
                    .unwrap_or_else(|_| panic!("{kind}, collector {what}: request {i} waited on the collector"));
                assert_eq!(reply.status, 200, "{kind}, collector {what}");
                assert_eq!(reply.echo()["headers"]["x-b3-sampled"][0], "1");
            }
            // Every span has left and at least four reports (of at most five spans; how Envoy's
            // workers batch them varies) have ended. Against the silent collector each report
            // waits out its 5 s timeout, one after another: 20 s at least, more on a busy machine.
            let counts = eventually(Duration::from_secs(60), "every report ended", || async {
                let mut c = Vec::new();
                for n in ["spans_sent", "reports_sent", "reports_dropped", "reports_failed"] {
                    c.push((n, run.stat(&format!("tracing.zipkin.{n}")).await));
                }
                (c[0].1 == 20 && c[1].1 + c[2].1 + c[3].1 >= 4).then_some(c)
            })
            .await;
            // Envoy's reading: the spans count as sent when the report leaves; a report that
            // never reached a collector comes back as a local 503 or 504, so it is dropped.
            let (sent, dropped, failed) = (counts[1].1, counts[2].1, counts[3].1);
            assert_eq!((sent, failed), (0, 0), "{kind}, collector {what}: {counts:?}");
            assert!(dropped >= 4, "{kind}, collector {what}: {counts:?}");
        }
    }
    drop(silent);
}

/// The decoded spans of OTLP export requests, comparable across proxies: name, kind, the
/// resource's `service.name`, and every attribute but sizes and the proxy's own id; plus the
/// trace and parent ids as hex.
fn otlp_spans(bodies: &[Vec<u8>]) -> Vec<Value> {
    use prost::Message;
    use weft_proxy::trace::otlp::proto::ExportTraceServiceRequest;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut out = Vec::new();
    for b in bodies {
        let req = ExportTraceServiceRequest::decode(b.as_slice()).expect("an OTLP export request");
        for rs in &req.resource_spans {
            let service: Vec<String> = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .filter(|kv| kv.key == "service.name")
                .filter_map(|kv| kv.value.as_ref().map(|v| v.string_value.clone()))
                .collect();
            for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                let mut attrs = serde_json::Map::new();
                for kv in &s.attributes {
                    if !matches!(kv.key.as_str(), "response_size" | "node_id" | "peer.address" | "guid:x-request-id") {
                        attrs.insert(kv.key.clone(), json!(kv.value.as_ref().map(|v| v.string_value.clone())));
                    }
                }
                out.push(json!({
                    "name": s.name, "kind": s.kind, "service": service, "attributes": attrs,
                    "trace": hex(&s.trace_id), "parent": hex(&s.parent_span_id), "span_len": s.span_id.len(),
                    "ordered": s.end_time_unix_nano >= s.start_time_unix_nano && s.start_time_unix_nano > 0,
                }));
            }
        }
    }
    out.sort_by_key(|s| s["attributes"]["http.url"].as_str().unwrap_or("").to_string());
    out
}

/// Envoy's OpenTelemetry tracer (what Istio's `opentelemetry` extension provider configures),
/// exporting OTLP over HTTP: the W3C context the upstream gets, and the spans the collector
/// decodes — names, kinds, `service.name`, attributes and parents — are Envoy's, span for span
/// (ids and the request id aside, which are random).
#[tokio::test]
async fn opentelemetry_tracing_matches_envoy() {
    let up = Upstream::start("up").await;
    let parent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let reqs = || {
        vec![
            Req::get("/otel-continued").header("traceparent", &parent).header("tracestate", "vendor=opaque"),
            Req::get("/otel-new"),
            // The OpenTelemetry tracer reads W3C only: a B3 caller starts a new trace.
            Req::get("/otel-b3").header("x-b3-traceid", CALLER_TRACE).header("x-b3-spanid", CALLER_SPAN).header("x-b3-sampled", "1"),
            Req::get("/checkout/otel").header("x-tenant", "acme"),
        ]
    };
    let mut seen = Vec::new();
    for kind in [ProxyKind::Envoy, ProxyKind::Weft] {
        let collector = Collector::start().expect("collector");
        let (upstream, cport) = (up.port(), collector.port);
        let run = start(kind, &move |p| {
            let mut b = bootstrap(p, upstream, cport);
            let hcm = &mut b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
            hcm["tracing"]["random_sampling"] = json!({"value": 100});
            hcm["tracing"]["provider"] = json!({"name": "envoy.tracers.opentelemetry", "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "service_name": "checkout.shop",
                "http_service": {"http_uri": {"uri": format!("http://127.0.0.1:{cport}/v1/traces"), "cluster": "zipkin", "timeout": "2s"}},
            }});
            b
        })
        .await;
        let mut saw = Vec::new();
        for req in reqs() {
            let reply = run.send(req.clone()).await;
            assert_eq!(reply.status, 200, "{kind} {}", req.path);
            let h = &reply.echo()["headers"];
            let one = |n: &str| h[n][0].as_str().unwrap_or("-").to_string();
            let tp = one("traceparent");
            let continued = tp.starts_with(&format!("00-{CALLER_TRACE}-"));
            let shape = if continued { tp.replace(CALLER_TRACE, "<caller>") } else { "new".to_owned() };
            saw.push((req.path.clone(), tp.len(), shape.len(), one("tracestate"), one("x-b3-spanid") == "-", continued));
        }
        let want = reqs().len();
        let spans = eventually(Duration::from_secs(15), "OTLP spans at the collector", || async {
            let s = otlp_spans(&collector.otlp_requests());
            (s.len() >= want).then_some(s)
        })
        .await;
        assert_eq!(spans.len(), want, "{kind}: one span per request");
        let continued = spans.iter().find(|s| s["attributes"]["http.url"] == json!("http://test.local/otel-continued")).expect("span");
        assert_eq!((continued["trace"].as_str(), continued["parent"].as_str()), (Some(CALLER_TRACE), Some(CALLER_SPAN)), "{kind}");
        let b3 = spans.iter().find(|s| s["attributes"]["http.url"] == json!("http://test.local/otel-b3")).expect("span");
        assert_ne!(b3["trace"].as_str(), Some(CALLER_TRACE), "{kind}: B3 is not read by the OpenTelemetry tracer");
        let comparable: Vec<Value> = spans
            .iter()
            .map(|s| {
                let mut s = s.clone();
                if let Some(o) = s.as_object_mut() {
                    o.remove("trace");
                    let rooted = o.get("parent").and_then(Value::as_str).is_some_and(str::is_empty);
                    o.insert("parent".into(), json!(rooted));
                }
                s
            })
            .collect();
        seen.push((saw, comparable));
    }
    assert_eq!(seen[1].0, seen[0].0, "weft vs envoy: the W3C context the upstream saw");
    assert_eq!(seen[1].1, seen[0].1, "weft vs envoy: the spans the OTLP collector decoded");
    let checkout = seen[0].1.iter().find(|s| s["attributes"]["http.url"] == json!("http://test.local/checkout/otel")).expect("span");
    assert_eq!((checkout["name"].clone(), checkout["kind"].clone()), (json!("checkout"), json!(3)), "a CLIENT span named by its route");
    assert_eq!(checkout["service"], json!(["checkout.shop"]));
    assert_eq!(checkout["attributes"]["tenant"], json!("acme"), "custom tags become attributes");
}

/// The OpenTelemetry tracer over gRPC (Istio's `opentelemetry` provider without `http`, what
/// Jaeger takes on 4317): a real OTLP collector (grpcio with OpenTelemetry's own protobuf
/// definitions) receives from weft the spans it receives from Envoy.
#[tokio::test]
async fn opentelemetry_over_grpc_reaches_a_real_otlp_collector_as_envoys_spans_do() {
    let up = Upstream::start("up").await;
    let mut seen = Vec::new();
    for kind in [ProxyKind::Envoy, ProxyKind::Weft] {
        let collector = weft_test_support::otlp::Collector::start();
        let (upstream, port) = (up.port(), collector.port);
        let run = start(kind, &move |p| {
            let mut b = bootstrap(p, upstream, port);
            let clusters = b["static_resources"]["clusters"].as_array_mut().expect("clusters");
            clusters.push(h2_cluster("otlp", port));
            let hcm = &mut b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
            hcm["tracing"]["random_sampling"] = json!({"value": 100});
            hcm["tracing"]["provider"] = json!({"name": "envoy.tracers.opentelemetry", "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "service_name": "reviews.bookinfo",
                "grpc_service": {"envoy_grpc": {"cluster_name": "otlp"}, "timeout": "2s"},
            }});
            b
        })
        .await;
        let parent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
        for (i, req) in [Req::get("/g1").header("traceparent", &parent), Req::get("/g2"), Req::get("/checkout/g3")].into_iter().enumerate()
        {
            assert_eq!(run.send(req).await.status, 200, "{kind} request {i}");
        }
        // Fewer than five spans: they leave on the 5 s flush timer.
        let spans = tokio::task::spawn_blocking(move || {
            let s = collector.take(3, Duration::from_secs(20));
            drop(collector);
            s
        })
        .await
        .expect("collector");
        let continued = spans.iter().find(|s| s["attributes"]["http.url"] == "http://test.local/g1").expect("span of /g1");
        assert_eq!((continued["trace"].as_str(), continued["parent"].as_str()), (Some(CALLER_TRACE), Some(CALLER_SPAN)), "{kind}");
        let mut shapes: Vec<Value> = spans
            .iter()
            .map(|s| {
                json!({"service": s["service"], "name": s["name"], "kind": s["kind"], "url": s["attributes"]["http.url"],
                "status": s["attributes"]["http.status_code"], "rooted": s["parent"] == ""})
            })
            .collect();
        shapes.sort_by_key(|s| s["url"].as_str().unwrap_or_default().to_owned());
        seen.push(shapes);
    }
    assert_eq!(seen[1], seen[0], "weft vs envoy: spans at a real OTLP/gRPC collector");
    assert_eq!(seen[0][0]["service"], json!(["reviews.bookinfo"]));
}
