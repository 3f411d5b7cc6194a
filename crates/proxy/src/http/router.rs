//! The router filter: picks the cluster and host, rewrites the request, forwards it with
//! retries and timeouts, and turns upstream failures into Envoy's local replies.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode, Uri};
use http_body_util::BodyExt;

use super::routing::{self, with_query};
use super::{apply_header_ops, local_reply, upgrade, Hcm, ReqFormat};
use crate::body::{self, Body};
use crate::config::cluster::{Discovery, UpstreamProtocol};
use crate::config::route::{
    ClusterSpecifier, ForwardAction, HashKey, PathMatch, RedirectAction, RetryPolicy, Route, RouteTable, VirtualHost, WeightedCluster,
};
use crate::http::info::RequestInfo;
use crate::listener::ConnInfo;
use crate::upstream::host::Outcome;
use crate::upstream::lb::{combine_hash, hash_bytes};
use crate::upstream::pool::{self, Wire};
use crate::upstream::{Cluster, Host, UpstreamError};

static X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName = HeaderName::from_static("x-envoy-upstream-service-time");
static X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
static X_ENVOY_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
static X_ENVOY_OVERLOADED: HeaderName = HeaderName::from_static("x-envoy-overloaded");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// A header value for a count or a number of milliseconds. Most are below 100 (upstream service
/// times, attempt counts) and come from static text, so they cost no allocation.
fn number(n: u64) -> HeaderValue {
    const ONES: &str = "0123456789";
    const TENS: &str = "10111213141516171819202122232425262728293031323334353637383940414243444546474849\
                        50515253545556575859606162636465666768697071727374757677787980818283848586878889\
                        90919293949596979899";
    match usize::try_from(n) {
        Ok(i) if i < 10 => HeaderValue::from_static(&ONES[i..=i]),
        Ok(i) if i < 100 => HeaderValue::from_static(&TENS[(i - 10) * 2..(i - 10) * 2 + 2]),
        _ => HeaderValue::from(n),
    }
}

/// Largest request body buffered so the request can be retried (Envoy's default buffer limit).
const RETRY_BUFFER_LIMIT: u64 = 1024 * 1024;

/// The cluster a request goes to, and the weighted-cluster entry that chose it.
pub struct Chosen<'a> {
    pub name: Cow<'a, str>,
    pub weighted: Option<&'a WeightedCluster>,
}

pub fn choose_cluster<'a>(spec: &'a ClusterSpecifier, headers: &HeaderMap) -> Option<Chosen<'a>> {
    match spec {
        ClusterSpecifier::Single(n) => Some(Chosen { name: Cow::Borrowed(n), weighted: None }),
        ClusterSpecifier::Weighted { clusters, total } => {
            let mut r = rand::random::<u64>() % total;
            for c in clusters {
                let w = u64::from(c.weight);
                if r < w {
                    return Some(Chosen { name: Cow::Borrowed(&c.name), weighted: Some(c) });
                }
                r -= w;
            }
            None
        }
        ClusterSpecifier::Header(h) => {
            let v = headers.get(h)?.to_str().ok()?;
            Some(Chosen { name: Cow::Owned(v.to_string()), weighted: None })
        }
    }
}

fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none of these: one pass over the names beats six hashed removals.
    let present = h.keys().any(|k| {
        k == header::CONNECTION
            || k == header::UPGRADE
            || k == header::TRANSFER_ENCODING
            || k == header::TE
            || k == KEEP_ALIVE
            || k == PROXY_CONNECTION
    });
    if !present {
        return;
    }
    if let Some(conn) = h.get(header::CONNECTION).and_then(|v| v.to_str().ok()).map(str::to_string) {
        for name in conn.split(',').map(|s| s.trim().to_ascii_lowercase()) {
            if keep_upgrade && name == "upgrade" {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                if n != header::TE {
                    h.remove(n);
                }
            }
        }
    }
    if !keep_upgrade {
        h.remove(header::CONNECTION);
        h.remove(header::UPGRADE);
    }
    h.remove(&KEEP_ALIVE);
    h.remove(&PROXY_CONNECTION);
    h.remove(header::TRANSFER_ENCODING);
    if h.get(header::TE).is_some_and(|v| v.as_bytes() != b"trailers") {
        h.remove(header::TE);
    }
}

pub fn is_upgrade(parts: &Parts) -> bool {
    parts.headers.get(header::UPGRADE).is_some()
        && parts
            .headers
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

fn hash_key(fwd: &ForwardAction, parts: &Parts, conn: &ConnInfo, query: Option<&str>) -> Option<u64> {
    let mut acc = None;
    for p in &fwd.hash_policy {
        let h = match &p.key {
            HashKey::Header(n) => parts.headers.get(n).map(|v| hash_bytes(v.as_bytes())),
            HashKey::Cookie { name, .. } => parts.headers.get_all(header::COOKIE).iter().find_map(|v| {
                v.to_str().ok()?.split(';').find_map(|kv| {
                    let (k, val) = kv.trim().split_once('=')?;
                    (k == name).then(|| hash_bytes(val.as_bytes()))
                })
            }),
            HashKey::SourceIp => Some(hash_bytes(routing::client_ip(conn.remote).to_string().as_bytes())),
            HashKey::QueryParameter(n) => query.and_then(|q| {
                q.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == n).then(|| hash_bytes(v.as_bytes()))
                })
            }),
        };
        if let Some(h) = h {
            acc = Some(combine_hash(acc, h));
            if p.terminal {
                break;
            }
        }
    }
    acc
}

fn pick_host(cluster: &Cluster, fwd: &ForwardAction, parts: &Parts, conn: &ConnInfo, query: Option<&str>) -> Option<Arc<Host>> {
    if let Discovery::OriginalDst = cluster.cfg.discovery {
        let from_header = cluster
            .cfg
            .original_dst_header
            .as_ref()
            .and_then(|h| parts.headers.get(h))
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok());
        let dst = from_header.or(conn.original_dst)?;
        return Some(cluster.original_dst_host(dst));
    }
    cluster.lb_snapshot().pick(hash_key(fwd, parts, conn, query))
}

fn retriable_status(p: &RetryPolicy, status: u16, headers: &HeaderMap) -> bool {
    let grpc_status = || headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u32>().ok());
    (p.on.server_5xx && status >= 500)
        || grpc_status().is_some_and(|c| p.on.grpc.contains(c))
        || (p.on.gateway_error && matches!(status, 502..=504))
        || (p.on.retriable_4xx && status == 409)
        || (p.on.retriable_status_codes && p.retriable_status_codes.contains(&status))
}

/// What hyper's client accepts in a response head and Envoy's codec refuses: a header map over
/// 60 KiB (Envoy's `max_response_headers_kb`), and, over HTTP/1, `Content-Length` beside
/// `Transfer-Encoding` (hyper reads such a body as chunked).
fn malformed_response(r: &http::Response<hyper::body::Incoming>, wire: Wire) -> Option<&'static str> {
    let h = r.headers();
    let size: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if size > MAX_RESPONSE_HEADERS {
        return Some("response headers too large");
    }
    if matches!(wire, Wire::Http1) && h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        return Some("content-length and transfer-encoding");
    }
    None
}

/// Envoy's default `max_response_headers_kb`, in bytes.
const MAX_RESPONSE_HEADERS: usize = 60 * 1024;

fn retriable_error(p: &RetryPolicy, e: &UpstreamError) -> bool {
    match e {
        UpstreamError::ConnectFailure(_) => {
            p.on.connect_failure || p.on.server_5xx || p.on.gateway_error || p.on.reset || p.on.reset_before_request
        }
        UpstreamError::Reset(_) | UpstreamError::Protocol(_) => p.on.reset || p.on.server_5xx || p.on.gateway_error,
        UpstreamError::PerTryTimeout => p.on.server_5xx || p.on.gateway_error || p.on.reset,
        _ => false,
    }
}

/// Envoy's fully jittered exponential backoff.
fn backoff(p: &RetryPolicy, retry: u32) -> Duration {
    let cap = p.base_interval.saturating_mul(1u32 << retry.min(16)).min(p.max_interval);
    let ms = cap.as_millis().max(1) as u64;
    Duration::from_millis(rand::random::<u64>() % ms)
}

/// The protocol for a request the proxy makes itself (no downstream to follow).
pub(crate) fn wire_of(cluster: &Cluster) -> Wire {
    match cluster.cfg.protocol {
        UpstreamProtocol::Http2 => Wire::Http2,
        UpstreamProtocol::Http1 | UpstreamProtocol::Downstream => Wire::Http1,
    }
}

fn wire_for(cluster: &Cluster, parts: &Parts) -> Wire {
    match cluster.cfg.protocol {
        UpstreamProtocol::Http1 => Wire::Http1,
        UpstreamProtocol::Http2 => Wire::Http2,
        UpstreamProtocol::Downstream if parts.version == http::Version::HTTP_2 => Wire::Http2,
        UpstreamProtocol::Downstream => Wire::Http1,
    }
}

/// The upstream request on `wire`: HTTP/1 carries the authority in `Host` and only the path in
/// the URI; HTTP/2 an absolute URI and no `Host`. `None` when the path or authority is invalid.
pub(crate) fn upstream_request(
    wire: Wire,
    method: &http::Method,
    authority: &str,
    pq: &str,
    mut headers: HeaderMap,
    body: Body,
) -> Option<http::Request<Body>> {
    let uri = match wire {
        Wire::Http1 => {
            // Usually the client's own Host, already in the copied headers.
            let mut hosts = headers.get_all(header::HOST).iter();
            let same = hosts.next().is_some_and(|h| h.as_bytes() == authority.as_bytes()) && hosts.next().is_none();
            if !same {
                if let Ok(v) = HeaderValue::from_str(authority) {
                    headers.insert(header::HOST, v);
                }
            }
            pq.parse::<Uri>()
        }
        Wire::Http2 => {
            headers.remove(header::HOST);
            format!("http://{authority}{pq}").parse::<Uri>()
        }
    };
    let mut req = http::Request::new(body);
    *req.uri_mut() = uri.ok()?;
    *req.method_mut() = method.clone();
    *req.version_mut() = match wire {
        Wire::Http1 => http::Version::HTTP_11,
        Wire::Http2 => http::Version::HTTP_2,
    };
    *req.headers_mut() = headers;
    Some(req)
}

/// `host[:port]` → `host-shadow[:port]`, the authority Envoy gives mirrored requests.
fn shadow_authority(a: &str) -> String {
    if let Some((h, p)) = a.rsplit_once(':') {
        let port = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if port && (!h.contains(':') || (h.starts_with('[') && h.ends_with(']'))) {
            return format!("{h}-shadow:{p}");
        }
    }
    format!("{a}-shadow")
}

/// Sends a copy of the request to each mirror cluster whose share it falls in; the copies'
/// responses are read and dropped, and nothing about them reaches the caller.
fn mirror(hcm: &Arc<Hcm>, fwd: &ForwardAction, parts: &Parts, headers: &HeaderMap, pq: &str, authority: &str, body_bytes: Bytes) {
    for m in &fwd.mirrors {
        if m.per_million < 1_000_000 && rand::random::<u32>() % 1_000_000 >= m.per_million {
            continue;
        }
        let Some(cluster) = hcm.clusters.get(&m.cluster) else {
            hcm.stats.no_cluster.inc();
            // Not held yet: fetched now, so later copies reach it; this one is not delayed.
            if let Some(od) = hcm.clusters.on_demand().filter(|_| crate::upstream::on_demand::is_lazy(&m.cluster)) {
                od.ask(&m.cluster);
            }
            continue;
        };
        let Some(host) = cluster.lb_snapshot().pick(None) else { continue };
        let wire = wire_for(&cluster, parts);
        let auth = if m.shadow_suffix { shadow_authority(authority) } else { authority.to_string() };
        let Some(req) = upstream_request(wire, &parts.method, &auth, pq, headers.clone(), body::full(body_bytes.clone())) else {
            continue;
        };
        let timeout = fwd.timeout.unwrap_or(Duration::from_secs(15));
        tokio::spawn(async move {
            if let Detached::Failed(e) = send_detached(&cluster, &host, req, wire, timeout).await {
                tracing::debug!(cluster = %cluster.name(), error = %e, "mirrored request failed");
            }
        });
    }
}

/// How a request the proxy made on its own behalf ended.
pub(crate) enum Detached {
    Answered(u16),
    Failed(UpstreamError),
    TimedOut,
}

/// Sends a request the proxy makes itself (a mirror copy, a span report) to `host`, reads the
/// answer to its end and drops it; counted on the cluster as a routed request is. Like
/// Envoy's async client, it marks the request internal and appends the node's address to
/// `x-forwarded-for`.
pub(crate) async fn send_detached(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    mut req: http::Request<Body>,
    wire: Wire,
    timeout: Duration,
) -> Detached {
    req.headers_mut().insert(super::X_ENVOY_INTERNAL.clone(), HeaderValue::from_static("true"));
    super::append_xff(req.headers_mut(), crate::server::node_address_text());
    cluster.stats.upstream_rq_total.inc();
    let sent = tokio::time::timeout(timeout, async {
        let resp = pool::send(cluster, host, req, wire).await?;
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        Ok::<u16, UpstreamError>(status)
    })
    .await;
    match sent {
        Ok(Ok(status)) => {
            cluster.stats.codes.inc(status);
            Detached::Answered(status)
        }
        Ok(Err(e)) => Detached::Failed(e),
        Err(_) => {
            cluster.stats.upstream_rq_timeout.inc();
            Detached::TimedOut
        }
    }
}

enum ReqBody {
    Empty,
    Buffered(Bytes),
    Stream(Option<Body>),
}

impl ReqBody {
    fn take(&mut self) -> Body {
        match self {
            ReqBody::Empty => body::empty(),
            ReqBody::Buffered(b) => body::full(b.clone()),
            ReqBody::Stream(s) => s.take().unwrap_or_else(body::empty),
        }
    }
    fn replayable(&self) -> bool {
        !matches!(self, ReqBody::Stream(_))
    }
}

#[allow(clippy::too_many_arguments, reason = "the router's inputs are the request's full context")]
pub async fn forward(
    hcm: &Arc<Hcm>,
    conn: &Arc<ConnInfo>,
    parts: &Parts,
    body_in: Body,
    table: &RouteTable,
    route: &Route,
    vh: &VirtualHost,
    fwd: &ForwardAction,
    chosen: Option<Chosen<'_>>,
    info: &mut RequestInfo,
    grpc: bool,
    ctx: &ReqFormat<'_>,
) -> Response<Body> {
    let Some(chosen) = chosen else {
        hcm.stats.no_cluster.inc();
        info.flags.push("NC");
        return local_reply::build(StatusCode::SERVICE_UNAVAILABLE, Bytes::new(), grpc);
    };
    let cluster = match hcm.clusters.get_or_fetch(&chosen.name).await {
        Ok(c) => c,
        Err(missing) => {
            hcm.stats.no_cluster.inc();
            info.flags.push("NC");
            info.details = "cluster_not_found";
            // Envoy answers an unknown cluster with an empty 503; when the cluster could not be
            // fetched on demand the caller is told why.
            let text = match missing {
                crate::upstream::on_demand::Missing::Unknown(_) => Bytes::new(),
                other => Bytes::from(format!("{other}\n")),
            };
            return local_reply::build(StatusCode::SERVICE_UNAVAILABLE, text, grpc);
        }
    };
    let cluster = &cluster;
    info.upstream_cluster = Some(cluster.name().to_string());
    let cfg = &hcm.cfg;
    let upgrading = is_upgrade(parts);
    if upgrading && !fwd.websocket.unwrap_or(cfg.websocket) {
        hcm.stats.downstream_rq_ws_on_non_ws_route.inc();
        info.details = "upgrade_failed";
        return local_reply::build(StatusCode::FORBIDDEN, Bytes::new(), grpc);
    }

    // The upstream request's headers.
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers, upgrading);
    let full = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let (path, query) = match full.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (full, None),
    };
    let mut new_pq: Option<String> = None;
    if let Some(rep) = &fwd.prefix_rewrite {
        new_pq = Some(with_query(&routing::prefix_rewrite(&route.matcher.path, path, rep), query));
    } else if let Some((re, sub)) = &fwd.regex_rewrite {
        new_pq = Some(with_query(&re.replace_all(path, sub.as_str()), query));
    }
    if new_pq.is_some() && !cfg.suppress_envoy_headers {
        if let Ok(v) = HeaderValue::from_str(full) {
            headers.insert(super::X_ENVOY_ORIGINAL_PATH.clone(), v);
        }
    }
    let pq = new_pq.as_deref().unwrap_or(full);
    // Envoy records x-envoy-original-host only for the route's own rewrites, not a weighted
    // cluster entry's.
    let (authority, route_rewrote) = if let Some(h) = chosen.weighted.and_then(|w| w.host_rewrite.as_ref()) {
        (h.to_str().unwrap_or_default().to_string(), false)
    } else if let Some(h) = &fwd.host_rewrite {
        (h.to_str().unwrap_or_default().to_string(), true)
    } else if let (true, Some(crate::config::cluster::EndpointAddress::Dns { host, .. })) =
        (fwd.auto_host_rewrite, cluster.cfg.endpoints.first().map(|e| &e.address))
    {
        (host.clone(), true)
    } else {
        (info.authority.clone(), false)
    };
    if route_rewrote && authority != info.authority && !cfg.suppress_envoy_headers {
        if let Ok(v) = HeaderValue::from_str(&info.authority) {
            headers.insert(super::X_ENVOY_ORIGINAL_HOST.clone(), v);
        }
    }
    if let Some(w) = chosen.weighted {
        apply_header_ops(&mut headers, &w.request_headers, ctx);
    }
    apply_header_ops(&mut headers, &route.request_headers, ctx);
    apply_header_ops(&mut headers, &vh.request_headers, ctx);
    apply_header_ops(&mut headers, &table.request_headers, ctx);

    let retry = fwd.retry.as_ref().or(vh.retry_policy.as_ref()).filter(|r| r.num_retries > 0);
    let per_try = retry.and_then(|r| r.per_try_timeout);
    if !cfg.suppress_envoy_headers {
        let expected = match (fwd.timeout, per_try) {
            (Some(t), Some(p)) => Some(t.min(p)),
            (t, p) => t.or(p),
        };
        if let Some(e) = expected {
            headers.insert(X_ENVOY_EXPECTED_RQ_TIMEOUT_MS.clone(), HeaderValue::from(e.as_millis() as u64));
        }
    }

    if upgrading {
        let Some(host) = pick_host(cluster, fwd, parts, conn, query) else {
            return no_healthy(cluster, info, grpc);
        };
        info.upstream_host = Some(host.addr);
        info.upstream_tls = host.tls.is_some();
        return upgrade::forward(cluster, &host, parts, headers, pq, &authority, body_in, info).await;
    }

    let mut body = if http_body::Body::is_end_stream(&body_in) {
        ReqBody::Empty
    } else if (retry.is_some() || !fwd.mirrors.is_empty())
        && http_body::Body::size_hint(&body_in).exact().is_some_and(|n| n <= RETRY_BUFFER_LIMIT)
    {
        match body_in.collect().await {
            Ok(c) => ReqBody::Buffered(c.to_bytes()),
            Err(_) => {
                info.flags.push("DC");
                return local_reply::build(StatusCode::BAD_REQUEST, Bytes::new(), grpc);
            }
        }
    } else {
        ReqBody::Stream(Some(body_in))
    };

    let wire = wire_for(cluster, parts);
    // Envoy's HTTP/1 codec frames a request with no body explicitly, except for the methods
    // that carry none (RFC 9110 §9.3): an upstream never has to guess.
    if matches!(body, ReqBody::Empty) && matches!(wire, Wire::Http1) && !headers.contains_key(header::CONTENT_LENGTH) {
        use http::Method;
        if ![Method::GET, Method::HEAD, Method::DELETE, Method::TRACE, Method::CONNECT].contains(&parts.method) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
    }
    match &body {
        ReqBody::Empty => mirror(hcm, fwd, parts, &headers, pq, &authority, Bytes::new()),
        ReqBody::Buffered(b) => mirror(hcm, fwd, parts, &headers, pq, &authority, b.clone()),
        // A streamed body cannot be copied without buffering it whole; Envoy mirrors it, weft
        // mirrors only bodies it buffers (up to the retry buffer limit).
        ReqBody::Stream(_) => {}
    }
    let started = Instant::now();
    let deadline = fwd.timeout.map(|t| started + t);
    let max_attempts = 1 + retry.map_or(0, |r| r.num_retries);
    let replayable = body.replayable();
    let mut attempt = 0u32;
    let mut retried = false;
    let include_count = vh.include_request_attempt_count;

    loop {
        attempt += 1;
        info.attempts = attempt;
        let stats = &cluster.stats;
        if stats.upstream_rq_active.get() as u64 >= cluster.cfg.circuit_breakers.max_requests {
            stats.upstream_rq_pending_overflow.inc();
            return overflow(cluster, info, grpc, retried);
        }
        let Some(host) = pick_host(cluster, fwd, parts, conn, query) else {
            return no_healthy(cluster, info, grpc);
        };
        info.upstream_host = Some(host.addr);
        info.upstream_tls = host.tls.is_some();

        // The last possible attempt takes the headers; earlier ones copy them.
        let mut req_headers = if attempt >= max_attempts { std::mem::take(&mut headers) } else { headers.clone() };
        if include_count {
            req_headers.insert(X_ENVOY_ATTEMPT_COUNT.clone(), number(u64::from(attempt)));
        }
        let Some(req) = upstream_request(wire, &parts.method, &authority, pq, req_headers, body.take()) else {
            return local_reply::build(StatusCode::BAD_REQUEST, "invalid path or authority", grpc);
        };

        stats.upstream_rq_total.inc();
        stats.upstream_rq_active.inc();
        host.active_requests.fetch_add(1, Ordering::Relaxed);
        host.rq_total.fetch_add(1, Ordering::Relaxed);
        let sent_at = Instant::now();
        let now = Instant::now();
        let remaining = deadline.map(|d| d.saturating_duration_since(now));
        let try_limit = match (remaining, per_try) {
            (Some(r), Some(p)) => Some((r.min(p), p < r)),
            (Some(r), None) => Some((r, false)),
            (None, Some(p)) => Some((p, true)),
            (None, None) => None,
        };
        // Boxed: the send future is large, and timeout wrappers would otherwise copy it.
        let fut = Box::pin(pool::send(cluster, &host, req, wire));
        let result = match try_limit {
            Some((limit, is_per_try)) => match tokio::time::timeout(limit, fut).await {
                Ok(r) => r,
                Err(_) if is_per_try => {
                    stats.upstream_rq_per_try_timeout.inc();
                    Err(UpstreamError::PerTryTimeout)
                }
                Err(_) => {
                    stats.upstream_rq_timeout.inc();
                    Err(UpstreamError::Timeout)
                }
            },
            None => fut.await,
        };
        stats.upstream_rq_active.dec();
        host.active_requests.fetch_sub(1, Ordering::Relaxed);

        let can_retry = |info: &mut RequestInfo| -> bool {
            if retry.is_none() || attempt >= max_attempts || !replayable {
                return false;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            if cluster.retries_active.load(Ordering::Relaxed) >= cluster.cfg.circuit_breakers.max_retries {
                stats.upstream_rq_retry_overflow.inc();
                info.flags.push("URX");
                return false;
            }
            true
        };

        // A response head Envoy's codec refuses is the upstream's protocol error, not a reply.
        let result = result.and_then(|r| match malformed_response(&r, wire) {
            Some(why) => Err(UpstreamError::Protocol(why.into())),
            None => Ok(r),
        });
        match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                host.report(Outcome::Status(status), cluster);
                stats.codes.inc(status);
                stats.upstream_rq_completed.inc();
                if status >= 500 {
                    host.rq_error.fetch_add(1, Ordering::Relaxed);
                } else {
                    host.rq_success.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(p) = retry {
                    if retriable_status(p, status, resp.headers()) && can_retry(info) {
                        drop(resp);
                        retried = true;
                        stats.upstream_rq_retry.inc();
                        if !sleep_backoff(cluster, p, attempt, deadline).await {
                            stats.upstream_rq_timeout.inc();
                            return timeout_reply(info, grpc);
                        }
                        continue;
                    }
                }
                if retried && status < 500 {
                    stats.upstream_rq_retry_success.inc();
                }
                let (mut rp, b) = resp.into_parts();
                // The downstream hears its own protocol version, whatever the upstream spoke.
                rp.version = parts.version;
                strip_hop_by_hop(&mut rp.headers, status == 101);
                if !cfg.suppress_envoy_headers {
                    rp.headers.insert(X_ENVOY_UPSTREAM_SERVICE_TIME.clone(), number(sent_at.elapsed().as_millis() as u64));
                }
                if vh.include_attempt_count_in_response {
                    rp.headers.insert(X_ENVOY_ATTEMPT_COUNT.clone(), number(u64::from(attempt)));
                }
                return Response::from_parts(rp, body::incoming(b));
            }
            Err(e) => {
                if matches!(e, UpstreamError::Overflow) {
                    return overflow(cluster, info, grpc, retried);
                }
                if info.request_body.has_failed() {
                    // The client's body broke the exchange (a malformed chunk): Envoy's codec
                    // answers 400 and closes; the upstream is not to blame.
                    stats.upstream_rq_tx_reset.inc();
                    info.flags.push("DPE");
                    info.details = "http1.codec_error";
                    let mut r = local_reply::build(StatusCode::BAD_REQUEST, "Bad Request", grpc);
                    if parts.version != http::Version::HTTP_2 {
                        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    return r;
                }
                host.report(Outcome::LocalFailure, cluster);
                host.rq_error.fetch_add(1, Ordering::Relaxed);
                if matches!(e, UpstreamError::Reset(_) | UpstreamError::Protocol(_)) {
                    stats.upstream_rq_rx_reset.inc();
                }
                if matches!(e, UpstreamError::Protocol(_)) {
                    stats.upstream_cx_protocol_error.inc();
                }
                if let Some(p) = retry {
                    if retriable_error(p, &e) && can_retry(info) {
                        retried = true;
                        stats.upstream_rq_retry.inc();
                        if !sleep_backoff(cluster, p, attempt, deadline).await {
                            stats.upstream_rq_timeout.inc();
                            return timeout_reply(info, grpc);
                        }
                        continue;
                    }
                }
                info.flags.push(e.response_flag());
                // Envoy charges the upstream with the code of the reply a reset produced.
                if matches!(e, UpstreamError::Reset(_) | UpstreamError::Protocol(_)) {
                    stats.codes.inc(e.status().as_u16());
                }
                if let UpstreamError::ConnectFailure(why) = &e {
                    info.upstream_failure = Some(why.clone());
                }
                info.details = "upstream_reset_before_response_started";
                return local_reply::build(e.status(), e.body(retried), grpc);
            }
        }
    }
}

/// Waits out the retry backoff, counted against the retry circuit breaker; false when the
/// route's global timeout expires first.
async fn sleep_backoff(cluster: &Cluster, p: &RetryPolicy, attempt: u32, deadline: Option<Instant>) -> bool {
    cluster.retries_active.fetch_add(1, Ordering::Relaxed);
    cluster.stats.rq_retry_open.set(i64::from(cluster.retries_active.load(Ordering::Relaxed) >= cluster.cfg.circuit_breakers.max_retries));
    let d = backoff(p, attempt - 1);
    let ok = match deadline {
        Some(dl) if Instant::now() + d >= dl => {
            tokio::time::sleep_until(dl.into()).await;
            false
        }
        _ => {
            tokio::time::sleep(d).await;
            true
        }
    };
    cluster.retries_active.fetch_sub(1, Ordering::Relaxed);
    ok
}

fn timeout_reply(info: &mut RequestInfo, grpc: bool) -> Response<Body> {
    info.flags.push("UT");
    info.details = "upstream_response_timeout";
    let e = UpstreamError::Timeout;
    local_reply::build(e.status(), e.body(false), grpc)
}

/// A circuit breaker's 503, counted under the cluster's `upstream_rq_503`/`5xx` as Envoy counts
/// it though no upstream answered.
fn overflow(cluster: &Cluster, info: &mut RequestInfo, grpc: bool, retried: bool) -> Response<Body> {
    cluster.stats.codes.inc(503);
    info.flags.push("UO");
    info.details = "overflow";
    let e = UpstreamError::Overflow;
    let mut r = local_reply::build(e.status(), e.body(retried), grpc);
    r.headers_mut().insert(X_ENVOY_OVERLOADED.clone(), HeaderValue::from_static("true"));
    r
}

/// No host to send to: 503, counted under the cluster's `upstream_rq_503`/`5xx` as Envoy counts
/// it.
fn no_healthy(cluster: &Cluster, info: &mut RequestInfo, grpc: bool) -> Response<Body> {
    cluster.stats.upstream_cx_none_healthy.inc();
    cluster.stats.codes.inc(503);
    info.flags.push("UH");
    info.details = "no_healthy_upstream";
    let e = UpstreamError::NoHealthyUpstream;
    local_reply::build(e.status(), e.body(false), grpc)
}

/// Builds a redirect response's `Location` from the request and the redirect action.
/// Envoy's answer for a virtual host that requires TLS: 301 to the same host and path over
/// https, the Host kept as the client sent it.
pub fn tls_redirect(authority: &str, path_and_query: &str) -> Response<Body> {
    location_reply(StatusCode::MOVED_PERMANENTLY, &format!("https://{authority}{path_and_query}"))
}

pub fn redirect(
    rd: &RedirectAction,
    matched: &PathMatch,
    orig_scheme: &str,
    authority: &str,
    path: &str,
    query: Option<&str>,
) -> Response<Body> {
    let scheme = rd.scheme.as_deref().unwrap_or(orig_scheme);
    let (mut host, mut port) = split_host_port(authority);
    if let Some(h) = &rd.host {
        let (hh, hp) = split_host_port(h);
        host = hh;
        port = hp;
    }
    if let Some(p) = rd.port {
        port = Some(p.to_string());
    } else if scheme != orig_scheme {
        // Envoy drops a default port of the original scheme when the scheme changes.
        if port.as_deref() == Some("80") || port.as_deref() == Some("443") {
            port = None;
        }
    }
    let (mut new_path, mut new_query) = (path.to_string(), query.map(str::to_string));
    if let Some(p) = &rd.path {
        match p.split_once('?') {
            Some((pp, q)) => {
                new_path = pp.to_string();
                new_query = Some(q.to_string());
            }
            None => new_path = p.clone(),
        }
    } else if let Some(rep) = &rd.prefix_rewrite {
        new_path = routing::prefix_rewrite(matched, path, rep);
    } else if let Some((re, sub)) = &rd.regex_rewrite {
        new_path = re.replace_all(path, sub.as_str()).into_owned();
    }
    if rd.strip_query {
        new_query = None;
    }
    let hostport = match port {
        Some(p) if !p.is_empty() => format!("{host}:{p}"),
        _ => host.to_string(),
    };
    let location = match new_query {
        Some(q) if !q.is_empty() => format!("{scheme}://{hostport}{new_path}?{q}"),
        _ => format!("{scheme}://{hostport}{new_path}"),
    };
    location_reply(rd.status, &location)
}

/// An empty local reply with `status` and a `Location` header.
fn location_reply(status: StatusCode, location: &str) -> Response<Body> {
    let mut r = local_reply::build(status, Bytes::new(), false);
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn split_host_port(a: &str) -> (&str, Option<String>) {
    if a.starts_with('[') {
        if let Some(i) = a.find("]:") {
            return (&a[..=i], Some(a[i + 2..].to_string()));
        }
        return (a, None);
    }
    match a.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p.to_string())),
        _ => (a, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_numbers_come_from_static_text_and_read_as_themselves() {
        for n in [0u64, 7, 9, 10, 11, 42, 99, 100, 15000] {
            assert_eq!(number(n).to_str().ok(), Some(n.to_string().as_str()), "{n}");
        }
    }

    #[test]
    fn mirrored_authority_gets_the_shadow_suffix_before_the_port() {
        assert_eq!(shadow_authority("reviews:9080"), "reviews-shadow:9080");
        assert_eq!(shadow_authority("reviews"), "reviews-shadow");
        assert_eq!(shadow_authority("[::1]:80"), "[::1]-shadow:80");
    }
}
