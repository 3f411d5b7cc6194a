//! What injection adds, built from k8s-openapi's types as Istio's injection templates build
//! it: the proxy container, the capture init container and the volumes they mount.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector, Probe, ProjectedVolumeSource,
    ResourceFieldSelector, ResourceRequirements, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use weft_capture::RawOptions;

use crate::annotations::{PodSettings, Template};
use crate::values::{DataPlane, Values};
use crate::{INIT_CONTAINER, PROXY_CONTAINER, VALIDATION_CONTAINER};

/// The health port the proxy answers `/healthz/ready` on.
pub const HEALTH_PORT: i32 = 15021;
/// The proxy's Prometheus port.
pub const STATS_PORT: i32 = 15090;

/// What the proxy container needs to know about the pod it joins.
pub struct PodFacts<'a> {
    pub app_containers: Vec<String>,
    /// Every port of the app containers, as written (`ISTIO_META_POD_PORTS`).
    pub ports: Vec<Value>,
    pub workload_name: String,
    /// `kubernetes://apis/<apiVersion>/namespaces/<ns>/<kind>s/<name>`, when known.
    pub owner: Option<String>,
    pub settings: &'a PodSettings,
    pub values: &'a Values,
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), value_from: None }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), api_version: None }),
            ..Default::default()
        }),
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), ..Default::default() }
}

fn quantities(m: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), Quantity(v.clone()))).collect())
}

fn to_value<T: serde::Serialize>(t: &T) -> Value {
    // k8s-openapi's types always serialise.
    serde_json::to_value(t).unwrap_or(Value::Null)
}

pub fn image(facts_settings: &PodSettings, values: &Values) -> String {
    facts_settings.proxy_image.clone().unwrap_or_else(|| values.image())
}

/// The capture init container: `istio-init` writes the rules with `weft capture`, or, when the
/// CNI plugin wrote them, `istio-validation` checks they are there.
pub fn init_container(raw: &RawOptions, settings: &PodSettings, values: &Values) -> Value {
    let mut args: Vec<String> = vec!["capture".into()];
    let mut flag = |f: &str, v: &str| {
        args.push(f.into());
        args.push(v.into());
    };
    flag("-p", &raw.proxy_port);
    flag("-z", &raw.inbound_capture_port);
    flag("-u", &raw.proxy_uid);
    flag("-g", &raw.proxy_gid);
    flag("-m", &raw.mode);
    flag("-i", &raw.outbound_ranges);
    flag("-x", &raw.outbound_ranges_exclude);
    flag("-b", &raw.inbound_ports);
    flag("-d", &raw.inbound_ports_exclude);
    if !raw.outbound_ports_include.is_empty() {
        flag("-q", &raw.outbound_ports_include);
    }
    if !raw.outbound_ports_exclude.is_empty() {
        flag("-o", &raw.outbound_ports_exclude);
    }
    if !raw.exclude_interfaces.is_empty() {
        flag("-c", &raw.exclude_interfaces);
    }
    let cni = values.cni;
    if cni {
        args.push("--verify".into());
    }
    let security = if cni {
        SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities { add: None, drop: Some(vec!["ALL".into()]) }),
            read_only_root_filesystem: Some(true),
            run_as_group: Some(values.proxy.gid),
            run_as_user: Some(values.proxy.uid),
            run_as_non_root: Some(true),
            ..Default::default()
        }
    } else {
        SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities { add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]), drop: Some(vec!["ALL".into()]) }),
            read_only_root_filesystem: Some(false),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            ..Default::default()
        }
    };
    to_value(&Container {
        name: if cni { VALIDATION_CONTAINER } else { INIT_CONTAINER }.into(),
        image: Some(image(settings, values)),
        args: Some(args),
        image_pull_policy: (!values.image_pull_policy.is_empty()).then(|| values.image_pull_policy.clone()),
        resources: Some(ResourceRequirements {
            requests: quantities(&settings.requests),
            limits: quantities(&settings.limits),
            claims: None,
        }),
        security_context: Some(security),
        ..Default::default()
    })
}

/// The proxy container (`istio-proxy`) for the sidecar or gateway template.
pub fn proxy_container(facts: &PodFacts<'_>) -> Value {
    let s = facts.settings;
    let v = facts.values;
    let role = match s.template {
        Template::Sidecar => "sidecar",
        Template::Gateway => "router",
    };
    let mut args: Vec<String> = vec![
        "pod-proxy".into(),
        role.into(),
        "--domain".into(),
        format!("$(POD_NAMESPACE).svc.{}", v.cluster_domain),
        format!("--proxyLogLevel={}", s.log_level),
        format!("--proxyComponentLogLevel={}", s.component_log_level),
    ];
    if s.data_plane == DataPlane::Envoy {
        args.push("--data-plane=envoy".into());
    }

    let mut envs = vec![
        env("PILOT_CERT_PROVIDER", "istiod"),
        env("CA_ADDR", v.ca_address()),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("INSTANCE_IP", "status.podIP"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field_env("HOST_IP", "status.hostIP"),
        EnvVar {
            name: "ISTIO_CPU_LIMIT".into(),
            value: None,
            value_from: Some(EnvVarSource {
                resource_field_ref: Some(ResourceFieldSelector {
                    resource: "limits.cpu".into(),
                    divisor: Some(Quantity("1".into())),
                    container_name: None,
                }),
                ..Default::default()
            }),
        },
        env("PROXY_CONFIG", Value::Object(s.proxy_config.clone()).to_string()),
        env("ISTIO_META_POD_PORTS", Value::Array(facts.ports.clone()).to_string()),
        env("ISTIO_META_APP_CONTAINERS", facts.app_containers.join(",")),
        env("ISTIO_META_CLUSTER_ID", v.cluster_id.clone()),
        field_env("ISTIO_META_NODE_NAME", "spec.nodeName"),
        env("ISTIO_META_INTERCEPTION_MODE", if s.capture.is_some() { "REDIRECT" } else { "NONE" }),
    ];
    if !v.network.is_empty() {
        envs.push(env("ISTIO_META_NETWORK", v.network.clone()));
    }
    if !facts.workload_name.is_empty() {
        envs.push(env("ISTIO_META_WORKLOAD_NAME", facts.workload_name.clone()));
    }
    if let Some(owner) = &facts.owner {
        envs.push(env("ISTIO_META_OWNER", owner.clone()));
    }
    envs.push(env("ISTIO_META_MESH_ID", v.mesh_id()));
    envs.push(env("TRUST_DOMAIN", v.trust_domain.clone()));
    if let Some(Value::Object(meta)) = s.proxy_config.get("proxyMetadata") {
        for (k, val) in meta {
            envs.push(env(k, val.as_str().map(str::to_owned).unwrap_or_else(|| val.to_string())));
        }
    }

    let ready = HTTPGetAction { path: Some("/healthz/ready".into()), port: IntOrString::Int(HEALTH_PORT), ..Default::default() };
    let readiness = Probe {
        http_get: Some(ready.clone()),
        initial_delay_seconds: Some(s.readiness_initial_delay_seconds),
        period_seconds: Some(s.readiness_period_seconds),
        timeout_seconds: Some(3),
        failure_threshold: Some(s.readiness_failure_threshold),
        ..Default::default()
    };
    // The app starts only when this probe has passed, for a native sidecar.
    let startup = Probe {
        http_get: Some(ready),
        initial_delay_seconds: Some(0),
        period_seconds: Some(1),
        timeout_seconds: Some(3),
        failure_threshold: Some(v.proxy.startup_probe_failure_threshold),
        ..Default::default()
    };
    let exec = |cmd: &[String]| LifecycleHandler { exec: Some(ExecAction { command: Some(cmd.to_vec()) }), ..Default::default() };
    // `weft pod-proxy wait|drain`, at the pod's status port.
    let hook = |what: &str| -> Vec<String> {
        let mut c = vec!["weft".to_owned(), "pod-proxy".to_owned(), what.to_owned()];
        if s.status_port != 15020 {
            c.extend(["--status-port".to_owned(), s.status_port.to_string()]);
        }
        c
    };
    let lifecycle = match s.template {
        Template::Gateway => None,
        // The app containers start after postStart returns, that is once the proxy is ready.
        Template::Sidecar if s.hold => Some(Lifecycle { post_start: Some(exec(&hook("wait"))), ..Default::default() }),
        // Kubernetes stops a native sidecar after the app containers: drain first.
        Template::Sidecar if s.native => Some(Lifecycle { pre_stop: Some(exec(&hook("drain"))), ..Default::default() }),
        Template::Sidecar => None,
    };
    let security = match s.template {
        Template::Gateway => SecurityContext { run_as_user: Some(v.proxy.uid), run_as_group: Some(v.proxy.gid), ..Default::default() },
        Template::Sidecar => SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { add: None, drop: Some(vec!["ALL".into()]) }),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(v.proxy.uid),
            run_as_group: Some(v.proxy.gid),
            ..Default::default()
        },
    };
    let native = s.template == Template::Sidecar && s.native;
    to_value(&Container {
        name: PROXY_CONTAINER.into(),
        image: Some(image(s, v)),
        restart_policy: native.then(|| "Always".into()),
        ports: Some(vec![ContainerPort {
            container_port: STATS_PORT,
            protocol: Some("TCP".into()),
            name: Some("http-envoy-prom".into()),
            ..Default::default()
        }]),
        args: Some(args),
        lifecycle,
        env: Some(envs),
        image_pull_policy: (!v.image_pull_policy.is_empty()).then(|| v.image_pull_policy.clone()),
        startup_probe: native.then_some(startup),
        readiness_probe: (s.status_port != 0).then_some(readiness),
        security_context: Some(security),
        resources: Some(ResourceRequirements { requests: quantities(&s.requests), limits: quantities(&s.limits), claims: None }),
        volume_mounts: Some(vec![
            mount("workload-socket", "/var/run/secrets/workload-spiffe-uds"),
            mount("credential-socket", "/var/run/secrets/credential-uds"),
            mount("workload-certs", "/var/run/secrets/workload-spiffe-credentials"),
            mount("istiod-ca-cert", "/var/run/secrets/istio"),
            mount("istio-ca-crl", "/var/run/secrets/istio/crl"),
            mount("istio-data", "/var/lib/istio/data"),
            mount("istio-envoy", "/etc/istio/proxy"),
            mount("istio-token", "/var/run/secrets/tokens"),
            mount("istio-podinfo", "/etc/istio/pod"),
        ]),
        ..Default::default()
    })
}

/// The volumes the proxy mounts, in Istio's order and with Istio's names.
pub fn volumes() -> Vec<Value> {
    let empty = |name: &str, medium: Option<&str>| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource { medium: medium.map(str::to_owned), size_limit: None }),
        ..Default::default()
    };
    let config_map = |name: &str, map: &str, optional: Option<bool>| Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource { name: map.into(), optional, ..Default::default() }),
        ..Default::default()
    };
    let field = |path: &str, field: &str| DownwardAPIVolumeFile {
        path: path.into(),
        field_ref: Some(ObjectFieldSelector { field_path: field.into(), api_version: None }),
        ..Default::default()
    };
    [
        empty("workload-socket", None),
        empty("credential-socket", None),
        empty("workload-certs", None),
        empty("istio-envoy", Some("Memory")),
        empty("istio-data", None),
        Volume {
            name: "istio-podinfo".into(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![field("labels", "metadata.labels"), field("annotations", "metadata.annotations")]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "istio-token".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "istio-token".into(),
                        expiration_seconds: Some(43200),
                        audience: Some("istio-ca".into()),
                    }),
                    ..Default::default()
                }]),
                default_mode: None,
            }),
            ..Default::default()
        },
        config_map("istiod-ca-cert", "istio-ca-root-cert", None),
        config_map("istio-ca-crl", "istio-ca-crl", Some(true)),
    ]
    .iter()
    .map(to_value)
    .collect()
}
