//! Telemetry (telemetry.istio.io v1 and v1alpha1) loads as Istio loads it: every example of
//! Istio's documentation loads, and each rule of Istio's validation refuses (or warns) in
//! Istio's words, naming the field and the line.

use weft_api::{load_text, Level, Loaded, Object};

fn load(text: &str) -> Loaded {
    load_text(text, "telemetry.yaml")
}

fn doc(spec: &str) -> String {
    format!("apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: t, namespace: foo}}\nspec:\n{spec}")
}

fn errors(l: &Loaded) -> Vec<String> {
    l.diagnostics.iter().filter(|d| d.level == Level::Error).map(|d| d.to_string()).collect()
}

fn warnings(l: &Loaded) -> Vec<String> {
    l.diagnostics.iter().filter(|d| d.level == Level::Warning).map(|d| d.to_string()).collect()
}

#[test]
fn istios_documented_telemetries_load() {
    let text = std::fs::read_to_string(format!("{}/tests/fixtures/istio/telemetry.yaml", env!("CARGO_MANIFEST_DIR"))).expect("fixture");
    let l = load(&text);
    assert!(errors(&l).is_empty(), "{:#?}", l.diagnostics);
    // Two tracing rules in one resource: Istio warns, and so does weft.
    assert_eq!(
        warnings(&l),
        vec!["telemetry.yaml:37: Telemetry baz/foo-tracing-alternate: spec.tracing: multiple tracing is not currently supported"]
    );
    let kinds: Vec<&str> = l.objects.iter().map(Object::kind).collect();
    assert_eq!(kinds, vec!["Telemetry"; 5]);
    let Object::Telemetry(t) = &l.objects[3] else { panic!("not a Telemetry") };
    assert_eq!(t.spec.metrics[0].reporting_interval.map(|d| d.0.as_secs()), Some(30));
}

#[test]
fn istios_rules_refuse_in_istios_words() {
    for (spec, path, message) in [
        (
            "  tracing:\n  - randomSamplingPercentage: 101\n",
            "spec.tracing[0].randomSamplingPercentage",
            "randomSamplingPercentage must be in range [0.0, 100.0]",
        ),
        ("  tracing:\n  - providers: [{name: \"\"}]\n", "spec.tracing[0].providers[0].name", "providers.name may not be empty"),
        (
            "  tracing:\n  - customTags:\n      t: {literal: {value: \"\"}}\n",
            "spec.tracing[0].customTags.t.literal.value",
            "literal tag value may not be empty",
        ),
        (
            "  tracing:\n  - customTags:\n      t: {header: {name: \"\"}}\n",
            "spec.tracing[0].customTags.t.header.name",
            "header tag name may not be empty",
        ),
        (
            "  tracing:\n  - customTags:\n      t: {environment: {name: \"\"}}\n",
            "spec.tracing[0].customTags.t.environment.name",
            "environment tag name may not be empty",
        ),
        ("  tracing:\n  - customTags:\n      t: {}\n", "spec.tracing[0].customTags.t", "tag 't' may not have a nil value"),
        (
            "  metrics:\n  - overrides:\n    - tagOverrides:\n        x: {operation: UPSERT}\n",
            "spec.metrics[0].overrides[0].tagOverrides.x",
            "tagOverrides.value must be set when operation is UPSERT",
        ),
        (
            "  metrics:\n  - overrides:\n    - tagOverrides:\n        x: {operation: REMOVE, value: request.host}\n",
            "spec.metrics[0].overrides[0].tagOverrides.x",
            "tagOverrides.value may only be set when operation is UPSERT",
        ),
        (
            "  metrics:\n  - overrides:\n    - match: {customMetric: \"\"}\n",
            "spec.metrics[0].overrides[0].match.customMetric",
            "customMetric may not be empty",
        ),
        ("  metrics:\n  - reportingInterval: 1ms\n", "spec.metrics[0].reportingInterval", "must be a valid duration greater than 1ms"),
        (
            "  accessLogging:\n  - filter: {expression: \"response.code >=\"}\n",
            "spec.accessLogging[0].filter.expression",
            "must be a valid CEL expression",
        ),
        (
            "  selector: {matchLabels: {app: a}}\n  targetRefs: [{kind: Service, name: a}]\n",
            "spec",
            "only one of targetRefs or workloadSelector can be set",
        ),
    ] {
        let l = load(&doc(spec));
        let errs = errors(&l);
        assert!(l.objects.is_empty(), "{spec}: refused, not applied half way");
        assert!(
            errs.iter().any(|e| e.contains(&format!("Telemetry foo/t: {path}: ")) && e.contains(message)),
            "{spec}\nwant {path}: {message}\ngot {errs:#?}"
        );
    }
}

#[test]
fn what_weft_cannot_do_is_refused_by_name_and_unknown_fields_with_their_path() {
    for (spec, says) in [
        ("  targetRefs: [{kind: Gateway, name: g}]\n", "spec.targetRefs: targetRefs is not supported"),
        ("  tracing:\n  - customTags:\n      t: {formatter: {value: \"%REQ(x)%\"}}\n", "formatter is not supported"),
        ("  metrics:\n  - overrides:\n    - match: {customMetric: my_metric}\n", "defines no metric \"my_metric\""),
        ("  accessLogging:\n  - filter: {expression: \"xds.node.id == 'x'\"}\n", "does not supply the attribute \"xds.node.id\""),
        ("  metrics:\n  - overrides:\n    - tagOverrides:\n        x: {value: \"filter_state['x']\"}\n", "unknown name \"filter_state\""),
        ("  tracing:\n  - disableContextPropagation: true\n", "always propagates trace context"),
        (
            "  tracing:\n  - randomSamplingPercentag: 5\n",
            "spec.tracing[0].randomSamplingPercentag: unknown field; did you mean randomSamplingPercentage?",
        ),
        ("  metrics:\n  - overrides:\n    - match: {metric: REQUEST_COUNTS}\n", "REQUEST_COUNTS"),
    ] {
        let l = load(&doc(spec));
        let errs = errors(&l);
        assert!(l.objects.is_empty() && errs.iter().any(|e| e.contains(says)), "{spec}\nwant {says}\ngot {errs:#?}");
    }
    // Tuning fields load with a warning naming them.
    let l = load(&doc("  tracing:\n  - useRequestIdForTraceSampling: false\n"));
    assert_eq!(l.objects.len(), 1);
    assert!(warnings(&l)[0].contains("useRequestIdForTraceSampling is accepted, but weft does not act on it yet"), "{:#?}", l.diagnostics);
}
