//! The Kubernetes Gateway API (`gateway.networking.k8s.io`): `GatewayClass`, `Gateway`,
//! `HTTPRoute`, `GRPCRoute`, `TLSRoute`, `TCPRoute` and `ReferenceGrant`, read from files and
//! turned into Istio `Gateway`s and `VirtualService`s with Gateway API's rules, as istiod turns
//! them into its internal config:
//!
//! - a `Gateway` of class `istio` (or of a GatewayClass whose controller is
//!   `istio.io/gateway-controller`) is served by the proxies labelled
//!   `gateway.networking.k8s.io/gateway-name: <name>` in its namespace (Istio's label for the
//!   gateway it deploys); each valid listener becomes an Istio Gateway of one server;
//! - routes attach to listeners by `parentRefs` (`sectionName`, `port`), `allowedRoutes`
//!   (namespaces and kinds) and hostname intersection, and become VirtualServices bound to
//!   those Gateways, one per listener and host, rules in Gateway API's precedence;
//! - an `HTTPRoute` or `GRPCRoute` whose parent is a `Service` (GAMMA) routes sidecar traffic
//!   to that Service as a mesh VirtualService would;
//! - every object gets the status conditions Gateway API defines (`Accepted`, `ResolvedRefs`,
//!   `Programmed`, listener `Conflicted`…), with its reasons: `weft analyze` shows them, and a
//!   condition that is not as it should be is a warning at the object's line.
//!
//! Read from files and (through `weft-kube`'s source) from the API server. Not yet, and
//! said so: status written back to the API server, `UDPRoute` and the experimental kinds.

mod convert;
mod listeners;
mod rules;
mod status;
#[cfg(test)]
mod tests;
mod types;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{codes, Diagnostic, Level, Object, Origin};

pub use status::{Condition, ObjectStatus, ParentStatus};

/// The API group.
pub const GROUP: &str = "gateway.networking.k8s.io";
/// The GatewayClass Istio serves without one being written, and its controller.
pub const CLASS: &str = "istio";
pub const CONTROLLER: &str = "istio.io/gateway-controller";
/// The label on a gateway's proxies naming the Gateway they serve (Istio's).
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// The kinds of the group weft reads, with the versions it reads each in.
const READ: &[(&str, &[&str])] = &[
    ("GatewayClass", &["v1", "v1beta1"]),
    ("Gateway", &["v1", "v1beta1"]),
    ("HTTPRoute", &["v1", "v1beta1"]),
    ("GRPCRoute", &["v1", "v1alpha2"]),
    ("TLSRoute", &["v1", "v1alpha2", "v1alpha3"]),
    ("TCPRoute", &["v1alpha2"]),
    ("ReferenceGrant", &["v1", "v1beta1"]),
];

/// Whether `kind` of `api_version` is one the loader keeps for [`expand`].
pub fn reads(api_version: &str, kind: &str) -> bool {
    let Some((group, version)) = api_version.split_once('/') else { return false };
    group == GROUP && READ.iter().any(|(k, vs)| *k == kind && vs.contains(&version))
}

/// A document of the group (or a Namespace, whose labels `allowedRoutes` selectors read), as
/// written; converted once every file is loaded.
#[derive(Debug, Clone)]
pub struct GatewayApiDoc {
    pub kind: String,
    pub doc: Value,
    pub origin: Origin,
}

impl GatewayApiDoc {
    fn meta(&self) -> (String, String) {
        let ns = self.doc.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default").to_owned();
        let name = self.doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
        (ns, name)
    }
}

/// Turns the Gateway API documents into Istio Gateways and VirtualServices (added to
/// `objects`, each with the origin of the document it came from), reports problems in
/// `diagnostics`, and returns every object's status.
pub fn expand(objects: &mut Vec<Object>, diagnostics: &mut Vec<Diagnostic>, docs: &[GatewayApiDoc]) -> Vec<ObjectStatus> {
    if docs.iter().all(|d| d.kind == "Namespace") {
        return Vec::new();
    }
    let mut input = convert::Input::default();
    for d in docs {
        let (namespace, name) = d.meta();
        let label = format!("{} {namespace}/{name}", d.kind);
        let spec = d.doc.get("spec").cloned().unwrap_or(Value::Object(Default::default()));
        let bad = |e: (String, String)| Diagnostic {
            level: Level::Error,
            file: d.origin.file.clone(),
            line: Some(d.origin.line),
            resource: Some(label.clone()),
            field_path: format!("spec.{}", e.0).trim_end_matches('.').to_owned(),
            message: e.1,
            code: Some(codes::SCHEMA_ERROR),
        };
        let meta = convert::Meta { namespace: namespace.clone(), name: name.clone(), origin: d.origin.clone() };
        let r = match d.kind.as_str() {
            "Namespace" => {
                let labels = d.doc.pointer("/metadata/labels").and_then(Value::as_object);
                let labels: BTreeMap<String, String> =
                    labels.into_iter().flatten().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned()))).collect();
                input.namespaces.insert(name, labels);
                Ok(())
            }
            "GatewayClass" => typed(spec).map(|s| input.classes.push((meta, s))),
            "Gateway" => typed(spec).map(|s| input.gateways.push((meta, s))),
            "HTTPRoute" => typed(spec).map(|s| input.http.push((meta, s))),
            "GRPCRoute" => typed(spec).map(|s| input.grpc.push((meta, s))),
            "TLSRoute" => typed(spec).map(|s| input.tls.push((meta, s))),
            "TCPRoute" => typed(spec).map(|s| input.tcp.push((meta, s))),
            "ReferenceGrant" => typed(spec).map(|s| input.grants.push((meta, s))),
            _ => Ok(()),
        };
        if let Err(e) = r {
            diagnostics.push(bad(e));
        }
    }
    for o in objects.iter() {
        match o {
            Object::Service(r) => {
                input.services.insert((r.namespace.clone(), r.name.clone()), r.spec.ports.iter().map(|p| p.port).collect());
            }
            Object::ServiceEntry(r) => input.hosts.extend(r.spec.hosts.iter().cloned()),
            Object::Secret(r) => {
                input.secrets.insert((r.namespace.clone(), r.name.clone()));
            }
            _ => {}
        }
    }
    let out = convert::convert(&input);
    for (manifest, origin, label) in out.manifests {
        let text = serde_yaml::to_string(&manifest).unwrap_or_default();
        let loaded = crate::load_text(&text, &origin.file);
        for mut d in loaded.diagnostics {
            d.line = Some(origin.line);
            d.message = format!("{} (made from {label})", d.message);
            diagnostics.push(d);
        }
        for mut o in loaded.objects {
            o.set_origin(origin.clone());
            objects.push(o);
        }
    }
    for p in out.problems {
        diagnostics.push(Diagnostic {
            level: p.level,
            file: p.origin.file.clone(),
            line: Some(p.origin.line),
            resource: Some(p.label),
            field_path: p.field,
            message: p.message,
            code: Some(if p.level == Level::Error { codes::SCHEMA_ERROR } else { codes::SCHEMA_WARNING }),
        });
    }
    for s in &out.statuses {
        for (scope, c) in s.unwell() {
            diagnostics.push(Diagnostic {
                level: Level::Warning,
                file: s.origin.file.clone(),
                line: Some(s.origin.line),
                resource: Some(format!("{} {}/{}", s.kind, s.namespace, s.name)),
                field_path: String::new(),
                message: format!("{scope}{}={} ({}): {}", c.kind, if c.ok { "True" } else { "False" }, c.reason, c.message),
                code: Some(codes::SCHEMA_WARNING),
            });
        }
    }
    out.statuses
}

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        (if path == "." { String::new() } else { path }, e.into_inner().to_string())
    })
}
