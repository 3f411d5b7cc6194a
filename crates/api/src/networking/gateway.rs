//! `Gateway` and `Sidecar`: what a gateway listens on, and what a sidecar may reach.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::common::{Port, WorkloadSelector};
use super::destination_rule::ConnectionPoolSettings;
use crate::unsupported::NotImplemented;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub servers: Vec<Server>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    pub port: Port,
    /// Refused by validation: the gateway listens on every address of its port, so it would
    /// also take traffic sent to other addresses.
    #[serde(default)]
    pub bind: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub default_endpoint: Option<NotImplemented>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    #[serde(default)]
    pub https_redirect: bool,
    #[serde(default)]
    pub mode: Option<ServerTlsMode>,
    #[serde(default)]
    pub server_certificate: Option<String>,
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub ca_certificates: Option<String>,
    #[serde(default)]
    pub credential_name: Option<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub min_protocol_version: Option<String>,
    #[serde(default)]
    pub max_protocol_version: Option<String>,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    // Refused, all of them: each either decides which client certificates are trusted (so
    // ignoring it would accept clients the user rejected, or reject ones they allowed) or
    // supplies the server's certificates.
    #[serde(default)]
    pub ca_crl: Option<NotImplemented>,
    #[serde(default)]
    pub ca_cert_credential_name: Option<NotImplemented>,
    #[serde(default)]
    pub credential_names: Option<NotImplemented>,
    #[serde(default)]
    pub tls_certificates: Option<NotImplemented>,
    #[serde(default)]
    pub verify_certificate_spki: Option<NotImplemented>,
    #[serde(default)]
    pub verify_certificate_hash: Option<NotImplemented>,
    #[serde(default)]
    pub insecure_skip_verify: Option<NotImplemented>,
    /// Refused: ignoring it would allow curves the user excluded.
    #[serde(default)]
    pub ecdh_curves: Option<NotImplemented>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    #[serde(default)]
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub ingress: Vec<IngressListener>,
    #[serde(default)]
    pub egress: Vec<EgressListener>,
    /// Limits on connections into the workload. Accepted with a warning: weft applies no
    /// inbound limits yet, and not limiting never sends traffic elsewhere.
    #[serde(default)]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default)]
    pub outbound_traffic_policy: Option<SidecarOutboundTrafficPolicy>,
}

/// A port the sidecar accepts inbound traffic on, and where it delivers it (Istio's
/// `IstioIngressListener`). This is how a workload whose traffic is not captured
/// (`INTERCEPTION_MODE: NONE`) gets inbound listeners at all.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressListener {
    pub port: Port,
    /// The address the listener binds (an IP; Istio's `unix://` sockets are not supported).
    #[serde(default)]
    pub bind: Option<String>,
    #[serde(default)]
    pub capture_mode: Option<CaptureMode>,
    /// Where the application listens: `127.0.0.1:PORT` or `0.0.0.0:PORT` (the workload's own
    /// address) as in Istio; weft also takes any other loopback address (see the validation).
    #[serde(default)]
    pub default_endpoint: Option<String>,
    #[serde(default)]
    pub tls: Option<NotImplemented>,
    /// Accepted with a warning, as the Sidecar's `inboundConnectionPool`.
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// Whether a Sidecar listener is reached by capture or by binding its port (Istio's
/// `CaptureMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    /// Whatever the proxy's interception mode implies.
    #[default]
    Default,
    /// Reached through capture (a filter chain of the virtual listener).
    Iptables,
    /// A real listener on `bind`:port.
    None,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressListener {
    /// `port`, `bind` and a `captureMode` other than DEFAULT are refused by validation: weft
    /// offers the egress hosts on every port through capture, so a narrower listener would let
    /// the workload reach more than the user allowed.
    #[serde(default)]
    pub port: Option<Port>,
    #[serde(default)]
    pub bind: Option<String>,
    #[serde(default)]
    pub capture_mode: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    #[default]
    AllowAny,
    RegistryOnly,
}

/// MeshConfig's `outboundTrafficPolicy`: absent `mode` keeps the mesh default, `ALLOW_ANY`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    #[serde(default)]
    pub mode: OutboundMode,
    #[serde(default)]
    pub egress_proxy: Option<NotImplemented>,
}

/// A Sidecar's `outboundTrafficPolicy`. Unlike MeshConfig's, a policy without `mode` is
/// `REGISTRY_ONLY`: that is the proto's zero value, and Istio uses the Sidecar's policy as
/// written whenever it is present.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarOutboundTrafficPolicy {
    #[serde(default = "registry_only")]
    pub mode: OutboundMode,
    #[serde(default)]
    pub egress_proxy: Option<NotImplemented>,
}

impl Default for SidecarOutboundTrafficPolicy {
    fn default() -> Self {
        SidecarOutboundTrafficPolicy { mode: registry_only(), egress_proxy: None }
    }
}

fn registry_only() -> OutboundMode {
    OutboundMode::RegistryOnly
}
