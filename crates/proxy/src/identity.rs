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
use rustls::pki_types::ServerName;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use weft_xds::istio_ca::{create_certificate, CaEndpoint};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::tls::secrets;

/// Where to get the identity and what to ask for.
#[derive(Clone)]
pub struct IdentityOptions {
    /// The CA, `host:port`.
    pub ca_address: String,
    /// The name the CA's serving certificate must carry.
    pub ca_server_name: ServerName<'static>,
    /// The mesh trust bundle (`ROOTCA`), also what the CA's certificate is checked against.
    /// Watched: a root added or removed here reaches every TLS context within a second, which
    /// is how a root rotation reaches running proxies (Istio mounts the same file from the
    /// `istio-ca-root-cert` ConfigMap).
    pub bundle_file: PathBuf,
    /// Re-read at every request, so whoever starts the workload may rotate it.
    pub token_file: PathBuf,
    /// `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    pub spiffe_id: String,
    pub ttl: Duration,
    /// Handed every new certificate with its key: only the agent sets this, to serve them to
    /// the Envoy next to it over a local socket.
    pub export: Option<Exporter>,
}

/// Receives each new certificate and key (see [`IdentityOptions::export`]).
pub type Exporter = Arc<dyn Fn(&Material) + Send + Sync>;

/// A certificate chain (leaf first, no root) and its private key, both PEM. Its `Debug` never
/// shows the key.
pub struct Material {
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material").field("chain_pem", &self.chain_pem).field("key_pem", &"<redacted>").finish()
    }
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

/// Reads a PEM bundle into a root store (the same reading as a validation context's
/// `trusted_ca` file).
pub fn read_bundle(path: &std::path::Path) -> Result<RootCertStore, IdentityError> {
    let file = path.display().to_string();
    let src =
        weft_xds::core::DataSource { inline_string: None, inline_bytes: None, filename: Some(file.clone()), environment_variable: None };
    crate::tls::material::trust_roots(&src, "bundle").map_err(|e| IdentityError::Bundle { path: file, reason: e.message })
}

/// The bundle's certificates, checked as [`read_bundle`] checks them.
fn bundle_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    read_bundle(path)?;
    let bad = |e: String| IdentityError::Bundle { path: path.display().to_string(), reason: e };
    CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?.collect::<Result<Vec<_>, _>>().map_err(|e| bad(e.to_string()))
}

/// Loads the bundle file into the secret store.
fn load_bundle(path: &std::path::Path) -> Result<(), IdentityError> {
    let certs = bundle_certs(path)?;
    secrets::store().set_bundle(certs).map_err(|e| IdentityError::Bundle { path: path.display().to_string(), reason: e })
}

/// Gets a certificate for a fresh key; returns when to renew it.
async fn fetch(opts: &IdentityOptions) -> Result<SystemTime, IdentityError> {
    let token = std::fs::read_to_string(&opts.token_file)
        .map_err(|e| IdentityError::Token { path: opts.token_file.display().to_string(), reason: e.to_string() })?;
    let key = KeyPair::generate().map_err(|e| IdentityError::Csr(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let uri = opts.spiffe_id.as_str().try_into().map_err(|_| IdentityError::Csr(format!("{:?} is not a URI", opts.spiffe_id)))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params.serialize_request(&key).and_then(|c| c.pem()).map_err(|e| IdentityError::Csr(e.to_string()))?;
    // The CA is checked against the bundle as it is now: after a root rotation, that is the
    // new root.
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| IdentityError::Answer(e.to_string()))?
        .with_root_certificates(read_bundle(&opts.bundle_file)?)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let ca = CaEndpoint { address: opts.ca_address.clone(), tls: Arc::new(tls), server_name: opts.ca_server_name.clone() };
    let mut chain = create_certificate(&ca, token.trim(), csr, opts.ttl).await?;

    // Peers have the root already; the chain they get is leaf and intermediates.
    if chain.len() > 1 {
        chain.pop();
    }
    let mut certs = Vec::new();
    for pem in &chain {
        certs.push(CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| IdentityError::Answer(e.to_string()))?);
    }
    let leaf = certs.first().ok_or_else(|| IdentityError::Answer("an empty certificate chain".into()))?;
    let (_, leaf) = X509Certificate::from_der(leaf).map_err(|e| IdentityError::Answer(e.to_string()))?;
    let not_before = leaf.validity().not_before.timestamp();
    let not_after = leaf.validity().not_after.timestamp();
    let key_der = key.serialize_der();
    if let Some(export) = &opts.export {
        let chain_pem = chain.iter().map(|c| if c.ends_with('\n') { c.clone() } else { format!("{c}\n") }).collect();
        export(&Material { chain_pem, key_pem: key.serialize_pem() });
    }
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der));
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(certs, der, &provider).map_err(|e| IdentityError::Answer(e.to_string()))?;
    secrets::store().set_cert(Arc::new(certified));
    let half = u64::try_from((not_after - not_before) / 2).unwrap_or(0);
    tracing::info!(identity = %opts.spiffe_id, expires_in_s = not_after - unix_now(), "workload certificate issued");
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(not_before).unwrap_or(0) + half))
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// How often the bundle file is looked at.
const BUNDLE_POLL: Duration = Duration::from_secs(1);

/// Keeps the identity current for as long as the process runs: loads the bundle and follows
/// its changes, fetches the certificate, renews it at half-life, retries with backoff (the
/// certificate in use stays until it is replaced).
pub async fn maintain(opts: IdentityOptions) {
    let mut failures = 0u32;
    let mut renew_at = SystemTime::now();
    let mut seen: Option<Vec<u8>> = None;
    loop {
        // The bundle first, so the first certificate is usable the moment it arrives.
        if let Ok(bytes) = std::fs::read(&opts.bundle_file) {
            if seen.as_ref() != Some(&bytes) {
                match load_bundle(&opts.bundle_file) {
                    Ok(()) => {
                        if seen.is_some() {
                            tracing::info!(file = %opts.bundle_file.display(), "trust bundle changed; new connections use it");
                        }
                        seen = Some(bytes);
                    }
                    // A half-written or broken file keeps the bundle in use; it is tried again.
                    Err(e) => tracing::warn!("{e}; keeping the trust bundle in use"),
                }
            }
        }
        if SystemTime::now() >= renew_at {
            match fetch(&opts).await {
                Ok(at) => {
                    failures = 0;
                    renew_at = at.max(SystemTime::now() + Duration::from_secs(1));
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = weft_xds::ads_client::backoff(Duration::from_millis(500), Duration::from_secs(30), failures);
                    tracing::warn!(identity = %opts.spiffe_id, retry_in_ms = wait.as_millis() as u64, "cannot get a workload certificate: {e}");
                    renew_at = SystemTime::now() + wait;
                }
            }
        }
        let until_renewal = renew_at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
        tokio::time::sleep(until_renewal.min(BUNDLE_POLL)).await;
    }
}
