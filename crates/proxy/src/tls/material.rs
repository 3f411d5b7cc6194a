//! Certificates, private keys and trust bundles read from Envoy `DataSource`s (PEM files or
//! inline PEM), with errors that name the field. A key's bytes never appear in an error.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use weft_xds::core::DataSource;

use crate::config::route::data_source;
use crate::config::{ConfigError, Result};

/// The file a `DataSource` reads, or "inline", for error messages.
fn origin(ds: &DataSource) -> String {
    ds.filename.as_ref().map_or_else(|| "inline data".to_string(), |f| format!("{f:?}"))
}

/// A PEM certificate chain, leaf first.
pub fn cert_chain(ds: &DataSource, path: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = data_source(ds, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new(path, format!("{} is not a valid PEM certificate chain: {e}", origin(ds))))?;
    if certs.is_empty() {
        return Err(ConfigError::new(path, format!("{} holds no PEM CERTIFICATE block", origin(ds))));
    }
    Ok(certs)
}

/// A PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn private_key(ds: &DataSource, path: &str) -> Result<PrivateKeyDer<'static>> {
    let pem = data_source(ds, path)?;
    // The parser's error could quote what it read; say only where it came from.
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| ConfigError::new(path, format!("{} holds no usable PEM private key (PKCS#8, RSA or EC)", origin(ds))))
}

/// A PEM bundle of trusted CA certificates.
pub fn trust_roots(ds: &DataSource, path: &str) -> Result<RootCertStore> {
    let certs = cert_chain(ds, path)?;
    let mut roots = RootCertStore::empty();
    for (i, c) in certs.into_iter().enumerate() {
        roots
            .add(c)
            .map_err(|e| ConfigError::new(path, format!("certificate {i} in {} is not a usable CA certificate: {e}", origin(ds))))?;
    }
    Ok(roots)
}
