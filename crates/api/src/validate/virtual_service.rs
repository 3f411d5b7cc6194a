//! VirtualService: hosts, HTTP/TCP/TLS routes and their matches, destinations and weights,
//! rewrites, redirects, retries, faults and mirrors.

use std::collections::BTreeSet;

use super::{cidr, duration, export_to, host, labels, percent, port_number, Check};
use crate::networking::{self as net, StringMatch};

pub(super) fn virtual_service(vs: &net::VirtualService, c: &mut Check) {
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
            labels(&m.source_labels, &format!("spec.tcp[{i}].match[{j}].sourceLabels"), c);
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
            labels(&m.source_labels, &format!("spec.tls[{i}].match[{j}].sourceLabels"), c);
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
        labels(&m.source_labels, &format!("{mp}.sourceLabels"), c);
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
    if let Some(d) = r.timeout {
        duration(d, &format!("{path}.timeout"), c);
    }
    if let Some(rt) = &r.retries {
        if rt.attempts < 0 {
            c.error(format!("{path}.retries.attempts"), "cannot be negative");
        }
        if let Some(d) = rt.per_try_timeout {
            duration(d, &format!("{path}.retries.perTryTimeout"), c);
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
            match d.fixed_delay {
                Some(fd) => duration(fd, &format!("{path}.fault.delay.fixedDelay"), c),
                None => c.error(format!("{path}.fault.delay.fixedDelay"), "is required"),
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
