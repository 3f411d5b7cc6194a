//! The HTTP targets: bytes written to a real weft listener in this process, started from a
//! static bootstrap, whose connection manager routes (with path normalisation, a WebSocket
//! upgrade, a direct response and a redirect) to an upstream that reads every request body.
//! The proxy must answer with HTTP or nothing, and close within [`HANG`] of the client's
//! close.
//!
//! `http1` is the HTTP/1 codec (request heads, chunked and sized bodies, pipelining,
//! upgrades; hyper picks HTTP/2 instead when the input starts with the preface). `h2` is a
//! listener configured for HTTP/2 only; the input follows the client preface, which the
//! target sends first, so it is frames from the first byte.
//!
//! When to close matters: like Envoy, weft drops a request whose client closes before the
//! answer, so a close right after the input would cut short the request that input ends with.
//! `http1` sends a last request of its own after the input and closes at once (hyper reads on
//! past a close while requests are buffered, so only that one is cut short). `h2`, and `http1` on
//! an input that starts with the preface, send GOAWAY after the input, which lets the streams
//! finish and then closes the connection, and close themselves only when the proxy has gone
//! quiet (streams left open wait for more).
//!
//! A panic in one of the proxy's tasks does not reach the caller (tokio catches it): under
//! libFuzzer its panic hook aborts the process, and the short run installs a hook that fails
//! the run.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::config::{Config, NodeOverrides};
use weft_xds::load::{self, SourceFormat};

/// Longest a connection may stay open after the client has sent everything and closed its
/// side. Nothing in the bootstrap waits (no timeouts, a local upstream), so reaching it means
/// the proxy holds a half-closed connection it will never finish.
const HANG: Duration = Duration::from_secs(5);

/// How long an HTTP/2 client waits for the proxy to say more before closing its side.
const QUIET: Duration = Duration::from_millis(20);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// GOAWAY, NO_ERROR: no more streams from this client.
const H2_GOAWAY: &[u8] = b"\x00\x00\x08\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
/// The request `http1` sends after the input.
const LAST_REQUEST: &[u8] = b"GET /direct HTTP/1.1\r\nHost: fuzz\r\n\r\n";

/// Two listeners on ephemeral ports (on two addresses: weft refuses two listeners with one
/// address, port 0 included) sharing one route table; UPSTREAM is the upstream's port.
const BOOTSTRAP: &str = r#"
static_resources:
  listeners:
  - name: http1
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: fuzz_http1
          normalize_path: true
          merge_slashes: true
          upgrade_configs: [{upgrade_type: websocket}]
          route_config: {name: fuzz, virtual_hosts: VHOSTS}
          http_filters: [ROUTER]
  - name: h2
    address: {socket_address: {address: 127.0.0.2, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: fuzz_h2
          codec_type: HTTP2
          normalize_path: true
          route_config: {name: fuzz, virtual_hosts: VHOSTS}
          http_filters: [ROUTER]
  clusters:
  - name: upstream
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: UPSTREAM}}}
"#;

const VHOSTS: &str = r#"[
  {name: other, domains: ["other.example", "*.other.example:8080"], routes: [{match: {prefix: "/"}, direct_response: {status: 403}}]},
  {name: all, domains: ["*"], request_headers_to_add: [{header: {key: x-fuzz, value: "%REQ(:path)%"}}], routes: [
    {match: {prefix: "/direct"}, direct_response: {status: 200, body: {inline_string: direct}}},
    {match: {path: "/redirect"}, redirect: {path_redirect: "/elsewhere", response_code: FOUND}},
    {match: {safe_regex: {regex: "/re/[a-z]+"}, headers: [{name: x-select, string_match: {exact: "1"}}]}, route: {cluster: upstream, prefix_rewrite: "/"}},
    {match: {prefix: "/"}, route: {cluster: upstream}}
  ]}
]"#;

const ROUTER: &str =
    r#"{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}"#;

struct Proxy {
    rt: tokio::runtime::Runtime,
    http1: SocketAddr,
    h2: SocketAddr,
    /// Held so nothing of the proxy is dropped while the process runs.
    _running: weft_proxy::Running,
}

pub fn http1(data: &[u8]) {
    let p = proxy();
    if data.starts_with(H2_PREFACE) {
        let reply = p.rt.block_on(exchange(p.http1, &[data, H2_GOAWAY], Some(QUIET)));
        check_h2(&reply);
    } else {
        let reply = p.rt.block_on(exchange(p.http1, &[data, LAST_REQUEST], None));
        check_http1(&reply);
    }
}

pub fn h2(data: &[u8]) {
    let p = proxy();
    let reply = p.rt.block_on(exchange(p.h2, &[H2_PREFACE, data, H2_GOAWAY], Some(QUIET)));
    check_h2(&reply);
}

/// The proxy, started once per process.
fn proxy() -> &'static Proxy {
    static PROXY: OnceLock<Proxy> = OnceLock::new();
    PROXY.get_or_init(|| match start() {
        Ok(p) => p,
        Err(e) => panic!("the proxy the HTTP targets send to does not start: {e}"),
    })
}

fn start() -> Result<Proxy, String> {
    // One worker: the fuzzer's thread drives the client, the worker the proxy and upstream.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().map_err(|e| e.to_string())?;
    let (http1, h2, running) = rt.block_on(async {
        let upstream = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let port = upstream.local_addr().map_err(|e| e.to_string())?.port();
        tokio::spawn(serve_upstream(upstream));
        let text = BOOTSTRAP.replace("VHOSTS", VHOSTS).replace("ROUTER", ROUTER).replace("UPSTREAM", &port.to_string());
        let b = load::load_bootstrap(&text, SourceFormat::Yaml, "fuzz").map_err(|e| e.to_string())?;
        let dump = load::to_value(&text, SourceFormat::Yaml, "fuzz").map_err(|e| e.to_string())?;
        let config = Config::from_bootstrap(b, &NodeOverrides::default(), dump).map_err(|e| e.to_string())?;
        let opts = weft_proxy::Options {
            concurrency: 1,
            drain_time: Duration::from_secs(1),
            set_log_level: Arc::new(|_: &str| Ok(())),
            local_address_v6: false,
            static_unknown_fields: 0,
            log_levels: weft_proxy::applog::LogLevels::parse("info", None)?,
            dns: None,
        };
        let running = weft_proxy::start(config, opts).await.map_err(|e| e.to_string())?;
        let addr = |name: &str| running.listener_addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a);
        match (addr("http1"), addr("h2")) {
            (Some(a), Some(b)) => Ok((a, b, running)),
            _ => Err(format!("listeners not bound: {:?}", running.listener_addrs)),
        }
    })?;
    Ok(Proxy { rt, http1, h2, _running: running })
}

/// Answers every request once its whole body has arrived (so the proxy streams all of it),
/// and accepts an upgrade by echoing the tunnel's bytes.
async fn serve_upstream(listener: TcpListener) {
    while let Ok((s, _)) = listener.accept().await {
        tokio::spawn(async move {
            let svc = service_fn(|mut req: Request<Incoming>| async move {
                if let Some(proto) = req.headers().get(hyper::header::UPGRADE).cloned() {
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(up) = on.await {
                            let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                        }
                    });
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                    resp.headers_mut().insert(hyper::header::UPGRADE, proto);
                    resp.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("upgrade"));
                    return Ok::<_, Infallible>(resp);
                }
                let n = match req.into_body().collect().await {
                    Ok(b) => b.to_bytes().len(),
                    Err(_) => 0,
                };
                Ok(Response::new(Full::new(Bytes::from(format!("read {n} bytes\n")))))
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).with_upgrades().await;
        });
    }
}

/// Sends `parts` and closes the sending side, at once or (`quiet`) once the proxy has sent
/// nothing for that long; reads everything until the proxy closes. Sending and reading run
/// together: a proxy that answers early must not block the writer.
async fn exchange(addr: SocketAddr, parts: &[&[u8]], quiet: Option<Duration>) -> Vec<u8> {
    let talk = async {
        let mut s = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => panic!("the proxy no longer accepts connections: {e}"),
        };
        let (mut r, mut w) = s.split();
        let (went_quiet, quiet_rx) = tokio::sync::oneshot::channel::<()>();
        let send = async move {
            for p in parts {
                if w.write_all(p).await.is_err() {
                    // The proxy closed first; what it did not read does not matter.
                    break;
                }
            }
            if quiet.is_some() {
                // Also woken when the reader is done.
                let _ = quiet_rx.await;
            }
            let _ = w.shutdown().await;
        };
        let recv = async move {
            let mut reply = Vec::new();
            let mut buf = vec![0u8; 16 * 1024];
            let mut went_quiet = quiet.map(|q| (q, went_quiet));
            loop {
                let read = match went_quiet.take() {
                    Some((q, tx)) => match tokio::time::timeout(q, r.read(&mut buf)).await {
                        Ok(read) => {
                            went_quiet = Some((q, tx));
                            read
                        }
                        Err(_) => {
                            let _ = tx.send(());
                            continue;
                        }
                    },
                    None => r.read(&mut buf).await,
                };
                match read {
                    // A reset after the answer keeps what was read.
                    Ok(0) | Err(_) => break,
                    Ok(n) => reply.extend_from_slice(buf.get(..n).unwrap_or_default()),
                }
            }
            reply
        };
        let ((), reply) = tokio::join!(send, recv);
        // Closed with a reset: no TIME_WAIT left behind by a million connections.
        let _ = s.set_zero_linger();
        reply
    };
    match tokio::time::timeout(HANG, talk).await {
        Ok(reply) => reply,
        Err(_) => panic!("the proxy neither answered nor closed within {HANG:?} after the client finished sending"),
    }
}

/// Nothing, or HTTP/1 responses: the first one's head must be well formed as far as it goes.
fn check_http1(reply: &[u8]) {
    if reply.is_empty() {
        return;
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(reply) {
        Ok(httparse::Status::Complete(_)) => {
            let code = resp.code.unwrap_or(0);
            assert!((100..=599).contains(&code), "the proxy answered with status {code}");
        }
        // Cut short by a reset: what arrived is a well-formed start.
        Ok(httparse::Status::Partial) => {}
        Err(e) => panic!("the proxy's answer is not an HTTP/1 response ({e}): {:?}", String::from_utf8_lossy(head(reply))),
    }
}

/// Nothing, or HTTP/2 frames starting with the server's SETTINGS on stream 0.
fn check_h2(reply: &[u8]) {
    let Some(h) = reply.get(..9) else {
        assert!(reply.is_empty(), "the proxy's HTTP/2 answer is {} bytes, less than a frame header", reply.len());
        return;
    };
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    assert!(
        h[3] == 4 && stream == 0 && len.is_multiple_of(6),
        "the proxy's HTTP/2 answer does not start with SETTINGS: {:02x?}",
        head(reply)
    );
}

fn head(b: &[u8]) -> &[u8] {
    b.get(..200).unwrap_or(b)
}
