//! `manifest generate` for each of Istio's profiles, compared with golden files
//! (`UPDATE_GOLDEN=1` rewrites them); every object parses back as its k8s-openapi type; the
//! injector values the control plane will read are valid; the IstioOperator's settings land
//! where they should.

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use weft_kube::install::{manifest, operator};

fn generate(file: Option<&str>, sets: &[&str]) -> Vec<Value> {
    let sets: Vec<String> = sets.iter().map(|s| (*s).to_owned()).collect();
    let plan = operator::plan_from(file, &sets).unwrap_or_else(|e| panic!("{e}"));
    manifest::generate(&plan).unwrap_or_else(|e| panic!("{e}")).into_iter().map(|m| m.object).collect()
}

/// Parses `o` as the k8s-openapi type its kind names.
fn typed(o: &Value) {
    let kind = o["kind"].as_str().unwrap_or_default();
    let v = o.clone();
    let ok = match kind {
        "Namespace" => serde_json::from_value::<Namespace>(v).is_ok(),
        "CustomResourceDefinition" => serde_json::from_value::<CustomResourceDefinition>(v).is_ok(),
        "ServiceAccount" => serde_json::from_value::<ServiceAccount>(v).is_ok(),
        "ClusterRole" => serde_json::from_value::<ClusterRole>(v).is_ok(),
        "ClusterRoleBinding" => serde_json::from_value::<ClusterRoleBinding>(v).is_ok(),
        "Role" => serde_json::from_value::<Role>(v).is_ok(),
        "RoleBinding" => serde_json::from_value::<RoleBinding>(v).is_ok(),
        "ConfigMap" => serde_json::from_value::<ConfigMap>(v).is_ok(),
        "Deployment" => serde_json::from_value::<Deployment>(v).is_ok(),
        "DaemonSet" => serde_json::from_value::<k8s_openapi::api::apps::v1::DaemonSet>(v).is_ok(),
        "Service" => serde_json::from_value::<Service>(v).is_ok(),
        "MutatingWebhookConfiguration" => serde_json::from_value::<MutatingWebhookConfiguration>(v).is_ok(),
        "ValidatingWebhookConfiguration" => serde_json::from_value::<ValidatingWebhookConfiguration>(v).is_ok(),
        other => panic!("unexpected kind {other}"),
    };
    assert!(ok, "{kind} does not parse as its Kubernetes type: {o}");
}

#[test]
fn each_profile_matches_its_golden_file_and_parses_back() {
    // `cni`: the default profile with the CNI node agent.
    for profile in ["default", "demo", "minimal", "empty", "remote", "cni"] {
        let objects = match profile {
            "cni" => generate(None, &["components.cni.enabled=true", "tag=1.0.0"]),
            p => generate(None, &[&format!("profile={p}"), "tag=1.0.0"]),
        };
        for o in &objects {
            typed(o);
        }
        let yaml = objects.iter().map(|o| serde_yaml::to_string(o).expect("yaml")).collect::<Vec<_>>().join("---\n");
        let path = format!("{}/tests/fixtures/manifests/{profile}.yaml", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(std::path::Path::new(&path).parent().expect("dir")).expect("dir");
            std::fs::write(&path, &yaml).expect("write golden");
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e} (UPDATE_GOLDEN=1 writes it)"));
        assert!(yaml == want, "profile {profile} differs from {path}; UPDATE_GOLDEN=1 and git diff");
    }
    let kinds = |objects: &[Value]| {
        objects
            .iter()
            .map(|o| format!("{} {}", o["kind"].as_str().unwrap_or_default(), o["metadata"]["name"].as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
    };
    let demo = kinds(&generate(None, &["profile=demo"]));
    assert!(demo.contains(&"Deployment istio-egressgateway".to_owned()) && demo.contains(&"Deployment istiod".to_owned()));
    let minimal = kinds(&generate(None, &["profile=minimal"]));
    assert!(!minimal.iter().any(|k| k.starts_with("Deployment") && k.contains("gateway")), "{minimal:?}");
    assert!(generate(None, &["profile=empty"]).is_empty());
    let remote = kinds(&generate(None, &["profile=remote"]));
    assert!(remote.iter().all(|k| k.starts_with("CustomResourceDefinition") || k.starts_with("Namespace")), "{remote:?}");
    // With the CNI: the node agent, and injection that only checks capture.
    let cni = generate(None, &["components.cni.enabled=true"]);
    let ds = cni.iter().find(|o| o["kind"] == "DaemonSet").expect("the CNI DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["args"][0], "cni-install");
    assert_eq!(pod["tolerations"][0]["operator"], "Exists", "on every node, tainted or not");
    let paths: Vec<&str> = pod["volumes"].as_array().expect("volumes").iter().filter_map(|v| v["hostPath"]["path"].as_str()).collect();
    assert_eq!(paths, ["/opt/cni/bin", "/etc/cni/net.d"]);
    let values =
        cni.iter().find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "istio-sidecar-injector").expect("injector values");
    assert!(
        values["data"]["values"].as_str().is_some_and(|v| v.contains("\"cni\":true") || v.contains("cni: true")),
        "{}",
        values["data"]["values"]
    );
    assert!(!kinds(&generate(None, &[])).iter().any(|k| k.starts_with("DaemonSet")), "no CNI unless asked");
}

#[test]
fn the_istio_operator_settings_land_where_they_belong() {
    let iop = r#"apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: mesh}
spec:
  hub: registry.example.com/mesh
  tag: 2.0.0
  meshConfig:
    accessLogFile: /dev/stdout
    defaultConfig: {holdApplicationUntilProxyStarts: true}
  components:
    pilot:
      k8s: {replicaCount: 1, env: [{name: EXTRA, value: "1"}]}
    ingressGateways:
    - name: public-gw
      label: {istio: public}
      k8s: {service: {type: NodePort}}
  values:
    pilot: {env: {PILOT_TRACE_SAMPLING: "10"}}
    global:
      proxy: {resources: {requests: {cpu: 50m, memory: 64Mi}}, logLevel: debug}
    gateways:
      public-gw: {injectionTemplate: gateway}
    weft: {dataPlane: envoy}
"#;
    let objects = generate(Some(iop), &["values.sidecarInjectorWebhook.enableNamespacesByDefault=true"]);
    let find = |kind: &str, name: &str| {
        objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name).unwrap_or_else(|| panic!("no {kind} {name}")).clone()
    };
    let istiod = find("Deployment", "istiod");
    let c = &istiod["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.example.com/mesh/weft:2.0.0");
    let env: Vec<&str> = c["env"].as_array().expect("env").iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(env, ["POD_NAME", "POD_NAMESPACE", "EXTRA", "PILOT_TRACE_SAMPLING"]);
    let mesh = find("ConfigMap", "istio");
    assert!(mesh["data"]["mesh"].as_str().unwrap_or_default().contains("accessLogFile: /dev/stdout"));

    // The injector's values are what the webhook reads, and they read.
    let values_text = find("ConfigMap", "istio-sidecar-injector")["data"]["values"].as_str().expect("values").to_owned();
    let values = weft_inject::Values::from_yaml(&values_text).unwrap_or_else(|e| panic!("{e}\n{values_text}"));
    assert_eq!(values.data_plane, weft_inject::DataPlane::Envoy);
    assert_eq!(values.proxy.requests.get("cpu").map(String::as_str), Some("50m"));
    assert_eq!(values.proxy.log_level, "debug");
    assert!(values.default_config.contains_key("holdApplicationUntilProxyStarts"));

    let gw = find("Deployment", "public-gw");
    assert_eq!(gw["spec"]["template"]["metadata"]["labels"]["istio"], "public");
    assert_eq!(gw["spec"]["template"]["metadata"]["annotations"]["inject.istio.io/templates"], "gateway");
    assert_eq!(find("Service", "public-gw")["spec"]["type"], "NodePort");

    let hook = find("MutatingWebhookConfiguration", "istio-sidecar-injector");
    let sel = hook["webhooks"][0]["namespaceSelector"]["matchExpressions"].to_string();
    assert!(
        sel.contains("disabled") && sel.contains("kube-system") && !sel.contains("istio-system"),
        "every namespace but the opted out and system ones (the gateways' is injected): {sel}"
    );

    // Service ports with Istio's names and numbers.
    let svc = find("Service", "istiod");
    let ports: Vec<(String, i64, i64)> = svc["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (p["name"].as_str().unwrap_or_default().to_owned(), p["port"].as_i64().unwrap_or(0), p["targetPort"].as_i64().unwrap_or(0))
        })
        .collect();
    // Only what answers off the pod: xDS and the CA over TLS, the webhooks (plaintext xDS and
    // the debug API are bound to the pod's localhost).
    assert_eq!(ports, [("https-dns".to_owned(), 15012, 15012), ("https-webhook".to_owned(), 443, 15017)]);
}

/// Every `values` path weft accepts changes what is installed: none is accepted and dropped.
#[test]
fn every_accepted_value_changes_the_install() {
    // The demo profile has both gateways, so their values have something to change.
    let baseline = generate(None, &["profile=demo"]);
    let sample = |path: &str| -> &str {
        match path {
            "weft.dataPlane" => "envoy",
            "weft.nativeSidecars" | "global.proxy.holdApplicationUntilProxyStarts" | "sidecarInjectorWebhook.rewriteAppHTTPProbe" => {
                "false"
            }
            "sidecarInjectorWebhook.enableNamespacesByDefault" | "pilot.cni.enabled" => "true",
            "global.proxy.statusPort" => "15021",
            "global.imagePullSecrets" => "[pull]",
            "global.proxy.resources" => "{requests: {cpu: 5m}}",
            "pilot.env" => "{A: b}",
            _ => "changed-value",
        }
    };
    for path in operator::VALUES {
        let set = format!("values.{path}={}", sample(path));
        let sets = vec!["profile=demo".to_owned(), set.clone()];
        match operator::plan_from(None, &sets).and_then(|p| manifest::generate(&p)) {
            // The CNI component is refused outright, which is also not a silent drop.
            Err(e) => assert!(path == &"pilot.cni.enabled" && e.contains("components.cni"), "{set}: {e}"),
            Ok(m) => {
                let objects: Vec<Value> = m.into_iter().map(|m| m.object).collect();
                assert!(objects != baseline, "--set {set} changed nothing that is installed");
            }
        }
    }
}

/// A `k8s` setting that does not fit its Kubernetes type, or a Service field weft does not set,
/// is an error naming it: not an install that quietly lacks it.
#[test]
fn k8s_settings_that_do_not_fit_are_refused_by_name() {
    let iop = |k8s: &str| {
        format!("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  components:\n    pilot:\n      k8s: {k8s}\n")
    };
    let fail = |text: String| operator::plan_from(Some(&text), &[]).and_then(|p| manifest::generate(&p)).unwrap_err();
    let e = fail(iop("{env: [{name: A, value: 1}]}"));
    assert!(e.starts_with("components.pilot.k8s.env"), "{e}");
    let e = fail(iop("{resources: {requests: 3}}"));
    assert!(e.starts_with("components.pilot.k8s.resources"), "{e}");
    let gw = "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  components:\n    ingressGateways:\n    - name: gw\n      k8s: {service: {type: NodePort, externalTrafficPolicy: Local}}\n";
    let e = fail(gw.to_owned());
    assert!(e.contains("k8s.service.externalTrafficPolicy: not supported"), "{e}");
}
