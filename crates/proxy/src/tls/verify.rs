//! Peer certificate verification with Envoy's semantics: a chain to the configured trust
//! bundle plus the SAN matchers. Unlike a browser, Envoy does not compare the server's names
//! with the SNI it sent; only the configured SANs count. Without a trust bundle an upstream
//! server's certificate is not verified at all, as in Envoy.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore, SignatureScheme};

use super::san::{SanMatchers, Sans};

/// A peer whose certificate chains to the trust bundle but carries none of the expected SANs.
#[derive(Debug, thiserror::Error)]
#[error("peer certificate has {sans}, none of which is an expected subject alternative name")]
pub struct SanMismatch {
    pub sans: String,
}

fn check_sans(sans: &SanMatchers, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    if sans.is_empty() {
        return Ok(());
    }
    let found = Sans::of(cert);
    if sans.accepts(&found) {
        Ok(())
    } else {
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(SanMismatch { sans: found.to_string() })))))
    }
}

/// Verifies upstream servers.
#[derive(Debug)]
pub struct ServerVerifier {
    /// `None`: no validation context, so any certificate is accepted (Envoy's default).
    pub roots: Option<Arc<RootCertStore>>,
    pub sans: SanMatchers,
    pub provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        check_sans(&self.sans, end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Verifies downstream clients: rustls's chain verification, then the SAN matchers.
#[derive(Debug)]
pub struct ClientVerifier {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub sans: SanMatchers,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        check_sans(&self.sans, end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Why a handshake failed, in the terms of Envoy's `ssl.*` counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// `ssl.fail_verify_no_cert`: the peer sent no certificate where one is required.
    NoCert,
    /// `ssl.fail_verify_san`.
    San,
    /// `ssl.fail_verify_error`: untrusted issuer, expired, malformed.
    Verify,
    /// `ssl.connection_error`: anything else (protocol, version, ALPN, the peer gave up).
    Other,
}

/// Classifies a handshake error as tokio-rustls reports it.
pub fn classify(e: &std::io::Error) -> Failure {
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else { return Failure::Other };
    match err {
        rustls::Error::NoCertificatesPresented => Failure::NoCert,
        rustls::Error::InvalidCertificate(CertificateError::Other(o)) if o.0.downcast_ref::<SanMismatch>().is_some() => Failure::San,
        rustls::Error::InvalidCertificate(_) => Failure::Verify,
        _ => Failure::Other,
    }
}
