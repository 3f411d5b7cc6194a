//! What to install: Istio's `IstioOperator` (`install.istio.io/v1alpha1`), a profile and
//! `--set` paths over it, as istioctl takes them. Every key is known or refused by name — an
//! install option that is silently dropped is an install that is not what the user asked for.

use serde::Deserialize;
use serde_json::{Map, Value};

/// Istio's profiles, with their meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// The control plane and an ingress gateway.
    Default,
    /// `default` plus an egress gateway, and generous tracing (Istio's demo).
    Demo,
    /// The control plane only.
    Minimal,
    /// Nothing but what is asked for by components.
    Empty,
    /// The CRDs and namespace of a cluster whose control plane runs elsewhere (no control
    /// plane here).
    Remote,
}

impl Profile {
    pub fn parse(s: &str) -> Result<Profile, String> {
        match s {
            "default" => Ok(Profile::Default),
            "demo" => Ok(Profile::Demo),
            "minimal" => Ok(Profile::Minimal),
            "empty" => Ok(Profile::Empty),
            "remote" => Ok(Profile::Remote),
            other => Err(format!("profile {other:?} is not one of default, demo, minimal, empty, remote")),
        }
    }
}

/// One component's settings (`components.<name>`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Component {
    pub enabled: Option<bool>,
    pub namespace: Option<String>,
    pub k8s: Option<K8s>,
}

/// A gateway's settings (`components.ingressGateways[]`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayComponent {
    pub name: String,
    pub enabled: Option<bool>,
    pub namespace: Option<String>,
    #[serde(default)]
    pub label: std::collections::BTreeMap<String, String>,
    pub k8s: Option<K8s>,
}

/// The Kubernetes settings weft applies to a component's Deployment and Service.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8s {
    pub replica_count: Option<i32>,
    pub resources: Option<Value>,
    pub node_selector: Option<std::collections::BTreeMap<String, String>>,
    pub tolerations: Option<Vec<Value>>,
    pub env: Option<Vec<Value>>,
    pub pod_annotations: Option<std::collections::BTreeMap<String, String>>,
    pub service: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Components {
    pub base: Option<Component>,
    pub pilot: Option<Component>,
    pub cni: Option<Component>,
    pub ingress_gateways: Option<Vec<GatewayComponent>>,
    pub egress_gateways: Option<Vec<GatewayComponent>>,
}

/// `spec` of an IstioOperator.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    pub profile: Option<String>,
    pub hub: Option<String>,
    pub tag: Option<Value>,
    pub revision: Option<String>,
    pub namespace: Option<String>,
    pub mesh_config: Option<Map<String, Value>>,
    pub components: Option<Components>,
    /// Istio's helm values; the ones weft acts on (see [`VALUES`]), others refused by name.
    pub values: Option<Map<String, Value>>,
}

/// The `values` paths weft acts on.
pub const VALUES: &[&str] = &[
    "global.hub",
    "global.tag",
    "global.istioNamespace",
    "global.imagePullPolicy",
    "global.imagePullSecrets",
    "global.proxy.logLevel",
    "global.proxy.componentLogLevel",
    "global.proxy.resources",
    "global.proxy.holdApplicationUntilProxyStarts",
    "global.proxy.includeIPRanges",
    "global.proxy.excludeIPRanges",
    "global.proxy.includeInboundPorts",
    "global.proxy.excludeInboundPorts",
    "global.proxy.excludeOutboundPorts",
    "global.proxy.statusPort",
    "global.meshID",
    "global.network",
    "global.multiCluster.clusterName",
    "pilot.env",
    "pilot.cni.enabled",
    "sidecarInjectorWebhook.rewriteAppHTTPProbe",
    "sidecarInjectorWebhook.enableNamespacesByDefault",
    "gateways.istio-ingressgateway.injectionTemplate",
    "gateways.istio-egressgateway.injectionTemplate",
    // Any gateway's, by name: `gateways.<name>.injectionTemplate`.
    "weft.dataPlane",
    "weft.nativeSidecars",
];

/// What to install, all choices made.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub profile: Profile,
    pub hub: String,
    pub tag: String,
    pub revision: String,
    pub namespace: String,
    pub mesh_config: Map<String, Value>,
    pub base: bool,
    pub pilot: Option<K8s>,
    pub cni: bool,
    pub ingress_gateways: Vec<GatewayComponent>,
    pub egress_gateways: Vec<GatewayComponent>,
    pub values: Map<String, Value>,
}

/// Reads an IstioOperator document (YAML).
pub fn parse(text: &str) -> Result<Spec, String> {
    let v: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    from_value(v)
}

fn from_value(v: Value) -> Result<Spec, String> {
    match (v.get("apiVersion").and_then(Value::as_str), v.get("kind").and_then(Value::as_str)) {
        (Some("install.istio.io/v1alpha1"), Some("IstioOperator")) => {}
        (api, kind) => return Err(format!("expected apiVersion install.istio.io/v1alpha1, kind IstioOperator; found {api:?} {kind:?}")),
    }
    if let Some(meta) = v.get("metadata").and_then(Value::as_object) {
        if let Some(k) = meta.keys().find(|k| !matches!(k.as_str(), "name" | "namespace" | "labels" | "annotations")) {
            return Err(format!("metadata.{k}: not read by weft install"));
        }
    }
    if let Some(k) = v.as_object().and_then(|o| o.keys().find(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "spec"))) {
        return Err(format!("{k}: unknown field of an IstioOperator"));
    }
    let spec = v.get("spec").cloned().unwrap_or(Value::Object(Map::new()));
    spec_from(spec)
}

fn spec_from(spec: Value) -> Result<Spec, String> {
    let de = serde_path_to_error::deserialize::<_, Spec>(spec);
    de.map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        let msg = msg.split(", expected").next().unwrap_or(&msg).to_owned();
        if path == "." {
            format!("spec: {msg}")
        } else {
            format!("spec.{path}: {msg}")
        }
    })
}

/// Sets `path` (`profile`, `values.global.hub`, `meshConfig.accessLogFile`, `components.cni.enabled`)
/// to `value` in an IstioOperator spec, as istioctl's `--set` does: the value is read as YAML
/// (`true`, `3`, `[a, b]`), with `spec.` optional at the front.
pub fn set(spec: &mut Value, assignment: &str) -> Result<(), String> {
    let (path, raw) = assignment.split_once('=').ok_or_else(|| format!("--set {assignment:?}: expected PATH=VALUE"))?;
    let path = path.trim().trim_start_matches("spec.");
    let value: Value = if raw.is_empty() {
        Value::String(String::new())
    } else {
        serde_yaml::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
    };
    // istioctl takes `--set profile=demo`, `--set hub=…` at the top; values and meshConfig nest.
    let keys: Vec<&str> = path.split('.').collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(format!("--set {assignment:?}: an empty path segment"));
    }
    let mut cur = spec;
    for (i, key) in keys.iter().enumerate() {
        let obj = cur.as_object_mut().ok_or_else(|| format!("--set {assignment:?}: {} is not an object", keys[..i].join(".")))?;
        if i + 1 == keys.len() {
            obj.insert((*key).to_owned(), value);
            return Ok(());
        }
        cur = obj.entry((*key).to_owned()).or_insert_with(|| Value::Object(Map::new()));
    }
    Ok(())
}

fn paths(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                // A known path may hold an object (resources, env): stop there.
                let gateway_template = p.starts_with("gateways.") && p.ends_with(".injectionTemplate") && p.matches('.').count() == 2;
                if VALUES.contains(&p.as_str()) || gateway_template {
                    out.push(p);
                } else {
                    paths(&p, child, out);
                }
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

fn value_at<'a>(values: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut cur = values.get(path.split('.').next()?)?;
    for k in path.split('.').skip(1) {
        cur = cur.get(k)?;
    }
    Some(cur)
}

/// Resolves the profile and every default; unknown values are refused by name.
pub fn plan(spec: &Spec) -> Result<Plan, String> {
    let profile = Profile::parse(spec.profile.as_deref().unwrap_or("default"))?;
    let values = spec.values.clone().unwrap_or_default();
    let mut found = Vec::new();
    if !values.is_empty() {
        paths("", &Value::Object(values.clone()), &mut found);
    }
    let known =
        |p: &str| VALUES.contains(&p) || (p.starts_with("gateways.") && p.ends_with(".injectionTemplate") && p.matches('.').count() == 2);
    if let Some(unknown) = found.iter().find(|p| !known(p)) {
        return Err(format!("spec.values.{unknown}: not supported by weft install (it acts on: {})", VALUES.join(", ")));
    }
    let hub = spec
        .hub
        .clone()
        .or_else(|| value_at(&values, "global.hub").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "ghcr.io/weft-mesh".into());
    let tag = match spec.tag.clone().or_else(|| value_at(&values, "global.tag").cloned()) {
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(format!("spec.tag: {other} is not a tag")),
        None => env!("CARGO_PKG_VERSION").to_owned(),
    };
    let namespace = spec
        .namespace
        .clone()
        .or_else(|| value_at(&values, "global.istioNamespace").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "istio-system".into());
    let components = spec.components.clone().unwrap_or_default();
    let on = |c: &Option<Component>, default: bool| c.as_ref().and_then(|c| c.enabled).unwrap_or(default);
    let (base_default, pilot_default, ingress_default, egress_default) = match profile {
        Profile::Default => (true, true, true, false),
        Profile::Demo => (true, true, true, true),
        Profile::Minimal => (true, true, false, false),
        Profile::Empty => (false, false, false, false),
        Profile::Remote => (true, false, false, false),
    };
    let gateways = |given: &Option<Vec<GatewayComponent>>, name: &str, default: bool| -> Vec<GatewayComponent> {
        match given {
            Some(list) => list.iter().filter(|g| g.enabled.unwrap_or(true)).cloned().collect(),
            None if default => vec![GatewayComponent { name: name.into(), enabled: Some(true), ..GatewayComponent::default() }],
            None => Vec::new(),
        }
    };
    let cni_value = value_at(&values, "pilot.cni.enabled").and_then(Value::as_bool).unwrap_or(false);
    for (name, c) in [("base", &components.base), ("pilot", &components.pilot), ("cni", &components.cni)] {
        if c.as_ref().and_then(|c| c.namespace.as_ref()).is_some() {
            return Err(format!("spec.components.{name}.namespace: not supported by weft install; set spec.namespace (or values.global.istioNamespace) for the whole control plane"));
        }
    }
    let ingress_gateways = gateways(&components.ingress_gateways, "istio-ingressgateway", ingress_default);
    let egress_gateways = gateways(&components.egress_gateways, "istio-egressgateway", egress_default);
    // A gateway's values for a gateway that is not installed would change nothing: say so.
    if let Some(Value::Object(named)) = values.get("gateways") {
        for name in named.keys() {
            if !ingress_gateways.iter().chain(&egress_gateways).any(|g| &g.name == name) {
                return Err(format!("spec.values.gateways.{name}: no gateway named {name} is installed by this profile and components"));
            }
        }
    }
    Ok(Plan {
        profile,
        hub,
        tag,
        revision: spec.revision.clone().unwrap_or_default(),
        namespace,
        mesh_config: spec.mesh_config.clone().unwrap_or_default(),
        base: on(&components.base, base_default),
        pilot: on(&components.pilot, pilot_default).then(|| components.pilot.as_ref().and_then(|p| p.k8s.clone()).unwrap_or_default()),
        cni: on(&components.cni, false) || cni_value,
        ingress_gateways,
        egress_gateways,
        values,
    })
}

/// The plan for a file (or none) and `--set` assignments laid over it.
pub fn plan_from(file: Option<&str>, sets: &[String]) -> Result<Plan, String> {
    let mut spec_value = match file {
        Some(text) => {
            let v: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
            from_value(v.clone())?;
            v.get("spec").cloned().unwrap_or(Value::Object(Map::new()))
        }
        None => Value::Object(Map::new()),
    };
    for s in sets {
        set(&mut spec_value, s)?;
    }
    plan(&spec_from(spec_value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_and_sets_resolve_as_istioctl_does() {
        let p = plan_from(None, &[]).expect("default");
        assert_eq!(
            (p.profile, p.base, p.pilot.is_some(), p.ingress_gateways.len(), p.egress_gateways.len()),
            (Profile::Default, true, true, 1, 0)
        );
        let p = plan_from(None, &["profile=demo".into()]).expect("demo");
        assert_eq!(p.egress_gateways[0].name, "istio-egressgateway");
        let p = plan_from(None, &["profile=minimal".into(), "values.global.hub=r.example/x".into(), "tag=1.2".into()]).expect("minimal");
        assert!(p.ingress_gateways.is_empty());
        assert_eq!((p.hub.as_str(), p.tag.as_str()), ("r.example/x", "1.2"));
        let p = plan_from(None, &["meshConfig.accessLogFile=/dev/stdout".into(), "components.cni.enabled=true".into()]).expect("mesh");
        assert_eq!(p.mesh_config["accessLogFile"], "/dev/stdout");
        assert!(p.cni);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = plan_from(None, &["values.global.proxy.privileged=true".into()]).unwrap_err();
        assert!(e.starts_with("spec.values.global.proxy.privileged: not supported"), "{e}");
        let e = plan_from(None, &["components.pilott.enabled=true".into()]).unwrap_err();
        assert!(e.contains("spec.components") && e.contains("pilott"), "{e}");
        let e = plan_from(Some("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  components:\n    ingressGateways:\n    - name: gw\n      k8s: {hpaSpec: {}}\n"), &[]).unwrap_err();
        assert!(e.contains("spec.components.ingressGateways[0].k8s") && e.contains("hpaSpec"), "{e}");
        let e = plan_from(None, &["values.gateways.istio-egressgateway.injectionTemplate=gateway".into()]).unwrap_err();
        assert!(e.contains("no gateway named istio-egressgateway"), "{e}");
        let three = plan_from(None, &["components.pilot.k8s.replicaCount=3".into()]).expect("replicas share the cluster's root");
        assert_eq!(three.pilot.as_ref().and_then(|k| k.replica_count), Some(3));
        let e = plan_from(None, &["components.pilot.namespace=mesh".into()]).unwrap_err();
        assert!(e.contains("spec.components.pilot.namespace"), "{e}");
        let e = plan_from(None, &["profile=ambient".into()]).unwrap_err();
        assert!(e.contains("\"ambient\""), "{e}");
        let e = plan_from(Some("apiVersion: v1\nkind: ConfigMap\n"), &[]).unwrap_err();
        assert!(e.contains("IstioOperator"), "{e}");
    }
}
