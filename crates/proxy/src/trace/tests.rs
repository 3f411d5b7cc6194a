use super::*;

fn config(random: f64, client: f64, overall: f64, kind: TrafficDirection, zipkin: &str) -> TraceConfig {
    let provider = if zipkin.is_empty() {
        String::new()
    } else {
        format!(
            r#","provider": {{"name": "envoy.tracers.zipkin", "typed_config": {{"@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig", {zipkin}}}}}"#
        )
    };
    let json = format!(
        r#"{{"random_sampling": {{"value": {random}}}, "client_sampling": {{"value": {client}}}, "overall_sampling": {{"value": {overall}}}{provider}}}"#
    );
    let wire: HcmTracing = serde_json::from_str(&json).expect("tracing config parses");
    TraceConfig::from_wire(&wire, kind, "tracing").expect("valid")
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
    }
    h
}

fn get<'a>(h: &'a HeaderMap, n: &str) -> Option<&'a str> {
    h.get(n).and_then(|v| v.to_str().ok())
}

#[test]
fn the_decision_rolls_on_the_request_id_and_is_written_into_it() {
    let c = config(50.0, 100.0, 100.0, TrafficDirection::Outbound, "");
    // 0x00001388 = 5000: not under 50 % of 10000; 0x00000001 is.
    let mut out = headers(&[("x-request-id", "00001388-1111-4222-8333-444455556666")]);
    assert!(!c.decide(&mut out));
    assert_eq!(get(&out, "x-request-id"), Some("00001388-1111-4222-8333-444455556666"));
    let mut inn = headers(&[("x-request-id", "00000001-1111-4222-8333-444455556666")]);
    assert!(c.decide(&mut inn));
    assert_eq!(get(&inn, "x-request-id"), Some("00000001-1111-9222-8333-444455556666"));
    // The next proxy on the path keeps the decision even at 0 % random sampling.
    let none = config(0.0, 100.0, 100.0, TrafficDirection::Inbound, "");
    assert!(none.decide(&mut inn));
    // A client trace id forces it; overall sampling takes it back.
    let mut client = headers(&[("x-request-id", "00001388-1111-4222-8333-444455556666"), ("x-client-trace-id", "x")]);
    assert!(none.decide(&mut client));
    assert_eq!(get(&client, "x-request-id"), Some("00001388-1111-b222-8333-444455556666"));
    let mut gated = headers(&[("x-request-id", "00001388-1111-9222-8333-444455556666")]);
    assert!(!config(100.0, 100.0, 10.0, TrafficDirection::Outbound, "").decide(&mut gated));
    assert_eq!(get(&gated, "x-request-id"), Some("00001388-1111-4222-8333-444455556666"));
    // No request id, or not a UUID: nothing to decide on.
    assert!(!c.decide(&mut headers(&[("x-request-id", "abc")])));
    assert!(!c.decide(&mut HeaderMap::new()));
}

#[test]
fn a_root_span_starts_a_trace_and_a_child_continues_the_callers() {
    let c = config(
        100.0,
        100.0,
        100.0,
        TrafficDirection::Outbound,
        r#""collector_cluster": "zipkin", "collector_endpoint": "/api/v2/spans", "collector_endpoint_version": "HTTP_JSON", "trace_id_128bit": true"#,
    );
    let mut h = headers(&[("x-request-id", "00000001-1111-4222-8333-444455556666")]);
    let root = c.start(&mut h);
    assert!(root.sampled && root.parent.is_none());
    let trace = get(&h, "x-b3-traceid").expect("trace id").to_string();
    assert_eq!(trace.len(), 32);
    // Envoy's root span id is the low half of the trace id.
    assert_eq!(get(&h, "x-b3-spanid"), Some(&trace[16..]));
    assert_eq!(get(&h, "x-b3-sampled"), Some("1"));
    assert!(h.get("x-b3-parentspanid").is_none());

    let mut h =
        headers(&[("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"), ("x-b3-spanid", "a2fb4a1d1a96d312"), ("x-b3-sampled", "0")]);
    let child = c.start(&mut h);
    assert!(!child.sampled, "the caller's sampled flag wins over the decision");
    assert_eq!(get(&h, "x-b3-traceid"), Some("463ac35c9f6413ad48485a3953bb6124"));
    assert_eq!(get(&h, "x-b3-parentspanid"), Some("a2fb4a1d1a96d312"));
    assert_ne!(get(&h, "x-b3-spanid"), Some("a2fb4a1d1a96d312"));
    assert_eq!(get(&h, "x-b3-sampled"), Some("0"));

    // The single b3 header is read and replaced by the multi-header form.
    let mut h = headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")]);
    let s = c.start(&mut h);
    assert!(s.sampled && h.get("b3").is_none());
    assert_eq!(get(&h, "x-b3-traceid"), Some("80f198ee56343ba864fe8b2a57d3eff7"));
    assert_eq!(get(&h, "x-b3-parentspanid"), Some("e457b5a2e4d86bd1"));
}

#[test]
fn a_server_span_shares_the_callers_id_unless_told_not_to() {
    let zipkin = r#""collector_cluster": "zipkin", "collector_endpoint": "/api/v2/spans", "collector_endpoint_version": "HTTP_JSON""#;
    let caller = [("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"), ("x-b3-spanid", "a2fb4a1d1a96d312"), ("x-b3-sampled", "1")];
    let shared = config(100.0, 100.0, 100.0, TrafficDirection::Inbound, zipkin).start(&mut headers(&caller));
    assert!(shared.shared && shared.id == 0xa2fb4a1d1a96d312 && shared.parent.is_none());
    let own = config(100.0, 100.0, 100.0, TrafficDirection::Inbound, &format!(r#"{zipkin}, "shared_span_context": false"#))
        .start(&mut headers(&caller));
    assert!(!own.shared && own.parent == Some(0xa2fb4a1d1a96d312));
}

#[test]
fn bad_tracing_config_names_the_field() {
    let bad = |json: &str| {
        let wire: HcmTracing = serde_json::from_str(json).expect("parses");
        TraceConfig::from_wire(&wire, TrafficDirection::Outbound, "hcm.tracing").expect_err("refused").to_string()
    };
    assert!(bad(r#"{"random_sampling": {"value": 150}}"#).contains("hcm.tracing.random_sampling"));
    let z = |extra: &str| {
        format!(
            r#"{{"provider": {{"name": "z", "typed_config": {{"@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig", {extra}}}}}}}"#
        )
    };
    assert!(bad(&z(r#""collector_endpoint": "/api/v2/spans", "collector_endpoint_version": "HTTP_JSON""#)).contains("collector_cluster"));
    assert!(bad(&z(r#""collector_cluster": "z", "collector_endpoint": "/api/v2/spans", "collector_endpoint_version": "HTTP_PROTO""#))
        .contains("collector_endpoint_version"));
    let other = r#"{"provider": {"name": "x", "typed_config": {"@type": "type.googleapis.com/envoy.config.trace.v3.DatadogConfig"}}}"#;
    assert!(serde_json::from_str::<HcmTracing>(other).is_err(), "an unsupported tracer is refused, not ignored");
}
