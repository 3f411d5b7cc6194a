//! How a workload proves who it is to the CA: a bootstrap token from the token directory (what
//! `weft up` hands its sidecars), or on Kubernetes the pod's projected service-account token,
//! checked with the API server (TokenReview, audience `istio-ca`).

use super::{CaError, Identity, Tokens};

/// The audience Istio's injected `istio-token` volume is made for.
pub const AUDIENCE: &str = "istio-ca";

#[derive(Clone, Default)]
pub struct Authenticator {
    pub tokens: Option<Tokens>,
    pub kube: Option<weft_kube::Client>,
}

impl Authenticator {
    /// The identity a presented token stands for: bootstrap tokens first, then the API server.
    pub async fn authenticate(&self, presented: Option<&str>) -> Result<Identity, CaError> {
        let Some(token) = presented.filter(|t| !t.is_empty()) else {
            return Err(CaError::Unauthenticated("no token (authorization: Bearer <token>)".into()));
        };
        let mut why = Vec::new();
        if let Some(tokens) = &self.tokens {
            match tokens.authenticate(Some(token)) {
                Ok(id) => return Ok(id),
                Err(e) => why.push(e.to_string()),
            }
        }
        if let Some(client) = &self.kube {
            match weft_kube::tokenreview::review(client, token, AUDIENCE).await {
                Ok((namespace, service_account)) => return Ok(Identity { namespace, service_account }),
                Err(e) => why.push(e),
            }
        }
        if why.is_empty() {
            why.push("the CA has no way to check tokens".into());
        }
        Err(CaError::Unauthenticated(why.join("; ")))
    }
}
