//! security.istio.io kinds. `PeerAuthentication` is stored now and enforced by the mTLS layer.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    #[serde(default)]
    pub mtls: Option<MutualTls>,
    /// Keyed by port. Kubernetes stores map keys as strings, so `kubectl get -o yaml` prints
    /// `"80":`; a hand-written file usually has `80:`. Both are read.
    #[serde(default, deserialize_with = "port_level_mtls")]
    // To a schema every key is a string: it says "a map", `port_level_mtls` checks the ports.
    #[schemars(with = "BTreeMap<String, MutualTls>")]
    pub port_level_mtls: BTreeMap<u32, MutualTls>,
}

/// Istio's `istio.type.v1beta1.WorkloadSelector` (`matchLabels`), also used by
/// DestinationRule's `workloadSelector`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    #[serde(default)]
    pub mode: MtlsMode,
}

/// A `portLevelMtls` key: a port written as a number or as a numeric string. The check happens
/// while the key is read, so an error's path is `spec.portLevelMtls.<key as written>`.
struct PortKey(u32);

impl<'de> Deserialize<'de> for PortKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PortKeyVisitor)
    }
}

struct PortKeyVisitor;

impl PortKeyVisitor {
    fn port<E: de::Error>(n: u64) -> Result<PortKey, E> {
        match u32::try_from(n) {
            Ok(p) if (1..=65535).contains(&p) => Ok(PortKey(p)),
            _ => Err(E::custom(format!("port {n} is out of range 1-65535"))),
        }
    }
}

impl Visitor<'_> for PortKeyVisitor {
    type Value = PortKey;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port number (1-65535)")
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<PortKey, E> {
        Self::port(n)
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<PortKey, E> {
        match u64::try_from(n) {
            Ok(n) => Self::port(n),
            Err(_) => Err(E::custom(format!("port {n} is out of range 1-65535"))),
        }
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<PortKey, E> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(E::custom(format!("{s:?} is not a port number (1-65535)")));
        }
        match s.parse::<u64>() {
            Ok(n) => Self::port(n),
            Err(_) => Err(E::custom(format!("port {s} is out of range 1-65535"))),
        }
    }
}

/// Reads `portLevelMtls`. Only called when the field is present: Istio refuses a present but
/// empty map ("port level mTLS, if defined, must have at least one element").
fn port_level_mtls<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, MutualTls>, D::Error> {
    struct PortMap;
    impl<'de> Visitor<'de> for PortMap {
        type Value = BTreeMap<u32, MutualTls>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map from port to {mode: …}")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(PortKey(p)) = m.next_key()? {
                let v: MutualTls = m.next_value()?;
                if out.insert(p, v).is_some() {
                    return Err(de::Error::custom(format!("port {p} is listed twice")));
                }
            }
            if out.is_empty() {
                return Err(de::Error::custom("must list at least one port when set"));
            }
            Ok(out)
        }
    }
    d.deserialize_map(PortMap)
}
