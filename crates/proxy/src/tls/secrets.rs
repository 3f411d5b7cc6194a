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
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

/// The SDS name of the workload certificate.
pub const DEFAULT_CERT: &str = "default";
/// The SDS name of the trust bundle.
pub const ROOT_CA: &str = "ROOTCA";

#[derive(Default)]
pub struct Secrets {
    cert: ArcSwapOption<CertifiedKey>,
    roots: ArcSwapOption<RootCertStore>,
    changed: tokio::sync::Notify,
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

    pub fn set_cert(&self, c: Arc<CertifiedKey>) {
        self.cert.store(Some(c));
        self.changed.notify_waiters();
    }

    pub fn set_roots(&self, r: Arc<RootCertStore>) {
        self.roots.store(Some(r));
        self.changed.notify_waiters();
    }

    /// Both secrets are present.
    pub fn ready(&self) -> bool {
        self.cert.load().is_some() && self.roots.load().is_some()
    }

    /// Waits for the next change.
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}
