//! The proxy's workload identity: a key made in this process, a CSR for the workload's SPIFFE
//! ID sent to the mesh CA with the bootstrap token, and renewal at half-life. The results go
//! into the process's secret store as `default` and `ROOTCA`, where TLS contexts read them at
//! each handshake — so a renewal drops no connection and no request.
//!
//! The private key exists only in this process's memory: it is never written, sent or logged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use weft_xds::istio_ca::{create_certificate, CaEndpoint};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::tls::secrets;

/// Where to get the identity and what to ask for.
#[derive(Clone)]
pub struct IdentityOptions {
    pub ca: CaEndpoint,
    /// The trust bundle the CA's certificate is checked against, also the first `ROOTCA`.
    pub bundle_file: PathBuf,
    /// Re-read at every request, so whoever starts the workload may rotate it.
    pub token_file: PathBuf,
    /// `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    pub spiffe_id: String,
    pub ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("bootstrap token {path}: {reason}")]
    Token { path: String, reason: String },
    #[error("trust bundle {path}: {reason}")]
    Bundle { path: String, reason: String },
    #[error("{0}")]
    Ca(#[from] weft_xds::istio_ca::CaClientError),
    #[error("CSR: {0}")]
    Csr(String),
    #[error("the CA's answer: {0}")]
    Answer(String),
}

/// A certificate now in use, and when to renew it.
struct Issued {
    renew_at: SystemTime,
}

/// Reads a PEM bundle into a root store (the same reading as a validation context's
/// `trusted_ca` file).
pub fn read_bundle(path: &std::path::Path) -> Result<RootCertStore, IdentityError> {
    let file = path.display().to_string();
    let src =
        weft_xds::core::DataSource { inline_string: None, inline_bytes: None, filename: Some(file.clone()), environment_variable: None };
    crate::tls::material::trust_roots(&src, "bundle").map_err(|e| IdentityError::Bundle { path: file, reason: e.message })
}

async fn fetch(opts: &IdentityOptions) -> Result<Issued, IdentityError> {
    let token = std::fs::read_to_string(&opts.token_file)
        .map_err(|e| IdentityError::Token { path: opts.token_file.display().to_string(), reason: e.to_string() })?;
    let key = KeyPair::generate().map_err(|e| IdentityError::Csr(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let uri = opts.spiffe_id.as_str().try_into().map_err(|_| IdentityError::Csr(format!("{:?} is not a URI", opts.spiffe_id)))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params.serialize_request(&key).and_then(|c| c.pem()).map_err(|e| IdentityError::Csr(e.to_string()))?;
    let chain = create_certificate(&opts.ca, token.trim(), csr, opts.ttl).await?;

    let mut certs = Vec::new();
    for pem in &chain {
        certs.push(CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| IdentityError::Answer(e.to_string()))?);
    }
    let (_, leaf) = X509Certificate::from_der(&certs[0]).map_err(|e| IdentityError::Answer(e.to_string()))?;
    let not_before = leaf.validity().not_before.timestamp();
    let not_after = leaf.validity().not_after.timestamp();
    // The root the CA named is trusted along with the configured bundle.
    let mut roots = read_bundle(&opts.bundle_file)?;
    if certs.len() > 1 {
        if let Some(root) = certs.last() {
            let _ = roots.add(root.clone());
        }
        // Peers have the root already; the chain they get is leaf and intermediates.
        certs.pop();
    }
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(certs, der, &provider).map_err(|e| IdentityError::Answer(e.to_string()))?;
    let store = secrets::store();
    store.set_roots(Arc::new(roots));
    store.set_cert(Arc::new(certified));
    let half = u64::try_from((not_after - not_before) / 2).unwrap_or(0);
    let renew_at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(not_before).unwrap_or(0) + half);
    tracing::info!(identity = %opts.spiffe_id, expires_in_s = not_after - unix_now(), "workload certificate issued");
    Ok(Issued { renew_at })
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Keeps the identity current for as long as the proxy runs: fetches it, renews at half-life,
/// retries with backoff (the certificate in use stays until it is replaced).
pub async fn maintain(opts: IdentityOptions) {
    let mut failures = 0u32;
    loop {
        match fetch(&opts).await {
            Ok(issued) => {
                failures = 0;
                let wait = issued.renew_at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
                tokio::time::sleep(wait.max(Duration::from_secs(1))).await;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = weft_xds::ads_client::backoff(Duration::from_millis(500), Duration::from_secs(30), failures);
                tracing::warn!(identity = %opts.spiffe_id, retry_in_ms = wait.as_millis() as u64, "cannot get a workload certificate: {e}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}
