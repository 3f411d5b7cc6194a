//! Peer certificate verification with Envoy's semantics: a chain to the configured trust
//! bundle plus the SAN matchers. Unlike a browser, Envoy does not compare the server's names
//! with the SNI it sent; only the configured SANs count. Without a trust bundle an upstream
//! server's certificate is not verified at all, as in Envoy.

use std::sync::Arc;

use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore, SignatureScheme};

use super::san::{SanMatchers, Sans};
use super::Roots;

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
    pub roots: Option<Roots>,
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
            let roots = roots.current()?;
            let cert = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                &roots,
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

/// Verifies downstream clients: rustls's chain verification against the current bundle, then
/// the SAN matchers. The chain verifier is rebuilt only when the bundle changes.
#[derive(Debug)]
pub struct ClientVerifier {
    pub roots: Roots,
    pub sans: SanMatchers,
    pub provider: Arc<CryptoProvider>,
    /// A client without a certificate is refused (`require_client_certificate`).
    pub mandatory: bool,
    cache: Mutex<Option<BuiltFor>>,
}

/// A chain verifier and the bundle it was built from.
type BuiltFor = (Arc<RootCertStore>, Arc<dyn ClientCertVerifier>);

impl ClientVerifier {
    pub fn new(roots: Roots, sans: SanMatchers, provider: Arc<CryptoProvider>, mandatory: bool) -> ClientVerifier {
        ClientVerifier { roots, sans, provider, mandatory, cache: Mutex::new(None) }
    }

    fn inner(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        let roots = self.roots.current()?;
        let mut cache = self.cache.lock();
        if let Some((r, v)) = cache.as_ref() {
            if Arc::ptr_eq(r, &roots) {
                return Ok(v.clone());
            }
        }
        let mut b = WebPkiClientVerifier::builder_with_provider(roots.clone(), self.provider.clone());
        if !self.mandatory {
            b = b.allow_unauthenticated();
        }
        let v = b.build().map_err(|e| rustls::Error::General(format!("trust bundle: {e}")))?;
        *cache = Some((roots, v.clone()));
        Ok(v)
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; clients with one certificate (every sidecar) send it regardless.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner()?.verify_client_cert(end_entity, intermediates, now)?;
        check_sans(&self.sans, end_entity)?;
        Ok(ClientCertVerified::assertion())
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
