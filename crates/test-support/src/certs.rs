//! Test PKI: certificate authorities and leaf certificates written as PEM files, for TLS and
//! mTLS scenarios. Keys here are throwaway test keys in a per-test temporary directory.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> anyhow::Result<TempDir> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!("weft-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate and key on disk.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pem {
    pub fn cert_str(&self) -> String {
        self.cert.display().to_string()
    }
    pub fn key_str(&self) -> String {
        self.key.display().to_string()
    }
}

/// A self-signed root CA that issues leaves into `dir`.
pub struct TestCa {
    dir: PathBuf,
    name: String,
    params: CertificateParams,
    key: KeyPair,
    /// The root certificate (the trust bundle for peers of this CA).
    pub root: PathBuf,
}

/// What a leaf certificate says about itself.
#[derive(Debug, Clone, Default)]
pub struct Leaf<'a> {
    pub dns: &'a [&'a str],
    pub uris: &'a [&'a str],
    pub ips: &'a [std::net::IpAddr],
    /// Issued already expired.
    pub expired: bool,
}

impl TestCa {
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<TestCa> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, format!("{name} test root"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let root = dir.join(format!("{name}-root.pem"));
        std::fs::write(&root, cert.pem())?;
        Ok(TestCa { dir: dir.to_path_buf(), name: name.to_string(), params, key, root })
    }

    pub fn root_str(&self) -> String {
        self.root.display().to_string()
    }

    /// Issues a leaf usable as server and client certificate, written as `<file>.pem` and
    /// `<file>-key.pem`; the certificate file holds the leaf only.
    pub fn issue(&self, file: &str, leaf: Leaf<'_>) -> anyhow::Result<Pem> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, file);
        for d in leaf.dns {
            params.subject_alt_names.push(SanType::DnsName((*d).try_into()?));
        }
        for u in leaf.uris {
            params.subject_alt_names.push(SanType::URI((*u).try_into()?));
        }
        for ip in leaf.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        if leaf.expired {
            params.not_before = date_time_ymd(2001, 1, 1);
            params.not_after = date_time_ymd(2002, 1, 1);
        }
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        let pem = Pem { cert: self.dir.join(format!("{file}.pem")), key: self.dir.join(format!("{file}-key.pem")) };
        std::fs::write(&pem.cert, cert.pem())?;
        std::fs::write(&pem.key, key.serialize_pem())?;
        Ok(pem)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The root certificate, PEM.
    pub fn root_pem(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(&self.root)?)
    }

    /// Makes this root the signing CA of an Istio `cacerts` directory (`ca-cert.pem`,
    /// `ca-key.pem`, `cert-chain.pem`), leaving its `root-cert.pem` (the bundle) alone. Each
    /// file is replaced whole (write, then rename).
    pub fn install_as_signer(&self, cacerts: &Path) -> anyhow::Result<()> {
        let root = self.root_pem()?;
        for (file, text) in [("cert-chain.pem", root.clone()), ("ca-cert.pem", root), ("ca-key.pem", self.key.serialize_pem())] {
            replace_file(&cacerts.join(file), &text)?;
        }
        Ok(())
    }
}

/// Writes `text` to `path` by renaming a finished temporary file over it, so a reader never
/// sees half a file.
pub fn replace_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
