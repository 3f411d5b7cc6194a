//! The `weft up` file: `Workload` documents (what to run, as whom, with which labels) next to
//! ordinary mesh resources (Service, VirtualService, DestinationRule, …) and optionally one
//! `MeshConfig`. The whole file is checked before anything is started: one error anywhere
//! and nothing runs.
//!
//! ```yaml
//! apiVersion: weft.dev/v1alpha1
//! kind: Workload
//! metadata: {name: reviews-v2, namespace: default, labels: {app: reviews, version: v2}}
//! spec:
//!   serviceAccount: bookinfo-reviews
//!   command: [weft, sample, reviews, --version, v2]
//!   ports: [{containerPort: 9080}]
//! ```
//!
//! Istio's pod annotations apply: `sidecar.istio.io/inject: "false"` runs the workload with no
//! sidecar and no capture; `traffic.sidecar.istio.io/includeOutboundIPRanges` and its siblings
//! shape the capture as they do in Kubernetes; `inject.istio.io/templates: gateway` (Istio's
//! gateway injection) makes the workload a gateway: only its proxy runs, as a `router`, with no
//! capture and no command — an ingress or egress gateway, chosen by its labels and the
//! `Gateway` resources that select them.

use std::collections::BTreeMap;

use serde::Deserialize;
use weft_api::{load_text, Diagnostic, Level};

pub const API_VERSION: &str = "weft.dev/v1alpha1";

/// A checked file: the workloads, the resources for the control plane, the mesh config.
#[derive(Debug, Clone)]
pub struct MeshFile {
    pub workloads: Vec<Workload>,
    /// The other documents, as parsed YAML, in file order.
    pub resources: Vec<serde_yaml::Value>,
    pub mesh_config: Option<serde_yaml::Value>,
    /// Warnings worth showing (unknown kinds and the like).
    pub warnings: Vec<String>,
    /// Resources that would restrict traffic, of kinds weft does not enforce: `weft up` refuses
    /// to start with them unless told to accept running without them.
    pub unenforced: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub service_account: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub ports: Vec<u16>,
}

/// Istio's annotation choosing the injection template; `gateway` makes a gateway.
pub const TEMPLATES_ANNOTATION: &str = "inject.istio.io/templates";

impl Workload {
    /// Whether it gets a proxy (Istio's `sidecar.istio.io/inject`, default yes): a sidecar, or
    /// the gateway itself.
    pub fn sidecar(&self) -> bool {
        self.annotations.get("sidecar.istio.io/inject").map(|v| v != "false").unwrap_or(true)
    }

    /// Whether it is a gateway (`inject.istio.io/templates: gateway`): its proxy is all that
    /// runs, as a `router`, uncaptured.
    pub fn gateway(&self) -> bool {
        self.annotations.get(TEMPLATES_ANNOTATION).is_some_and(|t| t == "gateway")
    }

    /// `namespace/name`, how the workload is named to the user.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WorkloadDoc {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: WorkloadMeta,
    spec: WorkloadSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadMeta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WorkloadSpec {
    #[serde(default)]
    service_account: Option<String>,
    /// Required, except for a gateway, which runs nothing but its proxy.
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    ports: Vec<PortDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PortDoc {
    container_port: u16,
    #[allow(dead_code)]
    #[serde(default)]
    name: Option<String>,
}

/// Where Istio's capture annotations live on a pod; the names after it are
/// [`weft_capture::options::ANNOTATIONS`] (all but `interceptionMode`: `weft up` sidecars take
/// REDIRECT only).
pub const CAPTURE_ANNOTATION_PREFIX: &str = "traffic.sidecar.istio.io/";

impl Workload {
    /// The capture this workload's annotations ask for, checked as `weft capture` checks its
    /// flags; the error names the annotation and what is wrong with its value.
    pub fn capture(&self) -> Result<weft_capture::CaptureConfig, String> {
        self.capture_with_dns(false)
    }

    /// [`Workload::capture`], with DNS to the resolv.conf nameserver sent to the sidecar
    /// (istio-iptables' `--redirect-dns`).
    pub fn capture_with_dns(&self, dns: bool) -> Result<weft_capture::CaptureConfig, String> {
        let mut raw = weft_capture::RawOptions::default();
        if dns {
            raw.redirect_dns = true;
            raw.dns_servers = vec![crate::host::DNS_NAMESERVER.to_owned()];
        }
        for (k, v) in &self.annotations {
            let Some(name) = k.strip_prefix(CAPTURE_ANNOTATION_PREFIX) else { continue };
            if name == "interceptionMode" || !raw.set_annotation(name, v) {
                let known: Vec<&str> = weft_capture::options::ANNOTATIONS.iter().copied().filter(|a| *a != "interceptionMode").collect();
                return Err(format!("{k} is not a capture annotation weft knows ({CAPTURE_ANNOTATION_PREFIX}{{{}}})", known.join(",")));
            }
        }
        weft_capture::CaptureConfig::from_raw(&raw).map_err(|e| format!("{e}"))
    }
}

/// Parses and checks `text` (from `file`); every problem is reported as `file:line: …`.
pub fn parse(text: &str, file: &str) -> Result<MeshFile, Vec<String>> {
    let mut errors = Vec::new();
    let mut out =
        MeshFile { workloads: Vec::new(), resources: Vec::new(), mesh_config: None, warnings: Vec::new(), unenforced: Vec::new() };
    let index = weft_api::locate::LineIndex::build(text);
    let mut others = String::new();
    for (n, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = match serde_yaml::Value::deserialize(de) {
            Ok(v) => v,
            Err(e) => {
                let line = e.location().map(|l| l.line()).unwrap_or(0);
                errors.push(format!("{file}:{line}: YAML syntax error: {e}"));
                return Err(errors);
            }
        };
        if doc.is_null() {
            continue;
        }
        let start = index.docs.get(n).map(|d| d.start).unwrap_or(1);
        let line_of = |path: &str| index.docs.get(n).map(|d| d.line_of(path)).unwrap_or(start);
        let api = doc.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let kind = doc.get("kind").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        match (api.as_str(), kind.as_str()) {
            (API_VERSION, "Workload") => match workload(doc) {
                Ok(w) => {
                    if let Some(problem) = check_workload(&w) {
                        errors.push(format!("{file}:{}: Workload {}: {}: {}", line_of(problem.0), w.id(), problem.0, problem.1));
                    } else if out.workloads.iter().any(|o| o.name == w.name && o.namespace == w.namespace) {
                        errors.push(format!("{file}:{start}: Workload {}: declared twice", w.id()));
                    } else {
                        out.workloads.push(w);
                    }
                }
                Err((path, msg)) => errors.push(format!("{file}:{}: Workload: {path}: {msg}", line_of(&path))),
            },
            (API_VERSION, "MeshConfig") => {
                let spec = doc.get("spec").cloned().unwrap_or(serde_yaml::Value::Null);
                let spec_text = serde_yaml::to_string(&spec).unwrap_or_default();
                match weft_api::mesh::load_mesh_checked(&spec_text, file) {
                    Err(ds) => {
                        errors.extend(ds.iter().map(|d| format!("{file}:{start}: MeshConfig: spec.{}: {}", d.field_path, d.message)))
                    }
                    Ok((_, warnings)) => {
                        out.warnings
                            .extend(warnings.iter().map(|d| format!("{file}:{start}: MeshConfig: spec.{}: {}", d.field_path, d.message)));
                        if out.mesh_config.replace(spec).is_some() {
                            errors.push(format!("{file}:{start}: MeshConfig: only one is allowed"));
                        }
                    }
                }
            }
            (API_VERSION, other) => errors.push(format!("{file}:{start}: {API_VERSION} has no kind {other:?} (Workload or MeshConfig)")),
            _ => {
                // Checked by the control plane's own loader below, with its own file:line.
                others.push_str("---\n");
                others.push_str(&serde_yaml::to_string(&doc).unwrap_or_default());
                out.resources.push(doc);
            }
        }
    }
    // The resources are checked from the original text, so lines point into the user's file.
    let loaded = load_text(text, file);
    for d in loaded.diagnostics {
        // weft's own kinds were checked above; the control plane's loader does not know them.
        let ours = d.resource.as_deref().is_some_and(|r| r.starts_with("Workload ") || r.starts_with("MeshConfig "));
        if ours {
            continue;
        }
        match d.level {
            Level::Error if d.is_unenforced_security() => out.unenforced.push(render(&d)),
            Level::Error => errors.push(render(&d)),
            Level::Warning => out.warnings.push(render(&d)),
        }
    }
    if out.workloads.is_empty() && errors.is_empty() {
        errors.push(format!("{file}: no Workload ({API_VERSION}) to run"));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The WorkloadEntry `weft up` writes for `w` at `address`: `labels` (the workload's own, plus
/// what the mode adds) and, with a sidecar, Istio's `security.istio.io/tlsMode: istio`, which
/// turns on auto mTLS towards it.
pub fn workload_entry(w: &Workload, address: &str, mut labels: BTreeMap<String, String>) -> serde_json::Value {
    if w.sidecar() {
        labels.insert("security.istio.io/tlsMode".into(), "istio".into());
    }
    serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
        "metadata": {"name": w.name, "namespace": w.namespace, "labels": labels},
        "spec": {"address": address, "labels": labels, "serviceAccount": w.service_account},
    })
}

fn render(d: &Diagnostic) -> String {
    d.to_string()
}

fn workload(doc: serde_yaml::Value) -> Result<Workload, (String, String)> {
    let d: WorkloadDoc = serde_path_to_error::deserialize(doc).map_err(|e| (e.path().to_string(), e.into_inner().to_string()))?;
    Ok(Workload {
        name: d.metadata.name,
        namespace: d.metadata.namespace.unwrap_or_else(|| "default".into()),
        labels: d.metadata.labels,
        annotations: d.metadata.annotations,
        service_account: d.spec.service_account.unwrap_or_else(|| "default".into()),
        command: d.spec.command,
        env: d.spec.env,
        ports: d.spec.ports.into_iter().map(|p| p.container_port).collect(),
    })
}

/// The first thing wrong with a parsed workload: (field path, message).
fn check_workload(w: &Workload) -> Option<(&'static str, String)> {
    if !dns_label(&w.name) {
        return Some(("metadata.name", format!("{:?} is not a DNS label (lower-case letters, digits and '-', at most 63)", w.name)));
    }
    if !dns_label(&w.namespace) {
        return Some(("metadata.namespace", format!("{:?} is not a DNS label", w.namespace)));
    }
    if !dns_label(&w.service_account) {
        return Some(("spec.serviceAccount", format!("{:?} is not a DNS label", w.service_account)));
    }
    if let Some(t) = w.annotations.get(TEMPLATES_ANNOTATION).filter(|t| *t != "gateway" && *t != "sidecar") {
        return Some(("metadata.annotations", format!("{TEMPLATES_ANNOTATION}: {t:?}: weft up knows the templates sidecar and gateway")));
    }
    if w.gateway() {
        if !w.command.is_empty() {
            return Some(("spec.command", "a gateway runs only its proxy; leave the command out".into()));
        }
        if !w.sidecar() {
            return Some(("metadata.annotations", "a gateway is its proxy: sidecar.istio.io/inject: \"false\" would leave nothing".into()));
        }
    } else if w.command.is_empty() || w.command[0].is_empty() {
        return Some(("spec.command", "needs at least the program to run".into()));
    }
    if w.ports.contains(&0) {
        return Some(("spec.ports", "containerPort 0 is not a port".into()));
    }
    if let Some(v) = w.annotations.get("sidecar.istio.io/inject").filter(|v| *v != "true" && *v != "false") {
        return Some(("metadata.annotations", format!("sidecar.istio.io/inject: {v:?} must be \"true\" or \"false\"")));
    }
    w.capture().err().map(|e| ("metadata.annotations", e))
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: details, labels: {app: details}}
spec:
  command: [weft, sample, details]
  ports: [{containerPort: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: details}
spec:
  selector: {app: details}
  ports: [{name: http, port: 9080}]
";

    #[test]
    fn workloads_and_resources_split() {
        let f = parse(GOOD, "mesh.yaml").expect("valid");
        assert_eq!(f.workloads.len(), 1);
        assert_eq!(f.workloads[0].namespace, "default");
        assert_eq!(f.workloads[0].service_account, "default");
        assert!(f.workloads[0].sidecar());
        assert_eq!(f.resources.len(), 1);
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let bad = GOOD.replace("  ports: [{containerPort: 9080}]", "  ports: [{containerPort: 9080}]\n  replicas: 2");
        let e = parse(&bad, "mesh.yaml").unwrap_err();
        assert!(e[0].starts_with("mesh.yaml:") && e[0].contains("replicas"), "{e:?}");
        let bad = GOOD.replace("name: details, labels", "name: Details_1, labels");
        let e = parse(&bad, "mesh.yaml").unwrap_err();
        assert!(e[0].starts_with("mesh.yaml:3: Workload default/Details_1: metadata.name"), "{e:?}");
        let bad = format!("{GOOD}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: d}}\nspec:\n  host: details\n  bogus: 1\n");
        let e = parse(&bad, "mesh.yaml").unwrap_err();
        assert!(e.iter().any(|l| l.starts_with("mesh.yaml:20") && l.contains("spec.bogus")), "{e:?}");
        let bad =
            format!("{GOOD}---\napiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {{name: details}}\nspec: {{command: [x]}}\n");
        assert!(parse(&bad, "m.yaml").unwrap_err()[0].contains("declared twice"));
    }

    #[test]
    fn annotations_are_checked() {
        let bad = GOOD.replace(
            "labels: {app: details}}",
            "labels: {app: details}, annotations: {traffic.sidecar.istio.io/includeOutboundIpRanges: '*'}}",
        );
        let e = parse(&bad, "mesh.yaml").unwrap_err();
        assert!(e[0].contains("includeOutboundIpRanges is not a capture annotation"), "{e:?}");
    }
}
