//! `envoy.config.route.v3`: route configurations, virtual hosts, routes and their actions.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::core::{
    DataSource, FractionalPercent, HeaderValueOption, Ignored, Int64Range, ProtoDuration, RegexMatcher, StringMatcher, Unsupported,
};
use crate::filters::{PerFilterConfig, UpgradeConfig};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfiguration {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHost>,
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
    pub validate_clusters: Option<bool>,
    #[serde(default)]
    pub internal_only_headers: Vec<String>,
    #[serde(default)]
    pub most_specific_header_mutations_wins: bool,
    pub max_direct_response_body_size_bytes: Option<u32>,
    /// Virtual hosts beyond those listed come over VHDS, each when a request names its host.
    pub vhds: Option<Vhds>,
    pub typed_per_filter_config: Option<Unsupported>,
    pub ignore_port_in_host_matching: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vhds {
    pub config_source: crate::core::ConfigSource,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    pub name: String,
    /// Empty only in VHDS's "no such host" answer; a route table refuses it.
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
    pub retry_policy: Option<RetryPolicy>,
    #[serde(default)]
    pub include_request_attempt_count: bool,
    #[serde(default)]
    pub include_attempt_count_in_response: bool,
    #[serde(default)]
    pub require_tls: TlsRequirement,
    pub virtual_clusters: Option<Unsupported>,
    pub rate_limits: Option<Unsupported>,
    pub cors: Option<Unsupported>,
    #[serde(default)]
    pub typed_per_filter_config: BTreeMap<String, PerFilterConfig>,
    pub hedge_policy: Option<Unsupported>,
    pub metadata: Option<Ignored>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "match")]
    pub match_: RouteMatch,
    pub route: Option<RouteAction>,
    pub redirect: Option<RedirectAction>,
    pub direct_response: Option<DirectResponseAction>,
    pub filter_action: Option<Unsupported>,
    pub non_forwarding_action: Option<Unsupported>,
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
    pub metadata: Option<Ignored>,
    pub decorator: Option<Decorator>,
    #[serde(default)]
    pub typed_per_filter_config: BTreeMap<String, PerFilterConfig>,
    pub tracing: Option<Ignored>,
    pub stat_prefix: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    pub prefix: Option<String>,
    pub path: Option<String>,
    pub safe_regex: Option<RegexMatcher>,
    pub path_separated_prefix: Option<String>,
    pub connect_matcher: Option<Unsupported>,
    pub path_match_policy: Option<Unsupported>,
    pub case_sensitive: Option<bool>,
    #[serde(default)]
    pub headers: Vec<HeaderMatcher>,
    #[serde(default)]
    pub query_parameters: Vec<QueryParameterMatcher>,
    pub grpc: Option<crate::filters::EmptyObject>,
    pub runtime_fraction: Option<Unsupported>,
    pub tls_context: Option<Unsupported>,
    pub dynamic_metadata: Option<Unsupported>,
    pub filter_state: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatcher {
    pub name: String,
    pub exact_match: Option<String>,
    pub safe_regex_match: Option<RegexMatcher>,
    pub range_match: Option<Int64Range>,
    pub present_match: Option<bool>,
    pub prefix_match: Option<String>,
    pub suffix_match: Option<String>,
    pub contains_match: Option<String>,
    pub string_match: Option<StringMatcher>,
    #[serde(default)]
    pub invert_match: bool,
    #[serde(default)]
    pub treat_missing_header_as_empty: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParameterMatcher {
    pub name: String,
    pub string_match: Option<StringMatcher>,
    pub present_match: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAction {
    pub cluster: Option<String>,
    pub cluster_header: Option<String>,
    pub weighted_clusters: Option<WeightedClusters>,
    pub cluster_specifier_plugin: Option<Unsupported>,
    pub cluster_not_found_response_code: Option<Ignored>,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<RegexRewrite>,
    pub path_rewrite_policy: Option<Unsupported>,
    pub host_rewrite_literal: Option<String>,
    pub auto_host_rewrite: Option<bool>,
    pub host_rewrite_header: Option<Unsupported>,
    pub host_rewrite_path_regex: Option<Unsupported>,
    pub timeout: Option<ProtoDuration>,
    pub idle_timeout: Option<ProtoDuration>,
    pub retry_policy: Option<RetryPolicy>,
    #[serde(default)]
    pub hash_policy: Vec<HashPolicy>,
    #[serde(default)]
    pub upgrade_configs: Vec<UpgradeConfig>,
    pub max_stream_duration: Option<MaxStreamDuration>,
    #[serde(default)]
    pub request_mirror_policies: Vec<RequestMirrorPolicy>,
    pub priority: Option<Ignored>,
    pub rate_limits: Option<Unsupported>,
    pub cors: Option<Unsupported>,
    pub hedge_policy: Option<Unsupported>,
    pub metadata_match: Option<Unsupported>,
    pub internal_redirect_policy: Option<Unsupported>,
}

/// Shadowing: a copy of the request goes to `cluster`, its response is dropped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestMirrorPolicy {
    pub cluster: String,
    pub runtime_fraction: Option<RuntimeFractionalPercent>,
    pub trace_sampled: Option<Ignored>,
    pub cluster_header: Option<Unsupported>,
    pub disable_shadow_host_suffix_append: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFractionalPercent {
    pub default_value: FractionalPercent,
    pub runtime_key: Option<Ignored>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxStreamDuration {
    pub max_stream_duration: Option<ProtoDuration>,
    pub grpc_timeout_header_max: Option<ProtoDuration>,
    pub grpc_timeout_header_offset: Option<ProtoDuration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedClusters {
    pub clusters: Vec<ClusterWeight>,
    pub total_weight: Option<u32>,
    pub runtime_key_prefix: Option<Ignored>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterWeight {
    pub name: String,
    #[serde(default)]
    pub weight: u32,
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
    pub host_rewrite_literal: Option<String>,
    pub metadata_match: Option<Unsupported>,
    pub typed_per_filter_config: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    pub pattern: RegexMatcher,
    pub substitution: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default)]
    pub retry_on: String,
    pub num_retries: Option<u32>,
    pub per_try_timeout: Option<ProtoDuration>,
    pub per_try_idle_timeout: Option<ProtoDuration>,
    pub retry_back_off: Option<RetryBackOff>,
    #[serde(default)]
    pub retriable_status_codes: Vec<u32>,
    pub retry_host_predicate: Option<Ignored>,
    pub host_selection_retry_max_attempts: Option<i64>,
    pub retry_priority: Option<Unsupported>,
    pub retriable_headers: Option<Unsupported>,
    pub retriable_request_headers: Option<Unsupported>,
    pub rate_limited_retry_back_off: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBackOff {
    pub base_interval: ProtoDuration,
    pub max_interval: Option<ProtoDuration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashPolicy {
    pub header: Option<HashHeader>,
    pub cookie: Option<HashCookie>,
    pub connection_properties: Option<HashConnectionProperties>,
    pub query_parameter: Option<HashQueryParameter>,
    pub filter_state: Option<Unsupported>,
    #[serde(default)]
    pub terminal: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashHeader {
    pub header_name: String,
    pub regex_rewrite: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashCookie {
    pub name: String,
    pub ttl: Option<ProtoDuration>,
    pub path: Option<String>,
    pub attributes: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashConnectionProperties {
    #[serde(default)]
    pub source_ip: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashQueryParameter {
    pub name: String,
}

/// `VirtualHost.require_tls`: which requests must have arrived over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum TlsRequirement {
    #[default]
    #[serde(rename = "NONE")]
    None,
    #[serde(rename = "EXTERNAL_ONLY")]
    ExternalOnly,
    #[serde(rename = "ALL")]
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[allow(clippy::enum_variant_names, reason = "names are Envoy's enum values")]
pub enum RedirectResponseCode {
    #[default]
    #[serde(rename = "MOVED_PERMANENTLY")]
    MovedPermanently,
    #[serde(rename = "FOUND")]
    Found,
    #[serde(rename = "SEE_OTHER")]
    SeeOther,
    #[serde(rename = "TEMPORARY_REDIRECT")]
    TemporaryRedirect,
    #[serde(rename = "PERMANENT_REDIRECT")]
    PermanentRedirect,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectAction {
    pub https_redirect: Option<bool>,
    pub scheme_redirect: Option<String>,
    pub host_redirect: Option<String>,
    pub port_redirect: Option<u32>,
    pub path_redirect: Option<String>,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<RegexRewrite>,
    #[serde(default)]
    pub response_code: RedirectResponseCode,
    #[serde(default)]
    pub strip_query: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponseAction {
    pub status: u32,
    pub body: Option<DataSource>,
}

/// `Route.decorator`: the operation name of the route's spans.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decorator {
    pub operation: String,
    pub propagate: Option<bool>,
}
