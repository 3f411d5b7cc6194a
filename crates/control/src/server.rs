//! Running the control plane: load the config dir, watch it, serve ADS and the debug API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use weft_api::mesh::MeshConfig;

use crate::ads::Ads;
use crate::state::Shared;
use crate::store;
use crate::wire::AdsService;

pub struct Options {
    pub config_dir: PathBuf,
    pub mesh: MeshConfig,
    pub xds_addr: SocketAddr,
    pub debug_addr: SocketAddr,
    pub debounce: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read config dir {dir}: {source}")]
    ConfigDir { dir: String, source: std::io::Error },
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("xDS server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

pub struct Running {
    pub shared: Arc<Shared>,
    pub xds_addr: SocketAddr,
    pub debug_addr: SocketAddr,
    grpc: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Loads, binds and starts serving; fails before serving anything if the dir or a port is bad.
pub async fn start(opts: Options) -> Result<Running, ServeError> {
    let dir = opts.config_dir.clone();
    let snapshot = store::load_dir(&dir).map_err(|source| ServeError::ConfigDir { dir: dir.display().to_string(), source })?;
    crate::state::log_diagnostics(&snapshot.diagnostics);
    let xds = listen(opts.xds_addr).map_err(|source| ServeError::Bind { what: "xDS", addr: opts.xds_addr, source })?;
    let debug =
        TcpListener::bind(opts.debug_addr).await.map_err(|source| ServeError::Bind { what: "debug", addr: opts.debug_addr, source })?;
    let xds_addr = xds.local_addr().unwrap_or(opts.xds_addr);
    let debug_addr = debug.local_addr().unwrap_or(opts.debug_addr);
    let shared = Shared::new(snapshot, opts.mesh);
    tracing::info!(objects = shared.current.borrow().model.services.len(), xds = %xds_addr, debug = %debug_addr, "control plane serving");

    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(store::watch(dir, Duration::from_millis(100), opts.debounce, tx));
    let s = shared.clone();
    tokio::spawn(async move {
        while let Some(snap) = rx.recv().await {
            s.publish(snap);
        }
    });
    tokio::spawn(crate::debug::serve(debug, shared.clone()));
    tokio::spawn(crate::memory::return_free_memory());

    let svc = AdsService::new(Ads { shared: shared.clone() });
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(xds);
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(svc)
            .serve_with_incoming(incoming),
    );
    Ok(Running { shared, xds_addr, debug_addr, grpc })
}

impl Running {
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.grpc.await {
            Ok(r) => r.map_err(ServeError::from),
            Err(_) => Ok(()),
        }
    }
}

/// Binds with a deep accept queue: a fleet of proxies reconnecting at once (after a control
/// plane restart) must not overflow it, which would reset their connections.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}
