//! `ServiceEntry` and `WorkloadEntry`: services and workloads the platform does not know.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};

use super::common::{Location, Port, WorkloadSelector};

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub location: Location,
    #[serde(default)]
    pub resolution: Resolution,
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntry>,
    #[serde(default)]
    pub workload_selector: Option<WorkloadSelector>,
    /// Refused by validation unless `*`, as on every kind.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Identities the service's servers may present under mesh mTLS, besides its endpoints'
    /// service accounts (what auto mTLS and `ISTIO_MUTUAL` without `subjectAltNames` check).
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

/// How a ServiceEntry's endpoints are found. Istio's `DYNAMIC_DNS` (a dynamic forward proxy
/// for wildcard hosts) is refused by name: weft does not implement it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Resolution {
    #[default]
    None,
    Static,
    Dns,
    DnsRoundRobin,
}

impl<'de> Deserialize<'de> for Resolution {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "NONE" => Ok(Resolution::None),
            "STATIC" => Ok(Resolution::Static),
            "DNS" => Ok(Resolution::Dns),
            "DNS_ROUND_ROBIN" => Ok(Resolution::DnsRoundRobin),
            "DYNAMIC_DNS" => Err(serde::de::Error::custom("DYNAMIC_DNS is not supported by weft yet")),
            other => Err(serde::de::Error::custom(format!(
                "unknown resolution {other:?} (known: NONE, STATIC, DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS)"
            ))),
        }
    }
}

/// Any string, not an `enum`: `DYNAMIC_DNS` must reach the loader, which refuses it by name.
impl JsonSchema for Resolution {
    fn schema_name() -> Cow<'static, str> {
        "Resolution".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string"})
    }
}

/// A workload outside Kubernetes (also the shape of a ServiceEntry's `endpoints`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    /// An IP, a DNS name, or `unix://` (refused by weft for now). Empty only when `network` is
    /// set: Istio then reaches the workload through its network's gateway, which weft does not
    /// route through, so consumers must send such a workload no traffic.
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Accepted with a warning when there is an address: weft reaches it directly, as Istio
    /// does from a proxy whose own network is unset.
    #[serde(default)]
    pub network: Option<String>,
    /// Accepted with a warning: weft has no locality-aware load balancing.
    #[serde(default)]
    pub locality: Option<String>,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub service_account: Option<String>,
}
