//! The flags that give a workload its identity, shared by `weft proxy` and `weft agent`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use weft_proxy::identity::IdentityOptions;

#[derive(Args, Debug, Clone)]
pub struct CaArgs {
    /// The mesh CA (HOST:PORT; Istio: istiod's 15012). The workload's key is made here and
    /// its certificate fetched there, for TLS contexts that name the SDS secrets "default"
    /// and "ROOTCA". Also from the CA_ADDR environment variable.
    #[arg(long = "ca-address")]
    pub ca_address: Option<String>,
    /// PEM trust bundle (ROOTCA), also what the CA's certificate is checked against. Watched:
    /// roots added or removed take effect without a restart.
    #[arg(long = "ca-root-cert")]
    pub ca_root_cert: Option<PathBuf>,
    /// File holding this workload's bootstrap token for the CA.
    #[arg(long = "ca-token-file")]
    pub ca_token_file: Option<PathBuf>,
    /// The name the CA's certificate must carry.
    #[arg(long = "ca-server-name", default_value = "istiod.istio-system.svc")]
    pub ca_server_name: String,
    /// Trust domain of the SPIFFE ID asked for (TRUST_DOMAIN in the environment).
    #[arg(long = "trust-domain")]
    pub trust_domain: Option<String>,
    /// Lifetime to ask the CA for (SECRET_TTL in the environment; Istio: 24h).
    #[arg(long = "workload-cert-ttl")]
    pub workload_cert_ttl: Option<String>,
}

impl CaArgs {
    /// The identity to maintain, or `None` without a CA address. Flags first, then Istio's
    /// agent environment (CA_ADDR, TRUST_DOMAIN, SECRET_TTL); `who` names the namespace and
    /// service account, and is asked only when there is a CA.
    pub fn options(
        &self,
        env: &[(String, String)],
        who: impl FnOnce() -> Result<(String, String), String>,
    ) -> Result<Option<IdentityOptions>, String> {
        let var = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
        let Some(address) = self.ca_address.clone().or_else(|| var("CA_ADDR")) else { return Ok(None) };
        let bundle_file = self.ca_root_cert.clone().ok_or("--ca-address needs --ca-root-cert (the bundle to check the CA against)")?;
        let token_file = self.ca_token_file.clone().ok_or("--ca-address needs --ca-token-file (the workload's bootstrap token)")?;
        let (ns, sa) = who()?;
        let td = self.trust_domain.clone().or_else(|| var("TRUST_DOMAIN")).unwrap_or_else(|| "cluster.local".into());
        let ttl = match self.workload_cert_ttl.clone().or_else(|| var("SECRET_TTL")) {
            Some(t) => weft_api::duration::parse_go_duration(&t).map_err(|e| format!("--workload-cert-ttl {t:?}: {e}"))?,
            None => Duration::from_secs(24 * 3600),
        };
        weft_proxy::identity::read_bundle(&bundle_file).map_err(|e| format!("--ca-root-cert: {e}"))?;
        let ca_server_name = rustls::pki_types::ServerName::try_from(self.ca_server_name.clone())
            .map_err(|_| format!("--ca-server-name {:?} is not a valid name", self.ca_server_name))?;
        if !address.contains(':') {
            return Err(format!("--ca-address {address:?}: expected HOST:PORT"));
        }
        Ok(Some(IdentityOptions {
            ca_address: address,
            ca_server_name,
            bundle_file,
            token_file,
            spiffe_id: format!("spiffe://{td}/ns/{ns}/sa/{sa}"),
            ttl,
            export: None,
        }))
    }
}
