//! Istio's semantic checks, beyond what the schema says: regexes compile, weights add up,
//! hosts are not repeated, each route has one action. Paths are serde_path_to_error's, rooted
//! at the document, so the loader can name the line.
//!
//! Where Istio's validation (`pkg/config/validation` and the CRDs' rules) warns, this warns;
//! where it refuses, this refuses. It also reports the Istio fields weft reads but does not act
//! on: a field that only tunes (ignoring it can neither weaken security nor send traffic
//! anywhere the user did not ask) is accepted with a warning (`not_acted_on`); any other is
//! refused by name (`unsupported`, or the `NotImplemented` type at parse time).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use crate::duration::GoDuration;
use crate::load::{Level, Object};
use crate::networking::{self as net, StringMatch};
use crate::security::PeerAuthentication;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub level: Level,
    pub path: String,
    pub message: String,
}

#[derive(Default)]
struct Check {
    problems: Vec<Problem>,
}

impl Check {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { level: Level::Error, path: path.into(), message: message.into() });
    }
    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { level: Level::Warning, path: path.into(), message: message.into() });
    }
    /// A field that only tunes, set in the resource: accepted, with a warning naming it.
    fn not_acted_on(&mut self, path: impl Into<String>, why: &str) {
        let path = path.into();
        let message = format!("{} is accepted, but weft does not act on it yet: {why}", field_name(&path));
        self.warn(path, message);
    }
    /// A field weft reads but does not implement, where ignoring it would change routing or
    /// security: refused by name.
    fn unsupported(&mut self, path: impl Into<String>, why: &str) {
        let path = path.into();
        let message = format!("{} is not supported by weft yet: {why}", field_name(&path));
        self.error(path, message);
    }
}

/// The last field of a path: `exportTo` for `spec.exportTo[1]`.
fn field_name(path: &str) -> &str {
    let last = path.rsplit('.').next().unwrap_or(path);
    last.split('[').next().unwrap_or(last)
}

/// Every problem in `obj`. Any `Level::Error` keeps the resource out of the mesh.
pub fn object(obj: &Object) -> Vec<Problem> {
    let mut c = Check::default();
    match obj {
        Object::VirtualService(r) => virtual_service(&r.spec, &mut c),
        Object::DestinationRule(r) => destination_rule(&r.spec, &mut c),
        Object::ServiceEntry(r) => service_entry(&r.spec, &mut c),
        Object::Gateway(r) => gateway(&r.spec, &mut c),
        Object::Sidecar(r) => sidecar(&r.spec, &mut c),
        Object::WorkloadEntry(r) => workload_entry(&r.spec, "spec", EntryOf::Resource, &mut c),
        Object::PeerAuthentication(r) => peer_authentication(&r.spec, &mut c),
        Object::Service(r) => {
            let mut seen = BTreeSet::new();
            for (i, p) in r.spec.ports.iter().enumerate() {
                port_number(p.port, &format!("spec.ports[{i}].port"), &mut c);
                if !seen.insert(p.port) {
                    c.error(format!("spec.ports[{i}].port"), format!("port {} is listed twice", p.port));
                }
                if r.spec.ports.len() > 1 && p.name.as_deref().unwrap_or_default().is_empty() {
                    c.error(format!("spec.ports[{i}].name"), "is required when a Service has more than one port");
                }
            }
        }
        Object::Endpoints(r) => {
            for (i, s) in r.spec.subsets.iter().enumerate() {
                for (j, a) in s.addresses.iter().enumerate() {
                    ip(&a.ip, &format!("subsets[{i}].addresses[{j}].ip"), &mut c);
                }
            }
        }
        Object::EndpointSlice(r) => {
            for (i, e) in r.spec.endpoints.iter().enumerate() {
                for (j, a) in e.addresses.iter().enumerate() {
                    ip(a, &format!("endpoints[{i}].addresses[{j}]"), &mut c);
                }
            }
        }
    }
    c.problems
}

fn port_number(p: u32, path: &str, c: &mut Check) {
    if !(1..=65535).contains(&p) {
        c.error(path, format!("port {p} is out of range 1-65535"));
    }
}

fn ip(s: &str, path: &str, c: &mut Check) {
    if s.parse::<IpAddr>().is_err() {
        c.error(path, format!("{s:?} is not an IP address"));
    }
}

/// A host as Istio's `ValidateWildcardDomain` allows it: DNS labels, the first of which may be
/// a wildcard (`*`, `*suffix`, `*-suffix`), and a top-level label that is not all digits; or
/// `*` alone. weft also takes an IP address.
fn host(h: &str, path: &str, c: &mut Check) {
    if h == "*" || h.parse::<IpAddr>().is_ok() {
        return;
    }
    let (first, rest) = h.split_once('.').map_or((h, None), |(f, r)| (f, Some(r)));
    let first_ok = match first.strip_prefix('*') {
        Some(w) => w.is_empty() || dns_label(w.strip_prefix('-').unwrap_or(w)),
        None => dns_label(first),
    };
    let labels: Vec<&str> = rest.map(|r| r.split('.').collect()).unwrap_or_default();
    let tld = labels.last().copied().unwrap_or(first);
    let numeric_tld = !tld.is_empty() && tld.bytes().all(|b| b.is_ascii_digit());
    let ok = !h.is_empty() && h.len() <= 255 && first_ok && labels.iter().all(|l| dns_label(l)) && !numeric_tld;
    if !ok {
        c.error(path, format!("{h:?} is not a valid host (a DNS name whose first label may be `*` or `*suffix`, or `*`)"));
    }
}

/// A DNS-1123 label (Istio also takes upper case).
fn dns_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// A host with `*` other than `*` alone or a leading `*.`: Istio warns about these on a
/// ServiceEntry (`*x` matches every host ending in `x`).
fn partial_wildcard(h: &str) -> bool {
    h.contains('*') && h != "*" && !h.starts_with("*.")
}

/// A DNS name without wildcards (Istio's `ValidateFQDN`), for addresses that are resolved.
fn fqdn(h: &str) -> bool {
    !h.contains('*') && h.parse::<IpAddr>().is_err() && {
        let mut probe = Check::default();
        host(h, "", &mut probe);
        probe.problems.is_empty()
    }
}

/// Istio's `ValidateDuration`, for the durations it checks: at least 1ms, in whole ms.
fn duration(d: GoDuration, path: &str, c: &mut Check) {
    if d.0 < Duration::from_millis(1) {
        c.error(path, "must be at least 1ms");
    } else if !d.0.subsec_nanos().is_multiple_of(1_000_000) {
        c.error(path, "only millisecond precision is supported");
    }
}

/// A selector's labels (`matchLabels`, or `labels` on a Sidecar or ServiceEntry) at
/// `{path}.{key}`: no empty keys, no wildcards. An empty selector selects every workload of
/// the namespace, which Istio warns about.
fn selector(labels: &BTreeMap<String, String>, path: &str, key: &str, c: &mut Check) {
    if labels.is_empty() {
        c.warn(path, format!("has no {key}, so it selects every workload in the namespace"));
    }
    for (k, v) in labels {
        if k.is_empty() {
            c.error(format!("{path}.{key}"), "a label key must not be empty");
        } else if k.contains('*') || v.contains('*') {
            c.error(format!("{path}.{key}.{k}"), format!("wildcards are not supported in selectors ({k}={v})"));
        }
    }
}

/// `exportTo`. weft makes every resource visible to every namespace, which is what `*` asks
/// for; any narrower visibility would make the resource apply where it is not exported.
fn export_to(list: &[String], path: &str, c: &mut Check) {
    for (i, e) in list.iter().enumerate() {
        if e != "*" {
            c.unsupported(
                format!("{path}[{i}]"),
                &format!("{e:?}: weft makes every resource visible in every namespace (only \"*\" is accepted)"),
            );
        }
    }
}

/// Istio's port protocols (`protocol.Parse`), case-insensitive.
fn protocol_known(p: &str) -> bool {
    const KNOWN: &[&str] = &["tcp", "udp", "grpc", "grpc-web", "http", "http_proxy", "http2", "https", "tls", "mongo", "redis", "mysql"];
    KNOWN.contains(&p.to_ascii_lowercase().as_str())
}

fn protocol_is_http_or_tls(p: &str) -> bool {
    ["http", "http2", "http_proxy", "grpc", "grpc-web", "https", "tls"].contains(&p.to_ascii_lowercase().as_str())
}

fn string_match(m: &StringMatch, path: &str, c: &mut Check) {
    match m {
        StringMatch::Regex(r) => regex(r, &format!("{path}.regex"), c),
        StringMatch::Exact(_) | StringMatch::Prefix(_) => {}
    }
}

fn regex(r: &str, path: &str, c: &mut Check) {
    if let Err(e) = regex::Regex::new(r) {
        let first = e.to_string().lines().last().unwrap_or_default().trim().to_string();
        c.error(path, format!("invalid regular expression {r:?}: {first}"));
    }
}

fn percent(p: f64, path: &str, c: &mut Check) {
    if !(0.0..=100.0).contains(&p) {
        c.error(path, format!("percentage {p} is outside 0-100"));
    }
}

fn virtual_service(vs: &net::VirtualService, c: &mut Check) {
    if vs.hosts.is_empty() {
        // Istio takes a VirtualService without hosts as a delegate: it applies only through
        // another one's `delegate`, which weft refuses, so here it applies to nothing.
        for (f, set) in [("gateways", !vs.gateways.is_empty()), ("tls", !vs.tls.is_empty()), ("tcp", !vs.tcp.is_empty())] {
            if set {
                c.error(format!("spec.{f}"), format!("a VirtualService without hosts is a delegate, which must not have {f}"));
            }
        }
        c.warn(
            "spec.hosts",
            "no hosts: Istio uses this as a delegate of another VirtualService (`delegate`, not supported by weft yet); it has no effect",
        );
    }
    export_to(&vs.export_to, "spec.exportTo", c);
    let mut seen = BTreeSet::new();
    for (i, h) in vs.hosts.iter().enumerate() {
        let p = format!("spec.hosts[{i}]");
        host(h, &p, c);
        if !seen.insert(h.to_ascii_lowercase()) {
            c.error(p, format!("duplicate host {h:?}"));
        } else if h == "*" && (vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")) {
            c.error(p, "the wildcard host `*` is only allowed for VirtualServices bound to gateways, not the mesh");
        }
    }
    for (i, r) in vs.http.iter().enumerate() {
        http_route(r, &format!("spec.http[{i}]"), c);
    }
    for (i, r) in vs.tcp.iter().enumerate() {
        l4_route(&r.route, &format!("spec.tcp[{i}]"), c);
        for (j, m) in r.matches.iter().enumerate() {
            destination_subnets(&m.destination_subnets, &format!("spec.tcp[{i}].match[{j}].destinationSubnets"), c);
        }
    }
    for (i, r) in vs.tls.iter().enumerate() {
        l4_route(&r.route, &format!("spec.tls[{i}]"), c);
        if r.matches.is_empty() {
            c.error(format!("spec.tls[{i}].match"), "a TLS route needs at least one match with sniHosts");
        }
        for (j, m) in r.matches.iter().enumerate() {
            if m.sni_hosts.is_empty() {
                c.error(format!("spec.tls[{i}].match[{j}].sniHosts"), "is required");
            }
            destination_subnets(&m.destination_subnets, &format!("spec.tls[{i}].match[{j}].destinationSubnets"), c);
        }
    }
}

/// An L4 match on the destination address. Refused: weft does not match on it yet, and
/// ignoring the condition would route traffic to other addresses the same way.
fn destination_subnets(subnets: &[String], path: &str, c: &mut Check) {
    for (k, s) in subnets.iter().enumerate() {
        cidr(s, &format!("{path}[{k}]"), c);
    }
    if !subnets.is_empty() {
        c.unsupported(path, "the route would also apply to traffic for other addresses");
    }
}

fn cidr(s: &str, path: &str, c: &mut Check) {
    if s.parse::<ipnet::IpNet>().is_err() && s.parse::<IpAddr>().is_err() {
        c.error(path, format!("{s:?} is not an IP address or CIDR range"));
    }
}

fn http_route(r: &net::HttpRoute, path: &str, c: &mut Check) {
    let actions = [!r.route.is_empty(), r.redirect.is_some(), r.direct_response.is_some()].iter().filter(|x| **x).count();
    if actions == 0 {
        c.error(format!("{path}.route"), "one of route, redirect or directResponse is required");
    } else if actions > 1 {
        c.error(path, "route, redirect and directResponse are mutually exclusive");
    }
    for (j, m) in r.matches.iter().enumerate() {
        let mp = format!("{path}.match[{j}]");
        for (f, sm) in [("uri", &m.uri), ("scheme", &m.scheme), ("method", &m.method), ("authority", &m.authority)] {
            if let Some(sm) = sm {
                string_match(sm, &format!("{mp}.{f}"), c);
            }
        }
        for (f, map) in [("headers", &m.headers), ("withoutHeaders", &m.without_headers), ("queryParams", &m.query_params)] {
            for (k, sm) in map {
                string_match(sm, &format!("{mp}.{f}.{k}"), c);
            }
        }
        if let Some(p) = m.port {
            port_number(p, &format!("{mp}.port"), c);
        }
    }
    destinations(r.route.iter().map(|d| (&d.destination, d.weight)), &format!("{path}.route"), c);
    if let Some(rw) = &r.rewrite {
        if let Some(rr) = &rw.uri_regex_rewrite {
            regex(&rr.pattern, &format!("{path}.rewrite.uriRegexRewrite.match"), c);
            if rw.uri.is_some() {
                c.error(format!("{path}.rewrite"), "uri and uriRegexRewrite are mutually exclusive");
            }
        }
    }
    if let Some(rd) = &r.redirect {
        if let Some(code) = rd.redirect_code {
            if ![301, 302, 303, 307, 308].contains(&code) {
                c.error(format!("{path}.redirect.redirectCode"), format!("{code} is not a redirect status (301, 302, 303, 307, 308)"));
            }
        }
    }
    if let Some(d) = &r.direct_response {
        if !(200..=599).contains(&d.status) {
            c.error(format!("{path}.directResponse.status"), format!("{} is not an HTTP status", d.status));
        }
    }
    if let Some(rt) = &r.retries {
        if rt.attempts < 0 {
            c.error(format!("{path}.retries.attempts"), "cannot be negative");
        }
        // Which endpoint of the same destination a retry picks, and when: tuning only.
        if rt.retry_remote_localities.is_some() {
            c.not_acted_on(format!("{path}.retries.retryRemoteLocalities"), "weft has no locality-aware load balancing");
        }
        if rt.retry_ignore_previous_hosts.is_some() {
            c.not_acted_on(format!("{path}.retries.retryIgnorePreviousHosts"), "it only affects which endpoint a retry picks");
        }
        if let Some(b) = rt.backoff {
            duration(b, &format!("{path}.retries.backoff"), c);
            c.not_acted_on(format!("{path}.retries.backoff"), "the default retry backoff applies");
        }
        if let Some(on) = &rt.retry_on {
            const KNOWN: &[&str] = &[
                "5xx",
                "gateway-error",
                "reset",
                "reset-before-request",
                "connect-failure",
                "retriable-4xx",
                "refused-stream",
                "retriable-status-codes",
                "retriable-headers",
                "envoy-ratelimited",
                "http3-post-connect-failure",
                "cancelled",
                "deadline-exceeded",
                "internal",
                "resource-exhausted",
                "unavailable",
            ];
            for p in on.split(',').map(str::trim) {
                if !KNOWN.contains(&p) && p.parse::<u16>().is_err() {
                    c.error(format!("{path}.retries.retryOn"), format!("unknown retry condition {p:?}"));
                }
            }
        }
    }
    if let Some(f) = &r.fault {
        if let Some(d) = &f.delay {
            if d.fixed_delay.is_none() {
                c.error(format!("{path}.fault.delay.fixedDelay"), "is required");
            }
            if let Some(p) = d.percentage {
                percent(p.value, &format!("{path}.fault.delay.percentage.value"), c);
            }
        }
        if let Some(a) = &f.abort {
            match (a.http_status, &a.grpc_status) {
                (Some(s), None) if !(200..=599).contains(&s) => {
                    c.error(format!("{path}.fault.abort.httpStatus"), format!("{s} is not an HTTP status"));
                }
                (None, None) => c.error(format!("{path}.fault.abort"), "httpStatus or grpcStatus is required"),
                (Some(_), Some(_)) => c.error(format!("{path}.fault.abort"), "httpStatus and grpcStatus are mutually exclusive"),
                _ => {}
            }
            if let Some(p) = a.percentage {
                percent(p.value, &format!("{path}.fault.abort.percentage.value"), c);
            }
        }
    }
    if let Some(m) = &r.mirror {
        host(&m.host, &format!("{path}.mirror.host"), c);
        if !r.mirrors.is_empty() {
            c.error(format!("{path}.mirrors"), "mirror and mirrors are mutually exclusive");
        }
    }
    if let Some(p) = r.mirror_percentage {
        percent(p.value, &format!("{path}.mirrorPercentage.value"), c);
    }
    for (j, m) in r.mirrors.iter().enumerate() {
        host(&m.destination.host, &format!("{path}.mirrors[{j}].destination.host"), c);
    }
}

fn l4_route(route: &[net::RouteDestination], path: &str, c: &mut Check) {
    if route.is_empty() {
        c.error(format!("{path}.route"), "at least one destination is required");
    }
    destinations(route.iter().map(|d| (&d.destination, d.weight)), &format!("{path}.route"), c);
}

fn destinations<'a>(ds: impl Iterator<Item = (&'a net::Destination, Option<i64>)>, path: &str, c: &mut Check) {
    let ds: Vec<_> = ds.collect();
    let mut sum = 0i64;
    for (k, (d, w)) in ds.iter().enumerate() {
        let p = format!("{path}[{k}]");
        if d.host.is_empty() {
            c.error(format!("{p}.destination.host"), "is required");
        } else {
            host(&d.host, &format!("{p}.destination.host"), c);
        }
        if let Some(port) = d.port {
            port_number(port.number, &format!("{p}.destination.port.number"), c);
        }
        if let Some(w) = w {
            if !(0..=100).contains(w) {
                c.error(format!("{p}.weight"), format!("weight {w} is outside 0-100"));
            }
            sum += w;
        }
    }
    if ds.len() > 1 && sum != 100 {
        c.error(path, format!("destination weights add up to {sum}, not 100"));
    }
}

fn destination_rule(dr: &net::DestinationRule, c: &mut Check) {
    if dr.host.is_empty() {
        c.error("spec.host", "is required");
    } else {
        host(&dr.host, "spec.host", c);
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy(tp, "spec.trafficPolicy", c);
    }
    let mut names = BTreeSet::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        if s.name.is_empty() {
            c.error(format!("spec.subsets[{i}].name"), "is required");
        } else if !names.insert(s.name.as_str()) {
            c.error(format!("spec.subsets[{i}].name"), format!("duplicate subset {:?}", s.name));
        }
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(tp, &format!("spec.subsets[{i}].trafficPolicy"), c);
        }
    }
    export_to(&dr.export_to, "spec.exportTo", c);
    if let Some(sel) = &dr.workload_selector {
        selector(&sel.match_labels, "spec.workloadSelector", "matchLabels", c);
        c.unsupported(
            "spec.workloadSelector",
            "weft applies a DestinationRule to every client of its host; ignoring the selector would give its TLS settings and subsets to the wrong proxies",
        );
    }
}

fn traffic_policy(tp: &net::TrafficPolicy, path: &str, c: &mut Check) {
    let empty = tp.load_balancer.is_none()
        && tp.connection_pool.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.retry_budget.is_none();
    if empty {
        c.error(path, "a traffic policy needs at least one field");
    }
    policy(tp.load_balancer.as_ref(), tp.connection_pool.as_ref(), tp.outlier_detection.as_ref(), tp.tls.as_ref(), path, c);
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let p = format!("{path}.portLevelSettings[{i}]");
        match pl.port {
            Some(port) => port_number(port.number, &format!("{p}.port.number"), c),
            None => c.error(format!("{p}.port"), "is required"),
        }
        if pl.load_balancer.is_none() && pl.connection_pool.is_none() && pl.outlier_detection.is_none() && pl.tls.is_none() {
            c.error(p.as_str(), "needs at least one of loadBalancer, connectionPool, outlierDetection or tls");
        }
        policy(pl.load_balancer.as_ref(), pl.connection_pool.as_ref(), pl.outlier_detection.as_ref(), pl.tls.as_ref(), &p, c);
    }
    if let Some(rb) = &tp.retry_budget {
        if let Some(pct) = rb.percent {
            percent(pct, &format!("{path}.retryBudget.percent"), c);
        }
        c.not_acted_on(format!("{path}.retryBudget"), "it only caps how many retries run at once");
    }
}

/// The parts a traffic policy and each of its port-level settings share.
fn policy(
    lb: Option<&net::LoadBalancerSettings>,
    pool: Option<&net::ConnectionPoolSettings>,
    od: Option<&net::OutlierDetection>,
    tls: Option<&net::ClientTlsSettings>,
    path: &str,
    c: &mut Check,
) {
    if let Some(lb) = lb {
        load_balancer(lb, &format!("{path}.loadBalancer"), c);
    }
    if let Some(pool) = pool {
        connection_pool(pool, &format!("{path}.connectionPool"), true, c);
    }
    if let Some(od) = od {
        outlier_detection(od, &format!("{path}.outlierDetection"), c);
    }
    if let Some(tls) = tls {
        let p = format!("{path}.tls");
        if tls.credential_name.is_some() {
            c.unsupported(
                format!("{p}.credentialName"),
                "weft would send no client certificate and check the server against the system roots instead of the secret's CA",
            );
        } else if tls.mode == net::TlsMode::Mutual && (tls.client_certificate.is_none() || tls.private_key.is_none()) {
            c.error(p, "MUTUAL needs clientCertificate and privateKey");
        }
    }
}

fn load_balancer(lb: &net::LoadBalancerSettings, path: &str, c: &mut Check) {
    if [lb.simple.is_some(), lb.consistent_hash.is_some(), lb.backend_utilization.is_some()].iter().filter(|x| **x).count() > 1 {
        c.error(path, "simple, consistentHash and backendUtilization are mutually exclusive");
    }
    if let Some(h) = &lb.consistent_hash {
        let keys =
            [h.http_header_name.is_some(), h.http_cookie.is_some(), h.use_source_ip == Some(true), h.http_query_parameter_name.is_some()]
                .iter()
                .filter(|x| **x)
                .count();
        if keys != 1 {
            c.error(
                format!("{path}.consistentHash"),
                "exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is required",
            );
        }
        if h.ring_hash.is_some() && h.maglev.is_some() {
            c.error(format!("{path}.consistentHash"), "ringHash and maglev are mutually exclusive");
        }
        if h.minimum_ring_size.is_some_and(|n| n != 0) {
            c.warn(format!("{path}.consistentHash.minimumRingSize"), "is deprecated; use ringHash.minimumRingSize");
        }
    }
    if lb.backend_utilization.is_some() {
        c.not_acted_on(format!("{path}.backendUtilization"), "requests are balanced by the default policy over the same endpoints");
    }
    // Slow start only ramps new endpoints up gradually; without it they get their full share
    // at once.
    if lb.warmup_duration_secs.is_some() && lb.warmup.is_some() {
        c.error(path, "only one of warmupDurationSecs and warmup can be set");
    }
    if let Some(d) = lb.warmup_duration_secs {
        duration(d, &format!("{path}.warmupDurationSecs"), c);
        c.not_acted_on(format!("{path}.warmupDurationSecs"), "new endpoints get their full share of requests at once");
    }
    if let Some(w) = &lb.warmup {
        let p = format!("{path}.warmup");
        match w.duration {
            Some(d) => duration(d, &format!("{p}.duration"), c),
            None => c.error(format!("{p}.duration"), "is required"),
        }
        if let Some(m) = w.minimum_percent {
            percent(m, &format!("{p}.minimumPercent"), c);
        }
        if w.aggression.is_some_and(|a| a <= 0.0) {
            c.error(format!("{p}.aggression"), "must be greater than 0");
        }
        c.not_acted_on(p, "new endpoints get their full share of requests at once");
    }
}

/// `connectionPool`. `each_field` warns for each knob weft lacks; a caller that acts on none
/// of the pool (a Sidecar's) warns once for all of it instead.
fn connection_pool(pool: &net::ConnectionPoolSettings, path: &str, each_field: bool, c: &mut Check) {
    if pool.tcp.is_none() && pool.http.is_none() {
        c.error(path, "a connection pool needs tcp or http");
    }
    let ignored = |c: &mut Check, p: String, why: &str| {
        if each_field {
            c.not_acted_on(p, why);
        }
    };
    if let Some(h) = &pool.http {
        let p = format!("{path}.http");
        if h.h2_upgrade_policy == Some(net::H2UpgradePolicy::Upgrade) && h.use_client_protocol == Some(true) {
            c.error(format!("{p}.useClientProtocol"), "must not be true when h2UpgradePolicy is UPGRADE");
        }
        if let Some(k) = &h.http2_keep_alive {
            for (f, d) in [("interval", k.interval), ("timeout", k.timeout)] {
                match d {
                    Some(d) => duration(d, &format!("{p}.http2KeepAlive.{f}"), c),
                    None => c.error(format!("{p}.http2KeepAlive.{f}"), "is required"),
                }
            }
            ignored(c, format!("{p}.http2KeepAlive"), "idle HTTP/2 connections are not pinged; a dead one is found when it is next used");
        }
        if h.max_concurrent_streams.is_some() {
            ignored(c, format!("{p}.maxConcurrentStreams"), "streams per upstream connection are not capped");
        }
        if h.use_client_protocol.is_some() {
            ignored(c, format!("{p}.useClientProtocol"), "the upstream protocol follows the port's protocol");
        }
    }
    if let Some(t) = &pool.tcp {
        let p = format!("{path}.tcp");
        if let Some(k) = &t.tcp_keepalive {
            for (f, d) in [("time", k.time), ("interval", k.interval)] {
                if let Some(d) = d {
                    duration(d, &format!("{p}.tcpKeepalive.{f}"), c);
                }
            }
            ignored(c, format!("{p}.tcpKeepalive"), "upstream sockets keep the system's keep-alive settings");
        }
        if let Some(d) = t.max_connection_duration {
            duration(d, &format!("{p}.maxConnectionDuration"), c);
            ignored(c, format!("{p}.maxConnectionDuration"), "upstream connections are not recycled by age");
        }
    }
}

fn outlier_detection(od: &net::OutlierDetection, path: &str, c: &mut Check) {
    if od.consecutive_errors.is_some_and(|n| n != 0) {
        c.warn(format!("{path}.consecutiveErrors"), "is deprecated; use consecutive5xxErrors or consecutiveGatewayErrors");
    }
    if od.consecutive_local_origin_failures.is_some_and(|n| n > 0) && od.split_external_local_origin_errors != Some(true) {
        c.error(format!("{path}.consecutiveLocalOriginFailures"), "needs splitExternalLocalOriginErrors: true");
    }
    for (f, v) in [("maxEjectionPercent", od.max_ejection_percent), ("minHealthPercent", od.min_health_percent)] {
        if let Some(v) = v {
            percent(f64::from(v), &format!("{path}.{f}"), c);
        }
    }
    // Which failures count towards ejecting an endpoint: tuning of the same ejection.
    if od.split_external_local_origin_errors.is_some() {
        c.not_acted_on(format!("{path}.splitExternalLocalOriginErrors"), "local and upstream failures are counted together");
    }
    if od.consecutive_local_origin_failures.is_some() {
        c.not_acted_on(format!("{path}.consecutiveLocalOriginFailures"), "local and upstream failures are counted together");
    }
    for (i, code) in od.outlier_detection_http_error_codes.iter().enumerate() {
        if !(100..=599).contains(code) {
            c.error(format!("{path}.outlierDetectionHttpErrorCodes[{i}]"), format!("{code} is not an HTTP status (100-599)"));
        }
    }
    if !od.outlier_detection_http_error_codes.is_empty() {
        c.not_acted_on(format!("{path}.outlierDetectionHttpErrorCodes"), "5xx responses count as errors");
    }
}

fn service_entry(se: &net::ServiceEntry, c: &mut Check) {
    use net::Resolution as R;
    if se.hosts.is_empty() {
        c.error("spec.hosts", "at least one host is required");
    }
    let mut seen = BTreeSet::new();
    for (i, h) in se.hosts.iter().enumerate() {
        let p = format!("spec.hosts[{i}]");
        if h == "*" {
            c.error(p, "`*` is not allowed as a ServiceEntry host");
            continue;
        }
        host(h, &p, c);
        if partial_wildcard(h) {
            c.warn(
                p.as_str(),
                format!("partial wildcard {h:?}: it matches every host ending in {:?}; `*.suffix` is what Istio intends", &h[1..]),
            );
        }
        if !seen.insert(h.to_ascii_lowercase()) {
            c.error(p.as_str(), format!("duplicate host {h:?}"));
        }
        // Without endpoints the hosts themselves are resolved, so they must be names.
        if matches!(se.resolution, R::Dns | R::DnsRoundRobin) && se.endpoints.is_empty() && !fqdn(h) {
            c.error(p, "with DNS resolution and no endpoints every host must be a DNS name without wildcards (it is what gets resolved)");
        }
    }
    for (i, a) in se.addresses.iter().enumerate() {
        cidr(a, &format!("spec.addresses[{i}]"), c);
    }
    if se.addresses.iter().any(|a| a.contains('/')) && !matches!(se.resolution, R::None | R::Static) {
        c.error("spec.addresses", "CIDR ranges are only allowed with resolution NONE or STATIC");
    }
    // Istio accepts a ServiceEntry without ports (it then gets no listeners or clusters).
    let mut nums = BTreeSet::new();
    let mut port_names = BTreeSet::new();
    for (i, p) in se.ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        port_number(p.number, &format!("{pp}.number"), c);
        if !nums.insert(p.number) {
            c.error(format!("{pp}.number"), format!("port {} is listed twice", p.number));
        }
        match p.name.as_deref() {
            None | Some("") => c.error(format!("{pp}.name"), "is required"),
            Some(n) if !dns_label(n) => c.error(format!("{pp}.name"), format!("{n:?} is not a valid port name (a DNS-1123 label)")),
            Some(n) if !port_names.insert(n) => c.error(format!("{pp}.name"), format!("port name {n:?} is listed twice")),
            Some(_) => {}
        }
        if let Some(proto) = p.protocol.as_deref().filter(|p| !p.is_empty() && !protocol_known(p)) {
            c.error(format!("{pp}.protocol"), format!("unknown protocol {proto:?}"));
        }
        if let Some(t) = p.target_port.filter(|t| *t != 0) {
            port_number(t, &format!("{pp}.targetPort"), c);
        }
    }
    // Plain TCP cannot tell several hosts apart unless nothing is resolved (NONE).
    if se.resolution != R::None && se.hosts.len() > 1 {
        if let Some(i) = se.ports.iter().position(|p| !protocol_is_http_or_tls(p.protocol.as_deref().unwrap_or(""))) {
            c.error(format!("spec.ports[{i}].protocol"), "with several hosts every port must be HTTP or TLS (unless resolution is NONE)");
        }
    }
    if let Some(sel) = &se.workload_selector {
        selector(&sel.labels, "spec.workloadSelector", "labels", c);
        if !se.endpoints.is_empty() {
            c.error("spec.workloadSelector", "workloadSelector and endpoints are mutually exclusive");
        }
    }
    match se.resolution {
        R::None => {
            if !se.endpoints.is_empty() {
                c.error("spec.endpoints", "endpoints cannot be set with resolution NONE");
            }
            if se.workload_selector.is_some() {
                c.warn("spec.workloadSelector", "has no effect with resolution NONE");
            }
        }
        R::Static if se.endpoints.is_empty() && se.workload_selector.is_none() => {
            c.warn("spec.endpoints", "STATIC resolution without endpoints or a workloadSelector: there is nowhere to send traffic");
        }
        R::DnsRoundRobin if se.endpoints.len() > 1 => {
            c.error("spec.endpoints", "DNS_ROUND_ROBIN takes at most one endpoint");
        }
        R::Static | R::Dns | R::DnsRoundRobin => {}
    }
    for (i, e) in se.endpoints.iter().enumerate() {
        workload_entry(e, &format!("spec.endpoints[{i}]"), EntryOf::ServiceEntry(se), c);
    }
    if !se.subject_alt_names.is_empty() {
        c.unsupported("spec.subjectAltNames", "weft would not accept these identities from the service's endpoints");
    }
    export_to(&se.export_to, "spec.exportTo", c);
}

/// Where a WorkloadEntry-shaped value sits: its own resource, or a ServiceEntry's `endpoints`.
#[derive(Clone, Copy)]
enum EntryOf<'a> {
    Resource,
    ServiceEntry(&'a net::ServiceEntry),
}

/// A WorkloadEntry, or an endpoint of a ServiceEntry (Istio's `validateWorkloadEntry`, and its
/// ServiceEntry rules for DNS resolution). `p` is the path of the entry itself.
fn workload_entry(e: &net::WorkloadEntry, p: &str, of: EntryOf<'_>, c: &mut Check) {
    let se = match of {
        EntryOf::ServiceEntry(se) => Some(se),
        EntryOf::Resource => None,
    };
    let dns = se.is_some_and(|se| matches!(se.resolution, net::Resolution::Dns | net::Resolution::DnsRoundRobin));
    let ap = format!("{p}.address");
    let network = e.network.as_deref().filter(|n| !n.is_empty());
    let a = e.address.as_str();
    if a.is_empty() {
        match network {
            Some(n) if !dns => c.warn(
                ap,
                format!(
                    "is unset with network {n:?}: Istio reaches such a workload through that network's gateway; \
                     weft does not route between networks, so it gets no traffic"
                ),
            ),
            _ if dns => c.error(ap, "is required"),
            _ => c.error(ap, "is required (Istio allows leaving it out only when network is set)"),
        }
    } else if let (Some(path), false) = (a.strip_prefix("unix://"), dns) {
        // Istio's rules for a Unix domain socket first; a socket that passes them is refused
        // because weft cannot connect to one.
        let before = c.problems.len();
        if path.is_empty() {
            c.error(ap.as_str(), "a unix:// address needs a path");
        } else if !path.starts_with('@') && (!path.starts_with('/') || path.ends_with('/')) {
            c.error(ap.as_str(), format!("{path:?} is not an absolute path to a socket (or @name, an abstract socket)"));
        }
        if !e.ports.is_empty() {
            c.error(format!("{p}.ports"), "a unix:// address takes no ports");
        }
        if se.is_some_and(|se| se.ports.len() != 1) {
            c.error("spec.ports", "a ServiceEntry with unix:// endpoints needs exactly one port");
        }
        if c.problems.len() == before {
            c.error(ap, "unix:// addresses are not supported by weft yet: it cannot send traffic to a Unix domain socket");
        }
    } else if a.parse::<IpAddr>().is_err() {
        // A DNS name is resolved by a DNS ServiceEntry; STATIC needs IP addresses.
        match of {
            EntryOf::ServiceEntry(se) if se.resolution == net::Resolution::Static => {
                c.error(ap, format!("{a:?} is not an IP address (resolution STATIC)"));
            }
            _ if !fqdn(a) => c.error(ap, format!("{a:?} is not an IP address or a DNS name")),
            _ => {}
        }
    }
    for (name, port) in &e.ports {
        let pp = format!("{p}.ports.{name}");
        port_number(*port, &pp, c);
        if !dns_label(name) {
            c.error(pp.as_str(), format!("{name:?} is not a valid port name (a DNS-1123 label)"));
        }
        if se.is_some_and(|se| !se.ports.iter().any(|sp| sp.name.as_deref() == Some(name.as_str()))) {
            c.error(pp, format!("{name:?} is not the name of one of the ServiceEntry's ports"));
        }
    }
    if network.is_some() && !a.is_empty() {
        c.not_acted_on(
            format!("{p}.network"),
            "weft reaches every address directly, as Istio does from a proxy whose own network is unset",
        );
    }
    if e.locality.as_deref().is_some_and(|l| !l.is_empty()) {
        c.not_acted_on(format!("{p}.locality"), "weft has no locality-aware load balancing");
    }
}

fn gateway(g: &net::Gateway, c: &mut Check) {
    if g.servers.is_empty() {
        c.error("spec.servers", "at least one server is required");
    }
    for (i, s) in g.servers.iter().enumerate() {
        let p = format!("spec.servers[{i}]");
        port_number(s.port.number, &format!("{p}.port.number"), c);
        if s.hosts.is_empty() {
            c.error(format!("{p}.hosts"), "at least one host is required");
        }
        for (j, h) in s.hosts.iter().enumerate() {
            let name = h.split_once('/').map(|(_, n)| n).unwrap_or(h);
            host(name, &format!("{p}.hosts[{j}]"), c);
        }
        if s.bind.is_some() {
            c.unsupported(
                format!("{p}.bind"),
                "the gateway listens on every address of its port, so it would also accept traffic sent elsewhere",
            );
        }
        let proto = s.port.protocol.as_deref().unwrap_or_default().to_ascii_uppercase();
        if !["HTTP", "HTTPS", "HTTP2", "GRPC", "TCP", "TLS", "MONGO", "REDIS", "MYSQL"].contains(&proto.as_str()) {
            c.error(format!("{p}.port.protocol"), format!("{:?} is not a gateway protocol", s.port.protocol.as_deref().unwrap_or("")));
        }
        if (proto == "HTTPS" || proto == "TLS") && s.tls.is_none() {
            c.error(format!("{p}.tls"), format!("is required for protocol {proto}"));
        }
        if let Some(t) = &s.tls {
            if t.mode == Some(net::ServerTlsMode::Simple)
                && t.credential_name.is_none()
                && (t.server_certificate.is_none() || t.private_key.is_none())
            {
                c.error(format!("{p}.tls"), "SIMPLE needs serverCertificate and privateKey (or credentialName)");
            }
        }
    }
}

fn sidecar(s: &net::Sidecar, c: &mut Check) {
    if let Some(sel) = &s.workload_selector {
        selector(&sel.labels, "spec.workloadSelector", "labels", c);
    }
    // weft applies no inbound connection limits yet; not limiting never sends traffic
    // elsewhere, so the pools are checked and accepted with a warning.
    if let Some(pool) = &s.inbound_connection_pool {
        connection_pool(pool, "spec.inboundConnectionPool", false, c);
        c.not_acted_on("spec.inboundConnectionPool", "connections into the workload are not limited");
    }
    let mut ports = BTreeSet::new();
    for (i, l) in s.ingress.iter().enumerate() {
        let p = format!("spec.ingress[{i}]");
        port_number(l.port.number, &format!("{p}.port.number"), c);
        if !ports.insert(l.port.number) {
            c.error(format!("{p}.port.number"), format!("port {} has two ingress listeners", l.port.number));
        }
        if l.port.target_port.is_some() {
            c.warn(format!("{p}.port.targetPort"), "has no effect on a Sidecar (defaultEndpoint says where traffic goes)");
        }
        if let Some(b) = &l.bind {
            if b.starts_with("unix://") {
                c.error(format!("{p}.bind"), "a Unix domain socket is not supported by weft yet");
            } else {
                ip(b, &format!("{p}.bind"), c);
            }
        }
        if let Some(e) = &l.default_endpoint {
            default_endpoint(e, &format!("{p}.defaultEndpoint"), c);
        }
        if let Some(pool) = &l.connection_pool {
            connection_pool(pool, &format!("{p}.connectionPool"), false, c);
            let proto = l.port.protocol.as_deref().unwrap_or("");
            if pool.http.is_some() && !["http", "http2", "http_proxy", "grpc", "grpc-web"].contains(&proto.to_ascii_lowercase().as_str()) {
                c.warn(
                    format!("{p}.connectionPool.http"),
                    format!("port {} is not HTTP ({proto:?}): only tcp settings would apply", l.port.number),
                );
            }
            c.not_acted_on(format!("{p}.connectionPool"), "connections into the workload are not limited");
        }
    }
    for (i, e) in s.egress.iter().enumerate() {
        if e.hosts.is_empty() {
            c.error(format!("spec.egress[{i}].hosts"), "at least one host is required");
        }
        for (j, h) in e.hosts.iter().enumerate() {
            let p = format!("spec.egress[{i}].hosts[{j}]");
            match h.split_once('/') {
                Some((ns, name)) if !ns.is_empty() => host(name, &p, c),
                _ => c.error(p, format!("{h:?} must be namespace/host (`./*`, `*/reviews.default.svc.cluster.local`, `istio-system/*`)")),
            }
        }
        // weft gives a Sidecar's egress hosts on every port, captured: a listener for one port,
        // bound to one address or not captured would change what the workload can reach.
        if let Some(port) = &e.port {
            port_number(port.number, &format!("spec.egress[{i}].port.number"), c);
            c.unsupported(format!("spec.egress[{i}].port"), "the egress hosts would be reachable on every port");
        }
        if e.bind.is_some() {
            c.unsupported(format!("spec.egress[{i}].bind"), "egress traffic is only taken by capture");
        }
        match e.capture_mode.as_deref() {
            None | Some("DEFAULT") => {}
            Some("IPTABLES" | "NONE") => c.unsupported(format!("spec.egress[{i}].captureMode"), "egress traffic is only taken by capture"),
            Some(m) => c.error(format!("spec.egress[{i}].captureMode"), format!("unknown capture mode {m:?} (DEFAULT, IPTABLES, NONE)")),
        }
    }
}

/// Istio takes `127.0.0.1:PORT`, `[::1]:PORT` (the workload's localhost), `0.0.0.0:PORT`,
/// `[::]:PORT` (its instance address) or `unix://`. weft also takes any other loopback
/// address: on one machine (`weft up --explicit`) every workload has a loopback address of its
/// own, which is its localhost.
fn default_endpoint(e: &str, path: &str, c: &mut Check) {
    if e.starts_with("unix://") {
        c.error(path, "a Unix domain socket is not supported by weft yet");
        return;
    }
    match e.parse::<std::net::SocketAddr>() {
        Ok(a) if a.port() == 0 => c.error(path, format!("{e:?}: port 0 is not a port")),
        Ok(a) if a.ip().is_loopback() || a.ip().is_unspecified() => {}
        Ok(_) => c.error(
            path,
            format!("{e:?} must be a loopback address (127.0.0.1:PORT, [::1]:PORT) or 0.0.0.0:PORT / [::]:PORT (the workload's address)"),
        ),
        Err(_) => c.error(path, format!("{e:?} is not IP:PORT")),
    }
}

fn peer_authentication(pa: &PeerAuthentication, c: &mut Check) {
    // Port keys are checked as they are read (`security::port_level_mtls`).
    if let Some(sel) = &pa.selector {
        selector(&sel.match_labels, "spec.selector", "matchLabels", c);
    }
    if !pa.port_level_mtls.is_empty() && pa.selector.as_ref().map(|s| s.match_labels.is_empty()).unwrap_or(true) {
        c.error("spec.portLevelMtls", "port-level mTLS needs a workload selector");
    }
    if pa.mtls.is_none() && pa.port_level_mtls.is_empty() {
        c.warn("spec", "neither mtls nor portLevelMtls is set; this policy inherits its parent's mode");
    }
}
