//! `MeshConfig` (Istio's mesh-wide settings), read from `--mesh mesh.yaml`.
//!
//! Every field of Istio's `MeshConfig` and `ProxyConfig` is accepted: the ones weft acts on are
//! parsed into the types below, the others are named in a warning (`fields` holds the list), and
//! a key that is not an Istio field is an error. Nothing is dropped silently.

use serde::Deserialize;

use crate::networking::OutboundTrafficPolicy;
use crate::{Diagnostic, Level};

mod fields;
pub mod providers;
#[cfg(test)]
mod tests;

pub use providers::{DefaultProviders, ExtensionProvider, Provider};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfig {
    #[serde(default, alias = "outbound_traffic_policy")]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    #[serde(default, alias = "default_config")]
    pub default_config: ProxyConfig,
    #[serde(default = "default_trust_domain", alias = "trust_domain")]
    pub trust_domain: String,
    #[serde(default = "yes", alias = "enable_auto_mtls")]
    pub enable_auto_mtls: bool,
    #[serde(default = "default_root_namespace", alias = "root_namespace")]
    pub root_namespace: String,
    /// Where every sidecar writes its access log (`/dev/stdout` as Istio's demo profile
    /// sets it); empty or absent: no access log.
    #[serde(default, alias = "access_log_file")]
    pub access_log_file: Option<String>,
    /// The access log line (Envoy's format commands); Istio's format when absent.
    #[serde(default, alias = "access_log_format")]
    pub access_log_format: Option<String>,
    /// Istio's `proxyHttpPort`: every sidecar also listens for HTTP proxy requests (absolute
    /// URIs, what `HTTP_PROXY` makes clients send) on this port; a proxy's own
    /// `HTTP_PROXY_PORT` metadata overrides it.
    #[serde(default, alias = "proxy_http_port")]
    pub proxy_http_port: Option<u16>,
    /// Istio's `enableTracing` (default true): false takes tracing out of every proxy, whatever
    /// `defaultConfig.tracing` says.
    #[serde(default = "yes", alias = "enable_tracing")]
    pub enable_tracing: bool,
    /// Where Telemetry resources send traces, metrics and logs, by name.
    #[serde(default, alias = "extension_providers")]
    pub extension_providers: Vec<ExtensionProvider>,
    /// The providers used where no Telemetry names one.
    #[serde(default, alias = "default_providers")]
    pub default_providers: DefaultProviders,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    #[serde(default)]
    pub concurrency: Option<u32>,
    #[serde(default)]
    pub tracing: Option<Tracing>,
    /// Environment every proxy gets (Istio's injector puts it in the sidecar's env); the
    /// `ISTIO_META_*` keys become node metadata. weft's own uses: `ISTIO_META_DNS_CAPTURE` and
    /// `ISTIO_META_DNS_AUTO_ALLOCATE` (the sidecar answers the workload's DNS).
    #[serde(default, alias = "proxy_metadata")]
    pub proxy_metadata: std::collections::BTreeMap<String, String>,
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
            enable_tracing: true,
            extension_providers: Vec::new(),
            default_providers: DefaultProviders::default(),
        }
    }
}

/// Reads a MeshConfig file (Istio's `mesh` ConfigMap value); the first error, naming its line
/// and field. Warnings are not returned: use [`load_mesh_checked`] to show them.
pub fn load_mesh(text: &str, file: &str) -> Result<MeshConfig, Box<Diagnostic>> {
    load_mesh_checked(text, file).map(|(mesh, _)| mesh).map_err(|errors| {
        Box::new(errors.into_iter().next().unwrap_or_else(|| Diagnostic {
            level: Level::Error,
            file: file.into(),
            line: None,
            resource: Some("MeshConfig".into()),
            field_path: String::new(),
            message: "not loaded".into(),
            code: Some(crate::codes::SCHEMA_ERROR),
        }))
    })
}

/// Reads a MeshConfig file (Istio's `mesh` ConfigMap value). On success, the config and a
/// warning for each Istio field weft does not act on yet; on failure, every error (unknown
/// fields with the nearest known name, wrong types, bad values), each with its line and field.
pub fn load_mesh_checked(text: &str, file: &str) -> Result<(MeshConfig, Vec<Diagnostic>), Vec<Diagnostic>> {
    let syntax = |line: Option<usize>, message: String| Diagnostic {
        level: Level::Error,
        file: file.into(),
        line,
        resource: None,
        field_path: String::new(),
        message: format!("YAML syntax error: {message}"),
        code: Some(crate::codes::SCHEMA_ERROR),
    };
    let value = match crate::yaml::documents(text) {
        (_, Some(e)) => return Err(vec![syntax(e.line, e.message)]),
        (docs, None) if docs.len() > 1 => return Err(vec![syntax(None, "a MeshConfig file holds one document".into())]),
        (docs, None) => docs.into_iter().next().unwrap_or(serde_yaml::Value::Null),
    };
    if value.is_null() {
        return Ok((MeshConfig::default(), Vec::new()));
    }
    let idx = crate::locate::LineIndex::build(text);
    let diag = |level: Level, path: String, message: String| Diagnostic {
        level,
        file: file.into(),
        line: idx.docs.first().map(|d| d.line_of(&path)),
        resource: Some("MeshConfig".into()),
        field_path: path,
        message,
        code: Some(if level == Level::Error { crate::codes::SCHEMA_ERROR } else { crate::codes::SCHEMA_WARNING }),
    };
    let (acted, problems) = fields::check(value);
    let mut diags: Vec<Diagnostic> = problems.into_iter().map(|p| diag(p.level, p.path, p.message)).collect();
    match serde_path_to_error::deserialize::<_, MeshConfig>(acted) {
        Err(e) => diags.push(diag(Level::Error, e.path().to_string(), e.into_inner().to_string())),
        Ok(mesh) => {
            diags.extend(check_values(&mesh).into_iter().map(|(path, message)| diag(Level::Error, path, message)));
            diags.extend(
                providers::check(&mesh.extension_providers, &mesh.default_providers)
                    .into_iter()
                    .filter(|p| !p.error)
                    .map(|p| diag(Level::Warning, p.path, p.message)),
            );
            if !diags.iter().any(|d| d.level == Level::Error) {
                sort_by_line(&mut diags);
                return Ok((mesh, diags));
            }
        }
    }
    diags.retain(|d| d.level == Level::Error);
    sort_by_line(&mut diags);
    Err(diags)
}

/// In file order, as a reader fixes them; diagnostics on one line keep their order.
fn sort_by_line(diags: &mut [Diagnostic]) {
    diags.sort_by_key(|d| d.line.unwrap_or(usize::MAX));
}

/// The checks serde cannot make on the fields weft acts on: (field path, message) of each.
fn check_values(mesh: &MeshConfig) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    if let Some(p) = mesh.default_config.tracing.as_ref().and_then(|t| t.sampling) {
        if !(0.0..=100.0).contains(&p) {
            errors.push(("defaultConfig.tracing.sampling".into(), format!("{p} is not a percentage (0 to 100)")));
        }
    }
    if let Some(z) = mesh.default_config.tracing.as_ref().and_then(|t| t.zipkin.as_ref()) {
        if z.host_port().is_none() {
            errors.push(("defaultConfig.tracing.zipkin.address".into(), format!("{:?} is not host:port", z.address)));
        }
    }
    errors.extend(
        providers::check(&mesh.extension_providers, &mesh.default_providers).into_iter().filter(|p| p.error).map(|p| (p.path, p.message)),
    );
    if mesh.proxy_http_port == Some(0) {
        errors.push(("proxyHttpPort".into(), "0 is not a port (leave it out for no HTTP proxy listener)".into()));
    }
    errors
}
