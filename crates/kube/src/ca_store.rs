//! The CA's root of trust kept in the cluster, so that every control-plane replica, and every
//! restart, signs with one root — as istiod keeps its self-signed root in the Secret
//! `istio-ca-secret`. A plugged-in CA (the Secret `cacerts`, Istio's layout) comes first.
//!
//! Without this, a restarted control plane (its CA directory is an in-memory volume) would
//! make a new root, and workloads holding certificates from the old one could no longer talk
//! to those holding new ones until every certificate was renewed.
//!
//! The key is read into the CA directory only (mode 0600); it is stored in a Secret only the
//! control plane's service account may read, exactly where istiod stores its own.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::Client;

/// Istio's plugged-in CA Secret.
pub const PLUGGED: &str = "cacerts";
/// Where istiod keeps its self-signed root (read too when migrating from Istio: the same root
/// stays in force).
pub const SELF_SIGNED: &str = "istio-ca-secret";

const CA_CERT: &str = "ca-cert.pem";
const CA_KEY: &str = "ca-key.pem";
const ROOT_CERT: &str = "root-cert.pem";
const CERT_CHAIN: &str = "cert-chain.pem";

/// Where the root the CA directory now holds came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The `cacerts` Secret.
    Plugged,
    /// `istio-ca-secret`, written by another replica or an earlier run (or by istiod).
    Shared,
    /// Made here (or found in the directory) and stored as `istio-ca-secret`.
    Stored,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("reading Secret {namespace}/{name}: {source}")]
    Read { namespace: String, name: String, source: kube::Error },
    #[error("storing the root as Secret {namespace}/{SELF_SIGNED}: {source}")]
    Write { namespace: String, source: kube::Error },
    #[error("Secret {namespace}/{name} has no {key} (a CA Secret holds ca-cert.pem and ca-key.pem)")]
    Incomplete { namespace: String, name: String, key: &'static str },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("making a root: {0}")]
    Generate(String),
}

/// Makes `dir` hold the cluster's root: `cacerts`, else `istio-ca-secret`; when neither exists,
/// the set already in `dir` or one `generate` writes there is stored as `istio-ca-secret` —
/// unless another replica stored one first, which then wins and replaces `dir`'s.
pub async fn sync(
    client: &Client,
    namespace: &str,
    dir: &Path,
    generate: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<Origin, StoreError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let get = |name: &'static str| {
        let secrets = secrets.clone();
        async move {
            secrets.get_opt(name).await.map_err(|source| StoreError::Read {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source,
            })
        }
    };
    if let Some(s) = get(PLUGGED).await? {
        write_dir(dir, &files(&s, namespace, PLUGGED)?)?;
        return Ok(Origin::Plugged);
    }
    if let Some(s) = get(SELF_SIGNED).await? {
        write_dir(dir, &files(&s, namespace, SELF_SIGNED)?)?;
        return Ok(Origin::Shared);
    }
    if !dir.join(CA_CERT).exists() || !dir.join(CA_KEY).exists() {
        generate(dir).map_err(StoreError::Generate)?;
    }
    let mut data = BTreeMap::new();
    for f in [CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN] {
        let path = dir.join(f);
        match std::fs::read(&path) {
            Ok(bytes) => {
                data.insert(f.to_owned(), ByteString(bytes));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && matches!(f, ROOT_CERT | CERT_CHAIN) => {}
            Err(source) => return Err(StoreError::Io { path: path.display().to_string(), source }),
        }
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(SELF_SIGNED.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_owned(), "weft".to_owned())])),
            ..ObjectMeta::default()
        },
        type_: Some("istio.io/ca-root".into()),
        data: Some(data),
        ..Secret::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(Origin::Stored),
        // Another replica stored its root first: use that one.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let Some(s) = get(SELF_SIGNED).await? else {
                return Err(StoreError::Incomplete { namespace: namespace.into(), name: SELF_SIGNED.into(), key: CA_CERT });
            };
            write_dir(dir, &files(&s, namespace, SELF_SIGNED)?)?;
            Ok(Origin::Shared)
        }
        Err(source) => Err(StoreError::Write { namespace: namespace.into(), source }),
    }
}

/// The CA files a Secret holds. istiod's own `istio-ca-secret` leaves `root-cert.pem` and
/// `cert-chain.pem` empty for a self-signed root: the CA certificate is then both.
fn files(s: &Secret, namespace: &str, name: &str) -> Result<BTreeMap<&'static str, Vec<u8>>, StoreError> {
    let data = s.data.clone().unwrap_or_default();
    let get = |k: &str| data.get(k).map(|b| b.0.clone()).filter(|b| !b.is_empty());
    let need = |k: &'static str| get(k).ok_or_else(|| StoreError::Incomplete { namespace: namespace.into(), name: name.into(), key: k });
    let ca_cert = need(CA_CERT)?;
    let ca_key = need(CA_KEY)?;
    let root = get(ROOT_CERT).unwrap_or_else(|| ca_cert.clone());
    let chain = get(CERT_CHAIN).unwrap_or_else(|| ca_cert.clone());
    Ok(BTreeMap::from([(CA_CERT, ca_cert), (CA_KEY, ca_key), (ROOT_CERT, root), (CERT_CHAIN, chain)]))
}

/// Writes the set into `dir`, the key readable by its owner only.
fn write_dir(dir: &Path, files: &BTreeMap<&'static str, Vec<u8>>) -> Result<(), StoreError> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| StoreError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for (name, bytes) in files {
        let path = dir.join(name);
        let mode = if *name == CA_KEY { 0o600 } else { 0o644 };
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&path).map_err(io(&path))?;
        // `mode` applies to a new file only: one already there is narrowed before the key goes in.
        f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io(&path))?;
        f.write_all(bytes).map_err(io(&path))?;
    }
    Ok(())
}
