//! A Gateway's listeners: each valid one an Istio Gateway of one server, selected by
//! Istio's gateway-name label; conflicts, protocols and TLS checked with Gateway API's reasons.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::convert::{granted, status, Input, Meta, Output, Problem};
use super::status::Condition;
use super::types::*;
use super::GATEWAY_NAME_LABEL;
use crate::Level;

/// A valid listener, as routes attach to it.
pub(super) struct Bound {
    pub gateway: (String, String),
    pub listener: String,
    pub port: u32,
    pub hostname: Option<String>,
    /// A TLS listener that passes TLS through (its TLSRoutes go by SNI); a terminating one
    /// carries TLSRoutes as TCP.
    pub passthrough: bool,
    /// The Istio Gateway made for it (`ns/name`).
    pub istio: String,
    pub namespaces: Allowed,
    pub kinds: Vec<String>,
    pub attached: usize,
}

pub(super) enum Allowed {
    Same,
    All,
    Selected(BTreeSet<String>),
}

impl Bound {
    pub fn admits_namespace(&self, ns: &str) -> bool {
        match &self.namespaces {
            Allowed::Same => self.gateway.0 == ns,
            Allowed::All => true,
            Allowed::Selected(set) => set.contains(ns),
        }
    }
}

pub(super) fn gateway(input: &Input, m: &Meta, g: &GatewaySpec, bound: &mut Vec<Bound>, out: &mut Output) {
    let label = format!("Gateway {}/{}", m.namespace, m.name);
    for (field, set) in
        [("spec.addresses", !g.addresses.is_empty()), ("spec.infrastructure", g.infrastructure.is_some()), ("spec.tls", g.tls.is_some())]
    {
        if set {
            out.problems.push(Problem {
                level: Level::Error,
                origin: m.origin.clone(),
                label: label.clone(),
                field: field.into(),
                message: format!(
                    "not supported by weft yet (a Gateway is served by the proxies labelled {GATEWAY_NAME_LABEL}: {}); the Gateway is not served",
                    m.name
                ),
            });
            let mut st =
                status(m, "Gateway", vec![Condition::no("Accepted", "UnsupportedValue", format!("{field} is not supported by weft"))]);
            st.conditions.push(Condition::no("Programmed", "Invalid", "not served"));
            out.statuses.push(st);
            return;
        }
    }
    let mut st = status(m, "Gateway", Vec::new());
    let mut seen: Vec<(u32, String, String)> = Vec::new();
    let mut valid = 0;
    for (i, l) in g.listeners.iter().enumerate() {
        let field = format!("spec.listeners[{i}]");
        let host = l.hostname.clone().unwrap_or_else(|| "*".into());
        let mut cs = Vec::new();
        let mut ok = true;
        if !matches!(l.protocol.as_str(), "HTTP" | "HTTPS" | "TLS" | "TCP") {
            let hint = if matches!(l.protocol.to_ascii_uppercase().as_str(), "HTTP" | "HTTPS" | "TLS" | "TCP") {
                format!(". hint: {:?} (uppercase) may be supported", l.protocol.to_ascii_uppercase())
            } else {
                String::new()
            };
            cs.push(Condition::no("Accepted", "UnsupportedProtocol", format!("protocol {:?} is unsupported{hint}", l.protocol)));
            ok = false;
        }
        let conflict = seen.iter().find_map(|(port, proto, h)| {
            if *port != l.port {
                return None;
            }
            let l4 = |p: &str| p == "TCP";
            if l4(proto) || l4(&l.protocol) {
                Some("ProtocolConflict")
            } else if *h == host {
                Some(if *proto == l.protocol { "HostnameConflict" } else { "ProtocolConflict" })
            } else {
                None
            }
        });
        if let (true, Some(reason)) = (ok, conflict) {
            cs.push(Condition::no("Accepted", reason, "another listener on the port takes it"));
            cs.push(Condition::no("Programmed", reason, "another listener on the port takes it"));
            cs.push(Condition::yes("Conflicted", reason, "another listener on the port takes it"));
            ok = false;
        }
        // TLS: what the server does with it.
        let mut tls = Value::Null;
        let mut refs_ok = Condition::yes("ResolvedRefs", "ResolvedRefs", "No errors found");
        if ok && matches!(l.protocol.as_str(), "HTTPS" | "TLS") {
            match &l.tls {
                None => {
                    cs.push(Condition::no("Programmed", "Invalid", format!("a {} listener needs tls", l.protocol)));
                    ok = false;
                }
                Some(t) if t.frontend_validation.is_some() || !t.options.is_empty() => {
                    out.problems.push(Problem {
                        level: Level::Error,
                        origin: m.origin.clone(),
                        label: label.clone(),
                        field: format!("{field}.tls"),
                        message: "frontendValidation and options are not supported by weft yet; the listener is not served".into(),
                    });
                    cs.push(Condition::no("Programmed", "Invalid", "tls.frontendValidation and tls.options are not supported by weft"));
                    ok = false;
                }
                Some(t) => match t.mode.as_deref().unwrap_or("Terminate") {
                    "Passthrough" if l.protocol == "TLS" => tls = json!({"mode": "PASSTHROUGH"}),
                    "Passthrough" => {
                        cs.push(Condition::no(
                            "Programmed",
                            "Invalid",
                            "an HTTPS listener terminates TLS (Passthrough is for TLS listeners)",
                        ));
                        ok = false;
                    }
                    "Terminate" => match certificate(input, m, t) {
                        Ok(secret) => tls = json!({"mode": "SIMPLE", "credentialName": secret}),
                        Err(c) => {
                            refs_ok = c;
                            cs.push(Condition::no("Programmed", "Invalid", "Bad TLS configuration"));
                            ok = false;
                        }
                    },
                    other => {
                        cs.push(Condition::no("Programmed", "Invalid", format!("tls.mode {other:?} is neither Terminate nor Passthrough")));
                        ok = false;
                    }
                },
            }
        }
        let defaults: &[&str] = match l.protocol.as_str() {
            "HTTP" | "HTTPS" => &["HTTPRoute", "GRPCRoute"],
            "TLS" if tls.get("mode") == Some(&json!("SIMPLE")) => &["TLSRoute", "TCPRoute"],
            "TLS" => &["TLSRoute"],
            "TCP" => &["TCPRoute"],
            _ => &[],
        };
        let wanted = l.allowed_routes.as_ref().map(|a| a.kinds.as_slice()).unwrap_or_default();
        let kinds: Vec<String> = if wanted.is_empty() {
            defaults.iter().map(|k| (*k).to_owned()).collect()
        } else {
            let ours = |k: &RouteGroupKind| k.group.as_deref().is_none_or(|g| g == super::GROUP) && defaults.contains(&k.kind.as_str());
            let bad: Vec<&str> = wanted.iter().filter(|k| !ours(k)).map(|k| k.kind.as_str()).collect();
            if !bad.is_empty() {
                refs_ok = Condition::no(
                    "ResolvedRefs",
                    "InvalidRouteKinds",
                    format!("route kinds {bad:?} are not supported on a {} listener", l.protocol),
                );
            }
            wanted.iter().filter(|k| ours(k)).map(|k| k.kind.clone()).collect()
        };
        let namespaces = match l.allowed_routes.as_ref().and_then(|a| a.namespaces.as_ref()) {
            Some(n) => match n.from.as_deref().unwrap_or("Same") {
                "All" => Allowed::All,
                "Selector" => Allowed::Selected(selected_namespaces(input, n.selector.as_ref())),
                _ => Allowed::Same,
            },
            None => Allowed::Same,
        };
        if ok {
            valid += 1;
            seen.push((l.port, l.protocol.clone(), host.clone()));
            let istio_name = format!("{}-{}-k8s-gateway", m.name, l.name);
            // `ns/host`: only what the listener's allowedRoutes admit binds to the server (the
            // routes made here live in the Gateway's namespace).
            let hosts: Vec<String> = match &namespaces {
                Allowed::All => vec![format!("*/{host}")],
                Allowed::Same => vec![format!("{}/{host}", m.namespace)],
                Allowed::Selected(set) => std::iter::once(&m.namespace)
                    .chain(set.iter())
                    .map(|ns| format!("{ns}/{host}"))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            };
            let passthrough = tls.get("mode") == Some(&json!("PASSTHROUGH"));
            let mut server = json!({"port": {"number": l.port, "name": l.name, "protocol": l.protocol}, "hosts": hosts});
            if !tls.is_null() {
                server["tls"] = tls;
            }
            let manifest = json!({
                "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
                "metadata": {"name": istio_name, "namespace": m.namespace},
                "spec": {"selector": {GATEWAY_NAME_LABEL: m.name}, "servers": [server]},
            });
            out.manifests.push((manifest, m.origin.clone(), label.clone()));
            bound.push(Bound {
                gateway: (m.namespace.clone(), m.name.clone()),
                listener: l.name.clone(),
                port: l.port,
                hostname: l.hostname.clone(),
                passthrough,
                istio: format!("{}/{istio_name}", m.namespace),
                namespaces,
                kinds,
                attached: 0,
            });
            cs.push(Condition::yes("Accepted", "Accepted", "No errors found"));
            cs.push(Condition::yes("Programmed", "Programmed", "No errors found"));
            cs.push(Condition::no("Conflicted", "NoConflicts", "No errors found"));
        }
        cs.push(refs_ok);
        st.listeners.push((l.name.clone(), 0, cs));
    }
    st.conditions = if valid == g.listeners.len() {
        vec![Condition::yes("Accepted", "Accepted", "Resource accepted")]
    } else if valid > 0 {
        vec![Condition::yes("Accepted", "ListenersNotValid", "One or more of the Gateway's listeners are invalid")]
    } else {
        vec![Condition::no("Accepted", "ListenersNotValid", "None of the Gateway's listeners is valid")]
    };
    st.conditions.push(if valid > 0 {
        Condition::yes("Programmed", "Programmed", &format!("served by the proxies labelled {GATEWAY_NAME_LABEL}: {}", m.name))
    } else {
        Condition::no("Programmed", "Invalid", "no listener to serve")
    });
    out.statuses.push(st);
}

/// The Secret a terminating listener serves (`credentialName`), or the condition saying why not.
fn certificate(input: &Input, m: &Meta, t: &ListenerTls) -> Result<String, Condition> {
    let invalid = |msg: String| Condition::no("ResolvedRefs", "InvalidCertificateRef", msg);
    let [r] = t.certificate_refs.as_slice() else {
        return Err(invalid(format!("weft serves one certificateRef, not {}", t.certificate_refs.len())));
    };
    if r.group.as_deref().is_some_and(|g| !g.is_empty()) || r.kind.as_deref().is_some_and(|k| k != "Secret") {
        return Err(invalid(format!("{:?} is not a core Secret", r.kind.as_deref().unwrap_or("Secret"))));
    }
    let ns = r.namespace.as_deref().unwrap_or(&m.namespace);
    if ns != m.namespace {
        if !granted(input, "Gateway", &m.namespace, "Secret", ns, &r.name) {
            return Err(Condition::no("ResolvedRefs", "RefNotPermitted", format!("no ReferenceGrant allows Secret {ns}/{}", r.name)));
        }
        return Err(invalid(format!("Secret {ns}/{}: weft serves Secrets from the Gateway's own namespace only", r.name)));
    }
    if !input.secrets.contains(&(ns.to_owned(), r.name.clone())) {
        return Err(invalid(format!("Secret {ns}/{} with a TLS certificate not found", r.name)));
    }
    Ok(r.name.clone())
}

fn selected_namespaces(input: &Input, selector: Option<&LabelSelector>) -> BTreeSet<String> {
    let Some(sel) = selector else { return BTreeSet::new() };
    let mut names: BTreeSet<&String> = input.namespaces.keys().collect();
    // Namespaces named by resources but not written as documents still have their name label.
    let named: Vec<String> = input
        .http
        .iter()
        .map(|(m, _)| m.namespace.clone())
        .chain(input.grpc.iter().map(|(m, _)| m.namespace.clone()))
        .chain(input.tls.iter().map(|(m, _)| m.namespace.clone()))
        .chain(input.tcp.iter().map(|(m, _)| m.namespace.clone()))
        .collect();
    names.extend(named.iter());
    let empty = BTreeMap::new();
    names
        .into_iter()
        .filter(|ns| {
            let mut labels = input.namespaces.get(*ns).unwrap_or(&empty).clone();
            labels.insert("kubernetes.io/metadata.name".into(), (*ns).clone());
            sel.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
                && sel.match_expressions.iter().all(|e| match e.operator.as_str() {
                    "In" => labels.get(&e.key).is_some_and(|v| e.values.contains(v)),
                    "NotIn" => labels.get(&e.key).is_none_or(|v| !e.values.contains(v)),
                    "Exists" => labels.contains_key(&e.key),
                    "DoesNotExist" => !labels.contains_key(&e.key),
                    _ => false,
                })
        })
        .cloned()
        .collect()
}
