//! AdmissionReview (`admission.k8s.io/v1`, and `v1beta1` as older API servers send it) in and
//! out: the mutating webhook injects the sidecar into a Pod, the validating webhook checks an
//! Istio resource. A body that is not a review is a 400 naming what is wrong; a review weft
//! cannot act on is answered, never dropped: a Pod that cannot be injected is denied with the
//! reason (as Istio's injector denies it), as is an invalid resource.

use base64::Engine as _;
use serde_json::{json, Map, Value};
use weft_api::Level;
use weft_inject::{Outcome, Values};

/// An HTTP answer for the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    fn bad_request(message: String) -> Answer {
        Answer { status: 400, body: format!("{message}\n").into_bytes() }
    }
}

/// What a handler decides for one request.
struct Decision {
    allowed: bool,
    message: Option<String>,
    patch: Option<Value>,
    warnings: Vec<String>,
}

impl Decision {
    fn allow(warnings: Vec<String>) -> Decision {
        Decision { allowed: true, message: None, patch: None, warnings }
    }
    fn deny(message: String) -> Decision {
        Decision { allowed: false, message: Some(message), patch: None, warnings: Vec::new() }
    }
}

/// The parts of a review's `request` the handlers use.
struct Request<'a> {
    kind: &'a str,
    operation: &'a str,
    namespace: &'a str,
    object: &'a Value,
}

/// Parses the review, runs `handle`, and wraps its decision in a review of the same version.
fn review(body: &[u8], handle: impl FnOnce(&Request<'_>) -> Decision) -> Answer {
    let review: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Answer::bad_request(format!("the body is not an AdmissionReview: not JSON: {e}")),
    };
    let api_version = review.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    if !matches!(api_version, "admission.k8s.io/v1" | "admission.k8s.io/v1beta1")
        || review.get("kind").and_then(Value::as_str) != Some("AdmissionReview")
    {
        return Answer::bad_request(format!(
            "the body is not an AdmissionReview of admission.k8s.io/v1 or v1beta1 (apiVersion {api_version:?})"
        ));
    }
    let Some(request) = review.get("request").and_then(Value::as_object) else {
        return Answer::bad_request("the AdmissionReview has no request".into());
    };
    let Some(uid) = request.get("uid").and_then(Value::as_str) else {
        return Answer::bad_request("request.uid: missing".into());
    };
    let str_at = |k: &str| request.get(k).and_then(Value::as_str).unwrap_or_default();
    let req = Request {
        kind: request.get("kind").and_then(|k| k.get("kind")).and_then(Value::as_str).unwrap_or_default(),
        operation: str_at("operation"),
        namespace: str_at("namespace"),
        object: request.get("object").unwrap_or(&Value::Null),
    };
    let d = handle(&req);
    let mut response = Map::new();
    response.insert("uid".into(), json!(uid));
    response.insert("allowed".into(), json!(d.allowed));
    if let Some(message) = d.message {
        response.insert("status".into(), json!({"code": 400, "message": message}));
    }
    if let Some(patch) = d.patch {
        let text = patch.to_string();
        response.insert("patchType".into(), json!("JSONPatch"));
        response.insert("patch".into(), json!(base64::engine::general_purpose::STANDARD.encode(text)));
    }
    if !d.warnings.is_empty() {
        response.insert("warnings".into(), json!(d.warnings));
    }
    let out = json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response});
    Answer { status: 200, body: out.to_string().into_bytes() }
}

/// The mutating webhook: injects the sidecar into a Pod being created. `namespace_labels` are
/// the Pod's namespace's labels when known (they may choose the data plane).
pub fn inject(body: &[u8], values: &Values, namespace_labels: Option<&Map<String, Value>>) -> Answer {
    review(body, |req| {
        if req.kind != "Pod" {
            return Decision::allow(vec![format!("weft's injector only mutates Pods; this {} was left as it was", req.kind)]);
        }
        if req.operation != "CREATE" {
            return Decision::allow(Vec::new());
        }
        let original = req.object;
        if !original.is_object() {
            return Decision::deny("request.object: the Pod is missing".into());
        }
        // A Pod being created often has no namespace yet: the request names it.
        let mut pod = original.clone();
        let added_namespace = pod.pointer("/metadata/namespace").is_none() && !req.namespace.is_empty();
        if added_namespace {
            if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("namespace".into(), json!(req.namespace));
            }
        }
        match weft_inject::inject_object(&mut pod, namespace_labels, values) {
            Err(e) => Decision::deny(format!("sidecar injection failed: {e}")),
            Ok(reports) => {
                if added_namespace {
                    if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.remove("namespace");
                    }
                }
                let mut warnings = Vec::new();
                for r in reports {
                    match r.outcome {
                        Outcome::Injected { warnings: w } => warnings.extend(w),
                        Outcome::Skipped(_) => return Decision::allow(Vec::new()),
                    }
                }
                let patch = json_patch::diff(original, &pod);
                match serde_json::to_value(&patch) {
                    Ok(p) => Decision { allowed: true, message: None, patch: Some(p), warnings },
                    Err(e) => Decision::deny(format!("sidecar injection failed: the patch: {e}")),
                }
            }
        }
    })
}

/// The validating webhook: an Istio resource is refused with every error `weft analyze` would
/// report for it, and allowed with its warnings. `allow_unenforced`: the control plane runs
/// with `--allow-unenforced-security`, so security kinds weft does not enforce are admitted
/// (with a warning) instead of refused.
pub fn validate(body: &[u8], allow_unenforced: bool) -> Answer {
    review(body, |req| {
        if req.operation == "DELETE" || req.object.is_null() {
            return Decision::allow(Vec::new());
        }
        let loaded = weft_api::load_text(&req.object.to_string(), "admission");
        let say = |d: &weft_api::Diagnostic| {
            let code = d.code.map(|c| format!("{c} ")).unwrap_or_default();
            if d.field_path.is_empty() {
                format!("{code}{}", d.message)
            } else {
                format!("{code}{}: {}", d.field_path, d.message)
            }
        };
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        for d in &loaded.diagnostics {
            match d.level {
                Level::Error if allow_unenforced && d.is_unenforced_security() => warnings.push(say(d)),
                Level::Error => errors.push(say(d)),
                _ => warnings.push(say(d)),
            }
        }
        if errors.is_empty() {
            Decision::allow(warnings)
        } else {
            Decision::deny(format!(
                "{} {}: {}",
                req.kind,
                req.object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default(),
                errors.join("; ")
            ))
        }
    })
}
