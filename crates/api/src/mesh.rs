//! `MeshConfig` (Istio's mesh-wide settings), read from `--mesh mesh.yaml`.

use serde::Deserialize;

use crate::networking::OutboundTrafficPolicy;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfig {
    #[serde(default)]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    #[serde(default)]
    pub default_config: ProxyConfig,
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    #[serde(default = "yes")]
    pub enable_auto_mtls: bool,
    #[serde(default = "default_root_namespace")]
    pub root_namespace: String,
    /// Where every sidecar writes its access log (`/dev/stdout` as Istio's demo profile
    /// sets it); empty or absent: no access log.
    #[serde(default)]
    pub access_log_file: Option<String>,
    /// The access log line (Envoy's format commands); Istio's format when absent.
    #[serde(default)]
    pub access_log_format: Option<String>,
    /// Istio's `proxyHttpPort`: every sidecar also listens for HTTP proxy requests (absolute
    /// URIs, what `HTTP_PROXY` makes clients send) on this port; a proxy's own
    /// `HTTP_PROXY_PORT` metadata overrides it.
    #[serde(default)]
    pub proxy_http_port: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    #[serde(default)]
    pub concurrency: Option<u32>,
    #[serde(default)]
    pub tracing: Option<Tracing>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    #[serde(default)]
    pub sampling: Option<f64>,
    /// Where sidecars report spans (Istio's `tracing.zipkin.address`, `host:port`).
    #[serde(default)]
    pub zipkin: Option<ZipkinTracing>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZipkinTracing {
    pub address: String,
}

impl ZipkinTracing {
    /// The collector's host and port; `None` unless the address is `host:port`.
    pub fn host_port(&self) -> Option<(&str, u16)> {
        let (host, port) = self.address.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
        (!host.is_empty()).then_some((host, port))
    }
}

fn default_trust_domain() -> String {
    "cluster.local".into()
}
fn default_root_namespace() -> String {
    "istio-system".into()
}
fn yes() -> bool {
    true
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            outbound_traffic_policy: OutboundTrafficPolicy::default(),
            default_config: ProxyConfig::default(),
            trust_domain: default_trust_domain(),
            enable_auto_mtls: true,
            root_namespace: default_root_namespace(),
            access_log_file: None,
            access_log_format: None,
            proxy_http_port: None,
        }
    }
}

/// Reads a MeshConfig file (Istio's `mesh` ConfigMap value), naming the line and field of any
/// error.
pub fn load_mesh(text: &str, file: &str) -> Result<MeshConfig, crate::Diagnostic> {
    let idx = crate::locate::LineIndex::build(text);
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| crate::Diagnostic {
        level: crate::Level::Error,
        file: file.into(),
        line: e.location().map(|l| l.line()),
        resource: None,
        field_path: String::new(),
        message: format!("YAML syntax error: {e}"),
    })?;
    if value.is_null() {
        return Ok(MeshConfig::default());
    }
    let error = |path: String, message: String| crate::Diagnostic {
        level: crate::Level::Error,
        file: file.into(),
        line: idx.docs.first().map(|d| d.line_of(&path)),
        resource: Some("MeshConfig".into()),
        field_path: path,
        message,
    };
    let mesh: MeshConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        error(path, e.into_inner().to_string())
    })?;
    if let Some(p) = mesh.default_config.tracing.as_ref().and_then(|t| t.sampling) {
        if !(0.0..=100.0).contains(&p) {
            return Err(error("defaultConfig.tracing.sampling".into(), format!("{p} is not a percentage (0 to 100)")));
        }
    }
    if let Some(z) = mesh.default_config.tracing.as_ref().and_then(|t| t.zipkin.as_ref()) {
        if z.host_port().is_none() {
            return Err(error("defaultConfig.tracing.zipkin.address".into(), format!("{:?} is not host:port", z.address)));
        }
    }
    if mesh.proxy_http_port == Some(0) {
        return Err(error("proxyHttpPort".into(), "0 is not a port (leave it out for no HTTP proxy listener)".into()));
    }
    Ok(mesh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_sampling_is_a_percentage() {
        let ok = load_mesh("defaultConfig:\n  tracing:\n    sampling: 2.5\n", "mesh.yaml").expect("valid");
        assert_eq!(ok.default_config.tracing.and_then(|t| t.sampling), Some(2.5));
        let err = load_mesh("defaultConfig:\n  tracing:\n    sampling: 250\n", "mesh.yaml").expect_err("out of range");
        assert_eq!(err.field_path, "defaultConfig.tracing.sampling");
        assert_eq!(err.line, Some(3));
    }

    #[test]
    fn zipkin_address_is_host_and_port() {
        let ok = load_mesh("defaultConfig:\n  tracing:\n    zipkin: {address: zipkin.istio-system:9411}\n", "mesh.yaml").expect("valid");
        let z = ok.default_config.tracing.and_then(|t| t.zipkin).expect("zipkin");
        assert_eq!(z.host_port(), Some(("zipkin.istio-system", 9411)));
        for bad in ["zipkin", "zipkin:0", ":9411", "zipkin:port"] {
            let err = load_mesh(&format!("defaultConfig:\n  tracing:\n    zipkin: {{address: \"{bad}\"}}\n"), "mesh.yaml").expect_err(bad);
            assert_eq!(err.field_path, "defaultConfig.tracing.zipkin.address", "{bad}");
        }
    }

    #[test]
    fn proxy_http_port_is_a_port() {
        assert_eq!(load_mesh("proxyHttpPort: 15080\n", "mesh.yaml").expect("valid").proxy_http_port, Some(15080));
        assert_eq!(load_mesh("proxyHttpPort: 0\n", "mesh.yaml").expect_err("zero").field_path, "proxyHttpPort");
        assert!(load_mesh("proxyHttpPort: 70000\n", "mesh.yaml").is_err());
    }
}
