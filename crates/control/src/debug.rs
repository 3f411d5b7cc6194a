//! The control plane's debug API on localhost (Istio's 15014): what each proxy has been sent
//! and has ACKed (`/debug/syncz`), the config generated for one proxy (`/debug/config_dump`),
//! and the current validation diagnostics (`/debug/diagnostics`). `weft proxy-status` and
//! `weft proxy-config` read these. The service graph is here too: `/graph`, `/dotgraph` and
//! `/dotviz` (see `graph`), and the web dashboard at `/` (see `dashboard`).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;

use crate::state::Shared;

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(serde_json::to_vec_pretty(&body).unwrap_or_default())));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

/// `/metrics`: Prometheus text with Istio's metric names.
fn metrics(shared: &Shared) -> Response<Full<Bytes>> {
    use std::fmt::Write as _;
    let mut s = String::new();
    let proxies = shared.proxies.lock().len();
    let _ = writeln!(s, "# TYPE pilot_xds gauge\npilot_xds {proxies}");
    for (name, v) in shared.ca_stats.metrics() {
        let _ = writeln!(s, "# TYPE {name} counter\n{name} {v}");
    }
    let mut r = Response::new(Full::new(Bytes::from(s)));
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"));
    r
}

fn text(body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    r
}

fn query_param<'a>(q: &'a str, key: &str) -> Option<&'a str> {
    q.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
}

pub fn syncz(shared: &Shared) -> serde_json::Value {
    let version = shared.current.borrow().version;
    let proxies = shared.proxies.lock();
    let list: Vec<_> = proxies
        .values()
        .map(|p| {
            // SDS only where the proxy asked for secrets (a gateway with credentialName).
            let types: serde_json::Map<String, serde_json::Value> = ["CDS", "EDS", "LDS", "RDS", "SDS"]
                .iter()
                .filter(|t| **t != "SDS" || p.types.contains_key("SDS"))
                .map(|t| {
                    let s = p.types.get(*t).cloned().unwrap_or_default();
                    (t.to_string(), json!({"state": s.state(), "sent_version": s.sent_version, "acked_version": s.acked_version, "nack": s.nack, "resources": s.resources}))
                })
                .collect();
            json!({"proxy": p.proxy, "node_id": p.node_id, "connection": p.connection, "delta": p.delta, "connected_at": p.connected_at, "types": types})
        })
        .collect();
    drop(proxies);
    let unenforced: Vec<String> =
        shared.current.borrow().diagnostics.iter().filter(|d| d.is_unenforced_security()).map(|d| d.to_string()).collect();
    json!({"version": version, "proxies": list, "unenforced": unenforced})
}

fn config_dump(shared: &Shared, proxy: &str) -> Option<serde_json::Value> {
    let proxies = shared.proxies.lock();
    let p = proxies.values().find(|p| p.proxy == proxy || p.node_id == proxy || p.proxy.split('.').next() == Some(proxy))?;
    let p_name = (p.proxy.clone(), p.node_id.clone());
    let c = p.last_config.clone()?;
    let clusters = p.clusters.clone().unwrap_or(crate::push::Sel::All);
    let vhosts = p.virtual_hosts.clone().unwrap_or(crate::push::Sel::Named(Default::default()));
    drop(proxies);
    let mut out = c.to_json(&clusters, &vhosts);
    out["proxy"] = json!(p_name.0);
    out["node_id"] = json!(p_name.1);
    Some(out)
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "GET only"})));
    }
    let q = req.uri().query().unwrap_or_default().to_string();
    if crate::dashboard::for_browsers(req.uri().path()) {
        let host = req.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        if !crate::dashboard::local_host(host) {
            return Ok(reply(
                StatusCode::FORBIDDEN,
                json!({"error": format!("Host {host:?}: the dashboard answers only to a loopback address or localhost")}),
            ));
        }
    }
    Ok(match req.uri().path() {
        "/ready" => reply(StatusCode::OK, json!({"ready": true})),
        "/api/services" => reply(StatusCode::OK, crate::dashboard::services(&shared.current.borrow().clone())),
        "/api/findings" => reply(StatusCode::OK, crate::dashboard::findings(&shared.current.borrow().clone())),
        path if crate::dashboard::asset(path).is_some() => {
            let (body, content_type) = crate::dashboard::asset(path).unwrap_or_default();
            text(body.to_owned(), content_type)
        }
        "/metrics" => metrics(&shared),
        "/debug/syncz" => reply(StatusCode::OK, syncz(&shared)),
        "/debug/diagnostics" => {
            let state = shared.current.borrow().clone();
            let list: Vec<String> = state.diagnostics.iter().map(|d| d.to_string()).collect();
            reply(StatusCode::OK, json!({"version": state.version, "diagnostics": list}))
        }
        "/graph" | "/dotgraph" | "/dotviz" => {
            let horizon = match query_param(&q, "time_horizon") {
                None => std::time::Duration::from_secs(300),
                Some(h) => match crate::graph::horizon(h) {
                    Some(d) => d,
                    None => {
                        return Ok(reply(
                            StatusCode::BAD_REQUEST,
                            json!({"error": format!("time_horizon {h:?}: give seconds, minutes or hours, like 30s or 5m, up to 1h")}),
                        ))
                    }
                },
            };
            let filter_empty = match query_param(&q, "filter_empty") {
                None | Some("false") => false,
                Some("true") => true,
                Some(other) => {
                    return Ok(reply(StatusCode::BAD_REQUEST, json!({"error": format!("filter_empty {other:?}: true or false")})))
                }
            };
            let prometheus = shared.prometheus.read().clone();
            let g = match prometheus {
                Some(p) => match p.view(horizon, filter_empty).await {
                    Ok(g) => g,
                    Err(e) => return Ok(reply(StatusCode::BAD_GATEWAY, json!({"error": e}))),
                },
                None => shared.graph.view(horizon, filter_empty),
            };
            match req.uri().path() {
                "/graph" => reply(StatusCode::OK, g),
                "/dotgraph" => text(crate::graph::dot(&g), "text/vnd.graphviz"),
                _ => text(crate::graph::svg_page(&g), "text/html; charset=utf-8"),
            }
        }
        "/debug/config_dump" => match query_param(&q, "proxyID") {
            None => reply(StatusCode::BAD_REQUEST, json!({"error": "proxyID is required"})),
            Some(id) => match config_dump(&shared, id) {
                Some(d) => reply(StatusCode::OK, d),
                None => reply(StatusCode::NOT_FOUND, json!({"error": format!("no connected proxy {id:?}")})),
            },
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({"error": "unknown path", "paths": ["/", "/api/services", "/api/findings", "/ready", "/metrics", "/debug/syncz", "/debug/config_dump?proxyID=", "/debug/diagnostics", "/graph", "/dotgraph", "/dotviz"]}),
        ),
    })
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
        });
    }
}
