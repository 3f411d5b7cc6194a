//! Accepting connections and the parts every service shares: method check, the
//! `x-weft-sample` header, the `peer` field, the access log line and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::args::{BaseUrl, ReviewsVersion, SampleArgs, Service};
use crate::upstream::Upstream;

/// How long in-flight requests may run after shutdown is asked for.
const DRAIN: Duration = Duration::from_secs(5);

static X_WEFT_SAMPLE: HeaderName = HeaderName::from_static("x-weft-sample");

/// One configured sample service, ready to [`serve`].
#[derive(Clone)]
pub struct App {
    pub(crate) service: Service,
    pub(crate) version: ReviewsVersion,
    pub(crate) details_url: BaseUrl,
    pub(crate) reviews_url: BaseUrl,
    pub(crate) ratings_url: BaseUrl,
    pub(crate) pod_name: String,
    pub(crate) upstream: Upstream,
}

/// What a route answers; [`Reply::into_response`] adds what every response carries.
pub(crate) enum Reply {
    /// A JSON body; an object gets the `peer` field.
    Json(StatusCode, Value),
    Html(String),
    MethodNotAllowed,
}

impl App {
    /// The service `args` describe. `podname` (reviews) is `--pod-name`/`POD_NAME`, else this
    /// host's name.
    pub fn new(args: &SampleArgs) -> App {
        App {
            service: args.service,
            version: args.version,
            details_url: args.details_url.clone(),
            reviews_url: args.reviews_url.clone(),
            ratings_url: args.ratings_url.clone(),
            pod_name: args.pod_name.clone().unwrap_or_else(hostname),
            upstream: Upstream::new(args.timeout, args.proxy.clone()),
        }
    }

    /// `productpage`, `details`, `ratings`, or `reviews-v1`/`-v2`/`-v3`: the `x-weft-sample`
    /// header and the log's `service` field.
    pub fn name(&self) -> &'static str {
        self.service.name(self.version)
    }
}

/// Serves `app` on `listener` (HTTP/1.1 and HTTP/2) until `shutdown` resolves, then lets
/// in-flight requests finish for up to 5 seconds. Accept errors are logged and retried: a full
/// file-descriptor table must not stop a demo service for good.
pub async fn serve(app: App, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let app = Arc::new(app);
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(service = app.name(), error = %e, "accept failed");
                    if !matches!(e.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::Interrupted) {
                        // Out of file descriptors or memory: give in-flight requests a moment.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(handle(&app, req).await) }
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN) => tracing::warn!(service = app.name(), "requests still in flight after {DRAIN:?}; closing"),
    }
}

/// One request: route it, add the shared parts, log it.
async fn handle(app: &App, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let peer = crate::xfcc::peer_uri(req.headers());
    let reply = if method == Method::GET || method == Method::HEAD {
        crate::services::route(app, &path, req.headers()).await
    } else {
        Reply::MethodNotAllowed
    };
    let resp = reply.into_response(app.name(), peer);
    tracing::info!(
        service = app.name(),
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        duration = ?start.elapsed(),
        "request"
    );
    resp
}

impl Reply {
    pub(crate) fn ok(body: Value) -> Reply {
        Reply::Json(StatusCode::OK, body)
    }

    pub(crate) fn error(status: StatusCode, message: &str) -> Reply {
        Reply::Json(status, serde_json::json!({ "error": message }))
    }

    fn into_response(self, sample: &'static str, peer: Option<String>) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match self {
            Reply::Json(status, mut body) => {
                if let Some(fields) = body.as_object_mut() {
                    fields.insert("peer".to_string(), peer.map_or(Value::Null, Value::String));
                }
                (status, "application/json", body.to_string())
            }
            Reply::Html(page) => (StatusCode::OK, "text/html; charset=utf-8", page),
            Reply::MethodNotAllowed => {
                let body = serde_json::json!({ "error": "method not allowed: use GET", "peer": peer });
                (StatusCode::METHOD_NOT_ALLOWED, "application/json", body.to_string())
            }
        };
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(X_WEFT_SAMPLE.clone(), HeaderValue::from_static(sample));
        if status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        resp
    }
}

/// This host's name (per UTS namespace, so each mesh host sees its own), as a pod would report
/// it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}
