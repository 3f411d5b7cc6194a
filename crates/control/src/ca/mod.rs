//! The certificate authority in the control plane: a root of trust, workload identities
//! proven by bootstrap tokens, and X.509 SVIDs signed for them.

pub mod authn;
pub mod authority;
pub mod service;
pub mod serving;
pub mod tokens;

pub use authn::Authenticator;
pub use authority::{Authority, RootSource};
pub use tokens::Tokens;

/// A workload identity: Istio's namespace and service account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Identity {
    pub namespace: String,
    #[serde(rename = "serviceAccount")]
    pub service_account: String,
}

impl Identity {
    /// `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    pub fn spiffe(&self, trust_domain: &str) -> String {
        format!("spiffe://{trust_domain}/ns/{}/sa/{}", self.namespace, self.service_account)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("root of trust: {0}")]
    Root(String),
    #[error("invalid CSR: {0}")]
    Csr(String),
    #[error("the CSR asks for {asked}, but the caller is {caller}")]
    Identity { asked: String, caller: String },
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
}
