//! Applying, checking and removing the manifests on a cluster: server-side apply (field manager
//! `weft-install`), readiness with reasons in words when something is not ready, and removal in
//! reverse order.

use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::Value;

use super::manifest::Manifest;

/// Where each kind the manifests hold lives in the API: (apiVersion, kind, plural, namespaced).
const KINDS: &[(&str, &str, &str, bool)] = &[
    ("v1", "Namespace", "namespaces", false),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", false),
    ("v1", "ServiceAccount", "serviceaccounts", true),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", false),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", false),
    ("rbac.authorization.k8s.io/v1", "Role", "roles", true),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", true),
    ("v1", "ConfigMap", "configmaps", true),
    ("apps/v1", "Deployment", "deployments", true),
    ("apps/v1", "DaemonSet", "daemonsets", true),
    ("v1", "Service", "services", true),
    ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", false),
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", false),
];

/// The API for one manifest's object, and its name.
fn api_for(client: &Client, object: &Value) -> Result<(Api<DynamicObject>, String, String), String> {
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
    let (_, _, plural, namespaced) = KINDS
        .iter()
        .find(|(a, k, _, _)| *a == api_version && *k == kind)
        .ok_or_else(|| format!("{api_version} {kind}: not a kind weft install applies"))?;
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), api_version.to_owned()),
    };
    let ar = ApiResource { group, version, api_version: api_version.to_owned(), kind: kind.to_owned(), plural: (*plural).to_owned() };
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let api = if *namespaced {
        let ns = object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
        Api::namespaced_with(client.clone(), ns, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    };
    Ok((api, name, format!("{kind} {}", describe(object))))
}

fn describe(object: &Value) -> String {
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    match object.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

/// Applies every manifest (server-side apply); `progress` hears each step.
pub async fn apply(client: &Client, manifests: &[Manifest], progress: &mut dyn FnMut(String)) -> Result<(), String> {
    let params = PatchParams::apply("weft-install").force();
    let mut part = None;
    for m in manifests {
        if part != Some(m.part) {
            part = Some(m.part);
            progress(format!("applying {}", m.part.name()));
        }
        let (api, name, what) = api_for(client, &m.object)?;
        api.patch(&name, &params, &Patch::Apply(&m.object)).await.map_err(|e| format!("{what}: {e}"))?;
        // A CRD must be established before objects of its kind can be applied.
        if m.object.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition") {
            wait_established(&api, &name).await?;
        }
    }
    Ok(())
}

async fn wait_established(api: &Api<DynamicObject>, name: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = api.get(name).await.map_err(|e| format!("CustomResourceDefinition {name}: {e}"))?;
        let established = o
            .data
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        if established {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("CustomResourceDefinition {name} was not established within 30s"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Why a Deployment or DaemonSet is not ready, in words, from its pods and their events.
async fn why_not_ready(client: &Client, ns: &str, deployment: &Value) -> String {
    let selector = deployment
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let list = match pods.list(&ListParams::default().labels(&selector)).await {
        Ok(l) => l,
        Err(e) => return format!("its pods cannot be listed: {e}"),
    };
    if list.items.is_empty() {
        // No pod at all: the ReplicaSet could not create one (often a webhook that is not
        // reachable), or the controller manager is not running.
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
        let failed = events
            .list(&ListParams::default())
            .await
            .ok()
            .and_then(|l| l.items.into_iter().rev().find(|e| e.reason.as_deref() == Some("FailedCreate")).and_then(|e| e.message));
        return match failed {
            Some(m) => format!("no pod could be created: {m}"),
            None => "no pod exists yet (is the controller manager running?)".into(),
        };
    }
    let mut reasons = Vec::new();
    for p in &list.items {
        let name = p.metadata.name.clone().unwrap_or_default();
        let Some(status) = &p.status else { continue };
        let scheduled = status.conditions.iter().flatten().find(|c| c.type_ == "PodScheduled");
        match scheduled {
            None if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none() => {
                reasons.push(format!("{name}: not scheduled: no scheduler has placed it (is kube-scheduler running?)"))
            }
            Some(c) if c.status == "False" => {
                reasons.push(format!("{name}: cannot be scheduled: {}", c.message.clone().unwrap_or_default()))
            }
            _ => {}
        }
        for cs in status.container_statuses.iter().flatten().chain(status.init_container_statuses.iter().flatten()) {
            if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
                let reason = w.reason.clone().unwrap_or_default();
                let words = match reason.as_str() {
                    "ImagePullBackOff" | "ErrImagePull" => format!("the image {} cannot be pulled", cs.image),
                    "CrashLoopBackOff" => "keeps crashing (see kubectl logs)".to_owned(),
                    other => other.to_owned(),
                };
                reasons.push(format!("{name}/{}: {words}: {}", cs.name, w.message.clone().unwrap_or_default()));
            }
        }
        if reasons.is_empty() && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
            reasons.push(format!("{name}: scheduled but not ready yet"));
        }
    }
    reasons.join("; ")
}

/// A workload's (ready, wanted) counts: a Deployment's available replicas, a DaemonSet's ready
/// pods out of the nodes it should run on (none known until its controller has looked);
/// `None` for any other kind.
fn readiness(kind: &str, o: &Value) -> Option<(i64, Option<i64>)> {
    let n = |p: &str| o.pointer(p).and_then(Value::as_i64);
    match kind {
        "Deployment" => Some((n("/status/availableReplicas").unwrap_or(0), Some(n("/spec/replicas").unwrap_or(1)))),
        "DaemonSet" => {
            // The API server fills the status with zeros; only the controller's having seen this
            // generation makes "0 of 0 nodes" mean anything.
            let seen = n("/status/observedGeneration").is_some_and(|g| g >= n("/metadata/generation").unwrap_or(1));
            Some((n("/status/numberReady").unwrap_or(0), n("/status/desiredNumberScheduled").filter(|_| seen)))
        }
        _ => None,
    }
}

fn is_workload(m: &Manifest) -> bool {
    matches!(m.object.get("kind").and_then(Value::as_str), Some("Deployment" | "DaemonSet"))
}

/// Waits until every Deployment is available and every DaemonSet ready on its nodes, or says
/// why not after `timeout`.
pub async fn wait_ready(
    client: &Client,
    manifests: &[Manifest],
    timeout: Duration,
    progress: &mut dyn FnMut(String),
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    for m in manifests.iter().filter(|m| is_workload(m)) {
        let (api, name, what) = api_for(client, &m.object)?;
        let ns = m.object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default").to_owned();
        let kind = m.object.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
        loop {
            let d = api.get(&name).await.map_err(|e| format!("{what}: {e}"))?;
            if let Some((ready, Some(want))) = readiness(&kind, &d.data) {
                if ready >= want {
                    progress(format!("{what} is ready"));
                    break;
                }
            }
            if Instant::now() > deadline {
                return Err(format!("{what} is not ready after {}s: {}", timeout.as_secs(), why_not_ready(client, &ns, &m.object).await));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    Ok(())
}

/// Deletes every manifest's object, in reverse order; absent ones are fine.
pub async fn remove(client: &Client, manifests: &[Manifest], progress: &mut dyn FnMut(String)) -> Result<(), String> {
    for m in manifests.iter().rev() {
        let (api, name, what) = api_for(client, &m.object)?;
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => progress(format!("removed {what}")),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
    Ok(())
}

/// What is missing or not ready, one line each; empty when the install is whole.
pub async fn verify(client: &Client, manifests: &[Manifest]) -> Result<Vec<String>, String> {
    let mut problems = Vec::new();
    for m in manifests {
        let (api, name, what) = api_for(client, &m.object)?;
        match api.get(&name).await {
            Ok(o) if is_workload(m) => {
                let kind = m.object.get("kind").and_then(Value::as_str).unwrap_or_default();
                let ns = m.object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
                match readiness(kind, &o.data) {
                    Some((ready, Some(want))) if ready < want => {
                        problems.push(format!("{what}: {ready}/{want} ready: {}", why_not_ready(client, ns, &m.object).await))
                    }
                    Some((_, None)) => {
                        problems.push(format!("{what}: its controller has not counted its nodes yet (is the controller manager running?)"))
                    }
                    _ => {}
                }
            }
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => problems.push(format!("{what}: missing")),
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_daemonset_is_ready_on_every_node_it_should_run_on_and_unknown_before_its_controller_looked() {
        let ds = |status: Value| json!({"kind": "DaemonSet", "status": status});
        let seen = |status: Value| json!({"kind": "DaemonSet", "metadata": {"generation": 2}, "status": status});
        assert_eq!(
            readiness("DaemonSet", &seen(json!({"observedGeneration": 2, "desiredNumberScheduled": 3, "numberReady": 2}))),
            Some((2, Some(3)))
        );
        assert_eq!(readiness("DaemonSet", &ds(json!({}))), Some((0, None)), "no count yet is not ready");
        let defaulted = seen(json!({"currentNumberScheduled": 0, "desiredNumberScheduled": 0, "numberMisscheduled": 0, "numberReady": 0}));
        assert_eq!(readiness("DaemonSet", &defaulted), Some((0, None)), "the API server's zeros before the controller looked are no count");
        assert_eq!(
            readiness("DaemonSet", &seen(json!({"observedGeneration": 1, "desiredNumberScheduled": 1}))),
            Some((0, None)),
            "an older generation's count"
        );
        let d = json!({"spec": {"replicas": 2}, "status": {"availableReplicas": 2}});
        assert_eq!(readiness("Deployment", &d), Some((2, Some(2))));
        assert_eq!(readiness("Service", &d), None);
    }
}
