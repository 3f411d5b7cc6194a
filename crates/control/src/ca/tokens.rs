//! Bootstrap tokens: how a workload proves who it is to the CA before it has a certificate.
//!
//! Whatever starts a workload (`weft up`) writes one file per workload into the token
//! directory — `{"token": "…", "namespace": "…", "serviceAccount": "…"}` — and hands the same
//! token to that workload's sidecar. The directory is read on each request, so workloads can
//! come and go while the control plane runs. The Kubernetes service-account path comes later
//! behind the same [`Tokens::authenticate`].

use std::path::{Path, PathBuf};

use super::{CaError, Identity};

/// Shorter tokens are too easy to guess; their files are skipped with a warning.
const MIN_TOKEN_LEN: usize = 16;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    token: String,
    namespace: String,
    #[serde(rename = "serviceAccount")]
    service_account: String,
}

#[derive(Debug, Clone)]
pub struct Tokens {
    dir: PathBuf,
}

/// Compares without an early exit, so timing does not tell how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    pub fn new(dir: &Path) -> Tokens {
        Tokens { dir: dir.to_path_buf() }
    }

    /// The identity a presented token stands for.
    pub fn authenticate(&self, presented: Option<&str>) -> Result<Identity, CaError> {
        let Some(presented) = presented.filter(|t| !t.is_empty()) else {
            return Err(CaError::Unauthenticated("no bootstrap token (authorization: Bearer <token>)".into()));
        };
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| CaError::Unauthenticated(format!("token directory {}: {e}", self.dir.display())))?;
        let mut found = None;
        for entry in entries.flatten() {
            let path = entry.path();
            if !matches!(path.extension().and_then(|e| e.to_str()), Some("json" | "yaml" | "yml")) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let file: TokenFile = match serde_yaml::from_str(&text) {
                Ok(f) => f,
                Err(e) => {
                    // The message names the file and the field, never the file's contents.
                    tracing::warn!(file = %path.display(), "bootstrap token file skipped: {}", e.to_string().lines().next().unwrap_or(""));
                    continue;
                }
            };
            if file.token.len() < MIN_TOKEN_LEN {
                tracing::warn!(file = %path.display(), "bootstrap token file skipped: the token is shorter than {MIN_TOKEN_LEN} characters");
                continue;
            }
            // Every file is compared, so the time taken does not say which one matched.
            if same(file.token.as_bytes(), presented.as_bytes()) {
                found = Some(Identity { namespace: file.namespace, service_account: file.service_account });
            }
        }
        found.ok_or_else(|| CaError::Unauthenticated("the bootstrap token is not known".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_their_identity_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("weft-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("reviews.json"),
            r#"{"token": "0123456789abcdef0123", "namespace": "default", "serviceAccount": "reviews"}"#,
        )
        .expect("write");
        std::fs::write(dir.join("weak.json"), r#"{"token": "short", "namespace": "default", "serviceAccount": "weak"}"#).expect("write");
        let t = Tokens::new(&dir);
        let id = t.authenticate(Some("0123456789abcdef0123")).expect("known token");
        assert_eq!(id, Identity { namespace: "default".into(), service_account: "reviews".into() });
        assert!(matches!(t.authenticate(Some("0123456789abcdef0124")), Err(CaError::Unauthenticated(_))));
        assert!(matches!(t.authenticate(Some("short")), Err(CaError::Unauthenticated(_))), "a weak token is never accepted");
        assert!(matches!(t.authenticate(None), Err(CaError::Unauthenticated(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
