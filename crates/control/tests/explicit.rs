//! Explicit mode (Istio's `INTERCEPTION_MODE: NONE`): a proxy whose traffic is not captured
//! gets no virtual listeners; its inbound ports come from its `Sidecar` ingress listeners and
//! bind real addresses with the chains `virtualInbound` would have; with an HTTP proxy port
//! (`HTTP_PROXY_PORT` metadata or MeshConfig `proxyHttpPort`) it gets a listener that routes
//! `HTTP_PROXY` requests by `host:port` through the `http_proxy` route configuration. Captured
//! proxies are unchanged.

use serde_json::{json, Value};
use weft_api::load_text;
use weft_api::mesh::MeshConfig;
use weft_control::model::Model;
use weft_control::node::ProxyNode;
use weft_control::translate::GeneratedJson as Generated;

/// Two workloads on one machine, each with a mesh address (the WorkloadEntry, where its
/// sidecar listens) and an application address; reviews has two versions and a
/// VirtualService, the namespace is STRICT.
const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.11
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.12
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: default}
spec: {address: 127.77.0.2, labels: {app: client, weft.dev/workload: client, security.istio.io/tlsMode: istio}, serviceAccount: client}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 127.77.0.4, labels: {app: reviews, version: v1, weft.dev/workload: reviews-v1, security.istio.io/tlsMode: istio}, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: default}
spec: {address: 127.77.0.6, labels: {app: reviews, version: v2, weft.dev/workload: reviews-v2, security.istio.io/tlsMode: istio}, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews-v1, namespace: default}
spec:
  workloadSelector: {labels: {weft.dev/workload: reviews-v1}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 127.77.0.4
    captureMode: NONE
    defaultEndpoint: 127.77.0.5:9080
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
"#;

fn model_with(extra: &str, mesh: MeshConfig) -> Model {
    let loaded = load_text(&format!("{MESH}{extra}"), "mesh.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    Model::build(&loaded.objects, mesh)
}

fn model() -> Model {
    model_with("", MeshConfig::default())
}

/// A sidecar as `weft up --explicit` bootstraps it: Istio's metadata, with a workload identity.
fn node(ip: &str, name: &str, meta: Value) -> ProxyNode {
    let mut m = json!({"NAMESPACE": "default", "SDS": "true"});
    if let (Some(m), Some(extra)) = (m.as_object_mut(), meta.as_object()) {
        m.extend(extra.clone());
    }
    ProxyNode::parse(&format!("sidecar~{ip}~{name}.default~default.svc.cluster.local"), &m).expect("node")
}

fn explicit(ip: &str, name: &str) -> ProxyNode {
    node(ip, name, json!({"INTERCEPTION_MODE": "NONE", "HTTP_PROXY_PORT": "15080", "LABELS": labels(name)}))
}

fn labels(name: &str) -> Value {
    match name {
        "client" => json!({"app": "client", "weft.dev/workload": "client"}),
        other => json!({"app": "reviews", "version": other.trim_start_matches("reviews-"), "weft.dev/workload": other}),
    }
}

/// Every resource must encode through Envoy's descriptors, as the ADS server will encode it.
/// The resources `node` gets, as a proxy decodes them.
fn generate(model: &Model, node: &ProxyNode) -> Generated {
    weft_control::translate::generate(model, node).to_json()
}

/// Every resource decodes and is sent under its own name.
fn encode_all(g: &Generated) {
    let faults = g.faults();
    assert!(faults.is_empty(), "{faults:#?}");
}

fn chain_names(l: &Value) -> Vec<String> {
    l["filter_chains"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str().map(str::to_string)).collect()
}

#[test]
fn an_uncaptured_server_binds_its_ingress_port_with_the_chains_virtual_inbound_would_have() {
    let model = model();
    let g = generate(&model, &explicit("127.77.0.4", "reviews-v1"));
    encode_all(&g);
    for virtual_listener in ["virtualInbound", "virtualOutbound", "0.0.0.0_9080", "0.0.0.0_80"] {
        assert!(!g.listeners.contains_key(virtual_listener), "{virtual_listener} in {:?}", g.listeners.keys());
    }
    assert!(!g.routes.contains_key("9080"), "no per-port routes without per-port listeners: {:?}", g.routes.keys());

    let l = &g.listeners["127.77.0.4_9080"];
    assert_eq!(l["address"]["socket_address"], json!({"address": "127.77.0.4", "port_value": 9080}));
    assert_eq!(l["traffic_direction"], "INBOUND");
    assert!(l.get("bind_to_port").is_none() && l.get("use_original_dst").is_none(), "a real listener: {l:#}");
    assert_eq!(l["listener_filters"].as_array().map(Vec::len), Some(1), "TLS inspector only, no original_dst: {l:#}");

    // The same chains, byte for byte, as a captured proxy of the same workload gets in
    // virtualInbound for this port: STRICT mTLS, the XFCC the app reads, the same stats. (Its
    // labels leave out the one the Sidecar selects, so its ports come from the Service.)
    let captured = node("127.77.0.4", "reviews-v1", json!({"LABELS": {"app": "reviews", "version": "v1"}}));
    let gc = generate(&model, &captured);
    let virtual_chains: Vec<Value> = gc.listeners["virtualInbound"]["filter_chains"]
        .as_array()
        .expect("chains")
        .iter()
        .filter(|c| c["filter_chain_match"]["destination_port"] == 9080)
        .cloned()
        .collect();
    let renamed = serde_json::to_string(&virtual_chains).expect("json").replace("0.0.0.0_9080", "127.77.0.4_9080");
    assert_eq!(serde_json::to_string(&l["filter_chains"]).expect("json"), renamed);
    assert_eq!(chain_names(l), ["127.77.0.4_9080-mtls"]);
    let chain = &l["filter_chains"][0];
    assert_eq!(chain["filter_chain_match"]["transport_protocol"], "tls");
    let tls = &chain["transport_socket"]["typed_config"];
    assert_eq!(tls["require_client_certificate"], true, "{chain:#}");
    let manager = &chain["filters"][0]["typed_config"];
    assert_eq!(manager["forward_client_cert_details"], "SANITIZE_SET");
    assert_eq!(manager["stat_prefix"], "inbound_127.77.0.4_9080");

    // The application is where defaultEndpoint says, not on 127.0.0.1.
    let inbound = &g.clusters["inbound|9080||"];
    assert_eq!(
        inbound["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"],
        json!({"address": "127.77.0.5", "port_value": 9080})
    );
}

#[test]
fn the_http_proxy_listener_routes_every_service_by_host_and_port_with_its_virtual_service() {
    let model = model();
    let g = generate(&model, &explicit("127.77.0.2", "client"));
    encode_all(&g);
    let l = &g.listeners["127.77.0.2_15080"];
    assert_eq!(l["address"]["socket_address"], json!({"address": "127.77.0.2", "port_value": 15080}));
    assert_eq!(l["traffic_direction"], "OUTBOUND");
    let manager = &l["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(manager["rds"]["route_config_name"], "http_proxy");
    assert_eq!(manager["http_protocol_options"]["allow_absolute_url"], true);
    assert_eq!(manager["stat_prefix"], "outbound_127.77.0.2_15080");
    // No Sidecar ingress for the client: it serves nothing, and nothing binds 127.0.0.1.
    assert!(!g.clusters.contains_key("inbound|9080||"));
    assert_eq!(g.listeners.keys().collect::<Vec<_>>(), ["127.77.0.2_15080"]);

    let vhosts = g.routes["http_proxy"]["virtual_hosts"].as_array().expect("vhosts").clone();
    let reviews = vhosts.iter().find(|v| v["name"] == "reviews.default.svc.cluster.local:9080").expect("reviews");
    let domains: Vec<&str> = reviews["domains"].as_array().expect("domains").iter().filter_map(Value::as_str).collect();
    for d in
        ["reviews:9080", "reviews.default:9080", "reviews.default.svc:9080", "reviews.default.svc.cluster.local:9080", "10.96.0.11:9080"]
    {
        assert!(domains.contains(&d), "{d} missing from {domains:?}");
    }
    assert!(!domains.contains(&"reviews"), "a port other than 80 is named in the request: {domains:?}");
    // Port 80 also answers to the bare names.
    let web = vhosts.iter().find(|v| v["name"] == "web.default.svc.cluster.local:80").expect("web");
    let web_domains: Vec<&str> = web["domains"].as_array().expect("domains").iter().filter_map(Value::as_str).collect();
    assert!(web_domains.contains(&"web") && web_domains.contains(&"web:80"), "{web_domains:?}");
    // The VirtualService's routes, as on the port's own route configuration.
    let r = &reviews["routes"];
    assert_eq!(r[0]["match"]["headers"][0]["string_match"]["exact"], "jason");
    assert_eq!(r[0]["route"]["cluster"], "outbound|9080|v2|reviews.default.svc.cluster.local");
    assert_eq!(r[1]["route"]["cluster"], "outbound|9080|v1|reviews.default.svc.cluster.local");
    assert_eq!(vhosts.last().map(|v| v["name"].clone()), Some(json!("allow_any")));

    // Auto mTLS to the sidecars behind reviews: their endpoints are the mesh addresses.
    let v1 = &g.clusters["outbound|9080|v1|reviews.default.svc.cluster.local"];
    assert!(v1["transport_socket_matches"].is_array(), "{v1:#}");
    let eds = &g.endpoints["outbound|9080|v1|reviews.default.svc.cluster.local"];
    assert_eq!(eds["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"], "127.77.0.4");
}

#[test]
fn registry_only_blocks_unknown_hosts_at_the_http_proxy_with_502() {
    let mesh = weft_api::mesh::load_mesh("outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n", "mesh.yaml").expect("mesh");
    let model = model_with("", mesh);
    let g = generate(&model, &explicit("127.77.0.2", "client"));
    let last = g.routes["http_proxy"]["virtual_hosts"].as_array().and_then(|v| v.last().cloned()).expect("vhost");
    assert_eq!(last["name"], "block_all");
    assert_eq!(last["domains"], json!(["*"]));
    assert_eq!(last["routes"][0]["direct_response"]["status"], 502);
}

#[test]
fn permissive_and_disable_ports_bind_plaintext_chains_too() {
    let extra = r#"
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {weft.dev/workload: reviews-v1}}
  mtls: {mode: PERMISSIVE}
"#;
    let g = generate(&model_with(extra, MeshConfig::default()), &explicit("127.77.0.4", "reviews-v1"));
    encode_all(&g);
    let l = &g.listeners["127.77.0.4_9080"];
    assert_eq!(chain_names(l), ["127.77.0.4_9080-mtls", "127.77.0.4_9080-tls", "127.77.0.4_9080"]);
    assert_eq!(l["filter_chains"][2]["filter_chain_match"]["transport_protocol"], "raw_buffer");

    let g = generate(&model_with(&extra.replace("PERMISSIVE", "DISABLE"), MeshConfig::default()), &explicit("127.77.0.4", "reviews-v1"));
    let l = &g.listeners["127.77.0.4_9080"];
    assert_eq!(chain_names(l), ["127.77.0.4_9080"]);
    assert!(l.get("listener_filters").is_none(), "plaintext needs no inspector: {l:#}");
}

#[test]
fn ingress_listeners_follow_istio_for_bind_capture_mode_and_default_endpoint() {
    // No bind and a loopback proxy address: the wildcard (Istio binds a global unicast proxy
    // address only); 0.0.0.0 as defaultEndpoint is the proxy's own address; captureMode
    // IPTABLES on an uncaptured proxy is a chain of a virtual listener it does not have.
    let extra = r#"
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews-v2, namespace: default}
spec:
  workloadSelector: {labels: {weft.dev/workload: reviews-v2}}
  ingress:
  - port: {number: 9080, protocol: HTTP}
    defaultEndpoint: 0.0.0.0:8080
  - port: {number: 9090, protocol: TCP}
    captureMode: IPTABLES
"#;
    let model = model_with(extra, MeshConfig::default());
    let g = generate(&model, &explicit("127.77.0.6", "reviews-v2"));
    encode_all(&g);
    assert!(g.listeners.contains_key("0.0.0.0_9080"), "{:?}", g.listeners.keys());
    assert!(!g.listeners.keys().any(|k| k.ends_with("_9090")), "{:?}", g.listeners.keys());
    let c = &g.clusters["inbound|9080||"];
    assert_eq!(
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"],
        json!({"address": "127.77.0.6", "port_value": 8080})
    );
    // The same Sidecar on a captured proxy: captureMode DEFAULT follows the proxy, so both
    // ports are chains of virtualInbound, each delivered where its ingress listener says.
    let captured = node("127.77.0.6", "reviews-v2", json!({"LABELS": labels("reviews-v2")}));
    let g = generate(&model, &captured);
    encode_all(&g);
    let vi = &g.listeners["virtualInbound"];
    let ports: std::collections::BTreeSet<u64> =
        vi["filter_chains"].as_array().into_iter().flatten().filter_map(|c| c["filter_chain_match"]["destination_port"].as_u64()).collect();
    assert_eq!(ports.into_iter().collect::<Vec<_>>(), [9080, 9090, 15006]);
    let endpoint = |c: &Value| c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"].clone();
    assert_eq!(endpoint(&g.clusters["inbound|9080||"]), json!({"address": "127.77.0.6", "port_value": 8080}));
    assert_eq!(endpoint(&g.clusters["inbound|9090||"]), json!({"address": "127.0.0.1", "port_value": 9090}));
}

#[test]
fn an_uncaptured_proxy_without_ingress_or_proxy_port_gets_no_listener_and_captured_ones_are_unchanged() {
    let model = model();
    // Istio: without Sidecar ingress, NONE mode builds no inbound listener (the application
    // holds the Service's ports), and without a proxy port there is no outbound listener.
    let bare = node("127.77.0.6", "reviews-v2", json!({"INTERCEPTION_MODE": "NONE", "LABELS": labels("reviews-v2")}));
    let g = generate(&model, &bare);
    assert!(g.listeners.is_empty(), "{:?}", g.listeners.keys());
    assert!(g.clusters.contains_key("outbound|9080|v1|reviews.default.svc.cluster.local"), "clusters are still there");

    // MeshConfig proxyHttpPort gives a captured proxy an HTTP proxy listener on 127.0.0.1, as
    // Istio binds it, next to everything it had.
    let mesh = weft_api::mesh::load_mesh("proxyHttpPort: 15007\n", "mesh.yaml").expect("mesh");
    let with_port = model_with("", mesh);
    let captured = node("10.1.0.9", "client", json!({"LABELS": labels("client")}));
    let before = generate(&model, &captured);
    let after = generate(&with_port, &captured);
    assert!(after.listeners.contains_key("127.0.0.1_15007"), "{:?}", after.listeners.keys());
    assert!(after.routes.contains_key("http_proxy"));
    for (name, l) in &before.listeners {
        assert_eq!(after.listeners.get(name), Some(l), "{name} changed");
    }
    assert!(!before.listeners.contains_key("127.0.0.1_15007") && !before.routes.contains_key("http_proxy"));
}
