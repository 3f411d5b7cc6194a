//! The Telemetry API through the control plane: Istio's merge order (root namespace, then the
//! proxy's namespace, then workload selectors), per side (CLIENT = outbound and gateways,
//! SERVER = inbound), into the Envoy config every proxy gets — tracers, access logs with CEL
//! filters, and the metric plan — all of it valid Envoy v3.

use serde_json::Value;
use weft_api::load_text;
use weft_control::model::Model;
use weft_control::node::ProxyNode;
use weft_control::translate::GeneratedJson as Generated;

const MESH: &str = r#"
extensionProviders:
- name: otel
  opentelemetry: {service: otel-collector.observability.svc.cluster.local, port: 4318, http: {path: /v1/traces}}
- name: jaeger
  opentelemetry: {service: 10.9.9.9, port: 4317}
- name: errors
  envoyFileAccessLog: {path: /var/log/errors.log, logFormat: {labels: {code: "%RESPONSE_CODE%", path: "%REQ(:PATH)%"}}}
- name: skywalking
  skywalking: {service: sw.default.svc.cluster.local, port: 11800}
"#;

const ROOT: &str = r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: jaeger}]
    randomSamplingPercentage: 25
    customTags:
      team: {literal: {value: payments}}
      user: {header: {name: x-user, defaultValue: anonymous}}
  accessLogging:
  - providers: [{name: errors}]
    filter: {expression: "response.code >= 400"}
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT, mode: SERVER}
      tagOverrides:
        response_code: {operation: REMOVE}
        request_method: {value: request.method}
    reportingInterval: 30s
"#;

fn model(extra: &str) -> Model {
    let text = std::fs::read_to_string(format!("{}/tests/fixtures/bookinfo.yaml", env!("CARGO_MANIFEST_DIR"))).expect("fixture");
    let text = format!("{text}\n---\n{ROOT}\n---\n{extra}");
    let loaded = load_text(&text, "bookinfo.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let mesh = weft_api::mesh::load_mesh(MESH, "mesh.yaml").expect("mesh");
    Model::build(&loaded.objects, mesh)
}

fn node(ip: &str, app: &str) -> ProxyNode {
    let meta = serde_json::json!({"NAMESPACE": "default", "LABELS": {"app": app}});
    ProxyNode::parse(&format!("sidecar~{ip}~{app}-1.default~default.svc.cluster.local"), &meta).expect("node")
}

/// The resources `node` gets, as a proxy decodes them.
fn generate(model: &Model, node: &ProxyNode) -> Generated {
    weft_control::translate::generate(model, node).to_json()
}

/// Every resource decodes and is sent under its own name.
fn encode_all(g: &Generated) {
    let faults = g.faults();
    assert!(faults.is_empty(), "{faults:#?}");
}

/// Every HTTP connection manager's config, with whether its listener is inbound.
fn managers(g: &Generated) -> Vec<(bool, Value)> {
    let mut out = Vec::new();
    for l in g.listeners.values() {
        let inbound = l["traffic_direction"] == "INBOUND";
        for chain in l["filter_chains"].as_array().into_iter().flatten() {
            for f in chain["filters"].as_array().into_iter().flatten() {
                if f["name"] == "envoy.filters.network.http_connection_manager" {
                    out.push((inbound, f["typed_config"].clone()));
                }
            }
        }
    }
    out
}

#[test]
fn a_mesh_wide_telemetry_configures_tracer_logs_and_metrics_of_both_sides() {
    let g = generate(&model(""), &node("10.1.0.2", "productpage"));
    encode_all(&g);
    let hcms = managers(&g);
    assert!(hcms.iter().any(|(i, _)| *i) && hcms.iter().any(|(i, _)| !*i), "inbound and outbound managers");
    for (inbound, h) in &hcms {
        let t = &h["tracing"];
        assert_eq!(t["random_sampling"]["value"], 25.0, "{h:#}");
        let otel = &t["provider"]["typed_config"];
        assert_eq!(otel["@type"], "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig");
        assert_eq!(otel["grpc_service"]["envoy_grpc"]["cluster_name"], "tracing|jaeger", "OTLP over gRPC by default");
        assert_eq!(otel["service_name"], "productpage.default", "named as Istio names it");
        let tags: Vec<&str> = t["custom_tags"].as_array().into_iter().flatten().filter_map(|c| c["tag"].as_str()).collect();
        assert_eq!(tags, vec!["team", "user"]);
        let log = &h["access_log"][0];
        assert_eq!(log["typed_config"]["path"], "/var/log/errors.log");
        assert_eq!(log["typed_config"]["log_format"]["json_format"]["code"], "%RESPONSE_CODE%");
        assert_eq!(log["filter"]["extension_filter"]["typed_config"]["expression"], "response.code >= 400", "inbound {inbound}");
    }
    // The collector outside the registry gets a cluster of its own, speaking HTTP/2 for gRPC.
    let c = &g.clusters["tracing|jaeger"];
    assert_eq!(c["type"], "STATIC");
    assert!(c["typed_extension_protocol_options"].to_string().contains("http2_protocol_options"), "{c:#}");
    // The metric plan rides on every mesh listener.
    let plans: Vec<&Value> = g.listeners.values().filter_map(|l| l.pointer("/metadata/filter_metadata/istio.stats")).collect();
    assert_eq!(plans.len(), g.listeners.values().filter(|l| l.get("traffic_direction").is_some()).count());
    let plan = plans[0];
    assert_eq!(
        plan["server"]["metrics"]["REQUEST_COUNT"]["tags"],
        serde_json::json!({"response_code": null, "request_method": "request.method"})
    );
    assert_eq!(plan["client"]["metrics"], serde_json::json!({}), "the override is for SERVER only");
    assert_eq!(plan["reporting_interval"], "30s");
}

#[test]
fn namespace_and_workload_telemetries_override_the_mesh_in_istios_order() {
    let ns = r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: namespace, namespace: default}
spec:
  tracing:
  - match: {mode: SERVER}
    disableSpanReporting: true
  accessLogging:
  - match: {mode: CLIENT}
    disabled: true
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: reviews-only, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  tracing:
  - providers: [{name: otel}]
    randomSamplingPercentage: 100
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: ALL_METRICS, mode: CLIENT}
      disabled: true
"#;
    let m = model(ns);
    let pp = generate(&m, &node("10.1.0.2", "productpage"));
    encode_all(&pp);
    for (inbound, h) in managers(&pp) {
        // SERVER spans off in the namespace; CLIENT logs off in the namespace.
        assert_eq!(h.get("tracing").is_none(), inbound, "inbound {inbound}: {h:#}");
        assert_eq!(h.get("access_log").is_none(), !inbound, "inbound {inbound}: {h:#}");
    }
    let rv = generate(&m, &node("10.1.0.3", "reviews"));
    encode_all(&rv);
    for (inbound, h) in managers(&rv) {
        // The workload's Telemetry names a provider: both sides trace again, at 100 %, over HTTP.
        let t = &h["tracing"];
        if inbound {
            assert!(t.is_null(), "disableSpanReporting from the namespace still holds for SERVER: {h:#}");
            continue;
        }
        assert_eq!(t["random_sampling"]["value"], 100.0);
        let http = &t["provider"]["typed_config"]["http_service"]["http_uri"];
        assert_eq!(http["uri"], "http://otel-collector.observability.svc.cluster.local:4318/v1/traces");
        assert_eq!(http["cluster"], "tracing|otel");
    }
    let plan = rv.listeners.values().find_map(|l| l.pointer("/metadata/filter_metadata/istio.stats")).expect("a plan");
    assert_eq!(plan["client"]["disabled"], true, "ALL_METRICS disabled for CLIENT");
    assert_eq!(plan["server"]["disabled"], false);
}

#[test]
fn without_telemetry_nothing_changes_and_mistakes_are_reported() {
    // No Telemetry and no default providers: MeshConfig's legacy settings, no plan.
    let text = std::fs::read_to_string(format!("{}/tests/fixtures/bookinfo.yaml", env!("CARGO_MANIFEST_DIR"))).expect("fixture");
    let loaded = load_text(&text, "bookinfo.yaml");
    let plain = generate(&Model::build(&loaded.objects, Default::default()), &node("10.1.0.2", "productpage"));
    let json = serde_json::to_string(&plain.listeners).expect("json");
    assert!(!json.contains("istio.stats") && !json.contains("tracing") && !json.contains("access_log"), "{json}");

    let bad = r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: a, namespace: default}
spec:
  tracing: [{providers: [{name: nope}]}]
  metrics: [{providers: [{name: otel}]}]
  accessLogging: [{providers: [{name: skywalking}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: b, namespace: default}
spec:
  accessLogging: [{providers: [{name: envoy}]}]
"#;
    let full = format!("{text}\n---\n{ROOT}\n---\n{bad}");
    let loaded = load_text(&full, "bookinfo.yaml");
    let snapshot = weft_control::store::Snapshot { objects: loaded.objects, diagnostics: loaded.diagnostics, ..Default::default() };
    let m = Model::build(&snapshot.objects, weft_api::mesh::load_mesh(MESH, "mesh.yaml").expect("mesh"));
    let found: Vec<String> = weft_control::analyze::analyze(&snapshot, &m).iter().map(|d| d.to_string()).collect();
    for want in [
        "Telemetry default/a: spec.tracing[0].providers[0].name: no MeshConfig extension provider is named \"nope\"",
        "Telemetry default/a: spec.metrics[0].providers[0].name: provider \"otel\" is of kind opentelemetry, which does not do metrics",
        "Telemetry default/a: spec.accessLogging[0].providers[0].name: provider \"skywalking\" is of kind skywalking, which does not do access logging in weft",
        "Telemetry default/b: spec: the Telemetries [\"a\", \"b\"] in namespace \"default\" have no workload selector; only \"a\" applies",
    ] {
        assert!(found.iter().any(|f| f.contains(want)), "want {want}\nin {found:#?}");
    }
}

#[test]
fn an_envoy_otel_als_provider_becomes_envoys_opentelemetry_access_logger() {
    let extra = r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: logs, namespace: default}
spec:
  accessLogging:
  - providers: [{name: als}]
    filter: {expression: "response.code >= 500"}
"#;
    let text = std::fs::read_to_string(format!("{}/tests/fixtures/bookinfo.yaml", env!("CARGO_MANIFEST_DIR"))).expect("fixture");
    let loaded = load_text(&format!("{text}\n---\n{extra}"), "bookinfo.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let mesh = weft_api::mesh::load_mesh(
        "extensionProviders:\n- name: als\n  envoyOtelAls: {service: 10.9.9.8, port: 4317, logFormat: {labels: {code: \"%RESPONSE_CODE%\"}}}\n",
        "mesh.yaml",
    )
    .expect("mesh");
    let g = generate(&Model::build(&loaded.objects, mesh), &node("10.1.0.2", "productpage"));
    encode_all(&g);
    let hcms = managers(&g);
    assert!(!hcms.is_empty());
    for (_, h) in hcms {
        let log = &h["access_log"][0];
        assert_eq!(log["name"], "envoy.access_loggers.open_telemetry", "{h:#}");
        let c = &log["typed_config"];
        assert_eq!(c["common_config"]["grpc_service"]["envoy_grpc"]["cluster_name"], "accesslog|als");
        assert_eq!(c["common_config"]["log_name"], "otel_envoy_accesslog", "Istio's log name");
        assert_eq!(c["attributes"]["values"][0], serde_json::json!({"key": "code", "value": {"string_value": "%RESPONSE_CODE%"}}));
        assert_eq!(log["filter"]["extension_filter"]["typed_config"]["expression"], "response.code >= 500");
    }
    assert!(g.clusters["accesslog|als"].to_string().contains("http2_protocol_options"), "gRPC to the collector");
}
