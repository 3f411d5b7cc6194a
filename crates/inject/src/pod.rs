//! Injection of one pod template (a Pod's, or a workload's `spec.template`): whether to
//! inject, what to add, and the order containers end up in.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::annotations::{PodSettings, Template};
use crate::sidecar::{self, PodFacts};
use crate::values::Values;
use crate::{probes, InjectError, INIT_CONTAINER, PROXY_CONTAINER, STATUS_ANNOTATION, VALIDATION_CONTAINER};

/// The workload a pod template belongs to: names the proxy's workload and owner.
#[derive(Debug, Clone, Default)]
pub struct Owner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

/// Why a pod was left as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// `hostNetwork: true`: capture would rewrite the node's own routing.
    HostNetwork,
    /// One of the namespaces never injected (`kube-system`, `kube-public`).
    IgnoredNamespace(String),
    /// `sidecar.istio.io/inject: "false"` as a label or annotation.
    Disabled,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::HostNetwork => write!(f, "it has host networking enabled"),
            Skip::IgnoredNamespace(ns) => write!(f, "namespace {ns} is never injected"),
            Skip::Disabled => write!(f, "it has sidecar injection disabled (sidecar.istio.io/inject: \"false\")"),
        }
    }
}

/// What happened to one pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Injected { warnings: Vec<String> },
    Skipped(Skip),
}

/// `sidecar.istio.io/status`: what injection added, in Istio's shape, so the next injection
/// can take it out first.
#[derive(Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Status {
    init_containers: Option<Vec<String>>,
    containers: Option<Vec<String>>,
    volumes: Option<Vec<String>>,
    image_pull_secrets: Option<Vec<String>>,
    revision: String,
}

const INJECT: &str = "sidecar.istio.io/inject";
const PROBERS_ENV: &str = "ISTIO_KUBE_APP_PROBERS";
const PROMETHEUS_ENV: &str = "ISTIO_PROMETHEUS_ANNOTATIONS";
const PROMETHEUS: [&str; 3] = ["prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path"];

fn object<'a>(v: &'a mut Value, at: &str) -> Result<&'a mut Map<String, Value>, InjectError> {
    if v.is_null() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().ok_or_else(|| InjectError::new(at, "must be an object"))
}

fn list<'a>(m: &'a mut Map<String, Value>, key: &str, at: &str) -> Result<&'a mut Vec<Value>, InjectError> {
    let v = m.entry(key.to_owned()).or_insert_with(|| Value::Array(Vec::new()));
    if v.is_null() {
        *v = Value::Array(Vec::new());
    }
    v.as_array_mut().ok_or_else(|| InjectError::new(format!("{at}.{key}"), "must be a list"))
}

fn name_of(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// Injects the pod template whose `metadata` and `spec` are given, in place. `at` is the
/// template's path in its object (`spec.template`, or empty for a Pod), for errors. Nothing is
/// changed when an error is returned.
pub fn inject_pod(
    metadata: &mut Value,
    spec: &mut Value,
    at: &str,
    owner: &Owner,
    namespace_labels: Option<&Map<String, Value>>,
    values: &Values,
) -> Result<Outcome, InjectError> {
    let path = |p: &str| if at.is_empty() { p.to_owned() } else { format!("{at}.{p}") };
    let mut meta = metadata.clone();
    let mut new_spec = spec.clone();
    let outcome = inject_copy(&mut meta, &mut new_spec, owner, namespace_labels, values).map_err(|mut e| {
        e.at = path(&e.at);
        e
    })?;
    if matches!(outcome, Outcome::Injected { .. }) {
        *metadata = meta;
        *spec = new_spec;
    }
    Ok(outcome)
}

fn inject_copy(
    metadata: &mut Value,
    spec: &mut Value,
    owner: &Owner,
    namespace_labels: Option<&Map<String, Value>>,
    values: &Values,
) -> Result<Outcome, InjectError> {
    let meta = object(metadata, "metadata")?;
    let spec = object(spec, "spec")?;
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Ok(Outcome::Skipped(Skip::HostNetwork));
    }
    let namespace = meta.get("namespace").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| owner.namespace.clone());
    if values.ignored_namespaces.contains(&namespace) {
        return Ok(Outcome::Skipped(Skip::IgnoredNamespace(namespace)));
    }
    let mut warnings = Vec::new();
    let labels = object(meta.entry("labels").or_insert(Value::Null), "metadata.labels")?.clone();
    let annotations = object(meta.entry("annotations").or_insert(Value::Null), "metadata.annotations")?.clone();
    // The label is the newer API and wins over the annotation, as in Istio.
    let selector = labels.get(INJECT).or_else(|| annotations.get(INJECT)).and_then(Value::as_str).unwrap_or_default();
    match selector {
        "false" => return Ok(Outcome::Skipped(Skip::Disabled)),
        "true" | "" => {}
        other => warnings.push(format!("{INJECT}: {other:?} is not \"true\" or \"false\"; injecting as by default")),
    }
    let settings = PodSettings::read(&annotations, namespace_labels, values, &mut warnings)?;

    let previous = strip_previous(meta, spec, &settings)?;
    let app_containers: Vec<String> = spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(name_of)
        .filter(|n| *n != PROXY_CONTAINER)
        .map(str::to_owned)
        .collect();
    if app_containers.is_empty() && settings.template == Template::Sidecar {
        return Err(InjectError::new("spec.containers", "a pod needs at least one container"));
    }
    let ports: Vec<Value> = spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| name_of(c) != PROXY_CONTAINER)
        .flat_map(|c| c.get("ports").and_then(Value::as_array).cloned().unwrap_or_default())
        .collect();
    let workload_name =
        labels.get("service.istio.io/workload-name").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| owner.name.clone());
    let owner_uri = (!owner.api_version.is_empty() && !owner.name.is_empty()).then(|| {
        let ns = if namespace.is_empty() { "default" } else { &namespace };
        format!("kubernetes://apis/{}/namespaces/{ns}/{}s/{}", owner.api_version, owner.kind.to_lowercase(), owner.name)
    });
    let facts = PodFacts {
        app_containers: app_containers.clone(),
        ports,
        workload_name: workload_name.clone(),
        owner: owner_uri,
        settings: &settings,
        values,
    };

    // Labels and annotations.
    let labels = object(meta.entry("labels").or_insert(Value::Null), "metadata.labels")?;
    if settings.template == Template::Sidecar {
        labels.entry("security.istio.io/tlsMode").or_insert(json!("istio"));
    }
    let canonical = ["service.istio.io/canonical-name", "app.kubernetes.io/name", "app"]
        .iter()
        .find_map(|k| labels.get(*k).and_then(Value::as_str))
        .unwrap_or(&workload_name)
        .to_owned();
    let canonical: String = canonical.chars().take(63).collect::<String>().trim_matches(|c| matches!(c, '-' | '_' | '.')).to_owned();
    labels.insert("service.istio.io/canonical-name".into(), json!(canonical));
    let revision = ["service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"]
        .iter()
        .find_map(|k| labels.get(*k).and_then(Value::as_str))
        .unwrap_or("latest")
        .to_owned();
    labels.insert("service.istio.io/canonical-revision".into(), json!(revision));
    if !values.network.is_empty() {
        labels.insert("topology.istio.io/network".into(), json!(values.network));
    }
    let annotations = object(meta.entry("annotations").or_insert(Value::Null), "metadata.annotations")?;
    annotations.insert("istio.io/rev".into(), json!(values.revision()));
    if let Some(first) = app_containers.first() {
        for key in ["kubectl.kubernetes.io/default-logs-container", "kubectl.kubernetes.io/default-container"] {
            annotations.entry(key).or_insert(json!(first));
        }
    }
    if values.cni && settings.template == Template::Sidecar {
        // The CNI plugin reads these to write the pod's capture rules.
        annotations.insert("sidecar.istio.io/interceptionMode".into(), json!(if settings.capture.is_some() { "REDIRECT" } else { "NONE" }));
        if let Some(raw) = &settings.capture {
            annotations.insert("traffic.sidecar.istio.io/includeOutboundIPRanges".into(), json!(raw.outbound_ranges));
            annotations.insert("traffic.sidecar.istio.io/excludeOutboundIPRanges".into(), json!(raw.outbound_ranges_exclude));
            annotations.insert("traffic.sidecar.istio.io/includeInboundPorts".into(), json!(raw.inbound_ports));
            let excluded: Vec<&str> = raw.inbound_ports_exclude.split(',').filter(|p| !["15090", "15021"].contains(p)).collect();
            annotations.insert("traffic.sidecar.istio.io/excludeInboundPorts".into(), json!(excluded.join(",")));
            for (key, v) in [
                ("includeOutboundPorts", &raw.outbound_ports_include),
                ("excludeOutboundPorts", &raw.outbound_ports_exclude),
                ("excludeInterfaces", &raw.exclude_interfaces),
            ] {
                if !v.is_empty() {
                    annotations.insert(format!("traffic.sidecar.istio.io/{key}"), json!(v));
                }
            }
        }
    }

    // Containers.
    let mut status = Status { revision: values.revision().to_owned(), ..Status::default() };
    let mut proxy = sidecar::proxy_container(&facts);
    let user_proxy = match take_container(list(spec, "containers", "spec")?, PROXY_CONTAINER) {
        Some(c) => Some(c),
        None => take_container(list(spec, "initContainers", "spec")?, PROXY_CONTAINER),
    };
    match (settings.template, user_proxy) {
        (_, Some(user)) => merge_container(&mut proxy, &user),
        (Template::Gateway, None) => {
            return Err(InjectError::new(
                "spec.containers",
                "the gateway template fills in a container named istio-proxy (image: auto), and there is none",
            ));
        }
        (Template::Sidecar, None) => {}
    }
    let native = settings.template == Template::Sidecar && settings.native;
    let mut init_names = Vec::new();
    if settings.template == Template::Sidecar {
        if let Some(raw) = &settings.capture {
            let init = sidecar::init_container(raw, &settings, values);
            init_names.push(name_of(&init).to_owned());
            list(spec, "initContainers", "spec")?.push(init);
        }
    }
    if native {
        init_names.push(PROXY_CONTAINER.to_owned());
        list(spec, "initContainers", "spec")?.push(proxy);
        status.containers = None;
    } else {
        list(spec, "containers", "spec")?.push(proxy);
        status.containers = Some(vec![PROXY_CONTAINER.to_owned()]);
    }
    status.init_containers = (!init_names.is_empty()).then_some(init_names);

    // Volumes and pull secrets: ours replace any of the same name.
    let ours = sidecar::volumes();
    let volumes = list(spec, "volumes", "spec")?;
    volumes.retain(|v| !ours.iter().any(|o| name_of(o) == name_of(v)));
    status.volumes = Some(ours.iter().map(|v| name_of(v).to_owned()).collect());
    volumes.extend(ours);
    if !values.image_pull_secrets.is_empty() {
        let secrets = list(spec, "imagePullSecrets", "spec")?;
        for s in &values.image_pull_secrets {
            if !secrets.iter().any(|v| name_of(v) == s) {
                secrets.push(json!({ "name": s }));
            }
        }
        status.image_pull_secrets = Some(values.image_pull_secrets.clone());
    }
    if settings.template == Template::Gateway {
        // Gateways listen on 80 and 443 as UID 1337.
        let sc = object(spec.entry("securityContext").or_insert(Value::Null), "spec.securityContext")?;
        sc.entry("sysctls").or_insert(json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]));
    }

    let mut extra_env = Vec::new();
    merge_prometheus(meta, &settings, &mut extra_env)?;
    if settings.rewrite_probes && settings.template == Template::Sidecar {
        let mut probers = previous.probers;
        for key in ["initContainers", "containers"] {
            for c in list(spec, key, "spec")?.iter_mut().filter(|c| name_of(c) != PROXY_CONTAINER) {
                probes::rewrite(c, settings.status_port, &mut probers);
            }
        }
        if !probers.is_empty() {
            extra_env.push(json!({"name": PROBERS_ENV, "value": Value::Object(probers).to_string()}));
        }
    }
    if !extra_env.is_empty() {
        let containers = list(spec, if native { "initContainers" } else { "containers" }, "spec")?;
        if let Some(proxy) = containers.iter_mut().find(|c| name_of(c) == PROXY_CONTAINER) {
            if let Some(env) = proxy.get_mut("env").and_then(Value::as_array_mut) {
                env.extend(extra_env);
            }
        }
    }

    reorder(spec, native, settings.hold)?;
    let status = serde_json::to_string(&status).map_err(|e| InjectError::new("metadata.annotations", e.to_string()))?;
    let annotations = object(meta.entry("annotations").or_insert(Value::Null), "metadata.annotations")?;
    annotations.insert(STATUS_ANNOTATION.into(), json!(status));
    Ok(Outcome::Injected { warnings })
}

/// What an earlier injection left that this one keeps: the app's original probes and
/// Prometheus annotations, which only the old proxy container's environment still has.
struct Previous {
    probers: Map<String, Value>,
    prometheus: Option<Map<String, Value>>,
}

/// Takes out what the status annotation says an earlier injection added, so injecting twice
/// gives what injecting once gave.
fn strip_previous(meta: &mut Map<String, Value>, spec: &mut Map<String, Value>, settings: &PodSettings) -> Result<Previous, InjectError> {
    let mut previous = Previous { probers: Map::new(), prometheus: None };
    let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) else { return Ok(previous) };
    let Some(text) = annotations.remove(STATUS_ANNOTATION) else { return Ok(previous) };
    let status: Status = text.as_str().and_then(|t| serde_json::from_str(t).ok()).ok_or_else(|| {
        InjectError::new(
            format!("metadata.annotations[{STATUS_ANNOTATION}]"),
            "not the status an injector writes; remove it to inject afresh",
        )
    })?;
    let env_of = |c: &Value, name: &str| -> Option<String> {
        c.get("env")?.as_array()?.iter().find(|e| name_of(e) == name)?.get("value")?.as_str().map(str::to_owned)
    };
    for (key, names) in
        [("containers", status.containers.unwrap_or_default()), ("initContainers", status.init_containers.unwrap_or_default())]
    {
        let cs = list(spec, key, "spec")?;
        for c in cs.iter().filter(|c| name_of(c) == PROXY_CONTAINER) {
            if let Some(Ok(Value::Object(p))) = env_of(c, PROBERS_ENV).map(|t| serde_json::from_str(&t)) {
                previous.probers = p;
            }
            if let Some(Ok(Value::Object(p))) = env_of(c, PROMETHEUS_ENV).map(|t| serde_json::from_str(&t)) {
                previous.prometheus = Some(p);
            }
        }
        // A gateway's proxy container is the Deployment's own (`image: auto`): it stays, back
        // to the image placeholder the gateway template fills in.
        if settings.template == Template::Gateway {
            for c in cs.iter_mut().filter(|c| name_of(c) == PROXY_CONTAINER) {
                c["image"] = json!("auto");
            }
        }
        cs.retain(|c| !names.iter().any(|n| n == name_of(c)) || (settings.template == Template::Gateway && name_of(c) == PROXY_CONTAINER));
    }
    let volumes = status.volumes.unwrap_or_default();
    list(spec, "volumes", "spec")?.retain(|v| !volumes.iter().any(|n| n == name_of(v)));
    let secrets = status.image_pull_secrets.unwrap_or_default();
    list(spec, "imagePullSecrets", "spec")?.retain(|v| !secrets.iter().any(|n| n == name_of(v)));
    for key in ["volumes", "imagePullSecrets", "initContainers"] {
        if spec.get(key).and_then(Value::as_array).is_some_and(Vec::is_empty) {
            spec.remove(key);
        }
    }
    // Prometheus annotations pointing at the status port were ours: give the app's back.
    let ours = annotations.get("prometheus.io/port").and_then(Value::as_str) == Some(settings.status_port.to_string().as_str());
    if ours {
        for k in PROMETHEUS {
            annotations.remove(k);
        }
        if let Some(orig) = &previous.prometheus {
            for (k, v) in orig {
                annotations.insert(format!("prometheus.io/{k}"), v.clone());
            }
        }
    }
    Ok(previous)
}

/// Metrics merging: the app's `prometheus.io/*` annotations move into the proxy's environment
/// and Prometheus is pointed at the status port, which serves both.
fn merge_prometheus(meta: &mut Map<String, Value>, settings: &PodSettings, env: &mut Vec<Value>) -> Result<(), InjectError> {
    let annotations = object(meta.entry("annotations").or_insert(Value::Null), "metadata.annotations")?;
    let scrape = annotations.get("prometheus.io/scrape").and_then(Value::as_str);
    if !settings.merge_metrics || scrape == Some("false") {
        return Ok(());
    }
    let target = settings.status_port.to_string();
    let mut original = Map::new();
    for k in PROMETHEUS {
        if let Some(v) = annotations.remove(k) {
            original.insert(k.trim_start_matches("prometheus.io/").to_owned(), v);
        }
    }
    if let Some(port) = original.get("port").and_then(Value::as_str) {
        let n: u16 = port
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| InjectError::new("metadata.annotations[prometheus.io/port]", format!("{port:?} is not a port")))?;
        if n.to_string() == target || [15000, 15001, 15006, 15021, 15090].contains(&n) {
            return Err(InjectError::new(
                "metadata.annotations[prometheus.io/port]",
                format!("port {n} is the proxy's own; the app's metrics must be on another port"),
            ));
        }
    }
    if !original.is_empty() {
        env.push(json!({"name": PROMETHEUS_ENV, "value": Value::Object(original).to_string()}));
    }
    annotations.insert("prometheus.io/port".into(), json!(target));
    annotations.insert("prometheus.io/path".into(), json!("/stats/prometheus"));
    annotations.insert("prometheus.io/scrape".into(), json!("true"));
    Ok(())
}

fn take_container(list: &mut Vec<Value>, name: &str) -> Option<Value> {
    let i = list.iter().position(|c| name_of(c) == name)?;
    Some(list.remove(i))
}

/// Lays the user's own `istio-proxy` container over the injected one (Istio's "customizing
/// injection"): the user's fields win, lists merge by their keys, and `image: auto` keeps
/// the injected image.
fn merge_container(ours: &mut Value, user: &Value) {
    let (Some(ours), Some(user)) = (ours.as_object_mut(), user.as_object()) else { return };
    for (k, v) in user {
        let key = match k.as_str() {
            "image" if v.as_str() == Some("auto") => continue,
            "env" | "volumeMounts" => Some(if k == "env" { "name" } else { "mountPath" }),
            "ports" => Some("containerPort"),
            _ => None,
        };
        match (key, ours.get_mut(k).and_then(Value::as_array_mut), v.as_array()) {
            (Some(key), Some(mine), Some(theirs)) => {
                for item in theirs {
                    match mine.iter_mut().find(|m| m.get(key) == item.get(key)) {
                        Some(m) => *m = item.clone(),
                        None => mine.push(item.clone()),
                    }
                }
            }
            _ => {
                ours.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Istio's order: a native proxy right after the capture init container, so later init
/// containers are in the mesh; otherwise the validation container first and `istio-init`
/// last (init containers before it may still reach the network), and the proxy last among
/// the containers — first when the app waits for it.
fn reorder(spec: &mut Map<String, Value>, native: bool, hold: bool) -> Result<(), InjectError> {
    let move_to = |list: &mut Vec<Value>, name: &str, first: bool| {
        if let Some(c) = take_container(list, name) {
            if first {
                list.insert(0, c);
            } else {
                list.push(c);
            }
        }
    };
    let containers = list(spec, "containers", "spec")?;
    move_to(containers, PROXY_CONTAINER, hold);
    let inits = list(spec, "initContainers", "spec")?;
    if native {
        move_to(inits, PROXY_CONTAINER, true);
        move_to(inits, VALIDATION_CONTAINER, true);
        move_to(inits, INIT_CONTAINER, true);
    } else {
        move_to(inits, VALIDATION_CONTAINER, true);
        move_to(inits, INIT_CONTAINER, false);
    }
    if inits.is_empty() {
        spec.remove("initContainers");
    }
    Ok(())
}
