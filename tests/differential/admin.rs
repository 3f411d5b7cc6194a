//! The admin endpoints that change state, against Envoy's: `/reset_counters`,
//! `/healthcheck/fail` and `/ok`, `/drain_listeners` with `inboundonly`, `graceful` and
//! `skip_exit`, `/logging`, and `/help` listing what is served. Both proxies run with
//! `--drain-strategy immediate` (weft's only strategy) and a 2 s drain time.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use weft_test_support::{free_port, send, ProxyKind, ProxyProcess, Req, Upstream};

use crate::harness::*;

const DRAIN_ARGS: &[&str] = &["--drain-time-s", "2", "--drain-strategy", "immediate"];

/// Two listeners answering directly: `out` (no direction) on `listen[0]`, `in` (INBOUND) on
/// `listen[1]`; `/up` on `out` goes to the `backend` cluster.
fn bootstrap(p: &Ports, backend: u16) -> Value {
    let vhosts = |name: &str| {
        json!([{"name": name, "domains": ["*"], "routes": [
            {"match": {"prefix": "/up"}, "route": {"cluster": "backend"}},
            direct(json!({"prefix": "/"}), name),
        ]}])
    };
    let mut out = listener("out", p.listen[0], json!([hcm(json!({"name": "out", "virtual_hosts": vhosts("out")}), json!({}))]));
    out["stat_prefix"] = json!("out");
    let mut inb =
        listener("in", p.listen[1], json!([hcm(json!({"name": "in", "virtual_hosts": vhosts("in")}), json!({"stat_prefix": "inbound"}))]));
    inb["stat_prefix"] = json!("in");
    inb["traffic_direction"] = json!("INBOUND");
    json!({
        "admin": admin(p),
        "static_resources": {"listeners": [out, inb], "clusters": [cluster("backend", &[backend], json!({}))]},
    })
}

struct Proxy {
    kind: ProxyKind,
    p: ProxyProcess,
    ports: Ports,
}

impl Proxy {
    async fn start(kind: ProxyKind, backend: u16) -> Proxy {
        let ports = Ports { admin: free_port(), listen: [free_port(), free_port(), free_port(), free_port()] };
        let text = serde_json::to_string_pretty(&bootstrap(&ports, backend)).unwrap_or_default();
        let p = match ProxyProcess::start_with_args(kind, WEFT, &text, ports.admin, DRAIN_ARGS).await {
            Ok(p) => p,
            Err(e) => panic!("{kind} failed to start: {e:#}"),
        };
        Proxy { kind, p, ports }
    }
    async fn admin(&self, method: &str, path: &str) -> (u16, String) {
        match send(&format!("127.0.0.1:{}", self.ports.admin), Req::get(path).method(method)).await {
            Ok(r) => (r.status, r.text()),
            Err(e) => panic!("{}: admin {method} {path}: {e}", self.kind),
        }
    }
    async fn stat(&self, name: &str) -> i64 {
        self.p.stat(name).await
    }
    /// Whether `/stats` lists the stat at all.
    async fn has_stat(&self, name: &str) -> bool {
        self.admin("GET", "/stats").await.1.lines().any(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(": ")))
    }
    async fn keep_alive(&self, i: usize) -> KeepAlive {
        KeepAlive::open(self.ports.listen[i]).await.unwrap_or_else(|| panic!("{}: cannot connect to listener {i}", self.kind))
    }
    /// A request on a new connection: `None` when the connection is refused.
    async fn fresh(&self, i: usize) -> Option<(u16, bool)> {
        let mut k = KeepAlive::open(self.ports.listen[i]).await?;
        k.get("/").await
    }
}

/// One HTTP/1.1 connection kept open between requests.
pub(crate) struct KeepAlive {
    io: BufReader<tokio::net::TcpStream>,
}

impl KeepAlive {
    pub(crate) async fn open(port: u16) -> Option<KeepAlive> {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        Some(KeepAlive { io: BufReader::new(s) })
    }
    /// (status, whether the response said `Connection: close`); `None` when the connection
    /// was closed instead of answered.
    pub(crate) async fn get(&mut self, path: &str) -> Option<(u16, bool)> {
        let req = format!("GET {path} HTTP/1.1\r\nhost: test.local\r\n\r\n");
        self.io.get_mut().write_all(req.as_bytes()).await.ok()?;
        let read = async {
            let mut line = String::new();
            self.io.read_line(&mut line).await.ok()?;
            let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
            let (mut close, mut len) = (false, 0usize);
            loop {
                line.clear();
                self.io.read_line(&mut line).await.ok()?;
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                let (k, v) = l.split_once(':')?;
                match k.to_ascii_lowercase().as_str() {
                    "connection" => close = v.trim().eq_ignore_ascii_case("close"),
                    "content-length" => len = v.trim().parse().ok()?,
                    _ => {}
                }
            }
            let mut body = vec![0; len];
            self.io.read_exact(&mut body).await.ok()?;
            Some((status, close))
        };
        tokio::time::timeout(Duration::from_secs(5), read).await.ok().flatten()
    }
}

#[tokio::test]
async fn reset_counters_zeroes_counters_and_keeps_gauges() {
    let backend = Upstream::start("backend").await;
    let mut seen = Vec::new();
    for kind in [ProxyKind::Envoy, ProxyKind::Weft] {
        let px = Proxy::start(kind, backend.port()).await;
        let mut k = px.keep_alive(0).await;
        for _ in 0..3 {
            assert_eq!(k.get("/up").await, Some((200, false)), "{kind}");
        }
        assert_eq!(k.get("/").await, Some((200, false)), "{kind}");
        assert_eq!(px.stat("cluster.backend.upstream_rq_total").await, 3, "{kind}");
        let get = px.admin("GET", "/reset_counters").await;
        let post = px.admin("POST", "/reset_counters").await;
        let mut stats = serde_json::Map::new();
        for name in [
            "http.ingress.downstream_rq_total",
            "http.ingress.downstream_rq_2xx",
            "http.ingress.downstream_cx_total",
            "cluster.backend.upstream_rq_total",
            "cluster.backend.upstream_rq_200",
            "cluster.backend.upstream_rq_2xx",
            "cluster.backend.upstream_cx_total",
            "listener.out.downstream_cx_total",
            "http.ingress.downstream_cx_active",
            "listener.out.downstream_cx_active",
            "server.concurrency",
        ] {
            stats.insert(name.into(), json!([px.has_stat(name).await, px.stat(name).await]));
        }
        seen.push(json!({"get": get.0, "post": post, "stats": stats}));
    }
    assert_eq!(seen[1], seen[0], "weft and Envoy differ\n--- weft ---\n{:#}\n--- envoy ---\n{:#}", seen[1], seen[0]);
    let e = &seen[0];
    assert_eq!(e["get"], 405);
    assert_eq!(e["post"], json!([200, "OK\n"]));
    assert_eq!(e["stats"]["cluster.backend.upstream_rq_total"], json!([true, 0]));
    assert_eq!(e["stats"]["cluster.backend.upstream_rq_200"], json!([true, 0]), "a counter reset stays listed");
    assert_eq!(e["stats"]["http.ingress.downstream_cx_active"], json!([true, 1]), "gauges are untouched");
    assert_eq!(e["stats"]["listener.out.downstream_cx_active"], json!([true, 1]));
}

#[tokio::test]
async fn healthcheck_fail_turns_ready_and_connections_like_envoy() {
    let backend = Upstream::start("backend").await;
    let mut seen = Vec::new();
    for kind in [ProxyKind::Envoy, ProxyKind::Weft] {
        let px = Proxy::start(kind, backend.port()).await;
        let mut k = px.keep_alive(0).await;
        let before = k.get("/").await;
        let get = px.admin("GET", "/healthcheck/fail").await.0;
        let fail = px.admin("POST", "/healthcheck/fail").await;
        let ready_failing = px.admin("GET", "/ready").await;
        let live_failing = (px.stat("server.live").await, px.stat("server.state").await);
        let info_failing = px.p.admin_get("/server_info").await.echo()["state"].clone();
        let on_kept = k.get("/").await;
        let on_new = px.fresh(1).await;
        let ok = px.admin("POST", "/healthcheck/ok").await;
        let ready_ok = px.admin("GET", "/ready").await;
        let live_ok = (px.stat("server.live").await, px.stat("server.state").await);
        let after = px.fresh(0).await;
        seen.push(json!({
            "before": before, "get": get, "fail": fail, "ready_failing": ready_failing, "live_failing": live_failing,
            "server_info_failing": info_failing, "kept_connection": on_kept, "new_connection": on_new,
            "ok": ok, "ready_ok": ready_ok, "live_ok": live_ok, "after": after,
        }));
    }
    assert_eq!(seen[1], seen[0], "weft and Envoy differ\n--- weft ---\n{:#}\n--- envoy ---\n{:#}", seen[1], seen[0]);
    let e = &seen[0];
    assert_eq!(e["fail"], json!([200, "OK\n"]));
    assert_eq!(e["ready_failing"], json!([503, "DRAINING\n"]));
    assert_eq!(e["live_failing"], json!([0, 0]), "server.live drops, server.state stays LIVE");
    assert_eq!(e["kept_connection"], json!([200, true]), "responses close their connection while failing");
    assert_eq!(e["ready_ok"], json!([200, "LIVE\n"]));
    assert_eq!(e["after"], json!([200, false]));
}

/// What a caller sees after `POST /drain_listeners<query>`: on connections opened before,
/// on new ones, and after the drain time.
async fn drain_outcome(kind: ProxyKind, backend: u16, query: &str) -> Value {
    let px = Proxy::start(kind, backend).await;
    let mut kept = [px.keep_alive(0).await, px.keep_alive(1).await];
    for k in kept.iter_mut() {
        assert_eq!(k.get("/").await, Some((200, false)), "{kind}");
    }
    let post = px.admin("POST", &format!("/drain_listeners{query}")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let [k0, k1] = &mut kept;
    let during = json!({
        "kept": [k0.get("/").await, k1.get("/").await],
        "new": [px.fresh(0).await, px.fresh(1).await],
        "ready": px.admin("GET", "/ready").await.0,
        "stopped": px.stat("listener_manager.listener_stopped").await,
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = json!({
        "new": [px.fresh(0).await, px.fresh(1).await],
        "stopped": px.stat("listener_manager.listener_stopped").await,
    });
    json!({"post": post, "during": during, "after": after})
}

#[tokio::test]
async fn drain_listeners_with_each_parameter_like_envoy() {
    let backend = Upstream::start("backend").await;
    let mut outcomes = serde_json::Map::new();
    for query in ["", "?inboundonly", "?graceful", "?graceful&skip_exit", "?inboundonly&graceful"] {
        let e = drain_outcome(ProxyKind::Envoy, backend.port(), query).await;
        let w = drain_outcome(ProxyKind::Weft, backend.port(), query).await;
        assert_eq!(w, e, "drain_listeners{query}: weft and Envoy differ\n--- weft ---\n{w:#}\n--- envoy ---\n{e:#}");
        outcomes.insert(query.into(), e);
    }
    let o = Value::Object(outcomes);
    // Envoy's behaviour, as measured: connections are told to close at once; listeners stop at
    // once, after the drain time with `graceful`, never with `skip_exit`.
    assert_eq!(o[""]["during"], json!({"kept": [[200, true], [200, true]], "new": [null, null], "ready": 200, "stopped": 2}));
    assert_eq!(o["?inboundonly"]["during"]["kept"], json!([[200, false], [200, true]]));
    assert_eq!(o["?inboundonly"]["during"]["new"], json!([[200, false], null]));
    assert_eq!(o["?graceful"]["during"]["new"], json!([[200, true], [200, true]]));
    assert_eq!(o["?graceful"]["after"], json!({"new": [null, null], "stopped": 2}));
    assert_eq!(o["?graceful&skip_exit"]["after"], json!({"new": [[200, true], [200, true]], "stopped": 0}));
    assert_eq!(o["?inboundonly&graceful"]["after"], json!({"new": [[200, false], null], "stopped": 1}));
}

/// Envoy ignores a query parameter it does not know and drains everything; weft refuses it
/// rather than guess (a deliberate difference: nothing a user writes is dropped).
#[tokio::test]
async fn drain_listeners_refuses_a_parameter_it_does_not_know() {
    let backend = Upstream::start("backend").await;
    let px = Proxy::start(ProxyKind::Weft, backend.port()).await;
    let (code, body) = px.admin("POST", "/drain_listeners?inbound_only").await;
    assert_eq!(
        (code, body.as_str()),
        (400, "drain_listeners: unknown query parameter \"inbound_only\" (weft takes inboundonly, graceful and skip_exit)\n")
    );
    assert_eq!(px.fresh(0).await, Some((200, false)), "nothing was drained");
}

#[tokio::test]
async fn logging_lists_and_sets_levels_like_envoy() {
    let backend = Upstream::start("backend").await;
    let mut seen = Vec::new();
    for kind in [ProxyKind::Envoy, ProxyKind::Weft] {
        let px = Proxy::start(kind, backend.port()).await;
        let mut steps = Vec::new();
        for (method, path) in [
            ("GET", "/logging"),
            ("POST", "/logging"),
            ("POST", "/logging?upstream=debug"),
            ("POST", "/logging?bogus=debug"),
            ("POST", "/logging?level=loud"),
            ("POST", "/logging?a=b&c=d"),
            ("POST", "/logging?paths=router:trace,main:error"),
            ("POST", "/logging?paths=bogus:info"),
            ("POST", "/logging?level=info"),
        ] {
            let (code, body) = px.admin(method, path).await;
            // Error texts are compared by their first line (Envoy's usage text follows).
            let body = if code == 200 { body } else { body.lines().next().unwrap_or_default().to_string() };
            steps.push(json!([path, code, body]));
        }
        seen.push(Value::Array(steps));
    }
    assert_eq!(seen[1], seen[0], "weft and Envoy differ\n--- weft ---\n{:#}\n--- envoy ---\n{:#}", seen[1], seen[0]);
    assert_eq!(seen[0][3][2], "error: unknown logger name");
    assert!(seen[0][2][2].as_str().unwrap_or_default().contains("  upstream: debug\n"));
}

/// Every endpoint weft's `/help` lists is served with the method it says (and no other), is one
/// Envoy's admin has, and `/certs` is among them.
#[tokio::test]
async fn help_lists_every_endpoint_weft_serves() {
    let backend = Upstream::start("backend").await;
    let envoy = Proxy::start(ProxyKind::Envoy, backend.port()).await;
    let weft = Proxy::start(ProxyKind::Weft, backend.port()).await;
    let endpoints = |help: &str| -> Vec<(String, bool)> {
        help.lines()
            .filter(|l| l.starts_with("  /"))
            .filter_map(|l| l.trim().split_once(':'))
            .map(|(p, _)| (p.trim_end_matches(" (POST)").to_string(), p.ends_with("(POST)")))
            .collect()
    };
    let ours = endpoints(&weft.admin("GET", "/help").await.1);
    let theirs = endpoints(&envoy.admin("GET", "/help").await.1);
    for must in ["/certs", "/reset_counters", "/drain_listeners", "/healthcheck/fail", "/healthcheck/ok", "/stats/prometheus"] {
        assert!(ours.iter().any(|(p, _)| p == must), "/help omits {must}: {ours:?}");
    }
    // weft's own additions, which Envoy has no counterpart for; they must still answer.
    const WEFT_ONLY: [&str; 1] = ["/blocked"];
    for (path, post) in &ours {
        assert!(
            theirs.contains(&(path.clone(), *post)) || WEFT_ONLY.contains(&path.as_str()),
            "{path} (post: {post}) is not an Envoy admin endpoint: {theirs:?}"
        );
        if *post {
            assert_eq!(weft.admin("GET", path).await.0, 405, "GET {path}");
        } else {
            assert_eq!(weft.admin("GET", path).await.0, 200, "GET {path}");
        }
    }
    assert_eq!(weft.admin("GET", "/nope").await.0, 404);
}
