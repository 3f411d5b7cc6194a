//! Route configurations (RDS): one per outbound HTTP port, a virtual host per service with the
//! service's VirtualService routes, then the catch-all that the outbound traffic policy decides.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::common::fault::v3 as common_fault;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, RegexMatchAndSubstitute, RegexMatcher, StringMatcher};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};
use weft_api::networking::{self as net, OutboundMode, StringMatch};
use weft_api::Resource;

use super::pb::{self, core, route};
use super::{outbound_cluster_name, Scope, PASSTHROUGH};
use crate::model::{labels_match, Service};
use crate::protocol::Protocol;

use route::route::Action;
use route::route_action::{ClusterSpecifier, HashPolicy};
use route::route_match::PathSpecifier;

const DEFAULT_RETRY_ON: &str = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// The HTTP filter a route's `typed_per_filter_config` configures fault injection for.
const FAULT_FILTER: &str = "envoy.filters.http.fault";

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
            let domains: Vec<String> = domains(svc, port, scope.node).into_iter().filter(|d| used.insert(d.clone())).collect();
            if domains.is_empty() {
                continue;
            }
            let routes = routes_for(scope, svc, port);
            vhosts.push(virtual_host(format!("{}:{port}", svc.hostname), domains, routes));
        }
        vhosts.push(catch_all(scope));
        let name = port.to_string();
        out.routes.insert(name.clone(), route_configuration(name, vhosts));
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
            let domains: Vec<String> = domains(svc, p.port, scope.node)
                .into_iter()
                .filter(|d| p.port == 80 || d.contains(':'))
                .filter(|d| used.insert(d.clone()))
                .collect();
            if domains.is_empty() {
                continue;
            }
            let routes = routes_for(scope, svc, p.port);
            vhosts.push(virtual_host(format!("{}:{}", svc.hostname, p.port), domains, routes));
        }
    }
    vhosts.push(catch_all(scope));
    let name = super::HTTP_PROXY_ROUTE;
    out.routes.insert(name.into(), route_configuration(name.into(), vhosts));
}

/// A route configuration of these virtual hosts. The clusters its routes name are not checked
/// against the clusters Envoy has (`validate_clusters: false`).
fn route_configuration(name: String, virtual_hosts: Vec<pb::VirtualHost>) -> pb::RouteConfiguration {
    pb::RouteConfiguration { name, virtual_hosts, validate_clusters: pb::boolv(false), ..Default::default() }
}

fn virtual_host(name: String, domains: Vec<String>, routes: Vec<route::Route>) -> pb::VirtualHost {
    pb::VirtualHost { name, domains, routes, ..Default::default() }
}

/// Where a request for a host no service claims goes: by the outbound traffic policy, Istio's
/// `allow_any` (PassthroughCluster) or `block_all` (502).
fn catch_all(scope: &Scope<'_>) -> pb::VirtualHost {
    let (name, action) = match scope.outbound {
        OutboundMode::AllowAny => ("allow_any", Action::Route(forward_to(PASSTHROUGH.into()))),
        OutboundMode::RegistryOnly => {
            ("block_all", Action::DirectResponse(route::DirectResponseAction { status: 502, ..Default::default() }))
        }
    };
    let every_request = route::Route { name: name.into(), r#match: match_all(), action: Some(action), ..Default::default() };
    virtual_host(name.into(), vec!["*".into()], vec![every_request])
}

/// Forwarding to `cluster` with the route timeout off (`0s`), Istio's default.
pub(super) fn forward_to(cluster: String) -> route::RouteAction {
    route::RouteAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster)),
        timeout: pb::duration(Duration::ZERO),
        ..Default::default()
    }
}

/// Every path (prefix `/`).
pub(super) fn match_all() -> Option<route::RouteMatch> {
    Some(route::RouteMatch { path_specifier: Some(PathSpecifier::Prefix("/".into())), ..Default::default() })
}

/// The names a caller may use for `svc`: Istio's list (FQDN, `name.ns.svc`, `name.ns`, the short
/// name from the same namespace, the VIP), each with and without `:port` so matching does not
/// depend on `ignore_port_in_host_matching`.
pub fn domains(svc: &Service, port: u16, node: &crate::node::ProxyNode) -> Vec<String> {
    let proxy_ns = node.namespace.as_str();
    let mut names = vec![svc.hostname.clone()];
    if let Some(short) = &svc.short_name {
        names.push(format!("{short}.{}.svc", svc.namespace));
        names.push(format!("{short}.{}", svc.namespace));
        if svc.namespace == proxy_ns {
            names.push(short.clone());
        }
    }
    if let Some(vip) = svc.vip_for(node.dns.auto_allocated()) {
        names.push(vip.to_string());
    }
    let mut out = Vec::new();
    for n in names {
        out.push(format!("{n}:{port}"));
        out.push(n);
    }
    out
}

fn routes_for(scope: &Scope<'_>, svc: &Service, port: u16) -> Vec<route::Route> {
    let hash = hash_policy(scope, &svc.hostname, port);
    let Some(vs) = scope.virtual_service(&svc.hostname) else {
        let action = route::RouteAction {
            retry_policy: Some(default_retry()),
            hash_policy: hash,
            ..forward_to(outbound_cluster_name(port, "", &svc.hostname))
        };
        return vec![route::Route {
            name: "default".into(),
            r#match: match_all(),
            action: Some(Action::Route(action)),
            ..Default::default()
        }];
    };
    vs_routes(scope, vs, port, Bound::Mesh, &hash)
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
pub fn vs_routes(
    scope: &Scope<'_>,
    vs: &Resource<net::VirtualService>,
    port: u16,
    bound: Bound<'_>,
    hash: &[HashPolicy],
) -> Vec<route::Route> {
    let mut routes = Vec::new();
    for r in &vs.spec.http {
        let matches: Vec<&net::HttpMatchRequest> =
            r.matches.iter().filter(|m| match_applies(scope, m, port, bound, &vs.namespace)).collect();
        if !r.matches.is_empty() && matches.is_empty() {
            continue;
        }
        let base = route::Route { metadata: origin(vs), ..action(scope, r, &vs.namespace, port, hash) };
        let name = r.name.clone().unwrap_or_default();
        if matches.is_empty() {
            routes.push(route::Route { name: name.clone(), r#match: match_all(), ..base.clone() });
        }
        for m in matches {
            let name = match &m.name {
                Some(mn) if !name.is_empty() => format!("{name}.{mn}"),
                Some(mn) => mn.clone(),
                None => name.clone(),
            };
            routes.push(route::Route { name, r#match: Some(route_match(m)), ..base.clone() });
        }
    }
    routes
}

/// Which VirtualService a route came from, where Istio writes it (istioctl's
/// `proxy-config routes` VIRTUAL SERVICE column reads it).
fn origin(vs: &Resource<net::VirtualService>) -> Option<core::Metadata> {
    let config = format!("/apis/networking.istio.io/v1/namespaces/{}/virtual-service/{}", vs.namespace, vs.name);
    pb::metadata([("istio", pb::fields([("config", pb::string(config))]))])
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

/// An RE2 regex (no engine named: Envoy's default, Google RE2).
fn regex(r: &str) -> RegexMatcher {
    RegexMatcher { regex: r.into(), ..Default::default() }
}

fn string_matcher(sm: &StringMatch) -> StringMatcher {
    let pattern = match sm {
        StringMatch::Exact(s) => MatchPattern::Exact(s.clone()),
        StringMatch::Prefix(s) => MatchPattern::Prefix(s.clone()),
        StringMatch::Regex(s) => MatchPattern::SafeRegex(regex(s)),
    };
    StringMatcher { match_pattern: Some(pattern), ..Default::default() }
}

/// A header condition; `invert_match` for Istio's `withoutHeaders`.
fn header_matcher(name: &str, sm: &StringMatch, invert_match: bool) -> route::HeaderMatcher {
    use route::header_matcher::HeaderMatchSpecifier;
    route::HeaderMatcher {
        name: name.into(),
        invert_match,
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string_matcher(sm))),
        ..Default::default()
    }
}

fn query_matcher(name: &str, sm: &StringMatch) -> route::QueryParameterMatcher {
    use route::query_parameter_matcher::QueryParameterMatchSpecifier;
    route::QueryParameterMatcher {
        name: name.into(),
        query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::StringMatch(string_matcher(sm))),
    }
}

fn route_match(m: &net::HttpMatchRequest) -> route::RouteMatch {
    let path = match &m.uri {
        Some(StringMatch::Exact(p)) => PathSpecifier::Path(p.clone()),
        Some(StringMatch::Prefix(p)) => PathSpecifier::Prefix(p.clone()),
        Some(StringMatch::Regex(r)) => PathSpecifier::SafeRegex(regex(r)),
        None => PathSpecifier::Prefix("/".into()),
    };
    let mut headers = Vec::new();
    for (name, sm) in &m.headers {
        headers.push(header_matcher(name, sm, false));
    }
    for (name, sm) in &m.without_headers {
        headers.push(header_matcher(name, sm, true));
    }
    for (pseudo, sm) in [(":method", &m.method), (":authority", &m.authority), (":scheme", &m.scheme)] {
        if let Some(sm) = sm {
            headers.push(header_matcher(pseudo, sm, false));
        }
    }
    route::RouteMatch {
        path_specifier: Some(path),
        case_sensitive: if m.ignore_uri_case { pb::boolv(false) } else { None },
        headers,
        query_parameters: m.query_params.iter().map(|(name, sm)| query_matcher(name, sm)).collect(),
        ..Default::default()
    }
}

/// Istio's retry policy shape: retry on other hosts than those already tried.
fn retry_policy(retry_on: String, attempts: u32) -> route::RetryPolicy {
    use route::retry_policy::{retry_host_predicate::ConfigType, RetryHostPredicate};
    let previous_hosts = RetryHostPredicate {
        name: "envoy.retry_host_predicates.previous_hosts".into(),
        config_type: Some(ConfigType::TypedConfig(pb::any(&PreviousHostsPredicate {}))),
    };
    route::RetryPolicy {
        retry_on,
        num_retries: pb::u32v(attempts),
        host_selection_retry_max_attempts: 5,
        retry_host_predicate: vec![previous_hosts],
        ..Default::default()
    }
}

fn default_retry() -> route::RetryPolicy {
    retry_policy(DEFAULT_RETRY_ON.into(), 2)
}

/// A route's retries: Istio's default when it sets none, none when it sets 0 attempts.
fn retries(r: Option<&net::HttpRetry>) -> Option<route::RetryPolicy> {
    match r {
        None => Some(default_retry()),
        Some(rt) if rt.attempts > 0 => Some(configured_retry(rt)),
        Some(_) => None,
    }
}

/// `rt` as a retry policy: status codes in `retryOn` become retriable status codes, with
/// `retriable-status-codes` among the conditions so Envoy retries on them.
fn configured_retry(rt: &net::HttpRetry) -> route::RetryPolicy {
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
    // Only positive attempts come here; past u32 they are as good as unlimited.
    let attempts = u32::try_from(rt.attempts).unwrap_or(u32::MAX);
    route::RetryPolicy {
        retriable_status_codes: codes,
        per_try_timeout: rt.per_try_timeout.and_then(|t| pb::duration(t.0)),
        ..retry_policy(on.join(","), attempts)
    }
}

/// Istio's percentages become Envoy's fractional percents per million.
fn fraction(p: f64) -> Option<FractionalPercent> {
    // `as` saturates: a percentage outside 0-100 cannot wrap around.
    Some(FractionalPercent { numerator: (p * 10_000.0).round() as u32, denominator: DenominatorType::Million as i32 })
}

/// An Istio `headers:` block as Envoy's four header lists, on a route or a weighted cluster.
#[derive(Default)]
struct HeaderLists {
    request_add: Vec<core::HeaderValueOption>,
    request_remove: Vec<String>,
    response_add: Vec<core::HeaderValueOption>,
    response_remove: Vec<String>,
}

impl HeaderLists {
    fn of(h: Option<&net::Headers>) -> Self {
        let (request_add, request_remove) = header_ops(h.and_then(|h| h.request.as_ref()));
        let (response_add, response_remove) = header_ops(h.and_then(|h| h.response.as_ref()));
        HeaderLists { request_add, request_remove, response_add, response_remove }
    }

    /// These lists with each one `later` has (non-empty) in place of this one's: a single
    /// destination's `headers:` list replaces its route's, it is not appended to it.
    fn overridden_by(self, later: HeaderLists) -> Self {
        fn pick<T>(earlier: Vec<T>, later: Vec<T>) -> Vec<T> {
            if later.is_empty() {
                earlier
            } else {
                later
            }
        }
        HeaderLists {
            request_add: pick(self.request_add, later.request_add),
            request_remove: pick(self.request_remove, later.request_remove),
            response_add: pick(self.response_add, later.response_add),
            response_remove: pick(self.response_remove, later.response_remove),
        }
    }

    /// A route doing `action` with these header changes.
    fn route(self, action: Action) -> route::Route {
        route::Route {
            request_headers_to_add: self.request_add,
            request_headers_to_remove: self.request_remove,
            response_headers_to_add: self.response_add,
            response_headers_to_remove: self.response_remove,
            action: Some(action),
            ..Default::default()
        }
    }

    /// A weighted cluster with these header changes.
    fn cluster_weight(self, name: String, weight: u32) -> route::weighted_cluster::ClusterWeight {
        route::weighted_cluster::ClusterWeight {
            name,
            weight: pb::u32v(weight),
            request_headers_to_add: self.request_add,
            request_headers_to_remove: self.request_remove,
            response_headers_to_add: self.response_add,
            response_headers_to_remove: self.response_remove,
            ..Default::default()
        }
    }
}

/// `set` (overwrite) then `add` (append) headers, and the headers to remove.
fn header_ops(ops: Option<&net::HeaderOperations>) -> (Vec<core::HeaderValueOption>, Vec<String>) {
    use core::header_value_option::HeaderAppendAction;
    let Some(ops) = ops else {
        return Default::default();
    };
    let set = ops.set.iter().map(|(k, v)| header_value(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd));
    let add = ops.add.iter().map(|(k, v)| header_value(k, v, HeaderAppendAction::AppendIfExistsOrAdd));
    (set.chain(add).collect(), ops.remove.clone())
}

fn header_value(key: &str, value: &str, action: core::header_value_option::HeaderAppendAction) -> core::HeaderValueOption {
    core::HeaderValueOption {
        header: Some(core::HeaderValue { key: key.into(), value: value.into(), ..Default::default() }),
        append_action: action as i32,
        ..Default::default()
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

/// What `r` does — redirect, respond, or forward — as a route with no match or name yet.
fn action(scope: &Scope<'_>, r: &net::HttpRoute, vs_ns: &str, port: u16, hash: &[HashPolicy]) -> route::Route {
    let headers = HeaderLists::of(r.headers.as_ref());
    if let Some(rd) = &r.redirect {
        return headers.route(Action::Redirect(redirect(rd)));
    }
    if let Some(dr) = &r.direct_response {
        return headers.route(Action::DirectResponse(direct_response(dr)));
    }
    let live: Vec<&net::HttpRouteDestination> = r.route.iter().filter(|d| d.weight != Some(0) || r.route.len() == 1).collect();
    let (target, headers) = match live.as_slice() {
        [only] => (
            ClusterSpecifier::Cluster(destination_cluster(scope, &only.destination, vs_ns, port)),
            headers.overridden_by(HeaderLists::of(only.headers.as_ref())),
        ),
        _ => (ClusterSpecifier::WeightedClusters(weighted_clusters(scope, &live, vs_ns, port)), headers),
    };
    let mut forward = route::RouteAction {
        cluster_specifier: Some(target),
        timeout: pb::duration(r.timeout.map_or(Duration::ZERO, |t| t.0)),
        retry_policy: retries(r.retries.as_ref()),
        request_mirror_policies: mirrors(scope, r, vs_ns, port),
        hash_policy: hash.to_vec(),
        ..Default::default()
    };
    if let Some(rw) = &r.rewrite {
        rewrite(&mut forward, rw);
    }
    let mut out = headers.route(Action::Route(forward));
    if let Some(f) = &r.fault {
        out.typed_per_filter_config = pb::map([(FAULT_FILTER.to_string(), pb::any(&http_fault(f)))]);
    }
    out
}

fn redirect(rd: &net::HttpRedirect) -> route::RedirectAction {
    use route::redirect_action::{PathRewriteSpecifier, RedirectResponseCode as Code, SchemeRewriteSpecifier};
    let code = match rd.redirect_code.unwrap_or(301) {
        302 => Code::Found,
        303 => Code::SeeOther,
        307 => Code::TemporaryRedirect,
        308 => Code::PermanentRedirect,
        _ => Code::MovedPermanently,
    };
    route::RedirectAction {
        path_rewrite_specifier: rd.uri.clone().map(PathRewriteSpecifier::PathRedirect),
        host_redirect: rd.authority.clone().unwrap_or_default(),
        port_redirect: rd.port.unwrap_or_default(),
        scheme_rewrite_specifier: rd.scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
        response_code: code as i32,
        ..Default::default()
    }
}

fn direct_response(dr: &net::HttpDirectResponse) -> route::DirectResponseAction {
    let body = dr.body.as_ref().and_then(|b| b.string.as_deref()).and_then(pb::inline_string);
    route::DirectResponseAction { status: dr.status, body, ..Default::default() }
}

/// The clusters of a split, with their weights and their own header changes.
fn weighted_clusters(scope: &Scope<'_>, split: &[&net::HttpRouteDestination], vs_ns: &str, port: u16) -> route::WeightedCluster {
    let clusters = split
        .iter()
        .map(|d| {
            // Validation keeps weights within 0-100.
            let weight = u32::try_from(d.weight.unwrap_or(0)).unwrap_or(0);
            let name = destination_cluster(scope, &d.destination, vs_ns, port);
            HeaderLists::of(d.headers.as_ref()).cluster_weight(name, weight)
        })
        .collect();
    route::WeightedCluster { clusters, ..Default::default() }
}

fn rewrite(forward: &mut route::RouteAction, rw: &net::HttpRewrite) {
    use route::route_action::HostRewriteSpecifier;
    if let Some(u) = &rw.uri {
        forward.prefix_rewrite = u.clone();
    }
    if let Some(au) = &rw.authority {
        forward.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(au.clone()));
    }
    if let Some(rr) = &rw.uri_regex_rewrite {
        forward.regex_rewrite = Some(RegexMatchAndSubstitute { pattern: Some(regex(&rr.pattern)), substitution: rr.rewrite.clone() });
    }
}

/// `r`'s mirrors (the older single `mirror`, then `mirrors`), each to its share of requests;
/// one with a 0% share is left out.
fn mirrors(scope: &Scope<'_>, r: &net::HttpRoute, vs_ns: &str, port: u16) -> Vec<route::route_action::RequestMirrorPolicy> {
    let single = r.mirror.as_ref().map(|m| (m, r.mirror_percentage.map(|p| p.value).or(r.mirror_percent.map(f64::from))));
    let listed = r.mirrors.iter().map(|m| (&m.destination, m.percentage.map(|p| p.value)));
    single
        .into_iter()
        .chain(listed)
        .map(|(d, pct)| (d, pct.unwrap_or(100.0)))
        .filter(|(_, pct)| *pct > 0.0)
        .map(|(d, pct)| route::route_action::RequestMirrorPolicy {
            cluster: destination_cluster(scope, d, vs_ns, port),
            runtime_fraction: Some(core::RuntimeFractionalPercent { default_value: fraction(pct), ..Default::default() }),
            ..Default::default()
        })
        .collect()
}

/// `f` as the fault filter's per-route configuration.
fn http_fault(f: &net::HttpFaultInjection) -> fault::HttpFault {
    fault::HttpFault { delay: f.delay.as_ref().and_then(fault_delay), abort: f.abort.as_ref().and_then(fault_abort), ..Default::default() }
}

/// A fixed delay; none without one.
fn fault_delay(d: &net::FaultDelay) -> Option<common_fault::FaultDelay> {
    use common_fault::fault_delay::FaultDelaySecifier;
    let fixed = d.fixed_delay?;
    let pct = d.percentage.map(|p| p.value).or(d.percent.map(f64::from)).unwrap_or(100.0);
    Some(common_fault::FaultDelay {
        percentage: fraction(pct),
        fault_delay_secifier: pb::duration(fixed.0).map(FaultDelaySecifier::FixedDelay),
    })
}

/// An abort with an HTTP status, else a gRPC one; none with neither.
fn fault_abort(ab: &net::FaultAbort) -> Option<fault::FaultAbort> {
    use fault::fault_abort::ErrorType;
    let error = match (ab.http_status, &ab.grpc_status) {
        (Some(s), _) => ErrorType::HttpStatus(s),
        (None, Some(g)) => ErrorType::GrpcStatus(grpc_code(g)),
        (None, None) => return None,
    };
    let pct = ab.percentage.map(|p| p.value).unwrap_or(100.0);
    Some(fault::FaultAbort { percentage: fraction(pct), error_type: Some(error), ..Default::default() })
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

/// Consistent-hash keys from the DestinationRule become the route's hash policy (empty: none).
pub fn hash_policy(scope: &Scope<'_>, host: &str, port: u16) -> Vec<HashPolicy> {
    hash_key(scope, host, port).map(|key| HashPolicy { policy_specifier: Some(key), ..Default::default() }).into_iter().collect()
}

/// The key the DestinationRule for `host` hashes `port`'s requests on, if it names one.
fn hash_key(scope: &Scope<'_>, host: &str, port: u16) -> Option<route::route_action::hash_policy::PolicySpecifier> {
    use route::route_action::hash_policy::{ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter};
    let dr = scope.model.destination_rule(host, &scope.node.namespace)?;
    let pp = super::cluster::port_policy(dr.spec.traffic_policy.as_ref(), port);
    let h = pp.load_balancer?.consistent_hash?;
    let key = if let Some(header_name) = h.http_header_name {
        PolicySpecifier::Header(Header { header_name, ..Default::default() })
    } else if let Some(c) = h.http_cookie {
        let ttl = c.ttl.and_then(|t| pb::duration(t.0));
        PolicySpecifier::Cookie(Cookie { name: c.name, path: c.path.unwrap_or_default(), ttl, ..Default::default() })
    } else if h.use_source_ip == Some(true) {
        PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
    } else if let Some(name) = h.http_query_parameter_name {
        PolicySpecifier::QueryParameter(QueryParameter { name })
    } else {
        return None;
    };
    Some(key)
}
