//! MeshConfig `extensionProviders` and `defaultProviders`: the named places Telemetry resources
//! send traces, metrics and access logs. weft implements `prometheus`, `zipkin`,
//! `opentelemetry` (tracing over OTLP), `envoyFileAccessLog` and `envoyOtelAls` (access logs
//! over OTLP); a provider of another kind is
//! accepted with a warning naming it, and a Telemetry that names one is reported where it is
//! used (`weft analyze`), never applied half way.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawProvider")]
pub struct ExtensionProvider {
    pub name: String,
    pub provider: Provider,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Provider {
    Prometheus,
    Zipkin(ZipkinProvider),
    OpenTelemetry(OtelProvider),
    EnvoyFileAccessLog(FileAccessLogProvider),
    /// Access logs as OpenTelemetry log records over OTLP/gRPC.
    EnvoyOtelAls(OtelAlsProvider),
    /// A kind weft does not implement, by its field name (`skywalking`, `envoyExtAuthzHttp`, …).
    Other(&'static str),
}

impl Provider {
    pub fn kind(&self) -> &'static str {
        match self {
            Provider::Prometheus => "prometheus",
            Provider::Zipkin(_) => "zipkin",
            Provider::OpenTelemetry(_) => "opentelemetry",
            Provider::EnvoyFileAccessLog(_) => "envoyFileAccessLog",
            Provider::EnvoyOtelAls(_) => "envoyOtelAls",
            Provider::Other(k) => k,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZipkinProvider {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, alias = "max_tag_length")]
    pub max_tag_length: Option<u32>,
    #[serde(default, rename = "enable64bitTraceId", alias = "enable_64bit_trace_id")]
    pub enable_64bit_trace_id: Option<bool>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default, alias = "trace_context_option")]
    pub trace_context_option: Option<String>,
    #[serde(default)]
    pub timeout: Option<serde_yaml::Value>,
    #[serde(default)]
    pub headers: Option<serde_yaml::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelProvider {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, alias = "max_tag_length")]
    pub max_tag_length: Option<u32>,
    /// OTLP over HTTP (`/v1/traces` by default) instead of gRPC.
    #[serde(default)]
    pub http: Option<OtelHttp>,
    #[serde(default)]
    pub grpc: Option<serde_yaml::Value>,
    #[serde(default, alias = "resource_detectors")]
    pub resource_detectors: Option<serde_yaml::Value>,
    #[serde(default, alias = "dynamic_sampler")]
    pub dynamic_sampler: Option<serde_yaml::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelHttp {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub timeout: Option<crate::duration::GoDuration>,
    #[serde(default)]
    pub headers: Option<serde_yaml::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileAccessLogProvider {
    #[serde(default)]
    pub path: String,
    #[serde(default, alias = "log_format")]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelAlsProvider {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, alias = "log_name")]
    pub log_name: Option<String>,
    #[serde(default, alias = "log_format")]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogFormat {
    #[serde(default)]
    pub text: Option<String>,
    /// JSON lines: key → Envoy format command.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultProviders {
    #[serde(default)]
    pub tracing: Vec<String>,
    #[serde(default)]
    pub metrics: Vec<String>,
    #[serde(default, alias = "access_logging")]
    pub access_logging: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawProvider {
    #[serde(default)]
    name: String,
    #[serde(default)]
    prometheus: Option<serde_yaml::Value>,
    #[serde(default)]
    zipkin: Option<ZipkinProvider>,
    #[serde(default)]
    opentelemetry: Option<OtelProvider>,
    #[serde(default, alias = "envoy_file_access_log")]
    envoy_file_access_log: Option<FileAccessLogProvider>,
    #[serde(default, alias = "envoy_otel_als")]
    envoy_otel_als: Option<OtelAlsProvider>,
    #[serde(default, alias = "envoy_ext_authz_http")]
    envoy_ext_authz_http: Option<serde_yaml::Value>,
    #[serde(default, alias = "envoy_ext_authz_grpc")]
    envoy_ext_authz_grpc: Option<serde_yaml::Value>,
    #[serde(default, alias = "envoy_http_als")]
    envoy_http_als: Option<serde_yaml::Value>,
    #[serde(default, alias = "envoy_tcp_als")]
    envoy_tcp_als: Option<serde_yaml::Value>,
    #[serde(default)]
    skywalking: Option<serde_yaml::Value>,
    #[serde(default)]
    datadog: Option<serde_yaml::Value>,
    #[serde(default)]
    stackdriver: Option<serde_yaml::Value>,
    #[serde(default)]
    lightstep: Option<serde_yaml::Value>,
    #[serde(default)]
    sds: Option<serde_yaml::Value>,
}

impl TryFrom<RawProvider> for ExtensionProvider {
    type Error = String;

    fn try_from(r: RawProvider) -> Result<Self, String> {
        let mut kinds: Vec<Provider> = Vec::new();
        if r.prometheus.is_some() {
            kinds.push(Provider::Prometheus);
        }
        if let Some(z) = r.zipkin {
            kinds.push(Provider::Zipkin(z));
        }
        if let Some(o) = r.opentelemetry {
            kinds.push(Provider::OpenTelemetry(o));
        }
        if let Some(f) = r.envoy_file_access_log {
            kinds.push(Provider::EnvoyFileAccessLog(f));
        }
        if let Some(o) = r.envoy_otel_als {
            kinds.push(Provider::EnvoyOtelAls(o));
        }
        for (set, kind) in [
            (r.envoy_ext_authz_http.is_some(), "envoyExtAuthzHttp"),
            (r.envoy_ext_authz_grpc.is_some(), "envoyExtAuthzGrpc"),
            (r.envoy_http_als.is_some(), "envoyHttpAls"),
            (r.envoy_tcp_als.is_some(), "envoyTcpAls"),
            (r.skywalking.is_some(), "skywalking"),
            (r.datadog.is_some(), "datadog"),
            (r.stackdriver.is_some(), "stackdriver"),
            (r.lightstep.is_some(), "lightstep"),
            (r.sds.is_some(), "sds"),
        ] {
            if set {
                kinds.push(Provider::Other(kind));
            }
        }
        let name = r.name;
        match kinds.len() {
            1 => Ok(ExtensionProvider { name, provider: kinds.remove(0) }),
            0 => {
                Err(format!("extension provider {name:?} sets no provider kind (prometheus, zipkin, opentelemetry, envoyFileAccessLog, …)"))
            }
            _ => Err(format!(
                "extension provider {name:?} sets {} provider kinds; set exactly one",
                kinds.iter().map(Provider::kind).collect::<Vec<_>>().join(" and ")
            )),
        }
    }
}

/// Istio's providers that exist without being listed (its default MeshConfig).
pub const BUILT_IN: [&str; 2] = ["prometheus", "envoy"];

/// A provider by name, as a Telemetry resolves it: listed ones first (Istio compares names
/// without case), then the built-in `prometheus` and `envoy` (a file access log on stdout).
pub fn find<'a>(providers: &'a [ExtensionProvider], name: &str) -> Option<std::borrow::Cow<'a, ExtensionProvider>> {
    if let Some(p) = providers.iter().find(|p| p.name.eq_ignore_ascii_case(name)) {
        return Some(std::borrow::Cow::Borrowed(p));
    }
    let provider = match name.to_ascii_lowercase().as_str() {
        "prometheus" => Provider::Prometheus,
        "envoy" => Provider::EnvoyFileAccessLog(FileAccessLogProvider { path: "/dev/stdout".into(), log_format: None }),
        _ => return None,
    };
    Some(std::borrow::Cow::Owned(ExtensionProvider { name: name.to_ascii_lowercase(), provider }))
}

/// One finding about the providers: an error, or a warning about something weft does not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderProblem {
    pub error: bool,
    pub path: String,
    pub message: String,
}

fn port_ok(p: u32) -> bool {
    (1..=65535).contains(&p)
}

/// Istio's rules for the list (unique, non-empty names; a service and port where one is
/// needed), and a warning for each provider kind or field weft does not implement.
pub fn check(list: &[ExtensionProvider], defaults: &DefaultProviders) -> Vec<ProviderProblem> {
    let mut out = Vec::new();
    let mut err = |path: String, message: String| out.push(ProviderProblem { error: true, path, message });
    let mut seen = std::collections::BTreeSet::new();
    for (i, p) in list.iter().enumerate() {
        let path = format!("extensionProviders[{i}]");
        if p.name.is_empty() {
            err(format!("{path}.name"), "extension provider name cannot be empty".into());
        } else if !seen.insert(p.name.to_ascii_lowercase()) {
            err(format!("{path}.name"), format!("duplicate extension provider name {}", p.name));
        }
        let service_port = |kind: &str, service: &str, port: u32, err: &mut dyn FnMut(String, String)| {
            if service.is_empty() {
                err(
                    format!("{path}.{kind}.service"),
                    "service must be set (the collector's host, like zipkin.istio-system.svc.cluster.local)".into(),
                );
            }
            if !port_ok(port) {
                err(format!("{path}.{kind}.port"), format!("port {port} is out of range 1-65535"));
            }
        };
        match &p.provider {
            Provider::Zipkin(z) => {
                service_port("zipkin", &z.service, z.port, &mut err);
                if let Some(o) = z.trace_context_option.as_deref().filter(|o| !matches!(*o, "USE_B3" | "USE_B3_WITH_W3C_PROPAGATION")) {
                    err(format!("{path}.zipkin.traceContextOption"), format!("{o:?} is not USE_B3 or USE_B3_WITH_W3C_PROPAGATION"));
                }
            }
            Provider::OpenTelemetry(o) => service_port("opentelemetry", &o.service, o.port, &mut err),
            Provider::EnvoyOtelAls(o) => {
                service_port("envoyOtelAls", &o.service, o.port, &mut err);
                if o.log_format.as_ref().is_some_and(|l| l.text.is_some() && l.labels.is_some()) {
                    err(format!("{path}.envoyOtelAls.logFormat"), "only one of text or labels may be set".into());
                }
            }
            Provider::EnvoyFileAccessLog(f) => {
                if f.path.is_empty() {
                    err(format!("{path}.envoyFileAccessLog.path"), "path must be set (a file, or /dev/stdout)".into());
                }
                if f.log_format.as_ref().is_some_and(|l| l.text.is_some() && l.labels.is_some()) {
                    err(format!("{path}.envoyFileAccessLog.logFormat"), "only one of text or labels may be set".into());
                }
            }
            Provider::Prometheus | Provider::Other(_) => {}
        }
    }
    let mut warn = |path: String, message: String| out.push(ProviderProblem { error: false, path, message });
    for (i, p) in list.iter().enumerate() {
        let path = format!("extensionProviders[{i}]");
        match &p.provider {
            Provider::Other(kind @ ("envoyExtAuthzHttp" | "envoyExtAuthzGrpc")) => warn(
                format!("{path}.{kind}"),
                format!(
                    "weft does not call external authorization providers: an AuthorizationPolicy with action CUSTOM naming {:?} is refused",
                    p.name
                ),
            ),
            Provider::Other(kind) => warn(
                format!("{path}.{kind}"),
                format!("weft does not implement {kind} providers: a Telemetry naming {:?} is reported and not applied", p.name),
            ),
            // `path` and `traceContextOption` of a zipkin provider, `http.path` and `http.timeout`
            // of an opentelemetry one are acted on (`weft_control::translate::tracing`).
            Provider::Zipkin(z) => {
                let unread =
                    [(z.max_tag_length.is_some(), "maxTagLength"), (z.timeout.is_some(), "timeout"), (z.headers.is_some(), "headers")];
                for (_, field) in unread.into_iter().filter(|(set, _)| *set) {
                    warn(format!("{path}.zipkin.{field}"), "accepted, but weft does not act on this field yet".into());
                }
            }
            Provider::OpenTelemetry(o) => {
                let unread = [
                    (o.max_tag_length.is_some(), "maxTagLength"),
                    (o.grpc.is_some(), "grpc"),
                    (o.resource_detectors.is_some(), "resourceDetectors"),
                    (o.dynamic_sampler.is_some(), "dynamicSampler"),
                    (o.http.as_ref().is_some_and(|h| h.headers.is_some()), "http.headers"),
                ];
                for (_, field) in unread.into_iter().filter(|(set, _)| *set) {
                    warn(format!("{path}.opentelemetry.{field}"), "accepted, but weft does not act on this field yet".into());
                }
            }
            Provider::Prometheus | Provider::EnvoyFileAccessLog(_) | Provider::EnvoyOtelAls(_) => {}
        }
    }
    for (field, names) in [("tracing", &defaults.tracing), ("metrics", &defaults.metrics), ("accessLogging", &defaults.access_logging)] {
        for (i, n) in names.iter().enumerate() {
            if find(list, n).is_none() {
                out.push(ProviderProblem {
                    error: true,
                    path: format!("defaultProviders.{field}[{i}]"),
                    message: format!("no extension provider is named {n:?}"),
                });
            }
        }
    }
    out
}
