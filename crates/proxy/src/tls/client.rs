//! Originating TLS to upstream hosts (`UpstreamTlsContext`).

use std::net::IpAddr;
use std::sync::Arc;

use rustls::client::{ResolvesClientCert, Resumption};
use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use rustls::ClientConfig;
use rustls::SignatureScheme;
use weft_xds::tls::UpstreamTlsContext;

use super::verify::ServerVerifier;
use super::{alpn, certificates, secrets, validation, CertRefs, Params, Side};
use crate::config::{ConfigError, Result};

/// A cluster's TLS origination.
#[derive(Debug)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    /// The SNI to send; without one none is sent, as in Envoy.
    pub sni: Option<ServerName<'static>>,
}

impl ClientTls {
    pub fn from_wire(ctx: &UpstreamTlsContext, path: &str) -> Result<ClientTls> {
        let default = Default::default();
        let common = ctx.common_tls_context.as_ref().unwrap_or(&default);
        let cpath = format!("{path}.common_tls_context");
        let params = Params::from_wire(common.tls_params.as_ref(), Side::Client, &format!("{cpath}.tls_params"))?;
        let (roots, sans) = validation(common, &cpath)?;
        if let Some(super::Roots::Named(name)) = &roots {
            return Err(named_upstream(&cpath, name));
        }
        let verifier = ServerVerifier { roots, sans, provider: params.provider.clone() };
        let builder = ClientConfig::builder_with_provider(params.provider.clone())
            .with_protocol_versions(&params.versions)
            .map_err(|e| ConfigError::new(format!("{cpath}.tls_params"), e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match certificates(common, &params.provider, &cpath)? {
            CertRefs::None => builder.with_no_client_auth(),
            CertRefs::Static(keys) if keys.len() == 1 => builder.with_client_cert_resolver(Arc::new(ClientCert(keys.into_iter().next()))),
            CertRefs::Static(_) => {
                return Err(ConfigError::new(format!("{cpath}.tls_certificates"), "an upstream connection takes one certificate"))
            }
            CertRefs::Sds => builder.with_client_cert_resolver(Arc::new(ClientCert(None))),
            CertRefs::Named(name) => return Err(named_upstream(&cpath, &name)),
        };
        config.alpn_protocols = alpn(common);
        // Envoy keeps one session per cluster by default (`max_session_keys: 1`).
        config.resumption = match ctx.max_session_keys.unwrap_or(1) {
            0 => Resumption::disabled(),
            n => Resumption::in_memory_sessions(n as usize),
        };
        // SNI is sent only when configured; a literal IP is never sent as SNI.
        config.enable_sni = !ctx.sni.is_empty();
        let sni = if ctx.sni.is_empty() {
            None
        } else {
            Some(
                ServerName::try_from(ctx.sni.clone())
                    .map_err(|_| ConfigError::new(format!("{path}.sni"), format!("{:?} is not a valid server name", ctx.sni)))?,
            )
        };
        Ok(ClientTls { config: Arc::new(config), sni })
    }

    /// The name to hand rustls for a connection to `ip`: the SNI, or the address (which rustls
    /// never sends as SNI).
    pub fn server_name(&self, ip: IpAddr) -> ServerName<'static> {
        self.sni.clone().unwrap_or_else(|| ServerName::IpAddress(ip.into()))
    }
}

/// Upstream TLS takes only the proxy's own secrets: the control plane sends named ones for a
/// gateway's listeners (`credentialName`), and a DestinationRule's `credentialName` is refused.
fn named_upstream(path: &str, name: &str) -> ConfigError {
    ConfigError::new(
        path,
        format!("SDS secret {name:?} over ADS: a weft proxy takes named secrets on listeners only (a gateway's credentialName); upstream TLS uses default and ROOTCA, or files"),
    )
}

/// The client certificate offered to upstream servers that ask for one; `None` is the
/// `default` SDS secret, read at each handshake.
#[derive(Debug)]
struct ClientCert(Option<Arc<CertifiedKey>>);

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _issuers: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.clone().or_else(|| secrets::store().cert())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
