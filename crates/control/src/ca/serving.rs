//! The control plane's TLS port (Istio: 15012): its serving certificate, issued by its own CA
//! and renewed at half-life or when the roots change, and the stream of accepted TLS
//! connections that gRPC (xDS and the certificate API) is served on.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::{Authority, CaError};

/// The names proxies expect on the control plane's certificate, as Istio's istiod has them.
pub const SERVING_NAMES: &[&str] = &["istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local", "weft-control-plane"];
const SERVING_TTL: Duration = Duration::from_secs(24 * 3600);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct ServingCert {
    ca: Arc<Authority>,
    ips: Vec<IpAddr>,
    /// Names besides [`SERVING_NAMES`]: the control plane's own Service when it is not
    /// `istiod.istio-system` (a revision, another namespace).
    extra: Vec<String>,
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn issue(ca: &Authority, ips: &[IpAddr], extra: &[String]) -> Result<CertifiedKey, CaError> {
    let mut names: Vec<String> = SERVING_NAMES.iter().map(|s| s.to_string()).collect();
    for n in extra {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let (chain, key) = ca.issue_serving(&names, ips, SERVING_TTL)?;
    let certs = chain
        .iter()
        .map(|p| CertificateDer::from_pem_slice(p.as_bytes()).map_err(|e| CaError::Root(format!("serving chain: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| CaError::Root(format!("serving key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, der, &provider).map_err(|e| CaError::Root(format!("serving key: {e}")))
}

impl ServingCert {
    /// `ips`: addresses the port is reached at, added as IP SANs.
    pub fn new(ca: Arc<Authority>, ips: Vec<IpAddr>, extra: Vec<String>) -> Result<Arc<ServingCert>, CaError> {
        let first = issue(&ca, &ips, &extra)?;
        Ok(Arc::new(ServingCert { ca, ips, extra, current: ArcSwap::new(Arc::new(first)) }))
    }

    /// Renews at half-life, and at once when the trust bundle changes (a rotated root).
    pub async fn renew(self: Arc<Self>) {
        let mut bundle = self.ca.watch_bundle();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SERVING_TTL / 2) => {}
                r = bundle.changed() => if r.is_err() { return },
            }
            match issue(&self.ca, &self.ips, &self.extra) {
                Ok(k) => self.current.store(Arc::new(k)),
                Err(e) => tracing::error!("control plane serving certificate not renewed: {e}"),
            }
        }
    }

    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, CaError> {
        self.server_config_with_alpn(&[b"h2"])
    }

    /// The same certificate for a port whose clients negotiate other protocols.
    pub fn server_config_with_alpn(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| CaError::Root(format!("TLS versions: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(cfg))
    }
}

/// An accepted TLS connection, as tonic serves it.
pub struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for TlsConn {
    type ConnectInfo = <TcpStream as Connected>::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Accepts on `listener` and yields connections whose handshake completed; a client that fails
/// or stalls its handshake is dropped without holding up the others.
pub fn incoming(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept on the TLS port failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, out) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => {
                        let _ = out.send(Ok(TlsConn(s))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake on the secure port failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake on the secure port timed out"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}
