//! The API server as a config source, against an API server stand-in that answers with
//! recorded kube-apiserver 1.36 responses: discovery documents, lists and watch streams. The
//! first view comes only when every kind has been listed; watch events (adds, changes,
//! deletes, bookmarks) reach later views; an invalid resource is reported and never part of a
//! view; a watch that expires (410 Gone) re-lists, and what changed meanwhile is seen.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use weft_api::Object;
use weft_kube::source::{run, View};
use weft_test_support::apiserver::{event, list, resource_list, ApiServer};

fn meta(name: &str, ns: &str, rv: &str) -> Value {
    json!({"name": name, "namespace": ns, "uid": format!("uid-{name}"), "resourceVersion": rv, "creationTimestamp": "2026-12-07T06:00:00Z",
           "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1", "time": "2026-12-07T06:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {}}]})
}

fn service() -> Value {
    json!({"metadata": meta("reviews", "shop", "10"), "spec": {"clusterIP": "10.96.0.40", "clusterIPs": ["10.96.0.40"], "type": "ClusterIP",
           "selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080, "protocol": "TCP", "targetPort": 9080}],
           "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"}, "status": {"loadBalancer": {}}})
}

fn slice(ips: &[(&str, bool)]) -> Value {
    let mut m = meta("reviews-abc12", "shop", "11");
    m["labels"] =
        json!({"kubernetes.io/service-name": "reviews", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"});
    let eps: Vec<Value> = ips
        .iter()
        .enumerate()
        .map(|(i, (ip, ready))| json!({"addresses": [ip], "conditions": {"ready": ready, "serving": ready, "terminating": false},
            "targetRef": {"kind": "Pod", "namespace": "shop", "name": format!("reviews-v{}-5d4f8-x7k2p", i + 1), "uid": "p"}, "nodeName": "node-1"}))
        .collect();
    json!({"metadata": m, "addressType": "IPv4", "endpoints": eps, "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}]})
}

fn pod(name: &str, ip: &str, version: &str) -> Value {
    let mut m = meta(name, "shop", "12");
    m["labels"] = json!({"app": "reviews", "version": version, "security.istio.io/tlsMode": "istio"});
    json!({"metadata": m, "spec": {"serviceAccountName": "reviews", "containers": [{"name": "reviews", "image": "example.com/reviews:1"}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

fn virtual_service(weights: (u32, u32)) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": meta("reviews", "shop", "13"),
           "spec": {"hosts": ["reviews"], "http": [{"route": [
               {"destination": {"host": "reviews", "subset": "v1"}, "weight": weights.0},
               {"destination": {"host": "reviews", "subset": "v2"}, "weight": weights.1}]}]}})
}

/// The recorded cluster: discovery for the groups served, and one list per collection.
fn cluster() -> Arc<ApiServer> {
    let api = ApiServer::new();
    api.set("/api/v1", resource_list("v1", &[("services", "Service", true), ("pods", "Pod", true), ("endpoints", "Endpoints", true)]));
    api.set("/apis/discovery.k8s.io/v1", resource_list("discovery.k8s.io/v1", &[("endpointslices", "EndpointSlice", true)]));
    api.set(
        "/apis/networking.istio.io/v1",
        resource_list(
            "networking.istio.io/v1",
            &[("virtualservices", "VirtualService", true), ("destinationrules", "DestinationRule", true)],
        ),
    );
    api.set("/api/v1/services", list("Service", "v1", "100", vec![service()]));
    api.set(
        "/apis/discovery.k8s.io/v1/endpointslices",
        list("EndpointSlice", "discovery.k8s.io/v1", "100", vec![slice(&[("10.1.0.5", true), ("10.1.0.6", false)])]),
    );
    api.set(
        "/api/v1/pods",
        list("Pod", "v1", "100", vec![pod("reviews-v1-5d4f8-x7k2p", "10.1.0.5", "v1"), pod("reviews-v2-5d4f8-x7k2p", "10.1.0.6", "v2")]),
    );
    api.set(
        "/apis/networking.istio.io/v1/virtualservices",
        list("VirtualService", "networking.istio.io/v1", "100", vec![virtual_service((80, 20))]),
    );
    api.set("/apis/networking.istio.io/v1/destinationrules", list("DestinationRule", "networking.istio.io/v1", "100", vec![]));
    api.set(
        "/apis/networking.k8s.io/v1",
        resource_list("networking.k8s.io/v1", &[("ingresses", "Ingress", true), ("ingressclasses", "IngressClass", false)]),
    );
    api.set(
        "/apis/networking.k8s.io/v1/ingressclasses",
        list(
            "IngressClass",
            "networking.k8s.io/v1",
            "100",
            vec![json!({"metadata": meta("istio", "", "14"), "spec": {"controller": "istio.io/ingress-controller"}})],
        ),
    );
    let ingress = |name: &str, class: &str| {
        json!({"metadata": meta(name, "shop", "15"), "spec": {"ingressClassName": class, "rules": [{"host": "shop.example.com", "http": {"paths": [
            {"path": "/reviews", "pathType": "Prefix", "backend": {"service": {"name": "reviews", "port": {"name": "http"}}}}]}}]}})
    };
    api.set(
        "/apis/networking.k8s.io/v1/ingresses",
        list("Ingress", "networking.k8s.io/v1", "100", vec![ingress("shop", "istio"), ingress("other", "nginx")]),
    );
    api
}

async fn next(rx: &mut tokio::sync::mpsc::Receiver<View>, what: &str) -> View {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap_or_else(|_| panic!("no view: {what}")).expect("the source ended")
}

/// Views until one satisfies `ok`.
async fn until(rx: &mut tokio::sync::mpsc::Receiver<View>, what: &str, ok: impl Fn(&View) -> bool) -> View {
    loop {
        let v = next(rx, what).await;
        if ok(&v) {
            return v;
        }
    }
}

fn weights(v: &View) -> Option<Vec<Option<i64>>> {
    v.objects.iter().find_map(|o| match o {
        Object::VirtualService(r) if r.name == "reviews" => Some(r.spec.http[0].route.iter().map(|d| d.weight).collect()),
        _ => None,
    })
}

fn kinds(v: &View) -> Vec<&'static str> {
    v.objects.iter().map(Object::kind).collect()
}

#[tokio::test]
async fn the_api_server_is_read_listed_watched_and_relisted() {
    let api = cluster();
    api.held.lock().expect("held").push("/api/v1/pods".into());
    // Discovery that fails for a while is retried, not taken for "not served".
    api.failures.lock().expect("failures").insert("/apis/networking.istio.io/v1".into(), 2);
    let addr = api.serve().await;
    let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(run(client, Duration::from_millis(20), tx));

    // Until every kind has been listed there is no view at all.
    let early = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
    assert!(early.is_err(), "a view before the pods were listed: {early:?}");
    api.release();

    let v = next(&mut rx, "the first view").await;
    // The Ingress of class istio (and not the nginx one) became a Gateway and a VirtualService.
    assert_eq!(kinds(&v), ["Service", "EndpointSlice", "VirtualService", "Gateway", "VirtualService"], "{v:#?}");
    let Some(Object::VirtualService(ing)) = v.objects.last() else { panic!("the Ingress's VirtualService") };
    assert_eq!(ing.spec.hosts, ["shop.example.com"]);
    assert_eq!(ing.spec.gateways, ["istio-system/shop-istio-autogenerated-k8s-ingress-shop"]);
    assert_eq!(weights(&v), Some(vec![Some(80), Some(20)]));
    assert!(v.diagnostics.is_empty(), "{:#?}", v.diagnostics);
    let names: Vec<(&str, &str, Option<&str>)> =
        v.pods.iter().map(|p| (p.ip.as_str(), p.labels["version"].as_str(), p.service_account.as_deref())).collect();
    assert_eq!(names, [("10.1.0.5", "v1", Some("reviews")), ("10.1.0.6", "v2", Some("reviews"))]);
    let Some(Object::EndpointSlice(s)) = v.objects.iter().find(|o| o.kind() == "EndpointSlice") else { panic!("slice") };
    assert_eq!(s.spec.endpoints.len(), 2);

    // Watch events: a change, an invalid resource (reported, never in a view), a bookmark,
    // a delete.
    let vs_path = "/apis/networking.istio.io/v1/virtualservices";
    for path in [vs_path, "/api/v1/pods", "/api/v1/services"] {
        for _ in 0..100 {
            if api.watchers(path) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(api.watchers(path) > 0, "nobody watches {path}");
    }
    let mut changed = virtual_service((50, 50));
    changed["metadata"]["resourceVersion"] = json!("101");
    api.push(vs_path, event("MODIFIED", changed));
    until(&mut rx, "the changed weights", |v| weights(v) == Some(vec![Some(50), Some(50)])).await;

    let mut bad = virtual_service((50, 40));
    bad["metadata"]["name"] = json!("bad-weights");
    bad["metadata"]["resourceVersion"] = json!("102");
    api.push(vs_path, event("ADDED", bad));
    let v = until(&mut rx, "the invalid resource reported", |v| !v.diagnostics.is_empty()).await;
    let d = &v.diagnostics[0];
    assert!(d.file == weft_kube::source::ORIGIN && d.field_path == "spec.http[0].route" && d.message.contains("90"), "{d}");
    assert_eq!(kinds(&v).iter().filter(|k| **k == "VirtualService").count(), 2, "the invalid one is not in the view");

    api.push(
        vs_path,
        event(
            "BOOKMARK",
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"resourceVersion": "103"}}),
        ),
    );
    let mut gone = pod("reviews-v2-5d4f8-x7k2p", "10.1.0.6", "v2");
    gone["metadata"]["resourceVersion"] = json!("104");
    api.push("/api/v1/pods", event("DELETED", gone));
    let v = until(&mut rx, "the deleted pod gone", |v| v.pods.len() == 1).await;
    assert_eq!(v.pods[0].ip, "10.1.0.5");

    // The service watch expires; meanwhile the service was deleted. The re-list shows it.
    api.set("/api/v1/services", list("Service", "v1", "200", vec![]));
    api.push(
        "/api/v1/services",
        event("ERROR", json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "too old resource version: 100 (150)", "reason": "Expired", "code": 410})),
    );
    let v = until(&mut rx, "the re-listed services", |v| !kinds(v).contains(&"Service")).await;
    assert!(kinds(&v).contains(&"EndpointSlice") && kinds(&v).contains(&"VirtualService"), "the other kinds stay: {:?}", kinds(&v));
}

/// The Gateway API from the API server (its CRDs served): a Gateway and an HTTPRoute become an
/// Istio Gateway and a VirtualService in the view, with their status; a route to a Service in
/// another namespace resolves only once a ReferenceGrant allows it.
#[tokio::test]
async fn gateway_api_objects_from_the_api_server_become_mesh_config_with_status() {
    let api = cluster();
    let group = "gateway.networking.k8s.io";
    api.set(
        &format!("/apis/{group}/v1"),
        resource_list(&format!("{group}/v1"), &[("gateways", "Gateway", true), ("httproutes", "HTTPRoute", true)]),
    );
    api.set(&format!("/apis/{group}/v1beta1"), resource_list(&format!("{group}/v1beta1"), &[("referencegrants", "ReferenceGrant", true)]));
    api.set(
        &format!("/apis/{group}/v1/gateways"),
        list("Gateway", &format!("{group}/v1"), "100", vec![json!({"metadata": meta("edge", "gw", "20"),
            "spec": {"gatewayClassName": "istio", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}]}})]),
    );
    api.set(
        &format!("/apis/{group}/v1/httproutes"),
        list(
            "HTTPRoute",
            &format!("{group}/v1"),
            "100",
            vec![json!({"metadata": meta("reviews", "gw", "21"),
            "spec": {"parentRefs": [{"name": "edge"}], "hostnames": ["shop.example.com"],
                     "rules": [{"backendRefs": [{"name": "reviews", "namespace": "shop", "port": 9080}]}]}})],
        ),
    );
    api.set(&format!("/apis/{group}/v1beta1/referencegrants"), list("ReferenceGrant", &format!("{group}/v1beta1"), "100", vec![]));
    let addr = api.serve().await;
    let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(run(client, Duration::from_millis(20), tx));

    let v = next(&mut rx, "the first view").await;
    let istio_gateway =
        v.objects.iter().any(|o| matches!(o, Object::Gateway(g) if g.name == "edge-http-k8s-gateway" && g.namespace == "gw"));
    assert!(istio_gateway, "{:#?}", kinds(&v));
    let route = v.gateway_api.iter().find(|s| s.kind == "HTTPRoute").expect("the route's status");
    assert!(route.to_string().contains("ResolvedRefs=False (RefNotPermitted)"), "{route}");

    let grants = format!("/apis/{group}/v1beta1/referencegrants");
    for _ in 0..100 {
        if api.watchers(&grants) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.push(
        &grants,
        event(
            "ADDED",
            json!({"apiVersion": format!("{group}/v1beta1"), "kind": "ReferenceGrant", "metadata": meta("from-gw", "shop", "101"),
            "spec": {"from": [{"group": group, "kind": "HTTPRoute", "namespace": "gw"}], "to": [{"group": "", "kind": "Service"}]}}),
        ),
    );
    let v = until(&mut rx, "the grant resolving the backend", |v| {
        v.gateway_api.iter().any(|s| s.kind == "HTTPRoute" && s.to_string().contains("ResolvedRefs=True"))
    })
    .await;
    let vs = v.objects.iter().find_map(|o| match o {
        Object::VirtualService(r) if r.spec.hosts == ["shop.example.com"] && r.namespace == "gw" => Some(r),
        _ => None,
    });
    let vs = vs.unwrap_or_else(|| panic!("the route's VirtualService: {:#?}", kinds(&v)));
    assert_eq!(vs.spec.http[0].route[0].destination.host, "reviews.shop.svc.cluster.local");
}
