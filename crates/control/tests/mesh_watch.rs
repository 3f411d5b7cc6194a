//! The mesh file is followed as istiod follows its mounted `istio` ConfigMap: a change reaches
//! the next push; an invalid version is reported and the mesh in force kept.

use std::time::Duration;

use weft_api::networking::OutboundMode;
use weft_control::server::{self, Options, Running};
use weft_test_support::certs::TempDir;

async fn until(running: &Running, what: &str, ok: impl Fn(&weft_api::mesh::MeshConfig) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ok(&running.shared.current.borrow().model.mesh) {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_changed_mesh_file_reaches_the_next_push_and_a_bad_one_is_not_applied() {
    let dir = TempDir::new("mesh-watch").expect("dir");
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).expect("config dir");
    let mesh_file = dir.path().join("mesh");
    std::fs::write(&mesh_file, "outboundTrafficPolicy: {mode: ALLOW_ANY}\n").expect("mesh");
    let (mesh, _) = weft_api::mesh::load_mesh_checked(&std::fs::read_to_string(&mesh_file).expect("read"), "mesh").expect("valid");
    let running = server::start(Options {
        mesh_path: Some(mesh_file.clone()),
        config_dir: Some(config),
        mesh,
        debounce: Duration::from_millis(10),
        ..Options::default()
    })
    .await
    .expect("control plane starts");
    assert_eq!(running.shared.current.borrow().model.mesh.outbound_traffic_policy.mode, OutboundMode::AllowAny);

    // The kubelet replaces a ConfigMap volume's file; any write will do here.
    std::fs::write(&mesh_file, "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n").expect("mesh");
    until(&running, "REGISTRY_ONLY in force", |m| m.outbound_traffic_policy.mode == OutboundMode::RegistryOnly).await;

    // An invalid version is not pushed; the next valid one is, as the very next version.
    let before = running.shared.current.borrow().version;
    std::fs::write(&mesh_file, "outboundTrafficPolicy: {mode: SOMETIMES}\n").expect("mesh");
    let invalid_seen = tokio::time::Instant::now() + Duration::from_millis(1100);
    // Let the watcher's poll (every second) meet the invalid file before it is replaced.
    while tokio::time::Instant::now() < invalid_seen {
        assert_eq!(running.shared.current.borrow().version, before, "an invalid mesh file must not be pushed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&mesh_file, "outboundTrafficPolicy: {mode: ALLOW_ANY}\nrootNamespace: mesh-root\n").expect("mesh");
    until(&running, "the next valid mesh", |m| m.root_namespace == "mesh-root" && m.outbound_traffic_policy.mode == OutboundMode::AllowAny)
        .await;
    assert_eq!(running.shared.current.borrow().version, before + 1, "only the valid version was pushed");
}

/// Without a mesh file, on Kubernetes, the MeshConfig is the `istio` ConfigMap's `mesh` key, read
/// through the API server as istiod reads it: in force from the first push, and followed.
#[tokio::test]
async fn without_a_mesh_file_the_clusters_istio_configmap_is_the_mesh() {
    use serde_json::json;
    use weft_test_support::apiserver::{list, resource_list, ApiServer};
    let dir = TempDir::new("mesh-configmap").expect("dir");
    let api = ApiServer::new();
    api.set("/api/v1", resource_list("v1", &[("services", "Service", true), ("pods", "Pod", true)]));
    api.set("/api/v1/services", list("Service", "v1", "1", vec![]));
    api.set("/api/v1/pods", list("Pod", "v1", "1", vec![]));
    let cm = |mode: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio", "namespace": "istio-system", "resourceVersion": "4"},
               "data": {"mesh": format!("outboundTrafficPolicy:\n  mode: {mode}\n")}})
    };
    api.set("/api/v1/namespaces/istio-system/configmaps/istio", cm("REGISTRY_ONLY"));
    let addr = api.serve().await;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, ApiServer::kubeconfig(addr)).expect("kubeconfig");
    let kube = weft_kube::client(Some(&kubeconfig)).await.expect("client");
    let running = server::start(Options { kube: Some(kube), ..Options::default() }).await.expect("control plane starts");
    assert_eq!(
        running.shared.current.borrow().model.mesh.outbound_traffic_policy.mode,
        OutboundMode::RegistryOnly,
        "in force from the start"
    );
    api.set("/api/v1/namespaces/istio-system/configmaps/istio", cm("ALLOW_ANY"));
    until(&running, "the changed ConfigMap in force", |m| m.outbound_traffic_policy.mode == OutboundMode::AllowAny).await;
}
