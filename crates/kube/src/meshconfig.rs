//! MeshConfig as istiod reads it on Kubernetes: the `mesh` key of the ConfigMap `istio` (or
//! `istio-<revision>`) in the control plane's namespace — for a control plane run without a
//! mesh file (`--kubeconfig` from outside the cluster; the installed Deployment mounts the same
//! ConfigMap as its `--mesh` file).

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::Client;

/// The ConfigMap's name for `revision` (empty or `default`: `istio`).
pub fn name(revision: &str) -> String {
    if revision.is_empty() || revision == "default" {
        "istio".into()
    } else {
        format!("istio-{revision}")
    }
}

/// The MeshConfig text the cluster holds; `None` when there is no such ConfigMap or it has no
/// `mesh` key (the defaults then apply, as in istiod).
pub async fn text(client: &Client, namespace: &str, revision: &str) -> Result<Option<String>, String> {
    let name = name(revision);
    let cm = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(&name)
        .await
        .map_err(|e| format!("reading ConfigMap {namespace}/{name}: {e}"))?;
    Ok(cm.and_then(|c| c.data).and_then(|mut d| d.remove("mesh")))
}
