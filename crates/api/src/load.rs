//! Reading Kubernetes-style multi-document YAML (or JSON) into typed mesh resources.
//!
//! Each document is checked on its own: a bad document is reported (file, line, field path)
//! and left out, and every other document in the file still loads.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::locate::{DocLines, LineIndex};
use crate::meta::{ObjectMeta, Origin, Resource};
use crate::unread::{self, Treatment};
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
    Telemetry(Resource<crate::telemetry::Telemetry>),
    Service(Resource<core::Service>),
    Endpoints(Resource<core::Endpoints>),
    EndpointSlice(Resource<core::EndpointSlice>),
    /// A Secret holding a TLS credential (other Secrets are not loaded).
    Secret(Resource<core::TlsCredential>),
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
            Object::Telemetry(_) => "Telemetry",
            Object::Service(_) => "Service",
            Object::Endpoints(_) => "Endpoints",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::Secret(_) => "Secret",
        }
    }

    /// Namespace, name and where the document starts.
    pub fn meta(&self) -> (&str, &str, &Origin) {
        fn m<S>(r: &Resource<S>) -> (&str, &str, &Origin) {
            (&r.namespace, &r.name, &r.origin)
        }
        match self {
            Object::VirtualService(r) => m(r),
            Object::DestinationRule(r) => m(r),
            Object::ServiceEntry(r) => m(r),
            Object::Gateway(r) => m(r),
            Object::Sidecar(r) => m(r),
            Object::WorkloadEntry(r) => m(r),
            Object::PeerAuthentication(r) => m(r),
            Object::Telemetry(r) => m(r),
            Object::Service(r) => m(r),
            Object::Endpoints(r) => m(r),
            Object::EndpointSlice(r) => m(r),
            Object::Secret(r) => m(r),
        }
    }

    /// Says the object comes from `origin` (one made from another document, an Ingress).
    pub fn set_origin(&mut self, origin: Origin) {
        fn set<S>(r: &mut Resource<S>, o: Origin) {
            r.origin = o;
        }
        match self {
            Object::VirtualService(r) => set(r, origin),
            Object::DestinationRule(r) => set(r, origin),
            Object::ServiceEntry(r) => set(r, origin),
            Object::Gateway(r) => set(r, origin),
            Object::Sidecar(r) => set(r, origin),
            Object::WorkloadEntry(r) => set(r, origin),
            Object::PeerAuthentication(r) => set(r, origin),
            Object::Telemetry(r) => set(r, origin),
            Object::Service(r) => set(r, origin),
            Object::Endpoints(r) => set(r, origin),
            Object::EndpointSlice(r) => set(r, origin),
            Object::Secret(r) => set(r, origin),
        }
    }
}

/// Drops every object whose kind, namespace and name an earlier one already has, with an error
/// naming both places: Kubernetes cannot hold two, and letting the later silently win would
/// make the result depend on file order.
pub fn drop_duplicates(objects: &mut Vec<Object>, diagnostics: &mut Vec<Diagnostic>) {
    let mut seen: std::collections::BTreeMap<(&'static str, String, String), Origin> = std::collections::BTreeMap::new();
    objects.retain(|o| {
        let (ns, name, origin) = o.meta();
        match seen.entry((o.kind(), ns.to_string(), name.to_string())) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(origin.clone());
                true
            }
            std::collections::btree_map::Entry::Occupied(first) => {
                let first = first.get();
                diagnostics.push(Diagnostic {
                    level: Level::Error,
                    file: origin.file.clone(),
                    line: Some(origin.line),
                    resource: Some(format!("{} {ns}/{name}", o.kind())),
                    field_path: String::new(),
                    message: format!(
                        "is also defined at {}:{}; this definition is ignored (rename one, or delete one)",
                        first.file, first.line
                    ),
                    code: Some(codes::DUPLICATE_RESOURCE),
                });
                false
            }
        }
    });
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
    /// The analyzer message code: Istio's (`IST0106`, …) where Istio has one, weft's own
    /// (`WFT…`, see [`codes`]) where it does not.
    pub code: Option<&'static str>,
}

/// Message codes weft gives diagnostics; `IST` ones mean what they mean in `istioctl analyze`.
pub mod codes {
    /// A resource fails schema or semantic validation (Istio's SchemaValidationError).
    pub const SCHEMA_ERROR: &str = "IST0106";
    /// A resource loads, but something in it deserves a warning (Istio's SchemaWarning).
    pub const SCHEMA_WARNING: &str = "IST0133";
    /// A host, subset or other reference resolves to nothing (ReferencedResourceNotFound).
    pub const REFERENCE_NOT_FOUND: &str = "IST0101";
    /// Several VirtualServices bound to the mesh claim one host.
    pub const CONFLICTING_MESH_HOSTS: &str = "IST0109";
    /// A Service port name selects no protocol (PortNameIsNotUnderNamingConvention).
    pub const PORT_NAME_CONVENTION: &str = "IST0118";
    /// A DestinationRule subset selects no workload (DestinationRuleSubsetNotSelectPods).
    pub const SUBSET_SELECTS_NOTHING: &str = "IST0173";
    /// A DestinationRule's host matches no service (UnknownDestinationRuleHost).
    pub const UNKNOWN_DESTINATION_RULE_HOST: &str = "IST0174";
    /// A resource that would restrict traffic, of a kind weft does not enforce.
    pub const UNENFORCED_SECURITY: &str = "WFT0001";
    /// A kind weft does not read.
    pub const UNREAD_KIND: &str = "WFT0002";
    /// Two documents define the same kind, namespace and name.
    pub const DUPLICATE_RESOURCE: &str = "WFT0003";
    /// A namespace with pods is not labelled for injection (Istio's NamespaceNotInjected).
    pub const NAMESPACE_NOT_INJECTED: &str = "IST0102";
    /// A pod in a namespace labelled for injection has no sidecar (Istio's PodMissingProxy).
    pub const POD_MISSING_PROXY: &str = "IST0103";
    /// An app container runs as the proxy's UID 1337 (Istio's InvalidApplicationUID).
    pub const INVALID_APPLICATION_UID: &str = "IST0144";
    /// The injection webhook is not registered, or the API server cannot trust it yet.
    pub const INJECTION_WEBHOOK: &str = "WFT0004";
    /// STRICT mTLS is required while pods without a sidecar, which cannot speak it, run.
    pub const STRICT_WITHOUT_SIDECARS: &str = "WFT0005";
    /// REGISTRY_ONLY with no ServiceEntry for any outside host: every call out is refused.
    pub const REGISTRY_ONLY_NOTHING_OUTSIDE: &str = "WFT0006";
    /// No node can run a mesh component: each has a taint it does not tolerate.
    pub const UNTOLERATED_TAINTS: &str = "WFT0007";
    /// Istio 0.x routing (RouteRule, DestinationPolicy, EgressRule): refused, with what
    /// `weft convert` makes of it.
    pub const LEGACY_ROUTING: &str = "WFT0008";
    /// A proxy's REGISTRY_ONLY policy refused calls to a destination no ServiceEntry declares.
    pub const BLOCKED_OUTBOUND: &str = "WFT0009";
    /// A Telemetry names a provider MeshConfig does not define, or one of the wrong kind
    /// (Istio's InvalidTelemetryProvider).
    pub const INVALID_TELEMETRY_PROVIDER: &str = "IST0157";
    /// Two Telemetries select the same workload (Istio's ConflictingTelemetryWorkloadSelectors).
    pub const CONFLICTING_TELEMETRY_SELECTORS: &str = "IST0159";
    /// Two Telemetries in one namespace have no selector.
    pub const MULTIPLE_TELEMETRIES_WITHOUT_SELECTORS: &str = "IST0160";
}

impl Diagnostic {
    /// A resource that would restrict traffic and that weft would not enforce: refused unless
    /// the user accepts running without it.
    pub fn is_unenforced_security(&self) -> bool {
        self.code == Some(codes::UNENFORCED_SECURITY)
    }
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
    /// Ingresses and IngressClasses as written: they become mesh config once the Services they
    /// name are known, so whoever gathers the files calls [`crate::ingress::expand`].
    pub ingress_docs: Vec<crate::ingress::IngressDoc>,
    /// Gateway API documents (and Namespaces, whose labels its selectors read): they become
    /// mesh config once everything is loaded, through [`crate::gateway_api::expand`].
    pub gateway_api_docs: Vec<crate::gateway_api::GatewayApiDoc>,
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

/// Loads every document of `text`. `file` labels diagnostics.
pub fn load_text(text: &str, file: &str) -> Loaded {
    let mut out = Loaded::default();
    let (docs, err) = crate::yaml::documents(text);
    if let Some(e) = err {
        out.diagnostics.push(Diagnostic {
            level: Level::Error,
            file: file.into(),
            line: e.line,
            resource: None,
            field_path: String::new(),
            message: format!("YAML syntax error: {}; the rest of this file is not loaded", e.message),
            code: Some(codes::SCHEMA_ERROR),
        });
    }
    let index = LineIndex::build(text);
    for (n, doc) in docs.into_iter().enumerate() {
        load_doc(doc, file, &index.doc(text, n), &mut out);
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
        code: Some(if level == Level::Error { codes::SCHEMA_ERROR } else { codes::SCHEMA_WARNING }),
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
            for (i, item) in items.iter().enumerate() {
                load_doc(item.clone(), file, &lines.under(&format!("items[{i}]")), out);
            }
        }
        return;
    }
    let meta = header.metadata.unwrap_or_default();
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let label = format!("{kind} {namespace}/{}", meta.name);
    // `weft up`'s own kinds (a MeshConfig needs no name) are `weft up`'s to check.
    if meta.name.is_empty() && !api_version.starts_with("weft.dev/") {
        out.diagnostics.push(diag(Level::Error, Some(label), "metadata.name", "is required".into()));
        return;
    }
    let group = api_version.split('/').next().unwrap_or_default();
    let version = api_version.rsplit('/').next().unwrap_or_default();
    let istio_net = group == "networking.istio.io" && matches!(version, "v1" | "v1beta1" | "v1alpha3");
    let istio_sec = group == "security.istio.io" && matches!(version, "v1" | "v1beta1");
    let istio_tel = group == "telemetry.istio.io" && matches!(version, "v1" | "v1alpha1");
    let origin = Origin { file: file.into(), line: lines.start };

    let parsed: Result<Object, Vec<(String, String)>> = match (kind.as_str(), istio_net, istio_sec, api_version.as_str()) {
        ("VirtualService", true, _, _) => istio(&doc).map(|s| Object::VirtualService(res(&meta, &namespace, &origin, s))),
        ("DestinationRule", true, _, _) => istio(&doc).map(|s| Object::DestinationRule(res(&meta, &namespace, &origin, s))),
        ("ServiceEntry", true, _, _) => istio(&doc).map(|s| Object::ServiceEntry(res(&meta, &namespace, &origin, s))),
        ("Gateway", true, _, _) => istio(&doc).map(|s| Object::Gateway(res(&meta, &namespace, &origin, s))),
        ("Sidecar", true, _, _) => istio(&doc).map(|s| Object::Sidecar(res(&meta, &namespace, &origin, s))),
        ("WorkloadEntry", true, _, _) => istio(&doc).map(|s| Object::WorkloadEntry(res(&meta, &namespace, &origin, s))),
        ("PeerAuthentication", _, true, _) => istio(&doc).map(|s| Object::PeerAuthentication(res(&meta, &namespace, &origin, s))),
        ("Telemetry", _, _, _) if istio_tel => istio(&doc).map(|s| Object::Telemetry(res(&meta, &namespace, &origin, s))),
        ("Service", _, _, "v1") => typed::<ServiceDoc>(&doc).map(|d| Object::Service(res(&meta, &namespace, &origin, d.spec))),
        ("Endpoints", _, _, "v1") => typed::<EndpointsDoc>(&doc).map(|d| Object::Endpoints(res(&meta, &namespace, &origin, d.inner))),
        ("EndpointSlice", _, _, "discovery.k8s.io/v1") => {
            typed::<SliceDoc>(&doc).map(|d| Object::EndpointSlice(res(&meta, &namespace, &origin, d.inner)))
        }
        ("Ingress", _, _, "networking.k8s.io/v1" | "networking.k8s.io/v1beta1" | "extensions/v1beta1")
        | ("IngressClass", _, _, "networking.k8s.io/v1") => {
            match serde_json::to_value(&doc) {
                Ok(mut json) => {
                    if json.pointer("/metadata/namespace").is_none() && kind == "Ingress" {
                        json["metadata"]["namespace"] = serde_json::Value::String(namespace.clone());
                    }
                    out.ingress_docs.push(crate::ingress::IngressDoc { doc: json, origin, class: kind == "IngressClass" });
                }
                Err(e) => out.diagnostics.push(diag(Level::Error, Some(label), "", format!("cannot be read: {e}"))),
            }
            return;
        }
        (k, _, _, v) if crate::gateway_api::reads(v, k) || (k == "Namespace" && v == "v1") => {
            match serde_json::to_value(&doc) {
                Ok(mut json) => {
                    if json.pointer("/metadata/namespace").is_none() && kind != "Namespace" && kind != "GatewayClass" {
                        json["metadata"]["namespace"] = serde_json::Value::String(namespace.clone());
                    }
                    out.gateway_api_docs.push(crate::gateway_api::GatewayApiDoc { kind: kind.clone(), doc: json, origin });
                }
                Err(e) => out.diagnostics.push(diag(Level::Error, Some(label), "", format!("cannot be read: {e}"))),
            }
            return;
        }
        ("Secret", _, _, "v1") => match core::TlsCredential::from_secret(&doc) {
            Ok(Some(c)) => Ok(Object::Secret(res(&meta, &namespace, &origin, c))),
            // Not a TLS credential: nothing in the mesh reads it.
            Ok(None) => return,
            Err(problems) => Err(problems),
        },
        _ => {
            let (level, code, message) = match unread::treatment(&api_version, &kind) {
                Some(Treatment::Quiet) => return,
                Some(Treatment::Unenforced(effect)) => (
                    Level::Error,
                    codes::UNENFORCED_SECURITY,
                    format!(
                        "{kind} is not enforced by weft: {effect}. Refused rather than fail open; remove it, or run \
                         with --allow-unenforced-security to accept running without it"
                    ),
                ),
                Some(Treatment::Legacy(becomes)) => (
                    Level::Error,
                    codes::LEGACY_ROUTING,
                    format!(
                        "{api_version} {kind} is Istio 0.x routing, which weft does not read; refused rather than ignored, since \
                         what it routes would silently change. `weft convert -f {file}` prints {becomes} that mean the same"
                    ),
                ),
                Some(Treatment::Instead(instead)) => {
                    (Level::Warning, codes::UNREAD_KIND, format!("{api_version} {kind} is ignored: {instead}"))
                }
                None => (Level::Warning, codes::UNREAD_KIND, format!("{api_version} {kind} is not a kind weft reads; ignored")),
            };
            out.diagnostics.push(Diagnostic { code: Some(code), ..diag(level, Some(label), "", message) });
            return;
        }
    };
    match parsed {
        Err(problems) => {
            for (path, message) in problems {
                out.diagnostics.push(diag(Level::Error, Some(label.clone()), &path, message));
            }
        }
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

fn istio<S: DeserializeOwned + Default>(doc: &serde_yaml::Value) -> Result<S, Vec<(String, String)>> {
    typed::<IstioDoc<S>>(doc).map(|d| d.spec.unwrap_or_default())
}

/// Most unknown fields reported for one document; past this the rest is noise.
const MAX_UNKNOWN_FIELDS: usize = 20;

/// Decodes `doc`; on failure, every problem serde can name. serde stops at the first unknown
/// field, so each one found is taken out of a copy and decoding tried again, until what is left
/// decodes or fails for another reason: a document with three typos gets three errors.
fn typed<T: DeserializeOwned>(doc: &serde_yaml::Value) -> Result<T, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let mut doc = doc.clone();
    loop {
        let err = match serde_path_to_error::deserialize::<_, T>(doc.clone()) {
            Ok(v) if problems.is_empty() => return Ok(v),
            Ok(_) => return Err(problems),
            Err(e) => e,
        };
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        let field = message.strip_prefix("unknown field `").and_then(|r| r.split('`').next()).map(str::to_string);
        problems.push(shape(path.clone(), message));
        let removed = field.is_some_and(|f| problems.len() < MAX_UNKNOWN_FIELDS && remove_at(&mut doc, &path, &f));
        if !removed {
            return Err(problems);
        }
    }
}

/// Removes key `field` from the mapping at serde_path_to_error's `path` (the unknown field's
/// own path, `a.b[2].field`, or its parent's); false when it is not there.
fn remove_at(doc: &mut serde_yaml::Value, path: &str, field: &str) -> bool {
    let path = path.strip_suffix(field).map(|p| p.trim_end_matches('.')).unwrap_or(path);
    let mut node = doc;
    for seg in path.split('.').filter(|s| !s.is_empty() && *s != "?") {
        let (name, indexes) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg, ""),
        };
        if !name.is_empty() {
            let Some(next) = node.get_mut(name) else { return false };
            node = next;
        }
        for idx in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            let Some(next) = idx.parse::<usize>().ok().and_then(|i| node.get_mut(i)) else { return false };
            node = next;
        }
    }
    node.as_mapping_mut().and_then(|m| m.remove(field)).is_some()
}

/// serde words an unknown field as "unknown field `x`, expected one of …"; name the full path.
pub(crate) fn shape(path: String, message: String) -> (String, String) {
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
        let known: Vec<&str> = rest
            .split_once(", expected ")
            // "one of `a`, `b`, `c`", or "`a` or `b`" for two: the names are what backticks quote.
            .map(|(_, e)| e.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        let msg = match crate::suggest::nearest(field, known.iter().copied()) {
            Some(near) => format!("unknown field; did you mean {near}? (known: {})", known.join(", ")),
            None if known.is_empty() => "unknown field".into(),
            None => format!("unknown field (known: {})", known.join(", ")),
        };
        return (full, msg);
    }
    (path, message)
}
