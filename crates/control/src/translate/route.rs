//! Route configurations (RDS): one per outbound HTTP port, a virtual host per service with the
//! service's VirtualService routes, then the catch-all that the outbound traffic policy decides.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use weft_api::networking::{self as net, OutboundMode, StringMatch};
use weft_api::Resource;

use super::{duration, outbound_cluster_name, Scope, PASSTHROUGH};
use crate::model::{labels_match, Service};
use crate::protocol::Protocol;

const DEFAULT_RETRY_ON: &str = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

pub fn outbound(scope: &Scope<'_>, out: &mut super::Generated) {
    let mut ports: BTreeMap<u16, Vec<&Service>> = BTreeMap::new();
    for svc in scope.services() {
        for p in &svc.ports {
            if p.protocol.is_http() || p.protocol == Protocol::Auto {
                ports.entry(p.port).or_default().push(svc);
            }
        }
    }
    for (port, services) in ports {
        let mut used = BTreeSet::new();
        let mut vhosts = Vec::new();
        for svc in services {
            let domains: Vec<String> = domains(svc, port, &scope.node.namespace).into_iter().filter(|d| used.insert(d.clone())).collect();
            if domains.is_empty() {
                continue;
            }
            let routes = routes_for(scope, svc, port);
            vhosts.push(json!({"name": format!("{}:{port}", svc.hostname), "domains": domains, "routes": routes}));
        }
        vhosts.push(catch_all(scope));
        let name = port.to_string();
        super::pb::put(&mut out.routes, name.clone(), &json!({"name": name, "virtual_hosts": vhosts, "validate_clusters": false}));
    }
}

/// The `http_proxy` route configuration behind the HTTP proxy listener: every visible service
/// on every HTTP (or sniffed) port, with the same routes the port's own configuration has, then
/// the same catch-all. As in Istio, a request names its port (`reviews:9080`), so only
/// `host:port` domains are listed — except on port 80, where a bare `reviews` means that port.
///
/// The catch-all under ALLOW_ANY is Istio's `PassthroughCluster`; a request to the proxy port
/// has no original destination to pass through to, so a host outside the registry gets 503.
pub fn http_proxy(scope: &Scope<'_>, out: &mut super::Generated) {
    let mut used = BTreeSet::new();
    let mut vhosts = Vec::new();
    for svc in scope.services() {
        for p in svc.ports.iter().filter(|p| p.protocol.is_http() || p.protocol == Protocol::Auto) {
            let domains: Vec<String> = domains(svc, p.port, &scope.node.namespace)
                .into_iter()
                .filter(|d| p.port == 80 || d.contains(':'))
                .filter(|d| used.insert(d.clone()))
                .collect();
            if domains.is_empty() {
                continue;
            }
            let routes = routes_for(scope, svc, p.port);
            vhosts.push(json!({"name": format!("{}:{}", svc.hostname, p.port), "domains": domains, "routes": routes}));
        }
    }
    vhosts.push(catch_all(scope));
    let name = super::HTTP_PROXY_ROUTE;
    super::pb::put(&mut out.routes, name.into(), &json!({"name": name, "virtual_hosts": vhosts, "validate_clusters": false}));
}

/// Where a request for a host no service claims goes: by the outbound traffic policy, Istio's
/// `allow_any` (PassthroughCluster) or `block_all` (502).
fn catch_all(scope: &Scope<'_>) -> Value {
    match scope.outbound {
        OutboundMode::AllowAny => json!({"name": "allow_any", "domains": ["*"], "routes": [
            {"name": "allow_any", "match": {"prefix": "/"}, "route": {"cluster": PASSTHROUGH, "timeout": "0s"}}]}),
        OutboundMode::RegistryOnly => json!({"name": "block_all", "domains": ["*"], "routes": [
            {"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}}]}),
    }
}

/// The names a caller may use for `svc`: Istio's list (FQDN, `name.ns.svc`, `name.ns`, the short
/// name from the same namespace, the VIP), each with and without `:port` so matching does not
/// depend on `ignore_port_in_host_matching`.
pub fn domains(svc: &Service, port: u16, proxy_ns: &str) -> Vec<String> {
    let mut names = vec![svc.hostname.clone()];
    if let Some(short) = &svc.short_name {
        names.push(format!("{short}.{}.svc", svc.namespace));
        names.push(format!("{short}.{}", svc.namespace));
        if svc.namespace == proxy_ns {
            names.push(short.clone());
        }
    }
    if let Some(vip) = svc.vip {
        names.push(vip.to_string());
    }
    let mut out = Vec::new();
    for n in names {
        out.push(format!("{n}:{port}"));
        out.push(n);
    }
    out
}

fn routes_for(scope: &Scope<'_>, svc: &Service, port: u16) -> Vec<Value> {
    let hash = hash_policy(scope, &svc.hostname, port);
    let Some(vs) = scope.virtual_service(&svc.hostname) else {
        let mut action =
            json!({"cluster": outbound_cluster_name(port, "", &svc.hostname), "timeout": "0s", "retry_policy": default_retry()});
        if let Some(h) = &hash {
            action["hash_policy"] = h.clone();
        }
        return vec![json!({"name": "default", "match": {"prefix": "/"}, "route": action})];
    };
    vs_routes(scope, vs, port, Bound::Mesh, hash.as_ref())
}

/// What a VirtualService's routes are being built for: sidecars (`mesh`) or one gateway.
#[derive(Debug, Clone, Copy)]
pub enum Bound<'a> {
    Mesh,
    Gateway { namespace: &'a str, name: &'a str },
}

impl Bound<'_> {
    /// Whether a `gateways:` list (of a VirtualService in `vs_ns`, or of one of its matches)
    /// names this. An empty list means the mesh.
    pub fn named_in(&self, refs: &[String], vs_ns: &str) -> bool {
        match self {
            Bound::Mesh => refs.is_empty() || refs.iter().any(|g| g == "mesh"),
            Bound::Gateway { namespace, name } => refs.iter().any(|g| match g.split_once('/') {
                Some((ns, n)) => ns == *namespace && n == *name,
                None => g == name && vs_ns == *namespace,
            }),
        }
    }

    /// Whether a route match with its own `gateways:` list applies here; an empty list means
    /// wherever its VirtualService applies.
    pub fn admits(&self, match_gateways: &[String], vs_ns: &str) -> bool {
        match_gateways.is_empty() || self.named_in(match_gateways, vs_ns)
    }
}

/// The routes of `vs` for traffic on `port`, in order, for `bound`.
pub fn vs_routes(scope: &Scope<'_>, vs: &Resource<net::VirtualService>, port: u16, bound: Bound<'_>, hash: Option<&Value>) -> Vec<Value> {
    let mut routes = Vec::new();
    for r in &vs.spec.http {
        let matches: Vec<&net::HttpMatchRequest> =
            r.matches.iter().filter(|m| match_applies(scope, m, port, bound, &vs.namespace)).collect();
        if !r.matches.is_empty() && matches.is_empty() {
            continue;
        }
        let mut base = action(scope, r, &vs.namespace, port, hash);
        // Which VirtualService a route came from, where Istio writes it (istioctl's
        // `proxy-config routes` VIRTUAL SERVICE column reads it).
        base["metadata"] = json!({"filter_metadata": {"istio": {
            "config": format!("/apis/networking.istio.io/v1/namespaces/{}/virtual-service/{}", vs.namespace, vs.name)
        }}});
        let name = r.name.clone().unwrap_or_default();
        if matches.is_empty() {
            let mut e = base.clone();
            e["match"] = json!({"prefix": "/"});
            e["name"] = json!(name);
            routes.push(e);
        }
        for m in matches {
            let mut e = base.clone();
            e["match"] = route_match(m);
            e["name"] = json!(match &m.name {
                Some(mn) if !name.is_empty() => format!("{name}.{mn}"),
                Some(mn) => mn.clone(),
                None => name.clone(),
            });
            routes.push(e);
        }
    }
    routes
}

/// Match conditions Envoy cannot see (port, source labels, source namespace, gateways) are
/// decided here, for this proxy and this port. A match with no `gateways` of its own applies
/// wherever its VirtualService does.
fn match_applies(scope: &Scope<'_>, m: &net::HttpMatchRequest, port: u16, bound: Bound<'_>, vs_ns: &str) -> bool {
    m.port.is_none_or(|p| p == u32::from(port))
        && labels_match(&m.source_labels, &scope.node.labels)
        && m.source_namespace.as_ref().is_none_or(|ns| *ns == scope.node.namespace)
        && bound.admits(&m.gateways, vs_ns)
}

fn string_matcher(sm: &StringMatch) -> Value {
    match sm {
        StringMatch::Exact(s) => json!({"exact": s}),
        StringMatch::Prefix(s) => json!({"prefix": s}),
        StringMatch::Regex(s) => json!({"safe_regex": {"regex": s}}),
    }
}

fn route_match(m: &net::HttpMatchRequest) -> Value {
    let mut out = Map::new();
    match &m.uri {
        Some(StringMatch::Exact(p)) => out.insert("path".into(), json!(p)),
        Some(StringMatch::Prefix(p)) => out.insert("prefix".into(), json!(p)),
        Some(StringMatch::Regex(r)) => out.insert("safe_regex".into(), json!({"regex": r})),
        None => out.insert("prefix".into(), json!("/")),
    };
    if m.ignore_uri_case {
        out.insert("case_sensitive".into(), json!(false));
    }
    let mut headers = Vec::new();
    for (name, sm) in &m.headers {
        headers.push(json!({"name": name, "string_match": string_matcher(sm)}));
    }
    for (name, sm) in &m.without_headers {
        headers.push(json!({"name": name, "string_match": string_matcher(sm), "invert_match": true}));
    }
    for (pseudo, sm) in [(":method", &m.method), (":authority", &m.authority), (":scheme", &m.scheme)] {
        if let Some(sm) = sm {
            headers.push(json!({"name": pseudo, "string_match": string_matcher(sm)}));
        }
    }
    if !headers.is_empty() {
        out.insert("headers".into(), Value::Array(headers));
    }
    let qp: Vec<Value> = m.query_params.iter().map(|(name, sm)| json!({"name": name, "string_match": string_matcher(sm)})).collect();
    if !qp.is_empty() {
        out.insert("query_parameters".into(), Value::Array(qp));
    }
    Value::Object(out)
}

/// Istio's retry policy shape: retry on other hosts than those already tried.
fn retry_policy(retry_on: &str, attempts: i64) -> Value {
    json!({"retry_on": retry_on, "num_retries": attempts, "host_selection_retry_max_attempts": 5,
           "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
               "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}]})
}

fn default_retry() -> Value {
    retry_policy(DEFAULT_RETRY_ON, 2)
}

/// Istio's percentages become Envoy's fractional percents per million.
fn fraction(p: f64) -> Value {
    json!({"numerator": (p * 10_000.0).round() as u64, "denominator": "MILLION"})
}

fn header_ops(target: &mut Value, prefix: &str, ops: &net::HeaderOperations) {
    let mut add = Vec::new();
    for (k, v) in &ops.set {
        add.push(json!({"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}));
    }
    for (k, v) in &ops.add {
        add.push(json!({"header": {"key": k, "value": v}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}));
    }
    if !add.is_empty() {
        target[format!("{prefix}_headers_to_add")] = Value::Array(add);
    }
    if !ops.remove.is_empty() {
        target[format!("{prefix}_headers_to_remove")] = json!(ops.remove);
    }
}

fn headers(target: &mut Value, h: Option<&net::Headers>) {
    if let Some(h) = h {
        if let Some(r) = &h.request {
            header_ops(target, "request", r);
        }
        if let Some(r) = &h.response {
            header_ops(target, "response", r);
        }
    }
}

fn destination_cluster(scope: &Scope<'_>, d: &net::Destination, vs_ns: &str, port: u16) -> String {
    let host = scope.model.resolve_host(&d.host, vs_ns);
    let dport = match d.port {
        Some(p) => p.number as u16,
        None => match scope.model.service(&host) {
            Some(s) if s.ports.len() == 1 => s.ports[0].port,
            _ => port,
        },
    };
    outbound_cluster_name(dport, d.subset.as_deref().unwrap_or(""), &host)
}

fn action(scope: &Scope<'_>, r: &net::HttpRoute, vs_ns: &str, port: u16, hash: Option<&Value>) -> Value {
    let mut e = json!({});
    headers(&mut e, r.headers.as_ref());
    if let Some(rd) = &r.redirect {
        let mut red = Map::new();
        if let Some(u) = &rd.uri {
            red.insert("path_redirect".into(), json!(u));
        }
        if let Some(a) = &rd.authority {
            red.insert("host_redirect".into(), json!(a));
        }
        if let Some(p) = rd.port {
            red.insert("port_redirect".into(), json!(p));
        }
        if let Some(s) = &rd.scheme {
            red.insert("scheme_redirect".into(), json!(s));
        }
        let code = match rd.redirect_code.unwrap_or(301) {
            302 => "FOUND",
            303 => "SEE_OTHER",
            307 => "TEMPORARY_REDIRECT",
            308 => "PERMANENT_REDIRECT",
            _ => "MOVED_PERMANENTLY",
        };
        red.insert("response_code".into(), json!(code));
        e["redirect"] = Value::Object(red);
        return e;
    }
    if let Some(dr) = &r.direct_response {
        let mut d = json!({"status": dr.status});
        if let Some(s) = dr.body.as_ref().and_then(|b| b.string.as_ref()) {
            d["body"] = json!({"inline_string": s});
        }
        e["direct_response"] = d;
        return e;
    }
    let live: Vec<&net::HttpRouteDestination> = r.route.iter().filter(|d| d.weight != Some(0) || r.route.len() == 1).collect();
    let mut a = Map::new();
    if live.len() == 1 {
        a.insert("cluster".into(), json!(destination_cluster(scope, &live[0].destination, vs_ns, port)));
        headers(&mut e, live[0].headers.as_ref());
    } else {
        let clusters: Vec<Value> = live
            .iter()
            .map(|d| {
                let mut c = json!({"name": destination_cluster(scope, &d.destination, vs_ns, port), "weight": d.weight.unwrap_or(0)});
                headers(&mut c, d.headers.as_ref());
                c
            })
            .collect();
        a.insert("weighted_clusters".into(), json!({"clusters": clusters}));
    }
    a.insert("timeout".into(), r.timeout.map(|t| duration(t.0)).unwrap_or(json!("0s")));
    match &r.retries {
        None => {
            a.insert("retry_policy".into(), default_retry());
        }
        Some(rt) if rt.attempts > 0 => {
            let mut on: Vec<String> = Vec::new();
            let mut codes = Vec::new();
            for c in rt.retry_on.as_deref().unwrap_or(DEFAULT_RETRY_ON).split(',').map(str::trim) {
                match c.parse::<u32>() {
                    Ok(code) => codes.push(code),
                    Err(_) => on.push(c.to_string()),
                }
            }
            if !codes.is_empty() && !on.iter().any(|c| c == "retriable-status-codes") {
                on.push("retriable-status-codes".into());
            }
            let mut p = retry_policy(&on.join(","), rt.attempts);
            if !codes.is_empty() {
                p["retriable_status_codes"] = json!(codes);
            }
            if let Some(t) = rt.per_try_timeout {
                p["per_try_timeout"] = duration(t.0);
            }
            a.insert("retry_policy".into(), p);
        }
        Some(_) => {}
    }
    if let Some(rw) = &r.rewrite {
        if let Some(u) = &rw.uri {
            a.insert("prefix_rewrite".into(), json!(u));
        }
        if let Some(au) = &rw.authority {
            a.insert("host_rewrite_literal".into(), json!(au));
        }
        if let Some(rr) = &rw.uri_regex_rewrite {
            a.insert("regex_rewrite".into(), json!({"pattern": {"regex": rr.pattern}, "substitution": rr.rewrite}));
        }
    }
    let mut mirrors = Vec::new();
    if let Some(m) = &r.mirror {
        let pct = r.mirror_percentage.map(|p| p.value).or(r.mirror_percent.map(f64::from)).unwrap_or(100.0);
        if pct > 0.0 {
            mirrors
                .push(json!({"cluster": destination_cluster(scope, m, vs_ns, port), "runtime_fraction": {"default_value": fraction(pct)}}));
        }
    }
    for m in &r.mirrors {
        let pct = m.percentage.map(|p| p.value).unwrap_or(100.0);
        if pct > 0.0 {
            mirrors.push(json!({"cluster": destination_cluster(scope, &m.destination, vs_ns, port), "runtime_fraction": {"default_value": fraction(pct)}}));
        }
    }
    if !mirrors.is_empty() {
        a.insert("request_mirror_policies".into(), Value::Array(mirrors));
    }
    if let Some(h) = hash {
        a.insert("hash_policy".into(), h.clone());
    }
    e["route"] = Value::Object(a);
    if let Some(f) = &r.fault {
        let mut fault = json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"});
        if let Some(d) = &f.delay {
            let pct = d.percentage.map(|p| p.value).or(d.percent.map(f64::from)).unwrap_or(100.0);
            if let Some(fd) = d.fixed_delay {
                fault["delay"] = json!({"fixed_delay": duration(fd.0), "percentage": fraction(pct)});
            }
        }
        if let Some(ab) = &f.abort {
            let pct = ab.percentage.map(|p| p.value).unwrap_or(100.0);
            if let Some(s) = ab.http_status {
                fault["abort"] = json!({"http_status": s, "percentage": fraction(pct)});
            } else if let Some(g) = &ab.grpc_status {
                fault["abort"] = json!({"grpc_status": grpc_code(g), "percentage": fraction(pct)});
            }
        }
        e["typed_per_filter_config"] = json!({"envoy.filters.http.fault": fault});
    }
    e
}

fn grpc_code(name: &str) -> u32 {
    const CODES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    CODES.iter().position(|c| *c == name).map(|i| i as u32).or_else(|| name.parse().ok()).unwrap_or(2)
}

/// Consistent-hash keys from the DestinationRule become the route's hash policy.
pub fn hash_policy(scope: &Scope<'_>, host: &str, port: u16) -> Option<Value> {
    let dr = scope.model.destination_rule(host, &scope.node.namespace)?;
    let pp = super::cluster::port_policy(dr.spec.traffic_policy.as_ref(), port);
    let h = pp.load_balancer?.consistent_hash?;
    let one = if let Some(name) = &h.http_header_name {
        json!({"header": {"header_name": name}})
    } else if let Some(c) = &h.http_cookie {
        let mut cookie = json!({"name": c.name});
        if let Some(p) = &c.path {
            cookie["path"] = json!(p);
        }
        if let Some(t) = c.ttl {
            cookie["ttl"] = duration(t.0);
        }
        json!({"cookie": cookie})
    } else if h.use_source_ip == Some(true) {
        json!({"connection_properties": {"source_ip": true}})
    } else if let Some(q) = &h.http_query_parameter_name {
        json!({"query_parameter": {"name": q}})
    } else {
        return None;
    };
    Some(json!([one]))
}
