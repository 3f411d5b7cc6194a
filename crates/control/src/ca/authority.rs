//! The signing authority: its root of trust (Istio's `cacerts` layout, plugged in or generated
//! once and persisted) and the signing of workload certificates (X.509 SVIDs).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{CaError, Identity};

/// Istio's `cacerts` file names.
pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const ROOT_CERT: &str = "root-cert.pem";
pub const CERT_CHAIN: &str = "cert-chain.pem";

/// How far back a new certificate's validity starts, for peers whose clocks run behind.
const BACKDATE: Duration = Duration::from_secs(60);

/// One loaded root of trust.
struct Keys {
    issuer: Issuer<'static, KeyPair>,
    /// What follows a leaf in a signed chain: the signing certificate, intermediates, and the
    /// root last.
    chain: Vec<String>,
    /// Every trusted root (during a rotation, old and new).
    bundle: String,
    /// The files' modification times, to notice a change.
    stamp: Vec<Option<std::time::SystemTime>>,
}

/// The certificate authority.
pub struct Authority {
    dir: PathBuf,
    trust_domain: String,
    default_ttl: Duration,
    max_ttl: Duration,
    keys: ArcSwap<Keys>,
    bundle_tx: tokio::sync::watch::Sender<String>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("dir", &self.dir).field("trust_domain", &self.trust_domain).finish_non_exhaustive()
    }
}

fn read(dir: &Path, name: &str) -> Result<String, CaError> {
    let p = dir.join(name);
    std::fs::read_to_string(&p).map_err(|e| CaError::Root(format!("{}: {e}", p.display())))
}

/// PEM blocks of one kind, each as its own PEM text.
fn pem_certs(text: &str, file: &str) -> Result<Vec<String>, CaError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let l = line.trim();
        if l == "-----BEGIN CERTIFICATE-----" {
            cur.clear();
        }
        cur.push_str(l);
        cur.push('\n');
        if l == "-----END CERTIFICATE-----" {
            out.push(std::mem::take(&mut cur));
        }
    }
    if out.is_empty() {
        return Err(CaError::Root(format!("{file}: no PEM certificate")));
    }
    Ok(out)
}

fn der_of(pem: &str, file: &str) -> Result<Vec<u8>, CaError> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).map(|d| d.to_vec()).map_err(|e| CaError::Root(format!("{file}: {e}")))
}

/// The root in `roots` (PEM) whose key signed `cert`.
fn signer_in<'r>(cert: &X509Certificate<'_>, roots: &'r [String]) -> Option<&'r String> {
    roots.iter().find(|r| {
        der_of(r, ROOT_CERT)
            .ok()
            .and_then(|d| X509Certificate::from_der(&d).ok().map(|(_, root)| cert.verify_signature(Some(root.public_key())).is_ok()))
            .unwrap_or(false)
    })
}

fn stamp(dir: &Path) -> Vec<Option<std::time::SystemTime>> {
    [CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN].iter().map(|f| std::fs::metadata(dir.join(f)).and_then(|m| m.modified()).ok()).collect()
}

impl Keys {
    /// Loads and cross-checks the `cacerts` files in `dir`.
    fn load(dir: &Path) -> Result<Keys, CaError> {
        let stamp = stamp(dir);
        let cert_pem = read(dir, CA_CERT)?;
        let key_pem = read(dir, CA_KEY)?;
        let bundle = read(dir, ROOT_CERT)?;
        let roots = pem_certs(&bundle, ROOT_CERT)?;
        let chain = match std::fs::read_to_string(dir.join(CERT_CHAIN)) {
            Ok(t) => pem_certs(&t, CERT_CHAIN)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => pem_certs(&cert_pem, CA_CERT)?,
            Err(e) => return Err(CaError::Root(format!("{}: {e}", dir.join(CERT_CHAIN).display()))),
        };
        // The key must be the signing certificate's, and that certificate a CA.
        let key = KeyPair::from_pem(&key_pem).map_err(|_| CaError::Root(format!("{CA_KEY}: not a usable PEM private key")))?;
        let cert_der = der_of(&cert_pem, CA_CERT)?;
        let (_, cert) = X509Certificate::from_der(&cert_der).map_err(|e| CaError::Root(format!("{CA_CERT}: {e}")))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::Root(format!("{CA_KEY} does not belong to {CA_CERT}")));
        }
        if !cert.is_ca() {
            return Err(CaError::Root(format!("{CA_CERT} is not a CA certificate (basicConstraints CA:TRUE)")));
        }
        // ...and chain to one of the roots (signed by it, or be it).
        if signer_in(&cert, &roots).is_none() {
            return Err(CaError::Root(format!("{CA_CERT} is not signed by any certificate in {ROOT_CERT}")));
        }
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| CaError::Root(format!("{CA_CERT}: {e}")))?;
        let mut chain = chain;
        // The root that signed the chain's top goes last, once.
        let top = chain.last().cloned().unwrap_or_default();
        if !roots.contains(&top) {
            let top_der = der_of(&top, CERT_CHAIN)?;
            let (_, top_cert) = X509Certificate::from_der(&top_der).map_err(|e| CaError::Root(format!("{CERT_CHAIN}: {e}")))?;
            if let Some(root) = signer_in(&top_cert, &roots) {
                chain.push(root.clone());
            }
        }
        Ok(Keys { issuer, chain, bundle, stamp })
    }

    /// A new self-signed root written to `dir` in the `cacerts` layout (the key readable by
    /// its owner only).
    fn generate(dir: &Path, trust_domain: &str) -> Result<(), CaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, trust_domain);
        params.distinguished_name.push(DnType::CommonName, "weft root CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + time::Duration::days(3650);
        params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        let key = KeyPair::generate().map_err(|e| CaError::Root(format!("generating the root key: {e}")))?;
        let cert = params.self_signed(&key).map_err(|e| CaError::Root(format!("self-signing the root: {e}")))?;
        std::fs::create_dir_all(dir).map_err(|e| CaError::Root(format!("{}: {e}", dir.display())))?;
        write_private(&dir.join(CA_KEY), &key.serialize_pem())?;
        for f in [CA_CERT, ROOT_CERT, CERT_CHAIN] {
            std::fs::write(dir.join(f), cert.pem()).map_err(|e| CaError::Root(format!("{}: {e}", dir.join(f).display())))?;
        }
        Ok(())
    }
}

/// Creates a file only its owner can read, before anything is written to it.
fn write_private(path: &Path, text: &str) -> Result<(), CaError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CaError::Root(format!("{}: {e}", path.display())))?;
    f.write_all(text.as_bytes()).map_err(|e| CaError::Root(format!("{}: {e}", path.display())))
}

/// Where the root of trust comes from, as the operator chose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSource {
    /// The directory held a complete `cacerts` set.
    Plugged,
    /// The directory was empty or missing: a root was generated and saved there.
    Generated,
}

/// Generates a self-signed root for `trust_domain` into `dir` (the `cacerts` layout), for a
/// caller that stores it elsewhere before [`Authority::open`] reads it.
pub fn generate_root(dir: &Path, trust_domain: &str) -> Result<(), CaError> {
    Keys::generate(dir, trust_domain)
}

impl Authority {
    /// Loads the root of trust from `dir`, or generates and persists one when `dir` holds none
    /// of the `cacerts` files. A partial set is refused: guessing which half to trust is worse.
    pub fn open(dir: &Path, trust_domain: &str, default_ttl: Duration, max_ttl: Duration) -> Result<(Authority, RootSource), CaError> {
        let present: Vec<&str> = [CA_CERT, CA_KEY, ROOT_CERT].into_iter().filter(|f| dir.join(f).exists()).collect();
        let source = match present.len() {
            0 => {
                Keys::generate(dir, trust_domain)?;
                RootSource::Generated
            }
            3 => RootSource::Plugged,
            _ => {
                return Err(CaError::Root(format!(
                    "{} holds only {} of {CA_CERT}, {CA_KEY} and {ROOT_CERT}",
                    dir.display(),
                    present.join(", ")
                )))
            }
        };
        let keys = Keys::load(dir)?;
        let (bundle_tx, _) = tokio::sync::watch::channel(keys.bundle.clone());
        let ca = Authority {
            dir: dir.to_path_buf(),
            trust_domain: trust_domain.to_string(),
            default_ttl,
            max_ttl,
            keys: ArcSwap::new(Arc::new(keys)),
            bundle_tx,
        };
        Ok((ca, source))
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Every trusted root, PEM.
    pub fn bundle(&self) -> String {
        self.keys.load().bundle.clone()
    }

    /// Follows the trust bundle as roots are added and removed.
    pub fn watch_bundle(&self) -> tokio::sync::watch::Receiver<String> {
        self.bundle_tx.subscribe()
    }

    /// Re-reads the files if they changed. A set that does not load is logged and ignored: the
    /// authority keeps signing with what it had.
    pub fn reload_if_changed(&self) {
        if stamp(&self.dir) == self.keys.load().stamp {
            return;
        }
        match Keys::load(&self.dir) {
            Ok(k) => {
                let bundle_changed = k.bundle != self.keys.load().bundle;
                let bundle = k.bundle.clone();
                self.keys.store(Arc::new(k));
                tracing::info!(dir = %self.dir.display(), bundle_changed, "root of trust reloaded");
                if bundle_changed {
                    self.bundle_tx.send_replace(bundle);
                }
            }
            Err(e) => tracing::error!(dir = %self.dir.display(), "root of trust not reloaded, still signing with the previous one: {e}"),
        }
    }

    /// A certificate for the control plane's own TLS port, with a key made here for it.
    /// Returns the chain (leaf first) and the key.
    pub fn issue_serving(&self, dns: &[String], ips: &[std::net::IpAddr], ttl: Duration) -> Result<(Vec<String>, KeyPair), CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Root(format!("generating a serving key: {e}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "weft control plane");
        for d in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(d.as_str().try_into().map_err(|_| CaError::Root(format!("{d:?} is not a DNS name")))?));
        }
        params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + ttl;
        params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        let keys = self.keys.load();
        let cert = params.signed_by(&key, &keys.issuer).map_err(|e| CaError::Root(format!("signing the serving certificate: {e}")))?;
        let mut chain = vec![cert.pem()];
        chain.extend(keys.chain.iter().cloned());
        Ok((chain, key))
    }

    /// Signs a PEM CSR for `caller`. The CSR may ask only for the caller's own SPIFFE identity;
    /// the certificate carries that identity and nothing else the CSR asked for.
    /// Returns the chain, leaf first, root last.
    pub fn sign(&self, csr_pem: &str, caller: &Identity, ttl: Option<Duration>) -> Result<Vec<String>, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| CaError::Csr(e.to_string()))?;
        let want = caller.spiffe(&self.trust_domain);
        for san in &csr.params.subject_alt_names {
            let asked = match san {
                SanType::URI(u) => u.as_str().to_string(),
                SanType::DnsName(d) => format!("DNS:{}", d.as_str()),
                SanType::IpAddress(ip) => format!("IP:{ip}"),
                SanType::Rfc822Name(e) => format!("email:{}", e.as_str()),
                _ => "a name of another kind".into(),
            };
            if asked != want {
                return Err(CaError::Identity { asked, caller: want });
            }
        }
        let ttl = ttl.filter(|t| !t.is_zero()).unwrap_or(self.default_ttl).min(self.max_ttl);
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names =
            vec![SanType::URI(want.as_str().try_into().map_err(|_| CaError::Csr(format!("{want:?} is not a valid URI")))?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + ttl;
        params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        let keys = self.keys.load();
        let signed = CertificateSigningRequestParams { params, public_key: csr.public_key }
            .signed_by(&keys.issuer)
            .map_err(|e| CaError::Csr(format!("signing: {e}")))?;
        let mut chain = vec![signed.pem()];
        chain.extend(keys.chain.iter().cloned());
        Ok(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weft-ca-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn csr(uri: &str) -> String {
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::URI(uri.try_into().expect("uri"))];
        let key = KeyPair::generate().expect("key");
        p.serialize_request(&key).expect("csr").pem().expect("pem")
    }

    fn reviews() -> Identity {
        Identity { namespace: "default".into(), service_account: "reviews".into() }
    }

    fn parse(pem: &str) -> Vec<u8> {
        der_of(pem, "test").expect("der")
    }

    #[test]
    fn generated_root_persists_and_signs_only_the_callers_identity() {
        let dir = temp("gen");
        let day = Duration::from_secs(86400);
        let (ca, src) = Authority::open(&dir, "cluster.local", day, day * 30).expect("open");
        assert_eq!(src, RootSource::Generated);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.join(CA_KEY)).expect("key").permissions());
        assert_eq!(mode & 0o077, 0, "the CA key must be readable by its owner only");
        let chain =
            ca.sign(&csr("spiffe://cluster.local/ns/default/sa/reviews"), &reviews(), Some(Duration::from_secs(120))).expect("sign");
        assert_eq!(chain.len(), 2, "leaf and root");
        let leaf_der = parse(&chain[0]);
        let root_der = parse(&chain[1]);
        let (_, leaf) = X509Certificate::from_der(&leaf_der).expect("leaf");
        let (_, root) = X509Certificate::from_der(&root_der).expect("root");
        leaf.verify_signature(Some(root.public_key())).expect("signed by the root");
        let sans = crate::ca::authority::tests::uris(&leaf);
        assert_eq!(sans, vec!["spiffe://cluster.local/ns/default/sa/reviews".to_string()]);
        let life = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
        assert_eq!(life, 120 + BACKDATE.as_secs() as i64, "the requested TTL (plus the backdating)");
        assert!(!leaf.is_ca());

        let err = ca.sign(&csr("spiffe://cluster.local/ns/default/sa/ratings"), &reviews(), None).expect_err("someone else's identity");
        assert!(err.to_string().contains("asks for spiffe://cluster.local/ns/default/sa/ratings"), "{err}");

        // A restart keeps the same root.
        let bundle = ca.bundle();
        let (again, src) = Authority::open(&dir, "cluster.local", day, day).expect("reopen");
        assert_eq!(src, RootSource::Plugged);
        assert_eq!(again.bundle(), bundle);
        let _ = std::fs::remove_dir_all(&dir);
    }

    pub(super) fn uris(c: &X509Certificate<'_>) -> Vec<String> {
        let Ok(Some(ext)) = c.subject_alternative_name() else { return Vec::new() };
        ext.value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn plugged_intermediate_signs_with_the_whole_chain() {
        let dir = temp("plug");
        std::fs::create_dir_all(&dir).expect("dir");
        let mut rp = CertificateParams::default();
        rp.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        rp.distinguished_name.push(DnType::CommonName, "plugged root");
        let rk = KeyPair::generate().expect("key");
        let root = rp.self_signed(&rk).expect("root");
        let mut ip = CertificateParams::default();
        ip.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ip.distinguished_name.push(DnType::CommonName, "plugged intermediate");
        let ik = KeyPair::generate().expect("key");
        let inter = ip.signed_by(&ik, &Issuer::from_params(&rp, &rk)).expect("intermediate");
        std::fs::write(dir.join(CA_CERT), inter.pem()).expect("w");
        std::fs::write(dir.join(CA_KEY), ik.serialize_pem()).expect("w");
        std::fs::write(dir.join(ROOT_CERT), root.pem()).expect("w");
        std::fs::write(dir.join(CERT_CHAIN), format!("{}{}", inter.pem(), root.pem())).expect("w");
        let day = Duration::from_secs(86400);
        let (ca, src) = Authority::open(&dir, "example.org", day, day).expect("open");
        assert_eq!(src, RootSource::Plugged);
        let chain = ca.sign(&csr("spiffe://example.org/ns/default/sa/reviews"), &reviews(), None).expect("sign");
        assert_eq!(chain.len(), 3, "leaf, intermediate, root");
        assert_eq!(parse(&chain[2]), root.der().to_vec());

        // A key that is not the signing certificate's is refused.
        std::fs::write(dir.join(CA_KEY), rk.serialize_pem()).expect("w");
        let err = Authority::open(&dir, "example.org", day, day).expect_err("mismatched key");
        assert!(err.to_string().contains("ca-key.pem does not belong to ca-cert.pem"), "{err}");
        // A partial set is refused rather than completed.
        std::fs::remove_file(dir.join(CA_KEY)).expect("rm");
        let err = Authority::open(&dir, "example.org", day, day).expect_err("partial");
        assert!(err.to_string().contains("holds only"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
