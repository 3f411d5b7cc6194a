//! NDS: the name table a sidecar that answers its workload's DNS is sent (Istio's
//! `istio.networking.nds.v1.NameTable`, the same message and type URL istiod sends pilot-agent,
//! so either side can talk to Istio's). One unnamed resource: every host the proxy may call
//! that has an address, with its addresses and, for a Kubernetes service, its short name and
//! namespace so the sidecar can answer `reviews`, `reviews.default` and `reviews.default.svc`.

use std::collections::BTreeMap;

/// The type URL, as Istio's.
pub const NAME_TABLE: &str = "type.googleapis.com/istio.networking.nds.v1.NameTable";

/// The registry value of a Kubernetes service, whose short forms the sidecar answers too.
pub const KUBERNETES: &str = "Kubernetes";

/// Hostname → what it resolves to. A `BTreeMap` so a table encodes to the same bytes every
/// time (prost writes map entries in iteration order) and an unchanged table is not re-sent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NameTable {
    #[prost(btree_map = "string, message", tag = "1")]
    pub table: BTreeMap<String, NameInfo>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct NameInfo {
    /// Addresses, as text (IPv4 or IPv6).
    #[prost(string, repeated, tag = "1")]
    pub ips: Vec<String>,
    /// `Kubernetes` for a Kubernetes service; anything else is answered by its full name only.
    #[prost(string, tag = "2")]
    pub registry: String,
    /// The Kubernetes service name (registry `Kubernetes` only).
    #[prost(string, tag = "3")]
    pub shortname: String,
    /// The Kubernetes namespace (registry `Kubernetes` only).
    #[prost(string, tag = "4")]
    pub namespace: String,
    /// Deprecated in Istio and never written by weft; read so a table from istiod decodes.
    #[prost(string, repeated, tag = "5")]
    pub alt_hosts: Vec<String>,
}
