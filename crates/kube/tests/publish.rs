//! Publishing the mesh root, behind a Lease, against the API server stand-in: of two replicas
//! only the Lease holder writes; it puts `istio-ca-root-cert` in every namespace and the root as
//! `caBundle` into its revision's webhook configurations (server-side apply of that field
//! alone); a new root is published again; when the holder stops renewing, the other takes over.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use weft_kube::publish::Publisher;
use weft_test_support::apiserver::{list, ApiServer};

fn cluster() -> Arc<ApiServer> {
    let api = ApiServer::new();
    let ns = |n: &str| json!({"metadata": {"name": n, "resourceVersion": "1"}, "status": {"phase": "Active"}});
    api.set("/api/v1/namespaces", list("Namespace", "v1", "10", vec![ns("default"), ns("shop"), ns("istio-system")]));
    let hooks = |kind: &str| {
        json!({"metadata": {"name": format!("istio-{kind}"), "labels": {"istio.io/rev": "default"}, "resourceVersion": "3"},
               "webhooks": [{"name": "a.istio.io", "clientConfig": {"service": {"name": "istiod", "namespace": "istio-system"}}}, {"name": "b.istio.io", "clientConfig": {}}]})
    };
    api.set(
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
        list("MutatingWebhookConfiguration", "admissionregistration.k8s.io/v1", "10", vec![hooks("injector")]),
    );
    api.set(
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        list("ValidatingWebhookConfiguration", "admissionregistration.k8s.io/v1", "10", vec![hooks("validator")]),
    );
    api
}

fn client(addr: std::net::SocketAddr) -> kube::Client {
    kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().expect("url"))).expect("client")
}

/// (where, what) pairs: a namespace and the root its ConfigMap got, or a webhook and its
/// caBundle.
type Writes = Vec<(String, String)>;

/// The root each namespace's ConfigMap was written with, and each webhook's caBundle.
fn published(api: &ApiServer) -> (Writes, Writes) {
    let mut cms = Vec::new();
    let mut bundles = Vec::new();
    for (method, path, body) in api.writes.lock().expect("writes").iter() {
        if method != "PATCH" {
            continue;
        }
        if path.contains("/configmaps/istio-ca-root-cert") {
            let ns = body.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_owned();
            cms.push((ns, body.pointer("/data/root-cert.pem").and_then(Value::as_str).unwrap_or_default().to_owned()));
        }
        if path.contains("webhookconfigurations/") {
            for h in body["webhooks"].as_array().into_iter().flatten() {
                bundles.push((
                    format!("{}/{}", body["metadata"]["name"].as_str().unwrap_or_default(), h["name"].as_str().unwrap_or_default()),
                    h.pointer("/clientConfig/caBundle").and_then(Value::as_str).unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    (cms, bundles)
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_lease_holder_alone_publishes_the_root_and_another_takes_over() {
    let api = cluster();
    let addr = api.serve().await;
    let (tx, rx) = tokio::sync::watch::channel("-----ROOT ONE-----\n".to_owned());
    let start = |who: &str| {
        let p = Publisher {
            client: client(addr),
            namespace: "istio-system".into(),
            identity: who.into(),
            revision: "default".into(),
            lease_seconds: 2,
        };
        tokio::spawn(p.run(rx.clone()))
    };
    let first = start("istiod-a");
    until("the root in every namespace and webhook", || {
        let (cms, bundles) = published(&api);
        cms.len() >= 3 && bundles.len() >= 4
    })
    .await;
    let second = start("istiod-b");
    let lease_path = "/apis/coordination.k8s.io/v1/namespaces/istio-system/leases/weft-control-plane-default";
    let holder = || {
        api.docs
            .lock()
            .expect("docs")
            .get(lease_path)
            .and_then(|l| l.pointer("/spec/holderIdentity").and_then(Value::as_str).map(str::to_owned))
    };
    assert_eq!(holder().as_deref(), Some("istiod-a"));

    let (cms, bundles) = published(&api);
    let mut namespaces: Vec<&str> = cms.iter().map(|(n, _)| n.as_str()).collect();
    namespaces.sort();
    namespaces.dedup();
    assert_eq!(namespaces, ["default", "istio-system", "shop"]);
    assert!(cms.iter().all(|(_, r)| r == "-----ROOT ONE-----\n"));
    let one = base64::engine::general_purpose::STANDARD.encode("-----ROOT ONE-----\n");
    for hook in ["istio-injector/a.istio.io", "istio-injector/b.istio.io", "istio-validator/a.istio.io", "istio-validator/b.istio.io"] {
        assert!(bundles.iter().any(|(h, b)| h == hook && *b == one), "{hook}: {bundles:?}");
    }
    // Only caBundle is sent: the installer's service reference is not touched.
    let writes = api.writes.lock().expect("writes").clone();
    assert!(writes.iter().filter(|(_, p, _)| p.contains("webhookconfigurations/")).all(|(_, _, b)| !b.to_string().contains("istiod")));
    let before = writes.len();

    // A new root is published again.
    tx.send("-----ROOT TWO-----\n".into()).expect("send");
    until("the new root", || published(&api).0.iter().filter(|(_, r)| r == "-----ROOT TWO-----\n").count() >= 3).await;
    assert!(api.writes.lock().expect("writes").len() > before);

    // The holder stops; after its Lease expires the other replica leads and publishes.
    first.abort();
    until("istiod-b to hold the Lease", || holder().as_deref() == Some("istiod-b")).await;
    let writes_by_b_start = api.writes.lock().expect("writes").len();
    tx.send("-----ROOT THREE-----\n".into()).expect("send");
    until("istiod-b publishing", || published(&api).0.iter().filter(|(_, r)| r == "-----ROOT THREE-----\n").count() >= 3).await;
    assert!(api.writes.lock().expect("writes").len() > writes_by_b_start);
    second.abort();
}

/// The Lease holder reports an invalid resource from the API server as a Warning Event on it,
/// once per resource and reason.
#[tokio::test]
async fn invalid_resources_get_a_warning_event_once() {
    let api = cluster();
    let addr = api.serve().await;
    let (_root, rx) = tokio::sync::watch::channel("-----ROOT-----\n".to_owned());
    let problem = weft_api::Diagnostic {
        level: weft_api::Level::Error,
        file: weft_kube::source::ORIGIN.into(),
        line: Some(1),
        resource: Some("VirtualService shop/reviews-bad".into()),
        field_path: "spec.http[0].route".into(),
        message: "destination weights add up to 90, not 100".into(),
        code: Some("IST0106"),
    };
    let (problems, problems_rx) = tokio::sync::watch::channel(vec![problem.clone()]);
    let p = Publisher {
        client: client(addr),
        namespace: "istio-system".into(),
        identity: "istiod-a".into(),
        revision: "default".into(),
        lease_seconds: 2,
    };
    let task = tokio::spawn(p.run_with_events(rx, problems_rx));
    let events = || -> Vec<Value> {
        api.writes
            .lock()
            .expect("writes")
            .iter()
            .filter(|(m, p, _)| m == "POST" && p.starts_with("/api/v1/namespaces/shop/events"))
            .map(|(_, _, b)| b.clone())
            .collect()
    };
    until("the Event", || !events().is_empty()).await;
    let e = &events()[0];
    assert_eq!(
        e["involvedObject"],
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "namespace": "shop", "name": "reviews-bad"})
    );
    assert_eq!((e["type"].as_str(), e["reason"].as_str()), (Some("Warning"), Some("InvalidConfig")));
    assert!(e["message"].as_str().unwrap_or_default().starts_with("IST0106 spec.http[0].route: destination weights add up to 90"), "{e}");
    // The same problem again (a new view) is not reported twice; a new one is.
    problems.send(vec![problem.clone()]).expect("send");
    let mut other = problem.clone();
    other.resource = Some("DestinationRule shop/reviews".into());
    other.message = "subset v3 selects nothing".into();
    problems.send(vec![problem, other]).expect("send");
    until("the second resource's Event", || events().len() >= 2).await;
    assert_eq!(events().len(), 2, "one Event per resource and reason: {:?}", events());
    task.abort();
}
