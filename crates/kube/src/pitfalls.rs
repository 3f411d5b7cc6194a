//! The mistakes Istio users hit on a cluster, found by asking the API server (`weft analyze
//! --kubeconfig`): a namespace with pods that is not labelled for injection, pods that started
//! before the label (no sidecar: they need a restart), no injection webhook or one the API
//! server cannot trust yet, an app running as the proxy's UID, STRICT mTLS while pods without a
//! sidecar run, REGISTRY_ONLY with no ServiceEntry for anything outside, and mesh components no
//! node will take because of its taints. Each says what to change, with the YAML where there is
//! some.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Taint, Toleration};
use kube::api::{Api, ListParams};
use kube::Client;
use weft_api::{codes, Diagnostic, Level, Object};

use crate::source::ORIGIN;

/// Namespaces the mesh never injects, and the control plane's own.
const SYSTEM: &[&str] = &["kube-system", "kube-public", "kube-node-lease", "istio-system", "local-path-storage"];

fn finding(level: Level, code: &'static str, resource: String, message: String) -> Diagnostic {
    Diagnostic { level, file: ORIGIN.into(), line: None, resource: Some(resource), field_path: String::new(), message, code: Some(code) }
}

fn injected_namespace(ns: &Namespace) -> bool {
    let labels = ns.metadata.labels.clone().unwrap_or_default();
    labels.get("istio-injection").map(String::as_str) == Some("enabled") || labels.contains_key("istio.io/rev")
}

fn has_proxy(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    spec.map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()).any(|c| c.name == "istio-proxy")).unwrap_or(false)
}

/// What is wrong on the cluster, as analyze's diagnostics; `objects` are the mesh resources the
/// API server holds (the source's view) and `namespace` the control plane's.
pub async fn check(client: &Client, objects: &[Object], namespace: &str) -> Result<Vec<Diagnostic>, String> {
    let mut out = Vec::new();
    let namespaces =
        Api::<Namespace>::all(client.clone()).list(&ListParams::default()).await.map_err(|e| format!("listing namespaces: {e}"))?;
    let pods = Api::<Pod>::all(client.clone()).list(&ListParams::default()).await.map_err(|e| format!("listing pods: {e}"))?;
    for ns in &namespaces.items {
        let name = ns.metadata.name.clone().unwrap_or_default();
        if SYSTEM.contains(&name.as_str()) {
            continue;
        }
        let in_ns: Vec<&Pod> = pods.items.iter().filter(|p| p.metadata.namespace.as_deref() == Some(&name)).collect();
        if !injected_namespace(ns) {
            if !in_ns.is_empty() && in_ns.iter().any(|p| !has_proxy(p)) {
                out.push(finding(
                    Level::Warning,
                    codes::NAMESPACE_NOT_INJECTED,
                    format!("Namespace {name}"),
                    format!(
                        "the namespace is not enabled for sidecar injection: its pods get no sidecar. Label it, then restart its workloads:\n  kubectl label namespace {name} istio-injection=enabled\nor apply:\n  apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: {name}\n    labels:\n      istio-injection: enabled"
                    ),
                ));
            }
            continue;
        }
        for p in in_ns {
            let pod = p.metadata.name.clone().unwrap_or_default();
            let opted_out = p.metadata.labels.as_ref().and_then(|l| l.get("sidecar.istio.io/inject")).map(String::as_str) == Some("false")
                || p.metadata.annotations.as_ref().and_then(|a| a.get("sidecar.istio.io/inject")).map(String::as_str) == Some("false");
            let host_network = p.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
            if !has_proxy(p) && !opted_out && !host_network {
                let owner = p
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|o| o.controller == Some(true))
                    .map(|o| format!("{} {}", o.kind, o.name));
                let restart = match owner {
                    Some(o) if o.starts_with("ReplicaSet ") => "kubectl rollout restart deployment <its Deployment>".to_owned(),
                    Some(o) => format!("restart it through its {o}"),
                    None => format!("kubectl delete pod -n {name} {pod} and create it again"),
                };
                out.push(finding(
                    Level::Warning,
                    codes::POD_MISSING_PROXY,
                    format!("Pod {name}/{pod}"),
                    format!("the pod has no sidecar though its namespace is labelled for injection: it started before the label, or the webhook was not called. Restart it: {restart}"),
                ));
            }
            for c in p.spec.iter().flat_map(|s| s.containers.iter()).filter(|c| c.name != "istio-proxy") {
                let uid = c
                    .security_context
                    .as_ref()
                    .and_then(|s| s.run_as_user)
                    .or_else(|| p.spec.as_ref().and_then(|s| s.security_context.as_ref()).and_then(|s| s.run_as_user));
                if uid == Some(1337) {
                    out.push(finding(
                        Level::Error,
                        codes::INVALID_APPLICATION_UID,
                        format!("Pod {name}/{pod}"),
                        format!("container {} runs as UID 1337, the proxy's: capture lets its traffic bypass the sidecar. Run it as another user (securityContext.runAsUser)", c.name),
                    ));
                }
            }
        }
    }
    // The injection webhook, when some namespace expects it.
    if namespaces.items.iter().any(injected_namespace) {
        let hooks = Api::<MutatingWebhookConfiguration>::all(client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing mutating webhooks: {e}"))?;
        let inject: Vec<(String, bool)> = hooks
            .items
            .iter()
            .flat_map(|c| {
                let cname = c.metadata.name.clone().unwrap_or_default();
                c.webhooks
                    .iter()
                    .flatten()
                    .filter(|w| {
                        w.client_config.service.as_ref().and_then(|s| s.path.as_deref()).is_some_and(|p| p.starts_with("/inject"))
                            || w.client_config.url.as_deref().is_some_and(|u| u.contains("/inject"))
                    })
                    .map(move |w| (format!("{cname}/{}", w.name), w.client_config.ca_bundle.as_ref().is_some_and(|b| !b.0.is_empty())))
            })
            .collect();
        if inject.is_empty() {
            out.push(finding(
                Level::Error,
                codes::INJECTION_WEBHOOK,
                "MutatingWebhookConfiguration".into(),
                "no injection webhook is registered, so labelled namespaces get no sidecars: run `weft install` (or `weft manifest generate | kubectl apply -f -`)".into(),
            ));
        }
        for (hook, _) in inject.iter().filter(|(_, trusted)| !trusted) {
            out.push(finding(
                Level::Error,
                codes::INJECTION_WEBHOOK,
                format!("MutatingWebhookConfiguration {hook}"),
                "the webhook has no caBundle, so the API server cannot call it and pods are created without sidecars (or refused): is the control plane running? It publishes its root there".into(),
            ));
        }
    }
    strict_without_sidecars(objects, &pods.items, namespace, &mut out);
    registry_only(client, objects, namespace, &mut out).await;
    taints(client, namespace, &mut out).await?;
    Ok(out)
}

/// A running pod outside the system namespaces with no sidecar: it calls others in plaintext.
fn plaintext_caller(p: &Pod) -> bool {
    let ns = p.metadata.namespace.as_deref().unwrap_or("default");
    let running = p.status.as_ref().and_then(|s| s.phase.as_deref()).is_none_or(|ph| ph == "Running" || ph == "Pending");
    let host_network = p.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    running && !host_network && !SYSTEM.contains(&ns) && !has_proxy(p)
}

/// STRICT mTLS (a PeerAuthentication) while pods without a sidecar run: their calls into it are
/// refused, the most reported breakage of turning STRICT on.
fn strict_without_sidecars(objects: &[Object], pods: &[Pod], root: &str, out: &mut Vec<Diagnostic>) {
    let callers: Vec<String> = pods
        .iter()
        .filter(|p| plaintext_caller(p))
        .map(|p| format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or("default"), p.metadata.name.as_deref().unwrap_or_default()))
        .collect();
    if callers.is_empty() {
        return;
    }
    for o in objects {
        let Object::PeerAuthentication(pa) = o else { continue };
        if pa.spec.mtls.as_ref().map(|m| m.mode) != Some(weft_api::security::MtlsMode::Strict) {
            continue;
        }
        let scope = if pa.namespace == root && pa.spec.selector.is_none() {
            "the whole mesh".to_owned()
        } else if pa.spec.selector.is_none() {
            format!("namespace {}", pa.namespace)
        } else {
            format!("the workloads it selects in {}", pa.namespace)
        };
        let shown: Vec<&str> = callers.iter().take(5).map(String::as_str).collect();
        let more = if callers.len() > shown.len() { format!(" and {} more", callers.len() - shown.len()) } else { String::new() };
        out.push(finding(
            Level::Warning,
            codes::STRICT_WITHOUT_SIDECARS,
            format!("PeerAuthentication {}/{}", pa.namespace, pa.name),
            format!(
                "requires mTLS for {scope}, but these pods have no sidecar and their calls to it are refused: {}{more}. Inject them (label their namespace istio-injection=enabled and restart them), or accept plaintext while migrating:\n  apiVersion: security.istio.io/v1\n  kind: PeerAuthentication\n  metadata:\n    name: {}\n    namespace: {}\n  spec:\n    mtls:\n      mode: PERMISSIVE",
                shown.join(", "),
                pa.name,
                pa.namespace
            ),
        ));
    }
}

/// REGISTRY_ONLY (meshConfig `outboundTrafficPolicy`, from the `istio` ConfigMap) with no
/// ServiceEntry for any outside host: every call out of the mesh is refused.
async fn registry_only(client: &Client, objects: &[Object], namespace: &str, out: &mut Vec<Diagnostic>) {
    let Ok(Some(cm)) = Api::<ConfigMap>::namespaced(client.clone(), namespace).get_opt("istio").await else { return };
    let Some(mesh) = cm.data.as_ref().and_then(|d| d.get("mesh")) else { return };
    let mode = serde_yaml::from_str::<serde_json::Value>(mesh)
        .ok()
        .and_then(|v| v.pointer("/outboundTrafficPolicy/mode").and_then(|m| m.as_str().map(str::to_owned)));
    if mode.as_deref() != Some("REGISTRY_ONLY") {
        return;
    }
    let external =
        objects.iter().any(|o| matches!(o, Object::ServiceEntry(se) if se.spec.location != weft_api::networking::Location::MeshInternal));
    if external {
        return;
    }
    out.push(finding(
        Level::Warning,
        codes::REGISTRY_ONLY_NOTHING_OUTSIDE,
        format!("ConfigMap {namespace}/istio"),
        "outboundTrafficPolicy is REGISTRY_ONLY and no ServiceEntry declares a host outside the mesh: every call out (a database, an API) is refused by the sidecar (502, or a reset for TLS). Declare each host the apps call, for example:\n  apiVersion: networking.istio.io/v1\n  kind: ServiceEntry\n  metadata:\n    name: api-example-com\n  spec:\n    hosts: [api.example.com]\n    location: MESH_EXTERNAL\n    resolution: DNS\n    ports:\n    - {number: 443, name: tls, protocol: TLS}".into(),
    ));
}

/// Whether `tolerations` let a pod onto a node with `taint`.
fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let key = t.key.as_deref().is_none_or(|k| k.is_empty() || k == taint.key);
        let effect = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
        let value = match t.operator.as_deref() {
            Some("Exists") => true,
            _ => t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
        };
        key && effect && value && (t.key.is_some() || t.operator.as_deref() == Some("Exists"))
    })
}

/// A mesh Deployment (the control plane, the gateways) that no node will take: every node has a
/// NoSchedule or NoExecute taint its pods do not tolerate.
async fn taints(client: &Client, namespace: &str, out: &mut Vec<Diagnostic>) -> Result<(), String> {
    let nodes = Api::<Node>::all(client.clone()).list(&ListParams::default()).await.map_err(|e| format!("listing nodes: {e}"))?;
    if nodes.items.is_empty() {
        return Ok(());
    }
    let deployments = match Api::<Deployment>::namespaced(client.clone(), namespace).list(&ListParams::default()).await {
        Ok(d) => d.items,
        Err(e) => return Err(format!("listing the deployments in {namespace}: {e}")),
    };
    for d in deployments {
        let name = d.metadata.name.clone().unwrap_or_default();
        let spec = d.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        let tolerations = spec.and_then(|s| s.tolerations.clone()).unwrap_or_default();
        let selector = spec.and_then(|s| s.node_selector.clone()).unwrap_or_default();
        let blocking = |n: &Node| -> Vec<Taint> {
            n.spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|t| matches!(t.effect.as_str(), "NoSchedule" | "NoExecute") && !tolerates(&tolerations, t))
                .collect()
        };
        let candidates: Vec<&Node> = nodes
            .items
            .iter()
            .filter(|n| selector.iter().all(|(k, v)| n.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v)))
            .collect();
        if candidates.is_empty() || candidates.iter().any(|n| blocking(n).is_empty()) {
            continue;
        }
        let first = candidates.first().map(|n| blocking(n)).unwrap_or_default();
        let shown: Vec<String> = candidates
            .iter()
            .take(3)
            .map(|n| {
                let t: Vec<String> =
                    blocking(n).iter().map(|t| format!("{}={}:{}", t.key, t.value.as_deref().unwrap_or_default(), t.effect)).collect();
                format!("{} ({})", n.metadata.name.as_deref().unwrap_or_default(), t.join(", "))
            })
            .collect();
        let yaml: Vec<String> = first
            .iter()
            .map(|t| {
                format!(
                    "    - key: {}\n      operator: Equal\n      value: \"{}\"\n      effect: {}",
                    t.key,
                    t.value.as_deref().unwrap_or_default(),
                    t.effect
                )
            })
            .collect();
        let component = if name.starts_with("istiod") { "pilot".to_owned() } else { format!("ingressGateways[name={name}]") };
        out.push(finding(
            Level::Error,
            codes::UNTOLERATED_TAINTS,
            format!("Deployment {namespace}/{name}"),
            format!(
                "no node will take its pods: every node has a taint they do not tolerate: {}. Remove the taint from a node, or let the component tolerate it (components.{component}.k8s.tolerations in the IstioOperator):\n  tolerations:\n{}",
                shown.join("; "),
                yaml.join("\n")
            ),
        ));
    }
    Ok(())
}
