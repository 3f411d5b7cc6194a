//! mTLS in the generated resources: PeerAuthentication's precedence on inbound chains,
//! auto mTLS and DestinationRule `tls` on outbound clusters, all valid Envoy v3.

use serde_json::Value;
use weft_api::load_text;
use weft_control::model::Model;
use weft_control::node::ProxyNode;
use weft_control::translate::GeneratedJson as Generated;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}, {name: tcp-admin, port: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: default}
spec:
  selector: {app: details}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 10.1.0.4, labels: {app: reviews, version: v1, security.istio.io/tlsMode: istio}, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-legacy, namespace: default}
spec: {address: 10.1.0.5, labels: {app: reviews, version: legacy}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings, namespace: default}
spec: {address: 10.1.0.6, labels: {app: ratings, security.istio.io/tlsMode: istio}, serviceAccount: ratings}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: details, namespace: default}
spec: {address: 10.1.0.7, labels: {app: details, security.istio.io/tlsMode: istio}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls:
    9090: {mode: DISABLE}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details, namespace: default}
spec:
  host: details
  trafficPolicy:
    tls: {mode: SIMPLE, caCertificates: /etc/certs/details-ca.pem, subjectAltNames: [details.example.com]}
    portLevelSettings:
    - port: {number: 9080}
      tls: {mode: DISABLE}
"#;

fn model() -> Model {
    let loaded = load_text(MESH, "mesh.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    Model::build(&loaded.objects, Default::default())
}

fn node(ip: &str, app: &str, identity: bool) -> ProxyNode {
    let mut meta = serde_json::json!({"NAMESPACE": "default", "LABELS": {"app": app}});
    if identity {
        meta["SDS"] = serde_json::json!("true");
    }
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

fn chains(g: &Generated) -> Vec<Value> {
    g.listeners["virtualInbound"]["filter_chains"].as_array().cloned().unwrap_or_default()
}

fn chain<'a>(chains: &'a [Value], name: &str) -> Option<&'a Value> {
    chains.iter().find(|c| c["name"] == name)
}

#[test]
fn peer_authentication_precedence_shapes_inbound_chains() {
    let m = model();
    // reviews: the workload policy (PERMISSIVE) beats the mesh's STRICT, and its port-level
    // DISABLE beats both on 9090.
    let g = generate(&m, &node("10.1.0.4", "reviews", true));
    encode_all(&g);
    let c = chains(&g);
    let mtls = chain(&c, "0.0.0.0_9080-mtls").expect("an mTLS chain on 9080");
    assert_eq!(mtls["filter_chain_match"]["transport_protocol"], "tls");
    assert!(mtls["filter_chain_match"]["application_protocols"].as_array().is_some_and(|a| a.iter().any(|p| p == "istio")));
    let ctx = &mtls["transport_socket"]["typed_config"];
    assert_eq!(ctx["require_client_certificate"], true);
    assert_eq!(ctx["common_tls_context"]["tls_certificate_sds_secret_configs"][0]["name"], "default");
    assert_eq!(ctx["common_tls_context"]["combined_validation_context"]["validation_context_sds_secret_config"]["name"], "ROOTCA");
    let hcm = &mtls["filters"][0]["typed_config"];
    assert_eq!(hcm["forward_client_cert_details"], "SANITIZE_SET");
    let plain = chain(&c, "0.0.0.0_9080").expect("PERMISSIVE keeps a plaintext chain");
    assert_eq!(plain["filter_chain_match"]["transport_protocol"], "raw_buffer");
    let admin = chain(&c, "0.0.0.0_9090").expect("9090 plaintext");
    assert!(admin["filter_chain_match"].get("transport_protocol").is_none(), "DISABLE takes anything as plaintext: {admin}");
    assert!(chain(&c, "0.0.0.0_9090-mtls").is_none());
    let filters: Vec<&str> =
        g.listeners["virtualInbound"]["listener_filters"].as_array().expect("filters").iter().filter_map(|f| f["name"].as_str()).collect();
    assert!(filters.contains(&"envoy.filters.listener.tls_inspector"), "{filters:?}");

    // ratings: only the mesh's STRICT applies: TLS only, on its port and for passthrough.
    let g = generate(&m, &node("10.1.0.6", "ratings", true));
    encode_all(&g);
    let c = chains(&g);
    let strict = chain(&c, "0.0.0.0_9080-mtls").expect("mTLS chain");
    assert!(strict["filter_chain_match"].get("application_protocols").is_none(), "STRICT takes any TLS: {strict}");
    assert!(chain(&c, "0.0.0.0_9080").is_none(), "no plaintext chain under STRICT");
    assert!(chain(&c, "virtualInbound").is_none() && g.listeners["virtualInbound"].get("default_filter_chain").is_none());
    assert!(chain(&c, "virtualInbound-mtls").is_some());

    // Without a workload identity, STRICT refuses (no chain) instead of waiting for secrets.
    let g = generate(&m, &node("10.1.0.6", "ratings", false));
    assert!(!g.listeners["virtualInbound"].to_string().contains("sds-grpc"));
    assert!(chains(&g).iter().all(|c| c["filter_chain_match"]["destination_port"] != 9080));
}

#[test]
fn auto_mtls_and_destination_rule_tls_shape_outbound_clusters() {
    let m = model();
    let g = generate(&m, &node("10.1.0.2", "productpage", true));
    encode_all(&g);

    // Auto mTLS: ISTIO_MUTUAL for endpoints with a sidecar, plaintext for the rest.
    let reviews = &g.clusters["outbound|9080||reviews.default.svc.cluster.local"];
    let matches = reviews["transport_socket_matches"].as_array().expect("transport socket matches");
    assert_eq!(matches[0]["match"]["tlsMode"], "istio");
    let up = &matches[0]["transport_socket"]["typed_config"];
    assert_eq!(up["sni"], "outbound_.9080_._.reviews.default.svc.cluster.local");
    let alpn: Vec<&str> = up["common_tls_context"]["alpn_protocols"].as_array().expect("alpn").iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(alpn, ["istio-peer-exchange", "istio"]);
    assert_eq!(up["common_tls_context"]["tls_params"]["tls_maximum_protocol_version"], "TLSv1_3");
    let sans = &up["common_tls_context"]["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"];
    assert_eq!(sans[0]["matcher"]["exact"], "spiffe://cluster.local/ns/default/sa/reviews");
    assert_eq!(matches[1]["match"], serde_json::json!({}));
    assert_eq!(matches[1]["transport_socket"]["name"], "envoy.transport_sockets.raw_buffer");
    let eps = g.endpoints["outbound|9080||reviews.default.svc.cluster.local"]["endpoints"][0]["lb_endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let marked = |ip: &str| {
        eps.iter()
            .find(|e| e["endpoint"]["address"]["socket_address"]["address"] == ip)
            .map(|e| e["metadata"]["filter_metadata"]["envoy.transport_socket_match"]["tlsMode"] == "istio")
    };
    assert_eq!(marked("10.1.0.4"), Some(true), "the workload with a sidecar is reached over mTLS");
    assert_eq!(marked("10.1.0.5"), Some(false), "the one without stays plaintext");
    // reviews' 9090 is DISABLE by its own policy: auto mTLS does not send TLS there.
    let admin = &g.endpoints["outbound|9090||reviews.default.svc.cluster.local"]["endpoints"][0]["lb_endpoints"];
    let no_tls_mode = |e: &serde_json::Value| e["metadata"]["filter_metadata"].get("envoy.transport_socket_match").is_none();
    assert!(admin.as_array().expect("endpoints").iter().all(no_tls_mode), "{admin}");
    // Every endpoint names its workload, as Istio's EDS does, for telemetry.
    assert_eq!(admin[0]["metadata"]["filter_metadata"]["istio"]["workload"], "reviews-v1;default;reviews;v1;Kubernetes");

    // ISTIO_MUTUAL from a DestinationRule: every endpoint, the service's identities.
    let ratings = &g.clusters["outbound|9080||ratings.default.svc.cluster.local"];
    let ctx = &ratings["transport_socket"]["typed_config"];
    assert_eq!(ctx["sni"], "outbound_.9080_._.ratings.default.svc.cluster.local");
    assert_eq!(
        ctx["common_tls_context"]["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"][0]
            ["matcher"]["exact"],
        "spiffe://cluster.local/ns/default/sa/ratings"
    );
    // Port-level DISABLE beats the top-level SIMPLE.
    let details = &g.clusters["outbound|9080||details.default.svc.cluster.local"];
    assert!(details.get("transport_socket").is_none() && details.get("transport_socket_matches").is_none(), "{details}");

    // A proxy without an identity never gets auto mTLS (it has no certificate to show).
    let g = generate(&m, &node("10.1.0.2", "productpage", false));
    assert!(g.clusters["outbound|9080||reviews.default.svc.cluster.local"].get("transport_socket_matches").is_none());
}

#[test]
fn enable_auto_mtls_false_leaves_sidecars_plaintext_but_keeps_explicit_tls() {
    let loaded = load_text(MESH, "mesh.yaml");
    let mesh = weft_api::mesh::load_mesh("enableAutoMtls: false\n", "mesh.yaml").expect("mesh");
    let m = Model::build(&loaded.objects, mesh);
    let g = generate(&m, &node("10.1.0.2", "productpage", true));
    encode_all(&g);
    // No DestinationRule for reviews: with auto mTLS off, plaintext to every endpoint.
    let reviews = &g.clusters["outbound|9080||reviews.default.svc.cluster.local"];
    assert!(reviews.get("transport_socket_matches").is_none() && reviews.get("transport_socket").is_none(), "{reviews}");
    // A DestinationRule's ISTIO_MUTUAL still applies: only the automatic choice is off.
    let ratings = &g.clusters["outbound|9080||ratings.default.svc.cluster.local"];
    assert_eq!(ratings["transport_socket"]["typed_config"]["sni"], "outbound_.9080_._.ratings.default.svc.cluster.local", "{ratings}");
}

#[test]
fn simple_tls_names_the_destination_rule_files() {
    let text = MESH.replace("    portLevelSettings:\n    - port: {number: 9080}\n      tls: {mode: DISABLE}\n", "");
    let loaded = load_text(&text, "mesh.yaml");
    let m = Model::build(&loaded.objects, Default::default());
    let g = generate(&m, &node("10.1.0.2", "productpage", true));
    encode_all(&g);
    let ctx = &g.clusters["outbound|9080||details.default.svc.cluster.local"]["transport_socket"]["typed_config"];
    assert_eq!(ctx["sni"], "details.default.svc.cluster.local");
    let v = &ctx["common_tls_context"]["validation_context"];
    assert_eq!(v["trusted_ca"]["filename"], "/etc/certs/details-ca.pem");
    let sans: Vec<&str> =
        v["match_typed_subject_alt_names"].as_array().expect("sans").iter().filter_map(|s| s["san_type"].as_str()).collect();
    assert_eq!(sans, ["DNS", "URI"], "an untyped subjectAltName may be either");
    assert!(ctx["common_tls_context"].get("tls_certificates").is_none(), "SIMPLE presents no client certificate");
}
