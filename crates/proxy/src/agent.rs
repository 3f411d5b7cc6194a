//! The agent next to a stock Envoy (what Istio's pilot-agent does for identity): it makes the
//! workload's key, gets and renews its certificate from the mesh CA exactly as `weft proxy`
//! does for itself, follows the trust bundle file, and serves both to Envoy over SDS on a Unix
//! socket as `default` and `ROOTCA`. The key leaves this process only over that socket, to the
//! one proxy that uses it.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{secret, CertificateValidationContext, Secret, TlsCertificate};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::identity::Material;
use crate::tls::secrets::{self, DEFAULT_CERT, ROOT_CA};

/// The secrets the agent serves: the exported certificate and key, and the process's bundle.
#[derive(Default)]
pub struct AgentSecrets {
    issued: Mutex<Option<Arc<Material>>>,
}

impl std::fmt::Debug for AgentSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSecrets").field("issued", &self.issued.lock().is_some()).finish()
    }
}

impl AgentSecrets {
    /// The hook for [`crate::identity::IdentityOptions::export`].
    pub fn exporter(self: &Arc<Self>) -> crate::identity::Exporter {
        let me = self.clone();
        Arc::new(move |m: &Material| {
            *me.issued.lock() = Some(Arc::new(Material { chain_pem: m.chain_pem.clone(), key_pem: m.key_pem.clone() }));
        })
    }
}

fn inline(bytes: &[u8]) -> Option<DataSource> {
    Some(DataSource { specifier: Some(data_source::Specifier::InlineBytes(bytes.to_vec())), ..Default::default() })
}

impl weft_xds::sds_server::SecretSource for AgentSecrets {
    fn secret(&self, name: &str) -> Option<Secret> {
        let kind = match name {
            DEFAULT_CERT => {
                let m = self.issued.lock().clone()?;
                secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: inline(m.chain_pem.as_bytes()),
                    private_key: inline(m.key_pem.as_bytes()),
                    ..Default::default()
                })
            }
            ROOT_CA => {
                let bundle = secrets::store().bundle()?;
                let pems: Vec<pem::Pem> = bundle.iter().map(|c| pem::Pem::new("CERTIFICATE", c.to_vec())).collect();
                secret::Type::ValidationContext(CertificateValidationContext {
                    trusted_ca: inline(pem::encode_many(&pems).as_bytes()),
                    ..Default::default()
                })
            }
            _ => return None,
        };
        Some(Secret { name: name.to_string(), r#type: Some(kind) })
    }

    fn watch(&self) -> watch::Receiver<u64> {
        secrets::store().watch()
    }
}
