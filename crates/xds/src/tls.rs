//! `envoy.extensions.transport_sockets.tls.v3`: transport sockets, TLS contexts and SDS secrets.

use serde::Deserialize;

use crate::core::{DataSource, Ignored, ProtoDuration, StringMatcher, Unsupported};
use crate::typed_any;

/// A listener filter chain's or a cluster's `transport_socket`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSocket {
    pub name: String,
    pub typed_config: Option<TransportSocketConfig>,
}

typed_any! {
    /// Transport sockets.
    pub enum TransportSocketConfig {
        DownstreamTls(Box<DownstreamTlsContext>) = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        UpstreamTls(Box<UpstreamTlsContext>) = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        RawBuffer(RawBuffer) = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuffer {}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownstreamTlsContext {
    pub common_tls_context: Option<CommonTlsContext>,
    pub require_client_certificate: Option<bool>,
    pub require_sni: Option<bool>,
    pub session_timeout: Option<ProtoDuration>,
    pub disable_stateless_session_resumption: Option<bool>,
    pub disable_stateful_session_resumption: Option<bool>,
    pub prefer_client_ciphers: Option<bool>,
    pub ocsp_staple_policy: Option<Ignored>,
    pub full_scan_certs_on_sni_mismatch: Option<Ignored>,
    pub session_ticket_keys: Option<Unsupported>,
    pub session_ticket_keys_sds_secret_config: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsContext {
    pub common_tls_context: Option<CommonTlsContext>,
    #[serde(default)]
    pub sni: String,
    pub auto_host_sni: Option<Unsupported>,
    pub auto_sni_san_validation: Option<Unsupported>,
    pub allow_renegotiation: Option<Ignored>,
    pub max_session_keys: Option<u32>,
    pub enforce_rsa_key_usage: Option<Ignored>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommonTlsContext {
    pub tls_params: Option<TlsParameters>,
    #[serde(default)]
    pub tls_certificates: Vec<TlsCertificate>,
    #[serde(default)]
    pub tls_certificate_sds_secret_configs: Vec<SdsSecretConfig>,
    pub validation_context: Option<CertificateValidationContext>,
    pub validation_context_sds_secret_config: Option<SdsSecretConfig>,
    pub combined_validation_context: Option<CombinedValidationContext>,
    #[serde(default)]
    pub alpn_protocols: Vec<String>,
    pub tls_certificate_provider_instance: Option<Unsupported>,
    pub custom_tls_certificate_selector: Option<Unsupported>,
    pub validation_context_certificate_provider: Option<Unsupported>,
    pub validation_context_certificate_provider_instance: Option<Unsupported>,
    pub custom_handshaker: Option<Unsupported>,
    pub handshaker_provider_instance: Option<Unsupported>,
    pub key_log: Option<Unsupported>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Default)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "TLS_AUTO")]
    Auto,
    #[serde(rename = "TLSv1_0")]
    V1_0,
    #[serde(rename = "TLSv1_1")]
    V1_1,
    #[serde(rename = "TLSv1_2")]
    V1_2,
    #[serde(rename = "TLSv1_3")]
    V1_3,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsParameters {
    #[serde(default)]
    pub tls_minimum_protocol_version: TlsVersion,
    #[serde(default)]
    pub tls_maximum_protocol_version: TlsVersion,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    #[serde(default)]
    pub ecdh_curves: Vec<String>,
    #[serde(default)]
    pub signature_algorithms: Vec<String>,
    pub compliance_policies: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificate {
    pub certificate_chain: Option<DataSource>,
    pub private_key: Option<DataSource>,
    pub password: Option<Unsupported>,
    pub pkcs12: Option<Unsupported>,
    pub watched_directory: Option<Unsupported>,
    pub private_key_provider: Option<Unsupported>,
    pub ocsp_staple: Option<Ignored>,
    pub signed_certificate_timestamp: Option<Ignored>,
}

/// `SubjectAltNameMatcher.san_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SanType {
    #[serde(rename = "SAN_TYPE_UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "EMAIL")]
    Email,
    #[serde(rename = "DNS")]
    Dns,
    #[serde(rename = "URI")]
    Uri,
    #[serde(rename = "IP_ADDRESS")]
    IpAddress,
    #[serde(rename = "OTHER_NAME")]
    OtherName,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectAltNameMatcher {
    pub san_type: SanType,
    pub matcher: StringMatcher,
    pub oid: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateValidationContext {
    pub trusted_ca: Option<DataSource>,
    #[serde(default)]
    pub match_typed_subject_alt_names: Vec<SubjectAltNameMatcher>,
    /// Deprecated by Envoy in favour of the typed form; Istio still sends it to old proxies.
    #[serde(default)]
    pub match_subject_alt_names: Vec<StringMatcher>,
    pub allow_expired_certificate: Option<bool>,
    pub max_verify_depth: Option<u32>,
    pub trust_chain_verification: Option<Unsupported>,
    pub verify_certificate_spki: Option<Unsupported>,
    pub verify_certificate_hash: Option<Unsupported>,
    pub require_signed_certificate_timestamp: Option<Unsupported>,
    pub crl: Option<Unsupported>,
    pub ca_certificate_provider_instance: Option<Unsupported>,
    pub system_root_certs: Option<Unsupported>,
    pub watched_directory: Option<Unsupported>,
    pub custom_validator_config: Option<Unsupported>,
    pub only_verify_leaf_cert_crl: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CombinedValidationContext {
    #[serde(default)]
    pub default_validation_context: CertificateValidationContext,
    pub validation_context_sds_secret_config: SdsSecretConfig,
    pub validation_context_certificate_provider: Option<Unsupported>,
    pub validation_context_certificate_provider_instance: Option<Unsupported>,
}

/// A reference to a secret delivered by SDS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdsSecretConfig {
    pub name: String,
    /// Where Envoy would fetch the secret: its agent's `sds-grpc` socket for Istio's `default`
    /// and `ROOTCA` (a weft proxy holds those itself, so that source does not change what it
    /// gets), or ADS for a gateway's `kubernetes://…` certificates.
    pub sds_config: Option<SdsSource>,
}

/// The part of an SDS reference's `ConfigSource` weft acts on: whether it is ADS.
#[derive(Debug, Clone, Deserialize)]
pub struct SdsSource {
    pub ads: Option<crate::filters::EmptyObject>,
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, Ignored>,
}

/// An SDS resource (`envoy.extensions.transport_sockets.tls.v3.Secret`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub name: String,
    pub tls_certificate: Option<TlsCertificate>,
    pub validation_context: Option<CertificateValidationContext>,
    pub session_ticket_keys: Option<Unsupported>,
    pub generic_secret: Option<Unsupported>,
}
