//! `DestinationRule`: what happens to traffic after routing picked a host (subsets, load
//! balancing, connection limits, outlier detection, TLS origination).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::common::PortSelector;
use crate::duration::GoDuration;
use crate::security::LabelSelector;
use crate::unsupported::NotImplemented;

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default)]
    pub subsets: Vec<Subset>,
    /// Refused by validation unless `*`: weft makes every resource visible everywhere, so a
    /// narrower export would apply the rule where it is not exported.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Istio applies such a rule only to the selected client workloads. Refused by validation:
    /// weft does not scope DestinationRules to workloads yet, and ignoring the selector would
    /// apply the rule's TLS and subsets to the wrong proxies.
    #[serde(default)]
    pub workload_selector: Option<LabelSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    #[serde(default)]
    pub tunnel: Option<NotImplemented>,
    #[serde(default)]
    pub proxy_protocol: Option<NotImplemented>,
    /// Accepted with a warning: it only caps concurrent retries.
    #[serde(default)]
    pub retry_budget: Option<RetryBudget>,
}

/// `trafficPolicy.retryBudget` (Envoy's retry budget).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    #[serde(default)]
    pub percent: Option<f64>,
    #[serde(default)]
    pub min_retry_concurrency: Option<u32>,
    #[serde(default)]
    pub budget_interval: Option<GoDuration>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    #[serde(default)]
    pub port: Option<PortSelector>,
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    Unspecified,
    LeastConn,
    LeastRequest,
    Random,
    Passthrough,
    RoundRobin,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    #[serde(default)]
    pub simple: Option<SimpleLb>,
    #[serde(default)]
    pub consistent_hash: Option<ConsistentHash>,
    /// Refused: locality failover and distribution decide which region gets traffic.
    #[serde(default)]
    pub locality_lb_setting: Option<NotImplemented>,
    /// Refused, as `localityLbSetting`: it decides which zone gets traffic.
    #[serde(default)]
    pub zone_aware_lb_setting: Option<NotImplemented>,
    /// Accepted with a warning: utilization-weighted balancing only spreads load differently
    /// across the same endpoints.
    #[serde(default)]
    pub backend_utilization: Option<BackendUtilization>,
    /// Slow start, the older spelling of `warmup.duration`. Accepted with a warning: it only
    /// ramps new endpoints up gradually.
    #[serde(default)]
    pub warmup_duration_secs: Option<GoDuration>,
    /// Accepted with a warning, as `warmupDurationSecs`.
    #[serde(default)]
    pub warmup: Option<WarmupConfiguration>,
}

/// Istio's `WarmupConfiguration` (Envoy's slow start).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmupConfiguration {
    /// Required by Istio; `None` is reported by validation, naming the field.
    #[serde(default)]
    pub duration: Option<GoDuration>,
    #[serde(default)]
    pub minimum_percent: Option<f64>,
    #[serde(default)]
    pub aggression: Option<f64>,
}

/// `loadBalancer.backendUtilization`: weights from the endpoints' ORCA load reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendUtilization {
    #[serde(default)]
    pub error_utilization_penalty_percent: Option<u32>,
    #[serde(default)]
    pub metric_names_for_computing_utilization: Vec<String>,
    #[serde(default)]
    pub weight_expiration_period: Option<GoDuration>,
    #[serde(default)]
    pub weight_stabilization_period: Option<GoDuration>,
    #[serde(default)]
    pub weight_update_period: Option<GoDuration>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHash {
    #[serde(default)]
    pub http_header_name: Option<String>,
    #[serde(default)]
    pub http_cookie: Option<HttpCookie>,
    #[serde(default)]
    pub use_source_ip: Option<bool>,
    #[serde(default)]
    pub http_query_parameter_name: Option<String>,
    #[serde(default)]
    pub ring_hash: Option<RingHash>,
    #[serde(default)]
    pub maglev: Option<Maglev>,
    #[serde(default)]
    pub minimum_ring_size: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    pub name: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub ttl: Option<GoDuration>,
    /// Refused: the cookie's attributes (`Secure`, `HttpOnly`, `SameSite`) protect it.
    #[serde(default)]
    pub attributes: Option<NotImplemented>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    #[serde(default)]
    pub minimum_ring_size: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maglev {
    #[serde(default)]
    pub table_size: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    #[serde(default)]
    pub tcp: Option<TcpSettings>,
    #[serde(default)]
    pub http: Option<HttpSettings>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    #[serde(default)]
    pub max_connections: Option<u32>,
    #[serde(default)]
    pub connect_timeout: Option<GoDuration>,
    #[serde(default)]
    pub idle_timeout: Option<GoDuration>,
    /// Accepted with a warning: socket keep-alive only detects dead connections sooner.
    #[serde(default)]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Accepted with a warning: it only recycles upstream connections.
    #[serde(default)]
    pub max_connection_duration: Option<GoDuration>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    #[serde(default)]
    pub probes: Option<u32>,
    #[serde(default)]
    pub time: Option<GoDuration>,
    #[serde(default)]
    pub interval: Option<GoDuration>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    #[serde(default)]
    pub http1_max_pending_requests: Option<u32>,
    #[serde(default)]
    pub http2_max_requests: Option<u32>,
    #[serde(default)]
    pub max_requests_per_connection: Option<u32>,
    #[serde(default)]
    pub max_retries: Option<u32>,
    #[serde(default)]
    pub idle_timeout: Option<GoDuration>,
    #[serde(default)]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    #[serde(default)]
    pub use_client_protocol: Option<bool>,
    /// Accepted with a warning, as `useClientProtocol`: tuning of the same upstream connections.
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    /// Accepted with a warning: HTTP/2 PINGs only detect dead connections sooner.
    #[serde(default)]
    pub http2_keep_alive: Option<ConnectionKeepalive>,
}

/// `connectionPool.http.http2KeepAlive`: HTTP/2 PING frames on upstream connections.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionKeepalive {
    /// Required by Istio, as is `timeout`; a missing one is reported by validation.
    #[serde(default)]
    pub interval: Option<GoDuration>,
    #[serde(default)]
    pub timeout: Option<GoDuration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    Default,
    DoNotUpgrade,
    Upgrade,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default)]
    pub consecutive_errors: Option<u32>,
    #[serde(default, rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<u32>,
    #[serde(default)]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(default)]
    pub interval: Option<GoDuration>,
    #[serde(default)]
    pub base_ejection_time: Option<GoDuration>,
    #[serde(default)]
    pub max_ejection_percent: Option<u32>,
    #[serde(default)]
    pub min_health_percent: Option<u32>,
    /// Accepted with a warning, as `consecutiveLocalOriginFailures`: they only change which
    /// failures count towards ejecting an endpoint.
    #[serde(default)]
    pub split_external_local_origin_errors: Option<bool>,
    #[serde(default)]
    pub consecutive_local_origin_failures: Option<u32>,
    /// Accepted with a warning: which responses count towards ejection only tunes it.
    #[serde(default)]
    pub outlier_detection_http_error_codes: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    pub mode: TlsMode,
    #[serde(default)]
    pub client_certificate: Option<String>,
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub ca_certificates: Option<String>,
    /// Refused by validation: weft would send no client certificate and check the server
    /// against the system roots instead of the secret's CA.
    #[serde(default)]
    pub credential_name: Option<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
    /// Refused: ignoring a revocation list would accept revoked certificates.
    #[serde(default)]
    pub ca_crl: Option<NotImplemented>,
}
