//! Terminating TLS for downstream clients (`DownstreamTlsContext`).

use std::sync::Arc;

use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use weft_xds::tls::{DownstreamTlsContext, TlsCertificate};

use super::material::{cert_chain, private_key};
use super::verify::ClientVerifier;
use super::{alpn, certificates, secrets, validation, CertRefs, Params, Side};
use crate::config::{ConfigError, Result};

/// A filter chain's TLS termination.
#[derive(Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    /// The same with no ALPN list, for clients that offer none of ours: BoringSSL (Envoy) then
    /// goes on without ALPN where rustls would end the handshake, and mesh clients offer
    /// `istio-peer-exchange`/`istio` to servers that list only `h2`/`http/1.1`.
    no_alpn: Option<Arc<ServerConfig>>,
    /// The static certificates (empty: an SDS secret).
    keys: Vec<Arc<CertifiedKey>>,
    /// The SDS secret over ADS the certificate comes from, if it is not `default`.
    named: Option<Arc<str>>,
}

/// The serving certificates: the first whose key suits the client's signature schemes (an
/// RSA and an ECDSA certificate may be given together, as in Envoy).
#[derive(Debug)]
struct Certs {
    /// Empty: the `default` SDS secret (or `named`), read at each handshake.
    keys: Vec<Arc<CertifiedKey>>,
    named: Option<Arc<str>>,
    require_sni: bool,
}

/// The SDS certificate now: `named` (sent over ADS) or the `default` secret.
fn sds_cert(named: Option<&str>) -> Option<Arc<CertifiedKey>> {
    match named {
        Some(n) => secrets::store().named_cert(n),
        None => secrets::store().cert(),
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if self.require_sni && hello.server_name().is_none() {
            return None;
        }
        if self.keys.is_empty() {
            return sds_cert(self.named.as_deref());
        }
        let schemes = hello.signature_schemes();
        self.keys.iter().find(|k| k.key.choose_scheme(schemes).is_some()).or(self.keys.first()).cloned()
    }
}

/// Loads one certificate and its key, and checks that they belong together.
pub(super) fn certified_key(c: &TlsCertificate, provider: &rustls::crypto::CryptoProvider, path: &str) -> Result<CertifiedKey> {
    let chain_src = c.certificate_chain.as_ref().ok_or_else(|| ConfigError::new(format!("{path}.certificate_chain"), "required"))?;
    let key_src = c.private_key.as_ref().ok_or_else(|| ConfigError::new(format!("{path}.private_key"), "required"))?;
    let chain = cert_chain(chain_src, &format!("{path}.certificate_chain"))?;
    let key = private_key(key_src, &format!("{path}.private_key"))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        let why = match e {
            rustls::Error::InconsistentKeys(_) => "the private key does not belong to the certificate".to_string(),
            other => format!("unusable certificate or key: {other}"),
        };
        ConfigError::new(path, why)
    })
}

impl ServerTls {
    pub fn from_wire(ctx: &DownstreamTlsContext, path: &str) -> Result<ServerTls> {
        let default = Default::default();
        let common = ctx.common_tls_context.as_ref().unwrap_or(&default);
        let cpath = format!("{path}.common_tls_context");
        let params = Params::from_wire(common.tls_params.as_ref(), Side::Server, &format!("{cpath}.tls_params"))?;
        let (keys, named) = match certificates(common, &params.provider, &cpath)? {
            CertRefs::None => return Err(ConfigError::new(format!("{cpath}.tls_certificates"), "a server needs at least one certificate")),
            CertRefs::Static(keys) => (keys, None),
            CertRefs::Sds => (Vec::new(), None),
            CertRefs::Named(name) => (Vec::new(), Some(name)),
        };
        let require_client = ctx.require_client_certificate.unwrap_or(false);
        let builder = ServerConfig::builder_with_provider(params.provider.clone())
            .with_protocol_versions(&params.versions)
            .map_err(|e| ConfigError::new(format!("{cpath}.tls_params"), e.to_string()))?;
        let builder = match validation(common, &cpath)? {
            (Some(roots), sans) => {
                builder.with_client_cert_verifier(Arc::new(ClientVerifier::new(roots, sans, params.provider.clone(), require_client)))
            }
            (None, _) if common.validation_context.is_some() => {
                return Err(ConfigError::new(format!("{cpath}.validation_context.trusted_ca"), "required to verify client certificates"))
            }
            (None, _) if require_client => {
                return Err(ConfigError::new(
                    format!("{path}.require_client_certificate"),
                    "needs common_tls_context.validation_context to verify client certificates against",
                ))
            }
            (None, _) => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(Certs {
            keys: keys.clone(),
            named: named.clone(),
            require_sni: ctx.require_sni.unwrap_or(false),
        }));
        config.alpn_protocols = alpn(common);
        if ctx.disable_stateful_session_resumption == Some(true) {
            config.session_storage = Arc::new(NoServerSessionStorage {});
        }
        let no_alpn = (!config.alpn_protocols.is_empty()).then(|| {
            let mut bare = config.clone();
            bare.alpn_protocols.clear();
            Arc::new(bare)
        });
        Ok(ServerTls { config: Arc::new(config), no_alpn, keys, named })
    }

    /// The leaf certificate this context serves (the first, when several are configured).
    pub fn local_cert(&self) -> Option<Arc<rustls::pki_types::CertificateDer<'static>>> {
        let key = match self.keys.first() {
            Some(k) => k.clone(),
            None => sds_cert(self.named.as_deref())?,
        };
        key.cert.first().map(|c| Arc::new(c.clone()))
    }

    /// The configuration for a client offering `offered` ALPN protocols.
    pub fn config_for<'a>(&self, offered: Option<impl Iterator<Item = &'a [u8]>>) -> Arc<ServerConfig> {
        let (Some(bare), Some(mut offered)) = (&self.no_alpn, offered) else { return self.config.clone() };
        if offered.any(|p| self.config.alpn_protocols.iter().any(|ours| ours == p)) {
            self.config.clone()
        } else {
            bare.clone()
        }
    }
}
