//! Shared Envoy v3 core types: addresses, durations, header options, matchers, percentages.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A `google.protobuf.Duration` in proto3 JSON form (`"5s"`, `"0.250s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtoDuration(pub Duration);

impl<'de> Deserialize<'de> for ProtoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ProtoDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"5s\" or \"0.25s\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ProtoDuration, E> {
                parse_duration(s).map(ProtoDuration).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Parses proto3 JSON durations: decimal seconds with an `s` suffix, up to nanosecond precision.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: expected seconds with an 's' suffix, e.g. \"5s\" or \"0.25s\"");
    let body = s.strip_suffix('s').ok_or_else(bad)?;
    if body.starts_with('-') {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    let (whole, frac) = match body.split_once('.') {
        Some((w, f)) => (w, f),
        None => (body, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if !whole.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) || frac.len() > 9 {
        return Err(bad());
    }
    let secs: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        let padded = format!("{frac:0<9}");
        padded.parse().map_err(|_| bad())?
    };
    Ok(Duration::new(secs, nanos))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub socket_address: Option<SocketAddress>,
    pub pipe: Option<Pipe>,
    pub envoy_internal_address: Option<Unsupported>,
}

/// A Unix domain socket (`envoy.config.core.v3.Pipe`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipe {
    pub path: String,
    pub mode: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketAddress {
    #[serde(default)]
    pub protocol: Option<String>,
    pub address: String,
    pub port_value: Option<u32>,
    pub named_port: Option<Unsupported>,
    pub resolver_name: Option<Unsupported>,
    #[serde(default)]
    pub ipv4_compat: bool,
}

/// A field weft knows of but does not implement; any value is refused with its path.
#[derive(Debug, Clone)]
pub struct Unsupported;

impl<'de> Deserialize<'de> for Unsupported {
    fn deserialize<D: Deserializer<'de>>(_d: D) -> Result<Self, D::Error> {
        Err(de::Error::custom("not supported"))
    }
}

/// `envoy.config.core.v3.Metadata`: only the untyped filter metadata is read (transport socket
/// matching keys off `envoy.transport_socket_match`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    #[serde(default)]
    pub filter_metadata: std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    pub typed_filter_metadata: Option<Ignored>,
}

/// A value weft accepts and deliberately ignores because it does not change behaviour
/// (metadata, stat tags, informational names).
#[derive(Debug, Clone, Default)]
pub struct Ignored;

impl<'de> Deserialize<'de> for Ignored {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::IgnoredAny::deserialize(d)?;
        Ok(Ignored)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValue {
    pub key: String,
    #[serde(default)]
    pub value: String,
    pub raw_value: Option<Unsupported>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[allow(clippy::enum_variant_names, reason = "names are Envoy's enum values")]
pub enum AppendAction {
    #[default]
    #[serde(rename = "APPEND_IF_EXISTS_OR_ADD")]
    AppendIfExistsOrAdd,
    #[serde(rename = "ADD_IF_ABSENT")]
    AddIfAbsent,
    #[serde(rename = "OVERWRITE_IF_EXISTS_OR_ADD")]
    OverwriteIfExistsOrAdd,
    #[serde(rename = "OVERWRITE_IF_EXISTS")]
    OverwriteIfExists,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValueOption {
    pub header: HeaderValue,
    pub append: Option<bool>,
    pub append_action: Option<AppendAction>,
    #[serde(default)]
    pub keep_empty_value: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexMatcher {
    pub regex: String,
    pub google_re2: Option<Ignored>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringMatcher {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    pub contains: Option<String>,
    pub safe_regex: Option<RegexMatcher>,
    #[serde(default)]
    pub ignore_case: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Denominator {
    #[default]
    #[serde(rename = "HUNDRED")]
    Hundred,
    #[serde(rename = "TEN_THOUSAND")]
    TenThousand,
    #[serde(rename = "MILLION")]
    Million,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FractionalPercent {
    #[serde(default)]
    pub numerator: u32,
    #[serde(default)]
    pub denominator: Denominator,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Int64Range {
    pub start: i64,
    pub end: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CidrRange {
    pub address_prefix: String,
    pub prefix_len: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    pub inline_string: Option<String>,
    pub inline_bytes: Option<String>,
    pub filename: Option<String>,
    pub environment_variable: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub id: Option<String>,
    pub cluster: Option<String>,
    /// Sent to the control plane as is (Istio reads `NAMESPACE`, `LABELS`, … from it).
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub locality: Option<Locality>,
    pub user_agent_name: Option<String>,
}

/// `envoy.config.core.v3.Locality`: where the node runs. Sent to the control plane with the
/// node (Istio's locality load balancing reads it) and shown in `/server_info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locality {
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub sub_zone: String,
}

/// Where a dynamic resource comes from. weft fetches everything over the one ADS stream, so
/// the only source it accepts is `ads: {}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSource {
    pub ads: Option<crate::filters::EmptyObject>,
    pub resource_api_version: Option<ApiVersion>,
    pub initial_fetch_timeout: Option<ProtoDuration>,
    pub api_config_source: Option<Unsupported>,
    pub path: Option<Unsupported>,
    pub path_config_source: Option<Unsupported>,
    #[serde(rename = "self")]
    pub self_: Option<Unsupported>,
    pub authorities: Option<Unsupported>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum ApiVersion {
    #[default]
    #[serde(rename = "V3")]
    V3,
    #[serde(rename = "AUTO")]
    Auto,
    #[serde(rename = "V2")]
    V2,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_proto3_json() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("0.25s"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.000000001s"), Ok(Duration::new(1, 1)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5ms").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
    }
}
