//! Loading Istio-shaped resources: the good ones load, each bad one is reported with file, line
//! and field path, and a bad document never takes the good ones in its file down with it.

use weft_api::{load_text, Level, Object};

fn fixture(name: &str) -> (String, String) {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    (std::fs::read_to_string(&path).expect("fixture"), name.to_string())
}

#[test]
fn bookinfo_shaped_resources_load_unchanged() {
    let (text, file) = fixture("bookinfo-routing.yaml");
    let loaded = load_text(&text, &file);
    let errors: Vec<_> = loaded.diagnostics.iter().filter(|d| d.level == Level::Error).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let kinds: Vec<_> = loaded.objects.iter().map(|o| o.kind()).collect();
    assert_eq!(kinds, ["DestinationRule", "VirtualService", "VirtualService", "DestinationRule", "Service"]);
    let Object::VirtualService(vs) = &loaded.objects[1] else { panic!("not a VirtualService") };
    assert_eq!(vs.namespace, "default");
    assert_eq!(vs.origin.line, 19, "a document's origin is its first line");
    assert_eq!(vs.spec.http[1].route[1].weight, Some(10));
    let Object::DestinationRule(dr) = &loaded.objects[3] else { panic!("not a DestinationRule") };
    let od = dr.spec.traffic_policy.as_ref().and_then(|t| t.outlier_detection.as_ref()).expect("outlier detection");
    assert_eq!(od.base_ejection_time.map(|d| d.0.as_secs()), Some(180), "Go durations like 3m are accepted");
}

#[test]
fn each_bad_resource_is_named_with_line_and_path_and_the_good_one_survives() {
    let (text, file) = fixture("broken.yaml");
    let loaded = load_text(&text, &file);
    let shown: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    let want = [
        "broken.yaml:8: VirtualService default/bad-weights: spec.http[0].route: destination weights add up to 90, not 100",
        "broken.yaml:23: VirtualService default/bad-regex: spec.http[0].match[0].uri.regex: invalid regular expression",
        "broken.yaml:32: VirtualService default/dup-hosts: spec.hosts[1]: duplicate host \"details\"",
        "broken.yaml:44: DestinationRule default/typo: spec.trafficPolicy.loadBalancr: unknown field",
    ];
    assert_eq!(shown.len(), want.len(), "{shown:#?}");
    for (got, want) in shown.iter().zip(want) {
        assert!(got.starts_with(want), "got  {got}\nwant {want}…");
    }
    assert_eq!(loaded.objects.len(), 1, "only the valid DestinationRule loads");
}

#[test]
fn an_unknown_field_lists_the_known_ones_whether_there_are_two_or_more() {
    let text = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: r\n  trafficPolicy:\n    connectionPool: {http: {http2KeepAlive: {time: 10s}}}\n";
    let loaded = load_text(text, "dr.yaml");
    let d = &loaded.diagnostics[0];
    assert_eq!(d.field_path, "spec.trafficPolicy.connectionPool.http.http2KeepAlive.time");
    assert_eq!(d.message, "unknown field (known: interval, timeout)");
    let text = text.replace("http2KeepAlive: {time: 10s}", "maxRetrie: 3");
    let d = &load_text(&text, "dr.yaml").diagnostics[0];
    assert!(d.message.starts_with("unknown field; did you mean maxRetries? (known: "), "{d}");
    assert!(!d.message.contains('`'), "{d}");
}

#[test]
fn unimplemented_istio_fields_are_refused_by_name() {
    let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: cors}\nspec:\n  hosts: [a]\n  http:\n  - corsPolicy: {allowOrigins: [{exact: x}]}\n    route: [{destination: {host: a}}]\n";
    let loaded = load_text(text, "cors.yaml");
    assert!(loaded.objects.is_empty());
    let d = &loaded.diagnostics[0];
    assert_eq!(d.field_path, "spec.http[0].corsPolicy");
    assert!(d.message.contains("not supported by weft yet"), "{d}");
    assert_eq!(d.line, Some(7));
}

#[test]
fn sidecar_ingress_listeners_load_and_bad_ones_are_named() {
    let good = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: r}\nspec:\n  workloadSelector: {labels: {app: r}}\n  ingress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n    bind: 127.77.0.2\n    captureMode: NONE\n    defaultEndpoint: 127.77.0.3:9080\n  - port: {number: 9081}\n    defaultEndpoint: 0.0.0.0:9081\n";
    let loaded = load_text(good, "s.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    assert_eq!(loaded.objects.len(), 1);
    let bad = good.replace("127.77.0.3:9080", "10.0.0.5:9080").replace("bind: 127.77.0.2", "bind: here");
    let loaded = load_text(&bad, "s.yaml");
    assert!(loaded.objects.is_empty());
    let shown: Vec<String> = loaded.diagnostics.iter().map(|d| format!("{}: {}", d.field_path, d.message)).collect();
    assert!(shown.iter().any(|d| d.starts_with("spec.ingress[0].bind") && d.contains("not an IP")), "{shown:?}");
    assert!(shown.iter().any(|d| d.starts_with("spec.ingress[0].defaultEndpoint") && d.contains("loopback")), "{shown:?}");
    let dup = good.replace("number: 9081", "number: 9080");
    assert!(load_text(&dup, "s.yaml").diagnostics.iter().any(|d| d.message.contains("two ingress listeners")));
    let tls = good.replace("    captureMode: NONE\n", "    tls: {mode: SIMPLE}\n");
    let d = &load_text(&tls, "s.yaml").diagnostics[0];
    assert!(d.field_path == "spec.ingress[0].tls" && d.message.contains("not supported by weft yet"), "{d}");
}

#[test]
fn syntax_errors_and_unknown_kinds_are_reported() {
    let loaded = load_text("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports: [\n", "s.yaml");
    assert!(loaded.diagnostics[0].message.contains("YAML syntax error"), "{:?}", loaded.diagnostics);
    let loaded = load_text("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n", "w.yaml");
    assert_eq!(loaded.diagnostics[0].level, Level::Warning);
    assert!(loaded.diagnostics[0].message.contains("Widget is not a kind weft reads"));
}

/// Found by fuzzing (fuzz/corpus/istio/regression_*): resources that load name their own line
/// when a document is YAML that only one of weft's two YAML parsers reads, and the items of a
/// `List` name theirs.
#[test]
fn lines_survive_a_later_syntax_error_and_list_items_have_theirs() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b\n";
    let loaded = load_text(text, "s.yaml");
    let lines: Vec<usize> = loaded.objects.iter().map(|o| o.meta().2.line).collect();
    assert_eq!(lines, [1], "{:?}", loaded.diagnostics);
    // A nested flow sequence continued at column 0 is YAML libyaml reads and the line index's
    // parser does not: the documents after it still get their lines.
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: c}\n\
                spec:\n  ports: [{name: a, port: 80}\n, {name: b, port: 81}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\n";
    let loaded = load_text(text, "f.yaml");
    let lines: Vec<usize> = loaded.objects.iter().map(|o| o.meta().2.line).collect();
    assert_eq!(lines, [1, 5, 12], "{:?}", loaded.diagnostics);
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n\
                - apiVersion: networking.istio.io/v1\n  kind: VirtualService\n  metadata: {name: b}\n  spec: {hots: [b]}\n";
    let loaded = load_text(text, "l.yaml");
    let lines: Vec<usize> = loaded.objects.iter().map(|o| o.meta().2.line).collect();
    assert_eq!(lines, [4]);
    let shown: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(shown.iter().any(|d| d.starts_with("l.yaml:10: VirtualService default/b: spec.hots")), "{shown:#?}");
}
