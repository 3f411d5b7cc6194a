//! HTTP/1.1 upgrades (WebSocket): the request goes over a dedicated upstream connection and,
//! on `101 Switching Protocols`, both sides are spliced byte for byte.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::info::RequestInfo;
use super::local_reply;
use crate::body::{self, Body};
use crate::upstream::pool;
use crate::upstream::{Cluster, Host, UpstreamError};

#[allow(clippy::too_many_arguments, reason = "mirrors the router's forward")]
pub async fn forward(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    parts: &Parts,
    mut headers: HeaderMap,
    pq: &str,
    authority: &str,
    body_in: Body,
    info: &mut RequestInfo,
) -> Response<Body> {
    let Some(downstream) = parts.extensions.get::<OnUpgrade>().cloned() else {
        return local_reply::build(http::StatusCode::BAD_REQUEST, "upgrade is not available on this connection", false);
    };
    let fail = |e: UpstreamError, info: &mut RequestInfo| {
        info.flags.push(e.response_flag());
        local_reply::build(e.status(), e.body(false), false)
    };
    cluster.stats.upstream_rq_total.inc();
    let stream = match pool::connect(cluster, host).await {
        Ok(s) => s,
        Err(e) => return fail(e, info),
    };
    cluster.stats.upstream_cx_total.inc();
    let (mut sender, conn) = match hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream)).await {
        Ok(x) => x,
        Err(e) => return fail(UpstreamError::Reset(e.to_string()), info),
    };
    tokio::spawn(conn.with_upgrades());
    if let Ok(v) = HeaderValue::from_str(authority) {
        headers.insert(header::HOST, v);
    }
    let mut req = http::Request::new(body_in);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = match pq.parse() {
        Ok(u) => u,
        Err(_) => return local_reply::build(http::StatusCode::BAD_REQUEST, "invalid path", false),
    };
    *req.headers_mut() = headers;
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => return fail(UpstreamError::Reset(e.to_string()), info),
    };
    cluster.stats.codes.inc(resp.status().as_u16());
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let (p, b) = resp.into_parts();
        return Response::from_parts(p, body::incoming(b));
    }
    let (p, b) = resp.into_parts();
    let upstream = hyper::upgrade::on(Response::from_parts(p.clone(), b));
    let stats = cluster.stats.clone();
    tokio::spawn(async move {
        let (Ok(up), Ok(down)) = (upstream.await, downstream.await) else { return };
        let mut up = TokioIo::new(up);
        let mut down = TokioIo::new(down);
        if let Ok((tx, rx)) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            stats.upstream_cx_tx_bytes_total.add(tx);
            stats.upstream_cx_rx_bytes_total.add(rx);
        }
    });
    Response::from_parts(p, body::empty())
}
