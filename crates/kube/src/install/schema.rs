//! OpenAPI v3 schemas for the `spec` of the Istio kinds weft reads, so that the API server itself
//! refuses a type error (`weight: heavy`, `hosts: web`), even while weft's validating webhook is
//! down.
//!
//! Generated, not written by hand: weft-api derives a JSON Schema (with schemars) from the serde
//! types its loader deserializes (`weft_api::schema`), and this module rewrites it into a
//! Kubernetes structural schema. A hand-kept schema would drift from what weft reads; the derive
//! follows every rename, default and hand-written `Deserialize` of those types.
//!
//! Nothing is ever pruned. Every object carries `x-kubernetes-preserve-unknown-fields: true`, so
//! an unknown field reaches weft's loader, which refuses it by name ("unknown field; did you
//! mean …"), where a structural schema would otherwise drop it without a word. For the same
//! reason a field weft knows but refuses (`NotImplemented`) takes any value here. The schema
//! checks shapes (types, enums serde reads exactly, required fields, integer ranges); what a
//! value means (a duration, a host, a regex) is left to the webhook, whose messages say what to
//! write.
//!
//! The rewrite keeps only what a structural schema can say and drops every other keyword:
//! annotations (`title`, `description`), `default` (the API server would write it into stored
//! objects), `nullable` (an `Option<T>` is just `T`) and anything structural schemas forbid
//! (`$ref`, `anyOf`, …). Dropping a keyword only ever admits more, and a node left without a
//! type takes any value, so the rewrite can make the API server less strict than weft, never
//! stricter.

use serde_json::{json, Map, Value};

/// The structural schema of `kind`'s `spec`; `None` for the kinds whose `spec` stays open
/// (those weft reads only to refuse: AuthorizationPolicy, RequestAuthentication, EnvoyFilter).
pub fn spec_schema(kind: &str) -> Option<Value> {
    weft_api::schema::spec(kind).map(|s| structural(&s))
}

/// Any value, kept as written.
fn any() -> Value {
    json!({"x-kubernetes-preserve-unknown-fields": true})
}

fn structural(schema: &Value) -> Value {
    let Some(schema) = schema.as_object() else { return any() };
    let schema = resolve_alternatives(schema);
    let mut out = Map::new();
    for (key, value) in &schema {
        let kept = match key.as_str() {
            "type" if value.is_string() => value.clone(),
            // The formats Kubernetes knows for numbers. Unsigned and narrower Rust integers get
            // their range below instead, and a string format would judge a value: weft's job.
            "format" => match (schema.get("type").and_then(Value::as_str), value.as_str()) {
                (Some("integer"), Some(f @ ("int32" | "int64"))) | (Some("number"), Some(f @ ("float" | "double"))) => f.into(),
                _ => continue,
            },
            "enum" => {
                let values: Vec<Value> = value.as_array().into_iter().flatten().filter(|v| !v.is_null()).cloned().collect();
                if values.is_empty() {
                    continue;
                }
                Value::Array(values)
            }
            "required" | "minimum" | "maximum" => value.clone(),
            "properties" => {
                let Some(props) = value.as_object() else { continue };
                Value::Object(props.iter().map(|(k, v)| (k.clone(), structural(v))).collect())
            }
            "items" | "additionalProperties" if value.is_object() => structural(value),
            _ => continue,
        };
        out.insert(key.clone(), kept);
    }
    let unsigned_bits = match schema.get("format").and_then(Value::as_str) {
        Some("uint8") => Some(8),
        Some("uint16") => Some(16),
        Some("uint32") => Some(32),
        Some("uint64" | "uint") => Some(64),
        _ => None,
    };
    if let Some(bits) = unsigned_bits {
        out.entry("minimum").or_insert(json!(0));
        if bits < 64 {
            out.entry("maximum").or_insert(json!((1u64 << bits) - 1));
        }
    }
    match out.get("type").and_then(Value::as_str) {
        None => return any(),
        Some("object") => {
            if out.contains_key("properties") {
                out.remove("additionalProperties");
            }
            out.insert("x-kubernetes-preserve-unknown-fields".into(), Value::Bool(true));
        }
        Some("array") => {
            out.entry("items").or_insert_with(any);
        }
        Some(_) => {}
    }
    Value::Object(out)
}

/// Resolves the `anyOf`/`oneOf` schemars writes: `Option<T>` as `[T, null]`, and an enum whose
/// variants have doc comments as one single-value `enum` per variant. Any other alternatives are
/// left, for `structural` to drop.
fn resolve_alternatives(schema: &Map<String, Value>) -> Map<String, Value> {
    let is_null = |b: &Map<String, Value>| {
        b.get("type") == Some(&json!("null")) || b.get("enum").and_then(Value::as_array).is_some_and(|e| e.iter().all(Value::is_null))
    };
    let mut out = schema.clone();
    for key in ["anyOf", "oneOf"] {
        let Some(branches) = out.get(key).and_then(Value::as_array) else { continue };
        let Some(branches) = branches.iter().map(Value::as_object).collect::<Option<Vec<_>>>() else { continue };
        let branches: Vec<_> = branches.into_iter().filter(|b| !is_null(b)).map(resolve_alternatives).collect();
        let merged = match branches.as_slice() {
            [one] => one.clone(),
            many if many.iter().all(|b| b.get("type") == Some(&json!("string")) && b.contains_key("enum")) => {
                let values = many.iter().flat_map(|b| b["enum"].as_array().into_iter().flatten().cloned()).collect();
                Map::from_iter([("type".into(), json!("string")), ("enum".into(), Value::Array(values))])
            }
            _ => continue,
        };
        out.remove(key);
        out.extend(merged);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
    use serde::Deserialize;

    use super::*;

    const KINDS: [&str; 7] =
        ["VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "Sidecar", "WorkloadEntry", "PeerAuthentication"];

    /// The schema's complaints about `spec`, as `path: message`.
    fn problems(kind: &str, spec: &Value) -> Vec<String> {
        let schema = spec_schema(kind).unwrap();
        let validator = jsonschema::draft4::new(&schema).unwrap();
        validator.iter_errors(spec).map(|e| format!("{}: {e}", e.instance_path())).collect()
    }

    fn from_yaml(text: &str) -> Value {
        serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(text).unwrap()).unwrap()
    }

    /// Every number as a float, as k8s-openapi holds `minimum` and `maximum`.
    fn floats(v: Value) -> Value {
        match v {
            Value::Number(n) => json!(n.as_f64()),
            Value::Array(a) => Value::Array(a.into_iter().map(floats).collect()),
            Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, floats(v))).collect()),
            other => other,
        }
    }

    fn yaml_files(dir: &str) -> Vec<std::path::PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn every_fixture_weft_loads_passes_the_schema() {
        let mut checked: BTreeMap<String, usize> = BTreeMap::new();
        let files = ["../api/tests/fixtures/istio", "../control/tests/fixtures", "../../tests/fixtures"].into_iter().flat_map(yaml_files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for de in serde_yaml::Deserializer::from_str(&text) {
                let doc = serde_yaml::Value::deserialize(de).unwrap();
                let Some(kind) = doc.get("kind").and_then(|k| k.as_str()).filter(|k| KINDS.contains(k)) else { continue };
                // Only what weft's loader accepts: a document it refuses may well break the schema.
                let loaded = weft_api::load_text(&serde_yaml::to_string(&doc).unwrap(), &file.display().to_string());
                if loaded.objects.len() != 1 || loaded.diagnostics.iter().any(|d| d.level == weft_api::Level::Error) {
                    continue;
                }
                let Some(spec) = doc.get("spec") else { continue };
                let spec = serde_json::to_value(spec).unwrap();
                let name = doc["metadata"]["name"].as_str().unwrap_or_default();
                assert_eq!(problems(kind, &spec), Vec::<String>::new(), "{} {kind} {name}", file.display());
                *checked.entry(kind.to_string()).or_default() += 1;
            }
        }
        for kind in KINDS {
            assert!(checked.get(kind).is_some_and(|n| *n > 0), "no fixture checked for {kind}: {checked:?}");
        }
    }

    #[test]
    fn wrong_types_are_refused() {
        let vs = from_yaml("hosts: [web]\nhttp:\n- route:\n  - destination: {host: web}\n    weight: 100\n");
        assert_eq!(problems("VirtualService", &vs), Vec::<String>::new());
        let cases = [
            ("VirtualService", "hosts: [web]\nhttp: [{route: [{destination: {host: web}, weight: heavy}]}]", "/http/0/route/0/weight"),
            ("VirtualService", "hosts: web", "/hosts"),
            ("VirtualService", "hosts: [web]\nhttp: [{route: [{destination: {subset: v1}}]}]", "/http/0/route/0/destination"),
            ("VirtualService", "hosts: [web]\nhttp: [{timeout: 5}]", "/http/0/timeout"),
            (
                "DestinationRule",
                "host: web\ntrafficPolicy: {connectionPool: {tcp: {maxConnections: many}}}",
                "/trafficPolicy/connectionPool/tcp/maxConnections",
            ),
            (
                "DestinationRule",
                "host: web\ntrafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}",
                "/trafficPolicy/connectionPool/tcp/maxConnections",
            ),
            ("DestinationRule", "host: web\ntrafficPolicy: {loadBalancer: {simple: FASTEST}}", "/trafficPolicy/loadBalancer/simple"),
            ("Gateway", "servers: [{port: {number: 80, protocol: HTTP}, hosts: '*'}]", "/servers/0/hosts"),
            ("ServiceEntry", "hosts: [a.example.com]\nports: [{number: http, name: http}]", "/ports/0/number"),
            ("Sidecar", "egress: [{hosts: [./*]}]\nworkloadSelector: {labels: [app]}", "/workloadSelector/labels"),
            ("WorkloadEntry", "address: 10.0.0.1\nports: {http: 99999999999}", "/ports/http"),
            ("VirtualService", "hosts: [web]\nhttp: [{mirror_percent: lots}]", "/http/0/mirror_percent"),
            ("Sidecar", "ingress: [{port: {number: 80}, captureMode: SOMETIMES}]", "/ingress/0/captureMode"),
            ("PeerAuthentication", "mtls: {mode: STRICTLY}", "/mtls/mode"),
            ("PeerAuthentication", "portLevelMtls: {'8080': {mode: [STRICT]}}", "/portLevelMtls/8080/mode"),
        ];
        for (kind, spec, path) in cases {
            let found = problems(kind, &from_yaml(spec));
            assert!(
                found.iter().any(|p| p.starts_with(&format!("{path}: "))),
                "{kind} {spec}: expected a problem at {path}, got {found:?}"
            );
        }
    }

    #[test]
    fn unknown_and_refused_fields_reach_weft() {
        let doc = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web]\n  http:\n  - route: [{destination: {host: web}}]\n    retires: {}\n";
        let vs = from_yaml(doc);
        assert_eq!(problems("VirtualService", &vs["spec"]), Vec::<String>::new(), "the schema keeps an unknown field");
        let loaded = weft_api::load_text(doc, "vs.yaml");
        assert!(loaded.diagnostics.iter().any(|d| d.message.contains("did you mean retries")), "{:?}", loaded.diagnostics);

        // Fields weft knows but refuses, and values only weft can judge, pass the schema so
        // that weft's message is the one the user sees.
        let passes = [
            ("VirtualService", "http: [{corsPolicy: {allowOrigins: [{exact: a}]}, redirect: {derivePort: FROM_PROTOCOL_DEFAULT}}]"),
            ("VirtualService", "http: [{timeout: five seconds, match: [{uri: {exact: /a, prefix: /b}}]}]"),
            ("VirtualService", "http: [{mirror_percent: 5}]"),
            (
                "DestinationRule",
                "host: web\ntrafficPolicy: {tunnel: {protocol: CONNECT}, loadBalancer: {localityLbSetting: {enabled: true}}}",
            ),
            ("ServiceEntry", "hosts: ['*.example.com']\nresolution: DYNAMIC_DNS"),
            ("Gateway", "servers: [{port: {number: 443, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialNames: [a, b]}}]"),
            ("PeerAuthentication", "portLevelMtls: {'8080': {mode: STRICT}}"),
        ];
        for (kind, spec) in passes {
            assert_eq!(problems(kind, &from_yaml(spec)), Vec::<String>::new(), "{kind} {spec}");
        }
    }

    #[test]
    fn schemas_are_structural() {
        fn walk(node: &Value, path: &str) {
            let obj = node.as_object().unwrap_or_else(|| panic!("{path}: not an object: {node}"));
            for forbidden in ["$ref", "definitions", "$defs", "anyOf", "oneOf", "allOf", "not", "nullable", "default", "patternProperties"]
            {
                assert!(!obj.contains_key(forbidden), "{path}: has {forbidden}");
            }
            let flag = |k: &str| obj.get(k) == Some(&Value::Bool(true));
            assert!(
                obj.contains_key("type") || flag("x-kubernetes-preserve-unknown-fields") || flag("x-kubernetes-int-or-string"),
                "{path}: no type"
            );
            assert!(
                !(obj.contains_key("properties") && obj.contains_key("additionalProperties")),
                "{path}: properties and additionalProperties"
            );
            if obj.get("type") == Some(&json!("object")) {
                assert!(flag("x-kubernetes-preserve-unknown-fields"), "{path}: an object that would prune unknown fields");
            }
            if obj.get("type") == Some(&json!("array")) {
                assert!(obj.contains_key("items"), "{path}: an array without items");
            }
            for (k, v) in obj.get("properties").and_then(Value::as_object).into_iter().flatten() {
                walk(v, &format!("{path}.{k}"));
            }
            if let Some(items) = obj.get("items") {
                walk(items, &format!("{path}[]"));
            }
            if let Some(values) = obj.get("additionalProperties") {
                walk(values, &format!("{path}{{}}"));
            }
        }
        for kind in KINDS {
            let schema = spec_schema(kind).unwrap();
            assert_eq!(schema["type"], "object", "{kind}");
            walk(&schema, kind);
            // What the CRD will carry: k8s-openapi's type holds every keyword the schema has.
            let props: JSONSchemaProps = serde_json::from_value(schema.clone()).unwrap();
            assert_eq!(floats(serde_json::to_value(&props).unwrap()), floats(schema), "{kind}");
        }
        for kind in ["AuthorizationPolicy", "RequestAuthentication", "EnvoyFilter"] {
            assert_eq!(spec_schema(kind), None, "{kind} keeps its open spec");
        }
    }

    #[test]
    fn only_refused_fields_take_any_value() {
        // The rewrite turns a construct it cannot express into "any value"; that must happen
        // only where weft-api's schema already said "any value" (fields weft refuses by name).
        fn count(node: &Value, is_any: &dyn Fn(&Value) -> bool) -> usize {
            let props = node.get("properties").and_then(Value::as_object).into_iter().flat_map(|p| p.values());
            let nested = props.chain(node.get("items")).chain(node.get("additionalProperties").filter(|v| v.is_object()));
            usize::from(is_any(node)) + nested.map(|v| count(v, is_any)).sum::<usize>()
        }
        for kind in KINDS {
            let source = weft_api::schema::spec(kind).unwrap();
            let annotation = |k: &String| ["description", "title", "default", "nullable"].contains(&k.as_str());
            let before = count(&source, &|v| *v == json!(true) || v.as_object().is_some_and(|m| m.keys().all(annotation)));
            let after = count(&spec_schema(kind).unwrap(), &|v| *v == any());
            assert_eq!(before, after, "{kind}: a construct the rewrite does not know was made permissive");
        }
    }
}
