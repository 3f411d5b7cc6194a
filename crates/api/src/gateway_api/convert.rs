//! Gateway API objects → Istio Gateways and VirtualServices, and every object's status.
//! Pure: it reads typed specs and what the mesh has (Services, ServiceEntry hosts, Secrets,
//! Namespace labels) and returns manifests for the loader.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::listeners::{gateway, Bound};
use super::rules::{grpc_rule, http_rule, l4_rule, Converted, Ctx, Precedence, RuleError};
use super::status::{Condition, ObjectStatus, ParentStatus};
use super::types::*;
use super::{CLASS, CONTROLLER};
use crate::{Level, Origin};

pub(super) const DOMAIN: &str = "svc.cluster.local";

#[derive(Debug, Clone)]
pub struct Meta {
    pub namespace: String,
    pub name: String,
    pub origin: Origin,
}

#[derive(Debug, Default)]
pub struct Input {
    pub classes: Vec<(Meta, GatewayClassSpec)>,
    pub gateways: Vec<(Meta, GatewaySpec)>,
    pub http: Vec<(Meta, RouteSpec<HttpRule>)>,
    pub grpc: Vec<(Meta, RouteSpec<GrpcRule>)>,
    pub tls: Vec<(Meta, RouteSpec<L4Rule>)>,
    pub tcp: Vec<(Meta, RouteSpec<L4Rule>)>,
    pub grants: Vec<(Meta, ReferenceGrantSpec)>,
    /// Namespace labels, from Namespace documents.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Kubernetes Services (namespace, name) → their ports.
    pub services: BTreeMap<(String, String), Vec<u32>>,
    /// ServiceEntry hosts.
    pub hosts: BTreeSet<String>,
    /// TLS Secrets (namespace, name).
    pub secrets: BTreeSet<(String, String)>,
}

/// Something wrong with a document that is not a status: a field weft refuses.
#[derive(Debug, Clone)]
pub struct Problem {
    pub level: Level,
    pub origin: Origin,
    pub label: String,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Output {
    /// Istio manifests, each with the origin and label of the document that made it.
    pub manifests: Vec<(Value, Origin, String)>,
    pub statuses: Vec<ObjectStatus>,
    pub problems: Vec<Problem>,
}

pub fn convert(input: &Input) -> Output {
    let mut out = Output::default();
    let ours: BTreeSet<&str> = std::iter::once(CLASS)
        .chain(input.classes.iter().filter(|(_, c)| c.controller_name == CONTROLLER).map(|(m, _)| m.name.as_str()))
        .collect();
    for (m, c) in &input.classes {
        let conditions = if c.controller_name == CONTROLLER {
            if c.parameters_ref.is_some() {
                vec![Condition::no("Accepted", "InvalidParameters", "parametersRef is not supported by weft")]
            } else {
                vec![Condition::yes("Accepted", "Accepted", "Handled by weft (Istio's controller)")]
            }
        } else {
            continue;
        };
        out.statuses.push(status(m, "GatewayClass", conditions));
    }
    let mut listeners = Vec::new();
    let mut gateways: Vec<&(Meta, GatewaySpec)> = input.gateways.iter().collect();
    gateways.sort_by(|a, b| (&a.0.namespace, &a.0.name).cmp(&(&b.0.namespace, &b.0.name)));
    for (m, g) in gateways {
        if !ours.contains(g.gateway_class_name.as_str()) {
            out.problems.push(Problem {
                level: Level::Warning,
                origin: m.origin.clone(),
                label: format!("Gateway {}/{}", m.namespace, m.name),
                field: "spec.gatewayClassName".into(),
                message: format!(
                    "{:?} is not Istio's class (istio, or a GatewayClass whose controllerName is {CONTROLLER}), so weft does not serve this Gateway",
                    g.gateway_class_name
                ),
            });
            continue;
        }
        gateway(input, m, g, &mut listeners, &mut out);
    }
    let mut routes = Routes::default();
    attach_all(input, "HTTPRoute", &input.http, &mut listeners, &mut routes, &mut out, http_rule);
    attach_all(input, "GRPCRoute", &input.grpc, &mut listeners, &mut routes, &mut out, grpc_rule);
    attach_all(input, "TLSRoute", &input.tls, &mut listeners, &mut routes, &mut out, |ctx, r, _| l4_rule(ctx, r));
    attach_all(input, "TCPRoute", &input.tcp, &mut listeners, &mut routes, &mut out, |ctx, r, _| l4_rule(ctx, r));
    routes.emit(&mut out);
    // Listener statuses, now that routes are counted.
    for st in out.statuses.iter_mut().filter(|s| s.kind == "Gateway") {
        for (name, attached, _) in st.listeners.iter_mut() {
            if let Some(b) = listeners.iter().find(|b| b.gateway == (st.namespace.clone(), st.name.clone()) && b.listener == *name) {
                *attached = b.attached;
            }
        }
    }
    out
}

/// Every route of one kind, in (namespace, name) order: attached, converted, its status kept.
fn attach_all<R>(
    input: &Input,
    kind: &str,
    list: &[(Meta, RouteSpec<R>)],
    listeners: &mut [Bound],
    routes: &mut Routes,
    out: &mut Output,
    rule: impl Fn(&mut Ctx<'_>, &R, usize) -> Result<Converted, RuleError>,
) {
    let mut sorted: Vec<&(Meta, RouteSpec<R>)> = list.iter().collect();
    sorted.sort_by(|a, b| (&a.0.namespace, &a.0.name).cmp(&(&b.0.namespace, &b.0.name)));
    for (m, r) in sorted {
        let s = route(input, m, kind, r, listeners, routes, |ctx, i| rule(ctx, &r.rules[i], i));
        out.statuses.push(s);
    }
}

pub(super) fn status(m: &Meta, kind: &str, conditions: Vec<Condition>) -> ObjectStatus {
    ObjectStatus {
        kind: kind.into(),
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        origin: m.origin.clone(),
        conditions,
        listeners: Vec::new(),
        parents: Vec::new(),
    }
}

/// Whether a grant lets a `from_kind` in `from_ns` refer to a `to_kind` named `to_name` in
/// `to_ns` (always, within one namespace).
pub(super) fn granted(input: &Input, from_kind: &str, from_ns: &str, to_kind: &str, to_ns: &str, to_name: &str) -> bool {
    if from_ns == to_ns {
        return true;
    }
    input.grants.iter().filter(|(m, _)| m.namespace == to_ns).any(|(_, g)| {
        g.from.iter().any(|f| f.group == super::GROUP && f.kind == from_kind && f.namespace == from_ns)
            && g.to.iter().any(|t| t.kind == to_kind && t.group.is_empty() && t.name.as_deref().is_none_or(|n| n == to_name))
    })
}

/// Whether `pattern` (a host or `*.suffix`) covers `host`.
fn covers(pattern: &str, host: &str) -> bool {
    pattern == "*" || pattern == host || pattern.strip_prefix('*').is_some_and(|suffix| host.len() > suffix.len() && host.ends_with(suffix))
}

/// The host a route hostname gets on a listener: the more specific of the two when one covers
/// the other.
fn intersect(listener: Option<&str>, route: &str) -> Option<String> {
    let l = listener.unwrap_or("*");
    if covers(l, route) {
        Some(route.to_owned())
    } else if covers(route, l) {
        Some(l.to_owned())
    } else {
        None
    }
}

/// One converted Istio route and where it came from. `order` keeps routes of equal
/// precedence in the order their routes and rules were written.
struct Made {
    precedence: Precedence,
    order: usize,
    route: Value,
    origin: Origin,
    label: String,
}

/// The Istio route list of one VirtualService, Gateway API's precedence first.
fn in_order(mut rs: Vec<Made>) -> (Vec<Value>, Origin, String) {
    rs.sort_by(|a, b| b.precedence.cmp(&a.precedence).then(a.order.cmp(&b.order)));
    // Never empty: an entry is made by its first route.
    let (origin, label) =
        rs.first().map(|r| (r.origin.clone(), r.label.clone())).unwrap_or((Origin { file: String::new(), line: 0 }, String::new()));
    (rs.into_iter().map(|r| r.route).collect(), origin, label)
}

/// A mesh VirtualService's key: the route's namespace, the service's host, the parent's port.
type MeshKey = (String, String, Option<u32>);

/// Where converted rules go: VirtualServices keyed by what they bind to.
#[derive(Default)]
struct Routes {
    /// (Istio gateway `ns/name`, host) → HTTP routes.
    gateway_http: BTreeMap<(String, String), Vec<Made>>,
    /// (Istio gateway, host, TLS?) → tls/tcp routes.
    gateway_l4: BTreeMap<(String, String, bool), Vec<Made>>,
    /// (route namespace, service host, port) → whether the route is a consumer's (another
    /// namespace than the service's: exported to its own namespace only), and mesh routes.
    mesh_http: BTreeMap<MeshKey, (bool, Vec<Made>)>,
    order: usize,
}

impl Routes {
    fn emit(self, out: &mut Output) {
        for ((gw, host), rs) in self.gateway_http {
            let (ns, gw_name) = gw.split_once('/').unwrap_or(("default", &gw));
            let (http, origin, label) = in_order(rs);
            let vs = json!({
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": format!("{gw_name}-{}", dns_part(&host)), "namespace": ns},
                "spec": {"hosts": [host], "gateways": [gw], "http": http},
            });
            out.manifests.push((vs, origin, label));
        }
        for ((gw, host, tls), rs) in self.gateway_l4 {
            let (ns, gw_name) = gw.split_once('/').unwrap_or(("default", &gw));
            let (list, origin, label) = in_order(rs);
            let key = if tls { "tls" } else { "tcp" };
            let vs = json!({
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": format!("{gw_name}-{key}-{}", dns_part(&host)), "namespace": ns},
                "spec": {"hosts": [host], "gateways": [gw], key: list},
            });
            out.manifests.push((vs, origin, label));
        }
        for ((ns, host, port), (consumer, rs)) in self.mesh_http {
            let (http, origin, label) = in_order(rs);
            let port_part = port.map(|p| format!("-{p}")).unwrap_or_default();
            let mut spec = json!({"hosts": [host], "http": http});
            if consumer {
                spec["exportTo"] = json!(["."]);
            }
            let vs = json!({
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": format!("{}{port_part}-gamma", dns_part(&host)), "namespace": ns},
                "spec": spec,
            });
            out.manifests.push((vs, origin, label));
        }
    }
}

/// `host` as part of an object name.
fn dns_part(host: &str) -> String {
    host.replace('*', "wildcard").chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
}

/// A route of any kind: its parents resolved, its rules converted once per parent type, and
/// its status.
fn route<R>(
    input: &Input,
    m: &Meta,
    kind: &str,
    spec: &RouteSpec<R>,
    listeners: &mut [Bound],
    routes: &mut Routes,
    rule: impl Fn(&mut Ctx<'_>, usize) -> Result<Converted, RuleError>,
) -> ObjectStatus {
    let label = format!("{kind} {}/{}", m.namespace, m.name);
    let mut st = status(m, kind, Vec::new());
    // Each rule on its own: one that cannot be served is left out (and said so), the others
    // are served.
    let convert_all = |gateway_parent: bool| -> (Vec<Converted>, Vec<RuleError>, Vec<RuleError>) {
        let mut ctx = Ctx { input, kind, meta: m, gateway_parent, soft: Vec::new() };
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        for i in 0..spec.rules.len() {
            match rule(&mut ctx, i) {
                Ok(c) => ok.push(c),
                Err(e) => failed.push(RuleError { reason: e.reason, message: format!("rules[{i}]: {}", e.message) }),
            }
        }
        (ok, failed, ctx.soft)
    };
    let hostnames: Vec<String> = if spec.hostnames.is_empty() { vec!["*".into()] } else { spec.hostnames.clone() };
    for p in &spec.parent_refs {
        let pkind = p.kind.as_deref().unwrap_or("Gateway");
        let pgroup = p.group.as_deref().unwrap_or(if pkind == "Service" { "" } else { super::GROUP });
        let pns = p.namespace.clone().unwrap_or_else(|| m.namespace.clone());
        let section = p.section_name.as_ref().map(|s| format!("/{s}")).unwrap_or_default();
        let port_s = p.port.map(|n| format!(":{n}")).unwrap_or_default();
        let parent = format!("{pkind} {pns}/{}{section}{port_s}", p.name);
        let mut conditions = Vec::new();
        match (pgroup, pkind) {
            ("", "Service") => {
                if !matches!(kind, "HTTPRoute" | "GRPCRoute") {
                    conditions.push(Condition::no(
                        "Accepted",
                        "UnsupportedValue",
                        format!("a {kind} with a Service parent is not supported by weft yet"),
                    ));
                } else if !input.services.contains_key(&(pns.clone(), p.name.clone())) {
                    conditions.push(Condition::no("Accepted", "NoMatchingParent", format!("parent service: {:?} not found", p.name)));
                } else {
                    let host = format!("{}.{pns}.{DOMAIN}", p.name);
                    let (list, failed, soft) = convert_all(false);
                    conditions.extend(accepted_conditions(spec.rules.len(), &failed, &soft));
                    {
                        let entry = routes.mesh_http.entry((m.namespace.clone(), host, p.port)).or_insert((pns != m.namespace, Vec::new()));
                        for c in list {
                            let Converted::Http(rs) = c else { continue };
                            for (prec, mut r) in rs {
                                if let Some(port) = p.port {
                                    with_port(&mut r, port);
                                }
                                routes.order += 1;
                                entry.1.push(Made {
                                    precedence: prec,
                                    order: routes.order,
                                    route: r,
                                    origin: m.origin.clone(),
                                    label: label.clone(),
                                });
                            }
                        }
                    }
                }
            }
            (super::GROUP, "Gateway") => {
                let candidates: Vec<usize> =
                    listeners.iter().enumerate().filter(|(_, b)| b.gateway == (pns.clone(), p.name.clone())).map(|(i, _)| i).collect();
                if candidates.is_empty() {
                    conditions.push(Condition::no("Accepted", "NoMatchingParent", format!("no Gateway {pns}/{} served by weft", p.name)));
                    st.parents.push(ParentStatus { parent, conditions });
                    continue;
                }
                let mut accepted: Vec<(usize, Vec<String>)> = Vec::new();
                let mut why: Option<(u8, &'static str, String)> = None;
                let mut worse = |rank: u8, reason: &'static str, msg: String| {
                    if why.as_ref().is_none_or(|(r, _, _)| rank > *r) {
                        why = Some((rank, reason, msg));
                    }
                };
                for i in candidates {
                    let b = &listeners[i];
                    if p.port.is_some_and(|n| n != b.port) {
                        worse(1, "NoMatchingParent", format!("port {} not found", p.port.unwrap_or_default()));
                        continue;
                    }
                    if p.section_name.as_ref().is_some_and(|s| *s != b.listener) {
                        worse(1, "NoMatchingParent", format!("sectionName {:?} not found", p.section_name.as_deref().unwrap_or_default()));
                        continue;
                    }
                    if !b.kinds.iter().any(|k| k == kind) {
                        worse(3, "NotAllowedByListeners", format!("kind {kind} is not allowed by listener {}", b.listener));
                        continue;
                    }
                    let hosts: Vec<String> = hostnames.iter().filter_map(|h| intersect(b.hostname.as_deref(), h)).collect();
                    if hosts.is_empty() {
                        worse(
                            2,
                            "NoMatchingListenerHostname",
                            format!("no hostnames matched parent hostname {:?}", b.hostname.as_deref().unwrap_or("*")),
                        );
                        continue;
                    }
                    if !b.admits_namespace(&m.namespace) {
                        worse(
                            3,
                            "NotAllowedByListeners",
                            format!(
                                "hostnames matched parent hostname {:?}, but namespace {:?} is not allowed by the parent",
                                b.hostname.as_deref().unwrap_or("*"),
                                m.namespace
                            ),
                        );
                        continue;
                    }
                    accepted.push((i, hosts));
                }
                if accepted.is_empty() {
                    let (_, reason, msg) = why.unwrap_or((0, "NoMatchingParent", "no listener".into()));
                    conditions.push(Condition::no("Accepted", reason, msg));
                    st.parents.push(ParentStatus { parent, conditions });
                    continue;
                }
                let (list, failed, soft) = convert_all(true);
                conditions.extend(accepted_conditions(spec.rules.len(), &failed, &soft));
                for (i, hosts) in accepted {
                    listeners[i].attached += 1;
                    let b = &listeners[i];
                    for host in hosts {
                        for c in &list {
                            match c {
                                Converted::Http(rs) => {
                                    for (prec, r) in rs {
                                        routes.order += 1;
                                        let made = Made {
                                            precedence: *prec,
                                            order: routes.order,
                                            route: r.clone(),
                                            origin: m.origin.clone(),
                                            label: label.clone(),
                                        };
                                        routes.gateway_http.entry((b.istio.clone(), host.clone())).or_default().push(made);
                                    }
                                }
                                Converted::L4(rs) => {
                                    // A terminating TLS listener carries its TLSRoutes as TCP.
                                    let tls = kind == "TLSRoute" && b.passthrough;
                                    for r in rs {
                                        let mut r = r.clone();
                                        let m_port = json!({"port": b.port});
                                        r["match"] = if tls { json!([{"port": b.port, "sniHosts": [host]}]) } else { json!([m_port]) };
                                        let key_host = if tls { host.clone() } else { "*".into() };
                                        routes.order += 1;
                                        let precedence = Precedence::default();
                                        let made = Made {
                                            precedence,
                                            order: routes.order,
                                            route: r,
                                            origin: m.origin.clone(),
                                            label: label.clone(),
                                        };
                                        routes.gateway_l4.entry((b.istio.clone(), key_host, tls)).or_default().push(made);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            _ => {
                conditions.push(Condition::no("Accepted", "InvalidKind", format!("a parent of kind {pgroup}/{pkind} is not supported")));
            }
        }
        st.parents.push(ParentStatus { parent, conditions });
    }
    st
}

/// A parent's `Accepted` (False when no rule can be served), `PartiallyInvalid` when some
/// cannot, and `ResolvedRefs` from the references that do not resolve.
fn accepted_conditions(rules: usize, failed: &[RuleError], soft: &[RuleError]) -> Vec<Condition> {
    let joined = |es: &[RuleError]| es.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("; ");
    let mut out = Vec::new();
    match failed.first() {
        Some(_) if failed.len() == rules => out.push(Condition::no("Accepted", "UnsupportedValue", joined(failed))),
        Some(_) => {
            out.push(Condition::yes("Accepted", "Accepted", "Route was valid"));
            out.push(Condition::yes("PartiallyInvalid", "UnsupportedValue", &format!("rules left out: {}", joined(failed))));
        }
        None => out.push(Condition::yes("Accepted", "Accepted", "Route was valid")),
    }
    out.push(match soft.first() {
        Some(e) => Condition::no("ResolvedRefs", e.reason, joined(soft)),
        None => Condition::yes("ResolvedRefs", "ResolvedRefs", "All references resolved"),
    });
    out
}

/// Adds `port` to every match of an HTTP route (a Service parent's port).
fn with_port(r: &mut Value, port: u32) {
    match r.get_mut("match").and_then(Value::as_array_mut) {
        Some(ms) => ms.iter_mut().for_each(|m| m["port"] = json!(port)),
        None => r["match"] = json!([{"port": port}]),
    }
}
