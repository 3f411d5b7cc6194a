//! Calls from one sample service to another: plain HTTP/1.1 GETs with a deadline, carrying the
//! headers bookinfo propagates, answering parsed JSON or why the call failed. They go through
//! the HTTP proxy the environment names, if any (`proxy.rs`).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::proxy::{ProxyConnector, ProxyEnv};

/// Request headers bookinfo's productpage and reviews copy onto their upstream calls: the user
/// (header-based routing), request id and trace context (B3, W3C, OpenTracing), user agent and
/// cookies.
pub(crate) static PROPAGATED: [HeaderName; 13] = [
    HeaderName::from_static("end-user"),
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("x-b3-traceid"),
    HeaderName::from_static("x-b3-spanid"),
    HeaderName::from_static("x-b3-parentspanid"),
    HeaderName::from_static("x-b3-sampled"),
    HeaderName::from_static("x-b3-flags"),
    HeaderName::from_static("b3"),
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
    HeaderName::from_static("x-ot-span-context"),
    HeaderName::from_static("user-agent"),
    HeaderName::from_static("cookie"),
];

/// Bodies larger than this are a failed call, not a memory problem.
const MAX_BODY: usize = 1 << 20;

/// Why an upstream call gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("no answer within {0:?} (--timeout)")]
    Timeout(Duration),
    #[error("request failed")]
    Request(#[source] hyper_util::client::legacy::Error),
    #[error("answered {0}")]
    Status(StatusCode),
    #[error("reading the body failed: {0}")]
    Body(String),
    #[error("the body is not JSON")]
    Json(#[source] serde_json::Error),
    #[error("cannot build the request")]
    Build(#[source] http::Error),
}

/// The HTTP client every upstream call of one service shares (connections are pooled).
#[derive(Clone)]
pub(crate) struct Upstream {
    client: Client<ProxyConnector, Empty<Bytes>>,
    proxy: ProxyEnv,
    timeout: Duration,
}

impl Upstream {
    pub(crate) fn new(timeout: Duration, proxy: ProxyEnv) -> Self {
        // The system resolver (getaddrinfo): the mesh writes an /etc/hosts per network namespace.
        // Through a proxy only the proxy's address is resolved here; the proxy routes the name.
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(ProxyConnector::new(connector, proxy.clone()));
        Upstream { client, proxy, timeout }
    }

    /// GETs `uri` with the propagated subset of `incoming` and parses the 200 answer as JSON.
    pub(crate) async fn get_json(&self, uri: Result<Uri, http::Error>, incoming: &HeaderMap) -> Result<Value, UpstreamError> {
        let uri = uri.map_err(UpstreamError::Build)?;
        let mut req = Request::get(uri.clone()).body(Empty::new()).map_err(UpstreamError::Build)?;
        copy_propagated(incoming, req.headers_mut());
        if let Some(auth) = self.proxy.authorization(&uri) {
            req.headers_mut().insert(http::header::PROXY_AUTHORIZATION, auth);
        }
        let call = async {
            let resp = self.client.request(req).await.map_err(UpstreamError::Request)?;
            let status = resp.status();
            if status != StatusCode::OK {
                return Err(UpstreamError::Status(status));
            }
            let body = Limited::new(resp.into_body(), MAX_BODY).collect().await.map_err(|e| UpstreamError::Body(e.to_string()))?;
            serde_json::from_slice(&body.to_bytes()).map_err(UpstreamError::Json)
        };
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout(self.timeout)),
        };
        if let Err(e) = &result {
            tracing::warn!(upstream = %uri, error = %chain(e), "upstream call failed");
        }
        result
    }
}

fn copy_propagated(from: &HeaderMap, to: &mut HeaderMap) {
    for name in &PROPAGATED {
        for value in from.get_all(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// An error with its sources ("request failed: client error (Connect): tcp connect error: …").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
