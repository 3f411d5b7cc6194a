//! TLS on both sides of the proxy, configured from Envoy's TLS transport socket: a filter
//! chain's `DownstreamTlsContext` terminates TLS for downstream clients, a cluster's
//! `UpstreamTlsContext` originates it to upstream hosts.
//!
//! Contexts are built once when config is validated (certificates and keys read, trust
//! bundles parsed, matchers compiled), so a bad file is a config error with its field path,
//! never a failure on the first connection.

pub mod client;
pub mod material;
pub mod san;
pub mod secrets;
pub mod server;
pub mod verify;

use std::sync::Arc;

use rustls::crypto::ring::{cipher_suite as cs, default_provider, kx_group};
use rustls::crypto::CryptoProvider;
use rustls::{RootCertStore, SupportedCipherSuite, SupportedProtocolVersion};
use weft_xds::tls::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, TlsParameters, TlsVersion, TransportSocket, TransportSocketConfig,
};

use san::SanMatchers;

use crate::config::{ConfigError, Result};

pub use client::ClientTls;
pub use server::ServerTls;

/// Which side of a connection a context serves; Envoy's defaults differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// TLS 1.2 suites by their OpenSSL/BoringSSL names, as Envoy's `cipher_suites` takes them.
/// TLS 1.3 suites are not configurable in Envoy and are always offered.
const TLS12_SUITES: &[(&str, SupportedCipherSuite)] = &[
    ("ECDHE-ECDSA-AES128-GCM-SHA256", cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ("ECDHE-RSA-AES128-GCM-SHA256", cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
    ("ECDHE-RSA-AES256-GCM-SHA384", cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
    ("ECDHE-RSA-CHACHA20-POLY1305", cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
];

/// Suites in Envoy's default lists that weft does not implement (CBC and static-RSA key
/// exchange). A list copied from Envoy still loads; these entries are left out.
const LEGACY_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "ECDHE-PSK-CHACHA20-POLY1305",
];

/// The crypto provider and protocol versions one context allows.
struct Params {
    provider: Arc<CryptoProvider>,
    versions: Vec<&'static SupportedProtocolVersion>,
}

impl Params {
    fn from_wire(p: Option<&TlsParameters>, side: Side, path: &str) -> Result<Params> {
        let default = TlsParameters::default();
        let p = p.unwrap_or(&default);
        let mut provider = default_provider();
        let min = match p.tls_minimum_protocol_version {
            // rustls has no TLS 1.0/1.1; allowing them only ever admits older clients, so
            // asking for them as a minimum still gives the safe 1.2.
            TlsVersion::Auto | TlsVersion::V1_0 | TlsVersion::V1_1 => TlsVersion::V1_2,
            v => v,
        };
        let max = match p.tls_maximum_protocol_version {
            // Envoy's defaults: TLS 1.3 for servers, 1.2 for clients.
            TlsVersion::Auto if side == Side::Server => TlsVersion::V1_3,
            TlsVersion::Auto => TlsVersion::V1_2,
            TlsVersion::V1_0 | TlsVersion::V1_1 => {
                return Err(ConfigError::new(
                    format!("{path}.tls_maximum_protocol_version"),
                    "TLS 1.0 and 1.1 are not supported (weft speaks TLS 1.2 and 1.3)",
                ))
            }
            v => v,
        };
        if min > max {
            return Err(ConfigError::new(
                format!("{path}.tls_minimum_protocol_version"),
                format!("{min:?} is above the maximum protocol version {max:?}"),
            ));
        }
        let mut versions = Vec::new();
        if min <= TlsVersion::V1_2 {
            versions.push(&rustls::version::TLS12);
        }
        if max >= TlsVersion::V1_3 {
            versions.push(&rustls::version::TLS13);
        }
        if !p.cipher_suites.is_empty() {
            let mut chosen: Vec<SupportedCipherSuite> =
                provider.cipher_suites.iter().copied().filter(|s| s.version() == &rustls::version::TLS13).collect();
            let mut tls12 = 0;
            for (i, entry) in p.cipher_suites.iter().enumerate() {
                // BoringSSL's equal-preference groups: "[A|B]".
                for name in entry.trim_start_matches('[').trim_end_matches(']').split('|') {
                    if let Some((_, s)) = TLS12_SUITES.iter().find(|(n, _)| *n == name) {
                        chosen.push(*s);
                        tls12 += 1;
                    } else if !LEGACY_SUITES.contains(&name) {
                        return Err(ConfigError::new(
                            format!("{path}.cipher_suites[{i}]"),
                            format!(
                                "unknown cipher suite {name:?} (supported: {})",
                                TLS12_SUITES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    }
                }
            }
            if tls12 == 0 && !versions.contains(&&rustls::version::TLS13) {
                return Err(ConfigError::new(format!("{path}.cipher_suites"), "none of these cipher suites is supported"));
            }
            provider.cipher_suites = chosen;
        }
        if !p.ecdh_curves.is_empty() {
            let mut groups = Vec::new();
            for (i, c) in p.ecdh_curves.iter().enumerate() {
                groups.push(match c.as_str() {
                    "X25519" => kx_group::X25519,
                    "P-256" => kx_group::SECP256R1,
                    "P-384" => kx_group::SECP384R1,
                    other => {
                        return Err(ConfigError::new(
                            format!("{path}.ecdh_curves[{i}]"),
                            format!("unsupported curve {other:?} (supported: X25519, P-256, P-384)"),
                        ))
                    }
                });
            }
            provider.kx_groups = groups;
        }
        if !p.signature_algorithms.is_empty() {
            return Err(ConfigError::new(format!("{path}.signature_algorithms"), "not supported"));
        }
        Ok(Params { provider: Arc::new(provider), versions })
    }
}

/// Where a context's trust bundle comes from.
#[derive(Debug, Clone)]
pub enum Roots {
    Static(Arc<RootCertStore>),
    /// The process's `ROOTCA` secret, read at each handshake.
    Sds,
    /// A bundle the control plane sends by this name over ADS, read at each handshake.
    Named(Arc<str>),
}

impl Roots {
    /// The bundle now; a handshake before the first bundle arrives fails.
    pub fn current(&self) -> std::result::Result<Arc<RootCertStore>, rustls::Error> {
        match self {
            Roots::Static(r) => Ok(r.clone()),
            Roots::Sds => secrets::store().roots().ok_or_else(|| rustls::Error::General("no trust bundle (ROOTCA) yet".into())),
            Roots::Named(n) => {
                secrets::store().named_roots(n).ok_or_else(|| rustls::Error::General(format!("SDS secret {n:?} not received yet")))
            }
        }
    }
}

/// Checks an SDS reference names a secret the proxy holds: `want` (its own, `None`), or one
/// the control plane sends over ADS (its name).
fn sds_name(cfg: &SdsSecretConfig, want: &str, path: &str) -> Result<Option<Arc<str>>> {
    if cfg.name == want {
        return Ok(None);
    }
    if cfg.sds_config.as_ref().is_some_and(|s| s.ads.is_some()) && cfg.name != secrets::DEFAULT_CERT && cfg.name != secrets::ROOT_CA {
        return Ok(Some(Arc::from(cfg.name.as_str())));
    }
    Err(ConfigError::new(
        format!("{path}.name"),
        format!(
            "unknown SDS secret {:?} here; a weft proxy holds {:?} (its certificate) and {:?} (the trust bundle), and \
             fetches other secrets only over ADS (sds_config: {{ads: {{}}}})",
            cfg.name,
            secrets::DEFAULT_CERT,
            secrets::ROOT_CA
        ),
    ))
}

/// The SDS secrets over ADS a resource's TLS contexts name (what the proxy subscribes to).
pub fn ads_secret_names(json: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
    match json {
        serde_json::Value::Object(m) => {
            let over_ads = m.get("sds_config").is_some_and(|c| c.get("ads").is_some());
            if let (true, Some(serde_json::Value::String(name))) = (over_ads, m.get("name")) {
                out.insert(name.clone());
            }
            m.values().for_each(|v| ads_secret_names(v, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| ads_secret_names(v, out)),
        _ => {}
    }
}

/// The peer verification a context asks for: a trust bundle (static or SDS) and SAN matchers,
/// from `validation_context`, `validation_context_sds_secret_config` or
/// `combined_validation_context`.
pub(crate) fn validation(common: &CommonTlsContext, path: &str) -> Result<(Option<Roots>, SanMatchers)> {
    let given = [
        common.validation_context.is_some(),
        common.validation_context_sds_secret_config.is_some(),
        common.combined_validation_context.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(ConfigError::new(
            path,
            "only one of validation_context, validation_context_sds_secret_config and combined_validation_context may be set",
        ));
    }
    if let Some(v) = &common.validation_context {
        return validation_context(v, &format!("{path}.validation_context"), false);
    }
    if let Some(sds) = &common.validation_context_sds_secret_config {
        let named = sds_name(sds, secrets::ROOT_CA, &format!("{path}.validation_context_sds_secret_config"))?;
        return Ok((Some(named.map_or(Roots::Sds, Roots::Named)), SanMatchers::default()));
    }
    if let Some(c) = &common.combined_validation_context {
        let cpath = format!("{path}.combined_validation_context");
        let named =
            sds_name(&c.validation_context_sds_secret_config, secrets::ROOT_CA, &format!("{cpath}.validation_context_sds_secret_config"))?;
        let (roots, sans) = validation_context(&c.default_validation_context, &format!("{cpath}.default_validation_context"), true)?;
        return Ok((named.map(Roots::Named).or(roots), sans));
    }
    Ok((None, SanMatchers::default()))
}

/// One validation context, checked for Envoy's rules. `sds_roots`: the bundle is the `ROOTCA`
/// secret (a combined context), so the context itself must not name one.
fn validation_context(v: &CertificateValidationContext, path: &str, sds_roots: bool) -> Result<(Option<Roots>, SanMatchers)> {
    if v.allow_expired_certificate == Some(true) {
        return Err(ConfigError::new(format!("{path}.allow_expired_certificate"), "not supported"));
    }
    let sans = SanMatchers::from_wire(&v.match_typed_subject_alt_names, &v.match_subject_alt_names, path)?;
    let roots = match (&v.trusted_ca, sds_roots) {
        (Some(_), true) => {
            return Err(ConfigError::new(format!("{path}.trusted_ca"), "the trust bundle comes from the SDS secret; give it in one place"))
        }
        (None, true) => Some(Roots::Sds),
        (Some(ds), false) => Some(Roots::Static(Arc::new(material::trust_roots(ds, &format!("{path}.trusted_ca"))?))),
        (None, false) if !sans.is_empty() => {
            return Err(ConfigError::new(
                format!("{path}.trusted_ca"),
                "required with SAN matchers: matching names of an unverified certificate proves nothing",
            ))
        }
        (None, false) => None,
    };
    Ok((roots, sans))
}

/// The TLS context a `transport_socket` carries; `None` when there is none or it is the plain
/// `raw_buffer` socket.
pub(crate) fn transport_context<'a>(ts: Option<&'a TransportSocket>, path: &str) -> Result<Option<&'a TransportSocketConfig>> {
    let Some(ts) = ts else { return Ok(None) };
    match &ts.typed_config {
        Some(TransportSocketConfig::RawBuffer(_)) => Ok(None),
        Some(c) => Ok(Some(c)),
        None if ts.name == "envoy.transport_sockets.raw_buffer" => Ok(None),
        None => Err(ConfigError::new(format!("{path}.typed_config"), "required")),
    }
}

/// The certificate references of a context: static files, the `default` SDS secret, or one
/// sent by name over ADS.
pub(crate) enum CertRefs {
    None,
    Static(Vec<Arc<rustls::sign::CertifiedKey>>),
    Sds,
    Named(Arc<str>),
}

pub(crate) fn certificates(common: &CommonTlsContext, provider: &CryptoProvider, path: &str) -> Result<CertRefs> {
    match (common.tls_certificates.as_slice(), common.tls_certificate_sds_secret_configs.as_slice()) {
        ([], []) => Ok(CertRefs::None),
        (certs, []) => {
            let mut keys = Vec::new();
            for (i, c) in certs.iter().enumerate() {
                keys.push(Arc::new(server::certified_key(c, provider, &format!("{path}.tls_certificates[{i}]"))?));
            }
            Ok(CertRefs::Static(keys))
        }
        ([], [one]) => match sds_name(one, secrets::DEFAULT_CERT, &format!("{path}.tls_certificate_sds_secret_configs[0]"))? {
            None => Ok(CertRefs::Sds),
            Some(name) => Ok(CertRefs::Named(name)),
        },
        ([], _) => Err(ConfigError::new(format!("{path}.tls_certificate_sds_secret_configs"), "a weft proxy holds one certificate secret")),
        _ => Err(ConfigError::new(path, "give tls_certificates or tls_certificate_sds_secret_configs, not both")),
    }
}

/// The ALPN list as rustls takes it.
fn alpn(common: &CommonTlsContext) -> Vec<Vec<u8>> {
    common.alpn_protocols.iter().map(|p| p.as_bytes().to_vec()).collect()
}

/// A negotiated protocol version as Envoy names it in stats and access logs.
pub fn version_name(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "unknown",
    }
}

/// An SDS `Secret` sent over ADS, checked: a certificate with its key, or a trust bundle.
pub fn named_secret(secret: &weft_xds::tls::Secret, path: &str) -> Result<secrets::Named> {
    match (&secret.tls_certificate, &secret.validation_context) {
        (Some(c), None) => {
            let key = server::certified_key(c, &default_provider(), &format!("{path}.tls_certificate"))?;
            Ok(secrets::Named::Cert(Arc::new(key)))
        }
        (None, Some(v)) => {
            let vpath = format!("{path}.validation_context");
            let ca = v.trusted_ca.as_ref().ok_or_else(|| ConfigError::new(format!("{vpath}.trusted_ca"), "required"))?;
            if !v.match_typed_subject_alt_names.is_empty() || !v.match_subject_alt_names.is_empty() {
                return Err(ConfigError::new(
                    vpath,
                    "a weft proxy takes only trusted_ca from an SDS secret; give SAN matchers in the listener",
                ));
            }
            Ok(secrets::Named::Roots(Arc::new(material::trust_roots(ca, &format!("{vpath}.trusted_ca"))?)))
        }
        _ => Err(ConfigError::new(path, "give one of tls_certificate and validation_context")),
    }
}
