//! Every resource `weft control-plane` generates is accepted by `weft proxy`'s validation,
//! for each kind of proxy in the bookinfo fixture: the proxy implements the whole xDS subset
//! the control plane emits.

use weft_api::load_text;
use weft_control::model::Model;
use weft_control::node::ProxyNode;
use weft_control::translate::generate;
use weft_proxy::config::listener::ClusterNames;
use weft_proxy::config::route::RouteTable;
use weft_proxy::config::{ClusterConfig, ListenerConfig};

/// Loads a fixture; `TLS_DIR` in it names `tls_dir` (where the gateway's certificates are).
fn model_with(path: &str, tls_dir: &str) -> Model {
    let path = format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture").replace("TLS_DIR", tls_dir);
    let loaded = load_text(&text, &path);
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    Model::build(&loaded.objects, Default::default())
}

fn model(path: &str) -> Model {
    model_with(path, "/nonexistent")
}

fn errors_for(model: &Model, node_id: &str, meta: serde_json::Value) -> Vec<String> {
    let node = ProxyNode::parse(node_id, &meta).expect("node");
    // Decoded from the encoding, as a proxy decodes what it is sent.
    let g = generate(model, &node).to_json();
    let mut errors = Vec::new();
    for (name, v) in &g.clusters {
        match weft_xds::load::from_value::<weft_xds::cluster::Cluster>(v.clone(), name) {
            Ok(c) => {
                if let Err(e) = ClusterConfig::from_wire(&c, &format!("cluster {name}")) {
                    errors.push(e.to_string());
                }
            }
            Err(e) => errors.push(format!("cluster {name}: {e}")),
        }
    }
    for (name, v) in &g.endpoints {
        if let Err(e) = weft_xds::load::from_value::<weft_xds::cluster::ClusterLoadAssignment>(v.clone(), name) {
            errors.push(format!("endpoints {name}: {e}"));
        }
    }
    for (i, (name, v)) in g.listeners.iter().enumerate() {
        match weft_xds::load::from_value::<weft_xds::listener::Listener>(v.clone(), name) {
            Ok(l) => {
                if let Err(e) = ListenerConfig::from_wire(&l, &format!("listener {name}"), &ClusterNames::Dynamic, i) {
                    errors.push(e.to_string());
                }
            }
            Err(e) => errors.push(format!("listener {name}: {e}")),
        }
    }
    for (name, v) in &g.routes {
        match weft_xds::load::from_value::<weft_xds::route::RouteConfiguration>(v.clone(), name) {
            Ok(r) => {
                if let Err(e) = RouteTable::from_wire(&r, &format!("route {name}"), &ClusterNames::Dynamic) {
                    errors.push(e.to_string());
                }
            }
            Err(e) => errors.push(format!("route {name}: {e}")),
        }
    }
    errors
}

#[test]
fn the_proxy_accepts_everything_the_control_plane_generates() {
    let model = model("crates/control/tests/fixtures/bookinfo.yaml");
    let mut all = Vec::new();
    for app in ["productpage", "reviews", "ratings", "details"] {
        let meta = serde_json::json!({"NAMESPACE": "default", "LABELS": {"app": app, "version": "v1"}});
        all.extend(errors_for(&model, &format!("sidecar~10.1.0.9~{app}-1.default~default.svc.cluster.local"), meta));
    }
    let meta = serde_json::json!({"NAMESPACE": "istio-system", "LABELS": {"istio": "ingressgateway"}});
    all.extend(errors_for(&model, "router~10.1.0.99~ingress-1.istio-system~istio-system.svc.cluster.local", meta));
    // Explicit mode: no capture, an HTTP proxy listener, a Sidecar ingress listener bound to
    // the proxy's address.
    let sidecar = "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: reviews, namespace: default}\nspec:\n  workloadSelector: {labels: {app: reviews}}\n  ingress:\n  - port: {number: 9080, protocol: HTTP}\n    bind: 127.77.0.4\n    defaultEndpoint: 127.77.0.5:9080\n";
    let path = format!("{}/../../crates/control/tests/fixtures/bookinfo.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = format!("{}{sidecar}", std::fs::read_to_string(&path).expect("fixture"));
    let loaded = load_text(&text, &path);
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let explicit_model = Model::build(&loaded.objects, Default::default());
    let meta = serde_json::json!({"NAMESPACE": "default", "LABELS": {"app": "reviews", "version": "v1"}, "INTERCEPTION_MODE": "NONE", "HTTP_PROXY_PORT": "15080", "SDS": "true"});
    let explicit = "sidecar~127.77.0.4~reviews-1.default~default.svc.cluster.local";
    let node = ProxyNode::parse(explicit, &meta).expect("node");
    let g = generate(&explicit_model, &node);
    assert!(g.listeners.contains_key("127.77.0.4_9080") && g.listeners.contains_key("127.77.0.4_15080"), "{:?}", g.listeners.keys());
    all.extend(errors_for(&explicit_model, explicit, meta));
    all.sort();
    all.dedup();
    assert!(all.is_empty(), "{} resources refused:\n{}", all.len(), all.join("\n"));
}

#[test]
fn the_proxy_accepts_every_translation_feature() {
    use weft_test_support::certs::{Leaf, TempDir, TestCa};
    let dir = TempDir::new("xds-accept").expect("temp dir");
    let ca = TestCa::new(dir.path(), "gw").expect("ca");
    ca.issue("web", Leaf { dns: &["web.example.com"], ..Default::default() }).expect("cert");
    let model = model_with("tests/fixtures/features.yaml", &dir.path().display().to_string());
    // The fixture really exercises the features (so this test cannot pass vacuously).
    let meta = serde_json::json!({"NAMESPACE": "default", "LABELS": {"app": "client"}});
    let g =
        generate(&model, &ProxyNode::parse("sidecar~10.2.0.9~client-1.default~default.svc.cluster.local", &meta).expect("node")).to_json();
    let clusters: Vec<&serde_json::Value> = g.clusters.values().collect();
    let text = serde_json::to_string(&(clusters, &g.listeners, &g.routes)).expect("json");
    for feature in [
        "request_mirror_policies",
        "typed_per_filter_config",
        "hash_policy",
        "prefix_rewrite",
        "redirect",
        "retry_policy",
        "circuit_breakers",
        "outlier_detection",
        "STRICT_DNS",
        "original_dst",
        "BlackHoleCluster",
    ] {
        assert!(text.contains(feature), "the fixture does not exercise {feature}");
    }
    let gw_meta = serde_json::json!({"NAMESPACE": "istio-system", "LABELS": {"istio": "ingressgateway"}});
    let gw = generate(
        &model,
        &ProxyNode::parse("router~10.2.0.99~ingress-1.istio-system~istio-system.svc.cluster.local", &gw_meta).expect("node"),
    )
    .to_json();
    let text = serde_json::to_string(&(&gw.listeners, &gw.routes)).expect("json");
    for feature in ["require_tls", "server_names", "tls_inspector", "0.0.0.0_3306", "DownstreamTlsContext", "require_client_certificate"] {
        assert!(text.contains(feature), "the fixture does not exercise the gateway's {feature}");
    }
    let mut all = Vec::new();
    for app in ["web", "client", "scoped"] {
        let meta = serde_json::json!({"NAMESPACE": "default", "LABELS": {"app": app, "version": "v1"}});
        let node = format!("sidecar~10.2.0.9~{app}-1.default~default.svc.cluster.local");
        all.extend(errors_for(&model, &node, meta));
    }
    let meta = serde_json::json!({"NAMESPACE": "istio-system", "LABELS": {"istio": "ingressgateway"}});
    all.extend(errors_for(&model, "router~10.2.0.99~ingress-1.istio-system~istio-system.svc.cluster.local", meta));
    all.sort();
    all.dedup();
    assert!(all.is_empty(), "{} resources refused:\n{}", all.len(), all.join("\n"));
}

/// The encoding of a translation is a function of the mesh: built twice, every resource has
/// the same bytes. A resource whose bytes changed is pushed again and rebuilt by the proxy
/// (pools and health lost), so map fields, which protobuf encodes in iteration order, must
/// not be ordered at random.
#[test]
fn a_translation_encodes_to_the_same_bytes_every_time() {
    use weft_test_support::certs::{Leaf, TempDir, TestCa};
    let dir = TempDir::new("xds-same").expect("temp dir");
    let ca = TestCa::new(dir.path(), "gw").expect("ca");
    ca.issue("web", Leaf { dns: &["web.example.com"], ..Default::default() }).expect("cert");
    let model = model_with("tests/fixtures/features.yaml", &dir.path().display().to_string());
    let nodes = [
        (
            "sidecar~10.2.0.9~client-1.default~default.svc.cluster.local",
            serde_json::json!({"NAMESPACE": "default", "LABELS": {"app": "client"}, "SDS": "true"}),
        ),
        (
            "sidecar~10.2.0.10~web-1.default~default.svc.cluster.local",
            serde_json::json!({"NAMESPACE": "default", "LABELS": {"app": "web"}, "SDS": "true"}),
        ),
        (
            "router~10.2.0.99~ingress-1.istio-system~istio-system.svc.cluster.local",
            serde_json::json!({"NAMESPACE": "istio-system", "LABELS": {"istio": "ingressgateway"}}),
        ),
    ];
    for (id, meta) in nodes {
        let node = ProxyNode::parse(id, &meta).expect("node");
        let encoded = || generate(&model, &node).items().map(|i| (i.name.to_owned(), (i.encode)())).collect::<Vec<_>>();
        let first = encoded();
        for _ in 0..3 {
            let again = encoded();
            for ((name, a), (_, b)) in first.iter().zip(&again) {
                assert!(a == b, "{id}: {name} encoded differently");
            }
            assert_eq!(first.len(), again.len());
        }
    }
}

/// TLS told apart by SNI (wildcard server names, tls routes): the proxy takes those chains.
#[test]
fn the_proxy_accepts_sni_chains_for_tls_services() {
    let text = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: apis}\nspec:\n  hosts: [\"*.api.example.com\", db.example.com]\n  location: MESH_EXTERNAL\n  resolution: NONE\n  ports: [{number: 443, name: tls, protocol: TLS}]\n---\n\
                apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api}\nspec:\n  hosts: [\"*.api.example.com\"]\n  tls:\n  - match: [{port: 443, sniHosts: [v2.api.example.com]}]\n    route: [{destination: {host: db.example.com, port: {number: 443}}}]\n";
    let loaded = load_text(text, "tls.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let model = Model::build(&loaded.objects, Default::default());
    let meta = serde_json::json!({"NAMESPACE": "default", "LABELS": {"app": "client"}});
    let errors = errors_for(&model, "sidecar~10.2.0.9~client-1.default~default.svc.cluster.local", meta);
    assert!(errors.is_empty(), "{errors:#?}");
}
