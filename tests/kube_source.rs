//! `weft control-plane --kubeconfig` against an API server stand-in answering with recorded
//! kube-apiserver responses: what the API server holds reaches a proxy over ADS — a Service's
//! ready endpoints from its EndpointSlice, subsets from the Pods' labels — and a watch event
//! (an endpoint turning ready) is pushed. An unenforced AuthorizationPolicy in the cluster
//! stops the control plane from starting, as one in a file does.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use weft_test_support::apiserver::{event, list, resource_list, ApiServer};
use weft_test_support::proxy::{temp_dir, ProxyKind, ProxyProcess};
use weft_test_support::{eventually, free_port};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn meta(name: &str, ns: &str) -> Value {
    json!({"name": name, "namespace": ns, "uid": format!("uid-{name}"), "resourceVersion": "10", "creationTimestamp": "2026-12-07T06:00:00Z"})
}

fn slice(ready_v2: bool, rv: &str) -> Value {
    let mut m = meta("reviews-abc12", "shop");
    m["resourceVersion"] = json!(rv);
    m["labels"] = json!({"kubernetes.io/service-name": "reviews"});
    json!({"metadata": m, "addressType": "IPv4", "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}], "endpoints": [
        {"addresses": ["10.1.0.5"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "namespace": "shop", "name": "reviews-v1"}},
        {"addresses": ["10.1.0.6"], "conditions": {"ready": ready_v2}, "targetRef": {"kind": "Pod", "namespace": "shop", "name": "reviews-v2"}}]})
}

fn pod(name: &str, ip: &str, version: &str) -> Value {
    let mut m = meta(name, "shop");
    m["labels"] = json!({"app": "reviews", "version": version});
    json!({"metadata": m, "spec": {"serviceAccountName": "reviews", "containers": [{"name": "reviews", "image": "example.com/reviews:1"}]},
           "status": {"phase": "Running", "podIP": ip}})
}

fn cluster(extra_security: bool) -> Arc<ApiServer> {
    let api = ApiServer::new();
    api.set("/api/v1", resource_list("v1", &[("services", "Service", true), ("pods", "Pod", true)]));
    api.set("/apis/discovery.k8s.io/v1", resource_list("discovery.k8s.io/v1", &[("endpointslices", "EndpointSlice", true)]));
    api.set("/apis/networking.istio.io/v1", resource_list("networking.istio.io/v1", &[("destinationrules", "DestinationRule", true)]));
    api.set("/apis/security.istio.io/v1", resource_list("security.istio.io/v1", &[("authorizationpolicies", "AuthorizationPolicy", true)]));
    api.set(
        "/api/v1/services",
        list("Service", "v1", "100", vec![json!({"metadata": meta("reviews", "shop"), "spec": {"clusterIP": "10.96.0.40", "selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080, "targetPort": 9080}]}})]),
    );
    api.set("/apis/discovery.k8s.io/v1/endpointslices", list("EndpointSlice", "discovery.k8s.io/v1", "100", vec![slice(false, "11")]));
    api.set("/api/v1/pods", list("Pod", "v1", "100", vec![pod("reviews-v1", "10.1.0.5", "v1"), pod("reviews-v2", "10.1.0.6", "v2")]));
    api.set(
        "/apis/networking.istio.io/v1/destinationrules",
        list("DestinationRule", "networking.istio.io/v1", "100", vec![json!({"metadata": meta("reviews", "shop"), "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}})]),
    );
    let policies = if extra_security { vec![json!({"metadata": meta("deny-all", "shop"), "spec": {}})] } else { vec![] };
    api.set("/apis/security.istio.io/v1/authorizationpolicies", list("AuthorizationPolicy", "security.istio.io/v1", "100", policies));
    api
}

struct ControlPlane {
    child: Child,
    xds: u16,
    log: std::path::PathBuf,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(api_addr: std::net::SocketAddr, tag: &str) -> ControlPlane {
    start_with(api_addr, tag, &[])
}

fn start_with(api_addr: std::net::SocketAddr, tag: &str, extra: &[&str]) -> ControlPlane {
    let dir = temp_dir(&format!("kube-source-{tag}"));
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, ApiServer::kubeconfig(api_addr)).expect("kubeconfig");
    let (xds, debug) = (free_port(), free_port());
    let log = dir.join("control-plane.log");
    let f = std::fs::File::create(&log).expect("log");
    let child = Command::new(WEFT)
        .arg("control-plane")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--xds-address", &format!("127.0.0.1:{xds}"), "--debug-address", &format!("127.0.0.1:{debug}"), "--debounce", "20ms"])
        .args(extra)
        .stdout(Stdio::from(f.try_clone().expect("log")))
        .stderr(Stdio::from(f))
        .stdin(Stdio::null())
        .spawn()
        .expect("control plane");
    ControlPlane { child, xds, log }
}

fn gateway_bootstrap(xds: u16, admin: u16) -> String {
    json!({
        "node": {"id": "router~127.0.0.9~gw-1.istio-system~istio-system.svc.cluster.local", "cluster": "gw.istio-system",
                 "metadata": {"NAMESPACE": "istio-system", "LABELS": {"istio": "ingressgateway"}}},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "dynamic_resources": {"ads_config": {"api_type": "GRPC", "transport_api_version": "V3", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]},
                              "cds_config": {"ads": {}, "resource_api_version": "V3"}, "lds_config": {"ads": {}, "resource_api_version": "V3"}},
        "static_resources": {"clusters": [{"name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions", "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": xds}}}}]}]}}]},
    })
    .to_string()
}

/// The addresses the proxy holds for `cluster`, from its admin `/clusters`.
async fn members(proxy: &ProxyProcess, cluster: &str) -> Vec<String> {
    let text = proxy.admin_get("/clusters").await.text();
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{cluster}::")))
        .filter_map(|r| r.split("::").next())
        .filter(|a| a.parse::<std::net::SocketAddr>().is_ok())
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[tokio::test]
async fn what_the_api_server_holds_reaches_a_proxy_and_follows_watch_events() {
    let api = cluster(false);
    let addr = api.serve().await;
    let cp = start(addr, "push");
    let admin = free_port();
    let proxy = {
        let mut last = None;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", cp.xds)).is_ok() {
                last = Some(ProxyProcess::start(ProxyKind::Weft, WEFT, &gateway_bootstrap(cp.xds, admin), admin).await);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        last.unwrap_or_else(|| panic!("the control plane never served:\n{}", std::fs::read_to_string(&cp.log).unwrap_or_default()))
            .expect("proxy")
    };
    let all = "outbound|9080||reviews.shop.svc.cluster.local";
    let v2 = "outbound|9080|v2|reviews.shop.svc.cluster.local";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while members(&proxy, all).await != ["10.1.0.5:9080"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Service's ready endpoint never reached the proxy:\n{}\ncontrol plane:\n{}",
            proxy.admin_get("/clusters").await.text(),
            std::fs::read_to_string(&cp.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(members(&proxy, v2).await.is_empty(), "v2's pod is not ready yet");

    // The EndpointSlice changes: v2's pod is ready, and its subset has it (by the Pod's labels).
    for _ in 0..100 {
        if api.watchers("/apis/discovery.k8s.io/v1/endpointslices") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.push("/apis/discovery.k8s.io/v1/endpointslices", event("MODIFIED", slice(true, "12")));
    eventually(Duration::from_secs(10), "v2 ready, in the service and its subset", || {
        let p = &proxy;
        async move { (members(p, all).await == ["10.1.0.5:9080", "10.1.0.6:9080"] && members(p, v2).await == ["10.1.0.6:9080"]).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn an_unenforced_policy_in_the_cluster_stops_the_control_plane() {
    let api = cluster(true);
    let addr = api.serve().await;
    let mut cp = start(addr, "unenforced");
    let status = eventually(Duration::from_secs(20), "the control plane to refuse to start", || {
        let s = cp.child.try_wait().ok().flatten();
        async move { s }
    })
    .await;
    assert!(!status.success());
    let log = std::fs::read_to_string(&cp.log).unwrap_or_default();
    assert!(log.contains("AuthorizationPolicy") && log.contains("not enforced") && log.contains("api-server"), "{log}");
}

/// The CA takes a pod's projected service-account token, checked by the API server
/// (TokenReview, audience istio-ca): the certificate names the token's service account; a
/// token for another audience, or one the API server does not know, gets nothing.
#[tokio::test]
async fn the_ca_takes_service_account_tokens_checked_by_token_review() {
    let api = cluster(false);
    api.tokens
        .lock()
        .expect("tokens")
        .insert("pod-token-of-reviews-0123456789".into(), ("system:serviceaccount:shop:reviews".into(), vec!["istio-ca".into()]));
    api.tokens.lock().expect("tokens").insert(
        "api-token-of-reviews-0123456789".into(),
        ("system:serviceaccount:shop:reviews".into(), vec!["https://kubernetes.default.svc".into()]),
    );
    let addr = api.serve().await;
    let dir = temp_dir("kube-ca");
    let secure = free_port();
    let cp = start_with(
        addr,
        "ca",
        &["--ca-dir", &dir.join("cacerts").display().to_string(), "--secure-address", &format!("127.0.0.1:{secure}")],
    );
    let root = dir.join("cacerts").join("root-cert.pem");
    eventually(Duration::from_secs(20), "the CA", || {
        let up = root.exists() && std::net::TcpStream::connect(("127.0.0.1", secure)).is_ok();
        async move { up.then_some(()) }
    })
    .await;
    let agent = |token: &str, tag: &str| {
        let token_file = dir.join(format!("{tag}.token"));
        std::fs::write(&token_file, token).expect("token");
        let log = dir.join(format!("{tag}.log"));
        let f = std::fs::File::create(&log).expect("log");
        let child = Command::new(WEFT)
            .args(["agent", "--namespace", "shop", "--service-account", "reviews", "--ca-address", &format!("127.0.0.1:{secure}")])
            .arg("--ca-root-cert")
            .arg(&root)
            .arg("--ca-token-file")
            .arg(&token_file)
            .arg("--sds-socket")
            .arg(dir.join(format!("{tag}.sock")))
            .stdout(Stdio::from(f.try_clone().expect("log")))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("agent");
        (child, log)
    };
    let cp_log = || std::fs::read_to_string(&cp.log).unwrap_or_default();
    let (mut good, _) = agent("pod-token-of-reviews-0123456789", "good");
    eventually(Duration::from_secs(10), "a certificate for the token's service account", || {
        let issued = cp_log().contains("certificate issued") && cp_log().contains("identity=spiffe://cluster.local/ns/shop/sa/reviews");
        async move { issued.then_some(()) }
    })
    .await;
    let _ = good.kill();
    let _ = good.wait();
    for (token, tag, why) in [
        ("api-token-of-reviews-0123456789", "audience", "is invalid for the target audiences"),
        ("forged-token-0123456789abcdef", "forged", "cryptographic primitive"),
    ] {
        let (mut child, _) = agent(token, tag);
        eventually(Duration::from_secs(10), &format!("the {tag} token refused"), || {
            let refused = cp_log().contains("CSR refused") && cp_log().contains(why);
            async move { refused.then_some(()) }
        })
        .await;
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(cp_log().matches("certificate issued").count(), 1, "only the good token got a certificate:\n{}", cp_log());
    assert!(!cp_log().contains("pod-token-of-reviews"), "a token never reaches the log");
}

/// The injection webhook reads the pod's namespace from the API server: a namespace labelled
/// `weft.io/data-plane: envoy` gets the Envoy data plane.
#[tokio::test]
async fn the_webhook_takes_the_data_plane_from_the_namespace_label() {
    // Namespaces watched by the source (no call back into the API server during admission),
    // and, where this client may not list them, asked for one by one.
    for watched in [true, false] {
        namespace_label_chooses_envoy(watched).await;
    }
}

async fn namespace_label_chooses_envoy(watched: bool) {
    let api = cluster(false);
    let shop = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "resourceVersion": "3", "labels": {"istio-injection": "enabled", "weft.io/data-plane": "envoy"}}});
    if watched {
        api.set(
            "/api/v1",
            resource_list("v1", &[("services", "Service", true), ("pods", "Pod", true), ("namespaces", "Namespace", false)]),
        );
        api.set("/api/v1/namespaces", list("Namespace", "v1", "100", vec![shop]));
    } else {
        api.set("/api/v1/namespaces/shop", shop);
    }
    let addr = api.serve().await;
    let dir = temp_dir(&format!("kube-webhook-{watched}"));
    let (secure, webhook) = (free_port(), free_port());
    let cp = start_with(
        addr,
        &format!("webhook-{watched}"),
        &[
            "--ca-dir",
            &dir.join("cacerts").display().to_string(),
            "--secure-address",
            &format!("127.0.0.1:{secure}"),
            "--webhook-address",
            &format!("127.0.0.1:{webhook}"),
        ],
    );
    let root = dir.join("cacerts").join("root-cert.pem");
    eventually(Duration::from_secs(20), "the webhook port", || {
        let up = root.exists() && std::net::TcpStream::connect(("127.0.0.1", webhook)).is_ok();
        async move { up.then_some(()) }
    })
    .await;
    let review = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../kube/tests/fixtures/pod-review.json")).expect("review");
    let body = dir.join("review.json");
    std::fs::write(&body, review).expect("body");
    // curl runs off this runtime's one thread: the API server stand-in answers the control
    // plane's namespace lookup on it meanwhile.
    let (root_c, body_c) = (root.clone(), body.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&root_c)
            .args([
                "--resolve",
                &format!("istiod.istio-system.svc:{webhook}:127.0.0.1"),
                "-H",
                "Content-Type: application/json",
                "--data-binary",
            ])
            .arg(format!("@{}", body_c.display()))
            .arg(format!("https://istiod.istio-system.svc:{webhook}/inject"))
            .output()
            .expect("curl")
    })
    .await
    .expect("curl task");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&cp.log).unwrap_or_default()
        )
    });
    use base64::Engine as _;
    let patch = base64::engine::general_purpose::STANDARD.decode(answer["response"]["patch"].as_str().expect("a patch")).expect("base64");
    assert!(
        String::from_utf8_lossy(&patch).contains("--data-plane=envoy"),
        "the namespace label chose Envoy (watched: {watched}): {}",
        String::from_utf8_lossy(&patch)
    );
}

/// `weft analyze --kubeconfig` reads the cluster: its resources are analyzed as files are, and
/// the pitfalls are named with what to do — a namespace with pods and no injection label, pods
/// that started before the label, an app as UID 1337, an injection webhook without a caBundle.
#[tokio::test]
async fn analyze_names_the_clusters_pitfalls() {
    let api = cluster(false);
    let ns = |name: &str, labels: Value| json!({"metadata": {"name": name, "labels": labels}, "status": {"phase": "Active"}});
    api.set(
        "/api/v1/namespaces",
        list(
            "Namespace",
            "v1",
            "100",
            vec![ns("shop", json!({"istio-injection": "enabled"})), ns("legacy", json!({})), ns("kube-system", json!({}))],
        ),
    );
    let mut uid_pod = pod("batch-1", "10.1.0.7", "v1");
    uid_pod["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": 1337});
    let mut legacy_pod = pod("old-app", "10.2.0.5", "v1");
    legacy_pod["metadata"]["namespace"] = json!("legacy");
    api.set("/api/v1/pods", list("Pod", "v1", "100", vec![pod("reviews-v1", "10.1.0.5", "v1"), uid_pod, legacy_pod]));
    api.set(
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
        list(
            "MutatingWebhookConfiguration",
            "admissionregistration.k8s.io/v1",
            "100",
            vec![json!({"metadata": {"name": "istio-sidecar-injector"}, "webhooks": [
            {"name": "namespace.sidecar-injector.istio.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
             "clientConfig": {"service": {"name": "istiod", "namespace": "istio-system", "path": "/inject", "port": 443}}}]})],
        ),
    );
    // STRICT mesh-wide while pods without a sidecar run; REGISTRY_ONLY with nothing outside
    // declared; the only node tainted against the control plane.
    api.set(
        "/apis/security.istio.io/v1",
        resource_list(
            "security.istio.io/v1",
            &[("authorizationpolicies", "AuthorizationPolicy", true), ("peerauthentications", "PeerAuthentication", true)],
        ),
    );
    api.set(
        "/apis/security.istio.io/v1/peerauthentications",
        list(
            "PeerAuthentication",
            "security.istio.io/v1",
            "100",
            vec![json!({"metadata": meta("default", "istio-system"), "spec": {"mtls": {"mode": "STRICT"}}})],
        ),
    );
    api.set(
        "/api/v1/namespaces/istio-system/configmaps/istio",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("istio", "istio-system"), "data": {"mesh": "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n"}}),
    );
    api.set(
        "/api/v1/nodes",
        list("Node", "v1", "100", vec![json!({"metadata": {"name": "node-1", "resourceVersion": "3"}, "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}})]),
    );
    api.set(
        "/apis/apps/v1/namespaces/istio-system/deployments",
        list(
            "Deployment",
            "apps/v1",
            "100",
            vec![json!({"metadata": meta("istiod", "istio-system"), "spec": {"selector": {"matchLabels": {"app": "istiod"}},
            "template": {"metadata": {"labels": {"app": "istiod"}}, "spec": {"containers": [{"name": "discovery", "image": "weft"}],
                         "tolerations": [{"key": "other", "operator": "Exists", "effect": "NoSchedule"}]}}}})],
        ),
    );
    let addr = api.serve().await;
    let dir = temp_dir("kube-analyze");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, ApiServer::kubeconfig(addr)).expect("kubeconfig");
    // The stand-in answers on this runtime's thread: analyze runs off it.
    let out = tokio::task::spawn_blocking(move || {
        Command::new(WEFT).arg("analyze").arg("--kubeconfig").arg(&kubeconfig).output().expect("analyze")
    })
    .await
    .expect("task");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(79), "{text}");
    for want in [
        "[IST0102] api-server: Namespace legacy: the namespace is not enabled for sidecar injection",
        "kubectl label namespace legacy istio-injection=enabled",
        "[IST0103] api-server: Pod shop/reviews-v1: the pod has no sidecar though its namespace is labelled",
        "[IST0144] api-server: Pod shop/batch-1: container reviews runs as UID 1337",
        "[WFT0004] api-server: MutatingWebhookConfiguration istio-sidecar-injector/namespace.sidecar-injector.istio.io: the webhook has no caBundle",
        "[WFT0005] api-server: PeerAuthentication istio-system/default: requires mTLS for the whole mesh, but these pods have no sidecar",
        "legacy/old-app",
        "mode: PERMISSIVE",
        "[WFT0006] api-server: ConfigMap istio-system/istio: outboundTrafficPolicy is REGISTRY_ONLY and no ServiceEntry declares a host outside the mesh",
        "kind: ServiceEntry",
        "[WFT0007] api-server: Deployment istio-system/istiod: no node will take its pods",
        "node-1 (dedicated=gpu:NoSchedule)",
        "value: \"gpu\"",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("kube-system"), "system namespaces are not reported:\n{text}");
}
