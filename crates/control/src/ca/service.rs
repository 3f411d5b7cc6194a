//! `istio.v1.auth.IstioCertificateService/CreateCertificate`: authenticate the caller by its
//! bootstrap token, then sign its CSR for its own identity only.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::{Code, Status};
use weft_xds::istio_ca::{IstioCertificateRequest, IstioCertificateResponse, CREATE_CERTIFICATE, SERVICE};

use super::{Authenticator, Authority, CaError};

/// Istio's CA counters (`citadel_server_*`), for the control plane's metrics.
#[derive(Debug, Default)]
pub struct CaStats {
    pub csr_count: AtomicU64,
    pub success_cert_issuance_count: AtomicU64,
    pub authentication_failure_count: AtomicU64,
    pub csr_parsing_err_count: AtomicU64,
    pub id_extraction_err_count: AtomicU64,
}

impl CaStats {
    /// `(metric name, value)` with Istio's names.
    pub fn metrics(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("citadel_server_csr_count", self.csr_count.load(Ordering::Relaxed)),
            ("citadel_server_success_cert_issuance_count", self.success_cert_issuance_count.load(Ordering::Relaxed)),
            ("citadel_server_authentication_failure_count", self.authentication_failure_count.load(Ordering::Relaxed)),
            ("citadel_server_csr_parsing_err_count", self.csr_parsing_err_count.load(Ordering::Relaxed)),
            ("citadel_server_id_extraction_err_count", self.id_extraction_err_count.load(Ordering::Relaxed)),
        ]
    }
}

/// The tower service tonic's router serves under [`SERVICE`].
#[derive(Clone)]
pub struct CaService {
    pub ca: Arc<Authority>,
    pub authn: Arc<Authenticator>,
    pub stats: Arc<CaStats>,
}

impl tonic::server::NamedService for CaService {
    const NAME: &'static str = SERVICE;
}

type HttpResponse = http::Response<tonic::body::Body>;

impl tower_service::Service<http::Request<tonic::body::Body>> for CaService {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != CREATE_CERTIFICATE {
                let mut grpc =
                    tonic::server::Grpc::new(tonic_prost::ProstCodec::<IstioCertificateResponse, IstioCertificateRequest>::default());
                return Ok(grpc.unary(Unimplemented(req.uri().path().to_string()), req).await);
            }
            let mut grpc =
                tonic::server::Grpc::new(tonic_prost::ProstCodec::<IstioCertificateResponse, IstioCertificateRequest>::default());
            Ok(grpc.unary(Create(this), req).await)
        })
    }
}

struct Unimplemented(String);

impl tonic::server::UnaryService<IstioCertificateRequest> for Unimplemented {
    type Response = IstioCertificateResponse;
    type Future = std::future::Ready<Result<tonic::Response<IstioCertificateResponse>, Status>>;

    fn call(&mut self, _req: tonic::Request<IstioCertificateRequest>) -> Self::Future {
        std::future::ready(Err(Status::unimplemented(format!("unknown method {}", self.0))))
    }
}

struct Create(CaService);

impl tonic::server::UnaryService<IstioCertificateRequest> for Create {
    type Response = IstioCertificateResponse;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<IstioCertificateResponse>, Status>> + Send>>;

    fn call(&mut self, req: tonic::Request<IstioCertificateRequest>) -> Self::Future {
        let this = self.0.clone();
        Box::pin(async move { this.create(req).await })
    }
}

impl CaService {
    async fn create(&self, req: tonic::Request<IstioCertificateRequest>) -> Result<tonic::Response<IstioCertificateResponse>, Status> {
        let stats = &self.stats;
        stats.csr_count.fetch_add(1, Ordering::Relaxed);
        let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_else(|| "unknown".into());
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_owned());
        let caller = match self.authn.authenticate(token.as_deref()).await {
            Ok(id) => id,
            Err(e) => {
                stats.authentication_failure_count.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer, "CSR refused: {e}");
                return Err(Status::unauthenticated(e.to_string()));
            }
        };
        let msg = req.into_inner();
        let ttl = u64::try_from(msg.validity_duration).ok().map(Duration::from_secs);
        match self.ca.sign(&msg.csr, &caller, ttl) {
            Ok(chain) => {
                stats.success_cert_issuance_count.fetch_add(1, Ordering::Relaxed);
                tracing::info!(peer, identity = %caller.spiffe(self.ca.trust_domain()), "certificate issued");
                Ok(tonic::Response::new(IstioCertificateResponse { cert_chain: chain }))
            }
            Err(e) => {
                let code = match &e {
                    CaError::Identity { .. } => {
                        stats.id_extraction_err_count.fetch_add(1, Ordering::Relaxed);
                        Code::PermissionDenied
                    }
                    CaError::Csr(_) => {
                        stats.csr_parsing_err_count.fetch_add(1, Ordering::Relaxed);
                        Code::InvalidArgument
                    }
                    CaError::Unauthenticated(_) => Code::Unauthenticated,
                    CaError::Root(_) => Code::Internal,
                };
                tracing::warn!(peer, caller = %caller.spiffe(self.ca.trust_domain()), "CSR refused: {e}");
                Err(Status::new(code, e.to_string()))
            }
        }
    }
}
