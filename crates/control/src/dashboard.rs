//! weft's own web dashboard, served by the control plane's localhost debug listener: the page
//! (`/`, with its script and style, compiled in so nothing is fetched from elsewhere at run
//! time) and the two JSON views it reads besides `/graph` and `/debug/syncz`:
//! `/api/services` (each service with its workloads, versions, routes and policies, in plain
//! words) and `/api/findings` (what `weft analyze` says about the config being served).

use serde_json::{json, Value};
use weft_api::networking::{common::StringMatch, destination_rule::TlsMode, virtual_service as vs};
use weft_api::security::MtlsMode;
use weft_api::{Diagnostic, Level};

use crate::model::{host_matches, labels_match, Model, Service};
use crate::state::MeshState;

pub const INDEX_HTML: &str = include_str!("dashboard/index.html");
pub const APP_JS: &str = include_str!("dashboard/app.js");
pub const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// The page's static files by path, with their content types.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some((INDEX_HTML, "text/html; charset=utf-8")),
        "/dashboard/app.js" => Some((APP_JS, "text/javascript; charset=utf-8")),
        "/dashboard/style.css" => Some((STYLE_CSS, "text/css; charset=utf-8")),
        _ => None,
    }
}

/// The paths a browser reads. They answer only requests whose `Host` is a loopback address or
/// `localhost`: a page elsewhere that rebinds its own name to 127.0.0.1 (DNS rebinding) must not
/// read the mesh's config through the user's browser. `/metrics` and `/debug/*` stay open to
/// scrapers and tools that name the control plane by its service name.
pub fn for_browsers(path: &str) -> bool {
    asset(path).is_some() || path.starts_with("/api/") || matches!(path, "/graph" | "/dotgraph" | "/dotviz")
}

/// Whether a `Host` header names this machine: `localhost` or a loopback IP, with or without
/// a port.
pub fn local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `/api/services`.
pub fn services(state: &MeshState) -> Value {
    let model = &state.model;
    let list: Vec<Value> = model.services.iter().map(|s| service(model, s)).collect();
    json!({"version": state.version, "services": list})
}

fn service(model: &Model, s: &Service) -> Value {
    let ports: Vec<Value> = s.ports.iter().map(|p| json!({"name": p.name, "port": p.port, "protocol": p.protocol.as_str()})).collect();
    let mut workloads: Vec<Value> = Vec::new();
    for e in &s.endpoints {
        let (name, namespace) = e.workload.clone().unwrap_or_else(|| (e.address.clone(), s.namespace.clone()));
        if workloads.iter().any(|w| w["name"] == name.as_str() && w["namespace"] == namespace.as_str()) {
            continue;
        }
        workloads.push(json!({
            "name": name,
            "namespace": namespace,
            "address": e.address,
            "version": e.labels.get("version"),
            "service_account": e.service_account,
            "labels": e.labels,
        }));
    }
    let routes: Vec<Value> = model
        .virtual_services
        .iter()
        .filter(|v| v.spec.hosts.iter().any(|h| host_matches(&model.resolve_host(h, &v.namespace), &s.hostname)))
        .map(|v| {
            let gateways = if v.spec.gateways.is_empty() { vec!["mesh".to_owned()] } else { v.spec.gateways.clone() };
            json!({"kind": "VirtualService", "namespace": v.namespace, "name": v.name, "gateways": gateways, "summary": route_lines(&v.spec)})
        })
        .collect();
    let mut policies: Vec<Value> = Vec::new();
    if let Some(dr) = model.destination_rule(&s.hostname, &s.namespace) {
        policies.push(json!({"kind": "DestinationRule", "namespace": dr.namespace, "name": dr.name, "summary": rule_lines(&dr.spec)}));
    }
    for pa in &model.peer_authentications {
        let scope = if pa.namespace == model.mesh.root_namespace && pa.spec.selector.is_none() {
            "the whole mesh"
        } else if pa.namespace != s.namespace {
            continue;
        } else if let Some(sel) = &pa.spec.selector {
            if !s.endpoints.iter().any(|e| labels_match(&sel.match_labels, &e.labels)) {
                continue;
            }
            "the selected workloads"
        } else {
            "the namespace"
        };
        let mut lines = Vec::new();
        if let Some(m) = pa.spec.mtls.filter(|m| m.mode != MtlsMode::Unset) {
            lines.push(format!("mTLS {} for {scope}", mtls_word(m.mode)));
        }
        for (port, m) in &pa.spec.port_level_mtls {
            lines.push(format!("mTLS {} on port {port}", mtls_word(m.mode)));
        }
        if lines.is_empty() {
            lines.push(format!("mTLS inherited by {scope}"));
        }
        policies.push(json!({"kind": "PeerAuthentication", "namespace": pa.namespace, "name": pa.name, "summary": lines}));
    }
    json!({
        "host": s.hostname,
        "name": s.short_name.clone().unwrap_or_else(|| s.hostname.clone()),
        "namespace": s.namespace,
        "vip": s.vip.map(|v| v.to_string()),
        "external": s.external,
        "ports": ports,
        "workloads": workloads,
        "routes": routes,
        "policies": policies,
    })
}

fn mtls_word(m: MtlsMode) -> &'static str {
    match m {
        MtlsMode::Unset => "UNSET",
        MtlsMode::Disable => "DISABLE",
        MtlsMode::Permissive => "PERMISSIVE",
        MtlsMode::Strict => "STRICT",
    }
}

fn string_match(what: &str, m: &StringMatch) -> String {
    match m {
        StringMatch::Exact(v) => format!("{what} = {v:?}"),
        StringMatch::Prefix(v) => format!("{what} starts with {v:?}"),
        StringMatch::Regex(v) => format!("{what} matches /{v}/"),
    }
}

fn destination(d: &vs::Destination) -> String {
    let host = d.host.split('.').next().unwrap_or(&d.host);
    match &d.subset {
        Some(s) => format!("{host} {s}"),
        None => host.to_owned(),
    }
}

fn weighted<'a>(dests: impl Iterator<Item = (&'a vs::Destination, Option<i64>)>) -> String {
    let dests: Vec<_> = dests.collect();
    let single = dests.len() == 1;
    dests
        .into_iter()
        .map(|(d, w)| match w {
            Some(w) if !single => format!("{} {w}%", destination(d)),
            _ => destination(d),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line per rule: its conditions, then what it does.
fn route_lines(spec: &vs::VirtualService) -> Vec<String> {
    let mut out = Vec::new();
    for r in &spec.http {
        let mut when: Vec<String> = Vec::new();
        for m in &r.matches {
            let mut parts = Vec::new();
            if let Some(u) = &m.uri {
                parts.push(string_match("uri", u));
            }
            if let Some(u) = &m.method {
                parts.push(string_match("method", u));
            }
            if let Some(u) = &m.authority {
                parts.push(string_match("authority", u));
            }
            for (k, v) in &m.headers {
                parts.push(string_match(&format!("header {k}"), v));
            }
            for (k, v) in &m.query_params {
                parts.push(string_match(&format!("query {k}"), v));
            }
            if let Some(p) = m.port {
                parts.push(format!("port {p}"));
            }
            if !m.source_labels.is_empty() {
                let l: Vec<String> = m.source_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                parts.push(format!("caller {}", l.join(",")));
            }
            when.push(if parts.is_empty() { "any request".into() } else { parts.join(" and ") });
        }
        let mut what = Vec::new();
        if let Some(f) = &r.fault {
            if let Some(a) = &f.abort {
                let pct = a.percentage.map(|p| p.value).unwrap_or(100.0);
                what.push(format!(
                    "abort {} for {pct}%",
                    a.http_status.map(|s| s.to_string()).or(a.grpc_status.clone()).unwrap_or_default()
                ));
            }
            if let Some(d) = &f.delay {
                let pct = d.percentage.map(|p| p.value).or(d.percent.map(f64::from)).unwrap_or(100.0);
                what.push(format!("delay {:?} for {pct}%", d.fixed_delay.map(|d| d.0).unwrap_or_default()));
            }
        }
        if let Some(d) = &r.direct_response {
            what.push(format!("answer {}", d.status));
        } else if let Some(rd) = &r.redirect {
            what.push(format!("redirect to {}", rd.uri.clone().or(rd.authority.clone()).unwrap_or_default()));
        } else if !r.route.is_empty() {
            what.push(format!("→ {}", weighted(r.route.iter().map(|d| (&d.destination, d.weight)))));
        }
        if let Some(t) = &r.timeout {
            what.push(format!("timeout {:?}", t.0));
        }
        if let Some(m) = &r.mirror {
            what.push(format!("mirror to {}", destination(m)));
        }
        let when = if when.is_empty() { String::new() } else { format!("if {}: ", when.join(" or ")) };
        out.push(format!("{when}{}", what.join("; ")));
    }
    for r in &spec.tcp {
        out.push(format!("TCP → {}", weighted(r.route.iter().map(|d| (&d.destination, d.weight)))));
    }
    for r in &spec.tls {
        out.push(format!("TLS → {}", weighted(r.route.iter().map(|d| (&d.destination, d.weight)))));
    }
    out
}

fn rule_lines(spec: &weft_api::networking::destination_rule::DestinationRule) -> Vec<String> {
    let mut out = Vec::new();
    if !spec.subsets.is_empty() {
        let names: Vec<String> = spec
            .subsets
            .iter()
            .map(|s| {
                let l: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{} ({})", s.name, l.join(","))
            })
            .collect();
        out.push(format!("subsets {}", names.join(", ")));
    }
    if let Some(p) = &spec.traffic_policy {
        if let Some(t) = &p.tls {
            out.push(
                match t.mode {
                    TlsMode::Disable => "calls in plaintext (tls DISABLE)",
                    TlsMode::Simple => "calls with TLS (tls SIMPLE)",
                    TlsMode::Mutual => "calls with TLS and a client certificate (tls MUTUAL)",
                    TlsMode::IstioMutual => "calls with mesh mTLS (tls ISTIO_MUTUAL)",
                }
                .to_owned(),
            );
        }
        if p.load_balancer.is_some() {
            out.push("load balancing set".into());
        }
        if p.connection_pool.is_some() {
            out.push("connection limits (circuit breaker)".into());
        }
        if p.outlier_detection.is_some() {
            out.push("outlier detection ejects failing endpoints".into());
        }
    }
    if out.is_empty() {
        out.push("no traffic policy".into());
    }
    out
}

/// `/api/findings`.
pub fn findings(state: &MeshState) -> Value {
    let list: Vec<Value> = state.findings.iter().map(finding).collect();
    json!({"version": state.version, "findings": list})
}

fn finding(d: &Diagnostic) -> Value {
    json!({
        "level": if d.level == Level::Error { "error" } else { "warning" },
        "code": d.code,
        "resource": d.resource,
        "file": d.file,
        "line": d.line,
        "field_path": d.field_path,
        "message": d.message,
    })
}

#[cfg(test)]
mod tests {
    use super::local_host;

    #[test]
    fn only_loopback_hosts_reach_the_dashboard() {
        for ok in ["127.0.0.1:15014", "localhost:15014", "LOCALHOST", "[::1]:15014", "127.8.0.2"] {
            assert!(local_host(ok), "{ok}");
        }
        for bad in ["", "evil.example:15014", "10.0.0.1:15014", "localhost.evil.example", "[::2]:1"] {
            assert!(!local_host(bad), "{bad}");
        }
    }
}
