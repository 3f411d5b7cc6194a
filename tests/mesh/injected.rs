//! Pods as `weft kube-inject` makes them, run as a kubelet would run their containers: the
//! init container's command writes capture in the pod's namespace, and the sidecar container's
//! command (`weft pod-proxy`), with the pod's environment and volumes, fetches its config over
//! the xDS proxy it carries to the control plane's TLS port and its identity from the CA. One
//! pod asks for the Envoy data plane, the other gets weft's: they talk mTLS, the app waits for
//! its proxy (`weft pod-proxy wait`), and the kubelet's rewritten probes reach the app through
//! the status port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use weft_test_support::mesh::{Mesh, Pod, HUB_IP};

use super::{app, start_control_plane_with_ca, weft, write, CA_PORT};

const REVIEWS_VIP: &str = "10.96.0.31";

fn manifest(envoy: &Path) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: client, namespace: default}}
spec:
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      serviceAccountName: client
      containers: [{{name: client, image: example.com/client:1}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: reviews-v1, namespace: default}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  template:
    metadata:
      labels: {{app: reviews, version: v1}}
      annotations:
        weft.io/data-plane: envoy
        proxy.istio.io/config: '{{"binaryPath": "{}"}}'
    spec:
      serviceAccountName: reviews
      containers:
      - name: reviews
        image: example.com/reviews:1
        ports: [{{name: http, containerPort: 9080}}]
        readinessProbe:
          httpGet: {{path: /status/200, port: http}}
"#,
        envoy.display()
    )
}

fn resources(client: &Pod, reviews: &Pod) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  clusterIP: {REVIEWS_VIP}\n  selector: {{app: reviews}}\n  ports: [{{name: http, port: 9080}}]\n\
---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: reviews, namespace: default}}\nspec: {{address: {}, labels: {{app: reviews, security.istio.io/tlsMode: istio}}, serviceAccount: reviews}}\n\
---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: client, namespace: default}}\nspec: {{address: {}, labels: {{app: client, security.istio.io/tlsMode: istio}}, serviceAccount: client}}\n",
        reviews.ip, client.ip
    )
}

/// The pod template's spec in an injected Deployment.
fn pod_spec<'a>(docs: &'a [Value], name: &str) -> &'a Value {
    let d = docs.iter().find(|d| d["metadata"]["name"] == name).unwrap_or_else(|| panic!("no {name} in the injected output"));
    &d["spec"]["template"]
}

/// What the kubelet would give the container: `env` with its field references filled in.
fn container_env(c: &Value, pod: &Pod, pod_name: &str, sa: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default().to_owned();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_owned()
        } else if let Some(path) = e.pointer("/valueFrom/fieldRef/fieldPath").and_then(Value::as_str) {
            match path {
                "metadata.name" => pod_name.into(),
                "metadata.namespace" => "default".into(),
                "status.podIP" => pod.ip.clone(),
                "status.hostIP" => HUB_IP.into(),
                "spec.serviceAccountName" => sa.into(),
                "spec.nodeName" => "node-1".into(),
                other => panic!("the injector asked for field {other}, which this kubelet stand-in does not know"),
            }
        } else if e.pointer("/valueFrom/resourceFieldRef").is_some() {
            "2".into()
        } else {
            panic!("env {name}: {e}")
        };
        out.push((name, value));
    }
    out
}

/// Lays out the pod's volumes the sidecar reads: its token, the mesh's root, its labels.
fn volumes(root: &Path, token: &str, ca_root: &Path, labels: &Value) {
    for d in ["var/run/secrets/tokens", "var/run/secrets/istio", "etc/istio/pod"] {
        std::fs::create_dir_all(root.join(d)).expect("volume dir");
    }
    std::fs::write(root.join("var/run/secrets/tokens/istio-token"), token).expect("token");
    std::fs::copy(ca_root, root.join("var/run/secrets/istio/root-cert.pem")).expect("root cert");
    let lines: String = labels.as_object().into_iter().flatten().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(root.join("etc/istio/pod/labels"), lines).expect("labels");
}

/// A GET from network namespace `ns`: the status and body.
fn http(ns: &str, url: &str) -> (u16, String) {
    let out = weft_test_support::netns::sh("ip", &["netns", "exec", ns, "curl", "-s", "--max-time", "5", "-w", "\n%{http_code}", url])
        .unwrap_or_default();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn injected_pods_run_with_weft_and_envoy_sidecars_talking_mtls() {
    let mut mesh = Mesh::new("inj").unwrap_or_else(|e| panic!("{e:#}"));
    let dir = mesh.dir.clone();
    let (config, tokens, cacerts) = (dir.join("config"), dir.join("tokens"), dir.join("cacerts"));
    for d in [&config, &tokens, &cacerts] {
        std::fs::create_dir_all(d).expect("dir");
    }
    let client = mesh.pod("client").expect("pod");
    let reviews = mesh.pod("reviews").expect("pod");
    write(&config, "mesh.yaml", &resources(&client, &reviews));
    for sa in ["client", "reviews"] {
        let token = format!("{sa}-token-{}", std::process::id());
        std::fs::write(
            tokens.join(format!("{sa}.json")),
            serde_json::json!({"token": token, "namespace": "default", "serviceAccount": sa}).to_string(),
        )
        .expect("token");
    }
    let s = |p: &Path| p.display().to_string();
    let ca = format!("{HUB_IP}:{CA_PORT}");
    let ca_root = start_control_plane_with_ca(&mut mesh, &config, &tokens, &cacerts, &[]).expect("control plane");

    // kube-inject, with the addresses of this mesh in its values and mesh config.
    let envoy = weft_test_support::envoy_path().unwrap_or_else(|e| panic!("{e:#}"));
    std::fs::write(dir.join("in.yaml"), manifest(&envoy)).expect("manifest");
    std::fs::write(dir.join("values.yaml"), format!("caAddress: {ca}\n")).expect("values");
    std::fs::write(dir.join("meshconfig.yaml"), format!("defaultConfig:\n  discoveryAddress: {ca}\n")).expect("mesh");
    let out = std::process::Command::new(weft())
        .args([
            "kube-inject",
            "-f",
            &s(&dir.join("in.yaml")),
            "--valuesFile",
            &s(&dir.join("values.yaml")),
            "--meshConfigFile",
            &s(&dir.join("meshconfig.yaml")),
        ])
        .output()
        .expect("kube-inject");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (docs, err) = weft_api::yaml::documents(&String::from_utf8_lossy(&out.stdout));
    assert!(err.is_none(), "{err:?}");
    let docs: Vec<Value> = docs.iter().map(|d| serde_json::to_value(d).expect("json")).collect();

    let mut labels_of = Vec::new();
    for (pod, deployment, sa) in [(&client, "client", "client"), (&reviews, "reviews-v1", "reviews")] {
        let template = pod_spec(&docs, deployment);
        let spec = &template["spec"];
        let inits = spec["initContainers"].as_array().expect("init containers");
        // The init container: capture, exactly as injected.
        let init = &inits[0];
        assert_eq!(init["name"], "istio-init");
        let args: Vec<&str> = init["args"].as_array().expect("args").iter().map(|a| a.as_str().unwrap_or_default()).collect();
        mesh.run(&pod.ns, &weft(), &args).unwrap_or_else(|e| panic!("{deployment}: the init container failed: {e:#}"));
        // The sidecar, a native sidecar started before the app.
        let proxy = &inits[1];
        assert_eq!(proxy["name"], "istio-proxy");
        let pod_name = format!("{deployment}-5d4f8-x7k2p");
        let root = dir.join(format!("{deployment}-root"));
        volumes(&root, &format!("{sa}-token-{}", std::process::id()), &ca_root, &template["metadata"]["labels"]);
        let mut args: Vec<String> = proxy["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().unwrap_or_default().replace("$(POD_NAMESPACE)", "default"))
            .collect();
        args.extend(["--root".into(), s(&root)]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let env = container_env(proxy, pod, &pod_name, sa);
        mesh.spawn_env(&format!("{deployment}-sidecar"), Some(&pod.ns), true, &weft(), &argv, &env).expect("sidecar");
        labels_of.push(template["metadata"]["labels"].clone());
    }
    assert_eq!(labels_of[1]["security.istio.io/tlsMode"], "istio");

    // The app containers start once `weft pod-proxy wait` says their sidecar is ready.
    for (pod, deployment) in [(&client, "client"), (&reviews, "reviews-v1")] {
        let waited = mesh.run(&pod.ns, &weft(), &["pod-proxy", "wait", "--timeoutSeconds", "30"]);
        assert!(
            waited.is_ok(),
            "{deployment}: the sidecar never got ready: {waited:?}\n{}\ncontrol plane:\n{}",
            mesh.log(&format!("{deployment}-sidecar")),
            mesh.log("control-plane")
        );
    }
    mesh.spawn("reviews-app", Some(&reviews.ns), false, &app(), &["serve", "0.0.0.0:9080", "reviews"]).expect("app");

    // Weft sidecar → Envoy sidecar, mTLS between the two service accounts' identities.
    let id = |sa: &str| format!("spiffe://cluster.local/ns/default/sa/{sa}");
    let mut last = String::new();
    let got = Mesh::wait_for(Duration::from_secs(20), "client → reviews through both sidecars", || {
        let out = mesh.run(&client.ns, &app(), &["get", &format!("http://{REVIEWS_VIP}:9080/peer"), "1"]).unwrap_or_default();
        last = out.clone();
        out.contains("\"200 reviews peer=").then_some(out)
    })
    .unwrap_or_else(|e| {
        let listeners = mesh.run(&reviews.ns, Path::new("curl"), &["-s", "127.0.0.1:15000/listeners"]).unwrap_or_default();
        let sockets = mesh.run(&reviews.ns, Path::new("ss"), &["-ltnp"]).unwrap_or_default();
        let stats = mesh.run(&reviews.ns, Path::new("curl"), &["-s", "127.0.0.1:15000/stats"]).unwrap_or_default();
        let stats: String = stats
            .lines()
            .filter(|l| (l.contains("ssl") || l.contains("downstream_cx_total") || l.contains("cx_connect_fail")) && !l.ends_with(": 0"))
            .map(|l| format!("{l}\n"))
            .collect();
        let cstats = mesh.run(&client.ns, Path::new("curl"), &["-s", "127.0.0.1:15000/stats"]).unwrap_or_default();
        let cstats: String = cstats.lines().filter(|l| l.contains("reviews") && !l.ends_with(": 0")).map(|l| format!("{l}\n")).collect();
        let listeners = format!(
            "{listeners}\nsockets:\n{sockets}\nreviews stats:\n{stats}\nclient stats:\n{cstats}\napp log:\n{}",
            mesh.log("reviews-app")
        );
        panic!(
            "{e}; last: {last}\n{}\nreviews listeners:\n{listeners}\nclient sidecar:\n{}\nreviews sidecar:\n{}\ncontrol plane:\n{}",
            mesh.proxy_status(&weft()),
            mesh.log("client-sidecar"),
            mesh.log("reviews-v1-sidecar"),
            mesh.log("control-plane")
        )
    });
    assert!(
        got.contains(&format!("By={}", id("reviews"))) && got.contains(&format!("URI={}", id("client"))),
        "mTLS between the workloads: {got}"
    );

    // The kubelet reaches the status port directly: readiness, and the app's own probe.
    let hub = mesh.hub.name.clone();
    let status = |path: &str| http(&hub, &format!("http://{}:15020{path}", reviews.ip));
    assert_eq!(status("/healthz/ready").0, 200);
    assert_eq!(status("/app-health/reviews/readyz").0, 200, "the rewritten readiness probe reaches the app");
    assert_eq!(status("/app-health/reviews/livez").0, 404, "no liveness probe was written");
    let (code, metrics) = status("/stats/prometheus");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("envoy_server_live") || metrics.contains("envoy_cluster_"),
        "the proxy's metrics: {}",
        &metrics[..metrics.len().min(300)]
    );
    // The weft pod's status port serves Istio's metrics merged in, as Prometheus scrapes a pod:
    // the client's sidecar counted its calls to the Envoy pod, naming both workloads.
    let (code, merged) = http(&hub, &format!("http://{}:15020/stats/prometheus", client.ip));
    assert_eq!(code, 200);
    let edge = merged.lines().find(|l| {
        l.starts_with("istio_requests_total{reporter=\"source\",source_workload=\"client\"")
            && l.contains("destination_workload=\"reviews\"")
            && l.contains("destination_service=\"reviews.default.svc.cluster.local\"")
    });
    assert!(
        edge.is_some(),
        "Istio's metrics on the weft pod's 15020: {}",
        merged.lines().filter(|l| l.starts_with("istio_")).take(5).collect::<Vec<_>>().join("\n")
    );
    // Ending the proxy is for the pod itself: from elsewhere it is refused.
    let quit = weft_test_support::netns::sh(
        "ip",
        &[
            "netns",
            "exec",
            &hub,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            &format!("http://{}:15020/quitquitquit", reviews.ip),
        ],
    )
    .unwrap_or_default();
    assert_eq!(quit.trim(), "403", "quitquitquit from outside the pod");
    assert_eq!(status("/healthz/ready").0, 200, "the proxy is still there");
    mesh.kill("reviews-app");
    let down = Mesh::wait_for(Duration::from_secs(10), "the app's probe to fail once it is gone", || {
        let (code, _) = status("/app-health/reviews/readyz");
        (code == 503).then_some(code)
    });
    assert!(down.is_ok(), "{down:?}");
    let _: PathBuf = dir;
}
