//! weft on Kubernetes: the admission webhooks' reviews — sidecar injection into new Pods (the
//! same mutation `weft kube-inject` makes, returned as a JSONPatch) and validation of Istio
//! resources with `weft analyze`'s messages, which the control plane serves over HTTPS on
//! 15017 — and the API server as a config source (`source`).

pub mod admission;
pub mod ca_store;
pub mod install;
pub mod meshconfig;
pub mod pitfalls;
pub mod publish;
pub mod source;
pub mod tokenreview;

pub use k8s_openapi;
/// The API server client the source uses (kube-rs), and its typed API.
pub use kube::{api, Client};

/// A client for the API server: `kubeconfig` when given, else in-cluster credentials, else
/// `$KUBECONFIG` or `~/.kube/config`, as kubectl finds them.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| format!("no in-cluster credentials and no kubeconfig: {e}"))?,
    };
    Client::try_from(config).map_err(|e| format!("the API server client: {e}"))
}
