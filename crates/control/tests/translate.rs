//! Translation from Istio's model to Envoy resources: names and shapes Istio users know, and
//! every generated resource is valid Envoy v3 (it must encode through Envoy's descriptors).

use weft_api::load_text;
use weft_control::model::Model;
use weft_control::node::ProxyNode;
use weft_control::translate::GeneratedJson as Generated;

fn bookinfo() -> Model {
    let text = std::fs::read_to_string(format!("{}/tests/fixtures/bookinfo.yaml", env!("CARGO_MANIFEST_DIR"))).expect("fixture");
    let loaded = load_text(&text, "bookinfo.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    Model::build(&loaded.objects, Default::default())
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

#[test]
fn productpage_sidecar_gets_istio_named_resources_that_envoy_accepts() {
    let model = bookinfo();
    let g = generate(&model, &node("10.1.0.2", "productpage"));
    encode_all(&g);
    let clusters: Vec<&str> = g.clusters.keys().map(String::as_str).collect();
    for want in [
        "outbound|9080||reviews.default.svc.cluster.local",
        "outbound|9080|v1|reviews.default.svc.cluster.local",
        "outbound|9080|v3|reviews.default.svc.cluster.local",
        "outbound|27017||mongodb.default.svc.cluster.local",
        "inbound|9080||",
        "PassthroughCluster",
        "BlackHoleCluster",
        "InboundPassthroughCluster",
    ] {
        assert!(clusters.contains(&want), "missing {want} in {clusters:#?}");
    }
    // Subset endpoints are the workloads with the subset's labels.
    let v3 = &g.endpoints["outbound|9080|v3|reviews.default.svc.cluster.local"];
    assert_eq!(v3["endpoints"][0]["lb_endpoints"].as_array().map(Vec::len), Some(1));
    assert_eq!(v3["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"], "10.1.0.5");
    // Connection pool → circuit breakers; subset policy overrides the load balancer only.
    let c = &g.clusters["outbound|9080|v3|reviews.default.svc.cluster.local"];
    assert_eq!(c["circuit_breakers"]["thresholds"][0]["max_connections"], 100);
    assert_eq!(c["circuit_breakers"]["thresholds"][0]["max_pending_requests"], 10);
    assert_eq!(c["lb_policy"], "RANDOM");
    assert_eq!(c["outlier_detection"]["consecutive_5xx"], 5);

    let route = &g.routes["9080"];
    let vhosts = route["virtual_hosts"].as_array().expect("vhosts");
    let reviews = vhosts.iter().find(|v| v["name"] == "reviews.default.svc.cluster.local:9080").expect("reviews vhost");
    let domains: Vec<&str> = reviews["domains"].as_array().expect("domains").iter().filter_map(|d| d.as_str()).collect();
    for d in ["reviews", "reviews:9080", "reviews.default", "reviews.default.svc.cluster.local", "10.96.0.11"] {
        assert!(domains.contains(&d), "{d} missing from {domains:?}");
    }
    let r = &reviews["routes"];
    assert_eq!(r[0]["name"], "jason");
    assert_eq!(r[0]["match"]["headers"][0]["string_match"]["exact"], "jason");
    assert_eq!(r[0]["route"]["cluster"], "outbound|9080|v2|reviews.default.svc.cluster.local");
    assert_eq!(r[1]["route"]["weighted_clusters"]["clusters"][1]["weight"], 10);
    assert_eq!(r[1]["route"]["retry_policy"]["num_retries"], 3);
    assert_eq!(r[1]["route"]["retry_policy"]["retriable_status_codes"][0], 503);
    assert_eq!(r[1]["route"]["timeout"], "5s");
    assert_eq!(r[1]["typed_per_filter_config"]["envoy.filters.http.fault"]["delay"]["percentage"]["numerator"], 5000);
    assert_eq!(vhosts.last().map(|v| &v["name"]), Some(&serde_json::json!("allow_any")));

    // `http2foo` is not HTTP: ratings is sniffed, so its VIP has a TCP chain and an HTTP chain.
    let l = &g.listeners["0.0.0.0_9080"];
    let chains: Vec<&str> = l["filter_chains"].as_array().expect("chains").iter().filter_map(|c| c["name"].as_str()).collect();
    assert!(chains.contains(&"10.96.0.12_9080"), "{chains:?}");
    assert_eq!(l["bind_to_port"], false);
    assert_eq!(g.listeners["virtualOutbound"]["use_original_dst"], true);
    // Mongo is TCP: by VIP, straight to the cluster.
    let mongo = &g.listeners["0.0.0.0_27017"]["filter_chains"][0];
    assert_eq!(mongo["filters"][0]["typed_config"]["cluster"], "outbound|27017||mongodb.default.svc.cluster.local");
    // Inbound: this workload serves productpage's 9080.
    let inbound = &g.listeners["virtualInbound"];
    assert!(inbound["filter_chains"].as_array().expect("chains").iter().any(|c| c["filter_chain_match"]["destination_port"] == 9080));
}

#[test]
fn registry_only_blocks_unknown_http_with_502_and_tcp_with_blackhole() {
    let text = std::fs::read_to_string(format!("{}/tests/fixtures/bookinfo.yaml", env!("CARGO_MANIFEST_DIR"))).expect("fixture");
    let loaded = load_text(&text, "bookinfo.yaml");
    let mesh: weft_api::mesh::MeshConfig = serde_yaml::from_str("outboundTrafficPolicy: {mode: REGISTRY_ONLY}").expect("mesh");
    let model = Model::build(&loaded.objects, mesh);
    let g = generate(&model, &node("10.1.0.2", "productpage"));
    let last = g.routes["9080"]["virtual_hosts"].as_array().and_then(|v| v.last().cloned()).expect("vhost");
    assert_eq!(last["name"], "block_all");
    assert_eq!(last["routes"][0]["direct_response"]["status"], 502);
    assert_eq!(g.listeners["0.0.0.0_9080"]["default_filter_chain"]["filters"][0]["typed_config"]["cluster"], "BlackHoleCluster");
}

#[test]
fn sidecar_egress_scopes_what_a_proxy_sees() {
    let text = std::fs::read_to_string(format!("{}/tests/fixtures/bookinfo.yaml", env!("CARGO_MANIFEST_DIR"))).expect("fixture");
    let sidecar = "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: default}\nspec:\n  egress:\n  - hosts: [\"./ratings.default.svc.cluster.local\"]\n";
    let loaded = load_text(&format!("{text}{sidecar}"), "bookinfo.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let model = Model::build(&loaded.objects, Default::default());
    let g = generate(&model, &node("10.1.0.3", "reviews"));
    let outbound: Vec<&str> = g.clusters.keys().filter(|k| k.starts_with("outbound|")).map(String::as_str).collect();
    assert_eq!(outbound, ["outbound|9080||ratings.default.svc.cluster.local"]);
}

#[test]
fn gateway_servers_become_http_https_passthrough_and_tcp_listeners() {
    let text = std::fs::read_to_string(format!("{}/tests/fixtures/gateway.yaml", env!("CARGO_MANIFEST_DIR"))).expect("fixture");
    let loaded = load_text(&text, "gateway.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let model = Model::build(&loaded.objects, Default::default());
    let meta = serde_json::json!({"NAMESPACE": "istio-system", "LABELS": {"istio": "ingressgateway"}});
    let gw = ProxyNode::parse("router~10.3.0.9~ingress-1.istio-system~istio-system.svc.cluster.local", &meta).expect("node");
    let g = generate(&model, &gw);
    encode_all(&g);
    let names: Vec<&str> = g.listeners.keys().map(String::as_str).collect();
    assert_eq!(names, ["0.0.0.0_443", "0.0.0.0_5432", "0.0.0.0_80", "0.0.0.0_8000"]);

    // Port 80: httpsRedirect makes the virtual host require TLS.
    let r80 = &g.routes["http.80"];
    assert_eq!(r80["virtual_hosts"][0]["domains"][0], "web.example.com");
    assert_eq!(r80["virtual_hosts"][0]["require_tls"], "ALL");
    // The route translation is the sidecars': rewrite, weights; a match bound to `mesh` only
    // is left out at the gateway.
    let r8000 = &g.routes["http.8000"];
    let vhost = |domain: &str| {
        r8000["virtual_hosts"].as_array().and_then(|v| v.iter().find(|vh| vh["domains"][0] == domain)).cloned().unwrap_or_default()
    };
    assert_eq!(vhost("*")["domains"], serde_json::json!(["*"]), "a `*` server takes every bound host");
    let web = &vhost("web.example.com")["routes"];
    assert_eq!(web.as_array().map(Vec::len), Some(2), "{web:#}");
    assert_eq!(web[0]["match"]["prefix"], "/api");
    assert_eq!(web[0]["route"]["prefix_rewrite"], "/v2/api");
    assert_eq!(web[0]["route"]["cluster"], "outbound|8080||web.default.svc.cluster.local");
    let split = &web[1]["route"]["weighted_clusters"]["clusters"];
    assert_eq!(split[1]["name"], "outbound|8443||secure.default.svc.cluster.local");
    assert_eq!(split[1]["weight"], 20);

    // Port 443: one chain terminates web.example.com with the server's files, one passes
    // secure.example.com through by SNI, untouched.
    let l443 = &g.listeners["0.0.0.0_443"];
    assert_eq!(l443["listener_filters"][0]["name"], "envoy.filters.listener.tls_inspector");
    let chains = l443["filter_chains"].as_array().unwrap();
    assert_eq!(chains.len(), 2);
    let https = &chains[0];
    assert_eq!(https["filter_chain_match"]["server_names"][0], "web.example.com");
    let ctx = &https["transport_socket"]["typed_config"]["common_tls_context"];
    assert_eq!(ctx["tls_certificates"][0]["certificate_chain"]["filename"], "/etc/certs/web.pem");
    assert_eq!(ctx["tls_params"]["tls_minimum_protocol_version"], "TLSv1_2");
    let rds = &https["filters"][0]["typed_config"]["rds"]["route_config_name"];
    assert_eq!(rds, "https.443.https-web.edge.default");
    assert!(g.routes.contains_key("https.443.https-web.edge.default"));
    let pass = &chains[1];
    assert_eq!(pass["filter_chain_match"]["server_names"][0], "secure.example.com");
    assert!(pass.get("transport_socket").is_none(), "passthrough does not terminate");
    assert_eq!(pass["filters"][0]["typed_config"]["cluster"], "outbound|8443||secure.default.svc.cluster.local");

    // TCP server: the bound tcp route.
    let l5432 = &g.listeners["0.0.0.0_5432"];
    assert_eq!(l5432["filter_chains"][0]["filters"][0]["typed_config"]["cluster"], "outbound|5432||db.default.svc.cluster.local");
    assert!(l5432.get("listener_filters").is_none());
}

#[test]
fn mesh_tracing_sampling_reaches_every_http_connection_manager() {
    let text = std::fs::read_to_string(format!("{}/tests/fixtures/bookinfo.yaml", env!("CARGO_MANIFEST_DIR"))).expect("fixture");
    let loaded = load_text(&text, "bookinfo.yaml");
    let mesh = weft_api::mesh::load_mesh("defaultConfig:\n  tracing:\n    sampling: 2.5\n", "mesh.yaml").expect("mesh");
    let model = Model::build(&loaded.objects, mesh);
    let g = generate(&model, &node("10.1.0.2", "productpage"));
    encode_all(&g);
    let text = serde_json::to_string(&g.listeners).expect("json");
    let managers = text.matches("HttpConnectionManager").count();
    assert!(managers > 1, "bookinfo has HTTP listeners");
    assert_eq!(text.matches(r#""random_sampling":{"value":2.5}"#).count(), managers, "{text}");
    // Without the setting there is no tracing block (Envoy's default applies).
    let plain = generate(&bookinfo(), &node("10.1.0.2", "productpage"));
    assert!(!serde_json::to_string(&plain.listeners).expect("json").contains("random_sampling"));
}

#[test]
fn mesh_zipkin_address_becomes_the_tracer_of_every_http_connection_manager() {
    let text = std::fs::read_to_string(format!("{}/tests/fixtures/bookinfo.yaml", env!("CARGO_MANIFEST_DIR"))).expect("fixture");
    let loaded = load_text(&text, "bookinfo.yaml");
    let provider = |g: &Generated| -> Vec<serde_json::Value> {
        let text = serde_json::to_string(&g.listeners).expect("json");
        let listeners: serde_json::Value = serde_json::from_str(&text).expect("json");
        let mut found = Vec::new();
        collect_key(&listeners, "tracing", &mut found);
        found
    };
    // A collector outside the registry: its own cluster, istiod's Zipkin settings, 1 % by default.
    let mesh = weft_api::mesh::load_mesh("defaultConfig:\n  tracing:\n    zipkin: {address: 10.9.9.9:9411}\n", "mesh.yaml").expect("mesh");
    let g = generate(&Model::build(&loaded.objects, mesh), &node("10.1.0.2", "productpage"));
    encode_all(&g);
    let tracing = provider(&g);
    assert!(tracing.len() > 1, "every HTTP connection manager traces");
    for t in &tracing {
        assert_eq!(t["random_sampling"]["value"], 1.0);
        let z = &t["provider"]["typed_config"];
        assert_eq!(z["collector_cluster"], "zipkin");
        assert_eq!(z["collector_endpoint"], "/api/v2/spans");
        assert_eq!(z["collector_endpoint_version"], "HTTP_JSON");
        assert_eq!(z["trace_id_128bit"], true);
        assert_eq!(z["shared_span_context"], false);
        assert_eq!(z["trace_context_option"], "USE_B3_WITH_W3C_PROPAGATION", "W3C next to B3");
    }
    assert_eq!(g.clusters["zipkin"]["type"], "STATIC");
    // enableTracing: false takes it all out.
    let off = weft_api::mesh::load_mesh(
        "enableTracing: false
defaultConfig:
  tracing:
    zipkin: {address: 10.9.9.9:9411}
",
        "mesh.yaml",
    )
    .expect("mesh");
    let g_off = generate(&Model::build(&loaded.objects, off), &node("10.1.0.2", "productpage"));
    assert!(provider(&g_off).is_empty(), "no HTTP connection manager traces with enableTracing: false");
    assert_eq!(
        g.clusters["zipkin"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"],
        9411
    );

    // A collector that is a mesh service: its outbound cluster, no extra cluster.
    let mesh = weft_api::mesh::load_mesh(
        "defaultConfig:\n  tracing:\n    sampling: 100\n    zipkin: {address: ratings.default:9080}\n",
        "mesh.yaml",
    )
    .expect("mesh");
    let g = generate(&Model::build(&loaded.objects, mesh), &node("10.1.0.2", "productpage"));
    encode_all(&g);
    let tracing = provider(&g);
    assert!(tracing
        .iter()
        .all(|t| t["provider"]["typed_config"]["collector_cluster"] == "outbound|9080||ratings.default.svc.cluster.local"));
    assert!(tracing.iter().all(|t| t["random_sampling"]["value"] == 100.0));
    assert!(!g.clusters.contains_key("zipkin"));
}

fn collect_key(v: &serde_json::Value, key: &str, out: &mut Vec<serde_json::Value>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    out.push(x.clone());
                } else {
                    collect_key(x, key, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_key(x, key, out)),
        _ => {}
    }
}

#[test]
fn mesh_access_log_file_reaches_every_http_connection_manager() {
    let text = std::fs::read_to_string(format!("{}/tests/fixtures/bookinfo.yaml", env!("CARGO_MANIFEST_DIR"))).expect("fixture");
    let loaded = load_text(&text, "bookinfo.yaml");
    let mesh = weft_api::mesh::load_mesh("accessLogFile: /dev/stdout\n", "mesh.yaml").expect("mesh");
    let model = Model::build(&loaded.objects, mesh);
    let g = generate(&model, &node("10.1.0.2", "productpage"));
    encode_all(&g);
    let text = serde_json::to_string(&g.listeners).expect("json");
    let managers = text.matches("HttpConnectionManager").count();
    assert!(text.contains("%ROUTE_NAME%") && text.contains("%RESPONSE_FLAGS%"), "Istio's format says why a request failed");
    // TCP proxies log too: a connection sent to the BlackHoleCluster leaves a line.
    let tcp = text.matches("TcpProxy").count();
    assert!(tcp > 0);
    assert_eq!(text.matches(r#""path":"/dev/stdout""#).count(), managers + tcp, "{text}");
    // Off unless asked for.
    let plain = generate(&bookinfo(), &node("10.1.0.2", "productpage"));
    assert!(!serde_json::to_string(&plain.listeners).expect("json").contains("access_log"));
}

/// Istio's `HTTP10: "1"` node metadata: every connection manager of that proxy accepts
/// HTTP/1.0; without it Envoy's default (426) applies.
#[test]
fn http10_metadata_lets_every_connection_manager_accept_http_10() {
    let model = bookinfo();
    let meta = serde_json::json!({"NAMESPACE": "default", "LABELS": {"app": "productpage"}, "HTTP10": "1"});
    let n = ProxyNode::parse("sidecar~10.1.0.2~productpage-1.default~default.svc.cluster.local", &meta).expect("node");
    let g = generate(&model, &n);
    encode_all(&g);
    let text = serde_json::to_string(&g.listeners).expect("json");
    let managers = text.matches("HttpConnectionManager").count();
    assert!(managers > 1, "bookinfo has HTTP listeners");
    assert_eq!(text.matches(r#""accept_http_10":true"#).count(), managers, "{text}");
    let plain = generate(&model, &node("10.1.0.2", "productpage"));
    assert!(!serde_json::to_string(&plain.listeners).expect("json").contains("accept_http_10"));
}

/// A 2018 `extensions/v1beta1` Ingress of class istio in the config directory is served by the
/// ingress gateway: port 80 routes its paths (`/zipkin/.*` as a prefix) to the Services the
/// backends name, as the API server's Ingresses are; the path that will 404 is said.
#[test]
fn an_ingress_in_a_config_file_is_served_by_the_ingress_gateway() {
    let dir = weft_test_support::certs::TempDir::new("ingress-file").expect("temp dir");
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: zipkin}\nspec:\n  selector: {app: zipkin}\n  ports: [{name: http-query, port: 9411}]\n---\n\
                apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata:\n  name: tracing\n  annotations: {kubernetes.io/ingress.class: istio}\nspec:\n  rules:\n  - http:\n      paths:\n      - path: /zipkin/.*\n        backend: {serviceName: zipkin, servicePort: 9411}\n      - path: /qingdaoliuyi\n        backend: {serviceName: zipkin, servicePort: 9411}\n";
    std::fs::write(dir.path().join("ingress.yaml"), text).expect("write");
    let snap = weft_control::store::load_dir(dir.path()).expect("load");
    let warnings: Vec<String> = snap.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0]
            .starts_with("ingress.yaml:8: Ingress default/tracing: spec.rules[0].http.paths[1].path: \"/qingdaoliuyi\" matches only"),
        "{warnings:#?}"
    );
    let model = Model::build(&snap.objects, Default::default());
    let meta = serde_json::json!({"NAMESPACE": "istio-system", "LABELS": {"istio": "ingressgateway"}});
    let gw = ProxyNode::parse("router~10.3.0.9~ingress-1.istio-system~istio-system.svc.cluster.local", &meta).expect("node");
    let g = generate(&model, &gw);
    encode_all(&g);
    assert!(g.listeners.contains_key("0.0.0.0_80"), "{:?}", g.listeners.keys());
    let routes = &g.routes["http.80"]["virtual_hosts"][0]["routes"];
    let matches: Vec<&serde_json::Value> = routes.as_array().expect("routes").iter().map(|r| &r["match"]).collect();
    assert_eq!(matches[0]["path"], "/qingdaoliuyi", "{routes:#}");
    assert_eq!(matches[1]["prefix"], "/zipkin/", "{routes:#}");
    assert_eq!(routes[1]["route"]["cluster"], "outbound|9411||zipkin.default.svc.cluster.local");
}

/// An ISTIO_MUTUAL server (Istio's egress gateway takes the mesh's mTLS so) terminates with the
/// gateway's own SVID and requires the caller's, checked against the mesh bundle; a gateway
/// without a workload certificate leaves the server out rather than serve it another way.
#[test]
fn an_istio_mutual_gateway_server_takes_the_mesh_mtls() {
    let text = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: egress, namespace: istio-system}\nspec:\n  selector: {istio: egressgateway}\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [edition.cnn.com]\n    tls: {mode: ISTIO_MUTUAL}\n---\n\
                apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: cnn}\nspec:\n  hosts: [edition.cnn.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{number: 80, name: http, protocol: HTTP}]\n---\n\
                apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: cnn}\nspec:\n  hosts: [edition.cnn.com]\n  gateways: [istio-system/egress]\n  http:\n  - route: [{destination: {host: edition.cnn.com, port: {number: 80}}}]\n";
    let loaded = load_text(text, "egress.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let model = Model::build(&loaded.objects, Default::default());
    let gw = |sds: bool| {
        let mut meta = serde_json::json!({"NAMESPACE": "istio-system", "LABELS": {"istio": "egressgateway"}});
        if sds {
            meta["SDS"] = serde_json::json!("true");
        }
        ProxyNode::parse("router~10.3.0.7~egress-1.istio-system~istio-system.svc.cluster.local", &meta).expect("node")
    };
    let g = generate(&model, &gw(true));
    encode_all(&g);
    let chain = &g.listeners["0.0.0.0_443"]["filter_chains"][0];
    assert_eq!(chain["filter_chain_match"]["server_names"], serde_json::json!(["edition.cnn.com"]), "{chain:#}");
    let ctx = &chain["transport_socket"]["typed_config"];
    assert_eq!(ctx["require_client_certificate"], true, "{ctx:#}");
    let common = &ctx["common_tls_context"];
    assert_eq!(common["tls_certificate_sds_secret_configs"][0]["name"], "default", "the gateway's own SVID: {common:#}");
    assert_eq!(common["combined_validation_context"]["validation_context_sds_secret_config"]["name"], "ROOTCA", "{common:#}");
    assert!(g.routes.contains_key("https.443.https.egress.istio-system"), "{:?}", g.routes.keys());
    let without = generate(&model, &gw(false));
    assert!(!without.listeners.contains_key("0.0.0.0_443"), "no certificate: the server is left out, not served in plaintext");
}

/// TLS services by SNI: a ServiceEntry host without addresses (wildcards too) is told apart by
/// the ClientHello's server name on its port, and a VirtualService's `tls` routes send their
/// `sniHosts` where they say; both were dropped before (the chain needed a VIP).
#[test]
fn tls_services_and_tls_routes_are_told_apart_by_sni() {
    let text = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: apis}\nspec:\n  hosts: [\"*.api.example.com\", db.example.com]\n  location: MESH_EXTERNAL\n  resolution: NONE\n  ports: [{number: 443, name: tls, protocol: TLS}]\n---\n\
                apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: legacy}\nspec:\n  hosts: [legacy.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{number: 443, name: https, protocol: HTTPS}]\n---\n\
                apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: legacy}\nspec:\n  hosts: [legacy.example.com]\n  tls:\n  - match: [{port: 443, sniHosts: [legacy.example.com]}]\n    route: [{destination: {host: db.example.com, port: {number: 443}}}]\n";
    let loaded = load_text(text, "tls.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let model = Model::build(&loaded.objects, Default::default());
    let g = generate(&model, &node("10.1.0.2", "productpage"));
    encode_all(&g);
    let l = &g.listeners["0.0.0.0_443"];
    assert!(
        l["listener_filters"].as_array().expect("filters").iter().any(|f| f["name"] == "envoy.filters.listener.tls_inspector"),
        "{l:#}"
    );
    let by_sni = |name: &str| {
        l["filter_chains"]
            .as_array()
            .expect("chains")
            .iter()
            .find(|c| c["filter_chain_match"]["server_names"].as_array().is_some_and(|n| n.iter().any(|n| n == name)))
            .map(|c| c["filters"][0]["typed_config"]["cluster"].clone())
    };
    assert_eq!(by_sni("*.api.example.com"), Some(serde_json::json!("outbound|443||*.api.example.com")), "{l:#}");
    assert_eq!(by_sni("db.example.com"), Some(serde_json::json!("outbound|443||db.example.com")));
    assert_eq!(by_sni("legacy.example.com"), Some(serde_json::json!("outbound|443||db.example.com")), "the tls route wins");
}

/// exportTo: what another namespace keeps to itself (`.`) is not in a proxy's config, what it
/// exports to the proxy's namespace by name is; a Kubernetes Service's annotation counts too.
#[test]
fn export_to_bounds_which_namespaces_see_a_resource() {
    let text = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: private, namespace: other}\nspec:\n  hosts: [private.example.com]\n  exportTo: [\".\"]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{number: 80, name: http, protocol: HTTP}]\n---\n\
                apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: shared, namespace: other}\nspec:\n  hosts: [shared.example.com]\n  exportTo: [\".\", default]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{number: 80, name: http, protocol: HTTP}]\n---\n\
                apiVersion: v1\nkind: Service\nmetadata:\n  name: internal\n  namespace: other\n  annotations: {networking.istio.io/exportTo: \".\"}\nspec:\n  ports: [{name: http, port: 8080}]\n---\n\
                apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: shared, namespace: other}\nspec:\n  hosts: [shared.example.com]\n  exportTo: [\".\"]\n  http: [{timeout: 3s, route: [{destination: {host: shared.example.com}}]}]\n";
    let loaded = load_text(text, "export.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let model = Model::build(&loaded.objects, Default::default());
    let at = |ns: &str| {
        let meta = serde_json::json!({"NAMESPACE": ns, "LABELS": {"app": "client"}});
        generate(&model, &ProxyNode::parse(&format!("sidecar~10.1.0.9~client-1.{ns}~{ns}.svc.cluster.local"), &meta).expect("node"))
    };
    let (here, there) = (at("default"), at("other"));
    let has = |g: &weft_control::translate::GeneratedJson, c: &str| g.clusters.contains_key(c);
    assert!(!has(&here, "outbound|80||private.example.com"), "kept to its own namespace");
    assert!(has(&there, "outbound|80||private.example.com"));
    assert!(has(&here, "outbound|80||shared.example.com"), "exported to default by name");
    assert!(!has(&at("third"), "outbound|80||shared.example.com"), "and to no other namespace");
    assert!(!has(&here, "outbound|8080||internal.other.svc.cluster.local"), "the Service's annotation");
    assert!(has(&there, "outbound|8080||internal.other.svc.cluster.local"));
    // The VirtualService (a 3 s timeout) applies in its own namespace only.
    let timeout = |g: &weft_control::translate::GeneratedJson| {
        g.routes["80"]["virtual_hosts"]
            .as_array()
            .expect("vhosts")
            .iter()
            .find(|v| v["name"] == "shared.example.com:80")
            .map(|v| v["routes"][0]["route"]["timeout"].clone())
    };
    assert_eq!(timeout(&there), Some(serde_json::json!("3s")), "{:#}", there.routes["80"]);
    assert_eq!(timeout(&here), Some(serde_json::json!("0s")), "not exported to default: the default route");
}

/// DNS capture (NDS): a sidecar whose metadata says DNS_CAPTURE gets a name table of the
/// services it may call that have an address; with DNS_AUTO_ALLOCATE a ServiceEntry host
/// without one (not a wildcard, resolution not NONE) gets an address of 240.240.0.0/16, the
/// same for every proxy, and a TCP port of it a filter chain for that address. A CIDR in
/// `addresses` matches the whole range. A proxy without DNS capture gets neither.
#[test]
fn dns_capture_sends_a_name_table_and_auto_allocates_service_entry_addresses() {
    let text = std::fs::read_to_string(format!("{}/tests/fixtures/bookinfo.yaml", env!("CARGO_MANIFEST_DIR"))).expect("fixture")
        + "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db, namespace: default}\nspec:\n  hosts: [db.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{number: 3306, name: mysql, protocol: TCP}]\n---\n\
           apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: range, namespace: default}\nspec:\n  hosts: [range.example.com]\n  addresses: [10.20.0.0/16]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  endpoints: [{address: 10.20.0.1}]\n  ports: [{number: 6379, name: redis, protocol: TCP}]\n---\n\
           apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: passthrough, namespace: default}\nspec:\n  hosts: [any.example.com]\n  location: MESH_EXTERNAL\n  resolution: NONE\n  ports: [{number: 9300, name: es, protocol: TCP}]\n";
    let loaded = load_text(&text, "dns.yaml");
    // Only the warning that TCP ports without an address need allocation.
    assert!(loaded.diagnostics.iter().all(|d| d.message.starts_with("addresses are required")), "{:#?}", loaded.diagnostics);
    let model = Model::build(&loaded.objects, Default::default());
    let dns_node = |auto: bool| {
        let mut meta = serde_json::json!({"NAMESPACE": "default", "LABELS": {"app": "productpage"}, "DNS_CAPTURE": "true"});
        if auto {
            meta["DNS_AUTO_ALLOCATE"] = serde_json::json!("true");
        }
        ProxyNode::parse("sidecar~10.1.0.2~productpage-1.default~default.svc.cluster.local", &meta).expect("node")
    };
    let plain = weft_control::translate::generate(&model, &node("10.1.0.2", "productpage"));
    assert!(plain.name_table.is_none(), "no DNS capture, no name table");

    let captured = weft_control::translate::generate(&model, &dns_node(false));
    let table = captured.name_table.as_ref().expect("a name table");
    let reviews = &table.table["reviews.default.svc.cluster.local"];
    assert_eq!((reviews.ips.as_slice(), reviews.registry.as_str()), (&["10.96.0.11".to_owned()][..], "Kubernetes"));
    assert_eq!((reviews.shortname.as_str(), reviews.namespace.as_str()), ("reviews", "default"));
    assert!(!table.table.contains_key("db.example.com"), "no address without auto-allocation: left to upstream DNS");
    assert!(!table.table.contains_key("range.example.com"), "a CIDR range is no address to answer with");
    assert!(!table.table.contains_key("any.example.com"));

    let auto = weft_control::translate::generate(&model, &dns_node(true));
    let table = auto.name_table.as_ref().expect("a name table");
    let db = &table.table["db.example.com"].ips;
    assert_eq!(db.len(), 1);
    assert!(db[0].starts_with("240.240."), "{db:?}");
    assert!(!table.table.contains_key("any.example.com"), "resolution NONE is never allocated");
    let again = weft_control::translate::generate(&model, &dns_node(true));
    assert_eq!(again.name_table, auto.name_table, "the same address every time");

    let json = auto.to_json();
    encode_all(&json);
    let chain_cluster = |l: &serde_json::Value, prefix: &str, len: u64| {
        l["filter_chains"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| {
                c["filter_chain_match"]["prefix_ranges"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["address_prefix"] == prefix && r["prefix_len"] == len))
            })
            .map(|c| c["filters"][0]["typed_config"]["cluster"].clone())
    };
    assert_eq!(chain_cluster(&json.listeners["0.0.0.0_3306"], &db[0], 32), Some(serde_json::json!("outbound|3306||db.example.com")));
    assert_eq!(
        chain_cluster(&json.listeners["0.0.0.0_6379"], "10.20.0.0", 16),
        Some(serde_json::json!("outbound|6379||range.example.com")),
        "the whole range, not its first address"
    );
    let without = plain.to_json();
    let plain_3306 = without.listeners.get("0.0.0.0_3306").cloned().unwrap_or_default();
    assert_eq!(chain_cluster(&plain_3306, &db[0], 32), None, "no allocated address without auto-allocation");
}

/// A ServiceEntry's `subjectAltNames` are identities its servers may present under mesh mTLS:
/// with `ISTIO_MUTUAL` (no SANs of its own) the cluster accepts them besides the endpoints'
/// service accounts. Its `workloadSelector` picks WorkloadEntries of its namespace.
#[test]
fn service_entry_subject_alt_names_and_workload_selector() {
    let text = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: vm, namespace: default}\nspec:\n  hosts: [vm.example.com]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  subjectAltNames: [\"spiffe://cluster.local/ns/vms/sa/legacy\"]\n  workloadSelector: {labels: {app: vm}}\n  ports: [{number: 8080, name: http, protocol: HTTP}]\n---\n\
                apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm-1, namespace: default}\nspec: {address: 10.9.0.1, labels: {app: vm, security.istio.io/tlsMode: istio}, serviceAccount: vm}\n---\n\
                apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: other, namespace: default}\nspec: {address: 10.9.0.2, labels: {app: other}}\n---\n\
                apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: vm, namespace: default}\nspec:\n  host: vm.example.com\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n";
    let loaded = load_text(text, "se.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let model = Model::build(&loaded.objects, Default::default());
    let meta = serde_json::json!({"NAMESPACE": "default", "LABELS": {"app": "client"}, "SDS": "true"});
    let node = ProxyNode::parse("sidecar~10.1.0.2~client-1.default~default.svc.cluster.local", &meta).expect("node");
    let g = generate(&model, &node);
    encode_all(&g);
    let c = &g.clusters["outbound|8080||vm.example.com"].to_string();
    assert!(c.contains("spiffe://cluster.local/ns/vms/sa/legacy"), "{c}");
    assert!(c.contains("spiffe://cluster.local/ns/default/sa/vm"), "{c}");
    let eps = g.endpoints["outbound|8080||vm.example.com"].to_string();
    assert!(eps.contains("10.9.0.1") && !eps.contains("10.9.0.2"), "only the selected workload: {eps}");
}

/// A VirtualService's `tcp` and `tls` routes split by weight (Envoy's weighted clusters), at
/// sidecars and gateways; a Gateway server host `ns/name` admits only that namespace's
/// VirtualServices.
#[test]
fn weighted_tcp_routes_and_namespaced_gateway_hosts() {
    let text = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db, namespace: default}\nspec:\n  hosts: [db.example.com]\n  addresses: [10.30.0.1]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  endpoints: [{address: 10.30.0.1}, {address: 10.30.0.2, labels: {v: two}}]\n  ports: [{number: 5432, name: tcp, protocol: TCP}]\n---\n\
                apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: db, namespace: default}\nspec:\n  host: db.example.com\n  subsets: [{name: two, labels: {v: two}}]\n---\n\
                apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: db, namespace: default}\nspec:\n  hosts: [db.example.com]\n  tcp:\n  - route:\n    - {destination: {host: db.example.com}, weight: 80}\n    - {destination: {host: db.example.com, subset: two}, weight: 20}\n---\n\
                apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [\"other/web.example.com\"]\n  - port: {number: 8081, name: http2, protocol: HTTP}\n    hosts: [\"./web.example.com\"]\n---\n\
                apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web, namespace: default}\nspec:\n  hosts: [web.example.com]\n  gateways: [gw]\n  http: [{route: [{destination: {host: db.example.com, port: {number: 5432}}}]}]\n";
    let loaded = load_text(text, "w.yaml");
    assert!(loaded.diagnostics.iter().all(|d| d.level != weft_api::Level::Error), "{:#?}", loaded.diagnostics);
    let model = Model::build(&loaded.objects, Default::default());
    let g = generate(&model, &node("10.1.0.2", "productpage"));
    encode_all(&g);
    let l = g.listeners["0.0.0.0_5432"].to_string();
    assert!(l.contains("weighted_clusters") && l.contains("\"weight\":80") && l.contains("outbound|5432|two|db.example.com"), "{l}");

    let gw = ProxyNode::parse(
        "router~10.1.0.9~gw-1.default~default.svc.cluster.local",
        &serde_json::json!({"LABELS": {"istio": "ingressgateway"}}),
    )
    .expect("router");
    let g = generate(&model, &gw);
    let routes = serde_json::to_string(&g.routes).unwrap_or_default();
    let hosts = |rc: &str| g.routes.get(rc).map(|r| r["virtual_hosts"].to_string()).unwrap_or_default();
    assert!(!hosts("http.8080").contains("web.example.com"), "a server for namespace other takes no VirtualService of default: {routes}");
    assert!(hosts("http.8081").contains("web.example.com"), "`.` admits the gateway's own namespace: {routes}");
}
