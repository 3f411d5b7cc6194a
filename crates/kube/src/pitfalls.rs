//! The mistakes Istio users hit on a cluster, found by asking the API server (`weft analyze
//! --kubeconfig`): a namespace with pods that is not labelled for injection, pods that started
//! before the label (no sidecar: they need a restart), no injection webhook or one the API
//! server cannot trust yet, an app running as the proxy's UID. Each says what to change, with
//! the YAML where there is some.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams};
use kube::Client;
use weft_api::{codes, Diagnostic, Level};

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

/// What is wrong on the cluster, as analyze's diagnostics.
pub async fn check(client: &Client) -> Result<Vec<Diagnostic>, String> {
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
    Ok(out)
}
