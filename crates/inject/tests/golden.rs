//! `kube-inject` over workloads of every kind, with three sets of values (native sidecars, the
//! proxy first with the app held until it is ready, CNI with the Envoy data plane): the output
//! is compared with the golden files in `fixtures/golden/` (`UPDATE_GOLDEN=1` rewrites them),
//! every document parses back as its Kubernetes type, injecting again changes nothing, and what
//! the user wrote survives.

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ReplicationController, Service};
use serde_json::Value;
use weft_inject::{inject_yaml, Values};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn values(file: Option<&str>) -> Values {
    file.map(|f| Values::from_yaml(&read(f)).expect("values")).unwrap_or_default()
}

fn docs(text: &str) -> Vec<Value> {
    let (docs, err) = weft_api::yaml::documents(text);
    assert!(err.is_none(), "{err:?}");
    docs.iter().map(|d| serde_json::to_value(d).expect("json")).collect()
}

/// The pod spec of every workload in the output, each parsed back as its k8s-openapi type.
fn pod_specs(doc: &Value) -> Vec<(String, PodSpec)> {
    let kind = doc["kind"].as_str().expect("kind").to_owned();
    let parse = |v: &Value| -> PodSpec {
        match kind.as_str() {
            "Deployment" => serde_json::from_value::<Deployment>(v.clone()).expect("Deployment").spec.and_then(|s| s.template.spec),
            "StatefulSet" => serde_json::from_value::<StatefulSet>(v.clone()).expect("StatefulSet").spec.and_then(|s| s.template.spec),
            "DaemonSet" => serde_json::from_value::<DaemonSet>(v.clone()).expect("DaemonSet").spec.and_then(|s| s.template.spec),
            "ReplicaSet" => {
                serde_json::from_value::<ReplicaSet>(v.clone()).expect("ReplicaSet").spec.and_then(|s| s.template).and_then(|t| t.spec)
            }
            "ReplicationController" => {
                serde_json::from_value::<ReplicationController>(v.clone()).expect("RC").spec.and_then(|s| s.template).and_then(|t| t.spec)
            }
            "Job" => serde_json::from_value::<Job>(v.clone()).expect("Job").spec.and_then(|s| s.template.spec),
            "CronJob" => serde_json::from_value::<CronJob>(v.clone())
                .expect("CronJob")
                .spec
                .and_then(|s| s.job_template.spec)
                .and_then(|s| s.template.spec),
            "Pod" => serde_json::from_value::<Pod>(v.clone()).expect("Pod").spec,
            other => panic!("unexpected kind {other}"),
        }
        .expect("a pod spec")
    };
    match kind.as_str() {
        "List" => doc["items"].as_array().expect("items").iter().flat_map(pod_specs).collect(),
        "Service" => {
            serde_json::from_value::<Service>(doc.clone()).expect("Service");
            Vec::new()
        }
        _ => vec![(format!("{kind} {}", doc["metadata"]["name"].as_str().unwrap_or_default()), parse(doc))],
    }
}

fn proxy(spec: &PodSpec) -> Option<&Container> {
    spec.containers.iter().chain(spec.init_containers.iter().flatten()).find(|c| c.name == "istio-proxy")
}

/// Where two JSON values first differ, as a JSON pointer with both sides.
fn first_difference(a: &Value, b: &Value, at: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .keys()
            .chain(y.keys())
            .find_map(|k| first_difference(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), format!("{at}/{k}"))),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| first_difference(p, q, format!("{at}/{i}")))
        }
        _ if a == b => None,
        _ => Some(format!("{at}: {a} instead of {b}")),
    }
}

fn check_golden(values_file: Option<&str>, golden: &str) -> (String, Vec<String>) {
    let input = read("workloads.yaml");
    let values = values(values_file);
    let (out, notices) = inject_yaml(&input, "workloads.yaml", &values).unwrap_or_else(|e| panic!("{e}"));
    let rendered = format!("# notices:\n{}\n---\n{out}", notices.iter().map(|n| format!("# {n}")).collect::<Vec<_>>().join("\n"));
    let path = fixture(&format!("golden/{golden}"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rendered).expect("write golden");
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(rendered == want, "{golden} differs from the golden file; diff it with UPDATE_GOLDEN=1 and git diff");

    // Injecting the output again gives the output.
    let (again, _) = inject_yaml(&out, "injected.yaml", &values).unwrap_or_else(|e| panic!("{e}"));
    if let Some(at) = first_difference(&Value::Array(docs(&again)), &Value::Array(docs(&out)), String::new()) {
        panic!("{golden}: a second injection changed {at}");
    }
    (out, notices)
}

#[test]
fn native_sidecars_by_default() {
    let (out, notices) = check_golden(None, "default.yaml");
    let docs = docs(&out);
    let specs: Vec<(String, PodSpec)> = docs.iter().flat_map(pod_specs).collect();
    let injected: Vec<&String> = specs.iter().filter(|(_, s)| proxy(s).is_some()).map(|(n, _)| n).collect();
    assert_eq!(
        injected,
        [
            "Deployment reviews-v1",
            "StatefulSet ledger",
            "DaemonSet node-agent",
            "Job migrate",
            "CronJob report",
            "Pod web-7c9d8-abcde",
            "ReplicaSet cache",
            "ReplicationController legacy",
            "Deployment istio-ingressgateway"
        ]
    );
    for n in [
        "Deployment ops/host-metrics: not injected: it has host networking",
        "Deployment shop/no-mesh: not injected: it has sidecar injection disabled",
        "sidecar.istio.io/userVolume]: not acted on",
    ] {
        assert!(notices.iter().any(|l| l.contains(n)), "no notice {n:?} in {notices:#?}");
    }

    let (_, reviews) = &specs[0];
    let inits: Vec<&str> = reviews.init_containers.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(inits, ["istio-init", "istio-proxy"], "capture first, then the proxy as a native sidecar");
    let p = proxy(reviews).expect("proxy");
    assert_eq!(p.restart_policy.as_deref(), Some("Always"));
    assert!(p.startup_probe.is_some(), "the app waits for the proxy's startup probe");
    let app = &reviews.containers[0];
    let ready = app.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("readiness");
    assert_eq!(
        (ready.path.as_deref(), &ready.port),
        (Some("/app-health/reviews/readyz"), &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(15020))
    );
    let env = |name: &str| p.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone()).unwrap_or_default();
    let probers: Value = serde_json::from_str(&env("ISTIO_KUBE_APP_PROBERS")).expect("probers");
    assert_eq!(probers["/app-health/reviews/readyz"]["httpGet"]["port"], 9080, "the named port is resolved for the agent");
    assert_eq!(env("ISTIO_PROMETHEUS_ANNOTATIONS"), r#"{"path":"/metrics","port":"9464","scrape":"true"}"#);
    assert_eq!(env("ISTIO_META_OWNER"), "kubernetes://apis/apps/v1/namespaces/shop/deployments/reviews-v1");

    // What the user wrote and Kubernetes' types do not know yet survives.
    let deployment = &docs[0]["spec"]["template"]["spec"];
    assert_eq!(deployment["futureSpecField"], "kept as written");
    assert_eq!(deployment["containers"][0]["futureContainerField"]["kept"], true);

    // A pod made by a ReplicaSet belongs to the Deployment, and its annotations shape its proxy.
    let (_, web) = specs.iter().find(|(n, _)| n.starts_with("Pod")).expect("pod");
    let p = proxy(web).expect("proxy");
    let env = |name: &str| p.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone()).unwrap_or_default();
    assert_eq!(env("ISTIO_META_WORKLOAD_NAME"), "web");
    assert!(p.args.iter().flatten().any(|a| a == "--data-plane=envoy"));
    let requests = p.resources.as_ref().and_then(|r| r.requests.as_ref()).expect("requests");
    assert_eq!(requests.get("cpu").map(|q| q.0.as_str()), Some("50m"));
    let init = web.init_containers.iter().flatten().find(|c| c.name == "istio-init").expect("init");
    let args = init.args.clone().unwrap_or_default().join(" ");
    assert!(args.contains("-x 10.0.0.1/32") && args.contains("-d 15090,15021,15020,8081"), "{args}");

    // The gateway template fills in the Deployment's own istio-proxy container.
    let (_, gw) = specs.iter().find(|(n, _)| n.ends_with("istio-ingressgateway")).expect("gateway");
    assert!(gw.init_containers.is_none(), "a gateway captures nothing");
    assert_eq!(gw.containers.len(), 1);
    let p = &gw.containers[0];
    assert_eq!(p.image.as_deref(), Some(&*format!("ghcr.io/weft-mesh/weft:{}", env!("CARGO_PKG_VERSION"))));
    assert_eq!(p.args.as_ref().map(|a| a[1].as_str()), Some("router"));
    assert!(p.env.iter().flatten().any(|e| e.name == "EXTRA"), "the user's env is kept");
    let ports: Vec<i32> = p.ports.iter().flatten().map(|p| p.container_port).collect();
    assert_eq!(ports, [15090, 8080, 8443]);
}

#[test]
fn without_native_sidecars_the_app_waits_for_the_proxy() {
    let (out, _) = check_golden(Some("non-native.yaml"), "non-native.yaml");
    let specs: Vec<(String, PodSpec)> = docs(&out).iter().flat_map(pod_specs).collect();
    let (_, reviews) = &specs[0];
    let names: Vec<&str> = reviews.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["istio-proxy", "reviews"], "the proxy starts first");
    let hook = reviews.containers[0]
        .lifecycle
        .as_ref()
        .and_then(|l| l.post_start.as_ref())
        .and_then(|h| h.exec.as_ref())
        .and_then(|e| e.command.clone());
    assert_eq!(hook.unwrap_or_default(), ["weft", "pod-proxy", "wait"]);
    assert_eq!(reviews.init_containers.iter().flatten().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["istio-init"]);
}

#[test]
fn with_cni_the_init_container_only_verifies_capture() {
    let (out, _) = check_golden(Some("cni.yaml"), "cni.yaml");
    let docs = docs(&out);
    let specs: Vec<(String, PodSpec)> = docs.iter().flat_map(pod_specs).collect();
    let (_, reviews) = &specs[0];
    let init = &reviews.init_containers.as_ref().expect("init")[0];
    assert_eq!(init.name, "istio-validation");
    assert!(init.args.iter().flatten().any(|a| a == "--verify"));
    let sc = init.security_context.as_ref().expect("security context");
    assert_eq!(
        (sc.run_as_user, sc.capabilities.as_ref().and_then(|c| c.add.clone())),
        (Some(1337), None),
        "no privileges without iptables to write"
    );
    assert_eq!(init.image.as_deref(), Some("registry.example.com/mesh/weft:1.2.3"));
    let annotations = &docs[0]["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["traffic.sidecar.istio.io/excludeInboundPorts"], "15020", "the CNI plugin reads capture from annotations");
    assert_eq!(reviews.image_pull_secrets.as_ref().map(|s| s[0].name.clone()), Some("mesh-pull".into()));
}

#[test]
fn a_bad_annotation_is_an_error_with_file_line_and_field_and_nothing_is_printed() {
    let input = read("workloads.yaml").replace("sidecar.istio.io/proxyCPU: 50m", "sidecar.istio.io/proxyCPU: fast");
    let e = inject_yaml(&input, "workloads.yaml", &Values::default()).unwrap_err();
    assert!(e.starts_with("workloads.yaml:"), "{e}");
    assert!(
        e.contains("Pod web-7c9d8-abcde: metadata.annotations[sidecar.istio.io/proxyCPU]: \"fast\" is not a Kubernetes quantity"),
        "{e}"
    );
    let line: usize = e.split(':').nth(1).and_then(|l| l.parse().ok()).expect("line");
    let text_line = input.lines().nth(line - 1).unwrap_or_default();
    assert!(text_line.contains("annotations") || text_line.contains("proxyCPU"), "line {line} is {text_line:?}");

    let e =
        inject_yaml("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {}\n", "d.yaml", &Values::default()).unwrap_err();
    assert_eq!(e, "d.yaml:4: Deployment x: spec.template: missing: the workload has no pod template");
    let e = inject_yaml("a: [1,\n", "bad.yaml", &Values::default()).unwrap_err();
    assert!(e.starts_with("bad.yaml:") && e.contains("YAML syntax error"), "{e}");
}

/// The value of the injected proxy container's environment variable `name`.
fn proxy_env(proxy: &Value, name: &str) -> String {
    proxy["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// One status port for everything: a pod that moves it gets its agent (PROXY_CONFIG), its
/// probes, Prometheus, the hooks and capture's exclusion on that port.
#[test]
fn a_moved_status_port_is_used_everywhere() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\n  annotations: {status.sidecar.istio.io/port: \"15030\"}\nspec:\n  containers:\n  - name: app\n    image: example.com/app:1\n    readinessProbe: {httpGet: {path: /ready, port: 8080}}\n";
    let values = Values { native_sidecars: false, ..Values::default() };
    let (out, _) = inject_yaml(pod, "pod.yaml", &values).unwrap_or_else(|e| panic!("{e}"));
    let doc = &docs(&out)[0];
    let proxy =
        doc["spec"]["containers"].as_array().expect("containers").iter().find(|c| c["name"] == "istio-proxy").expect("proxy").clone();
    let env = |name: &str| proxy_env(&proxy, name);
    assert_eq!(serde_json::from_str::<Value>(&env("PROXY_CONFIG")).expect("json")["statusPort"], 15030);
    assert_eq!(doc["spec"]["containers"][1]["readinessProbe"]["httpGet"]["port"], 15030);
    assert_eq!(doc["metadata"]["annotations"]["prometheus.io/port"], "15030");
    assert_eq!(
        proxy["lifecycle"]["postStart"]["exec"]["command"],
        serde_json::json!(["weft", "pod-proxy", "wait", "--status-port", "15030"])
    );
    let init = doc["spec"]["initContainers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(init.contains("-d 15090,15021,15030"), "{init}");
    let bad = pod.replace("15030", "0");
    assert!(inject_yaml(&bad, "pod.yaml", &values).unwrap_err().contains("is not a port"));
}

/// A revision's sidecars get their xDS from that revision's control plane, as their
/// certificates.
#[test]
fn a_revision_points_xds_at_its_own_control_plane() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: app}\nspec:\n  containers: [{name: app, image: example.com/app:1}]\n";
    let values = Values { revision: "canary".into(), ..Values::default() };
    let (out, _) = inject_yaml(pod, "pod.yaml", &values).unwrap_or_else(|e| panic!("{e}"));
    let doc = &docs(&out)[0];
    let proxy =
        doc["spec"]["initContainers"].as_array().expect("inits").iter().find(|c| c["name"] == "istio-proxy").expect("proxy").clone();
    let env = |name: &str| proxy_env(&proxy, name);
    assert_eq!(env("CA_ADDR"), "istiod-canary.istio-system.svc:15012");
    assert_eq!(
        serde_json::from_str::<Value>(&env("PROXY_CONFIG")).expect("json")["discoveryAddress"],
        "istiod-canary.istio-system.svc:15012"
    );
    assert_eq!(doc["metadata"]["annotations"]["istio.io/rev"], "canary");
}
