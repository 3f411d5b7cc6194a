//! The pod's annotations that shape injection, read and checked before anything is built: a
//! bad value is an error naming the annotation (Istio's injector refuses those too), and an
//! Istio annotation weft does not act on is a warning naming it — or an error where ignoring
//! it would leave traffic uncaptured.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use weft_capture::{CaptureConfig, RawOptions};

use crate::values::{DataPlane, Values};
use crate::InjectError;

/// Which template the pod asks for (`inject.istio.io/templates`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// The sidecar: capture, the proxy beside the app.
    Sidecar,
    /// A gateway Deployment's own proxy container (`image: auto`), configured as a router.
    Gateway,
}

/// What the annotations (over the values) say for one pod.
#[derive(Debug, Clone)]
pub struct PodSettings {
    pub template: Template,
    pub data_plane: DataPlane,
    /// `None`: interception mode NONE, no capture.
    pub capture: Option<RawOptions>,
    pub proxy_image: Option<String>,
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
    pub log_level: String,
    pub component_log_level: String,
    pub status_port: u16,
    pub readiness_initial_delay_seconds: i32,
    pub readiness_period_seconds: i32,
    pub readiness_failure_threshold: i32,
    pub rewrite_probes: bool,
    pub native: bool,
    pub hold: bool,
    pub merge_metrics: bool,
    /// MeshConfig `defaultConfig` with `proxy.istio.io/config` laid over it.
    pub proxy_config: Map<String, Value>,
}

/// Annotations weft reads; any other of Istio's prefixes is reported.
const KNOWN: &[&str] = &[
    "sidecar.istio.io/inject",
    "sidecar.istio.io/status",
    "sidecar.istio.io/interceptionMode",
    "sidecar.istio.io/proxyImage",
    "sidecar.istio.io/proxyCPU",
    "sidecar.istio.io/proxyMemory",
    "sidecar.istio.io/proxyCPULimit",
    "sidecar.istio.io/proxyMemoryLimit",
    "sidecar.istio.io/logLevel",
    "sidecar.istio.io/componentLogLevel",
    "sidecar.istio.io/agentLogLevel",
    "sidecar.istio.io/rewriteAppHTTPProbers",
    "sidecar.istio.io/nativeSidecar",
    "status.sidecar.istio.io/port",
    "readiness.status.sidecar.istio.io/initialDelaySeconds",
    "readiness.status.sidecar.istio.io/periodSeconds",
    "readiness.status.sidecar.istio.io/failureThreshold",
    "proxy.istio.io/config",
    "prometheus.istio.io/merge-metrics",
    "inject.istio.io/templates",
    "traffic.sidecar.istio.io/includeOutboundIPRanges",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges",
    "traffic.sidecar.istio.io/includeInboundPorts",
    "traffic.sidecar.istio.io/excludeInboundPorts",
    "traffic.sidecar.istio.io/includeOutboundPorts",
    "traffic.sidecar.istio.io/excludeOutboundPorts",
    "traffic.sidecar.istio.io/excludeInterfaces",
    DATA_PLANE,
];

/// Pod annotation, or namespace label, choosing the data plane.
pub const DATA_PLANE: &str = "weft.io/data-plane";

/// Istio annotations that change which traffic is captured: ignoring one would leave traffic
/// outside the mesh that the user meant inside it.
const REFUSED: &[(&str, &str)] = &[
    ("traffic.sidecar.istio.io/kubevirtInterfaces", "rerouting virtual interfaces is not supported by weft's capture"),
    ("istio.io/reroute-virtual-interfaces", "rerouting virtual interfaces is not supported by weft's capture"),
    ("sidecar.istio.io/bootstrapOverride", "a custom Envoy bootstrap is not supported by weft's injector"),
];

const ISTIO_PREFIXES: &[&str] = &[
    "sidecar.istio.io/",
    "traffic.sidecar.istio.io/",
    "status.sidecar.istio.io/",
    "readiness.status.sidecar.istio.io/",
    "proxy.istio.io/",
    "inject.istio.io/",
    "weft.io/",
];

impl PodSettings {
    /// Reads the pod's annotations; `namespace_labels` may choose the data plane.
    pub fn read(
        annotations: &Map<String, Value>,
        namespace_labels: Option<&Map<String, Value>>,
        values: &Values,
        warnings: &mut Vec<String>,
    ) -> Result<PodSettings, InjectError> {
        let get = |k: &str| annotations.get(k).and_then(Value::as_str);
        let at = |k: &str| format!("metadata.annotations[{k}]");
        for (k, v) in annotations {
            if !v.is_string() {
                return Err(InjectError::new(at(k), "an annotation's value must be a string"));
            }
            if let Some((_, why)) = REFUSED.iter().find(|(name, _)| name == k) {
                return Err(InjectError::new(at(k), format!("{why}; remove the annotation")));
            }
            if ISTIO_PREFIXES.iter().any(|p| k.starts_with(p)) && !KNOWN.contains(&k.as_str()) {
                warnings.push(format!("{}: not acted on by weft's injector; ignored", at(k)));
            }
        }

        let template = match get("inject.istio.io/templates").map(str::trim) {
            None | Some("sidecar") => Template::Sidecar,
            Some("gateway") => Template::Gateway,
            Some(other) => {
                return Err(InjectError::new(
                    at("inject.istio.io/templates"),
                    format!("unknown template {other:?}; weft has \"sidecar\" and \"gateway\""),
                ));
            }
        };

        let data_plane = match get(DATA_PLANE) {
            Some(v) => DataPlane::parse(v)
                .ok_or_else(|| InjectError::new(at(DATA_PLANE), format!("{v:?} is not a data plane; use \"weft\" or \"envoy\"")))?,
            None => match namespace_labels.and_then(|l| l.get(DATA_PLANE)).and_then(Value::as_str) {
                Some(v) => DataPlane::parse(v).ok_or_else(|| {
                    InjectError::new(
                        format!("namespace label {DATA_PLANE}"),
                        format!("{v:?} is not a data plane; use \"weft\" or \"envoy\""),
                    )
                })?,
                None => values.data_plane,
            },
        };

        let p = &values.proxy;
        let mut proxy_config = values.default_config.clone();
        if let Some(text) = get("proxy.istio.io/config") {
            let overlay: Value =
                serde_yaml::from_str(text).map_err(|e| InjectError::new(at("proxy.istio.io/config"), format!("not YAML or JSON: {e}")))?;
            let Value::Object(overlay) = overlay else {
                return Err(InjectError::new(at("proxy.istio.io/config"), "must be a ProxyConfig object"));
            };
            for (k, v) in overlay {
                // Maps merge key by key, as Istio merges the ProxyConfig protos: a pod adding one
                // `proxyMetadata` variable keeps the mesh's others.
                match (proxy_config.get_mut(&k), v) {
                    (Some(Value::Object(mine)), Value::Object(theirs)) if k == "proxyMetadata" => mine.extend(theirs),
                    (_, v) => {
                        proxy_config.insert(k, v);
                    }
                }
            }
        }
        // xDS goes where certificates come from: this revision's control plane.
        if !proxy_config.contains_key("discoveryAddress") && values.ca_address() != "istiod.istio-system.svc:15012" {
            proxy_config.insert("discoveryAddress".into(), serde_json::json!(values.ca_address()));
        }
        // One status port for everything: the agent listens on it (PROXY_CONFIG), the probes
        // and Prometheus point at it, the hooks call it, capture leaves it alone.
        let status_port = match get("status.sidecar.istio.io/port") {
            Some(v) => v
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| InjectError::new(at("status.sidecar.istio.io/port"), format!("{v:?} is not a port (1–65535)")))?,
            None => match proxy_config.get("statusPort") {
                Some(v) => v
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|p| *p != 0)
                    .ok_or_else(|| InjectError::new("defaultConfig.statusPort", format!("{v} is not a port (1–65535)")))?,
                None => p.status_port,
            },
        };
        if status_port != 15020 || proxy_config.contains_key("statusPort") {
            proxy_config.insert("statusPort".into(), serde_json::json!(status_port));
        }

        let mode = get("sidecar.istio.io/interceptionMode").unwrap_or(&p.interception_mode);
        let capture = match mode {
            "NONE" => None,
            "REDIRECT" => Some(capture_options(annotations, values, status_port)?),
            "TPROXY" => {
                return Err(InjectError::new(
                    at("sidecar.istio.io/interceptionMode"),
                    "TPROXY is not supported by weft yet (transparent listeners are not built); use REDIRECT",
                ))
            }
            other => {
                return Err(InjectError::new(at("sidecar.istio.io/interceptionMode"), format!("{other:?} is not REDIRECT, TPROXY or NONE")))
            }
        };

        let mut requests = BTreeMap::new();
        let mut limits = BTreeMap::new();
        for (key, is_limit, resource) in [
            ("sidecar.istio.io/proxyCPU", false, "cpu"),
            ("sidecar.istio.io/proxyMemory", false, "memory"),
            ("sidecar.istio.io/proxyCPULimit", true, "cpu"),
            ("sidecar.istio.io/proxyMemoryLimit", true, "memory"),
        ] {
            if let Some(q) = get(key) {
                check_quantity(q).map_err(|m| InjectError::new(at(key), m))?;
                let map = if is_limit { &mut limits } else { &mut requests };
                map.insert(resource.to_owned(), q.to_owned());
            }
        }
        // As Istio's template: any of the four annotations replaces the values' resources.
        if requests.is_empty() && limits.is_empty() {
            requests = p.requests.clone();
            limits = p.limits.clone();
        }

        let int = |key: &str, default: i32| -> Result<i32, InjectError> {
            match get(key) {
                None => Ok(default),
                Some(v) => v
                    .parse::<i32>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| InjectError::new(at(key), format!("{v:?} is not a non-negative whole number"))),
            }
        };
        let boolean = |key: &str, default: bool| -> Result<bool, InjectError> {
            match get(key) {
                None => Ok(default),
                Some("true") => Ok(true),
                Some("false") => Ok(false),
                Some(v) => Err(InjectError::new(at(key), format!("{v:?} is not true or false"))),
            }
        };
        let hold_in_config = proxy_config.get("holdApplicationUntilProxyStarts").and_then(Value::as_bool);
        let native = boolean("sidecar.istio.io/nativeSidecar", values.native_sidecars)?;

        Ok(PodSettings {
            template,
            data_plane,
            capture,
            proxy_image: get("sidecar.istio.io/proxyImage").filter(|i| i.contains('/')).map(str::to_owned),
            requests,
            limits,
            log_level: get("sidecar.istio.io/logLevel").unwrap_or(&p.log_level).to_owned(),
            component_log_level: get("sidecar.istio.io/componentLogLevel").unwrap_or(&p.component_log_level).to_owned(),
            status_port,
            readiness_initial_delay_seconds: int(
                "readiness.status.sidecar.istio.io/initialDelaySeconds",
                p.readiness_initial_delay_seconds,
            )?,
            readiness_period_seconds: int("readiness.status.sidecar.istio.io/periodSeconds", p.readiness_period_seconds)?,
            readiness_failure_threshold: int("readiness.status.sidecar.istio.io/failureThreshold", p.readiness_failure_threshold)?,
            rewrite_probes: boolean("sidecar.istio.io/rewriteAppHTTPProbers", values.rewrite_app_probes)?,
            native,
            hold: !native && hold_in_config.unwrap_or(values.hold_application_until_proxy_starts),
            merge_metrics: boolean("prometheus.istio.io/merge-metrics", values.enable_prometheus_merge)?,
            proxy_config,
        })
    }
}

/// The capture flags the pod's `traffic.sidecar.istio.io/*` annotations give, checked as
/// `weft capture` will check them in the pod, so a bad range fails injection, not the pod.
fn capture_options(annotations: &Map<String, Value>, values: &Values, status_port: u16) -> Result<RawOptions, InjectError> {
    let p = &values.proxy;
    let mut raw = RawOptions { proxy_uid: p.uid.to_string(), proxy_gid: p.gid.to_string(), ..RawOptions::default() };
    let defaults = [
        ("includeOutboundIPRanges", &p.include_ip_ranges),
        ("excludeOutboundIPRanges", &p.exclude_ip_ranges),
        ("includeInboundPorts", &p.include_inbound_ports),
        ("excludeInboundPorts", &p.exclude_inbound_ports),
        ("includeOutboundPorts", &p.include_outbound_ports),
        ("excludeOutboundPorts", &p.exclude_outbound_ports),
    ];
    for (name, default) in defaults {
        raw.set_annotation(name, default);
    }
    for name in weft_capture::options::ANNOTATIONS.iter().filter(|n| **n != "interceptionMode") {
        if let Some(v) = annotations.get(&format!("traffic.sidecar.istio.io/{name}")).and_then(Value::as_str) {
            raw.set_annotation(name, v);
        }
    }
    // The status port is never captured: the kubelet's probes reach it directly. Each port
    // once, so an injected pod's own annotation (with 15020 in it) reads back the same.
    if status_port != 15020 {
        raw.inbound_ports_exclude = raw.inbound_ports_exclude.replace("15020", &status_port.to_string());
    }
    let mut seen = Vec::new();
    for port in raw.inbound_ports_exclude.split(',').map(str::trim) {
        if !seen.contains(&port) {
            seen.push(port);
        }
    }
    raw.inbound_ports_exclude = seen.join(",");
    if let Err(e) = CaptureConfig::from_raw(&raw) {
        let name = match e.option {
            "-i" => "includeOutboundIPRanges",
            "-x" => "excludeOutboundIPRanges",
            "-b" => "includeInboundPorts",
            "-d" => "excludeInboundPorts",
            "-q" => "includeOutboundPorts",
            "-o" => "excludeOutboundPorts",
            "-c" => "excludeInterfaces",
            _ => "",
        };
        let key = format!("traffic.sidecar.istio.io/{name}");
        let at = if annotations.contains_key(&key) {
            format!("metadata.annotations[{key}]")
        } else {
            format!("the injector's proxy values ({name})")
        };
        return Err(InjectError::new(at, format!("{:?}: {}", e.value, e.reason)));
    }
    Ok(raw)
}

/// A Kubernetes quantity: a decimal number with an optional suffix (`100m`, `1.5Gi`, `2`).
fn check_quantity(q: &str) -> Result<(), String> {
    const SUFFIXES: &[&str] = &["", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let end = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(end);
    let number_ok = !number.is_empty() && number.matches('.').count() <= 1 && number != ".";
    if number_ok && SUFFIXES.contains(&suffix) {
        Ok(())
    } else {
        Err(format!("{q:?} is not a Kubernetes quantity (like 100m, 128Mi or 2)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(annotations: serde_json::Value) -> Result<(PodSettings, Vec<String>), InjectError> {
        let mut warnings = Vec::new();
        let Value::Object(a) = annotations else { panic!("object") };
        PodSettings::read(&a, None, &Values::default(), &mut warnings).map(|s| (s, warnings))
    }

    #[test]
    fn bad_values_name_their_annotation() {
        let e = read(serde_json::json!({"traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0/8"})).unwrap_err();
        assert_eq!(e.at, "metadata.annotations[traffic.sidecar.istio.io/includeOutboundIPRanges]", "{e}");
        let e = read(serde_json::json!({"sidecar.istio.io/proxyCPU": "lots"})).unwrap_err();
        assert_eq!(e.at, "metadata.annotations[sidecar.istio.io/proxyCPU]");
        let e = read(serde_json::json!({"sidecar.istio.io/interceptionMode": "TPROXY"})).unwrap_err();
        assert!(e.message.contains("not supported"), "{e}");
        let e = read(serde_json::json!({"traffic.sidecar.istio.io/kubevirtInterfaces": "net1"})).unwrap_err();
        assert!(e.message.contains("remove the annotation"), "{e}");
        let e = read(serde_json::json!({"weft.io/data-plane": "linkerd"})).unwrap_err();
        assert!(e.message.contains("\"envoy\""), "{e}");
    }

    #[test]
    fn a_pods_proxy_metadata_adds_to_the_meshs() {
        let default_config = serde_json::json!({"proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true", "A": "mesh"}, "concurrency": 2})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let values = Values { default_config, ..Values::default() };
        let Value::Object(a) = serde_json::json!({"proxy.istio.io/config": "proxyMetadata: {A: pod, B: pod}\nconcurrency: 1"}) else {
            panic!("object")
        };
        let s = PodSettings::read(&a, None, &values, &mut Vec::new()).expect("settings");
        assert_eq!(
            s.proxy_config.get("proxyMetadata"),
            Some(&serde_json::json!({"ISTIO_META_DNS_CAPTURE": "true", "A": "pod", "B": "pod"})),
            "map entries merge, the pod's winning"
        );
        assert_eq!(s.proxy_config.get("concurrency"), Some(&serde_json::json!(1)));
    }

    #[test]
    fn unknown_istio_annotations_are_warned_by_name_and_others_left_alone() {
        let (_, w) = read(serde_json::json!({"sidecar.istio.io/userVolume": "{}", "example.com/x": "y"})).expect("settings");
        assert_eq!(w, ["metadata.annotations[sidecar.istio.io/userVolume]: not acted on by weft's injector; ignored"]);
    }

    #[test]
    fn resources_and_hold_follow_istio() {
        let (s, _) = read(serde_json::json!({"sidecar.istio.io/proxyMemory": "64Mi"})).expect("settings");
        assert_eq!(s.requests, BTreeMap::from([("memory".to_owned(), "64Mi".to_owned())]));
        assert!(s.limits.is_empty(), "one resource annotation replaces the defaults, as in Istio");
        let (s, _) = read(serde_json::json!({"sidecar.istio.io/nativeSidecar": "false", "proxy.istio.io/config": "holdApplicationUntilProxyStarts: false"})).expect("settings");
        assert!(!s.native && !s.hold);
        assert!(check_quantity("1.5Gi").is_ok() && check_quantity("2").is_ok() && check_quantity("1.").is_ok());
        assert!(check_quantity("").is_err() && check_quantity("1Q").is_err());
    }
}
