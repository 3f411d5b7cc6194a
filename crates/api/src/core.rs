//! The Kubernetes core objects the mesh reads: `Service`, `Endpoints`, `EndpointSlice`, and
//! what it needs of a running Pod ([`PodInfo`]).
//!
//! Kubernetes adds many fields the mesh has no use for (`clusterIPs`, `sessionAffinity`,
//! `status`, …); those are accepted and dropped rather than refused, since `kubectl get -o yaml`
//! output must load.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(default, rename = "type")]
    pub service_type: Option<String>,
    #[serde(default)]
    pub external_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub name: Option<String>,
    pub port: u32,
    #[serde(default)]
    pub target_port: Option<IntOrString>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub app_protocol: Option<String>,
}

/// `targetPort`: a number, or the name of a container port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(u32),
    String(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    #[serde(default)]
    pub subsets: Vec<EndpointSubset>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSubset {
    #[serde(default)]
    pub addresses: Vec<EndpointAddress>,
    #[serde(default)]
    pub not_ready_addresses: Vec<EndpointAddress>,
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointAddress {
    pub ip: String,
    #[serde(default)]
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    #[serde(default)]
    pub name: Option<String>,
    pub port: u32,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub app_protocol: Option<String>,
}

/// discovery.k8s.io/v1 `EndpointSlice`; the top level holds what Endpoints keeps in `subsets`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    #[serde(default)]
    pub address_type: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<SliceEndpoint>,
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SliceEndpoint {
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub conditions: Option<SliceConditions>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SliceConditions {
    #[serde(default)]
    pub ready: Option<bool>,
}

/// What the mesh needs of a running Pod (from the API server, not from files): the labels and
/// service account of the address an EndpointSlice lists, for subsets and for the identity a
/// client checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub ip: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
}

/// A v1 `Secret` holding a TLS credential, as a Gateway's `credentialName` (or an Ingress's
/// `tls[].secretName`) names it. Istio's two layouts are read: `tls.crt`, `tls.key`, `ca.crt`
/// (type `kubernetes.io/tls`, or any type) and `cert`, `key`, `cacert`. A Secret with neither
/// is not the mesh's business and is not loaded.
///
/// The key is held only to be handed to the gateway that serves with it: it never appears in
/// `Debug` output, diagnostics or dumps.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsCredential {
    /// PEM certificate chain, leaf first.
    pub cert_chain: Option<String>,
    /// PEM private key.
    pub private_key: Option<String>,
    /// PEM CA certificates a MUTUAL server checks clients against.
    pub ca_certificates: Option<String>,
}

impl std::fmt::Debug for TlsCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCredential")
            .field("cert_chain", &self.cert_chain.as_ref().map(|c| c.len()))
            .field("private_key", &self.private_key.as_ref().map(|_| "<redacted>"))
            .field("ca_certificates", &self.ca_certificates.as_ref().map(|c| c.len()))
            .finish()
    }
}

impl TlsCredential {
    /// The keys Istio reads, per part, in the order it prefers them.
    pub const CERT_KEYS: [&'static str; 2] = ["tls.crt", "cert"];
    pub const KEY_KEYS: [&'static str; 2] = ["tls.key", "key"];
    pub const CA_KEYS: [&'static str; 2] = ["ca.crt", "cacert"];

    /// Reads a Secret's `data` (base64) and `stringData`; `Ok(None)` when it holds no TLS
    /// credential. Errors name the field, never its value.
    pub fn from_secret(doc: &serde_yaml::Value) -> Result<Option<TlsCredential>, Vec<(String, String)>> {
        use base64::Engine as _;
        let mut problems = Vec::new();
        let mut get = |key: &str| -> Option<String> {
            if let Some(v) = doc.get("stringData").and_then(|d| d.get(key)) {
                return match v.as_str() {
                    Some(s) => Some(s.to_owned()),
                    None => {
                        problems.push((format!("stringData.{key}"), "must be a string".to_owned()));
                        None
                    }
                };
            }
            let v = doc.get("data").and_then(|d| d.get(key))?;
            let decoded = v.as_str().map(|s| base64::engine::general_purpose::STANDARD.decode(s.trim()));
            match decoded {
                Some(Ok(bytes)) => match String::from_utf8(bytes) {
                    Ok(s) => Some(s),
                    Err(_) => {
                        problems.push((format!("data.{key}"), "is not PEM text once base64-decoded".to_owned()));
                        None
                    }
                },
                _ => {
                    problems.push((format!("data.{key}"), "is not valid base64".to_owned()));
                    None
                }
            }
        };
        let first = |get: &mut dyn FnMut(&str) -> Option<String>, keys: [&str; 2]| keys.iter().find_map(|k| get(k));
        let cert_chain = first(&mut get, Self::CERT_KEYS);
        let private_key = first(&mut get, Self::KEY_KEYS);
        let ca_certificates = first(&mut get, Self::CA_KEYS);
        if !problems.is_empty() {
            return Err(problems);
        }
        let cred = TlsCredential { cert_chain, private_key, ca_certificates };
        match (&cred.cert_chain, &cred.private_key) {
            (None, None) if cred.ca_certificates.is_none() => Ok(None),
            (Some(_), None) => Err(vec![("data".into(), "has a certificate (tls.crt or cert) but no key (tls.key or key)".into())]),
            (None, Some(_)) => Err(vec![("data".into(), "has a key (tls.key or key) but no certificate (tls.crt or cert)".into())]),
            _ => Ok(Some(cred)),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{load_text, Level, Object};

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n";

    fn b64(s: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(body: &str) -> crate::Loaded {
        load_text(&format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: s, namespace: gw}}\n{body}"), "s.yaml")
    }

    #[test]
    fn both_istio_layouts_load_and_the_key_is_never_shown() {
        for (c, k, ca) in [("tls.crt", "tls.key", "ca.crt"), ("cert", "key", "cacert")] {
            let l = secret(&format!("type: Opaque\ndata:\n  {c}: {}\n  {k}: {}\n  {ca}: {}\n", b64(CERT), b64(KEY), b64(CERT)));
            assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
            let Some(Object::Secret(r)) = l.objects.first() else { panic!("not loaded: {:?}", l.objects) };
            assert_eq!(r.spec.private_key.as_deref(), Some(KEY));
            assert_eq!(r.spec.ca_certificates.as_deref(), Some(CERT));
            assert!(!format!("{:?}", l.objects).contains("SECRETKEYMATERIAL"), "Debug shows the key");
        }
        let l = secret(&format!("stringData:\n  tls.crt: {CERT:?}\n  tls.key: {KEY:?}\n"));
        assert!(matches!(l.objects.first(), Some(Object::Secret(_))), "{:?}", l.diagnostics);
    }

    #[test]
    fn other_secrets_are_not_the_mesh_business() {
        let l = secret("type: kubernetes.io/service-account-token\ndata: {token: YWJj}\n");
        assert!(l.objects.is_empty() && l.diagnostics.is_empty(), "{:?} {:?}", l.objects, l.diagnostics);
    }

    #[test]
    fn a_broken_credential_is_refused_by_field_without_its_value() {
        let l = secret(&format!("data:\n  tls.crt: {}\n  tls.key: '%%%notbase64SECRET'\n", b64(CERT)));
        let d = &l.diagnostics[0];
        assert_eq!((d.level, d.field_path.as_str()), (Level::Error, "data.tls.key"), "{d}");
        assert!(!d.to_string().contains("SECRET"), "the value leaks: {d}");
        let l = secret(&format!("data:\n  tls.crt: {}\n", b64(CERT)));
        assert!(l.diagnostics[0].message.contains("no key"), "{:?}", l.diagnostics);
        let l = secret(&format!("data:\n  tls.crt: {}\n  tls.key: {}\n", b64("not pem"), b64(KEY)));
        assert_eq!(l.diagnostics[0].field_path, "data.tls.crt", "{:?}", l.diagnostics);
        assert!(l.objects.is_empty());
    }
}
