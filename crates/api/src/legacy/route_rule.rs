//! RouteRule → an HTTP route of the VirtualService for its destination host. The rules of one
//! host become one VirtualService, ordered as Istio 0.x ordered them (precedence, then name),
//! since v1 routes are tried in order; the subsets their routes name go to the host's
//! DestinationRule.

use serde_json::{json, Map, Value};

use super::spec::{HttpFault, RouteRule};
use super::{duration, host_of, labels_text, string_match, Converter, Problem, Source};

/// The request attributes 0.x matched as headers that v1 matches by their own fields.
const NOT_HEADERS: [&str; 4] = ["uri", "scheme", "method", "authority"];

impl Converter {
    pub(super) fn route_rule(&mut self, src: &Source, rule: RouteRule) -> Result<(), Problem> {
        let ns = src.namespace.clone();
        let host = host_of(&rule.destination, &ns, "destination")?;
        let mut notes = Vec::new();
        let mut note = |field: &str, text: String| notes.push(src.note(field, text));
        if !rule.destination.labels.is_empty() {
            note(
                "destination.labels",
                "Istio 0.x refused labels on a route rule's destination (a rule routes a whole service); not converted".into(),
            );
        }
        let mut http = Map::new();
        http.insert("name".into(), json!(src.name));
        if let Some(m) = self.route_match(&rule, &mut note)? {
            http.insert("match".into(), json!([m]));
        }
        match &rule.redirect {
            Some(r) => {
                if !rule.route.is_empty() {
                    return Err(("redirect".into(), "a rule with a redirect has no route (Istio 0.x refused both)".into()));
                }
                http.insert("redirect".into(), uri_authority(r));
            }
            None => {
                let routes = self.destinations(src, &rule, &host)?;
                http.insert("route".into(), Value::Array(routes));
            }
        }
        if let Some(r) = &rule.rewrite {
            http.insert("rewrite".into(), uri_authority(r));
        }
        if rule.websocket_upgrade {
            note("websocketUpgrade", "no v1 field: WebSocket upgrades are allowed on every route".into());
        }
        if let Some(t) = &rule.http_req_timeout {
            if let Some(s) = &t.simple_timeout {
                if let Some(d) = &s.timeout {
                    http.insert("timeout".into(), duration(d, "httpReqTimeout.simpleTimeout.timeout")?);
                }
                if let Some(h) = &s.override_header_name {
                    note(
                        "httpReqTimeout.simpleTimeout.overrideHeaderName",
                        format!("no v1 equivalent: a caller's {h} header no longer changes the timeout"),
                    );
                }
            }
            if t.custom.is_some() {
                note("httpReqTimeout.custom", "no v1 equivalent; not converted".into());
            }
        }
        if let Some(r) = &rule.http_req_retries {
            if let Some(s) = &r.simple_retry {
                let mut retries = json!({"attempts": s.attempts.unwrap_or(0)});
                if let Some(d) = &s.per_try_timeout {
                    retries["perTryTimeout"] = duration(d, "httpReqRetries.simpleRetry.perTryTimeout")?;
                }
                http.insert("retries".into(), retries);
                if let Some(h) = &s.override_header_name {
                    note(
                        "httpReqRetries.simpleRetry.overrideHeaderName",
                        format!("no v1 equivalent: a caller's {h} header no longer changes the retries"),
                    );
                }
            }
            if r.custom.is_some() {
                note("httpReqRetries.custom", "no v1 equivalent; not converted".into());
            }
        }
        if let Some(f) = &rule.http_fault {
            if let Some(fault) = fault(f, &mut note)? {
                http.insert("fault".into(), fault);
            }
        }
        if let Some(m) = &rule.mirror {
            let mhost = host_of(m, &ns, "mirror")?;
            let mut mirror = json!({"host": mhost});
            if !m.labels.is_empty() {
                mirror["subset"] = json!(self.subset(src, &mhost, &m.labels));
            }
            http.insert("mirror".into(), mirror);
        }
        if let Some(c) = &rule.cors_policy {
            let mut cors = json!({
                "allowOrigins": c.allow_origin.iter().map(|o| json!({"exact": o})).collect::<Vec<_>>(),
                "allowMethods": c.allow_methods, "allowHeaders": c.allow_headers, "exposeHeaders": c.expose_headers,
            });
            if let Some(a) = &c.max_age {
                cors["maxAge"] = duration(a, "corsPolicy.maxAge")?;
            }
            if let Some(a) = c.allow_credentials {
                cors["allowCredentials"] = json!(a);
            }
            http.insert("corsPolicy".into(), cors);
            note(
                "corsPolicy",
                "converted for Istio; weft does not implement corsPolicy yet and refuses the VirtualService while it is there".into(),
            );
        }
        if !rule.append_headers.is_empty() {
            http.insert("headers".into(), json!({"request": {"add": rule.append_headers}}));
        }
        if rule.l4_fault.is_some() {
            note("l4Fault", "Istio 0.x never implemented L4 faults (its validation refused them); not converted".into());
        }
        let vs = self.virtual_services.entry((ns, host)).or_default();
        vs.built.from(src);
        vs.built.notes.extend(notes);
        vs.routes.push((rule.precedence, src.name.clone(), Value::Object(http)));
        Ok(())
    }

    /// The v1 match: request attributes and headers, and what of the caller v1 can still say.
    fn route_match(&self, rule: &RouteRule, note: &mut dyn FnMut(&str, String)) -> Result<Option<Value>, Problem> {
        let Some(mc) = &rule.match_ else { return Ok(None) };
        let mut m = Map::new();
        if let Some(req) = &mc.request {
            let mut headers = Map::new();
            for (name, sm) in &req.headers {
                let v = string_match(sm, &format!("match.request.headers.{name}"))?;
                if NOT_HEADERS.contains(&name.as_str()) {
                    m.insert(name.clone(), v);
                } else {
                    headers.insert(name.clone(), v);
                }
            }
            if !headers.is_empty() {
                m.insert("headers".into(), Value::Object(headers));
            }
        }
        if let Some(source) = &mc.source {
            if !source.labels.is_empty() {
                m.insert("sourceLabels".into(), json!(source.labels));
            }
            if let Some(ns) = &source.namespace {
                m.insert("sourceNamespace".into(), json!(ns));
            }
            if let Some(caller) = source.name.as_ref().or(source.service.as_ref()) {
                let narrowed =
                    if source.labels.is_empty() { String::new() } else { format!(" with labels {}", labels_text(&source.labels)) };
                note(
                    "match.source",
                    format!(
                        "v1 matches callers by their workload labels (sourceLabels) and namespace (sourceNamespace), not by service: \
                         this route now applies to every caller{narrowed}, not only {caller}; add the labels of the workloads of \
                         {caller} to sourceLabels (often app: {caller})"
                    ),
                );
            }
        }
        if mc.tcp.is_some() || mc.udp.is_some() {
            note(
                "match.tcp",
                "Istio 0.x's L4 matches (source and destination subnets) have no HTTP-route equivalent; not converted".into(),
            );
        }
        Ok((!m.is_empty()).then_some(Value::Object(m)))
    }

    /// The route's destinations: each one's host (the rule's unless it names another) and
    /// the subset its labels select; 0.x's single unweighted route means all of the traffic.
    fn destinations(&mut self, src: &Source, rule: &RouteRule, host: &str) -> Result<Vec<Value>, Problem> {
        if rule.route.is_empty() {
            return Ok(vec![json!({"destination": {"host": host}})]);
        }
        let total: i64 = rule.route.iter().filter_map(|d| d.weight).sum();
        if rule.route.len() > 1 && total != 100 {
            return Err(("route".into(), format!("the weights sum to {total}; Istio 0.x required 100")));
        }
        let mut out = Vec::new();
        for (i, d) in rule.route.iter().enumerate() {
            let dhost = match &d.destination {
                Some(s) => host_of(s, &src.namespace, &format!("route[{i}].destination"))?,
                None => host.to_owned(),
            };
            let mut dest = json!({"host": dhost});
            if !d.labels.is_empty() {
                dest["subset"] = json!(self.subset(src, &dhost, &d.labels));
            }
            let mut entry = json!({"destination": dest});
            if rule.route.len() > 1 {
                entry["weight"] = json!(d.weight.unwrap_or(0));
            }
            out.push(entry);
        }
        Ok(out)
    }
}

fn uri_authority(r: &super::spec::UriAuthority) -> Value {
    let mut m = Map::new();
    if let Some(u) = &r.uri {
        m.insert("uri".into(), json!(u));
    }
    if let Some(a) = &r.authority {
        m.insert("authority".into(), json!(a));
    }
    Value::Object(m)
}

/// `httpFault` as v1's `fault`: percentages keep their fractions (`percentage.value`).
fn fault(f: &HttpFault, note: &mut dyn FnMut(&str, String)) -> Result<Option<Value>, Problem> {
    let mut out = Map::new();
    if let Some(d) = &f.delay {
        match (&d.fixed_delay, &d.exponential_delay) {
            (Some(fixed), _) => {
                let mut delay = json!({"fixedDelay": duration(fixed, "httpFault.delay.fixedDelay")?});
                delay["percentage"] = json!({"value": d.percent.unwrap_or(100.0)});
                out.insert("delay".into(), delay);
            }
            (None, Some(_)) => {
                note("httpFault.delay.exponentialDelay", "no v1 equivalent (Istio never implemented it); the delay is not converted".into())
            }
            (None, None) => return Err(("httpFault.delay".into(), "fixedDelay is required".into())),
        }
        if let Some(h) = &d.override_header_name {
            note("httpFault.delay.overrideHeaderName", format!("no v1 equivalent: a caller's {h} header no longer changes the delay"));
        }
    }
    if let Some(a) = &f.abort {
        let mut abort = Map::new();
        if let Some(s) = a.http_status {
            abort.insert("httpStatus".into(), json!(s));
        } else if let Some(g) = &a.grpc_status {
            abort.insert("grpcStatus".into(), json!(g));
        } else if a.http2_error.is_some() {
            note("httpFault.abort.http2Error", "no v1 equivalent; the abort is not converted".into());
        } else {
            return Err(("httpFault.abort".into(), "httpStatus, grpcStatus or http2Error is required".into()));
        }
        if !abort.is_empty() {
            abort.insert("percentage".into(), json!({"value": a.percent.unwrap_or(100.0)}));
            out.insert("abort".into(), Value::Object(abort));
        }
        if let Some(h) = &a.override_header_name {
            note("httpFault.abort.overrideHeaderName", format!("no v1 equivalent: a caller's {h} header no longer changes the abort"));
        }
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}
