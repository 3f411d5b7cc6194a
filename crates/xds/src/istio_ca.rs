//! Istio's certificate API (`istio.v1.auth.IstioCertificateService`): the messages, and the
//! client a proxy uses to have its CSR signed over TLS.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

pub const SERVICE: &str = "istio.v1.auth.IstioCertificateService";
pub const CREATE_CERTIFICATE: &str = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

/// `istio.v1.auth.IstioCertificateRequest` (the `metadata` field is not used by weft).
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// PEM-encoded certificate signing request.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Requested lifetime in seconds; 0 for the CA's default.
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
}

/// `istio.v1.auth.IstioCertificateResponse`: the chain, leaf first, root last.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

/// Where the CA is and how to trust it.
#[derive(Clone)]
pub struct CaEndpoint {
    /// `host:port`.
    pub address: String,
    /// Verifies the CA's serving certificate (trust bundle and expected name).
    pub tls: Arc<rustls::ClientConfig>,
    /// The name the CA's certificate must carry (Istio: `istiod.istio-system.svc`).
    pub server_name: ServerName<'static>,
}

/// Dials the CA over TLS for tonic.
#[derive(Clone)]
struct Dial(CaEndpoint);

impl tower_service::Service<http::Uri> for Dial {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let ep = self.0.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&ep.address).await?;
            let _ = tcp.set_nodelay(true);
            let tls = tokio_rustls::TlsConnector::from(ep.tls.clone()).connect(ep.server_name.clone(), tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// Why a certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CaClientError {
    #[error("cannot reach the CA at {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("the CA refused: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("the CA answered with an empty certificate chain")]
    Empty,
}

/// Sends a CSR with the bootstrap token; returns the signed chain, leaf first.
pub async fn create_certificate(ca: &CaEndpoint, token: &str, csr: String, ttl: Duration) -> Result<Vec<String>, CaClientError> {
    let connect_err = |reason: String| CaClientError::Connect { address: ca.address.clone(), reason };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", ca.address))
        .map_err(|e| connect_err(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_with_connector(Dial(ca.clone()))
        .await
        .map_err(|e| connect_err(crate::ads_client::error_chain(&e)))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| connect_err(e.to_string()))?;
    let mut req = tonic::Request::new(IstioCertificateRequest { csr, validity_duration: ttl.as_secs() as i64 });
    let bearer = format!("Bearer {token}").parse().map_err(|_| CaClientError::Refused {
        code: tonic::Code::InvalidArgument,
        message: "the bootstrap token is not a valid header value".into(),
    })?;
    req.metadata_mut().insert("authorization", bearer);
    let path = http::uri::PathAndQuery::from_static(CREATE_CERTIFICATE);
    let resp = grpc
        .unary(req, path, tonic_prost::ProstCodec::<IstioCertificateRequest, IstioCertificateResponse>::default())
        .await
        .map_err(|s| CaClientError::Refused { code: s.code(), message: s.message().to_string() })?;
    let chain = resp.into_inner().cert_chain;
    if chain.is_empty() {
        return Err(CaClientError::Empty);
    }
    Ok(chain)
}
