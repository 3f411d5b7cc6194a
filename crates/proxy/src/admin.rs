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

/// Sets the process log level (`POST /logging?level=debug`); returns an error text when invalid.
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
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "This operation requires a POST.\n");
    }
    match path {
        "/ready" => {
            if s.is_live() {
                reply(StatusCode::OK, "text/plain", "LIVE\n")
            } else if s.drain.is_draining() {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "DRAINING\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "PRE_INITIALIZING\n")
            }
        }
        "/stats" => {
            if q.get("format").map(String::as_str) == Some("prometheus") {
                return reply(StatusCode::OK, "text/plain; version=0.0.4", s.store.render_prometheus());
            }
            let filter = match q.get("filter").map(|f| regex::Regex::new(&percent_decode(f))) {
                Some(Ok(r)) => Some(r),
                Some(Err(e)) => return reply(StatusCode::BAD_REQUEST, "text/plain", format!("Invalid regex: {e}\n")),
                None => None,
            };
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
        "/stats/prometheus" => reply(StatusCode::OK, "text/plain; version=0.0.4", s.store.render_prometheus()),
        "/config_dump" => reply(StatusCode::OK, "application/json", config_dump(s).to_string()),
        "/certs" => reply(StatusCode::OK, "application/json", crate::tls::secrets::certs_json().to_string()),
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
                "state": if s.is_live() { "LIVE" } else if s.drain.is_draining() { "DRAINING" } else { "PRE_INITIALIZING" },
                "node": {"id": s.config.node_id, "cluster": s.config.node_cluster},
                "command_line_options": {"concurrency": s.concurrency},
            })
            .to_string(),
        ),
        "/quitquitquit" => {
            s.request_shutdown();
            reply(StatusCode::OK, "text/plain", "OK\n")
        }
        "/logging" => {
            let level = q.get("level").cloned().or_else(|| q.iter().find(|(_, v)| !v.is_empty()).map(|(_, v)| v.clone()));
            match level {
                None => reply(StatusCode::OK, "text/plain", "usage: POST /logging?level=<trace|debug|info|warning|error|critical|off>\n"),
                Some(l) => match (s.set_log_level)(&l) {
                    Ok(()) => reply(StatusCode::OK, "text/plain", format!("active loggers:\n  weft: {l}\n")),
                    Err(e) => reply(StatusCode::NOT_FOUND, "text/plain", format!("{e}\n")),
                },
            }
        }
        "/" | "/help" => reply(
            StatusCode::OK,
            "text/plain",
            "admin commands are:\n  /clusters\n  /config_dump\n  /listeners\n  /logging (POST)\n  /quitquitquit (POST)\n  /ready\n  /server_info\n  /stats\n  /stats/prometheus\n",
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "invalid path. admin commands are listed at /help\n"),
    }
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
