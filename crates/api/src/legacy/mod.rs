//! Istio 0.x routing (`config.istio.io/v1alpha2` `RouteRule`, `DestinationPolicy`,
//! `EgressRule`) converted to the v1 resources that mean the same (`VirtualService`,
//! `DestinationRule`, `ServiceEntry`): what `weft convert` prints and `weft analyze` suggests.
//!
//! What it keeps that Istio 0.8's converter lost: a route rule's namespace (a destination in
//! another namespace stays there), a whole-service DestinationPolicy as the rule's top-level
//! policy (0.8 made it a subset nothing routes to), subsets named after what they select
//! (`version: v1` is `v1`), and `https` egress as 0.x meant it — the sidecar originates TLS for
//! an application calling `http://host:443`. Every field with no v1 equivalent, or whose
//! meaning changes, is named in a note beside the resource it would have gone to.

mod egress_rule;
mod policy;
mod route_rule;
pub mod spec;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::load::{codes, Diagnostic, Level};
use crate::locate::{DocLines, LineIndex};

/// The kinds converted here, by name: Istio chose the schema by kind alone (2018 files say
/// `config.istio.io/v1alpha2`, `v1beta1`, or no apiVersion at all).
pub const KINDS: [&str; 3] = ["RouteRule", "DestinationPolicy", "EgressRule"];

/// Whether a document of `api_version` and `kind` is one of Istio 0.x's routing kinds.
pub fn is_legacy(api_version: Option<&str>, kind: &str) -> bool {
    KINDS.contains(&kind) && api_version.is_none_or(|v| v.starts_with("config.istio.io/"))
}

/// Where a converted document came from, for the output's comments and the notes.
#[derive(Debug, Clone)]
struct Source {
    kind: &'static str,
    namespace: String,
    name: String,
    file: String,
    line: usize,
}

impl Source {
    fn label(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    /// A note on `field` (under `spec`) of this resource.
    fn note(&self, field: &str, text: String) -> String {
        format!("{}: spec.{field}: {text}", self.label())
    }
}

/// One v1 resource being built, with the sources and notes that go above it.
#[derive(Debug, Default)]
struct Built {
    sources: Vec<String>,
    notes: Vec<String>,
}

impl Built {
    fn from(&mut self, src: &Source) {
        let s = format!("{} ({}:{})", src.label(), src.file, src.line);
        if !self.sources.contains(&s) {
            self.sources.push(s);
        }
    }
}

/// A VirtualService: its HTTP routes with the precedence and name that order them.
#[derive(Debug, Default)]
struct VsBuild {
    built: Built,
    routes: Vec<(i32, String, Value)>,
}

/// A DestinationRule: the whole-service policy, per-port settings, and subsets by name.
#[derive(Debug, Default)]
struct DrBuild {
    built: Built,
    policy: Option<Value>,
    port_level: Vec<Value>,
    /// name → (labels, policy)
    subsets: BTreeMap<String, (BTreeMap<String, String>, Option<Value>)>,
}

/// What the inputs convert to. `documents` is the whole output, in order: documents that
/// were not Istio 0.x routing, unchanged, then the converted resources.
#[derive(Debug, Default)]
pub struct Conversion {
    pub documents: Vec<Document>,
    /// Problems in the inputs: a document that does not parse, or a 0.x resource that Istio
    /// itself would have refused. With any, nothing should be printed.
    pub diagnostics: Vec<Diagnostic>,
    /// How many Istio 0.x resources were read.
    pub converted: usize,
    /// How many notes the output carries.
    pub notes: usize,
}

#[derive(Debug, Clone)]
pub enum Document {
    Unchanged(serde_yaml::Value),
    /// A converted resource with the comment lines (sources, notes) that go above it.
    Converted {
        comments: Vec<String>,
        resource: Value,
    },
}

impl Conversion {
    /// The output as YAML documents; notes and sources are comments above each resource.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for (i, d) in self.documents.iter().enumerate() {
            if i > 0 {
                out.push_str("---\n");
            }
            let (comments, text) = match d {
                Document::Unchanged(v) => (&[][..], serde_yaml::to_string(v)),
                Document::Converted { comments, resource } => (&comments[..], serde_yaml::to_string(resource)),
            };
            for c in comments {
                let _ = writeln!(out, "# {c}");
            }
            // Serializing a value built from YAML or JSON cannot fail.
            out.push_str(&text.unwrap_or_default());
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    /// The converted resources alone, as YAML (for `weft analyze`'s suggestion).
    pub fn converted_yaml(&self) -> String {
        let only = Conversion {
            documents: self.documents.iter().filter(|d| matches!(d, Document::Converted { .. })).cloned().collect(),
            ..Default::default()
        };
        only.to_yaml()
    }
}

/// Builds the v1 resources from every 0.x resource of every input (`(text, file name)`):
/// route rules for one host, in any file, make one VirtualService.
#[derive(Default)]
struct Converter {
    virtual_services: BTreeMap<(String, String), VsBuild>,
    destination_rules: BTreeMap<(String, String), DrBuild>,
    service_entries: BTreeMap<(String, String), (Built, Value)>,
    /// Subset names given per (namespace, host), by labels: one name per label set.
    subset_names: BTreeMap<(String, String), BTreeMap<BTreeMap<String, String>, String>>,
}

/// A problem with one field of a 0.x resource: (field path under `spec`, message).
type Problem = (String, String);

/// Converts Istio 0.x routing in `inputs`; see [`Conversion`].
pub fn convert(inputs: &[(String, String)]) -> Conversion {
    let mut out = Conversion::default();
    let mut c = Converter::default();
    for (text, file) in inputs {
        let (docs, err) = crate::yaml::documents(text);
        if let Some(e) = err {
            out.diagnostics.push(diagnostic(file, e.line, None, "", format!("YAML syntax error: {}", e.message)));
        }
        let index = LineIndex::build(text);
        for (n, doc) in docs.into_iter().enumerate() {
            c.document(doc, file, &index.doc(text, n), &mut out);
        }
    }
    c.finish(&mut out);
    out
}

fn diagnostic(file: &str, line: Option<usize>, resource: Option<String>, path: &str, message: String) -> Diagnostic {
    Diagnostic { level: Level::Error, file: file.into(), line, resource, field_path: path.into(), message, code: Some(codes::SCHEMA_ERROR) }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    metadata: Meta,
}

#[derive(Deserialize, Default)]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
}

impl Converter {
    fn document(&mut self, doc: serde_yaml::Value, file: &str, lines: &DocLines, out: &mut Conversion) {
        if doc.is_null() {
            return;
        }
        let header: Option<Header> = serde_yaml::from_value(doc.clone()).ok();
        let Some(h) = header.filter(|h| h.kind.as_deref().is_some_and(|k| is_legacy(h.api_version.as_deref(), k))) else {
            out.documents.push(Document::Unchanged(doc));
            return;
        };
        let kind = KINDS.iter().copied().find(|k| Some(*k) == h.kind.as_deref()).unwrap_or("RouteRule");
        let namespace = h.metadata.namespace.unwrap_or_else(|| "default".into());
        let Some(name) = h.metadata.name.filter(|n| !n.is_empty()) else {
            out.diagnostics.push(diagnostic(
                file,
                Some(lines.start),
                Some(format!("{kind} {namespace}/")),
                "metadata.name",
                "is required".into(),
            ));
            return;
        };
        let src = Source { kind, namespace, name, file: file.into(), line: lines.start };
        out.converted += 1;
        let spec = doc.get("spec").cloned().unwrap_or(serde_yaml::Value::Null);
        let result = match kind {
            "RouteRule" => parse(spec).and_then(|r| self.route_rule(&src, r)),
            "DestinationPolicy" => parse(spec).and_then(|p| self.destination_policy(&src, p)),
            _ => parse(spec).and_then(|e| self.egress_rule(&src, e)),
        };
        if let Err((path, message)) = result {
            let path = if path.is_empty() { "spec".to_string() } else { format!("spec.{path}") };
            out.diagnostics.push(diagnostic(file, Some(lines.line_of(&path)), Some(src.label()), &path, message));
        }
    }

    /// The name for the subset of `host` that `labels` select, unique within the host; its
    /// DestinationRule gets the subset, and `src` as a source.
    fn subset(&mut self, src: &Source, host: &str, labels: &BTreeMap<String, String>) -> String {
        let namespace = src.namespace.as_str();
        self.destination_rules.entry((namespace.to_owned(), host.to_owned())).or_default().built.from(src);
        let names = self.subset_names.entry((namespace.to_owned(), host.to_owned())).or_default();
        if let Some(n) = names.get(labels) {
            return n.clone();
        }
        let base = subset_name(labels);
        let mut name = base.clone();
        let mut i = 2;
        while names.values().any(|n| *n == name) {
            name = format!("{base}-{i}");
            i += 1;
        }
        names.insert(labels.clone(), name.clone());
        self.destination_rules
            .entry((namespace.to_owned(), host.to_owned()))
            .or_default()
            .subsets
            .entry(name.clone())
            .or_insert_with(|| (labels.clone(), None));
        name
    }

    fn finish(mut self, out: &mut Conversion) {
        for ((ns, name), (built, spec)) in std::mem::take(&mut self.service_entries) {
            out.push(built, resource("ServiceEntry", &ns, &name, spec));
        }
        for ((ns, host), dr) in std::mem::take(&mut self.destination_rules) {
            let mut spec = json!({"host": host});
            if let Some(p) = dr.policy.clone() {
                spec["trafficPolicy"] = p;
            }
            if !dr.port_level.is_empty() {
                let tp = spec.as_object_mut().map(|s| s.entry("trafficPolicy").or_insert_with(|| json!({})));
                if let Some(tp) = tp {
                    tp["portLevelSettings"] = Value::Array(dr.port_level.clone());
                }
            }
            let subsets: Vec<Value> = dr
                .subsets
                .iter()
                .map(|(name, (labels, policy))| {
                    let mut s = json!({"name": name, "labels": labels});
                    if let Some(p) = policy {
                        s["trafficPolicy"] = p.clone();
                    }
                    s
                })
                .collect();
            if !subsets.is_empty() {
                spec["subsets"] = Value::Array(subsets);
            }
            out.push(dr.built, resource("DestinationRule", &ns, &object_name(&host), spec));
        }
        for ((ns, host), mut vs) in std::mem::take(&mut self.virtual_services) {
            // Istio 0.x: higher precedence first; equal precedence by name.
            vs.routes.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            let http: Vec<Value> = vs.routes.into_iter().map(|(_, _, r)| r).collect();
            out.push(vs.built, resource("VirtualService", &ns, &object_name(&host), json!({"hosts": [host], "http": http})));
        }
    }
}

impl Conversion {
    fn push(&mut self, built: Built, resource: Value) {
        let mut comments: Vec<String> = built.sources.iter().map(|s| format!("converted from {s}")).collect();
        self.notes += built.notes.len();
        comments.extend(built.notes.iter().map(|n| format!("note: {n}")));
        self.documents.push(Document::Converted { comments, resource });
    }
}

fn parse<T: serde::de::DeserializeOwned>(spec: serde_yaml::Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        crate::load::shape(path, e.into_inner().to_string())
    })
}

fn resource(kind: &str, namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

/// The host an `IstioService` names, as Istio 0.x resolved it for a resource in `namespace`:
/// `service` as written; else `name`, short when it is in the resource's own namespace (so
/// it resolves there in v1 too), else `name.namespace.svc.cluster.local` (or `.domain`).
fn host_of(s: &spec::IstioService, namespace: &str, field: &str) -> Result<String, Problem> {
    match (&s.service, &s.name) {
        (Some(svc), None) if s.namespace.is_none() && s.domain.is_none() => Ok(svc.clone()),
        (Some(_), None) => Err((field.into(), "service is a full host: namespace and domain cannot be given with it".into())),
        (Some(_), Some(_)) => Err((field.into(), "name and service cannot both be given".into())),
        (None, None) => Err((field.into(), "name or service is required".into())),
        (None, Some(name)) => {
            let ns = s.namespace.as_deref().unwrap_or(namespace);
            Ok(match &s.domain {
                Some(domain) => format!("{name}.{ns}.{domain}"),
                None if ns == namespace => name.clone(),
                None => format!("{name}.{ns}.svc.cluster.local"),
            })
        }
    }
}

/// A subset name for `labels`: the value alone for the usual `version: v1`, else every
/// `key-value`, made a DNS label as v1 requires.
fn subset_name(labels: &BTreeMap<String, String>) -> String {
    let raw = match labels.iter().next() {
        Some((k, v)) if labels.len() == 1 && k == "version" => v.clone(),
        _ => labels.iter().map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}-{v}") }).collect::<Vec<_>>().join("-"),
    };
    let mut name = dns_label(&raw);
    name.truncate(63);
    let name = name.trim_end_matches('-').to_string();
    if name.is_empty() {
        "all".into()
    } else {
        name
    }
}

fn dns_label(s: &str) -> String {
    let mapped: String = s.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    mapped.trim_matches('-').to_string()
}

/// A Kubernetes name for a resource about `host`: the host, lower-cased, with what a name
/// cannot hold (`*`, `_`) dropped or made `-`.
fn object_name(host: &str) -> String {
    let mapped: String =
        host.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
    let name = mapped.trim_matches(|c| c == '-' || c == '.').to_string();
    if name.is_empty() {
        "wildcard".into()
    } else {
        name
    }
}

/// A 0.x duration (Go style, `3m`) as v1 writes it (`180s`).
fn duration(s: &str, field: &str) -> Result<Value, Problem> {
    let d = crate::duration::parse_go_duration(s).map_err(|e| (field.to_string(), e))?;
    let text = if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.9}", d.as_secs_f64()).trim_end_matches('0').to_string() + "s"
    };
    Ok(Value::String(text))
}

/// Whether `s` is an IP address or a CIDR range.
fn is_address(s: &str) -> bool {
    match s.split_once('/') {
        Some((ip, len)) => ip.parse::<IpAddr>().is_ok() && len.parse::<u8>().is_ok(),
        None => s.parse::<IpAddr>().is_ok(),
    }
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// A v1 `StringMatch` from a 0.x one (exactly one of exact, prefix, regex).
fn string_match(m: &spec::StringMatch, field: &str) -> Result<Value, Problem> {
    let mut out = Map::new();
    for (k, v) in [("exact", &m.exact), ("prefix", &m.prefix), ("regex", &m.regex)] {
        if let Some(v) = v {
            out.insert(k.into(), Value::String(v.clone()));
        }
    }
    if out.len() != 1 {
        return Err((field.into(), "exactly one of exact, prefix or regex is required".into()));
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests;
