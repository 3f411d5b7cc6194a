//! The bookinfo-like sample application that `weft demo` runs: four small HTTP services with
//! Istio bookinfo's call graph (productpage → details, productpage → reviews → ratings), one
//! binary role each (`weft sample <service>`).
//!
//! What it owns: the services' JSON and HTML, header propagation to upstream calls (so
//! header-based routing such as `end-user: jason` works), and reporting the peer identity each
//! hop saw in `x-forwarded-client-cert`, so a test can prove a hop was mTLS.
//!
//! What it must not know: anything about the mesh. Like bookinfo's containers, these services
//! speak plain HTTP/1.1 to names the system resolver knows, or to the HTTP proxy their
//! environment names (`HTTP_PROXY`, as curl reads it); the mesh around them adds TLS, routing
//! and identity.

#![forbid(unsafe_code)]

mod args;
mod duration;
mod html;
mod proxy;
mod server;
mod services;
mod upstream;
mod xfcc;

use std::net::SocketAddr;

pub use args::{BaseUrl, ReviewsVersion, SampleArgs, Service};
pub use proxy::ProxyEnv;
pub use server::{serve, App};

/// Why a sample service could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen on {addr}: {source} (is another process using the port? pick another with --listen)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the SIGTERM handler: {0}")]
    Signal(#[source] std::io::Error),
}

/// Runs one sample service until SIGINT or SIGTERM: builds its own tokio runtime, installs a
/// stderr log subscriber (unless the caller already installed one) and serves `args.listen`.
/// Upstream calls use the HTTP proxy the process environment names. In-flight requests get a
/// short grace period on shutdown.
pub fn run(mut args: SampleArgs) -> Result<(), SampleError> {
    init_logging();
    args.proxy = ProxyEnv::from_process();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(SampleError::Runtime)?;
    rt.block_on(async move {
        let app = App::new(&args);
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.map_err(|source| SampleError::Bind { addr: args.listen, source })?;
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(SampleError::Signal)?;
        tracing::info!(service = app.name(), listen = %args.listen, proxy = ?args.proxy.proxy_for(&http::Uri::from_static("http://upstream/")), "serving");
        serve(app, listener, shutdown_signal(term)).await;
        Ok(())
    })
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal(mut term: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). A subscriber the caller installed
/// first wins: `weft` may set up logging before dispatching here.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _already_set = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
