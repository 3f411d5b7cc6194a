//! The network configuration on stdin: the spec's keys the plugin reads, and weft's own
//! `capture` block, which carries Istio's pod annotation names
//! (`traffic.sidecar.istio.io/<name>`) with their string values, checked into a
//! [`CaptureConfig`] before anything is written.
//!
//! ```json
//! {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "weft-cni",
//!  "excludeNamespaces": ["kube-system"],
//!  "capture": {"includeOutboundIPRanges": "10.96.0.0/12", "excludeInboundPorts": "9901"},
//!  "prevResult": {...}}
//! ```

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{CniError, DECODING_FAILURE, INCOMPATIBLE_VERSION, INVALID_CONFIG, SUPPORTED_VERSIONS};
use crate::options::{CaptureConfig, OptionError, RawOptions};

/// The parts of the network config the plugin uses. Every other key belongs to the runtime or
/// to another plugin in the chain (`ipam`, `runtimeConfig`, `args`, ...) and is ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    /// The result of the plugins before this one in the chain.
    pub prev_result: Option<Map<String, Value>>,
    /// Pods in these Kubernetes namespaces (`K8S_POD_NAMESPACE` in CNI_ARGS) are left alone.
    pub exclude_namespaces: Vec<String>,
    /// The checked `capture` block. Kept as a result so DEL can still clean up after a config
    /// that went bad since ADD; ADD and CHECK refuse it.
    pub capture: Result<Capture, CniError>,
    /// With an API server (`kubernetes.kubeconfig`, as `weft cni-install` writes it): capture
    /// only pods the injector gave a sidecar, with the rules their `istio-validation` container
    /// checks, instead of every pod with the `capture` block's.
    pub kubernetes: Option<KubeConf>,
    /// The network's nameservers (the config's `dns` and the earlier plugins'), for DNS capture.
    pub nameservers: Vec<String>,
}

/// How the plugin reaches the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeConf {
    pub kubeconfig: std::path::PathBuf,
}

/// What the config asks of a pod's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capture {
    /// `interceptionMode: NONE`: no capture at all, as with Istio's annotation.
    Off,
    On(Box<CaptureConfig>),
}

/// The top-level keys read; unknown ones are other plugins' and pass.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireConf {
    name: String,
    #[serde(default)]
    prev_result: Option<Value>,
    #[serde(default)]
    exclude_namespaces: Vec<String>,
    #[serde(default)]
    capture: Option<Value>,
    /// The spec's well-known `dns` key: its nameservers are the ones DNS capture covers.
    #[serde(default)]
    dns: Option<WireDns>,
    #[serde(default)]
    kubernetes: Option<WireKube>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireKube {
    kubeconfig: String,
}

#[derive(Deserialize, Default)]
struct WireDns {
    #[serde(default)]
    nameservers: Vec<String>,
}

/// weft's `capture` block: Istio's annotation names, string values as in the annotations.
/// Unknown keys are refused: a misspelt `includeOutboundIpRanges` would otherwise silently
/// capture everything.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WireCapture {
    #[serde(rename = "interceptionMode")]
    interception_mode: Option<String>,
    #[serde(rename = "includeOutboundIPRanges")]
    include_outbound_ip_ranges: Option<String>,
    #[serde(rename = "excludeOutboundIPRanges")]
    exclude_outbound_ip_ranges: Option<String>,
    #[serde(rename = "includeInboundPorts")]
    include_inbound_ports: Option<String>,
    #[serde(rename = "excludeInboundPorts")]
    exclude_inbound_ports: Option<String>,
    #[serde(rename = "excludeOutboundPorts")]
    exclude_outbound_ports: Option<String>,
    #[serde(rename = "includeOutboundPorts")]
    include_outbound_ports: Option<String>,
    #[serde(rename = "excludeInterfaces")]
    exclude_interfaces: Option<String>,
    #[serde(rename = "redirectDNS")]
    redirect_dns: Option<bool>,
    #[serde(rename = "captureAllDNS")]
    capture_all_dns: Option<bool>,
}

/// Parses stdin: not JSON is DECODING_FAILURE (with serde's line and column), a cniVersion
/// this plugin does not speak is INCOMPATIBLE_VERSION, a wrong key or value INVALID_CONFIG
/// naming it.
pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
    let value: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            DECODING_FAILURE,
            format!("the network config on stdin is not JSON: {e}"),
            "the runtime passes the plugin's network config as a JSON object on stdin",
        )
    })?;
    let Value::Object(mut obj) = value else {
        return Err(CniError::new(DECODING_FAILURE, format!("the network config on stdin is not a JSON object but {}", kind(&value)), ""));
    };
    let cni_version = match obj.remove("cniVersion") {
        Some(Value::String(v)) => v,
        Some(other) => {
            return Err(CniError::new(INVALID_CONFIG, format!("cniVersion: expected a string like \"1.0.0\", got {}", kind(&other)), ""))
        }
        None => return Err(incompatible("none (no cniVersion key, which means 0.1.0)")),
    };
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(incompatible(&format!("{cni_version:?}")));
    }
    let wire: WireConf = serde_path_to_error::deserialize(Value::Object(obj)).map_err(|e| invalid("", e))?;
    if wire.name.trim().is_empty() {
        return Err(CniError::new(INVALID_CONFIG, "name: the network name is empty", ""));
    }
    let prev_result = match wire.prev_result {
        None => None,
        Some(Value::Object(m)) => Some(m),
        Some(other) => {
            return Err(CniError::new(INVALID_CONFIG, format!("prevResult: expected a result object, got {}", kind(&other)), ""))
        }
    };
    // DNS capture covers the network's nameservers: the config's, and those the earlier
    // plugins reported.
    let mut nameservers = wire.dns.unwrap_or_default().nameservers;
    if let Some(Value::Array(servers)) = prev_result.as_ref().and_then(|r| r.get("dns")).and_then(|d| d.get("nameservers")) {
        nameservers.extend(servers.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    let kubernetes = match wire.kubernetes {
        Some(k) if k.kubeconfig.trim().is_empty() => {
            return Err(CniError::new(INVALID_CONFIG, "kubernetes.kubeconfig: empty", "the path of the kubeconfig weft cni-install wrote"))
        }
        Some(k) => Some(KubeConf { kubeconfig: k.kubeconfig.into() }),
        None => None,
    };
    Ok(NetConf {
        cni_version,
        name: wire.name,
        prev_result,
        exclude_namespaces: wire.exclude_namespaces,
        capture: capture(wire.capture, nameservers.clone()),
        kubernetes,
        nameservers,
    })
}

/// The checked `capture` block; no block means capture as an injected pod with no annotations.
fn capture(block: Option<Value>, nameservers: Vec<String>) -> Result<Capture, CniError> {
    let wire: WireCapture = match block {
        None | Some(Value::Null) => WireCapture::default(),
        Some(v @ Value::Object(_)) => serde_path_to_error::deserialize(v).map_err(|e| invalid("capture", e))?,
        Some(other) => {
            return Err(CniError::new(
                INVALID_CONFIG,
                format!("capture: expected an object of Istio annotation names, got {}", kind(&other)),
                "",
            ))
        }
    };
    if wire.interception_mode.as_deref().is_some_and(|m| m.trim().eq_ignore_ascii_case("NONE")) {
        return Ok(Capture::Off);
    }
    let mut raw = RawOptions::default();
    let annotated = [
        ("interceptionMode", wire.interception_mode),
        ("includeOutboundIPRanges", wire.include_outbound_ip_ranges),
        ("excludeOutboundIPRanges", wire.exclude_outbound_ip_ranges),
        ("includeInboundPorts", wire.include_inbound_ports),
        ("excludeInboundPorts", wire.exclude_inbound_ports),
        ("excludeOutboundPorts", wire.exclude_outbound_ports),
        ("includeOutboundPorts", wire.include_outbound_ports),
        ("excludeInterfaces", wire.exclude_interfaces),
    ];
    for (name, value) in annotated {
        if let Some(v) = value {
            raw.set_annotation(name, &v);
        }
    }
    raw.redirect_dns = wire.redirect_dns.unwrap_or(false);
    raw.capture_all_dns = wire.capture_all_dns.unwrap_or(false);
    raw.dns_servers = nameservers;
    CaptureConfig::from_raw(&raw).map(|cfg| Capture::On(Box::new(cfg))).map_err(|e| option_error(&e))
}

/// Names the `capture` key an istio-iptables option came from.
fn option_error(e: &OptionError) -> CniError {
    let key = match e.option {
        "-m" => "interceptionMode",
        "-i" => "includeOutboundIPRanges",
        "-x" => "excludeOutboundIPRanges",
        "-b" => "includeInboundPorts",
        "-d" => "excludeInboundPorts",
        "-o" => "excludeOutboundPorts",
        "-q" => "includeOutboundPorts",
        "-c" => "excludeInterfaces",
        "--redirect-dns" => {
            return CniError::new(
                INVALID_CONFIG,
                "capture.redirectDNS: no IPv4 nameserver to capture DNS for",
                "set capture.captureAllDNS to true, or list the cluster DNS in the config's dns.nameservers",
            )
        }
        // Not settable from the config (proxy ports and identities are Istio's fixed ones).
        other => other,
    };
    let msg = match e.option {
        "-x" if e.value == "*" => {
            format!("capture.{key}: \"*\" would exclude every destination; use includeOutboundIPRanges \"\" to capture none")
        }
        _ => format!("capture.{key}: {:?}: {}", e.value, e.reason),
    };
    CniError::new(INVALID_CONFIG, msg, "")
}

fn invalid(prefix: &str, e: serde_path_to_error::Error<serde_json::Error>) -> CniError {
    let path = e.path().to_string();
    let at = match (prefix, path.as_str()) {
        ("", ".") => String::new(),
        ("", p) => format!("{p}: "),
        (pre, ".") => format!("{pre}: "),
        (pre, p) => format!("{pre}.{p}: "),
    };
    CniError::new(INVALID_CONFIG, format!("{at}{}", e.into_inner()), "")
}

fn incompatible(found: &str) -> CniError {
    CniError::new(
        INCOMPATIBLE_VERSION,
        format!("incompatible CNI versions: the config's cniVersion is {found}; weft-cni supports {}", SUPPORTED_VERSIONS.join(", ")),
        "set cniVersion in the network config list to one of the supported versions",
    )
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{InboundPorts, InterceptMode, OutboundRanges};

    fn conf(capture: &str) -> Result<NetConf, CniError> {
        parse(format!(r#"{{"cniVersion":"1.0.0","name":"net","type":"weft-cni","capture":{capture}}}"#).as_bytes())
    }

    fn on(c: Result<Capture, CniError>) -> CaptureConfig {
        match c {
            Ok(Capture::On(cfg)) => *cfg,
            other => panic!("expected capture, got {other:?}"),
        }
    }

    #[test]
    fn no_capture_block_captures_like_an_injected_pod() {
        let c = parse(br#"{"cniVersion":"0.4.0","name":"net","type":"weft-cni","ipam":{"type":"host-local"}}"#).expect("valid");
        assert_eq!(c.cni_version, "0.4.0");
        assert_eq!(c.prev_result, None);
        let cfg = on(c.capture);
        assert_eq!(cfg, CaptureConfig::from_raw(&RawOptions::default()).expect("defaults"));
        assert_eq!(cfg.inbound, InboundPorts::All { except: vec![15090, 15021, 15020] });
    }

    #[test]
    fn annotation_names_map_onto_istio_iptables_options() {
        let cfg = on(conf(
            r#"{"interceptionMode":"TPROXY","includeOutboundIPRanges":"10.96.0.0/12","excludeOutboundIPRanges":"10.96.0.1/32",
                "includeInboundPorts":"*","excludeInboundPorts":"9901","excludeOutboundPorts":"5432","includeOutboundPorts":"443",
                "excludeInterfaces":"eth1","redirectDNS":true,"captureAllDNS":true}"#,
        )
        .expect("valid")
        .capture);
        assert_eq!(cfg.mode, InterceptMode::Tproxy);
        assert_eq!(cfg.outbound, OutboundRanges::Only(vec!["10.96.0.0/12".parse().expect("cidr")]));
        assert_eq!(cfg.outbound_exclude, vec!["10.96.0.1/32".parse().expect("cidr")]);
        assert_eq!(cfg.inbound, InboundPorts::All { except: vec![15090, 15021, 15020, 9901] }, "the proxy's ports stay excluded");
        assert_eq!((cfg.outbound_ports_exclude, cfg.outbound_ports_include), (vec![5432], vec![443]));
        assert_eq!(cfg.exclude_interfaces, vec!["eth1"]);
        assert!(cfg.dns.is_some());
    }

    #[test]
    fn interception_mode_none_turns_capture_off() {
        assert_eq!(conf(r#"{"interceptionMode":"NONE"}"#).expect("valid").capture, Ok(Capture::Off));
    }

    #[test]
    fn bad_values_name_the_capture_key() {
        let e = conf(r#"{"includeOutboundIPRanges":"10.0.0/8"}"#).expect("parses").capture.expect_err("bad CIDR");
        assert_eq!(e.code, INVALID_CONFIG);
        assert!(e.msg.starts_with(r#"capture.includeOutboundIPRanges: "10.0.0/8": not an IPv4 CIDR"#), "{}", e.msg);
        let e = conf(r#"{"excludeInboundPorts":"15090,x"}"#).expect("parses").capture.expect_err("bad port");
        assert!(e.msg.starts_with(r#"capture.excludeInboundPorts: "x""#), "{}", e.msg);
        let e = conf(r#"{"interceptionMode":"NAT"}"#).expect("parses").capture.expect_err("bad mode");
        assert!(e.msg.starts_with("capture.interceptionMode"), "{}", e.msg);
        let e = conf(r#"{"excludeOutboundIPRanges":"*"}"#).expect("parses").capture.expect_err("exclude all");
        assert!(e.msg.starts_with("capture.excludeOutboundIPRanges"), "{}", e.msg);
    }

    #[test]
    fn unknown_and_mistyped_capture_keys_are_refused_by_name() {
        let e = conf(r#"{"includeOutboundIpRanges":"10.0.0.0/8"}"#).expect("parses").capture.expect_err("unknown key");
        assert_eq!(e.code, INVALID_CONFIG);
        assert!(
            e.msg.starts_with("capture.includeOutboundIpRanges: unknown field `includeOutboundIpRanges`, expected one of"),
            "{}",
            e.msg
        );
        let e = conf(r#"{"redirectDNS":"yes"}"#).expect("parses").capture.expect_err("not a bool");
        assert!(e.msg.starts_with("capture.redirectDNS: invalid type"), "{}", e.msg);
        let e = conf(r#"["10.0.0.0/8"]"#).expect("parses").capture.expect_err("not an object");
        assert!(e.msg.starts_with("capture: expected an object"), "{}", e.msg);
    }

    #[test]
    fn dns_capture_takes_the_networks_nameservers() {
        let text = r#"{"cniVersion":"1.0.0","name":"net","type":"weft-cni","capture":{"redirectDNS":true},
            "prevResult":{"cniVersion":"1.0.0","ips":[],"dns":{"nameservers":["10.96.0.10"]}}}"#;
        let cfg = on(parse(text.as_bytes()).expect("valid").capture);
        assert_eq!(cfg.dns, Some(crate::options::DnsCapture::Servers(vec!["10.96.0.10".parse().expect("ip")])));
        let e = conf(r#"{"redirectDNS":true}"#).expect("parses").capture.expect_err("no nameserver");
        assert!(e.msg.starts_with("capture.redirectDNS") && e.details.contains("captureAllDNS"), "{e:?}");
    }

    #[test]
    fn envelope_errors_have_the_spec_codes() {
        let e = parse(b"{\"cniVersion\": \"1.0.0\",\n  \"name\": }").expect_err("syntax");
        assert_eq!(e.code, DECODING_FAILURE);
        assert!(e.msg.contains("line 2 column"), "{}", e.msg);
        assert_eq!(parse(b"").expect_err("empty").code, DECODING_FAILURE);
        assert_eq!(parse(b"[1]").expect_err("array").code, DECODING_FAILURE);
        let e = parse(br#"{"cniVersion":"0.2.0","name":"net","type":"weft-cni"}"#).expect_err("old");
        assert_eq!(e.code, INCOMPATIBLE_VERSION);
        assert!(e.msg.contains("\"0.2.0\"") && e.msg.contains("1.0.0"), "{}", e.msg);
        assert_eq!(parse(br#"{"name":"net","type":"weft-cni"}"#).expect_err("no version").code, INCOMPATIBLE_VERSION);
        let e = parse(br#"{"cniVersion":"1.0.0","type":"weft-cni"}"#).expect_err("no name");
        assert_eq!((e.code, e.msg.as_str()), (INVALID_CONFIG, "missing field `name`"));
        let e = parse(br#"{"cniVersion":"1.0.0","name":"n","excludeNamespaces":"kube-system"}"#).expect_err("not a list");
        assert!(e.msg.starts_with("excludeNamespaces: invalid type"), "{}", e.msg);
        let e = parse(br#"{"cniVersion":"1.0.0","name":"n","prevResult":[]}"#).expect_err("bad prevResult");
        assert!(e.msg.starts_with("prevResult:"), "{}", e.msg);
    }
}
