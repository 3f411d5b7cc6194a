//! A Secret Discovery Service server (`envoy.service.secret.v3.SecretDiscoveryService`,
//! state of the world) on a Unix socket: how the agent hands the Envoy next to it its workload
//! certificate (`default`) and the trust bundle (`ROOTCA`), the way Istio's pilot-agent does.
//! Only ever on a local socket: a `default` secret carries a private key, which must not
//! cross a network.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{SecretDiscoveryService, SecretDiscoveryServiceServer};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};

pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Where the secrets come from.
pub trait SecretSource: Send + Sync + 'static {
    /// The secret named `name`, once there is one.
    fn secret(&self, name: &str) -> Option<Secret>;
    /// Changes whenever any secret may have changed.
    fn watch(&self) -> watch::Receiver<u64>;
}

struct Sds<S> {
    source: Arc<S>,
}

impl<S: SecretSource> Sds<S> {
    /// Every requested secret, or `None` while one of them is missing (Envoy waits for it).
    fn resources(&self, names: &[String]) -> Option<Vec<Any>> {
        names.iter().map(|n| self.source.secret(n).map(|s| Any { type_url: SECRET.into(), value: s.encode_to_vec() })).collect()
    }
}

type DeltaStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<S: SecretSource> SecretDiscoveryService for Sds<S> {
    type DeltaSecretsStream = DeltaStream;
    type StreamSecretsStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn delta_secrets(&self, _r: Request<Streaming<DeltaDiscoveryRequest>>) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented("this SDS server speaks state of the world (StreamSecrets), as Istio's agent does"))
    }

    async fn stream_secrets(&self, request: Request<Streaming<DiscoveryRequest>>) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let sds = Sds { source: self.source.clone() };
        tokio::spawn(async move {
            let mut changes = sds.source.watch();
            let mut names: Vec<String> = Vec::new();
            let mut sent: Option<(Vec<String>, u64)> = None;
            let mut nonce = 0u64;
            loop {
                let version = *changes.borrow_and_update();
                let current = Some((names.clone(), version));
                if !names.is_empty() && sent != current {
                    if let Some(resources) = sds.resources(&names) {
                        nonce += 1;
                        let resp = DiscoveryResponse {
                            version_info: version.to_string(),
                            resources,
                            type_url: SECRET.into(),
                            nonce: nonce.to_string(),
                            ..Default::default()
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                        sent = current;
                    }
                }
                tokio::select! {
                    r = requests.message() => match r {
                        Ok(Some(req)) => {
                            if let Some(e) = &req.error_detail {
                                tracing::warn!(secrets = ?req.resource_names, "the proxy refused a secret: {}", e.message);
                            }
                            names = req.resource_names;
                        }
                        _ => return,
                    },
                    r = changes.changed() => if r.is_err() { return },
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn fetch_secrets(&self, request: Request<DiscoveryRequest>) -> Result<Response<DiscoveryResponse>, Status> {
        let names = request.into_inner().resource_names;
        let version = *self.source.watch().borrow();
        let resources = self.resources(&names).ok_or_else(|| Status::unavailable("the requested secrets are not issued yet"))?;
        Ok(Response::new(DiscoveryResponse { version_info: version.to_string(), resources, type_url: SECRET.into(), ..Default::default() }))
    }
}

/// Serves SDS on the Unix socket `path` (replacing a stale one) until the process ends. The
/// socket is made readable and writable by its owner only.
pub async fn serve_unix<S: SecretSource>(path: &Path, source: Arc<S>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    tonic::transport::Server::builder()
        .add_service(SecretDiscoveryServiceServer::from_arc(Arc::new(Sds { source })))
        .serve_with_incoming(UnixListenerStream::new(listener))
        .await
        .map_err(std::io::Error::other)
}
