//! The admin interface on the bootstrap's `admin.address`: readiness, stats (text and
//! Prometheus), config dump, clusters, log level and shutdown, with Envoy's paths.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::body::{self, Body};
use crate::config::Config;
use crate::drain::Drain;
use crate::server::Shared;

/// Replaces the process log filter with `tracing` directives (`info,weft_proxy::upstream=debug`),
/// for `POST /logging`; returns an error text when invalid.
pub type LogLevelSetter = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

fn reply(status: StatusCode, ctype: &'static str, text: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut r = Response::new(body::full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    r
}

fn query_map(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, drain: Drain) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = drain.signaled() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(req, &shared)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn handle(req: Request<Incoming>, s: &Shared) -> Response<Body> {
    let path = req.uri().path();
    let q = query_map(req.uri().query());
    let post_only =
        matches!(path, "/quitquitquit" | "/logging" | "/healthcheck/fail" | "/healthcheck/ok" | "/drain_listeners" | "/reset_counters");
    if post_only && req.method() != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", format!("Method {} not allowed, POST required.", req.method()));
    }
    match path {
        "/ready" => {
            let state = state_name(s);
            let code = if state == "LIVE" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            reply(code, "text/plain", format!("{state}\n"))
        }
        "/stats" => {
            let filter = match q.get("filter").map(|f| regex::Regex::new(&percent_decode(f))) {
                Some(Ok(r)) => Some(r),
                Some(Err(e)) => return reply(StatusCode::BAD_REQUEST, "text/plain", format!("Invalid regex: {e}\n")),
                None => None,
            };
            if q.get("format").map(String::as_str) == Some("prometheus") {
                return reply(StatusCode::OK, "text/plain; version=0.0.4", s.store.render_prometheus(filter.as_ref(), q.contains_key("usedonly")));
            }
            if q.get("format").map(String::as_str) == Some("json") {
                let stats: Vec<serde_json::Value> = s
                    .store
                    .snapshot()
                    .into_iter()
                    .filter(|(n, _, _)| filter.as_ref().is_none_or(|f| f.is_match(n)))
                    .map(|(n, v, _)| serde_json::json!({"name": n, "value": v}))
                    .collect();
                return reply(StatusCode::OK, "application/json", serde_json::json!({"stats": stats}).to_string());
            }
            reply(StatusCode::OK, "text/plain", s.store.render_text(filter.as_ref(), q.contains_key("usedonly")))
        }
        "/stats/prometheus" => {
            let filter = match q.get("filter").map(|f| regex::Regex::new(&percent_decode(f))) {
                Some(Ok(r)) => Some(r),
                Some(Err(e)) => return reply(StatusCode::BAD_REQUEST, "text/plain", format!("Invalid regex: {e}\n")),
                None => None,
            };
            let mut text = s.store.render_prometheus(filter.as_ref(), q.contains_key("usedonly"));
            // Istio's standard metrics, for a mesh proxy (not filtered: Istio's are not stats).
            if let Some(mesh) = s.istio.as_ref().filter(|_| filter.is_none()) {
                text.push_str(&mesh.render());
            }
            // The DNS proxy's counters, under the names Istio's agent exports them by.
            if let Some(dns) = s.dynamic.as_ref().and_then(|d| d.dns()).filter(|_| filter.is_none()) {
                for (name, v) in dns.stat_lines() {
                    let name = format!("istio_agent_{}", name.replace('.', "_"));
                    let _ = write!(text, "# TYPE {name} counter\n{name} {v}\n");
                }
            }
            reply(StatusCode::OK, "text/plain; version=0.0.4", text)
        }
        "/config_dump" => reply(StatusCode::OK, "application/json", config_dump(s).to_string()),
        "/certs" => reply(StatusCode::OK, "application/json", crate::tls::secrets::certs_json().to_string()),
        "/blocked" => reply(StatusCode::OK, "application/json", crate::blocked::json().to_string()),
        "/clusters" => {
            if q.get("format").map(String::as_str) == Some("json") {
                reply(StatusCode::OK, "application/json", clusters_json(s).to_string())
            } else {
                reply(StatusCode::OK, "text/plain", clusters_text(s))
            }
        }
        "/listeners" => {
            let mut out = String::new();
            for l in s.listeners.all.load().iter() {
                let _ = writeln!(out, "{}::{}", l.cfg.name, l.cfg.address);
            }
            reply(StatusCode::OK, "text/plain", out)
        }
        "/server_info" => reply(
            StatusCode::OK,
            "application/json",
            serde_json::json!({
                "version": format!("weft/{}", env!("CARGO_PKG_VERSION")),
                "state": state_name(s),
                "node": {"id": s.config.node_id, "cluster": s.config.node_cluster, "locality": s.config.node_locality.as_ref().map(|l| serde_json::json!({"region": l.region, "zone": l.zone, "sub_zone": l.sub_zone}))},
                "command_line_options": {"concurrency": s.concurrency},
            })
            .to_string(),
        ),
        "/quitquitquit" => {
            s.request_shutdown();
            reply(StatusCode::OK, "text/plain", "OK\n")
        }
        "/logging" => logging(s, req.uri().query()),
        "/reset_counters" => {
            s.store.reset_counters();
            reply(StatusCode::OK, "text/plain", "OK\n")
        }
        "/healthcheck/fail" | "/healthcheck/ok" => {
            let failing = path == "/healthcheck/fail";
            s.drain.set_failing_health_checks(failing);
            s.store.set_failing_health_checks(failing);
            tracing::info!(failing, "health checks {}", if failing { "fail" } else { "pass" });
            reply(StatusCode::OK, "text/plain", "OK\n")
        }
        "/drain_listeners" => drain_listeners(s, &q),
        "/" | "/help" => reply(StatusCode::OK, "text/plain", help_text()),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "invalid path. admin commands are listed at /help\n"),
    }
}

/// Every endpoint weft's admin serves, in Envoy's `/help` layout: `(POST)` marks the ones that
/// change state, and the query parameters weft takes are listed under each.
/// (path, POST only, what it does, its query parameters and what each does).
type HelpEntry = (&'static str, bool, &'static str, &'static [(&'static str, &'static str)]);

const HELP: &[HelpEntry] = &[
    ("/", false, "Admin home page (this list)", &[]),
    ("/blocked", false, "outbound calls REGISTRY_ONLY refused, by destination (weft)", &[]),
    ("/certs", false, "print certs on machine", &[]),
    ("/clusters", false, "upstream cluster status", &[("format", "File format to use; One of (text, json)")]),
    ("/config_dump", false, "dump current Envoy configs", &[]),
    (
        "/drain_listeners",
        true,
        "drain listeners",
        &[
            ("graceful", "When draining listeners, keep them accepting for --drain-time-s before closing them (connections are told to close at once: weft's drain strategy is immediate)"),
            ("skip_exit", "When draining listeners, drain the connections but never stop the listeners"),
            ("inboundonly", "Drains all inbound listeners (traffic_direction INBOUND)"),
        ],
    ),
    ("/healthcheck/fail", true, "cause the server to fail health checks", &[]),
    ("/healthcheck/ok", true, "cause the server to pass health checks", &[]),
    ("/help", false, "print out list of admin commands", &[]),
    ("/listeners", false, "print listener info", &[]),
    (
        "/logging",
        true,
        "query/change logging levels",
        &[
            ("paths", "Change multiple logging levels by setting to <logger_name1>:<desired_level1>,<logger_name2>:<desired_level2>"),
            ("level", "desired logging level, this will change all loggers's level; One of (trace, debug, info, warning, error, critical, off)"),
            ("<logger_name>", "desired logging level of that one logger"),
        ],
    ),
    ("/quitquitquit", true, "exit the server (after draining for --drain-time-s)", &[]),
    ("/ready", false, "print server state, return 200 if LIVE, otherwise return 503", &[]),
    ("/reset_counters", true, "reset all counters to zero", &[]),
    ("/server_info", false, "print server version/status information", &[]),
    (
        "/stats",
        false,
        "print server stats",
        &[
            ("usedonly", "Only include stats that have been written by system since restart"),
            ("filter", "Regular expression for filtering stats"),
            ("format", "Format to use; One of (text, json, prometheus)"),
        ],
    ),
    (
        "/stats/prometheus",
        false,
        "print server stats in prometheus format",
        &[
            ("usedonly", "Only include stats that have been written by system since restart"),
            ("filter", "Regular expression for filtering stats"),
        ],
    ),
];

/// Envoy's server state: failing health checks reads as DRAINING, as in Envoy.
fn state_name(s: &Shared) -> &'static str {
    if s.is_live() {
        "LIVE"
    } else if s.drain.is_draining() || s.drain.is_failing_health_checks() {
        "DRAINING"
    } else {
        "PRE_INITIALIZING"
    }
}

fn help_text() -> String {
    let mut out = String::from("admin commands are:\n");
    for (path, post, what, params) in HELP {
        let _ = writeln!(out, "  {path}{}: {what}", if *post { " (POST)" } else { "" });
        for (p, d) in *params {
            let _ = writeln!(out, "      {p}: {d}");
        }
    }
    out
}

/// `POST /logging`: with no parameter, every Envoy logger and its level; `level=` sets them
/// all, `<logger>=<level>` one, `paths=<logger>:<level>,…` several. Errors are Envoy's.
fn logging(s: &Shared, query: Option<&str>) -> Response<Body> {
    let usage = "usage: /logging?<name>=<level> (change single level)\n\
                 usage: /logging?paths=name1:level1,name2:level2,... (change multiple levels)\n\
                 usage: /logging?level=<level> (change all levels)\n\
                 levels: trace debug info warning error critical off\n";
    let bad = |e: &str| reply(StatusCode::BAD_REQUEST, "text/plain", format!("error: {e}\n\n{usage}"));
    let params: Vec<(String, String)> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let mut levels = s.log_levels.lock();
    let mut next = levels.clone();
    match params.as_slice() {
        [] => {}
        [_, _, ..] => return bad("invalid number of parameters"),
        [(k, v)] if k == "level" => {
            if next.set_all(v).is_err() {
                return bad("unknown logger level");
            }
        }
        [(k, v)] if k == "paths" => {
            for item in v.split(',').filter(|i| !i.is_empty()) {
                let Some((name, level)) = item.split_once(':') else { return bad("invalid paths") };
                match next.set(name, level) {
                    Ok(true) => {}
                    Ok(false) => return bad("unknown logger name"),
                    Err(_) => return bad("unknown logger level"),
                }
            }
        }
        [(k, v)] => match next.set(k, v) {
            Ok(true) => {}
            Ok(false) => return bad("unknown logger name"),
            Err(_) => return bad("unknown logger level"),
        },
    }
    if let Err(e) = (s.set_log_level)(&next.directives()) {
        return reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("error: {e}\n"));
    }
    *levels = next;
    reply(StatusCode::OK, "text/plain", levels.listing())
}

/// `POST /drain_listeners`, as Envoy does it with the immediate drain strategy: the chosen
/// listeners' connections are told to close at once (HTTP/1 `Connection: close`, HTTP/2
/// GOAWAY); the listeners stop accepting at once, or after `--drain-time-s` with `graceful`,
/// or never with `skip_exit`. `inboundonly` chooses the `INBOUND` ones. Any other parameter is
/// refused rather than ignored.
fn drain_listeners(s: &Shared, q: &HashMap<String, String>) -> Response<Body> {
    if let Some(k) = q.keys().find(|k| !matches!(k.as_str(), "inboundonly" | "graceful" | "skip_exit")) {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            format!("drain_listeners: unknown query parameter {k:?} (weft takes inboundonly, graceful and skip_exit)\n"),
        );
    }
    let inbound_only = q.contains_key("inboundonly");
    let chosen = |rt: &crate::listener::ListenerRuntime| !inbound_only || rt.cfg.inbound;
    for rt in s.listeners.all.load().iter().filter(|rt| chosen(rt)) {
        rt.drain.drain_close();
    }
    let slots: Vec<_> = s.listeners.slots().into_iter().filter(|sl| chosen(&sl.current.load())).collect();
    for sl in &slots {
        sl.current.load().drain.drain_close();
    }
    if q.contains_key("skip_exit") {
        return reply(StatusCode::OK, "text/plain", "OK\n");
    }
    let store = s.store.clone();
    let stop = move || {
        for sl in &slots {
            if sl.close() {
                tracing::info!(listener = %sl.current.load().cfg.name, "listener stopped by /drain_listeners");
                store.manager.listener_stopped.inc();
            }
        }
    };
    if q.contains_key("graceful") {
        let grace = s.drain_time;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            stop();
        });
    } else {
        stop();
    }
    reply(StatusCode::OK, "text/plain", "OK\n")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn config_dump(s: &Shared) -> serde_json::Value {
    let c: &Config = &s.config;
    let dynamic = |t: &str, wrap: fn(&str, &serde_json::Value) -> serde_json::Value| -> Vec<serde_json::Value> {
        match &s.dynamic {
            Some(d) => d.dump(t).iter().map(|(n, v)| wrap(n, v)).collect(),
            None => Vec::new(),
        }
    };
    let sr = c.dump.get("static_resources");
    let listeners: Vec<serde_json::Value> = sr
        .and_then(|s| s.get("listeners"))
        .and_then(|l| l.as_array())
        .map(|a| a.iter().map(|l| serde_json::json!({"listener": l})).collect())
        .unwrap_or_default();
    let clusters: Vec<serde_json::Value> = sr
        .and_then(|s| s.get("clusters"))
        .and_then(|l| l.as_array())
        .map(|a| a.iter().map(|l| serde_json::json!({"cluster": l})).collect())
        .unwrap_or_default();
    serde_json::json!({
        "configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": c.dump},
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "static_clusters": clusters,
             "dynamic_active_clusters": dynamic(weft_xds::proto::CLUSTER, |_, v| serde_json::json!({"cluster": v}))},
            {"@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
             "dynamic_endpoint_configs": dynamic(weft_xds::proto::ENDPOINT, |_, v| serde_json::json!({"endpoint_config": v}))},
            {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "static_listeners": listeners,
             "dynamic_listeners": dynamic(weft_xds::proto::LISTENER, |n, v| serde_json::json!({"name": n, "active_state": {"listener": v}}))},
            {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
             "dynamic_route_configs": dynamic(weft_xds::proto::ROUTE, |_, v| serde_json::json!({"route_config": v}))},
        ]
    })
}

fn clusters_text(s: &Shared) -> String {
    let mut out = String::new();
    for name in s.clusters.names() {
        let Some(c) = s.clusters.get(&name) else { continue };
        let cb = &c.cfg.circuit_breakers;
        let _ = writeln!(out, "{name}::default_priority::max_connections::{}", cb.max_connections);
        let _ = writeln!(out, "{name}::default_priority::max_pending_requests::{}", cb.max_pending_requests);
        let _ = writeln!(out, "{name}::default_priority::max_requests::{}", cb.max_requests);
        let _ = writeln!(out, "{name}::default_priority::max_retries::{}", cb.max_retries);
        let _ = writeln!(out, "{name}::added_via_api::{}", !s.clusters.is_static(&name));
        for h in &c.hosts.load().hosts {
            let a = h.addr;
            use std::sync::atomic::Ordering::Relaxed;
            let _ = writeln!(out, "{name}::{a}::cx_active::{}", h.cx_active.load(Relaxed));
            let _ = writeln!(out, "{name}::{a}::rq_active::{}", h.active_requests.load(Relaxed));
            let _ = writeln!(out, "{name}::{a}::rq_error::{}", h.rq_error.load(Relaxed));
            let _ = writeln!(out, "{name}::{a}::rq_success::{}", h.rq_success.load(Relaxed));
            let _ = writeln!(out, "{name}::{a}::rq_total::{}", h.rq_total.load(Relaxed));
            let _ = writeln!(out, "{name}::{a}::health_flags::{}", h.health_flags());
            let _ = writeln!(out, "{name}::{a}::weight::{}", h.weight);
            let _ = writeln!(out, "{name}::{a}::priority::{}", h.priority);
        }
    }
    out
}

fn clusters_json(s: &Shared) -> serde_json::Value {
    let statuses: Vec<serde_json::Value> = s
        .clusters
        .all()
        .values()
        .map(|c| {
            let hosts: Vec<serde_json::Value> = c
                .hosts
                .load()
                .hosts
                .iter()
                .map(|h| {
                    serde_json::json!({
                        "address": {"socket_address": {"address": h.addr.ip().to_string(), "port_value": h.addr.port()}},
                        "health_status": {
                            "eds_health_status": if h.is_healthy() { "HEALTHY" } else { "UNHEALTHY" },
                            "failed_active_health_check": h.failed_active_hc(),
                            "failed_outlier_check": h.is_ejected(),
                        },
                        "weight": h.weight,
                        "priority": h.priority,
                    })
                })
                .collect();
            serde_json::json!({"name": c.name(), "host_statuses": hosts})
        })
        .collect();
    serde_json::json!({"cluster_statuses": statuses})
}
