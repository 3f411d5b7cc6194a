//! The bootstrap's `stats_config` against Envoy's: tag extraction (Envoy's default tags, regex
//! tags with lookahead, fixed-value tags, `use_all_default_tags: false`) shapes
//! `/stats/prometheus`; `stats_matcher` inclusion and exclusion lists decide which stats exist
//! in `/stats` and `/stats/prometheus`. Also the overload manager's global downstream
//! connection limit.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use weft_test_support::{free_port, ProxyKind, ProxyProcess, Req, Upstream};

use crate::admin::KeepAlive;
use crate::harness::*;

/// One HTTP listener (stat prefix `ingress`) routing to `backend`; `stats_config` added.
fn bootstrap(p: &Ports, backend: u16, stats_config: &Value) -> Value {
    let mut b = http_bootstrap(
        p,
        json!([{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/missing"}, "direct_response": {"status": 404}},
            {"match": {"prefix": "/"}, "route": {"cluster": "outbound|9080||reviews.default.svc.cluster.local"}},
        ]}]),
        vec![cluster("outbound|9080||reviews.default.svc.cluster.local", &[backend], json!({}))],
        json!({}),
    );
    b["stats_config"] = stats_config.clone();
    b
}

/// The lines of `/stats/prometheus` whose metric is one of `families` (with their `# TYPE`).
fn families(prom: &str, families: &[&str]) -> Vec<String> {
    prom.lines()
        // weft's admin has no HTTP connection manager stats of its own.
        .filter(|l| !l.contains("=\"admin\""))
        .filter(|l| {
            let name = l.strip_prefix("# TYPE ").unwrap_or(l);
            let name = name.split(['{', ' ']).next().unwrap_or_default();
            families.contains(&name)
        })
        .map(str::to_string)
        .collect()
}

/// Stat names in `/stats` text.
fn stat_names(text: &str) -> BTreeSet<String> {
    text.lines().filter_map(|l| l.split_once(": ").map(|(n, _)| n.to_string())).collect()
}

struct Seen {
    prom: String,
    stats: String,
}

async fn run(kind: ProxyKind, stats_config: &Value) -> Seen {
    let backend = Upstream::start("backend").await;
    let r = start(kind, &|p: &Ports| bootstrap(p, backend.port(), stats_config)).await;
    for path in ["/a", "/b", "/missing"] {
        r.send(Req::get(path)).await;
    }
    Seen { prom: r.proxy.admin_get("/stats/prometheus").await.text(), stats: r.proxy.admin_get("/stats").await.text() }
}

const COMPARED: &[&str] = &[
    "envoy_cluster_default_svc_cluster_local_upstream_rq_total",
    "envoy_cluster_default_svc_cluster_local_upstream_rq",
    "envoy_cluster_default_svc_cluster_local_upstream_rq_xx",
    "envoy_cluster_upstream_rq_total",
    "envoy_cluster_upstream_rq",
    "envoy_cluster_upstream_rq_xx",
    "envoy_http_downstream_rq_total",
    "envoy_http_downstream_rq_xx",
    "envoy_http_ingress_downstream_rq_total",
    "envoy_http_ingress_downstream_rq_xx",
    "envoy_server_live",
];

/// Envoy's default tags: a cluster name with dots is tagged by its first token (the rest stays
/// in the metric name), response codes and classes become labels, and a fixed-value tag is on
/// every metric.
#[tokio::test]
async fn default_tags_and_a_fixed_tag_shape_prometheus_like_envoy() {
    let cfg = json!({"stats_tags": [{"tag_name": "mesh_id", "fixed_value": "cluster.local"}]});
    let e = run(ProxyKind::Envoy, &cfg).await;
    let w = run(ProxyKind::Weft, &cfg).await;
    let (ef, wf) = (families(&e.prom, COMPARED), families(&w.prom, COMPARED));
    assert_eq!(wf, ef, "weft and Envoy differ\n--- weft ---\n{}\n--- envoy ---\n{}", wf.join("\n"), ef.join("\n"));
    assert!(
        ef.contains(
            &"envoy_cluster_default_svc_cluster_local_upstream_rq{envoy_response_code=\"200\",mesh_id=\"cluster.local\",envoy_cluster_name=\"outbound|9080||reviews\"} 2"
                .to_string()
        ),
        "{}",
        ef.join("\n")
    );
    assert!(ef.contains(&"envoy_server_live{mesh_id=\"cluster.local\"} 1".to_string()), "{}", ef.join("\n"));
    assert!(!ef.iter().any(|l| l.contains("upstream_rq_xx{envoy_response_code_class=\"1\"")), "a cluster's classes exist once used");
}

/// Istio's own tags (`use_all_default_tags: false`, a regex with lookahead) and an inclusion
/// list: only included stats exist, in `/stats` and in `/stats/prometheus`.
#[tokio::test]
async fn istio_tags_and_an_inclusion_list_like_envoy() {
    let cfg = json!({
        "use_all_default_tags": false,
        "stats_tags": [
            {"tag_name": "cluster_name", "regex": "^cluster\\.((.+?(\\..+?\\.svc\\.cluster\\.local)?)\\.)"},
            {"tag_name": "http_conn_manager_prefix", "regex": "^http\\.(((?:[_.[:digit:]\\w]*|[_\\[\\]aAbBcCdDeEfF[:digit:]\\w\\:]*))\\.)"},
            {"tag_name": "response_code", "regex": "_rq(_(\\d{3}))$"},
            {"tag_name": "response_code_class", "regex": "_rq(_(\\dxx))$"},
            {"tag_name": "http_conn_manager_listener_prefix", "regex": "^listener(?=\\.).*?\\.http\\.(((?:[_.[:digit:]]*|[_\\[\\]aAbBcCdDeEfF[:digit:]]*))\\.)"},
        ],
        "stats_matcher": {"inclusion_list": {"patterns": [
            {"prefix": "cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq"},
            {"prefix": "http.ingress.downstream_rq"},
            {"safe_regex": {"regex": "server\\.(live|concurrency)"}},
        ]}},
    });
    let e = run(ProxyKind::Envoy, &cfg).await;
    let w = run(ProxyKind::Weft, &cfg).await;
    let (ef, wf) = (families(&e.prom, COMPARED), families(&w.prom, COMPARED));
    assert_eq!(wf, ef, "weft and Envoy differ\n--- weft ---\n{}\n--- envoy ---\n{}", wf.join("\n"), ef.join("\n"));
    assert!(
        ef.contains(
            &"envoy_cluster_upstream_rq{response_code=\"200\",cluster_name=\"outbound|9080||reviews.default.svc.cluster.local\"} 2"
                .to_string()
        ),
        "{}",
        ef.join("\n")
    );
    // Everything weft lists is included, and Envoy lists it too.
    let (en, wn) = (stat_names(&e.stats), stat_names(&w.stats));
    for n in &wn {
        assert!(
            n.starts_with("cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq")
                || n.starts_with("http.ingress.downstream_rq")
                || n == "server.live"
                || n == "server.concurrency",
            "{n} is not in the inclusion list"
        );
        assert!(en.contains(n), "weft lists {n}, Envoy does not");
    }
    for n in ["server.live", "http.ingress.downstream_rq_total", "cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_200"]
    {
        assert!(wn.contains(n), "weft lacks {n}: {wn:?}");
    }
    let wp: BTreeSet<&str> = w.prom.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    let ep: BTreeSet<&str> = e.prom.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    assert!(wp.is_subset(&ep), "weft has metrics Envoy does not: {:?}", wp.difference(&ep).collect::<Vec<_>>());
    assert!(!ep.contains("envoy_server_uptime") && !wp.contains("envoy_server_uptime"));
}

/// An exclusion list removes stats from both outputs.
#[tokio::test]
async fn an_exclusion_list_removes_stats_like_envoy() {
    let cfg = json!({"stats_matcher": {"exclusion_list": {"patterns": [{"prefix": "cluster."}, {"suffix": "xx"}, {"contains": "_cx_"}]}}});
    let e = run(ProxyKind::Envoy, &cfg).await;
    let w = run(ProxyKind::Weft, &cfg).await;
    for (kind, s) in [("envoy", &e), ("weft", &w)] {
        let names = stat_names(&s.stats);
        assert!(!names.iter().any(|n| n.starts_with("cluster.") || n.ends_with("xx") || n.contains("_cx_")), "{kind}: {names:?}");
        assert!(names.contains("http.ingress.downstream_rq_total"), "{kind}");
        assert!(!s.prom.contains("envoy_cluster_upstream") && !s.prom.contains("envoy_http_downstream_rq_xx"), "{kind}");
    }
    let (ef, wf) = (families(&e.prom, COMPARED), families(&w.prom, COMPARED));
    assert_eq!(wf, ef);
}

/// `envoy.resource_monitors.global_downstream_max_connections`: past the limit a new
/// connection is reset and counted in `downstream_global_cx_overflow` on the listener that
/// took it; a listener with `ignore_global_conn_limit` is not counted or limited.
#[tokio::test]
async fn global_downstream_max_connections_like_envoy() {
    let mut seen = Vec::new();
    for kind in [ProxyKind::Envoy, ProxyKind::Weft] {
        let ports = Ports { admin: free_port(), listen: [free_port(), free_port(), free_port(), free_port()] };
        let vh =
            json!({"name": "l", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [direct(json!({"prefix": "/"}), "ok")]}]});
        let mut limited = listener("limited", ports.listen[0], json!([hcm(vh.clone(), json!({}))]));
        limited["stat_prefix"] = json!("limited");
        let mut exempt = listener("exempt", ports.listen[1], json!([hcm(vh, json!({}))]));
        exempt["stat_prefix"] = json!("exempt");
        exempt["ignore_global_conn_limit"] = json!(true);
        exempt["bypass_overload_manager"] = json!(true);
        let cfg = json!({
            "admin": admin(&ports),
            "static_resources": {"listeners": [limited, exempt]},
            "overload_manager": {"resource_monitors": [{
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": 2}}]},
        });
        let text = serde_json::to_string_pretty(&cfg).unwrap_or_default();
        let p = match ProxyProcess::start(kind, WEFT, &text, ports.admin).await {
            Ok(p) => p,
            Err(e) => panic!("{kind}: {e:#}"),
        };
        let mut open = Vec::new();
        for _ in 0..2 {
            let mut k = KeepAlive::open(ports.listen[0]).await.expect("connect");
            assert_eq!(k.get("/").await, Some((200, false)), "{kind}");
            open.push(k);
        }
        let third = match KeepAlive::open(ports.listen[0]).await {
            Some(mut k) => k.get("/").await,
            None => None,
        };
        let mut e1 = KeepAlive::open(ports.listen[1]).await.expect("connect");
        let exempt_reply = e1.get("/").await;
        let overflow =
            (p.stat("listener.limited.downstream_global_cx_overflow").await, p.stat("listener.exempt.downstream_global_cx_overflow").await);
        drop(open);
        // A closed connection frees its place.
        let after = weft_test_support::eventually(std::time::Duration::from_secs(5), "a freed connection slot", || async {
            let mut k = KeepAlive::open(ports.listen[0]).await?;
            k.get("/").await
        })
        .await;
        seen.push(json!({"third": third, "exempt": exempt_reply, "overflow": overflow, "after": after}));
    }
    assert_eq!(seen[1], seen[0], "weft and Envoy differ\n--- weft ---\n{:#}\n--- envoy ---\n{:#}", seen[1], seen[0]);
    assert_eq!(seen[0], json!({"third": null, "exempt": [200, false], "overflow": [1, 0], "after": [200, false]}));
}
