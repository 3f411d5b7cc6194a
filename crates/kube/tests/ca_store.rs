//! The CA's root kept in the cluster, against the API server stand-in: two replicas starting
//! together end with one root (one stores it, the other takes it); a plugged-in `cacerts`
//! comes first; istiod's own `istio-ca-secret` (empty `root-cert.pem`) is taken as it is, so a
//! migration keeps the mesh's root; a Secret without a key is refused by name.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use base64::Engine as _;
use serde_json::json;
use weft_kube::ca_store::{sync, Origin};
use weft_test_support::apiserver::ApiServer;
use weft_test_support::certs::TempDir;

const SECRETS: &str = "/api/v1/namespaces/istio-system/secrets";

async fn client(api: &std::sync::Arc<ApiServer>, dir: &Path) -> weft_kube::Client {
    let addr = api.serve().await;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, ApiServer::kubeconfig(addr)).expect("kubeconfig");
    weft_kube::client(Some(&kubeconfig)).await.expect("client")
}

/// A stand-in for the CA's generator: a distinct "root" per replica.
fn generator(tag: &'static str) -> impl FnOnce(&Path) -> Result<(), String> {
    move |dir: &Path| {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        for f in ["ca-cert.pem", "root-cert.pem", "cert-chain.pem"] {
            std::fs::write(dir.join(f), format!("root of {tag}")).map_err(|e| e.to_string())?;
        }
        std::fs::write(dir.join("ca-key.pem"), format!("key of {tag}")).map_err(|e| e.to_string())
    }
}

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap_or_default()
}

fn secret(name: &str, data: &[(&str, &str)]) -> serde_json::Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let data: serde_json::Map<String, serde_json::Value> = data.iter().map(|(k, v)| ((*k).to_owned(), json!(b64(v)))).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "istio-system", "resourceVersion": "5"}, "data": data})
}

#[tokio::test]
async fn replicas_starting_together_end_with_one_root() {
    let tmp = TempDir::new("ca-store-race").expect("tmp");
    let api = ApiServer::new();
    let c = client(&api, tmp.path()).await;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (ra, rb) = tokio::join!(sync(&c, "istio-system", &a, generator("a")), sync(&c, "istio-system", &b, generator("b")));
    let origins = [ra.expect("a"), rb.expect("b")];
    assert_eq!(origins.iter().filter(|o| **o == Origin::Stored).count(), 1, "exactly one stores its root: {origins:?}");
    assert_eq!(read(&a, "ca-cert.pem"), read(&b, "ca-cert.pem"), "both sign with one root");
    assert_eq!(read(&a, "ca-key.pem"), read(&b, "ca-key.pem"));
    let stored = api.docs.lock().expect("docs").get(&format!("{SECRETS}/istio-ca-secret")).cloned().expect("istio-ca-secret stored");
    assert_eq!(stored["type"], "istio.io/ca-root");
    // The replica that took the other's root wrote the key over its own (made 0644 here).
    let taker = if origins[0] == Origin::Shared { &a } else { &b };
    assert_eq!(
        std::fs::metadata(taker.join("ca-key.pem")).expect("key").permissions().mode() & 0o777,
        0o600,
        "the key is the owner's only"
    );

    // A restart (an empty directory) takes the stored root.
    let c2 = tmp.path().join("restarted");
    assert_eq!(sync(&c, "istio-system", &c2, generator("c")).await.expect("restart"), Origin::Shared);
    assert_eq!(read(&c2, "ca-cert.pem"), read(&a, "ca-cert.pem"));
}

#[tokio::test]
async fn a_plugged_in_ca_comes_first_and_istiods_own_secret_is_read_as_it_is() {
    let tmp = TempDir::new("ca-store-kinds").expect("tmp");
    let api = ApiServer::new();
    // istiod's self-signed root: root-cert.pem and cert-chain.pem left empty.
    api.set(
        &format!("{SECRETS}/istio-ca-secret"),
        secret("istio-ca-secret", &[("ca-cert.pem", "istiod root"), ("ca-key.pem", "istiod key"), ("root-cert.pem", "")]),
    );
    let c = client(&api, tmp.path()).await;
    let dir = tmp.path().join("migrated");
    assert_eq!(sync(&c, "istio-system", &dir, generator("x")).await.expect("sync"), Origin::Shared);
    assert_eq!(read(&dir, "root-cert.pem"), "istiod root", "a self-signed CA certificate is its own root");
    assert_eq!(read(&dir, "cert-chain.pem"), "istiod root");

    api.set(
        &format!("{SECRETS}/cacerts"),
        secret(
            "cacerts",
            &[
                ("ca-cert.pem", "intermediate"),
                ("ca-key.pem", "intermediate key"),
                ("root-cert.pem", "org root"),
                ("cert-chain.pem", "intermediate\norg root"),
            ],
        ),
    );
    let dir = tmp.path().join("plugged");
    assert_eq!(sync(&c, "istio-system", &dir, generator("y")).await.expect("sync"), Origin::Plugged);
    assert_eq!((read(&dir, "ca-cert.pem"), read(&dir, "root-cert.pem")), ("intermediate".to_owned(), "org root".to_owned()));

    api.set(&format!("{SECRETS}/cacerts"), secret("cacerts", &[("ca-cert.pem", "intermediate")]));
    let e = sync(&c, "istio-system", &tmp.path().join("broken"), generator("z")).await.expect_err("no key");
    assert!(e.to_string().contains("istio-system/cacerts") && e.to_string().contains("ca-key.pem"), "{e}");
}
