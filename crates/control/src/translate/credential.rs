//! A gateway server's `credentialName`: the Secret of that name in the gateway workload's
//! namespace, sent to that gateway over SDS as istiod sends it — `kubernetes://<name>` with the
//! certificate and key, and for a MUTUAL server `kubernetes://<name>-cacert` with the CA that
//! checks clients (from a Secret `<name>-cacert`, else the Secret's own `ca.crt`).
//!
//! The secret is only ever in the config of proxies in the Secret's namespace (the outbound
//! config is shared per namespace), and the ADS server hands it only to an authenticated
//! caller of that namespace (see `ads`). A reference that cannot be served leaves the server's
//! filter chain out, so the gateway's other servers keep working, and says why.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use weft_api::core::TlsCredential;

use super::pb::{self, tls};
use super::{Generated, Scope};

/// The SDS names a terminating server's TLS context refers to.
pub struct SdsNames {
    pub cert: String,
    pub ca: Option<String>,
}

/// Resolves `credential_name` for the proxy of `scope`, adding the secrets to `out`.
pub fn resolve(scope: &Scope<'_>, credential_name: &str, mutual: bool, out: &mut Generated) -> Result<SdsNames, String> {
    let name = weft_api::validate::credential_secret(credential_name)?;
    let ns = &scope.node.namespace;
    let lookup = |n: &str| scope.model.secrets.get(&(ns.clone(), n.to_owned()));
    let secret = lookup(name)
        .ok_or_else(|| format!("no Secret {ns}/{name} with a TLS certificate (tls.crt, tls.key) in the gateway's namespace"))?;
    let (Some(chain), Some(key)) = (&secret.cert_chain, &secret.private_key) else {
        return Err(format!("Secret {ns}/{name} holds no certificate and key (tls.crt and tls.key, or cert and key)"));
    };
    check_certificates(chain).map_err(|e| format!("Secret {ns}/{name}: tls.crt {e}"))?;
    if PrivateKeyDer::from_pem_slice(key.as_bytes()).is_err() {
        return Err(format!("Secret {ns}/{name}: tls.key is not a PEM private key"));
    }
    let cert_name = format!("kubernetes://{name}");
    let tls_certificate = tls::TlsCertificate {
        certificate_chain: pb::inline_bytes(chain.as_bytes()),
        private_key: pb::inline_bytes(key.as_bytes()),
        ..Default::default()
    };
    let cert = pb::Secret { name: cert_name.clone(), r#type: Some(tls::secret::Type::TlsCertificate(tls_certificate)) };
    out.secrets.insert(cert_name.clone(), cert);
    if !mutual {
        return Ok(SdsNames { cert: cert_name, ca: None });
    }
    let ca_secret = format!("{name}-cacert");
    let ca = lookup(&ca_secret)
        .and_then(|s| ca_of(s).map(|c| (ca_secret.as_str(), c)))
        .or_else(|| secret.ca_certificates.as_deref().map(|c| (name, c)))
        .ok_or_else(|| format!("MUTUAL needs the CA that checks clients: ca.crt in Secret {ns}/{name}, or a Secret {ns}/{ca_secret}"))?;
    check_certificates(ca.1).map_err(|e| format!("Secret {ns}/{}: ca.crt {e}", ca.0))?;
    let ca_name = format!("kubernetes://{ca_secret}");
    let validation = tls::CertificateValidationContext { trusted_ca: pb::inline_bytes(ca.1.as_bytes()), ..Default::default() };
    out.secrets
        .insert(ca_name.clone(), pb::Secret { name: ca_name.clone(), r#type: Some(tls::secret::Type::ValidationContext(validation)) });
    Ok(SdsNames { cert: cert_name, ca: Some(ca_name) })
}

/// A `-cacert` Secret's CA: its `ca.crt`/`cacert`, or (Istio reads either) its certificate.
fn ca_of(s: &TlsCredential) -> Option<&str> {
    s.ca_certificates.as_deref().or(s.cert_chain.as_deref())
}

fn check_certificates(pem: &str) -> Result<(), String> {
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let der = c.map_err(|_| "is not PEM certificates".to_owned())?;
        if x509_parser::parse_x509_certificate(&der).is_err() {
            return Err("holds a certificate that does not parse".into());
        }
        n += 1;
    }
    if n == 0 {
        return Err("holds no PEM certificate".into());
    }
    Ok(())
}

/// An SDS reference over ADS, as Envoy and a weft proxy read it.
pub fn sds_ref(name: &str) -> tls::SdsSecretConfig {
    tls::SdsSecretConfig { name: name.into(), sds_config: pb::ads() }
}
