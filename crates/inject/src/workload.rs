//! Where a workload keeps its pod template, and injection of a whole object or `List`.

use serde_json::{Map, Value};

use crate::pod::{inject_pod, Outcome, Owner};
use crate::values::Values;
use crate::InjectError;

/// What injection did to one workload of an object (a `List` has several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `Kind namespace/name`, or `Kind name` without a namespace.
    pub workload: String,
    pub outcome: Outcome,
}

/// The path of the pod template in each kind that has one.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" | "Job" | "DeploymentConfig" => {
            Some(&["spec", "template"])
        }
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// Injects every pod template in `object` (a workload, or a `List` of them) in place. Objects
/// without a pod template (a Service, a ConfigMap) are left as they are and not reported.
pub fn inject_object(
    object: &mut Value,
    namespace_labels: Option<&Map<String, Value>>,
    values: &Values,
) -> Result<Vec<Report>, InjectError> {
    let kind =
        object.get("kind").and_then(Value::as_str).ok_or_else(|| InjectError::new("kind", "missing: not a Kubernetes object"))?.to_owned();
    if kind == "List" || kind.ends_with("List") && object.get("items").is_some() {
        let items = object
            .get_mut("items")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| InjectError::new("items", "a List needs a list of items"))?;
        let mut reports = Vec::new();
        for (i, item) in items.iter_mut().enumerate() {
            let r =
                inject_object(item, namespace_labels, values).map_err(|e| InjectError::new(format!("items[{i}].{}", e.at), e.message))?;
            reports.extend(r);
        }
        return Ok(reports);
    }
    let Some(path) = template_path(&kind) else { return Ok(Vec::new()) };
    let meta = object.get("metadata").cloned().unwrap_or(Value::Null);
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .or_else(|| meta.get("generateName").and_then(Value::as_str))
        .unwrap_or_default()
        .to_owned();
    let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or_default().to_owned();
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_owned();
    let owner = if kind == "Pod" {
        pod_owner(&meta, &api_version)
    } else {
        Owner { api_version, kind: kind.clone(), name: name.clone(), namespace: namespace.clone() }
    };

    let mut template = object;
    for (depth, key) in path.iter().enumerate() {
        let at = path[..=depth].join(".");
        template = template
            .get_mut(*key)
            .filter(|v| v.is_object())
            .ok_or_else(|| InjectError::new(at, "missing: the workload has no pod template"))?;
    }
    let template = template.as_object_mut().ok_or_else(|| InjectError::new(path.join("."), "must be an object"))?;
    let mut t_meta = template.remove("metadata").unwrap_or(Value::Null);
    let mut t_spec = template.remove("spec").unwrap_or(Value::Null);
    let result = inject_pod(&mut t_meta, &mut t_spec, &path.join("."), &owner, namespace_labels, values);
    if !t_meta.is_null() {
        template.insert("metadata".into(), t_meta);
    }
    if !t_spec.is_null() {
        template.insert("spec".into(), t_spec);
    }
    let workload = if namespace.is_empty() { format!("{kind} {name}") } else { format!("{kind} {namespace}/{name}") };
    Ok(vec![Report { workload, outcome: result? }])
}

/// A pod names its workload through its controller: a ReplicaSet made by a Deployment is
/// `<deployment>-<pod-template-hash>`, and the Deployment is the workload, as Istio reads it.
fn pod_owner(meta: &Value, api_version: &str) -> Owner {
    let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or_default().to_owned();
    let controller = meta
        .get("ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true));
    if let Some(r) = controller {
        let kind = r.get("kind").and_then(Value::as_str).unwrap_or_default();
        let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
        let hash = meta.get("labels").and_then(|l| l.get("pod-template-hash")).and_then(Value::as_str);
        if kind == "ReplicaSet" {
            if let Some(deployment) = hash.and_then(|h| name.strip_suffix(h)).and_then(|n| n.strip_suffix('-')) {
                return Owner { api_version: "apps/v1".into(), kind: "Deployment".into(), name: deployment.into(), namespace };
            }
        }
        let api = r.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        return Owner { api_version: api.into(), kind: kind.into(), name: name.into(), namespace };
    }
    let name = match meta.get("name").and_then(Value::as_str) {
        Some(n) => n.to_owned(),
        None => meta.get("generateName").and_then(Value::as_str).unwrap_or_default().trim_end_matches('-').to_owned(),
    };
    Owner { api_version: api_version.into(), kind: "Pod".into(), name, namespace }
}
