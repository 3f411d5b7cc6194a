//! Route tables: virtual hosts, route matchers, route actions and header mutations.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use weft_xds::core::{AppendAction, HeaderValueOption, StringMatcher};
use weft_xds::route as wire;

use super::access_log::Format;
use super::listener::{ClusterNames, FaultConfig};
use super::{full_regex, plain_regex, ConfigError, Result};

#[derive(Debug)]
pub struct RouteTable {
    pub name: String,
    pub vhosts: Vec<VirtualHost>,
    pub exact: HashMap<String, usize>,
    /// `*.suffix` / `*suffix` domains, longest first: (suffix without `*`, vhost).
    pub suffixes: Vec<(String, usize)>,
    /// `prefix*` domains, longest first.
    pub prefixes: Vec<(String, usize)>,
    pub any: Option<usize>,
    pub ignore_port: bool,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub internal_only_headers: Vec<HeaderName>,
    /// `vhds`: virtual hosts not listed are fetched over VHDS when a request first names their
    /// host, before the catch-all (if any) may answer it.
    pub on_demand: bool,
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    pub routes: Vec<Route>,
    /// `typed_per_filter_config` overrides of fault filters, by filter name.
    pub faults: PerFilterFaults,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub retry_policy: Option<RetryPolicy>,
    pub include_request_attempt_count: bool,
    pub include_attempt_count_in_response: bool,
    /// Plaintext requests this applies to are redirected to https.
    pub require_tls: weft_xds::route::TlsRequirement,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatcher,
    pub action: RouteAction,
    pub faults: PerFilterFaults,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    /// `decorator.operation`: the name of this route's spans.
    pub operation: Option<String>,
}

#[derive(Debug)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(regex::Regex),
    SeparatedPrefix(String),
}

#[derive(Debug)]
pub struct RouteMatcher {
    pub path: PathMatch,
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
    pub grpc: bool,
}

#[derive(Debug)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(regex::Regex),
}

#[derive(Debug)]
pub struct StringMatchCase {
    pub kind: StringMatch,
    pub ignore_case: bool,
}

#[derive(Debug)]
pub enum HeaderMatchKind {
    String(StringMatchCase),
    Present(bool),
    Range(i64, i64),
}

#[derive(Debug)]
pub struct HeaderMatch {
    pub name: HeaderSource,
    pub kind: HeaderMatchKind,
    pub invert: bool,
    pub treat_missing_as_empty: bool,
}

/// Where a header matcher reads its value: a header, or a request pseudo-header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSource {
    Header(HeaderName),
    Authority,
    Method,
    Path,
    Scheme,
}

#[derive(Debug)]
pub struct QueryMatch {
    pub name: String,
    /// `None` is `present_match`.
    pub value: Option<StringMatchCase>,
}

#[derive(Debug)]
pub enum RouteAction {
    Forward(Box<ForwardAction>),
    Redirect(Box<RedirectAction>),
    Direct { status: http::StatusCode, body: Option<Bytes> },
}

#[derive(Debug)]
pub enum ClusterSpecifier {
    Single(String),
    Weighted { clusters: Vec<WeightedCluster>, total: u64 },
    Header(HeaderName),
}

#[derive(Debug)]
pub struct WeightedCluster {
    pub name: String,
    pub weight: u32,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub host_rewrite: Option<http::HeaderValue>,
}

#[derive(Debug)]
pub struct ForwardAction {
    pub cluster: ClusterSpecifier,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<(regex::Regex, String)>,
    pub host_rewrite: Option<http::HeaderValue>,
    pub auto_host_rewrite: bool,
    /// `None` disables the route timeout.
    pub timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub hash_policy: Vec<HashPolicy>,
    pub websocket: Option<bool>,
    pub mirrors: Vec<MirrorPolicy>,
}

/// A copy of each request (a share of them, by `per_million`) goes to `cluster`, with
/// `-shadow` appended to its authority; the copy's response is dropped.
#[derive(Debug)]
pub struct MirrorPolicy {
    pub cluster: String,
    pub per_million: u32,
    pub shadow_suffix: bool,
}

/// Per-route or per-virtual-host fault filter configs, keyed by the HTTP filter's name.
pub type PerFilterFaults = HashMap<String, Arc<FaultConfig>>;

fn per_filter_faults(m: &std::collections::BTreeMap<String, weft_xds::filters::PerFilterConfig>, path: &str) -> Result<PerFilterFaults> {
    let mut out = HashMap::new();
    for (name, c) in m {
        match c {
            weft_xds::filters::PerFilterConfig::Fault(f) => {
                out.insert(name.clone(), Arc::new(super::listener::fault(f, &format!("{path}.typed_per_filter_config.{name}"))?));
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub server_5xx: bool,
    pub gateway_error: bool,
    pub connect_failure: bool,
    pub reset: bool,
    pub retriable_4xx: bool,
    pub retriable_status_codes: bool,
    pub refused_stream: bool,
    /// A reset or connect failure before any of the request was sent.
    pub reset_before_request: bool,
    /// gRPC status codes (from `grpc-status` in the response headers) that retry:
    /// `cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable`.
    pub grpc: GrpcRetryOn,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrpcRetryOn(u32);

impl GrpcRetryOn {
    pub fn set(&mut self, code: u32) {
        self.0 |= 1 << code;
    }
    pub fn contains(&self, code: u32) -> bool {
        code < 32 && self.0 & (1 << code) != 0
    }
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub on: RetryOn,
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub base_interval: Duration,
    pub max_interval: Duration,
    pub retriable_status_codes: Vec<u16>,
}

#[derive(Debug)]
pub enum HashKey {
    Header(HeaderName),
    Cookie { name: String, ttl: Option<Duration>, path: Option<String> },
    SourceIp,
    QueryParameter(String),
}

#[derive(Debug)]
pub struct HashPolicy {
    pub key: HashKey,
    pub terminal: bool,
}

#[derive(Debug)]
pub struct RedirectAction {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<(regex::Regex, String)>,
    pub status: http::StatusCode,
    pub strip_query: bool,
}

#[derive(Debug, Default)]
pub struct HeaderOps {
    pub add: Vec<HeaderAdd>,
    pub remove: Vec<HeaderName>,
}

#[derive(Debug)]
pub struct HeaderAdd {
    pub name: HeaderName,
    pub value: Format,
    pub action: AppendAction,
    pub keep_empty: bool,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    fn from_wire(add: &[HeaderValueOption], remove: &[String], path: &str, add_field: &str, remove_field: &str) -> Result<Self> {
        let mut ops = HeaderOps::default();
        for (i, h) in add.iter().enumerate() {
            let p = format!("{path}.{add_field}[{i}]");
            let name = header_name(&h.header.key, &format!("{p}.header.key"))?;
            if name.as_str().starts_with(':') || name == http::header::HOST {
                return Err(ConfigError::new(format!("{p}.header.key"), "pseudo-headers and host cannot be modified this way"));
            }
            let action = match (h.append, h.append_action) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(p, "append and append_action are mutually exclusive"));
                }
                (Some(true), None) => AppendAction::AppendIfExistsOrAdd,
                (Some(false), None) => AppendAction::OverwriteIfExistsOrAdd,
                (None, Some(a)) => a,
                (None, None) => AppendAction::AppendIfExistsOrAdd,
            };
            let value = Format::parse(&h.header.value).map_err(|m| ConfigError::new(format!("{p}.header.value"), m))?;
            ops.add.push(HeaderAdd { name, value, action, keep_empty: h.keep_empty_value });
        }
        for (i, r) in remove.iter().enumerate() {
            let p = format!("{path}.{remove_field}[{i}]");
            let name = header_name(r, &p)?;
            if name.as_str().starts_with(':') || name == http::header::HOST {
                return Err(ConfigError::new(p, "pseudo-headers and host cannot be removed"));
            }
            ops.remove.push(name);
        }
        Ok(ops)
    }
}

fn header_name(s: &str, path: &str) -> Result<HeaderName> {
    if s.starts_with(':') {
        return Err(ConfigError::new(path, format!("pseudo-header {s:?} is not allowed here")));
    }
    HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes())
        .map_err(|_| ConfigError::new(path, format!("{s:?} is not a valid header name")))
}

pub(crate) fn string_match(m: &StringMatcher, path: &str) -> Result<StringMatchCase> {
    let kinds = [m.exact.is_some(), m.prefix.is_some(), m.suffix.is_some(), m.contains.is_some(), m.safe_regex.is_some()];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err(ConfigError::new(path, "exactly one of exact, prefix, suffix, contains or safe_regex is required"));
    }
    let kind = if let Some(s) = &m.exact {
        StringMatch::Exact(s.clone())
    } else if let Some(s) = &m.prefix {
        StringMatch::Prefix(s.clone())
    } else if let Some(s) = &m.suffix {
        StringMatch::Suffix(s.clone())
    } else if let Some(s) = &m.contains {
        StringMatch::Contains(s.clone())
    } else if let Some(r) = &m.safe_regex {
        let re = if m.ignore_case { format!("(?i){}", r.regex) } else { r.regex.clone() };
        StringMatch::Regex(full_regex(&re, &format!("{path}.safe_regex.regex"))?)
    } else {
        return Err(ConfigError::new(path, "empty string matcher"));
    };
    Ok(StringMatchCase { kind, ignore_case: m.ignore_case })
}

impl HeaderMatch {
    pub fn from_wire(h: &wire::HeaderMatcher, path: &str) -> Result<Self> {
        let name = match h.name.to_ascii_lowercase().as_str() {
            ":authority" | "host" => HeaderSource::Authority,
            ":method" => HeaderSource::Method,
            ":path" => HeaderSource::Path,
            ":scheme" => HeaderSource::Scheme,
            other => HeaderSource::Header(header_name(other, &format!("{path}.name"))?),
        };
        let set = [
            h.exact_match.is_some(),
            h.safe_regex_match.is_some(),
            h.range_match.is_some(),
            h.present_match.is_some(),
            h.prefix_match.is_some(),
            h.suffix_match.is_some(),
            h.contains_match.is_some(),
            h.string_match.is_some(),
        ];
        let n = set.iter().filter(|s| **s).count();
        if n > 1 {
            return Err(ConfigError::new(path, "only one header match specifier may be set"));
        }
        let sm = |k: StringMatch| HeaderMatchKind::String(StringMatchCase { kind: k, ignore_case: false });
        let kind = if let Some(s) = &h.exact_match {
            sm(StringMatch::Exact(s.clone()))
        } else if let Some(r) = &h.safe_regex_match {
            sm(StringMatch::Regex(full_regex(&r.regex, &format!("{path}.safe_regex_match.regex"))?))
        } else if let Some(r) = &h.range_match {
            HeaderMatchKind::Range(r.start, r.end)
        } else if let Some(p) = h.present_match {
            HeaderMatchKind::Present(p)
        } else if let Some(s) = &h.prefix_match {
            sm(StringMatch::Prefix(s.clone()))
        } else if let Some(s) = &h.suffix_match {
            sm(StringMatch::Suffix(s.clone()))
        } else if let Some(s) = &h.contains_match {
            sm(StringMatch::Contains(s.clone()))
        } else if let Some(m) = &h.string_match {
            HeaderMatchKind::String(string_match(m, &format!("{path}.string_match"))?)
        } else {
            // No specifier: Envoy treats this as "header is present".
            HeaderMatchKind::Present(true)
        };
        Ok(HeaderMatch { name, kind, invert: h.invert_match, treat_missing_as_empty: h.treat_missing_header_as_empty })
    }
}

fn parse_retry_on(s: &str, path: &str) -> Result<RetryOn> {
    let mut on = RetryOn::default();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "5xx" => on.server_5xx = true,
            "gateway-error" => on.gateway_error = true,
            "connect-failure" => on.connect_failure = true,
            "reset" => on.reset = true,
            "retriable-4xx" => on.retriable_4xx = true,
            "retriable-status-codes" => on.retriable_status_codes = true,
            "refused-stream" => on.refused_stream = true,
            "reset-before-request" => on.reset_before_request = true,
            "cancelled" => on.grpc.set(1),
            "deadline-exceeded" => on.grpc.set(4),
            "resource-exhausted" => on.grpc.set(8),
            "internal" => on.grpc.set(13),
            "unavailable" => on.grpc.set(14),
            other => {
                return Err(ConfigError::new(
                    path,
                    format!(
                        "retry condition {other:?} is not supported (supported: 5xx, gateway-error, connect-failure, reset, \
                         reset-before-request, retriable-4xx, retriable-status-codes, refused-stream, cancelled, \
                         deadline-exceeded, internal, resource-exhausted, unavailable)"
                    ),
                ))
            }
        }
    }
    Ok(on)
}

impl RetryPolicy {
    fn from_wire(r: &wire::RetryPolicy, path: &str) -> Result<Self> {
        let base = r.retry_back_off.as_ref().map(|b| b.base_interval.0).unwrap_or(Duration::from_millis(25));
        if base.is_zero() {
            return Err(ConfigError::new(format!("{path}.retry_back_off.base_interval"), "must be greater than zero"));
        }
        let max = r.retry_back_off.as_ref().and_then(|b| b.max_interval).map(|d| d.0).unwrap_or(base * 10);
        if max < base {
            return Err(ConfigError::new(format!("{path}.retry_back_off.max_interval"), "must not be less than base_interval"));
        }
        let codes =
            r.retriable_status_codes
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    u16::try_from(*c).ok().filter(|c| (100..600).contains(c)).ok_or_else(|| {
                        ConfigError::new(format!("{path}.retriable_status_codes[{i}]"), format!("{c} is not an HTTP status"))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
        Ok(RetryPolicy {
            on: parse_retry_on(&r.retry_on, &format!("{path}.retry_on"))?,
            num_retries: r.num_retries.unwrap_or(1),
            per_try_timeout: r.per_try_timeout.map(|d| d.0).filter(|d| !d.is_zero()),
            base_interval: base,
            max_interval: max,
            retriable_status_codes: codes,
        })
    }
}

fn rewrite(r: &wire::RegexRewrite, path: &str) -> Result<(regex::Regex, String)> {
    let re = plain_regex(&r.pattern.regex, &format!("{path}.pattern.regex"))?;
    // Envoy uses RE2 substitution syntax (\1); the regex crate uses ${1}.
    let mut sub = String::new();
    let mut chars = r.substitution.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    sub.push_str(&format!("${{{d}}}"));
                    chars.next();
                }
                Some('\\') => {
                    sub.push('\\');
                    chars.next();
                }
                _ => sub.push('\\'),
            }
        } else if c == '$' {
            sub.push_str("$$");
        } else {
            sub.push(c);
        }
    }
    Ok((re, sub))
}

fn header_value(s: &str, path: &str) -> Result<http::HeaderValue> {
    http::HeaderValue::from_str(s).map_err(|_| ConfigError::new(path, format!("{s:?} is not a valid header value")))
}

impl RouteTable {
    /// A table with no virtual hosts: every request gets 404 `NR`, as in Envoy before a
    /// route configuration named by RDS has arrived.
    pub fn empty(name: &str) -> Self {
        RouteTable {
            name: name.to_string(),
            vhosts: Vec::new(),
            exact: HashMap::new(),
            suffixes: Vec::new(),
            prefixes: Vec::new(),
            any: None,
            ignore_port: false,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
            internal_only_headers: Vec::new(),
            on_demand: false,
        }
    }

    pub fn from_wire(rc: &wire::RouteConfiguration, path: &str, clusters: &ClusterNames) -> Result<Self> {
        if rc.vhds.as_ref().is_some_and(|v| v.config_source.ads.is_none()) {
            return Err(ConfigError::new(format!("{path}.vhds.config_source"), "only ads: {} is supported"));
        }
        let mut vhosts = Vec::new();
        let mut exact = HashMap::new();
        let mut suffixes = Vec::new();
        let mut prefixes = Vec::new();
        let mut any = None;
        for (vi, vh) in rc.virtual_hosts.iter().enumerate() {
            let vpath = format!("{path}.virtual_hosts[{vi}]");
            if vh.domains.is_empty() {
                return Err(ConfigError::new(format!("{vpath}.domains"), "at least one domain is required"));
            }
            for (di, d) in vh.domains.iter().enumerate() {
                let d = d.to_ascii_lowercase();
                let dup = || {
                    ConfigError::new(
                        format!("{vpath}.domains[{di}]"),
                        format!("only unique values for domains are permitted; {d:?} is repeated"),
                    )
                };
                if d == "*" {
                    if any.replace(vi).is_some() {
                        return Err(dup());
                    }
                } else if let Some(s) = d.strip_prefix('*') {
                    if suffixes.iter().any(|(x, _)| x == s) {
                        return Err(dup());
                    }
                    suffixes.push((s.to_string(), vi));
                } else if let Some(p) = d.strip_suffix('*') {
                    if prefixes.iter().any(|(x, _)| x == p) {
                        return Err(dup());
                    }
                    prefixes.push((p.to_string(), vi));
                } else if d.contains('*') {
                    return Err(ConfigError::new(
                        format!("{vpath}.domains[{di}]"),
                        format!("{d:?}: a wildcard must be at the start or the end"),
                    ));
                } else if exact.insert(d.clone(), vi).is_some() {
                    return Err(dup());
                }
            }
            let mut routes = Vec::new();
            for (ri, r) in vh.routes.iter().enumerate() {
                routes.push(Route::from_wire(r, &format!("{vpath}.routes[{ri}]"), clusters)?);
            }
            vhosts.push(VirtualHost {
                name: vh.name.clone(),
                routes,
                faults: per_filter_faults(&vh.typed_per_filter_config, &vpath)?,
                request_headers: HeaderOps::from_wire(
                    &vh.request_headers_to_add,
                    &vh.request_headers_to_remove,
                    &vpath,
                    "request_headers_to_add",
                    "request_headers_to_remove",
                )?,
                response_headers: HeaderOps::from_wire(
                    &vh.response_headers_to_add,
                    &vh.response_headers_to_remove,
                    &vpath,
                    "response_headers_to_add",
                    "response_headers_to_remove",
                )?,
                retry_policy: vh.retry_policy.as_ref().map(|r| RetryPolicy::from_wire(r, &format!("{vpath}.retry_policy"))).transpose()?,
                include_request_attempt_count: vh.include_request_attempt_count,
                include_attempt_count_in_response: vh.include_attempt_count_in_response,
                require_tls: vh.require_tls,
            });
        }
        // Longest wildcard wins, as in Envoy.
        suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        prefixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        let internal_only_headers = rc
            .internal_only_headers
            .iter()
            .enumerate()
            .map(|(i, h)| header_name(h, &format!("{path}.internal_only_headers[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        Ok(RouteTable {
            name: rc.name.clone(),
            vhosts,
            exact,
            suffixes,
            prefixes,
            any,
            ignore_port: rc.ignore_port_in_host_matching.unwrap_or(false),
            request_headers: HeaderOps::from_wire(
                &rc.request_headers_to_add,
                &rc.request_headers_to_remove,
                path,
                "request_headers_to_add",
                "request_headers_to_remove",
            )?,
            response_headers: HeaderOps::from_wire(
                &rc.response_headers_to_add,
                &rc.response_headers_to_remove,
                path,
                "response_headers_to_add",
                "response_headers_to_remove",
            )?,
            internal_only_headers,
            on_demand: rc.vhds.is_some(),
        })
    }
}

impl Route {
    fn from_wire(r: &wire::Route, path: &str, clusters: &ClusterNames) -> Result<Self> {
        let m = &r.match_;
        let mpath = format!("{path}.match");
        let specs = [m.prefix.is_some(), m.path.is_some(), m.safe_regex.is_some(), m.path_separated_prefix.is_some()];
        let n = specs.iter().filter(|s| **s).count();
        if n != 1 {
            return Err(ConfigError::new(mpath, "exactly one of prefix, path, safe_regex or path_separated_prefix is required"));
        }
        let case_sensitive = m.case_sensitive.unwrap_or(true);
        let path_match = if let Some(p) = &m.prefix {
            PathMatch::Prefix(p.clone())
        } else if let Some(p) = &m.path {
            PathMatch::Exact(p.clone())
        } else if let Some(r) = &m.safe_regex {
            let re = if case_sensitive { r.regex.clone() } else { format!("(?i){}", r.regex) };
            PathMatch::Regex(full_regex(&re, &format!("{mpath}.safe_regex.regex"))?)
        } else if let Some(p) = &m.path_separated_prefix {
            if !p.starts_with('/') || (p.len() > 1 && p.ends_with('/')) || p.contains('?') || p.contains('#') {
                return Err(ConfigError::new(
                    format!("{mpath}.path_separated_prefix"),
                    format!("{p:?} must start with '/', not end with '/', and contain no '?' or '#'"),
                ));
            }
            PathMatch::SeparatedPrefix(p.clone())
        } else {
            return Err(ConfigError::new(mpath, "missing path specifier"));
        };
        let headers = m
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| HeaderMatch::from_wire(h, &format!("{mpath}.headers[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        let mut query = Vec::new();
        for (i, q) in m.query_parameters.iter().enumerate() {
            let qp = format!("{mpath}.query_parameters[{i}]");
            let value = match (&q.string_match, q.present_match) {
                (Some(s), None) => Some(string_match(s, &format!("{qp}.string_match"))?),
                (None, Some(true)) | (None, None) => None,
                (None, Some(false)) => return Err(ConfigError::new(format!("{qp}.present_match"), "must be true when set")),
                (Some(_), Some(_)) => return Err(ConfigError::new(qp, "string_match and present_match are mutually exclusive")),
            };
            query.push(QueryMatch { name: q.name.clone(), value });
        }
        let matcher = RouteMatcher { path: path_match, case_sensitive, headers, query, grpc: m.grpc.is_some() };

        let action = match (&r.route, &r.redirect, &r.direct_response) {
            (Some(a), None, None) => RouteAction::Forward(Box::new(forward(a, &format!("{path}.route"), clusters)?)),
            (None, Some(rd), None) => RouteAction::Redirect(Box::new(redirect(rd, &format!("{path}.redirect"))?)),
            (None, None, Some(d)) => {
                let dpath = format!("{path}.direct_response");
                let status = u16::try_from(d.status)
                    .ok()
                    .and_then(|s| http::StatusCode::from_u16(s).ok())
                    .filter(|s| (200..600).contains(&s.as_u16()))
                    .ok_or_else(|| ConfigError::new(format!("{dpath}.status"), format!("{} is not in [200, 600)", d.status)))?;
                let body = match &d.body {
                    None => None,
                    Some(ds) => Some(data_source(ds, &format!("{dpath}.body"))?),
                };
                RouteAction::Direct { status, body }
            }
            _ => return Err(ConfigError::new(path, "exactly one of route, redirect or direct_response is required")),
        };
        Ok(Route {
            name: r.name.clone(),
            matcher,
            action,
            faults: per_filter_faults(&r.typed_per_filter_config, path)?,
            request_headers: HeaderOps::from_wire(
                &r.request_headers_to_add,
                &r.request_headers_to_remove,
                path,
                "request_headers_to_add",
                "request_headers_to_remove",
            )?,
            response_headers: HeaderOps::from_wire(
                &r.response_headers_to_add,
                &r.response_headers_to_remove,
                path,
                "response_headers_to_add",
                "response_headers_to_remove",
            )?,
            operation: r.decorator.as_ref().map(|d| d.operation.clone()),
        })
    }
}

pub(crate) fn data_source(ds: &weft_xds::core::DataSource, path: &str) -> Result<Bytes> {
    match (&ds.inline_string, &ds.inline_bytes, &ds.filename) {
        (Some(s), None, None) => Ok(Bytes::from(s.clone())),
        (None, Some(b), None) => {
            decode_base64(b).map(Bytes::from).ok_or_else(|| ConfigError::new(format!("{path}.inline_bytes"), "not valid base64"))
        }
        (None, None, Some(f)) => {
            std::fs::read(f).map(Bytes::from).map_err(|e| ConfigError::new(format!("{path}.filename"), format!("cannot read {f:?}: {e}")))
        }
        _ => Err(ConfigError::new(path, "exactly one of inline_string, inline_bytes or filename is required")),
    }
}

/// Standard base64 (proto3 JSON `bytes`), padding optional.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

fn forward(a: &wire::RouteAction, path: &str, clusters: &ClusterNames) -> Result<ForwardAction> {
    let cluster = match (&a.cluster, &a.weighted_clusters, &a.cluster_header) {
        (Some(c), None, None) => {
            clusters.check(c, &format!("{path}.cluster"))?;
            ClusterSpecifier::Single(c.clone())
        }
        (None, Some(w), None) => {
            let wpath = format!("{path}.weighted_clusters");
            let mut list = Vec::new();
            for (i, c) in w.clusters.iter().enumerate() {
                let cpath = format!("{wpath}.clusters[{i}]");
                clusters.check(&c.name, &format!("{cpath}.name"))?;
                list.push(WeightedCluster {
                    name: c.name.clone(),
                    weight: c.weight,
                    request_headers: HeaderOps::from_wire(
                        &c.request_headers_to_add,
                        &c.request_headers_to_remove,
                        &cpath,
                        "request_headers_to_add",
                        "request_headers_to_remove",
                    )?,
                    response_headers: HeaderOps::from_wire(
                        &c.response_headers_to_add,
                        &c.response_headers_to_remove,
                        &cpath,
                        "response_headers_to_add",
                        "response_headers_to_remove",
                    )?,
                    host_rewrite: c
                        .host_rewrite_literal
                        .as_deref()
                        .map(|h| header_value(h, &format!("{cpath}.host_rewrite_literal")))
                        .transpose()?,
                });
            }
            let total: u64 = list.iter().map(|c| u64::from(c.weight)).sum();
            if let Some(t) = w.total_weight {
                if u64::from(t) != total {
                    return Err(ConfigError::new(
                        format!("{wpath}.total_weight"),
                        format!("sum of weights ({total}) does not equal total_weight ({t})"),
                    ));
                }
            }
            if total == 0 {
                return Err(ConfigError::new(format!("{wpath}.clusters"), "the sum of weights must be greater than zero"));
            }
            ClusterSpecifier::Weighted { clusters: list, total }
        }
        (None, None, Some(h)) => ClusterSpecifier::Header(header_name(h, &format!("{path}.cluster_header"))?),
        _ => return Err(ConfigError::new(path, "exactly one of cluster, weighted_clusters or cluster_header is required")),
    };
    if a.prefix_rewrite.is_some() && a.regex_rewrite.is_some() {
        return Err(ConfigError::new(path, "prefix_rewrite and regex_rewrite are mutually exclusive"));
    }
    let mut hash_policy = Vec::new();
    for (i, h) in a.hash_policy.iter().enumerate() {
        let hp = format!("{path}.hash_policy[{i}]");
        let key = match (&h.header, &h.cookie, &h.connection_properties, &h.query_parameter) {
            (Some(hh), None, None, None) => HashKey::Header(header_name(&hh.header_name, &format!("{hp}.header.header_name"))?),
            (None, Some(c), None, None) => {
                // With a TTL Envoy mints the cookie when it is missing; weft does not yet, and
                // would silently lose stickiness, so it refuses.
                if c.ttl.is_some() {
                    return Err(ConfigError::new(format!("{hp}.cookie.ttl"), "not supported: weft does not generate affinity cookies yet"));
                }
                HashKey::Cookie { name: c.name.clone(), ttl: None, path: c.path.clone() }
            }
            (None, None, Some(cp), None) if cp.source_ip => HashKey::SourceIp,
            (None, None, None, Some(q)) => HashKey::QueryParameter(q.name.clone()),
            _ => {
                return Err(ConfigError::new(
                    hp,
                    "exactly one of header, cookie, connection_properties.source_ip or query_parameter is required",
                ))
            }
        };
        hash_policy.push(HashPolicy { key, terminal: h.terminal });
    }
    let mut websocket = None;
    for (i, u) in a.upgrade_configs.iter().enumerate() {
        if u.upgrade_type.eq_ignore_ascii_case("websocket") {
            websocket = Some(u.enabled.unwrap_or(true));
        } else {
            return Err(ConfigError::new(
                format!("{path}.upgrade_configs[{i}].upgrade_type"),
                format!("{:?} is not supported", u.upgrade_type),
            ));
        }
    }
    let timeout = match a.timeout {
        Some(d) if d.0.is_zero() => None,
        Some(d) => Some(d.0),
        None => Some(Duration::from_secs(15)),
    };
    let mut mirrors = Vec::new();
    for (i, m) in a.request_mirror_policies.iter().enumerate() {
        let mp = format!("{path}.request_mirror_policies[{i}]");
        if m.cluster.is_empty() {
            return Err(ConfigError::new(format!("{mp}.cluster"), "required"));
        }
        clusters.check(&m.cluster, &format!("{mp}.cluster"))?;
        mirrors.push(MirrorPolicy {
            cluster: m.cluster.clone(),
            per_million: m.runtime_fraction.as_ref().map_or(1_000_000, |f| super::listener::per_million(&Some(f.default_value.clone()))),
            shadow_suffix: !m.disable_shadow_host_suffix_append.unwrap_or(false),
        });
    }
    if a.host_rewrite_literal.is_some() && a.auto_host_rewrite == Some(true) {
        return Err(ConfigError::new(path, "host_rewrite_literal and auto_host_rewrite are mutually exclusive"));
    }
    Ok(ForwardAction {
        cluster,
        prefix_rewrite: a.prefix_rewrite.clone(),
        regex_rewrite: a.regex_rewrite.as_ref().map(|r| rewrite(r, &format!("{path}.regex_rewrite"))).transpose()?,
        host_rewrite: a.host_rewrite_literal.as_deref().map(|h| header_value(h, &format!("{path}.host_rewrite_literal"))).transpose()?,
        auto_host_rewrite: a.auto_host_rewrite.unwrap_or(false),
        timeout,
        idle_timeout: a.idle_timeout.map(|d| d.0).filter(|d| !d.is_zero()),
        retry: a.retry_policy.as_ref().map(|r| RetryPolicy::from_wire(r, &format!("{path}.retry_policy"))).transpose()?,
        hash_policy,
        websocket,
        mirrors,
    })
}

fn redirect(r: &wire::RedirectAction, path: &str) -> Result<RedirectAction> {
    let scheme = match (r.https_redirect, &r.scheme_redirect) {
        (Some(true), Some(_)) => return Err(ConfigError::new(path, "https_redirect and scheme_redirect are mutually exclusive")),
        (Some(true), None) => Some("https".to_string()),
        (_, Some(s)) => Some(s.to_ascii_lowercase()),
        _ => None,
    };
    let specs = [r.path_redirect.is_some(), r.prefix_rewrite.is_some(), r.regex_rewrite.is_some()];
    if specs.iter().filter(|s| **s).count() > 1 {
        return Err(ConfigError::new(path, "path_redirect, prefix_rewrite and regex_rewrite are mutually exclusive"));
    }
    let status = match r.response_code {
        wire::RedirectResponseCode::MovedPermanently => http::StatusCode::MOVED_PERMANENTLY,
        wire::RedirectResponseCode::Found => http::StatusCode::FOUND,
        wire::RedirectResponseCode::SeeOther => http::StatusCode::SEE_OTHER,
        wire::RedirectResponseCode::TemporaryRedirect => http::StatusCode::TEMPORARY_REDIRECT,
        wire::RedirectResponseCode::PermanentRedirect => http::StatusCode::PERMANENT_REDIRECT,
    };
    Ok(RedirectAction {
        scheme,
        host: r.host_redirect.clone(),
        port: r
            .port_redirect
            .map(|p| u16::try_from(p).map_err(|_| ConfigError::new(format!("{path}.port_redirect"), format!("{p} is out of range"))))
            .transpose()?,
        path: r.path_redirect.clone(),
        prefix_rewrite: r.prefix_rewrite.clone(),
        regex_rewrite: r.regex_rewrite.as_ref().map(|x| rewrite(x, &format!("{path}.regex_rewrite"))).transpose()?,
        status,
        strip_query: r.strip_query,
    })
}
