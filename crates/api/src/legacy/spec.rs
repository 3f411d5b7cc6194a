//! The specs of Istio 0.x's routing kinds (`config.istio.io/v1alpha2`; the protos were
//! `istio.routing.v1alpha1.*`), as 2017–2018 files wrote them. Istio read them with jsonpb,
//! which takes each field's camelCase name and its proto (snake_case) name alike, and refused
//! unknown fields; so do these.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A service, or a subset of its instances (`labels`); `service` is a full host.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioService {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub domain: Option<String>,
    pub service: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteRule {
    pub destination: IstioService,
    #[serde(default)]
    pub precedence: i32,
    #[serde(rename = "match")]
    pub match_: Option<MatchCondition>,
    #[serde(default)]
    pub route: Vec<DestinationWeight>,
    pub redirect: Option<UriAuthority>,
    pub rewrite: Option<UriAuthority>,
    #[serde(default, alias = "websocket_upgrade")]
    pub websocket_upgrade: bool,
    #[serde(alias = "http_req_timeout")]
    pub http_req_timeout: Option<HttpTimeout>,
    #[serde(alias = "http_req_retries")]
    pub http_req_retries: Option<HttpRetry>,
    #[serde(alias = "http_fault")]
    pub http_fault: Option<HttpFault>,
    /// Never implemented: Istio's validation refused it.
    #[serde(alias = "l4_fault")]
    pub l4_fault: Option<serde_yaml::Value>,
    pub mirror: Option<IstioService>,
    #[serde(alias = "cors_policy")]
    pub cors_policy: Option<CorsPolicy>,
    #[serde(default, alias = "append_headers")]
    pub append_headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchCondition {
    pub source: Option<IstioService>,
    pub tcp: Option<serde_yaml::Value>,
    pub udp: Option<serde_yaml::Value>,
    pub request: Option<MatchRequest>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchRequest {
    /// Also `uri`, `scheme`, `method` and `authority`, which are not headers.
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationWeight {
    pub destination: Option<IstioService>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub weight: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UriAuthority {
    pub uri: Option<String>,
    pub authority: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpTimeout {
    #[serde(alias = "simple_timeout")]
    pub simple_timeout: Option<SimpleTimeout>,
    pub custom: Option<serde_yaml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimpleTimeout {
    pub timeout: Option<String>,
    #[serde(alias = "override_header_name")]
    pub override_header_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    #[serde(alias = "simple_retry")]
    pub simple_retry: Option<SimpleRetry>,
    pub custom: Option<serde_yaml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimpleRetry {
    pub attempts: Option<i64>,
    #[serde(alias = "per_try_timeout")]
    pub per_try_timeout: Option<String>,
    #[serde(alias = "override_header_name")]
    pub override_header_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFault {
    pub delay: Option<Delay>,
    pub abort: Option<Abort>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delay {
    pub percent: Option<f64>,
    #[serde(alias = "fixed_delay")]
    pub fixed_delay: Option<String>,
    #[serde(alias = "exponential_delay")]
    pub exponential_delay: Option<String>,
    #[serde(alias = "override_header_name")]
    pub override_header_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Abort {
    pub percent: Option<f64>,
    #[serde(alias = "http_status")]
    pub http_status: Option<u32>,
    #[serde(alias = "grpc_status")]
    pub grpc_status: Option<String>,
    #[serde(alias = "http2_error")]
    pub http2_error: Option<String>,
    #[serde(alias = "override_header_name")]
    pub override_header_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    #[serde(default, alias = "allow_origin")]
    pub allow_origin: Vec<String>,
    #[serde(default, alias = "allow_methods")]
    pub allow_methods: Vec<String>,
    #[serde(default, alias = "allow_headers")]
    pub allow_headers: Vec<String>,
    #[serde(default, alias = "expose_headers")]
    pub expose_headers: Vec<String>,
    #[serde(alias = "max_age")]
    pub max_age: Option<String>,
    #[serde(alias = "allow_credentials")]
    pub allow_credentials: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationPolicy {
    pub destination: IstioService,
    pub source: Option<IstioService>,
    #[serde(alias = "load_balancing")]
    pub load_balancing: Option<LoadBalancing>,
    #[serde(alias = "circuit_breaker")]
    pub circuit_breaker: Option<CircuitBreaker>,
    pub custom: Option<serde_yaml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancing {
    pub name: Option<String>,
    pub custom: Option<serde_yaml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    #[serde(alias = "simple_cb")]
    pub simple_cb: Option<SimpleCircuitBreaker>,
    pub custom: Option<serde_yaml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimpleCircuitBreaker {
    #[serde(alias = "max_connections")]
    pub max_connections: Option<u32>,
    #[serde(alias = "http_max_pending_requests")]
    pub http_max_pending_requests: Option<u32>,
    #[serde(alias = "http_max_requests")]
    pub http_max_requests: Option<u32>,
    #[serde(alias = "sleep_window")]
    pub sleep_window: Option<String>,
    #[serde(alias = "http_consecutive_errors")]
    pub http_consecutive_errors: Option<u32>,
    #[serde(alias = "http_detection_interval")]
    pub http_detection_interval: Option<String>,
    #[serde(alias = "http_max_requests_per_connection")]
    pub http_max_requests_per_connection: Option<u32>,
    #[serde(alias = "http_max_ejection_percent")]
    pub http_max_ejection_percent: Option<u32>,
    #[serde(alias = "http_max_retries")]
    pub http_max_retries: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    pub destination: IstioService,
    #[serde(default)]
    pub ports: Vec<EgressPort>,
    #[serde(default, alias = "use_egress_proxy")]
    pub use_egress_proxy: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressPort {
    pub port: u32,
    pub protocol: String,
}
