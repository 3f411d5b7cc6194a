//! The agent's xDS proxy, as pilot-agent has one: the pod's proxy (weft or Envoy) speaks
//! plain gRPC to a Unix socket only the pod can reach, and the agent carries each stream to the
//! control plane over TLS (checked against the mesh's root) with the pod's service-account
//! token as the bearer credential. The proxy needs neither the token nor a TLS client for the
//! control plane.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpStream, UnixListener};

/// Where the control plane is and how to prove who we are.
pub struct Upstream {
    /// `host:port` (Istio: `istiod.istio-system.svc:15012`).
    pub address: String,
    pub root_cert: PathBuf,
    pub token: PathBuf,
}

type Body = BoxBody<Bytes, hyper::Error>;

fn error(status: StatusCode, message: String) -> Response<Body> {
    tracing::warn!("xDS proxy: {message}");
    let mut r = Response::new(Full::new(Bytes::from(message)).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r
}

impl Upstream {
    fn tls(&self) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), String> {
        let pem = std::fs::read(&self.root_cert).map_err(|e| format!("{}: {e}", self.root_cert.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("{}: {e}", self.root_cert.display()))?;
            roots.add(cert).map_err(|e| format!("{}: {e}", self.root_cert.display()))?;
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let host = self.address.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']'])).unwrap_or(&self.address);
        let name = ServerName::try_from(host.to_owned()).map_err(|_| format!("discovery address {:?}: not a host name", self.address))?;
        Ok((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
    }

    /// One TLS connection to the control plane, as an HTTP/2 client.
    async fn connect(&self) -> Result<hyper::client::conn::http2::SendRequest<Incoming>, String> {
        let (connector, name) = self.tls()?;
        let addrs: Vec<SocketAddr> =
            tokio::net::lookup_host(&self.address).await.map_err(|e| format!("resolve {}: {e}", self.address))?.collect();
        let addr = *addrs.first().ok_or_else(|| format!("resolve {}: no address", self.address))?;
        let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connect {addr}: timed out"))?
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let tls = connector.connect(name, tcp).await.map_err(|e| format!("TLS to {}: {e}", self.address))?;
        let (send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP/2 to {}: {e}", self.address))?;
        tokio::spawn(conn);
        Ok(send)
    }

    /// The token is read for every stream: the kubelet rotates it in place.
    fn bearer(&self) -> Result<http::HeaderValue, String> {
        let token = std::fs::read_to_string(&self.token).map_err(|e| format!("{}: {e}", self.token.display()))?;
        http::HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| format!("{}: not a token", self.token.display()))
    }

    async fn forward(self: Arc<Self>, mut req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
        let bearer = match self.bearer() {
            Ok(b) => b,
            Err(e) => return Ok(error(StatusCode::SERVICE_UNAVAILABLE, e)),
        };
        let mut send = match self.connect().await {
            Ok(s) => s,
            Err(e) => return Ok(error(StatusCode::SERVICE_UNAVAILABLE, e)),
        };
        let uri = format!("https://{}{}", self.address, req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"));
        match uri.parse() {
            Ok(u) => *req.uri_mut() = u,
            Err(e) => return Ok(error(StatusCode::BAD_REQUEST, format!("{uri}: {e}"))),
        }
        req.headers_mut().insert(http::header::AUTHORIZATION, bearer);
        match send.send_request(req).await {
            Ok(resp) => Ok(resp.map(|b| b.boxed())),
            Err(e) => Ok(error(StatusCode::BAD_GATEWAY, format!("the control plane at {}: {e}", self.address))),
        }
    }
}

/// Serves the xDS proxy on `socket` (replacing a stale one) until the process ends.
pub async fn serve(socket: &Path, upstream: Arc<Upstream>) -> Result<(), String> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| format!("{}: {e}", socket.display()))?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| upstream.clone().forward(req));
            let builder = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await {
                tracing::debug!("xDS proxy connection ended: {e}");
            }
        });
    }
}
