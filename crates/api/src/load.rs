//! Reading Kubernetes-style multi-document YAML (or JSON) into typed mesh resources.
//!
//! Each document is checked on its own: a bad document is reported (file, line, field path)
//! and left out, and every other document in the file still loads.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::locate::{DocLines, LineIndex};
use crate::meta::{ObjectMeta, Origin, Resource};
use crate::{core, networking as net, security, validate};

/// One resource the mesh reads. Variants differ in size, but objects are few and long-lived,
/// so boxing would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    VirtualService(Resource<net::VirtualService>),
    DestinationRule(Resource<net::DestinationRule>),
    ServiceEntry(Resource<net::ServiceEntry>),
    Gateway(Resource<net::Gateway>),
    Sidecar(Resource<net::Sidecar>),
    WorkloadEntry(Resource<net::WorkloadEntry>),
    PeerAuthentication(Resource<security::PeerAuthentication>),
    Service(Resource<core::Service>),
    Endpoints(Resource<core::Endpoints>),
    EndpointSlice(Resource<core::EndpointSlice>),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::VirtualService(_) => "VirtualService",
            Object::DestinationRule(_) => "DestinationRule",
            Object::ServiceEntry(_) => "ServiceEntry",
            Object::Gateway(_) => "Gateway",
            Object::Sidecar(_) => "Sidecar",
            Object::WorkloadEntry(_) => "WorkloadEntry",
            Object::PeerAuthentication(_) => "PeerAuthentication",
            Object::Service(_) => "Service",
            Object::Endpoints(_) => "Endpoints",
            Object::EndpointSlice(_) => "EndpointSlice",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warning,
}

/// Something wrong (or worth a warning) in a resource, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub level: Level,
    pub file: String,
    pub line: Option<usize>,
    /// `Kind namespace/name`, when the document got far enough to say.
    pub resource: Option<String>,
    pub field_path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        f.write_str(": ")?;
        if let Some(r) = &self.resource {
            write!(f, "{r}: ")?;
        }
        if !self.field_path.is_empty() {
            write!(f, "{}: ", self.field_path)?;
        }
        f.write_str(&self.message)
    }
}

/// What one file gave.
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<Object>,
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<ObjectMeta>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IstioDoc<S> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[allow(dead_code)]
    metadata: serde::de::IgnoredAny,
    #[serde(default)]
    spec: Option<S>,
    #[allow(dead_code)]
    #[serde(default)]
    status: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct ServiceDoc {
    #[serde(default)]
    spec: core::Service,
}

#[derive(Deserialize)]
struct EndpointsDoc {
    #[serde(flatten)]
    inner: core::Endpoints,
}

#[derive(Deserialize)]
struct SliceDoc {
    #[serde(flatten)]
    inner: core::EndpointSlice,
}

/// Kinds that are ordinary Kubernetes objects the mesh does not read; a file of Istio's
/// samples (`bookinfo.yaml`) has them next to Services, and they are skipped quietly.
const SKIPPED_KINDS: &[&str] = &["Deployment", "ServiceAccount", "Pod", "ConfigMap", "Secret", "Namespace", "StatefulSet", "DaemonSet"];

/// Loads every document of `text`. `file` labels diagnostics.
pub fn load_text(text: &str, file: &str) -> Loaded {
    let mut out = Loaded::default();
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(de) {
            Ok(v) => docs.push(v),
            Err(e) => {
                let line = e.location().map(|l| l.line());
                let msg = e.to_string();
                let msg = msg.rsplit_once(" at line ").map(|(m, _)| m.to_string()).unwrap_or(msg);
                out.diagnostics.push(Diagnostic {
                    level: Level::Error,
                    file: file.into(),
                    line,
                    resource: None,
                    field_path: String::new(),
                    message: format!("YAML syntax error: {msg}; the rest of this file is not loaded"),
                });
                break;
            }
        }
    }
    let index = LineIndex::build(text);
    let fallback = DocLines::default();
    for (n, doc) in docs.into_iter().enumerate() {
        let lines = index.docs.get(n).unwrap_or(&fallback);
        load_doc(doc, file, lines, &mut out);
    }
    out
}

fn load_doc(doc: serde_yaml::Value, file: &str, lines: &DocLines, out: &mut Loaded) {
    if doc.is_null() {
        return;
    }
    let diag = |level, resource: Option<String>, path: &str, message: String| Diagnostic {
        level,
        file: file.into(),
        line: Some(if path.is_empty() { lines.start } else { lines.line_of(path) }),
        resource,
        field_path: path.into(),
        message,
    };
    let header: Header = match serde_path_to_error::deserialize(doc.clone()) {
        Ok(h) => h,
        Err(e) => {
            let path = e.path().to_string();
            out.diagnostics.push(diag(Level::Error, None, &path, e.into_inner().to_string()));
            return;
        }
    };
    let (Some(api_version), Some(kind)) = (header.api_version, header.kind) else {
        out.diagnostics.push(diag(Level::Error, None, "", "not a Kubernetes-style resource: apiVersion and kind are required".into()));
        return;
    };
    if kind == "List" {
        if let Some(items) = doc.get("items").and_then(|i| i.as_sequence()) {
            for item in items {
                load_doc(item.clone(), file, &DocLines::default(), out);
            }
        }
        return;
    }
    let meta = header.metadata.unwrap_or_default();
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let label = format!("{kind} {namespace}/{}", meta.name);
    if meta.name.is_empty() {
        out.diagnostics.push(diag(Level::Error, Some(label), "metadata.name", "is required".into()));
        return;
    }
    let group = api_version.split('/').next().unwrap_or_default();
    let version = api_version.rsplit('/').next().unwrap_or_default();
    let istio_net = group == "networking.istio.io" && matches!(version, "v1" | "v1beta1" | "v1alpha3");
    let istio_sec = group == "security.istio.io" && matches!(version, "v1" | "v1beta1");
    let origin = Origin { file: file.into(), line: lines.start };

    let parsed: Result<Object, (String, String)> = match (kind.as_str(), istio_net, istio_sec, api_version.as_str()) {
        ("VirtualService", true, _, _) => istio(&doc).map(|s| Object::VirtualService(res(&meta, &namespace, &origin, s))),
        ("DestinationRule", true, _, _) => istio(&doc).map(|s| Object::DestinationRule(res(&meta, &namespace, &origin, s))),
        ("ServiceEntry", true, _, _) => istio(&doc).map(|s| Object::ServiceEntry(res(&meta, &namespace, &origin, s))),
        ("Gateway", true, _, _) => istio(&doc).map(|s| Object::Gateway(res(&meta, &namespace, &origin, s))),
        ("Sidecar", true, _, _) => istio(&doc).map(|s| Object::Sidecar(res(&meta, &namespace, &origin, s))),
        ("WorkloadEntry", true, _, _) => istio(&doc).map(|s| Object::WorkloadEntry(res(&meta, &namespace, &origin, s))),
        ("PeerAuthentication", _, true, _) => istio(&doc).map(|s| Object::PeerAuthentication(res(&meta, &namespace, &origin, s))),
        ("Service", _, _, "v1") => typed::<ServiceDoc>(&doc).map(|d| Object::Service(res(&meta, &namespace, &origin, d.spec))),
        ("Endpoints", _, _, "v1") => typed::<EndpointsDoc>(&doc).map(|d| Object::Endpoints(res(&meta, &namespace, &origin, d.inner))),
        ("EndpointSlice", _, _, "discovery.k8s.io/v1") => {
            typed::<SliceDoc>(&doc).map(|d| Object::EndpointSlice(res(&meta, &namespace, &origin, d.inner)))
        }
        (k, _, _, _) if SKIPPED_KINDS.contains(&k) => return,
        _ => {
            out.diagnostics.push(diag(Level::Warning, Some(label), "", format!("{api_version} {kind} is not a kind weft reads; ignored")));
            return;
        }
    };
    match parsed {
        Err((path, message)) => out.diagnostics.push(diag(Level::Error, Some(label), &path, message)),
        Ok(obj) => {
            let problems = validate::object(&obj);
            if problems.iter().any(|p| p.level == Level::Error) {
                for p in problems {
                    out.diagnostics.push(diag(p.level, Some(label.clone()), &p.path, p.message));
                }
                return;
            }
            for p in problems {
                out.diagnostics.push(diag(p.level, Some(label.clone()), &p.path, p.message));
            }
            out.objects.push(obj);
        }
    }
}

fn res<S>(meta: &ObjectMeta, namespace: &str, origin: &Origin, spec: S) -> Resource<S> {
    Resource {
        name: meta.name.clone(),
        namespace: namespace.into(),
        labels: meta.labels.clone(),
        annotations: meta.annotations.clone(),
        spec,
        origin: origin.clone(),
    }
}

fn istio<S: DeserializeOwned + Default>(doc: &serde_yaml::Value) -> Result<S, (String, String)> {
    typed::<IstioDoc<S>>(doc).map(|d| d.spec.unwrap_or_default())
}

fn typed<T: DeserializeOwned>(doc: &serde_yaml::Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(doc.clone()).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        shape(path, message)
    })
}

/// serde words an unknown field as "unknown field `x`, expected one of …"; name the full path.
fn shape(path: String, message: String) -> (String, String) {
    let path = if path == "." { String::new() } else { path };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let full = if path == field || path.ends_with(&format!(".{field}")) {
            path
        } else if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        let known = rest.split_once(", expected ").map(|(_, e)| e.replace('`', ""));
        let msg = match known {
            Some(k) => format!("unknown field (known: {k})"),
            None => "unknown field".into(),
        };
        return (full, msg);
    }
    (path, message)
}
