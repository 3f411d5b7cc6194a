//! Choosing a virtual host and route for a request, and the path/host rewrites they imply.

use std::net::SocketAddr;

use http::request::Parts;

use crate::config::route::{
    HeaderMatch, HeaderMatchKind, HeaderSource, PathMatch, QueryMatch, Route, RouteMatcher, RouteTable, StringMatch, StringMatchCase,
    VirtualHost,
};

/// The request attributes routing looks at, computed once per request.
pub struct RequestView<'a> {
    pub parts: &'a Parts,
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub scheme: &'a str,
}

impl RequestView<'_> {
    fn header(&self, src: &HeaderSource) -> Option<std::borrow::Cow<'_, str>> {
        match src {
            HeaderSource::Authority => Some(self.host.into()),
            HeaderSource::Method => Some(self.parts.method.as_str().into()),
            HeaderSource::Path => Some(match self.parts.uri.path_and_query() {
                Some(pq) => pq.as_str().into(),
                None => self.path.into(),
            }),
            HeaderSource::Scheme => Some(self.scheme.into()),
            HeaderSource::Header(name) => {
                let mut it = self.parts.headers.get_all(name).iter();
                let first = it.next()?;
                let rest: Vec<_> = it.collect();
                if rest.is_empty() {
                    Some(String::from_utf8_lossy(first.as_bytes()))
                } else {
                    // Envoy joins repeated headers with "," before matching.
                    let mut s = String::from_utf8_lossy(first.as_bytes()).into_owned();
                    for v in rest {
                        s.push(',');
                        s.push_str(&String::from_utf8_lossy(v.as_bytes()));
                    }
                    Some(s.into())
                }
            }
        }
    }
}

pub fn select_vhost<'a>(table: &'a RouteTable, host: &str) -> Option<&'a VirtualHost> {
    named_vhost(table, host).or(table.any).and_then(|i| table.vhosts.get(i))
}

/// The virtual host whose domains name `host` (exactly or by a wildcard), not the catch-all:
/// what a table that fetches virtual hosts on demand must hold before the catch-all answers.
pub fn names_host(table: &RouteTable, host: &str) -> bool {
    named_vhost(table, host).is_some()
}

fn named_vhost(table: &RouteTable, host: &str) -> Option<usize> {
    let lower;
    let mut host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        lower = host.to_ascii_lowercase();
        lower.as_str()
    } else {
        host
    };
    if table.ignore_port {
        host = strip_port(host);
    }
    table
        .exact
        .get(host)
        .copied()
        .or_else(|| table.suffixes.iter().find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str())).map(|(_, i)| *i))
        .or_else(|| table.prefixes.iter().find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str())).map(|(_, i)| *i))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find("]:") {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

pub fn select_route<'a>(vh: &'a VirtualHost, req: &RequestView) -> Option<&'a Route> {
    vh.routes.iter().find(|r| matches(&r.matcher, req))
}

fn matches(m: &RouteMatcher, req: &RequestView) -> bool {
    let path = req.path;
    let ok = match &m.path {
        PathMatch::Prefix(p) => {
            if m.case_sensitive {
                path.starts_with(p.as_str())
            } else {
                path.len() >= p.len() && path.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
        }
        PathMatch::Exact(p) => {
            if m.case_sensitive {
                path == p
            } else {
                path.eq_ignore_ascii_case(p)
            }
        }
        PathMatch::Regex(re) => re.is_match(path),
        PathMatch::SeparatedPrefix(p) => {
            let head = path.get(..p.len());
            let same = match head {
                Some(h) if m.case_sensitive => h == p,
                Some(h) => h.eq_ignore_ascii_case(p),
                None => false,
            };
            same && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
        }
    };
    if !ok {
        return false;
    }
    if m.grpc && !req.parts.headers.get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc")) {
        return false;
    }
    m.headers.iter().all(|h| header_matches(h, req)) && m.query.iter().all(|q| query_matches(q, req.query))
}

pub fn string_matches(m: &StringMatchCase, v: &str) -> bool {
    if m.ignore_case {
        let v = v.to_ascii_lowercase();
        let lower = |s: &str| s.to_ascii_lowercase();
        return match &m.kind {
            StringMatch::Exact(s) => v == lower(s),
            StringMatch::Prefix(s) => v.starts_with(&lower(s)),
            StringMatch::Suffix(s) => v.ends_with(&lower(s)),
            StringMatch::Contains(s) => v.contains(&lower(s)),
            StringMatch::Regex(r) => r.is_match(&v),
        };
    }
    match &m.kind {
        StringMatch::Exact(s) => v == s,
        StringMatch::Prefix(s) => v.starts_with(s.as_str()),
        StringMatch::Suffix(s) => v.ends_with(s.as_str()),
        StringMatch::Contains(s) => v.contains(s.as_str()),
        StringMatch::Regex(r) => r.is_match(v),
    }
}

pub fn header_matches(h: &HeaderMatch, req: &RequestView) -> bool {
    let value = req.header(&h.name);
    let value = match value {
        Some(v) => Some(v),
        None if h.treat_missing_as_empty => Some("".into()),
        None => None,
    };
    let result = match (&h.kind, value) {
        (HeaderMatchKind::Present(want), v) => v.is_some() == *want,
        (_, None) => {
            // A missing header never matches, inverted or not (Envoy), except present_match.
            return false;
        }
        (HeaderMatchKind::String(sm), Some(v)) => string_matches(sm, &v),
        (HeaderMatchKind::Range(lo, hi), Some(v)) => v.trim().parse::<i64>().is_ok_and(|n| n >= *lo && n < *hi),
    };
    result != h.invert
}

fn query_matches(q: &QueryMatch, query: Option<&str>) -> bool {
    let found = query.and_then(|qs| {
        qs.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == q.name).then_some(v)
        })
    });
    match (&q.value, found) {
        (None, f) => f.is_some(),
        (Some(_), None) => false,
        (Some(m), Some(v)) => string_matches(m, v),
    }
}

/// Applies a route's prefix rewrite: the matched prefix (or whole path) is replaced.
pub fn prefix_rewrite(m: &PathMatch, path: &str, replacement: &str) -> String {
    let matched_len = match m {
        PathMatch::Prefix(p) | PathMatch::SeparatedPrefix(p) => p.len().min(path.len()),
        PathMatch::Exact(_) => path.len(),
        PathMatch::Regex(_) => path.len(),
    };
    format!("{replacement}{}", &path[matched_len..])
}

/// Builds a path-and-query from a new path and the original query.
pub fn with_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    }
}

/// Source address used for `x-forwarded-for` and `source_ip` hashing.
pub fn client_ip(remote: SocketAddr) -> std::net::IpAddr {
    match remote.ip() {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(std::net::IpAddr::V6(v6)),
        ip => ip,
    }
}
