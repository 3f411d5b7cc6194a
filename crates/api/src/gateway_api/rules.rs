//! A route's rules as Istio routes: matches (a path prefix matching whole segments), filters,
//! backends with weights and ReferenceGrants, and Gateway API's precedence between rules.

use serde_json::{json, Map, Value};

use super::convert::{granted, Input, Meta, DOMAIN};
use super::types::*;

/// What a rule turned into, for one parent: HTTP routes with their precedence, or L4 routes.
pub(super) enum Converted {
    Http(Vec<(Precedence, Value)>),
    L4(Vec<Value>),
}

/// Gateway API's order between rules of one host: exact path before prefix before regex
/// before none, longer paths first, then a method, then more header and query matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Precedence {
    path_kind: u8,
    path_len: usize,
    method: bool,
    headers: usize,
    query: usize,
}

/// The precedence of the path prefix `/` (also that of a rule without matches).
const ROOT: Precedence = Precedence { path_kind: 2, path_len: 1, method: false, headers: 0, query: 0 };

/// A rule that cannot be served: the route's ResolvedRefs reason and message.
pub(super) struct RuleError {
    pub reason: &'static str,
    pub message: String,
}

/// What converting a rule needs to know.
pub(super) struct Ctx<'a> {
    pub input: &'a Input,
    pub kind: &'a str,
    pub meta: &'a Meta,
    /// Whether the parent is a Gateway (ReferenceGrants apply) rather than a Service.
    pub gateway_parent: bool,
    /// Problems short of failing the rule (a backend not found), for ResolvedRefs.
    pub soft: Vec<RuleError>,
}

/// A backend as an Istio destination; `Ok(None)` when it does not resolve (soft: recorded in
/// `ctx.soft`), `Err` when the rule cannot be served at all.
fn destination(ctx: &mut Ctx<'_>, b: &BackendObjectRef) -> Result<Option<Value>, RuleError> {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    let ns = b.namespace.clone().unwrap_or_else(|| ctx.meta.namespace.clone());
    match (group, kind) {
        ("", "Service") => {
            if b.name.contains('.') {
                return Err(RuleError {
                    reason: "InvalidDestination",
                    message: format!("backendRef name {:?} is not a Service name", b.name),
                });
            }
            let Some(port) = b.port else {
                return Err(RuleError { reason: "InvalidDestination", message: "port is required in backendRef".into() });
            };
            if ctx.gateway_parent && !granted(ctx.input, ctx.kind, &ctx.meta.namespace, "Service", &ns, &b.name) {
                ctx.soft.push(RuleError {
                    reason: "RefNotPermitted",
                    message: format!(
                        "backendRef {ns}/{} not accessible to a {} in namespace {:?} (missing a ReferenceGrant?)",
                        b.name, ctx.kind, ctx.meta.namespace
                    ),
                });
                return Ok(None);
            }
            let host = format!("{}.{ns}.{DOMAIN}", b.name);
            if !ctx.input.services.contains_key(&(ns.clone(), b.name.clone())) {
                ctx.soft.push(RuleError { reason: "BackendNotFound", message: format!("backend({host}) not found") });
                return Ok(None);
            }
            Ok(Some(json!({"host": host, "port": {"number": port}})))
        }
        ("networking.istio.io", "Hostname") => {
            if b.namespace.is_some() {
                return Err(RuleError { reason: "InvalidDestination", message: "a Hostname backendRef takes no namespace".into() });
            }
            if !ctx.input.hosts.contains(&b.name) {
                ctx.soft.push(RuleError { reason: "BackendNotFound", message: format!("backend({}) not found", b.name) });
                return Ok(None);
            }
            let mut d = json!({"host": b.name});
            if let Some(port) = b.port {
                d["port"] = json!({"number": port});
            }
            Ok(Some(d))
        }
        _ => {
            ctx.soft.push(RuleError { reason: "InvalidKind", message: format!("backendRef kind {group}/{kind} is not supported") });
            Ok(None)
        }
    }
}

/// Weighted destinations (`route`), or a 500 when no backend is left (Gateway API's answer for
/// a rule whose backends are all invalid or weighted 0).
fn backends(ctx: &mut Ctx<'_>, refs: &[BackendRef], http: bool) -> Result<Option<Vec<Value>>, RuleError> {
    let mut out = Vec::new();
    for b in refs {
        let weight = b.weight.unwrap_or(1);
        let dest = destination(ctx, &b.object())?;
        let (Some(dest), true) = (dest, weight > 0) else { continue };
        let mut d = json!({"destination": dest, "weight": weight});
        if http {
            if let Some(h) = backend_headers(&b.filters)? {
                d["headers"] = h;
            }
        } else if !b.filters.is_empty() {
            return Err(RuleError { reason: "InvalidFilter", message: "backendRef filters are not supported on this route kind".into() });
        }
        out.push(d);
    }
    if out.is_empty() {
        return Ok(None);
    }
    if out.len() == 1 {
        if let Some(o) = out[0].as_object_mut() {
            o.remove("weight");
        }
    } else {
        let weights: Vec<u64> = out.iter().map(|d| d["weight"].as_u64().unwrap_or(0)).collect();
        for (d, w) in out.iter_mut().zip(percentages(&weights)) {
            d["weight"] = json!(w);
        }
    }
    Ok(Some(out))
}

/// Relative weights (Gateway API's) as percentages adding up to exactly 100 (Istio's): each
/// rounded down, the points left over going to the largest remainders, earliest first.
fn percentages(weights: &[u64]) -> Vec<u64> {
    let total: u64 = weights.iter().sum::<u64>().max(1);
    let mut out: Vec<u64> = weights.iter().map(|w| w * 100 / total).collect();
    let mut rest: Vec<(u64, usize)> = weights.iter().enumerate().map(|(i, w)| (w * 100 % total, i)).collect();
    rest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let left = 100 - out.iter().sum::<u64>();
    for (_, i) in rest.into_iter().take(left as usize) {
        out[i] += 1;
    }
    out
}

fn backend_headers(filters: &[HttpFilter]) -> Result<Option<Value>, RuleError> {
    let mut h = Map::new();
    for f in filters {
        match f.kind.as_str() {
            "RequestHeaderModifier" => {
                h.insert("request".into(), header_ops(f.request_header_modifier.as_ref()));
            }
            "ResponseHeaderModifier" => {
                h.insert("response".into(), header_ops(f.response_header_modifier.as_ref()));
            }
            other => return Err(RuleError { reason: "InvalidFilter", message: format!("unsupported backendRef filter type {other:?}") }),
        }
    }
    Ok((!h.is_empty()).then_some(Value::Object(h)))
}

fn header_ops(m: Option<&HeaderModifier>) -> Value {
    let Some(m) = m else { return json!({}) };
    let pairs = |hs: &[Header]| -> Map<String, Value> {
        let mut o = Map::new();
        for h in hs {
            o.entry(h.name.to_ascii_lowercase()).or_insert_with(|| json!(h.value));
        }
        o
    };
    let mut v = json!({});
    if !m.set.is_empty() {
        v["set"] = Value::Object(pairs(&m.set));
    }
    if !m.add.is_empty() {
        v["add"] = Value::Object(pairs(&m.add));
    }
    if !m.remove.is_empty() {
        v["remove"] = json!(m.remove);
    }
    v
}

fn string_match(kind: Option<&str>, value: &str) -> Result<Value, RuleError> {
    match kind.unwrap_or("Exact") {
        "Exact" => Ok(json!({"exact": value})),
        "RegularExpression" => Ok(json!({"regex": value})),
        other => Err(RuleError { reason: "InvalidConfiguration", message: format!("match type {other:?} is not supported") }),
    }
}

/// One HTTP match as Istio matches, with its precedence and, for a prefix, the prefix; a path
/// prefix matches whole segments (`/foo` takes `/foo` and `/foo/x`, not `/foobar`), so it
/// becomes an exact match and a prefix match on `<prefix>/`.
struct MatchParts {
    matches: Vec<(Value, Option<PrefixPart>)>,
    precedence: Precedence,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PrefixPart {
    /// The exact `/foo` of a prefix `/foo`.
    Whole,
    /// `/foo/…`.
    Below,
    /// The prefix `/`.
    Root,
}

/// Header (names case-insensitive) or query parameter matches; a name given twice: the first
/// counts, as Gateway API says.
fn value_matches(list: &[ValueMatch], lower: bool) -> Result<Value, RuleError> {
    let mut out = Map::new();
    for x in list {
        let name = if lower { x.name.to_ascii_lowercase() } else { x.name.clone() };
        if !out.contains_key(&name) {
            out.insert(name, string_match(x.kind.as_deref(), &x.value)?);
        }
    }
    Ok(Value::Object(out))
}

fn http_match(m: &HttpMatch) -> Result<MatchParts, RuleError> {
    let mut v = json!({});
    if !m.headers.is_empty() {
        v["headers"] = value_matches(&m.headers, true)?;
    }
    if !m.query_params.is_empty() {
        v["queryParams"] = value_matches(&m.query_params, false)?;
    }
    if let Some(method) = &m.method {
        v["method"] = json!({"exact": method});
    }
    let path = m.path.clone().unwrap_or_default();
    let value = path.value.unwrap_or_else(|| "/".into());
    let (kind, len, matches) = match path.kind.as_deref().unwrap_or("PathPrefix") {
        "Exact" => {
            v["uri"] = json!({"exact": value});
            (3, value.len(), vec![(v, None)])
        }
        "PathPrefix" => {
            let trimmed = if value == "/" { value.clone() } else { value.trim_end_matches('/').to_owned() };
            if trimmed == "/" {
                v["uri"] = json!({"prefix": "/"});
                (ROOT.path_kind, ROOT.path_len, vec![(v, Some(PrefixPart::Root))])
            } else {
                let mut whole = v.clone();
                whole["uri"] = json!({"exact": trimmed});
                v["uri"] = json!({"prefix": format!("{trimmed}/")});
                (2, trimmed.len(), vec![(whole, Some(PrefixPart::Whole)), (v, Some(PrefixPart::Below))])
            }
        }
        "RegularExpression" => {
            v["uri"] = json!({"regex": value});
            (1, value.len(), vec![(v, None)])
        }
        other => return Err(RuleError { reason: "InvalidConfiguration", message: format!("path match type {other:?} is not supported") }),
    };
    let precedence =
        Precedence { path_kind: kind, path_len: len, method: m.method.is_some(), headers: m.headers.len(), query: m.query_params.len() };
    Ok(MatchParts { matches, precedence })
}

pub(super) fn http_rule(ctx: &mut Ctx<'_>, rule: &HttpRule, index: usize) -> Result<Converted, RuleError> {
    for (set, what) in [(rule.retry.is_some(), "retry"), (rule.session_persistence.is_some(), "sessionPersistence")] {
        if set {
            return Err(RuleError { reason: "UnsupportedValue", message: format!("rules[{index}].{what} is not supported by weft yet") });
        }
    }
    let name = rule.name.clone().unwrap_or_else(|| format!("{}.{}.{index}", ctx.meta.namespace, ctx.meta.name));
    let mut base = json!({"name": name});
    let mut redirect: Option<&Redirect> = None;
    let mut rewrite: Option<&UrlRewrite> = None;
    let mut mirrors = Vec::new();
    let mut headers = Map::new();
    for f in &rule.filters {
        match f.kind.as_str() {
            "RequestHeaderModifier" => {
                headers.insert("request".into(), header_ops(f.request_header_modifier.as_ref()));
            }
            "ResponseHeaderModifier" => {
                headers.insert("response".into(), header_ops(f.response_header_modifier.as_ref()));
            }
            "RequestRedirect" => redirect = f.request_redirect.as_ref(),
            "URLRewrite" => rewrite = f.url_rewrite.as_ref(),
            "RequestMirror" => {
                let Some(m) = &f.request_mirror else { continue };
                let Some(dest) = destination(ctx, &m.backend_ref)? else { continue };
                let percent = match (&m.fraction, m.percent) {
                    (Some(fr), _) => 100.0 * f64::from(fr.numerator) / f64::from(fr.denominator.unwrap_or(100).max(1)),
                    (None, Some(p)) => f64::from(p),
                    (None, None) => 100.0,
                };
                mirrors.push(json!({"destination": dest, "percentage": {"value": percent}}));
            }
            other => return Err(RuleError { reason: "InvalidFilter", message: format!("unsupported filter type {other:?}") }),
        }
    }
    if !headers.is_empty() {
        base["headers"] = Value::Object(headers);
    }
    if !mirrors.is_empty() {
        base["mirrors"] = json!(mirrors);
    }
    if let Some(t) = &rule.timeouts {
        if let Some(d) = t.backend_request.as_ref().or(t.request.as_ref()) {
            base["timeout"] = json!(d);
        }
    }
    let dests = match redirect {
        Some(_) => None,
        None => backends(ctx, &rule.backend_refs, true)?,
    };
    // No matches is Gateway API's default match, the path prefix `/`.
    let matches: Vec<MatchParts> = if rule.matches.is_empty() {
        vec![MatchParts { matches: vec![(Value::Null, Some(PrefixPart::Root))], precedence: ROOT }]
    } else {
        rule.matches.iter().map(http_match).collect::<Result<_, _>>()?
    };
    let mut out = Vec::new();
    for parts in matches {
        for (m, prefix) in parts.matches {
            let mut r = base.clone();
            if !m.is_null() {
                r["match"] = json!([m]);
            }
            if let Some(rd) = redirect {
                r["redirect"] = redirect_of(rd)?;
            } else {
                match &dests {
                    Some(d) => r["route"] = json!(d),
                    None => r["directResponse"] = json!({"status": 500}),
                }
                if let Some(rw) = rewrite {
                    r["rewrite"] = rewrite_of(rw, &m, prefix)?;
                }
            }
            out.push((parts.precedence, r));
        }
    }
    Ok(Converted::Http(out))
}

fn redirect_of(r: &Redirect) -> Result<Value, RuleError> {
    let mut v = json!({"redirectCode": r.status_code.unwrap_or(302)});
    if let Some(s) = &r.scheme {
        v["scheme"] = json!(s);
    }
    if let Some(h) = &r.hostname {
        v["authority"] = json!(h);
    }
    if let Some(p) = r.port {
        v["port"] = json!(p);
    }
    if let Some(p) = &r.path {
        match (p.kind.as_str(), &p.replace_full_path) {
            ("ReplaceFullPath", Some(full)) => v["uri"] = json!(full),
            _ => {
                return Err(RuleError {
                    reason: "UnsupportedValue",
                    message: format!("a RequestRedirect path of type {:?} is not supported by weft yet (ReplaceFullPath is)", p.kind),
                })
            }
        }
    }
    Ok(v)
}

fn rewrite_of(r: &UrlRewrite, m: &Value, prefix: Option<PrefixPart>) -> Result<Value, RuleError> {
    let mut v = json!({});
    if let Some(h) = &r.hostname {
        v["authority"] = json!(h);
    }
    let Some(p) = &r.path else { return Ok(v) };
    match (p.kind.as_str(), &p.replace_full_path, &p.replace_prefix_match) {
        ("ReplaceFullPath", Some(full), _) => {
            if m.pointer("/uri/exact").is_some() && prefix.is_none() {
                v["uri"] = json!(full);
            } else {
                v["uriRegexRewrite"] = json!({"match": "^/.*$", "rewrite": full});
            }
        }
        ("ReplacePrefixMatch", _, Some(to)) => {
            let to_dir = format!("{}/", to.trim_end_matches('/'));
            match prefix {
                Some(PrefixPart::Whole) => v["uri"] = json!(if to.is_empty() { "/" } else { to.as_str() }),
                Some(PrefixPart::Below) => v["uri"] = json!(to_dir),
                Some(PrefixPart::Root) => v["uriRegexRewrite"] = json!({"match": "^/", "rewrite": to_dir}),
                None => {
                    return Err(RuleError { reason: "InvalidConfiguration", message: "ReplacePrefixMatch needs a PathPrefix match".into() })
                }
            }
        }
        _ => {
            return Err(RuleError {
                reason: "InvalidConfiguration",
                message: format!("URLRewrite path of type {:?} without its value", p.kind),
            })
        }
    }
    Ok(v)
}

pub(super) fn grpc_rule(ctx: &mut Ctx<'_>, rule: &GrpcRule, index: usize) -> Result<Converted, RuleError> {
    if rule.session_persistence.is_some() {
        return Err(RuleError {
            reason: "UnsupportedValue",
            message: format!("rules[{index}].sessionPersistence is not supported by weft yet"),
        });
    }
    let http = HttpRule {
        name: rule.name.clone(),
        matches: Vec::new(),
        filters: rule.filters.clone(),
        backend_refs: rule.backend_refs.clone(),
        ..Default::default()
    };
    if rule.filters.iter().any(|f| !matches!(f.kind.as_str(), "RequestHeaderModifier" | "ResponseHeaderModifier" | "RequestMirror")) {
        return Err(RuleError { reason: "InvalidFilter", message: "a GRPCRoute takes header modifiers and RequestMirror only".into() });
    }
    let Converted::Http(base) = http_rule(ctx, &http, index)? else { return Ok(Converted::Http(Vec::new())) };
    let Some((_, template)) = base.into_iter().next() else { return Ok(Converted::Http(Vec::new())) };
    if rule.matches.is_empty() {
        return Ok(Converted::Http(vec![(ROOT, template)]));
    }
    let mut out = Vec::new();
    for m in &rule.matches {
        let mut v = json!({});
        let mut prec = Precedence { path_kind: 0, path_len: 0, method: false, headers: m.headers.len(), query: 0 };
        if let Some(method) = &m.method {
            let regex = method.kind.as_deref() == Some("RegularExpression");
            let (svc, meth) = (method.service.as_deref(), method.method.as_deref());
            let uri = match (svc, meth, regex) {
                (Some(s), Some(me), false) => json!({"exact": format!("/{s}/{me}")}),
                (Some(s), None, false) => json!({"prefix": format!("/{s}/")}),
                (None, Some(me), false) => json!({"regex": format!("/[^/]+/{me}")}),
                (Some(s), Some(me), true) => json!({"regex": format!("/{s}/{me}")}),
                (Some(s), None, true) => json!({"regex": format!("/{s}/.+")}),
                (None, Some(me), true) => json!({"regex": format!("/[^/]+/{me}")}),
                (None, None, _) => {
                    return Err(RuleError { reason: "InvalidConfiguration", message: "a method match needs a service or a method".into() })
                }
            };
            prec.path_kind = if uri.get("exact").is_some() {
                3
            } else if uri.get("prefix").is_some() {
                2
            } else {
                1
            };
            prec.path_len = uri.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).map_or(0, str::len);
            v["uri"] = uri;
        }
        if !m.headers.is_empty() {
            v["headers"] = value_matches(&m.headers, true)?;
        }
        let mut r = template.clone();
        r["match"] = json!([v]);
        out.push((prec, r));
    }
    Ok(Converted::Http(out))
}

pub(super) fn l4_rule(ctx: &mut Ctx<'_>, rule: &L4Rule) -> Result<Converted, RuleError> {
    match backends(ctx, &rule.backend_refs, false)? {
        Some(route) => Ok(Converted::L4(vec![json!({"route": route})])),
        // Nothing to send to: the connection is refused (Istio sends it to a cluster that
        // does not exist); an empty route list is not valid, so the rule is left out.
        None => Ok(Converted::L4(Vec::new())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn relative_weights_become_percentages_adding_up_to_100() {
        assert_eq!(super::percentages(&[1, 1, 1]), vec![34, 33, 33]);
        assert_eq!(super::percentages(&[3, 1]), vec![75, 25]);
        assert_eq!(super::percentages(&[1, 999]), vec![0, 100]);
        assert_eq!(super::percentages(&[90, 10]), vec![90, 10]);
    }
}
