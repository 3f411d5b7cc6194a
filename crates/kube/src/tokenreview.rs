//! Who a service-account token stands for, asked of the API server (a TokenReview), as istiod
//! asks before it signs a pod's certificate. The token must be meant for `audience` (the
//! projected `istio-token` is made for `istio-ca`) and name a service account.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use kube::Client;

/// The namespace and service account of a valid token; why not, otherwise (never the token).
pub async fn review(client: &Client, token: &str, audience: &str) -> Result<(String, String), String> {
    let api: Api<TokenReview> = Api::all(client.clone());
    let review = TokenReview {
        spec: TokenReviewSpec { token: Some(token.to_owned()), audiences: Some(vec![audience.to_owned()]) },
        ..TokenReview::default()
    };
    let answer = api.create(&PostParams::default(), &review).await.map_err(|e| format!("the TokenReview failed: {e}"))?;
    let status = answer.status.ok_or("the TokenReview came back without a status")?;
    if status.authenticated != Some(true) {
        return Err(format!("the API server did not authenticate the token{}", status.error.map(|e| format!(": {e}")).unwrap_or_default()));
    }
    if let Some(audiences) = &status.audiences {
        if !audiences.iter().any(|a| a == audience) {
            return Err(format!("the token is not meant for {audience} (its audiences: {})", audiences.join(", ")));
        }
    }
    let username = status.user.and_then(|u| u.username).unwrap_or_default();
    let parts: Vec<&str> = username.splitn(4, ':').collect();
    match parts.as_slice() {
        ["system", "serviceaccount", ns, sa] if !ns.is_empty() && !sa.is_empty() => Ok(((*ns).to_owned(), (*sa).to_owned())),
        _ => Err(format!("the token belongs to {username:?}, not to a service account")),
    }
}
