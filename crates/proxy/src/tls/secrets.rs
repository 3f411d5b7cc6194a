//! The proxy's secrets, by SDS name: `default` (its own certificate and key) and `ROOTCA` (the
//! mesh's trust bundle), the names Istio's agent serves to Envoy. TLS contexts that reference
//! them through `tls_certificate_sds_secret_configs` / `validation_context_sds_secret_config`
//! read the current value at every handshake, so a renewed certificate or a rotated bundle
//! takes effect on the next connection without rebuilding any config.
//!
//! One store per process, like Envoy's secret manager: contexts are built wherever config is
//! validated (bootstrap, every xDS update), and all of them must see the same identity.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

/// The SDS name of the workload certificate.
pub const DEFAULT_CERT: &str = "default";
/// The SDS name of the trust bundle.
pub const ROOT_CA: &str = "ROOTCA";

/// A secret the control plane sends by name over ADS: a gateway's certificate
/// (`kubernetes://name`) or the CA its MUTUAL server checks clients with.
#[derive(Clone)]
pub enum Named {
    Cert(Arc<CertifiedKey>),
    Roots(Arc<RootCertStore>),
}

impl std::fmt::Debug for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.write_str(match self {
            Named::Cert(_) => "Named::Cert",
            Named::Roots(_) => "Named::Roots",
        })
    }
}

pub struct Secrets {
    /// The SDS-over-ADS secrets, replaced whole at each update.
    named: arc_swap::ArcSwap<std::collections::HashMap<String, Named>>,
    cert: ArcSwapOption<CertifiedKey>,
    roots: ArcSwapOption<RootCertStore>,
    /// The bundle's certificates as given, for whoever hands `ROOTCA` on (the agent).
    bundle: ArcSwapOption<Vec<CertificateDer<'static>>>,
    /// Bumped at every change, so a watcher never misses one.
    version: tokio::sync::watch::Sender<u64>,
}

impl Default for Secrets {
    fn default() -> Secrets {
        Secrets {
            named: Default::default(),
            cert: ArcSwapOption::empty(),
            roots: ArcSwapOption::empty(),
            bundle: ArcSwapOption::empty(),
            version: tokio::sync::watch::channel(0).0,
        }
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key: only whether there is one.
        f.debug_struct("Secrets").field("cert", &self.cert.load().is_some()).field("roots", &self.roots.load().is_some()).finish()
    }
}

static STORE: OnceLock<Arc<Secrets>> = OnceLock::new();

/// The process's secret store.
pub fn store() -> &'static Arc<Secrets> {
    STORE.get_or_init(Default::default)
}

impl Secrets {
    pub fn cert(&self) -> Option<Arc<CertifiedKey>> {
        self.cert.load_full()
    }

    pub fn roots(&self) -> Option<Arc<RootCertStore>> {
        self.roots.load_full()
    }

    pub fn bundle(&self) -> Option<Arc<Vec<CertificateDer<'static>>>> {
        self.bundle.load_full()
    }

    pub fn set_cert(&self, c: Arc<CertifiedKey>) {
        self.cert.store(Some(c));
        self.version.send_modify(|v| *v += 1);
    }

    /// Replaces the trust bundle. Certificates that are not usable trust anchors are left out
    /// (and reported); an empty result keeps the previous bundle.
    pub fn set_bundle(&self, certs: Vec<CertificateDer<'static>>) -> Result<(), String> {
        let mut roots = RootCertStore::empty();
        let (_, rejected) = roots.add_parsable_certificates(certs.iter().cloned());
        if roots.is_empty() {
            return Err("no usable CA certificate in the trust bundle".into());
        }
        if rejected > 0 {
            tracing::warn!(rejected, "trust bundle: certificates that are not usable CAs were left out");
        }
        self.roots.store(Some(Arc::new(roots)));
        self.bundle.store(Some(Arc::new(certs)));
        self.version.send_modify(|v| *v += 1);
        Ok(())
    }

    /// The certificate of the named SDS secret, once received.
    pub fn named_cert(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        match self.named.load().get(name) {
            Some(Named::Cert(c)) => Some(c.clone()),
            _ => None,
        }
    }

    /// The trust bundle of the named SDS secret, once received.
    pub fn named_roots(&self, name: &str) -> Option<Arc<RootCertStore>> {
        match self.named.load().get(name) {
            Some(Named::Roots(r)) => Some(r.clone()),
            _ => None,
        }
    }

    /// Replaces every named secret.
    pub fn set_named(&self, named: std::collections::HashMap<String, Named>) {
        self.named.store(Arc::new(named));
        self.version.send_modify(|v| *v += 1);
    }

    /// Both secrets are present.
    pub fn ready(&self) -> bool {
        self.cert.load().is_some() && self.roots.load().is_some()
    }

    /// A receiver that sees every later change.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// Envoy's `/certs` admin view of the secrets: the trust bundle (`ca_cert`) and the workload
/// certificate chain (`cert_chain`), each certificate by serial, SANs and validity. Never the
/// key.
pub fn certs_json() -> serde_json::Value {
    let s = store();
    let describe = |der: &CertificateDer<'_>| -> serde_json::Value {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let Ok((_, c)) = X509Certificate::from_der(der) else { return serde_json::json!({"error": "unparsable certificate"}) };
        let sans = super::san::Sans::of(der);
        let names: Vec<serde_json::Value> = sans
            .uri
            .iter()
            .map(|u| serde_json::json!({"uri": u}))
            .chain(sans.dns.iter().map(|d| serde_json::json!({"dns": d})))
            .chain(sans.ip.iter().map(|i| serde_json::json!({"ip_address": i.to_string()})))
            .collect();
        let not_after = c.validity().not_after.timestamp();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        serde_json::json!({
            "serial_number": c.raw_serial_as_string().replace(':', ""),
            "subject": c.subject().to_string(),
            "issuer": c.issuer().to_string(),
            "subject_alt_names": names,
            "days_until_expiration": ((not_after - now) / 86_400).to_string(),
            "valid_from": c.validity().not_before.to_rfc2822().unwrap_or_default(),
            "expiration_time": c.validity().not_after.to_rfc2822().unwrap_or_default(),
        })
    };
    let ca: Vec<serde_json::Value> = s.bundle().map(|b| b.iter().map(describe).collect()).unwrap_or_default();
    let chain: Vec<serde_json::Value> = s.cert().map(|c| c.cert.iter().map(describe).collect()).unwrap_or_default();
    if ca.is_empty() && chain.is_empty() {
        return serde_json::json!({"certificates": []});
    }
    serde_json::json!({"certificates": [{"ca_cert": ca, "cert_chain": chain}]})
}
