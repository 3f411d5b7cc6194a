//! The admission webhooks over HTTPS (Istio: 15017, the `istiod` Service's 443): `/inject`
//! (and Istio's `/inject/…` paths) for the mutating webhook, `/validate` for the validating
//! one. The certificate is the control plane's own serving certificate from its CA, so the
//! webhook configurations' `caBundle` is the mesh's root.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use weft_inject::Values;
use weft_kube::api as kube_api;

/// What the webhooks answer with.
pub struct Webhooks {
    pub values: Values,
    /// Security kinds weft does not enforce are admitted with a warning instead of refused.
    pub allow_unenforced_security: bool,
    /// The API server, to read a pod's namespace labels (`weft.io/data-plane`).
    pub kube: Option<weft_kube::Client>,
}

/// The labels of the namespace an AdmissionReview's request is in; none without an API server
/// or when it cannot say (injection then goes by the pod and the values alone, and says so).
async fn namespace_labels(hooks: &Webhooks, body: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    let client = hooks.kube.as_ref()?;
    let review: serde_json::Value = serde_json::from_slice(body).ok()?;
    let ns = review.pointer("/request/namespace")?.as_str()?.to_owned();
    let api: kube_api::Api<weft_kube::k8s_openapi::api::core::v1::Namespace> = kube_api::Api::all(client.clone());
    match api.get_opt(&ns).await {
        Ok(Some(n)) => Some(n.metadata.labels.unwrap_or_default().into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect()),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(namespace = %ns, "reading the namespace's labels for injection: {e}");
            None
        }
    }
}

/// An AdmissionReview holds the object and, on updates, its old version; Kubernetes objects
/// are at most 1.5 MiB in etcd.
const MAX_BODY: usize = 8 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn answer(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn text(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    answer(status, "text/plain; charset=utf-8", format!("{message}\n").into_bytes())
}

async fn handle(hooks: Arc<Webhooks>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // A body announced over the limit is refused before any of it is read.
    let announced = req.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|n| n > MAX_BODY) {
        return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, "the AdmissionReview is over 8 MiB"));
    }
    let (parts, body) = req.into_parts();
    // The body is read before any answer, bounded: an HTTP/2 stream answered with its body
    // unread is reset, and a client may take the reset for a failure of the answer.
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_big = e.downcast_ref::<http_body_util::LengthLimitError>().is_some();
            return Ok(if too_big {
                text(StatusCode::PAYLOAD_TOO_LARGE, "the AdmissionReview is over 8 MiB")
            } else {
                text(StatusCode::BAD_REQUEST, &format!("reading the body: {e}"))
            });
        }
    };
    let path = parts.uri.path();
    let inject = path == "/inject" || path.starts_with("/inject/");
    if !inject && path != "/validate" {
        return Ok(text(StatusCode::NOT_FOUND, &format!("no webhook at {path}; weft serves /inject and /validate")));
    }
    if parts.method != Method::POST {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "an AdmissionReview is POSTed"));
    }
    let json =
        parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Ok(text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json"));
    }
    let a = if inject {
        let labels = namespace_labels(&hooks, &body).await;
        weft_kube::admission::inject(&body, &hooks.values, labels.as_ref())
    } else {
        weft_kube::admission::validate(&body, hooks.allow_unenforced_security)
    };
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if status == StatusCode::OK { "application/json" } else { "text/plain; charset=utf-8" };
    if status != StatusCode::OK {
        tracing::warn!(%path, "admission request refused: {}", String::from_utf8_lossy(&a.body).trim());
    }
    Ok(answer(status, content_type, a.body))
}

/// Serves the webhooks on `listener` with `tls` (HTTP/1.1 and HTTP/2, as the API server may
/// speak either) until the process ends.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, hooks: Arc<Webhooks>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept on the webhook port failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (acceptor, hooks) = (acceptor.clone(), hooks.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake on the webhook port failed: {e}"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake on the webhook port timed out"),
            };
            let service = hyper::service::service_fn(move |req| handle(hooks.clone(), req));
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service).await {
                tracing::debug!(%peer, "webhook connection ended: {e}");
            }
        });
    }
}
