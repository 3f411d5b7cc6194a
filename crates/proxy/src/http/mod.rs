//! The HTTP connection manager: serves HTTP/1.1 and HTTP/2 (h2c) downstream, routes each
//! request, runs the fault filter, and hands forwarding to the router.

pub mod fault;
pub mod framing_scan;
pub mod h2_floods;
pub mod info;
pub mod local_reply;
#[doc(hidden)]
pub mod path_norm;
mod request_head;

pub mod rds;
pub mod router;
pub mod routing;
pub mod upgrade;
pub mod xfcc;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::access_log::AccessLogger;
use crate::body::{self, Body, BoxError};
use crate::config::access_log::{Command, FormatContext};
use crate::config::listener::{Codec, HttpConnectionManagerConfig, ServerHeader};
use crate::config::route::{HeaderOps, RouteAction};
use crate::drain::Drain;
use crate::listener::ConnInfo;
use crate::stats::HttpStats;
use crate::transport::Stream;
use crate::upstream::ClusterManager;
use info::{LogOnDrop, RequestInfo};
use routing::RequestView;

/// hyper refuses (panics on) an HTTP/1 read buffer under 8 KiB, so smaller header limits are
/// rounded up to it.
const MIN_HYPER_BUF: usize = 8192;

/// hyper's read limit also bounds its write buffer, where a response head is encoded: room over
/// the header limit for a response head's status line and framing (the router refuses response
/// header maps over 60 KiB, and the head check request header maps over the limit, exactly, so
/// the room lets nothing more through).
const HYPER_BUF_ROOM: usize = 8 * 1024;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_ENVOY_INTERNAL: HeaderName = HeaderName::from_static("x-envoy-internal");
pub static X_ENVOY_EXTERNAL_ADDRESS: HeaderName = HeaderName::from_static("x-envoy-external-address");
pub static X_ENVOY_ORIGINAL_HOST: HeaderName = HeaderName::from_static("x-envoy-original-host");
pub static X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");

/// HTTP/2's SETTINGS_MAX_HEADER_LIST_SIZE counts 32 bytes per field on top of names and
/// values (RFC 9113 §6.5.2); Envoy advertises `max_request_headers_kb` as it is.
fn h2_header_list_limit(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// Envoy's control headers its connection manager removes from every external request.
const EXTERNAL_CLEANED: &[&str] = &[
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-force-trace",
    "x-envoy-ip-tags",
    "x-envoy-original-url",
    "x-envoy-hedge-on-per-try-timeout",
];

/// And those it removes when it is the edge (`use_remote_address`).
const EDGE_CLEANED: &[&str] = &["x-envoy-decorator-operation", "x-envoy-downstream-service-cluster", "x-envoy-downstream-service-node"];

/// Whether a downstream connection has requests in progress, and since when it has had none:
/// the connection manager's `idle_timeout` (Envoy: 1 h) closes a connection idle that long.
struct Activity {
    born: Instant,
    active: std::sync::atomic::AtomicUsize,
    /// Milliseconds after `born` when the last request was answered.
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { born: Instant::now(), active: Default::default(), last_ms: Default::default() }
    }

    fn begin(&self) {
        self.active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn end(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
        self.active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Resolves once the connection has had no request for `timeout`; never without one. One
    /// timer per connection, moved forward only when it fires.
    async fn idle_for(&self, timeout: Option<Duration>) {
        let Some(t) = timeout else { return std::future::pending().await };
        let mut deadline = self.born + t;
        loop {
            tokio::time::sleep_until(deadline.into()).await;
            if self.active.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                deadline = Instant::now() + t;
                continue;
            }
            let due = self.born + Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed)) + t;
            if due <= Instant::now() {
                return;
            }
            deadline = due;
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Timeout {
    Request,
    StreamIdle,
}

/// One HTTP connection manager instance (a filter chain's `http_connection_manager`).
pub struct Hcm {
    pub cfg: Arc<HttpConnectionManagerConfig>,
    pub stats: Arc<HttpStats>,
    /// For the codec-wide `http1.`/`http2.` counters.
    pub store: Arc<crate::stats::Store>,
    pub clusters: Arc<ClusterManager>,
    pub routes: Arc<rds::RouteStore>,
    pub loggers: Arc<Vec<Arc<AccessLogger>>>,
    /// Where this manager's sampled spans go (its tracing config names a Zipkin collector).
    pub reporter: Option<crate::trace::Reporter>,
    pub tracer: Arc<crate::trace::Tracer>,
    /// Istio's metrics, and the side this manager's listener reports (mesh proxies only).
    pub istio: Option<(Arc<crate::istio_metrics::Mesh>, crate::istio_metrics::Reporter)>,
}

impl Hcm {
    /// Serves one downstream connection until it closes or the drain completes.
    pub async fn serve(self: Arc<Self>, stream: Stream, conn: Arc<ConnInfo>, drain: Drain) {
        let _token = drain.token();
        self.stats.downstream_cx_total.inc();
        self.stats.downstream_cx_active.inc();
        let hcm = self.clone();
        let c2 = conn.clone();
        let d2 = drain.clone();
        let activity = Arc::new(Activity::new());
        let a2 = activity.clone();
        let framing = Arc::new(framing_scan::FramingLog::default());
        let f2 = framing.clone();
        // HTTP/1 requests in arrival order, as the framing scanner counts their heads.
        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // All requests, for max_requests_per_connection; HTTP/2 is told to stop through this.
        let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let enough = Arc::new(tokio::sync::Notify::new());
        let (s2, e2) = (served.clone(), enough.clone());
        let svc = service_fn(move |req: Request<Incoming>| {
            let hcm = hcm.clone();
            let conn = c2.clone();
            let drain = d2.clone();
            let activity = a2.clone();
            let framing = f2.clone();
            let seen = seen.clone();
            let served = s2.clone();
            let enough = e2.clone();
            async move {
                let h2 = req.version() == http::Version::HTTP_2;
                let problem = if h2 { None } else { framing.problem_for(seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1) };
                activity.begin();
                let mut resp = hcm.handle(req, &conn, problem).await;
                activity.end();
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    framing.stop();
                }
                if let Some(max) = hcm.cfg.max_requests_per_connection {
                    if served.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 == u64::from(max) {
                        hcm.stats.downstream_cx_max_requests_reached.inc();
                        if h2 {
                            enough.notify_one();
                        } else {
                            resp.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                        }
                    }
                }
                // A retired listener generation: move HTTP/1 clients on between requests.
                if !h2 && drain.is_retiring() {
                    resp.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(resp)
            }
        });
        let io = TokioIo::new(framing_scan::Scanned::new(
            stream,
            framing.clone(),
            self.cfg.request_headers_timeout.is_some(),
            self.cfg.h2_flood_limits,
        ));
        let max_duration = async {
            match self.cfg.max_connection_duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(max_duration);
        // HTTP/2 clients handle GOAWAY cleanly, so a retired generation sends it at once;
        // HTTP/1 connections close after their next response, or when the drain ends.
        macro_rules! drive {
            ($conn:expr, $h2:expr) => {{
                let conn = $conn;
                tokio::pin!(conn);
                let soft = async {
                    if $h2 {
                        drain.retiring().await
                    } else {
                        drain.signaled().await
                    }
                };
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            self.count_codec_refusal(e.into());
                        }
                    }
                    _ = soft => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                    _ = activity.idle_for(self.cfg.idle_timeout) => {
                        // HTTP/1 closes now; HTTP/2 sends GOAWAY first.
                        self.stats.downstream_cx_idle_timeout.inc();
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                    _ = &mut max_duration => {
                        // As a drain: in-flight requests finish, HTTP/2 gets GOAWAY.
                        self.stats.downstream_cx_max_duration_reached.inc();
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                    // As Envoy: the connection goes at once, nothing more is read from it.
                    _ = framing.flooded() => {}
                    _ = enough.notified() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                    _ = framing.head_timed_out(self.cfg.request_headers_timeout) => {
                        // Envoy answers 408 and closes; hyper never saw a request, so the
                        // answer is written under it and the connection ends.
                        self.stats.downstream_rq_header_timeout.inc();
                        self.count_local_answer(408);
                        framing.end_with(self.header_timeout_reply());
                        let _ = tokio::time::timeout(self.cfg.drain_timeout, conn).await;
                    }
                }
            }};
        }
        match self.cfg.codec {
            Codec::Auto => {
                let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                self.tune_h2(b.http2());
                // hyper's own default, with a timer, is a 30 s header timeout that also closes
                // keep-alive connections idle that long; Envoy keeps them for the idle timeout.
                b.http1().header_read_timeout(None);
                // hyper answers 431 when the head does not fit its read buffer; bounding the
                // buffer by max_request_headers_kb gives Envoy's limit (and bounds what a client
                // that never ends its headers can make weft hold).
                b.http1().max_buf_size(self.cfg.max_request_headers_bytes.max(MIN_HYPER_BUF) + HYPER_BUF_ROOM);
                b.http1().max_headers(self.cfg.max_headers_count);
                drive!(b.serve_connection_with_upgrades(io, svc), false);
            }
            Codec::Http1 => {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.header_read_timeout(None);
                b.max_buf_size(self.cfg.max_request_headers_bytes.max(MIN_HYPER_BUF) + HYPER_BUF_ROOM);
                b.max_headers(self.cfg.max_headers_count);
                drive!(b.serve_connection(io, svc).with_upgrades(), false);
            }
            Codec::Http2 => {
                let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                if let Some(n) = self.cfg.h2_max_concurrent_streams {
                    b.max_concurrent_streams(n);
                }
                b.max_header_list_size(h2_header_list_limit(self.cfg.max_request_headers_bytes));
                if let Some(n) = self.cfg.h2_initial_stream_window {
                    b.initial_stream_window_size(n);
                }
                if let Some(n) = self.cfg.h2_initial_connection_window {
                    b.initial_connection_window_size(n);
                }
                drive!(b.serve_connection(io, svc), true);
            }
        }
        // Counted however the connection ended: h2 may have closed it first.
        self.count_flood(framing.flood());
        self.stats.downstream_cx_active.dec();
        self.stats.downstream_cx_destroy.inc();
    }

    /// A head hyper's parser refused itself (it answered 400 or 431 and closed) never reaches
    /// `handle`; Envoy counts such a request like any other it answers, so weft does too.
    fn count_codec_refusal(&self, err: Box<dyn std::error::Error + Send + Sync>) {
        let Some(e) = err.downcast_ref::<hyper::Error>() else { return };
        let status = match () {
            _ if e.is_parse_too_large() => 431,
            _ if e.is_parse() => 400,
            _ => return,
        };
        self.count_local_answer(status);
    }

    fn count_flood(&self, flood: Option<h2_floods::Flood>) {
        use h2_floods::Flood;
        let c = self.store.http2_codec();
        match flood {
            Some(Flood::OutboundControl) => c.outbound_control_flood.inc(),
            Some(Flood::InboundEmptyFrames) => c.inbound_empty_frames_flood.inc(),
            Some(Flood::InboundPriorityFrames) => c.inbound_priority_frames_flood.inc(),
            Some(Flood::InboundWindowUpdateFrames) => c.inbound_window_update_frames_flood.inc(),
            Some(Flood::SettingsAcks) | None => {}
        }
    }

    /// An HTTP/1 answer given outside `handle`, counted as Envoy counts any request.
    fn count_local_answer(&self, status: u16) {
        self.stats.downstream_rq_total.inc();
        self.stats.downstream_rq_http1_total.inc();
        self.stats.codes.inc(status);
        self.stats.downstream_rq_completed.inc();
    }

    /// Envoy's answer to a request head that took longer than `request_headers_timeout`.
    fn header_timeout_reply(&self) -> Bytes {
        let body = "request header timeout";
        let server = match self.cfg.server_header {
            ServerHeader::PassThrough => String::new(),
            _ => format!("server: {}\r\n", String::from_utf8_lossy(self.cfg.server_name.as_bytes())),
        };
        Bytes::from(format!(
            "HTTP/1.1 408 Request Timeout\r\ncontent-length: {}\r\ncontent-type: text/plain\r\ndate: {}\r\n{server}connection: close\r\n\r\n{body}",
            body.len(),
            httpdate::fmt_http_date(SystemTime::now()),
        ))
    }

    /// `headers_with_underscores_action`: names with `_` can be read as `-` by CGI-style
    /// applications, so such a header is dropped, or the request refused, when configured.
    fn underscores(&self, headers: &mut http::HeaderMap, h2: bool) -> Result<(), request_head::Refusal> {
        use weft_xds::filters::HeadersWithUnderscoresAction as Action;
        if self.cfg.headers_with_underscores == Action::Allow || !headers.keys().any(|k| k.as_str().contains('_')) {
            return Ok(());
        }
        if self.cfg.headers_with_underscores == Action::RejectRequest {
            if h2 {
                self.store.http2_codec().requests_rejected_with_underscores_in_headers.inc();
            } else {
                self.store.http1_codec().requests_rejected_with_underscores_in_headers.inc();
            }
            let details = if h2 { "http2.unexpected_underscore" } else { "http1.unexpected_underscore" };
            return Err(request_head::Refusal { status: StatusCode::BAD_REQUEST, details });
        }
        let names: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().contains('_')).cloned().collect();
        for name in names {
            if h2 {
                self.store.http2_codec().dropped_headers_with_underscores.inc();
            } else {
                self.store.http1_codec().dropped_headers_with_underscores.inc();
            }
            headers.remove(name);
        }
        Ok(())
    }

    fn tune_h2(&self, mut b: hyper_util::server::conn::auto::Http2Builder<'_, TokioExecutor>) {
        b.max_header_list_size(h2_header_list_limit(self.cfg.max_request_headers_bytes));
        if let Some(n) = self.cfg.h2_max_concurrent_streams {
            b.max_concurrent_streams(n);
        }
        if let Some(n) = self.cfg.h2_initial_stream_window {
            b.initial_stream_window_size(n);
        }
        if let Some(n) = self.cfg.h2_initial_connection_window {
            b.initial_connection_window_size(n);
        }
    }

    async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        conn: &Arc<ConnInfo>,
        framing: Option<framing_scan::Problem>,
    ) -> Response<Body> {
        let stats = &self.stats;
        stats.downstream_rq_total.inc();
        stats.downstream_rq_active.inc();
        let is_h2 = req.version() == http::Version::HTTP_2;
        if is_h2 {
            stats.downstream_rq_http2_total.inc();
        } else {
            stats.downstream_rq_http1_total.inc();
        }
        let started = Instant::now();
        let start = SystemTime::now();
        let (mut parts, body) = req.into_parts();
        let grpc = parts.headers.get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        // A head Envoy's HTTP/1 codec would refuse is answered here, before anything acts on it.
        let refused = if is_h2 {
            request_head::check_h2(&parts.uri)
        } else if let Some(problem) = framing {
            Err(request_head::framing_refusal(problem))
        } else {
            request_head::check(&parts.method, parts.version, &parts.uri, &parts.headers, self.cfg.max_request_headers_bytes)
        };

        let refused = refused.and_then(|()| self.underscores(&mut parts.headers, is_h2));
        self.edge_headers(&mut parts, conn);
        // An HTTP/1 request asking to switch to cleartext HTTP/2 (`Upgrade: h2c`) is served as
        // what it is, an HTTP/1 request, as Envoy does: the offer is dropped, not refused.
        if !is_h2 && parts.headers.get(http::header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"h2c")) {
            parts.headers.remove(http::header::UPGRADE);
            parts.headers.remove("http2-settings");
        }
        // hyper answers `Expect: 100-continue` itself when the body is first read, so, as in
        // Envoy without `proxy_100_continue`, the expectation is met here and not passed on.
        if parts.headers.get(http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue")) {
            parts.headers.remove(http::header::EXPECT);
        }
        if self.cfg.normalize_path || self.cfg.merge_slashes {
            normalize_path(&mut parts.uri, &self.cfg);
        }

        let authority: String = parts
            .uri
            .authority()
            .map(|a| request_head::authority_without_userinfo(a).to_string())
            .or_else(|| parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string))
            .unwrap_or_default();
        let path_and_query = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        let span = self.cfg.tracing.as_ref().map(|t| t.start(&mut parts.headers));

        // request_timeout and stream_idle_timeout need to know when the request body has ended,
        // and a failed upstream exchange whether the client's body broke it.
        let body_done = Arc::new(body::BodyDone::default());
        let mut info = RequestInfo {
            request_body: body_done.clone(),
            conn: conn.clone(),
            start,
            started,
            protocol: if is_h2 {
                "HTTP/2"
            } else if parts.version == http::Version::HTTP_10 {
                "HTTP/1.0"
            } else {
                "HTTP/1.1"
            },
            method: parts.method.clone(),
            req_headers: if self.loggers.is_empty() { Default::default() } else { parts.headers.clone() },
            path: path_and_query.clone(),
            authority: authority.clone(),
            resp_headers: Default::default(),
            resp_trailers: Default::default(),
            status: 0,
            flags: Vec::new(),
            details: "",
            upstream_host: None,
            upstream_tls: false,
            resp_messages: 0,
            upstream_cluster: None,
            upstream_failure: None,
            route_name: String::new(),
            attempts: 0,
            bytes_received: body_len(&parts.headers),
            bytes_sent: 0,
            first_byte: None,
            last_rx: None,
        };

        if let Err(refusal) = refused {
            // Envoy answers a codec error and closes the connection; the request never routes.
            info.details = refusal.details;
            let text = refusal.status.canonical_reason().unwrap_or("Bad Request");
            let mut r = local_reply::build(refusal.status, text, false);
            if !is_h2 {
                r.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            let r = self.finish(r, &parts, &info);
            return self.complete(r, info, None);
        }
        if parts.version == http::Version::HTTP_10 && !self.cfg.accept_http_10 {
            // Envoy's HTTP/1 codec refuses HTTP/1.0 unless `accept_http_10` is set.
            info.details = "low_version";
            let mut r = local_reply::build(StatusCode::UPGRADE_REQUIRED, "Upgrade Required", grpc);
            r.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            let r = self.finish(r, &parts, &info);
            return self.complete(r, info, None);
        }
        let table = match self.routes.table_for(&self.cfg.routes, &authority, &self.store.manager).await {
            Ok(t) => t,
            Err(missing) => {
                // As for a cluster that could not be fetched: a 503 that says why.
                self.stats.no_route.inc();
                info.flags.push("NR");
                info.details = "vhds_unavailable";
                let r = local_reply::build(StatusCode::SERVICE_UNAVAILABLE, Bytes::from(format!("{missing}\n")), grpc);
                let r = self.finish(r, &parts, &info);
                return self.complete(r, info, None);
            }
        };
        // Every request is external (see edge_headers), so these always go.
        for h in &table.internal_only_headers {
            parts.headers.remove(h);
        }
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query.as_str(), None),
        };
        let view = RequestView { parts: &parts, host: &authority, path, query, scheme: conn.scheme() };
        let vhost = routing::select_vhost(&table, &authority);
        // An HTTP/1 CONNECT matches only a route with a `connect_matcher`, which weft refuses in
        // config; so, as in Envoy without one, it finds no route (404).
        let connect = !is_h2 && parts.method == http::Method::CONNECT;
        let route = vhost.filter(|_| !connect).and_then(|vh| routing::select_route(vh, &view));
        let report = span.filter(|s| s.sampled).and_then(|s| {
            let decorated = route.and_then(|r| r.operation.as_deref());
            // Envoy's OpenTelemetry tracer names an undecorated span by direction and host.
            let op = match (decorated, &self.reporter) {
                (Some(op), _) => op.to_owned(),
                (None, Some(crate::trace::Reporter::Otlp(_))) => {
                    let dir = if self.cfg.tracing.as_ref().is_some_and(|t| t.kind == crate::trace::SpanKind::Server) {
                        "ingress"
                    } else {
                        "egress"
                    };
                    format!("{dir} {authority}")
                }
                (None, _) => authority.clone(),
            };
            self.report(s, &op, &parts, conn, &info, &path_and_query)
        });

        let body: Body = if !http_body::Body::is_end_stream(&body) {
            let watched = body::Watched::new(body::incoming(body), body_done.clone());
            // gRPC messages are counted for Istio's `istio_request_messages_total`.
            let watched = if self.istio.is_some() && is_grpc(&parts.headers) { watched.counting_grpc() } else { watched };
            http_body_util::BodyExt::boxed_unsync(watched)
        } else {
            body_done.set();
            body::incoming(body)
        };
        let ctx = ReqFormat { parts: &parts, conn, start };
        // Envoy closes an HTTP/1 connection when it answers before reading the request body.
        let body_pending = !is_h2 && !http_body::Body::is_end_stream(&body);
        let close = |mut r: Response<Body>| {
            if body_pending {
                r.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            r
        };
        let process = async {
            match (vhost, route) {
                (Some(vh), _) if conn.tls.is_none() && needs_tls_redirect(vh) => {
                    // weft's listeners do not terminate TLS yet, so every request here is plaintext.
                    stats.rq_redirect.inc();
                    info.details = "via_route_tls_redirect";
                    close(router::tls_redirect(&authority, &path_and_query))
                }
                (Some(vh), Some(route)) => {
                    info.route_name = route.name.clone();
                    if route.name == crate::blocked::BLOCK_ALL_ROUTE {
                        crate::blocked::record_request(&authority, conn.original_dst.unwrap_or(conn.local).port());
                    }
                    let mut r = match &route.action {
                        RouteAction::Direct { status, body } => {
                            stats.rq_direct_response.inc();
                            info.details = "direct_response";
                            let mut r = local_reply::build(*status, body.clone().unwrap_or_default(), false);
                            if body.is_none() {
                                r.headers_mut().remove(http::header::CONTENT_TYPE);
                            }
                            close(r)
                        }
                        RouteAction::Redirect(rd) => {
                            stats.rq_redirect.inc();
                            info.details = "direct_response";
                            close(router::redirect(rd, &route.matcher.path, conn.scheme(), &authority, path, query))
                        }
                        RouteAction::Forward(fwd) => {
                            stats.rq_total.inc();
                            let chosen = router::choose_cluster(&fwd.cluster, &parts.headers);
                            let weighted_ops = chosen.as_ref().and_then(|c| c.weighted).map(|w| &w.response_headers);
                            match fault::apply(self, &parts, chosen.as_ref().map(|c| c.name.as_ref()), route, vh, &mut info, grpc).await {
                                Some(r) => close(r),
                                None => {
                                    let mut r =
                                        router::forward(self, conn, &parts, body, &table, route, vh, fwd, chosen, &mut info, grpc, &ctx)
                                            .await;
                                    if let Some(ops) = weighted_ops {
                                        apply_header_ops(r.headers_mut(), ops, &ctx);
                                    }
                                    r
                                }
                            }
                        }
                    };
                    apply_header_ops(r.headers_mut(), &route.response_headers, &ctx);
                    apply_header_ops(r.headers_mut(), &vh.response_headers, &ctx);
                    apply_header_ops(r.headers_mut(), &table.response_headers, &ctx);
                    r
                }
                _ => {
                    stats.no_route.inc();
                    info.flags.push("NR");
                    info.details = "route_not_found";
                    let mut r = close(local_reply::build(StatusCode::NOT_FOUND, Bytes::new(), grpc));
                    apply_header_ops(r.headers_mut(), &table.response_headers, &ctx);
                    r
                }
            }
        };
        // Boxed so the timeout guard moves a pointer, not the whole request state machine.
        let resp = match self.guard_timeouts(Box::pin(process), &body_done).await {
            Ok(r) => r,
            Err(t) => {
                // Envoy: 408 while the request is still arriving, 504 once it waits on the upstream.
                let complete = body_done.is_set();
                let (status, text, flag, details) = match t {
                    Timeout::Request => (StatusCode::REQUEST_TIMEOUT, "request timeout", "DPE", "request_overall_timeout"),
                    Timeout::StreamIdle if complete => (StatusCode::GATEWAY_TIMEOUT, "stream timeout", "SI", "stream_idle_timeout"),
                    Timeout::StreamIdle => (StatusCode::REQUEST_TIMEOUT, "stream timeout", "SI", "stream_idle_timeout"),
                };
                stats.downstream_rq_timeout.inc();
                if matches!(t, Timeout::StreamIdle) {
                    stats.downstream_rq_idle_timeout.inc();
                }
                info.flags.push(flag);
                info.details = details;
                let mut r = local_reply::build(status, text, grpc);
                if !is_h2 && !complete {
                    r.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                r
            }
        };
        let resp = self.finish(resp, &parts, &info);
        self.complete(resp, info, report)
    }

    /// A sampled span with the request's tags, ready to be finished and reported; `None` when
    /// this manager reports nowhere.
    fn report(
        &self,
        mut span: crate::trace::Span,
        operation: &str,
        parts: &http::request::Parts,
        conn: &ConnInfo,
        info: &RequestInfo,
        path_and_query: &str,
    ) -> Option<Box<info::SpanReport>> {
        let reporter = self.reporter.clone()?;
        let cfg = self.cfg.tracing.as_ref()?;
        let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
        let mut url = format!("{}://{}{}", conn.scheme(), info.authority, path_and_query);
        if url.len() > cfg.max_path_tag_length {
            let mut cut = cfg.max_path_tag_length;
            while !url.is_char_boundary(cut) {
                cut -= 1;
            }
            url.truncate(cut);
        }
        let t = &mut span.tags;
        t.insert("component", "proxy".into());
        t.insert("node_id", self.tracer.node_id.clone());
        t.insert("http.url", url);
        t.insert("http.method", parts.method.to_string());
        t.insert("http.protocol", info.protocol.into());
        t.insert("user_agent", header("user-agent"));
        t.insert("downstream_cluster", header("x-envoy-downstream-service-cluster"));
        t.insert("peer.address", routing::client_ip(conn.remote).to_string());
        if let Some(id) = parts.headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
            t.insert("guid:x-request-id", id.to_string());
        }
        if let Some(id) = parts.headers.get(&crate::trace::X_CLIENT_TRACE_ID).and_then(|v| v.to_str().ok()) {
            t.insert("guid:x-client-trace-id", id.to_string());
        }
        for (tag, source) in &cfg.custom_tags {
            use crate::trace::TagSource;
            let v = match source {
                TagSource::Literal(v) | TagSource::Environment(v) => v.clone(),
                TagSource::Header { name, default } => {
                    parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string).unwrap_or_else(|| default.clone())
                }
            };
            span.custom.push((tag.clone(), v));
        }
        span.name = operation.to_string();
        Some(Box::new(info::SpanReport { span, kind: cfg.kind, reporter, tracer: self.tracer.clone() }))
    }

    /// Runs request processing under `request_timeout` (until the request body has arrived)
    /// and `stream_idle_timeout` (until response headers).
    async fn guard_timeouts<F: std::future::Future<Output = Response<Body>>>(
        &self,
        process: F,
        body_done: &body::BodyDone,
    ) -> Result<Response<Body>, Timeout> {
        let request_timer = async {
            match self.cfg.request_timeout {
                Some(t) => {
                    if tokio::time::timeout(t, body_done.wait()).await.is_err() {
                        return;
                    }
                    std::future::pending::<()>().await
                }
                None => std::future::pending::<()>().await,
            }
        };
        let idle = async {
            match self.cfg.stream_idle_timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = process => Ok(r),
            _ = request_timer => Err(Timeout::Request),
            _ = idle => Err(Timeout::StreamIdle),
        }
    }

    /// Headers Envoy sets on every response it sends downstream.
    fn finish(&self, mut r: Response<Body>, parts: &http::request::Parts, _info: &RequestInfo) -> Response<Body> {
        let h = r.headers_mut();
        match self.cfg.server_header {
            ServerHeader::Overwrite => {
                h.insert(http::header::SERVER, self.cfg.server_name.clone());
            }
            ServerHeader::AppendIfAbsent => {
                if !h.contains_key(http::header::SERVER) {
                    h.insert(http::header::SERVER, self.cfg.server_name.clone());
                }
            }
            ServerHeader::PassThrough => {}
        }
        if self.cfg.always_set_request_id_in_response {
            if let Some(id) = parts.headers.get(&X_REQUEST_ID) {
                h.insert(X_REQUEST_ID.clone(), id.clone());
            }
        }
        r
    }

    fn complete(&self, mut r: Response<Body>, mut info: RequestInfo, report: Option<Box<info::SpanReport>>) -> Response<Body> {
        let status = r.status().as_u16();
        self.stats.codes.inc(status);
        self.stats.downstream_rq_completed.inc();
        self.stats.downstream_rq_active.dec();
        if self.loggers.is_empty() && report.is_none() && self.istio.is_none() {
            return r;
        }
        info.status = status;
        if !self.loggers.is_empty() {
            info.resp_headers = r.headers().clone();
        } else if self.istio.is_some() {
            // A gRPC status may come in the headers (trailers-only responses).
            if let Some(v) = r.headers().get("grpc-status") {
                info.resp_headers.insert("grpc-status", v.clone());
            }
        }
        info.first_byte = Some(info.started.elapsed());
        let grpc = (self.istio.is_some() && is_grpc(&info.req_headers)).then(body::GrpcMessages::default);
        let guard = LogOnDrop { info, loggers: self.loggers.clone(), report, istio: self.istio.clone() };
        let b = std::mem::replace(r.body_mut(), body::empty());
        *r.body_mut() = http_body_util::BodyExt::boxed_unsync(Logged { inner: b, guard: Some(guard), grpc });
        r
    }

    /// `x-forwarded-for`, `x-forwarded-proto`, `x-request-id` and internal-origin handling.
    fn edge_headers(&self, parts: &mut http::request::Parts, conn: &ConnInfo) {
        let h = &mut parts.headers;
        let cfg = &self.cfg;
        let client = routing::client_ip(conn.remote);
        if cfg.use_remote_address {
            if !cfg.skip_xff_append {
                append_xff(h, &client.to_string());
            }
            // An edge request says where it came from.
            if let Ok(v) = HeaderValue::from_str(&client.to_string()) {
                h.insert(X_ENVOY_EXTERNAL_ADDRESS.clone(), v);
            }
            h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(conn.scheme()));
        } else if !h.contains_key(&X_FORWARDED_PROTO) {
            h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(conn.scheme()));
        }
        // Envoy 1.40 treats no address as internal without an internal_address_config (which
        // weft refuses), whether or not it uses the remote address: every request is external,
        // so a client's own `x-envoy-internal` is dropped, and so are the headers that would
        // steer Envoy (retries, timeouts, tracing, stats names), as Envoy's connection manager
        // cleans them from an external request.
        h.remove(&X_ENVOY_INTERNAL);
        if h.keys().any(|k| k.as_str().starts_with("x-envoy-")) {
            for name in EXTERNAL_CLEANED {
                h.remove(*name);
            }
            if cfg.use_remote_address {
                for name in EDGE_CLEANED {
                    h.remove(*name);
                }
            }
        }
        cfg.xfcc.apply(h, conn.tls.as_ref());
        if cfg.generate_request_id {
            let regenerate = match h.get(&X_REQUEST_ID) {
                None => true,
                Some(_) => cfg.use_remote_address && !cfg.preserve_external_request_id,
            };
            if regenerate {
                // uuid's own v4 asks the kernel for randomness per call; the thread RNG does not.
                let id = uuid::Builder::from_random_bytes(rand::random::<[u8; 16]>()).into_uuid();
                let mut buf = [0u8; 36];
                let s = id.hyphenated().encode_lower(&mut buf);
                if let Ok(v) = HeaderValue::from_str(s) {
                    h.insert(X_REQUEST_ID.clone(), v);
                }
            }
        }
    }
}

/// Applies `normalize_path` and `merge_slashes` to the request's path, keeping the query. A
/// result that is not a valid path (it cannot be: it is made of the path's own characters)
/// would leave the request as it came.
fn normalize_path(uri: &mut http::Uri, cfg: &HttpConnectionManagerConfig) {
    let (path, query) = (uri.path(), uri.query());
    let std::borrow::Cow::Owned(norm) = path_norm::normalize(path, cfg.normalize_path, cfg.merge_slashes) else { return };
    let pq = match query {
        Some(q) => format!("{norm}?{q}"),
        None => norm,
    };
    let Ok(pq) = pq.parse() else { return };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq);
    if let Ok(u) = http::Uri::from_parts(parts) {
        *uri = u;
    }
}

pub(crate) fn append_xff(h: &mut http::HeaderMap, ip: &str) {
    let v = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => format!("{prev},{ip}"),
        _ => ip.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&v) {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
}

fn body_len(h: &http::HeaderMap) -> u64 {
    h.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Format context for header values rendered from the request being processed.
pub struct ReqFormat<'a> {
    pub parts: &'a http::request::Parts,
    pub conn: &'a ConnInfo,
    pub start: SystemTime,
}

impl FormatContext for ReqFormat<'_> {
    fn value(&self, c: &Command) -> Option<String> {
        match c {
            Command::Req { main, alt, .. } => {
                let get = |n: &str| self.parts.headers.get(n).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                get(main).or_else(|| alt.as_deref().and_then(get))
            }
            Command::StartTime(f) => Some(info::format_time(self.start, f.as_deref())),
            Command::Protocol => Some(if self.parts.version == http::Version::HTTP_2 { "HTTP/2" } else { "HTTP/1.1" }.into()),
            other => info::conn_value(self.conn, other),
        }
    }
}

/// Applies header removals, then additions, as Envoy's header parser does.
pub fn apply_header_ops(h: &mut http::HeaderMap, ops: &HeaderOps, ctx: &dyn FormatContext) {
    if ops.is_empty() {
        return;
    }
    use weft_xds::core::AppendAction;
    for r in &ops.remove {
        h.remove(r);
    }
    for a in &ops.add {
        let v = a.value.render_header(ctx);
        if v.is_empty() && !a.keep_empty {
            continue;
        }
        let Ok(v) = HeaderValue::from_str(&v) else { continue };
        match a.action {
            AppendAction::AppendIfExistsOrAdd => {
                h.append(a.name.clone(), v);
            }
            AppendAction::AddIfAbsent => {
                if !h.contains_key(&a.name) {
                    h.insert(a.name.clone(), v);
                }
            }
            AppendAction::OverwriteIfExistsOrAdd => {
                h.insert(a.name.clone(), v);
            }
            AppendAction::OverwriteIfExists => {
                if h.contains_key(&a.name) {
                    h.insert(a.name.clone(), v);
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// Counts response bytes and trailers; the access log line is written when it is dropped.
    struct Logged {
        #[pin]
        inner: Body,
        guard: Option<LogOnDrop>,
        // The response's gRPC messages, for Istio's `istio_response_messages_total`.
        grpc: Option<body::GrpcMessages>,
    }
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(g) = this.guard.as_mut() {
                if let Some(d) = f.data_ref() {
                    g.info.bytes_sent += d.len() as u64;
                    if let Some(m) = this.grpc.as_mut() {
                        m.feed(d);
                        g.info.resp_messages = m.count;
                    }
                } else if let Some(t) = f.trailers_ref() {
                    g.info.resp_trailers = t.clone();
                }
            }
        }
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = &r {
            this.guard.take();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `require_tls`: ALL redirects every plaintext request, EXTERNAL_ONLY those from outside —
/// which is every request (see `edge_headers`), so both redirect.
fn needs_tls_redirect(vh: &crate::config::route::VirtualHost) -> bool {
    use weft_xds::route::TlsRequirement;
    match vh.require_tls {
        TlsRequirement::None => false,
        TlsRequirement::All | TlsRequirement::ExternalOnly => true,
    }
}

/// A gRPC request or response (`content-type: application/grpc…`).
fn is_grpc(h: &http::HeaderMap) -> bool {
    h.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/grpc"))
}
