//! Virtual-host and route selection.

use serde_json::json;
use weft_test_support::Req;

use crate::harness::*;

#[tokio::test]
async fn virtual_host_domains_exact_wildcards_and_ports() {
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([
                {"name": "exact", "domains": ["api.example.com", "api.example.com:8080"], "routes": [direct(json!({"prefix": "/"}), "exact")]},
                {"name": "suffix", "domains": ["*.example.com"], "routes": [direct(json!({"prefix": "/"}), "suffix")]},
                {"name": "longer-suffix", "domains": ["*.svc.example.com"], "routes": [direct(json!({"prefix": "/"}), "longer-suffix")]},
                {"name": "prefix", "domains": ["reviews.*"], "routes": [direct(json!({"prefix": "/"}), "prefix")]},
                {"name": "any", "domains": ["*"], "routes": [direct(json!({"prefix": "/"}), "any")]},
            ]),
            vec![],
            json!({}),
        )
    })
    .await;
    let hosts = [
        "api.example.com",
        "API.Example.com",
        "api.example.com:8080",
        "api.example.com:9090",
        "x.example.com",
        "a.svc.example.com",
        "reviews.default",
        "reviews",
        "other",
    ];
    let reqs: Vec<Req> = hosts.iter().map(|h| Req::get("/").host(h)).collect();
    let seen = same(&runs, &reqs).await;
    let bodies: Vec<String> = seen.iter().map(|v| v["body"].as_str().unwrap_or_default().to_string()).collect();
    // A host with an unlisted port matches no wildcard: Envoy compares the whole Host header.
    assert_eq!(bodies, ["exact", "exact", "exact", "any", "suffix", "longer-suffix", "prefix", "any", "any"]);
}

#[tokio::test]
async fn route_path_matchers() {
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [
                direct(json!({"path": "/exact"}), "path"),
                direct(json!({"path_separated_prefix": "/sep"}), "separated"),
                direct(json!({"safe_regex": {"regex": "/items/[0-9]+"}}), "regex"),
                direct(json!({"prefix": "/CaSe", "case_sensitive": false}), "insensitive"),
                direct(json!({"prefix": "/pre"}), "prefix"),
                direct(json!({"prefix": "/"}), "default"),
            ]}]),
            vec![],
            json!({}),
        )
    })
    .await;
    let paths = [
        "/exact",
        "/exact/",
        "/exact?x=1",
        "/sep",
        "/sep/a",
        "/separate",
        "/items/42",
        "/items/42x",
        "/case/x",
        "/CASE",
        "/prefix",
        "/other",
    ];
    let reqs: Vec<Req> = paths.iter().map(|p| Req::get(p)).collect();
    let seen = same(&runs, &reqs).await;
    let bodies: Vec<&str> = seen.iter().map(|v| v["body"].as_str().unwrap_or_default()).collect();
    assert_eq!(
        bodies,
        [
            "path",
            "default",
            "path",
            "separated",
            "separated",
            "default",
            "regex",
            "default",
            "insensitive",
            "insensitive",
            "prefix",
            "default"
        ]
    );
}

#[tokio::test]
async fn header_matchers() {
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [
                direct(json!({"prefix": "/", "headers": [{"name": "x-exact", "string_match": {"exact": "yes"}}]}), "exact"),
                direct(json!({"prefix": "/", "headers": [{"name": "x-pre", "string_match": {"prefix": "ab"}}]}), "prefix"),
                direct(json!({"prefix": "/", "headers": [{"name": "x-suf", "string_match": {"suffix": "yz"}}]}), "suffix"),
                direct(json!({"prefix": "/", "headers": [{"name": "x-has", "string_match": {"contains": "mid"}}]}), "contains"),
                direct(json!({"prefix": "/", "headers": [{"name": "x-re", "string_match": {"safe_regex": {"regex": "v[0-9]+"}}}]}), "regex"),
                direct(json!({"prefix": "/", "headers": [{"name": "x-ic", "string_match": {"exact": "MiXeD", "ignore_case": true}}]}), "ignore-case"),
                direct(json!({"prefix": "/", "headers": [{"name": "x-present", "present_match": true}]}), "present"),
                direct(json!({"prefix": "/", "headers": [{"name": "x-not", "string_match": {"exact": "no"}, "invert_match": true}, {"name": "x-not", "present_match": true}]}), "inverted"),
                direct(json!({"prefix": "/", "headers": [{"name": ":method", "string_match": {"exact": "POST"}}]}), "method"),
                direct(json!({"prefix": "/"}), "default"),
            ]}]),
            vec![],
            json!({}),
        )
    })
    .await;
    let reqs = vec![
        Req::get("/").header("x-exact", "yes"),
        Req::get("/").header("x-exact", "yess"),
        Req::get("/").header("x-pre", "abc"),
        Req::get("/").header("x-suf", "xyz"),
        Req::get("/").header("x-has", "amidst"),
        Req::get("/").header("x-re", "v12"),
        Req::get("/").header("x-re", "v12b"),
        Req::get("/").header("x-ic", "mixed"),
        Req::get("/").header("x-present", ""),
        Req::get("/").header("x-not", "yes"),
        Req::get("/").header("x-not", "no"),
        Req::get("/").method("POST"),
        Req::get("/"),
    ];
    let seen = same(&runs, &reqs).await;
    let bodies: Vec<&str> = seen.iter().map(|v| v["body"].as_str().unwrap_or_default()).collect();
    assert_eq!(
        bodies,
        [
            "exact",
            "default",
            "prefix",
            "suffix",
            "contains",
            "regex",
            "default",
            "ignore-case",
            "present",
            "inverted",
            "default",
            "method",
            "default"
        ]
    );
}

#[tokio::test]
async fn query_parameter_matchers() {
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [
                direct(json!({"prefix": "/", "query_parameters": [{"name": "debug", "string_match": {"exact": "1"}}]}), "exact"),
                direct(json!({"prefix": "/", "query_parameters": [{"name": "v", "string_match": {"safe_regex": {"regex": "[a-c]+"}}}]}), "regex"),
                direct(json!({"prefix": "/", "query_parameters": [{"name": "flag", "present_match": true}]}), "present"),
                direct(json!({"prefix": "/"}), "default"),
            ]}]),
            vec![],
            json!({}),
        )
    })
    .await;
    let paths = ["/?debug=1", "/?debug=2", "/?a=b&v=abc", "/?v=abd", "/?flag", "/?flag=x", "/"];
    let reqs: Vec<Req> = paths.iter().map(|p| Req::get(p)).collect();
    let seen = same(&runs, &reqs).await;
    let bodies: Vec<&str> = seen.iter().map(|v| v["body"].as_str().unwrap_or_default()).collect();
    assert_eq!(bodies, ["exact", "default", "regex", "default", "present", "present", "default"]);
}

#[tokio::test]
async fn no_route_is_404_and_no_virtual_host_is_404() {
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "only", "domains": ["only.example"], "routes": [direct(json!({"path": "/x"}), "x")]}]),
            vec![],
            json!({}),
        )
    })
    .await;
    let seen = same(&runs, &[Req::get("/y").host("only.example"), Req::get("/x").host("elsewhere")]).await;
    assert_eq!(seen[0]["status"], 404);
    assert_eq!(seen[1]["status"], 404);
    for r in &runs {
        assert_eq!(r.stat("http.ingress.no_route").await, 2, "{}", r.kind);
    }
}

/// `request_mirror_policies`: the caller gets the primary's answer whatever the shadow says; the
/// shadow gets a copy with `-shadow` appended to the host (before the port) and the same method,
/// path, body and headers; a policy with a 0% share sends nothing.
#[tokio::test]
async fn mirrored_requests_reach_the_shadow_and_never_the_caller() {
    let primary = weft_test_support::Upstream::start("primary").await;
    let shadow = weft_test_support::Upstream::start("shadow").await;
    // The copies' answers are read and dropped: a failing shadow changes nothing for the caller.
    shadow.set_status(503);
    let (p, s) = (primary.port(), shadow.port());
    let runs = both(|ports| {
        http_bootstrap(
            ports,
            json!([{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/none"}, "route": {"cluster": "primary", "request_mirror_policies": [
                    {"cluster": "shadow", "runtime_fraction": {"default_value": {"numerator": 0}}}]}},
                {"match": {"prefix": "/"}, "route": {"cluster": "primary", "request_mirror_policies": [{"cluster": "shadow"}]}},
            ]}]),
            vec![cluster("primary", &[p], json!({})), cluster("shadow", &[s], json!({}))],
            json!({}),
        )
    })
    .await;
    let reqs = [
        Req::get("/a?x=1").host("reviews:9080"),
        Req::get("/b").method("POST").header("content-type", "text/plain").body("hello").host("reviews"),
        Req::get("/none/c").host("reviews"),
        // Sent after the 0% request: once its copy is in, a copy of that one would be too.
        Req::get("/last").host("reviews"),
    ];
    let mut copies = Vec::new();
    for run in &runs {
        shadow.reset();
        for r in &reqs {
            let reply = run.send(r.clone()).await;
            assert_eq!(reply.status, 200, "{}: {} {}", run.kind, r.method, r.path);
            assert_eq!(reply.header("x-upstream").as_deref(), Some("primary"), "{}: {}", run.kind, r.path);
        }
        let mut seen = shadow.wait_seen(3, std::time::Duration::from_secs(10)).await;
        // A copy of the 0% request would have been counted before the later ones arrived.
        assert_eq!(run.stat("cluster.shadow.upstream_rq_total").await, 3, "{}: copies sent", run.kind);
        seen.sort_by_key(|v| v["path"].as_str().unwrap_or_default().to_string());
        for v in &mut seen {
            v["headers"]["x-request-id"] = json!("<set>");
            if let Some(o) = v.as_object_mut() {
                o.remove("peer");
            }
        }
        copies.push(seen);
    }
    assert_eq!(
        copies[1],
        copies[0],
        "the shadow got different copies\n--- weft ---\n{:#}\n--- envoy ---\n{:#}",
        json!(copies[1]),
        json!(copies[0])
    );
    let paths: Vec<&str> = copies[0].iter().map(|v| v["path"].as_str().unwrap_or_default()).collect();
    assert_eq!(paths, ["/a?x=1", "/b", "/last"]);
    assert_eq!(copies[0][0]["headers"]["host"][0], "reviews-shadow:9080");
    assert_eq!(copies[0][1]["method"], "POST");
    assert_eq!(copies[0][1]["body"], "hello");
}
