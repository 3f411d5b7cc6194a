//! Istio's semantic checks, beyond what the schema says: regexes compile, weights add up,
//! hosts are not repeated, each route has one action. Paths are serde_path_to_error's, rooted
//! at the document, so the loader can name the line.

use std::collections::BTreeSet;
use std::net::IpAddr;

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
        Object::WorkloadEntry(r) => {
            if r.spec.address.is_empty() {
                c.error("spec.address", "is required");
            }
            ports_map(&r.spec.ports, "spec.ports", &mut c);
        }
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

fn ports_map(ports: &std::collections::BTreeMap<String, u32>, path: &str, c: &mut Check) {
    for (name, p) in ports {
        port_number(*p, &format!("{path}.{name}"), c);
    }
}

fn ip(s: &str, path: &str, c: &mut Check) {
    if s.parse::<IpAddr>().is_err() {
        c.error(path, format!("{s:?} is not an IP address"));
    }
}

/// A host as Istio allows it: a DNS name, optionally starting with `*.`, or `*` alone.
fn host(h: &str, path: &str, c: &mut Check) {
    if h == "*" {
        return;
    }
    let name = h.strip_prefix("*.").unwrap_or(h);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !ok && name.parse::<IpAddr>().is_err() {
        c.error(path, format!("{h:?} is not a valid host (a DNS name, `*.suffix`, or `*`)"));
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

fn percent(p: f64, path: &str, c: &mut Check) {
    if !(0.0..=100.0).contains(&p) {
        c.error(path, format!("percentage {p} is outside 0-100"));
    }
}

fn virtual_service(vs: &net::VirtualService, c: &mut Check) {
    if vs.hosts.is_empty() {
        c.error("spec.hosts", "at least one host is required");
    }
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
            for (k, s) in m.destination_subnets.iter().enumerate() {
                cidr(s, &format!("spec.tcp[{i}].match[{j}].destinationSubnets[{k}]"), c);
            }
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
        }
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
}

fn traffic_policy(tp: &net::TrafficPolicy, path: &str, c: &mut Check) {
    if let Some(lb) = &tp.load_balancer {
        load_balancer(lb, &format!("{path}.loadBalancer"), c);
    }
    if let Some(od) = &tp.outlier_detection {
        if let Some(p) = od.max_ejection_percent {
            percent(p as f64, &format!("{path}.outlierDetection.maxEjectionPercent"), c);
        }
    }
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        match pl.port {
            Some(p) => port_number(p.number, &format!("{path}.portLevelSettings[{i}].port.number"), c),
            None => c.error(format!("{path}.portLevelSettings[{i}].port"), "is required"),
        }
        if let Some(lb) = &pl.load_balancer {
            load_balancer(lb, &format!("{path}.portLevelSettings[{i}].loadBalancer"), c);
        }
    }
    if let Some(tls) = &tp.tls {
        if tls.mode == net::TlsMode::Mutual
            && (tls.client_certificate.is_none() || tls.private_key.is_none())
            && tls.credential_name.is_none()
        {
            c.error(format!("{path}.tls"), "MUTUAL needs clientCertificate and privateKey (or credentialName)");
        }
    }
}

fn load_balancer(lb: &net::LoadBalancerSettings, path: &str, c: &mut Check) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        c.error(path, "simple and consistentHash are mutually exclusive");
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
    }
}

fn service_entry(se: &net::ServiceEntry, c: &mut Check) {
    if se.hosts.is_empty() {
        c.error("spec.hosts", "at least one host is required");
    }
    let mut seen = BTreeSet::new();
    for (i, h) in se.hosts.iter().enumerate() {
        let p = format!("spec.hosts[{i}]");
        host(h, &p, c);
        if h == "*" {
            c.error(p.clone(), "`*` is not allowed as a ServiceEntry host");
        }
        if !seen.insert(h.to_ascii_lowercase()) {
            c.error(p.clone(), format!("duplicate host {h:?}"));
        }
        if h.starts_with("*.") && matches!(se.resolution, net::Resolution::Dns | net::Resolution::DnsRoundRobin) {
            c.error(p, "a wildcard host cannot use DNS resolution");
        }
    }
    for (i, a) in se.addresses.iter().enumerate() {
        cidr(a, &format!("spec.addresses[{i}]"), c);
    }
    if se.ports.is_empty() {
        c.error("spec.ports", "at least one port is required");
    }
    let mut nums = BTreeSet::new();
    for (i, p) in se.ports.iter().enumerate() {
        port_number(p.number, &format!("spec.ports[{i}].number"), c);
        if !nums.insert(p.number) {
            c.error(format!("spec.ports[{i}].number"), format!("port {} is listed twice", p.number));
        }
    }
    if se.resolution == net::Resolution::Static && se.endpoints.is_empty() && se.workload_selector.is_none() {
        c.error("spec.endpoints", "STATIC resolution needs endpoints or a workloadSelector");
    }
    if se.workload_selector.is_some() && !se.endpoints.is_empty() {
        c.error("spec.workloadSelector", "workloadSelector and endpoints are mutually exclusive");
    }
    for (i, e) in se.endpoints.iter().enumerate() {
        let p = format!("spec.endpoints[{i}].address");
        if se.resolution == net::Resolution::Static {
            ip(&e.address, &p, c);
        } else if e.address.is_empty() {
            c.error(p, "is required");
        }
        ports_map(&e.ports, &format!("spec.endpoints[{i}].ports"), c);
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
        if let Some(port) = &e.port {
            port_number(port.number, &format!("spec.egress[{i}].port.number"), c);
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
    if !pa.port_level_mtls.is_empty() && pa.selector.as_ref().map(|s| s.match_labels.is_empty()).unwrap_or(true) {
        c.error("spec.portLevelMtls", "port-level mTLS needs a workload selector");
    }
    for p in pa.port_level_mtls.keys() {
        port_number(*p, &format!("spec.portLevelMtls.{p}"), c);
    }
    if pa.mtls.is_none() && pa.port_level_mtls.is_empty() {
        c.warn("spec", "neither mtls nor portLevelMtls is set; this policy inherits its parent's mode");
    }
}
