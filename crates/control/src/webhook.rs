//! The admission webhooks over HTTPS (Istio: 15017, the `istiod` Service's 443): `/inject`
//! (and Istio's `/inject/…` paths) for the mutating webhook, `/validate` for the validating
//! one. The certificate is the control plane's own serving certificate from its CA, so the
//! webhook configurations' `caBundle` is the mesh's root.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use weft_inject::Values;
use weft_kube::api as kube_api;

/// What the webhooks answer with.
pub struct Webhooks {
    /// Replaced whole when the files they come from change (`follow_values`).
    pub values: arc_swap::ArcSwap<Values>,
    /// Security kinds weft does not enforce are admitted with a warning instead of refused.
    pub allow_unenforced_security: bool,
    /// The API server, to read a pod's namespace labels (`weft.io/data-plane`) when the source's
    /// view does not have the namespace yet.
    pub kube: Option<weft_kube::Client>,
    /// Every namespace's labels as the API server source last listed them.
    pub namespaces: Arc<arc_swap::ArcSwap<BTreeMap<String, BTreeMap<String, String>>>>,
}

/// The labels of the namespace an AdmissionReview's request is in; none without an API server
/// or when it cannot say (injection then goes by the pod and the values alone, and says so).
async fn namespace_labels(hooks: &Webhooks, body: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    let client = hooks.kube.as_ref()?;
    let review: serde_json::Value = serde_json::from_slice(body).ok()?;
    let ns = review.pointer("/request/namespace")?.as_str()?.to_owned();
    // The watched namespaces first: no call back into the API server while it waits on us.
    if let Some(labels) = hooks.namespaces.load().get(&ns) {
        return Some(labels.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect());
    }
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
/// A request's headers and body must arrive within this (the API server's own default webhook
/// timeout is 10 s, after which it no longer waits for the answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections held at once; more are closed at accept. Only API servers call the webhooks.
const MAX_CONNECTIONS: usize = 256;
/// Bytes of request bodies held at once, across all requests, until each is answered: a flood
/// of large reviews waits for room instead of growing memory, while a client trickling a few
/// bytes holds only those few (so slow clients cannot block the API server's calls).
const BODY_BUDGET: usize = 128 << 20;
/// HTTP/2 streams per connection.
const MAX_STREAMS: u32 = 16;

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

enum BodyError {
    TooLarge,
    Read(hyper::Error),
}

/// Reads a request body of at most `MAX_BODY`, taking room for each piece from `budget`; the
/// room is held until the caller drops it (after answering).
async fn read_body(
    mut body: Incoming,
    budget: &Arc<tokio::sync::Semaphore>,
) -> Result<(Bytes, Option<tokio::sync::OwnedSemaphorePermit>), BodyError> {
    let mut buf = bytes::BytesMut::new();
    let mut room: Option<tokio::sync::OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else { continue };
        if buf.len() + data.len() > MAX_BODY {
            return Err(BodyError::TooLarge);
        }
        // A piece is at most MAX_BODY bytes, far below u32::MAX; the budget is never closed.
        let n = u32::try_from(data.len()).map_err(|_| BodyError::TooLarge)?;
        let Ok(more) = budget.clone().acquire_many_owned(n).await else { return Err(BodyError::TooLarge) };
        match room.as_mut() {
            Some(r) => r.merge(more),
            None => room = Some(more),
        }
        buf.extend_from_slice(&data);
    }
    Ok((buf.freeze(), room))
}

async fn handle(
    hooks: Arc<Webhooks>,
    budget: Arc<tokio::sync::Semaphore>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // A body announced over the limit is refused before any of it is read.
    let announced = req.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|n| n > MAX_BODY) {
        return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, "the AdmissionReview is over 8 MiB"));
    }
    let (parts, body) = req.into_parts();
    // The body is read before any answer, bounded in size, time and shared memory: an HTTP/2
    // stream answered with its body unread is reset, and a client may take the reset for a
    // failure of the answer.
    let (body, _room) = match tokio::time::timeout(REQUEST_TIMEOUT, read_body(body, &budget)).await {
        Err(_) => return Ok(text(StatusCode::REQUEST_TIMEOUT, "the AdmissionReview did not arrive within 10 s")),
        Ok(Ok(b)) => b,
        Ok(Err(BodyError::TooLarge)) => return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, "the AdmissionReview is over 8 MiB")),
        Ok(Err(BodyError::Read(e))) => return Ok(text(StatusCode::BAD_REQUEST, &format!("reading the body: {e}"))),
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
        weft_kube::admission::inject(&body, &hooks.values.load(), labels.as_ref())
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

/// Polls the values' files every second and, when one changed, reads the values again: new
/// ones take over for the next review; ones that do not read are logged, the last kept.
pub async fn follow_values(hooks: Arc<Webhooks>, source: crate::server::ValuesSource) {
    let read_all = || source.files.iter().map(|f| std::fs::read(f).ok()).collect::<Vec<_>>();
    let mut last = read_all();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = read_all();
        if now == last {
            continue;
        }
        last = now;
        match (source.read)() {
            Ok(values) => {
                hooks.values.store(Arc::new(values));
                tracing::info!("injection values changed: new pods are injected with them");
            }
            Err(e) => tracing::error!("injection values changed but do not read; injecting with the previous ones: {e}"),
        }
    }
}

/// Serves the webhooks on `listener` with `tls` (HTTP/1.1 and HTTP/2, as the API server may
/// speak either) until the process ends.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, hooks: Arc<Webhooks>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let budget = Arc::new(tokio::sync::Semaphore::new(BODY_BUDGET));
    let mut refusing = false;
    loop {
        let (tcp, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept on the webhook port failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(held) = connections.clone().try_acquire_owned() else {
            if !refusing {
                tracing::warn!(%peer, "{MAX_CONNECTIONS} webhook connections are open: closing new ones until some end");
            }
            refusing = true;
            continue;
        };
        refusing = false;
        let (acceptor, hooks, budget) = (acceptor.clone(), hooks.clone(), budget.clone());
        tokio::spawn(async move {
            let _held = held;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake on the webhook port failed: {e}"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake on the webhook port timed out"),
            };
            let service = hyper::service::service_fn(move |req| handle(hooks.clone(), budget.clone(), req));
            let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(REQUEST_TIMEOUT);
            builder.http2().max_concurrent_streams(MAX_STREAMS);
            if let Err(e) = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service).await {
                tracing::debug!(%peer, "webhook connection ended: {e}");
            }
        });
    }
}
