//! Path and host rewrites, redirects, direct responses and header manipulation.

use serde_json::json;
use weft_test_support::{Req, Upstream};

use crate::harness::*;

#[tokio::test]
async fn prefix_regex_and_host_rewrites() {
    let up = Upstream::start("up").await;
    let port = up.port();
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/api/v1/"}, "route": {"cluster": "up", "prefix_rewrite": "/v1/"}},
                {"match": {"prefix": "/strip"}, "route": {"cluster": "up", "prefix_rewrite": "/"}},
                {"match": {"safe_regex": {"regex": "/users/([0-9]+)/posts/([0-9]+)"}}, "route": {"cluster": "up",
                    "regex_rewrite": {"pattern": {"regex": "^/users/([0-9]+)/posts/([0-9]+)$"}, "substitution": "/p/\\2/u/\\1"}}},
                {"match": {"prefix": "/host"}, "route": {"cluster": "up", "host_rewrite_literal": "internal.example"}},
                {"match": {"prefix": "/"}, "route": {"cluster": "up"}},
            ]}]),
            vec![cluster("up", &[port], json!({}))],
            json!({}),
        )
    })
    .await;
    let seen = same(
        &runs,
        &[
            Req::get("/api/v1/items?q=1"),
            Req::get("/strip/me"),
            Req::get("/users/7/posts/9"),
            Req::get("/host/x").host("public.example"),
            Req::get("/plain").host("public.example"),
        ],
    )
    .await;
    let paths: Vec<&str> = seen.iter().map(|v| v["body"]["path"].as_str().unwrap_or_default()).collect();
    // Envoy replaces exactly the matched prefix: "/strip" -> "/" turns "/strip/me" into "//me".
    assert_eq!(paths, ["/v1/items?q=1", "//me", "/p/9/u/7", "/host/x", "/plain"]);
    assert_eq!(seen[0]["body"]["headers"]["x-envoy-original-path"][0], "/api/v1/items?q=1");
    assert_eq!(seen[3]["body"]["headers"]["host"][0], "internal.example");
}

#[tokio::test]
async fn redirects() {
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/secure"}, "redirect": {"https_redirect": true}},
                {"match": {"prefix": "/moved"}, "redirect": {"host_redirect": "new.example", "response_code": "FOUND"}},
                {"match": {"prefix": "/old/"}, "redirect": {"prefix_rewrite": "/new/", "response_code": "TEMPORARY_REDIRECT"}},
                {"match": {"path": "/exactly"}, "redirect": {"path_redirect": "/there?x=1", "response_code": "SEE_OTHER"}},
                {"match": {"prefix": "/strip"}, "redirect": {"path_redirect": "/stripped", "strip_query": true, "response_code": "PERMANENT_REDIRECT"}},
                {"match": {"prefix": "/port"}, "redirect": {"port_redirect": 8443, "scheme_redirect": "https"}},
            ]}]),
            vec![],
            json!({}),
        )
    })
    .await;
    let seen = same(
        &runs,
        &[
            Req::get("/secure/a?b=c").host("www.example"),
            Req::get("/secure").host("www.example:80"),
            Req::get("/moved/x").host("old.example"),
            Req::get("/old/page?k=v").host("h"),
            Req::get("/exactly").host("h"),
            Req::get("/strip?drop=me").host("h"),
            Req::get("/port/x").host("h:8080"),
        ],
    )
    .await;
    let loc: Vec<(u64, &str)> =
        seen.iter().map(|v| (v["status"].as_u64().unwrap_or(0), v["headers"]["location"].as_str().unwrap_or_default())).collect();
    assert_eq!(
        loc,
        [
            (301, "https://www.example/secure/a?b=c"),
            (301, "https://www.example/secure"),
            (302, "http://new.example/moved/x"),
            (307, "http://h/new/page?k=v"),
            (303, "http://h/there?x=1"),
            (308, "http://h/stripped"),
            (301, "https://h:8443/port/x"),
        ]
    );
}

#[tokio::test]
async fn direct_responses() {
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [
                {"match": {"path": "/teapot"}, "direct_response": {"status": 418, "body": {"inline_string": "short and stout"}}},
                {"match": {"path": "/empty"}, "direct_response": {"status": 204}},
                {"match": {"path": "/unavailable"}, "direct_response": {"status": 503, "body": {"inline_string": "maintenance"}}},
            ]}]),
            vec![],
            json!({}),
        )
    })
    .await;
    let seen = same(&runs, &[Req::get("/teapot"), Req::get("/empty"), Req::get("/unavailable").method("POST").body("x")]).await;
    assert_eq!(seen[0]["status"], 418);
    assert_eq!(seen[0]["body"], "short and stout");
    assert_eq!(seen[1]["status"], 204);
    assert_eq!(seen[2]["status"], 503);
}

#[tokio::test]
async fn header_manipulation_at_every_level() {
    let up = Upstream::start("up").await;
    let port = up.port();
    let runs = both(|p| {
        let mut b = http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"],
                "request_headers_to_add": [{"header": {"key": "x-vhost", "value": "v"}}, {"header": {"key": "x-level", "value": "vhost"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}],
                "response_headers_to_add": [{"header": {"key": "x-vhost-resp", "value": "v"}}],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"},
                    "request_headers_to_add": [
                        {"header": {"key": "x-route", "value": "r"}},
                        {"header": {"key": "x-level", "value": "route"}},
                        {"header": {"key": "x-client", "value": "replaced"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
                        {"header": {"key": "x-absent-only", "value": "added"}, "append_action": "ADD_IF_ABSENT"},
                        {"header": {"key": "x-only-if-there", "value": "overwritten"}, "append_action": "OVERWRITE_IF_EXISTS"},
                        {"header": {"key": "x-peer", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}},
                    ],
                    "request_headers_to_remove": ["x-secret"],
                    "response_headers_to_add": [{"header": {"key": "x-route-resp", "value": "r"}}],
                    "response_headers_to_remove": ["x-upstream"],
                }]}]),
            vec![cluster("up", &[port], json!({}))],
            json!({}),
        );
        let rc = &mut b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"];
        rc["request_headers_to_add"] = json!([{"header": {"key": "x-global", "value": "g"}}]);
        rc["response_headers_to_add"] = json!([{"header": {"key": "x-global-resp", "value": "g"}}]);
        b
    })
    .await;
    let seen = same(
        &runs,
        &[Req::get("/")
            .header("x-client", "original")
            .header("x-absent-only", "kept")
            .header("x-secret", "s")
            .header("x-echo-response-header", "x-from-upstream=1")],
    )
    .await;
    let h = &seen[0]["body"]["headers"];
    assert_eq!(h["x-route"][0], "r");
    assert_eq!(h["x-vhost"][0], "v");
    assert_eq!(h["x-global"][0], "g");
    assert_eq!(h["x-client"], json!(["replaced"]));
    assert_eq!(h["x-absent-only"], json!(["kept"]));
    assert!(h.get("x-only-if-there").is_none());
    assert!(h.get("x-secret").is_none());
    assert_eq!(h["x-peer"][0], "127.0.0.1");
    let rh = &seen[0]["headers"];
    assert_eq!(rh["x-route-resp"], "r");
    assert_eq!(rh["x-vhost-resp"], "v");
    assert_eq!(rh["x-global-resp"], "g");
    assert!(rh.get("x-upstream").is_none());
}

#[tokio::test]
async fn forwarding_headers_request_id_and_xff() {
    let up = Upstream::start("up").await;
    let port = up.port();
    let runs = both(|p| {
        let vh =
            json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up", "timeout": "3s"}}]}]);
        let b = http_bootstrap(p, vh.clone(), vec![cluster("up", &[port], json!({}))], json!({}));
        // A second listener at the edge: use_remote_address appends the peer to x-forwarded-for.
        with_second_listener(b, p, "edge", vh, json!({"use_remote_address": true}))
    })
    .await;
    let seen = same(&runs, &[Req::get("/a"), Req::get("/b").header("x-request-id", "keep-me").header("x-forwarded-for", "10.1.1.1")]).await;
    let h0 = &seen[0]["body"]["headers"];
    assert_eq!(h0["x-request-id"], "<set>");
    assert_eq!(h0["x-forwarded-proto"][0], "http");
    assert_eq!(h0["x-envoy-expected-rq-timeout-ms"][0], "3000");
    assert!(h0.get("x-forwarded-for").is_none(), "no XFF appended without use_remote_address");
    for r in &runs {
        let got = r.send(Req::get("/b").header("x-request-id", "keep-me").header("x-forwarded-for", "10.1.1.1")).await.echo();
        assert_eq!(got["headers"]["x-request-id"][0], "keep-me", "{}", r.kind);
        let edge = weft_test_support::send(&r.addr_n(1), Req::get("/e").header("x-forwarded-for", "10.1.1.1")).await.map(|r| r.echo());
        let edge = edge.unwrap_or_default();
        // Both append the peer to x-forwarded-for. Envoy 1.40 from PyPI appends 192.0.2.2 for a
        // loopback peer here; weft appends the real peer address (deliberate difference).
        let xff = edge["headers"]["x-forwarded-for"][0].as_str().unwrap_or_default().to_string();
        let hops: Vec<&str> = xff.split(',').collect();
        assert_eq!((hops.len(), hops[0]), (2, "10.1.1.1"), "{} {edge}", r.kind);
        assert_eq!(edge["headers"]["x-envoy-external-address"][0], "127.0.0.1", "{} {edge}", r.kind);
        assert!(edge["headers"].get("x-envoy-internal").is_none(), "{} {edge}", r.kind);
    }
}

/// `normalize_path` and `merge_slashes`: routing and the upstream see the normalized path, so
/// `/public/../admin` is routed as `/admin`, as in Envoy.
#[tokio::test]
async fn normalize_path_and_merge_slashes() {
    let up = Upstream::start("up").await;
    let port = up.port();
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [
                direct(json!({"prefix": "/admin"}), "admin route"),
                {"match": {"prefix": "/"}, "route": {"cluster": "up"}},
            ]}]),
            vec![cluster("up", &[port], json!({}))],
            json!({"normalize_path": true, "merge_slashes": true}),
        )
    })
    .await;
    let seen = same(
        &runs,
        &[
            Req::get("/public/../admin/x"),
            Req::get("/a/./b//c?x=1&y=/../"),
            Req::get("/a/%2e%2E/b"),
            Req::get("/%41b%2fc%7e"),
            Req::get("/a/b/.."),
            Req::get("/../../up"),
        ],
    )
    .await;
    assert_eq!(seen[0]["body"], "admin route");
    let paths: Vec<&str> = seen[1..].iter().map(|v| v["body"]["path"].as_str().unwrap_or_default()).collect();
    assert_eq!(paths, ["/a/b/c?x=1&y=/../", "/b", "/Ab%2fc~", "/a/", "/up"]);
}

/// `require_tls: EXTERNAL_ONLY` redirects a plaintext request even when the client says it is
/// internal: without `internal_address_config` Envoy counts every request as external.
#[tokio::test]
async fn external_only_tls_redirects_even_a_request_claiming_to_be_internal() {
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "require_tls": "EXTERNAL_ONLY", "routes": [direct(json!({"prefix": "/"}), "plain")]}]),
            vec![],
            json!({}),
        )
    })
    .await;
    let seen = same(&runs, &[Req::get("/a").host("h"), Req::get("/b").host("h").header("x-envoy-internal", "true")]).await;
    for v in &seen {
        assert_eq!(v["status"], 301, "{v}");
    }
}
