//! The webhooks' reviews, from AdmissionReview documents shaped as kube-apiserver sends them:
//! a Pod is patched (the patch applied to the Pod gives what kube-inject gives), skipped or
//! denied with the reason; a body that is not a review is a 400; Istio resources are validated
//! with analyze's messages.

use base64::Engine as _;
use serde_json::{json, Value};
use weft_inject::Values;
use weft_kube::admission::{inject, validate, Answer};

fn pod_review() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pod-review.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn response(a: &Answer) -> Value {
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let v: Value = serde_json::from_slice(&a.body).expect("json");
    v["response"].clone()
}

fn patch_of(r: &Value) -> Vec<json_patch::PatchOperation> {
    assert_eq!(r["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD.decode(r["patch"].as_str().expect("patch")).expect("base64");
    serde_json::from_slice(&bytes).expect("a JSONPatch")
}

#[test]
fn a_pod_is_patched_with_what_kube_inject_adds() {
    let review = pod_review();
    let a = inject(review.to_string().as_bytes(), &Values::default(), None);
    let r = response(&a);
    assert_eq!(r["uid"], review["request"]["uid"]);
    assert_eq!(r["allowed"], true);
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch_of(&r)).expect("the patch applies to the Pod");

    // The same Pod through kube-inject's path, with its namespace given.
    let mut expected = review["request"]["object"].clone();
    expected["metadata"]["namespace"] = json!("shop");
    weft_inject::inject_object(&mut expected, None, &Values::default()).expect("inject");
    expected["metadata"].as_object_mut().expect("meta").remove("namespace");
    assert_eq!(pod, expected);

    let inits: Vec<&str> =
        pod["spec"]["initContainers"].as_array().expect("init").iter().map(|c| c["name"].as_str().unwrap_or_default()).collect();
    assert_eq!(inits, ["istio-init", "istio-proxy"]);
    assert!(pod["metadata"].get("namespace").is_none(), "the patch adds no namespace the API server did not send");
    let env = pod["spec"]["initContainers"][1]["env"].as_array().expect("env");
    let owner = env.iter().find(|e| e["name"] == "ISTIO_META_OWNER").expect("owner");
    assert_eq!(owner["value"], "kubernetes://apis/apps/v1/namespaces/shop/deployments/reviews-v1");
    assert_eq!(pod["spec"]["volumes"][0]["name"], "kube-api-access-x7k2p", "the API server's volumes stay first");
}

#[test]
fn skipped_pods_are_allowed_unchanged() {
    for (pointer, value) in [
        ("/request/object/metadata/labels/sidecar.istio.io~1inject", json!("false")),
        ("/request/object/spec/hostNetwork", json!(true)),
        ("/request/namespace", json!("kube-system")),
    ] {
        let mut review = pod_review();
        let (parent, key) = pointer.rsplit_once('/').expect("pointer");
        review.pointer_mut(parent).and_then(Value::as_object_mut).expect("parent").insert(key.replace("~1", "/"), value);
        let r = response(&inject(review.to_string().as_bytes(), &Values::default(), None));
        assert_eq!(r["allowed"], true, "{pointer}");
        assert!(r.get("patch").is_none(), "{pointer}: {r}");
    }
    // Not a CREATE, or not a Pod: allowed, and a wrongly registered kind says so.
    let mut review = pod_review();
    review["request"]["operation"] = json!("UPDATE");
    assert!(response(&inject(review.to_string().as_bytes(), &Values::default(), None)).get("patch").is_none());
    review["request"]["kind"]["kind"] = json!("Service");
    let r = response(&inject(review.to_string().as_bytes(), &Values::default(), None));
    assert_eq!(r["warnings"][0], "weft's injector only mutates Pods; this Service was left as it was");
}

#[test]
fn a_pod_that_cannot_be_injected_is_denied_with_the_reason() {
    let mut review = pod_review();
    review["request"]["object"]["metadata"]["annotations"]["traffic.sidecar.istio.io/includeOutboundIPRanges"] = json!("10.0.0/8");
    let r = response(&inject(review.to_string().as_bytes(), &Values::default(), None));
    assert_eq!(r["allowed"], false);
    let msg = r["status"]["message"].as_str().expect("message");
    assert!(msg.contains("metadata.annotations[traffic.sidecar.istio.io/includeOutboundIPRanges]") && msg.contains("10.0.0/8"), "{msg}");
}

#[test]
fn a_body_that_is_not_a_review_is_a_400_naming_what_is_wrong() {
    for (body, says) in [
        (&b"{not json"[..], "not JSON"),
        (br#"{"apiVersion": "v1", "kind": "Pod"}"#, "apiVersion \"v1\""),
        (br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#, "no request"),
        (br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}"#, "request.uid"),
    ] {
        let a = inject(body, &Values::default(), None);
        assert_eq!(a.status, 400);
        assert!(String::from_utf8_lossy(&a.body).contains(says), "{}", String::from_utf8_lossy(&a.body));
    }
    let mut review = pod_review();
    review["request"]["object"] = json!("a string");
    let r = response(&inject(review.to_string().as_bytes(), &Values::default(), None));
    assert_eq!(r["allowed"], false);
}

#[test]
fn v1beta1_reviews_are_answered_in_v1beta1() {
    let mut review = pod_review();
    review["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let a = inject(review.to_string().as_bytes(), &Values::default(), None);
    let v: Value = serde_json::from_slice(&a.body).expect("json");
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1beta1");
}

fn resource_review(object: Value) -> Vec<u8> {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "v1", "kind": {"group": "networking.istio.io", "version": "v1", "kind": object["kind"]}, "operation": "CREATE", "namespace": "shop", "object": object}
    })
    .to_string()
    .into_bytes()
}

#[test]
fn istio_resources_are_validated_with_analyze_messages() {
    let bad = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 50}, {"destination": {"host": "reviews", "subset": "v2"}, "weight": 40}]}]}});
    let r = response(&validate(&resource_review(bad), false));
    assert_eq!(r["allowed"], false);
    let msg = r["status"]["message"].as_str().expect("message");
    assert!(msg.starts_with("VirtualService reviews: ") && msg.contains("spec.http[0].route") && msg.contains("90"), "{msg}");

    let good = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}});
    assert_eq!(response(&validate(&resource_review(good), false))["allowed"], true);

    let deny_all = json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "deny-all", "namespace": "shop"}, "spec": {}});
    let r = response(&validate(&resource_review(deny_all.clone()), false));
    assert_eq!(r["allowed"], false, "a security resource weft does not enforce is refused, not admitted and ignored");
    assert!(r["status"]["message"].as_str().unwrap_or_default().contains("not enforced"), "{r}");
    let r = response(&validate(&resource_review(deny_all), true));
    assert_eq!(r["allowed"], true);
    assert!(r["warnings"][0].as_str().unwrap_or_default().contains("not enforced"), "{r}");
}
