//! Sample upstreams: an HTTP/1.1 + h2c server that answers with a JSON description of the
//! request it received, steered per request by `x-echo-*` headers, and counts and keeps the
//! requests it received (for copies nobody answers to, such as mirrored requests).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running echo upstream. Behaviour per request:
/// - `x-echo-status: N` answers with status N;
/// - `x-echo-delay-ms: N` waits N ms before answering;
/// - `x-echo-response-header: name=value` adds a response header;
/// - `x-echo-fail-first: N` answers 503 to the first N requests carrying that header;
/// - `Upgrade: websocket` answers 101 and echoes raw bytes afterwards.
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    count: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    forced: Arc<std::sync::atomic::AtomicU16>,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

/// Every request's JSON description, in arrival order.
type Seen = Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let count = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let forced = Arc::new(std::sync::atomic::AtomicU16::new(0));
        let seen = Seen::default();
        let (n, c, f, fo, se) = (name.to_string(), count.clone(), failed.clone(), forced.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else { continue };
                let (n, c, f, fo, se) = (n.clone(), c.clone(), f.clone(), fo.clone(), se.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (n, c, f, fo, se) = (n.clone(), c.clone(), f.clone(), fo.clone(), se.clone());
                        async move {
                            let counters = Counters { count: &c, failed: &f, forced: fo.load(Ordering::SeqCst), seen: &se };
                            Ok::<_, Infallible>(answer(req, &n, counters, peer).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { name: name.to_string(), addr, count, failed, forced, seen, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests received since start or the last reset.
    pub fn requests(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Makes every request (health checks too) answer `status`; 0 restores normal answers.
    pub fn set_status(&self, status: u16) {
        self.forced.store(status, Ordering::SeqCst);
    }

    pub fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
        self.failed.store(0, Ordering::SeqCst);
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The requests received since start or the last reset, as the JSON an answer carries.
    pub fn seen(&self) -> Vec<serde_json::Value> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until at least `n` requests have arrived (or `within` passes) and returns them.
    pub async fn wait_seen(&self, n: usize, within: Duration) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let seen = self.seen();
            if seen.len() >= n || tokio::time::Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What one answer reads and updates.
struct Counters<'a> {
    count: &'a AtomicU64,
    failed: &'a AtomicU64,
    forced: u16,
    seen: &'a Seen,
}

async fn answer(req: http::Request<Incoming>, name: &str, counters: Counters<'_>, peer: SocketAddr) -> http::Response<Full<Bytes>> {
    let Counters { count, failed, forced, seen } = counters;
    count.fetch_add(1, Ordering::SeqCst);
    let h = |k: &str| req.headers().get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(ms) = h("x-echo-delay-ms").and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if h("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        let on = hyper::upgrade::on(req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 4096];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return http::Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("x-upstream", name)
            .body(Full::new(Bytes::new()))
            .unwrap_or_default();
    }
    let mut status = h("x-echo-status").and_then(|s| s.parse::<u16>().ok()).unwrap_or(200);
    if forced != 0 {
        status = forced;
    }
    if let Some(n) = h("x-echo-fail-first").and_then(|v| v.parse::<u64>().ok()) {
        if failed.fetch_add(1, Ordering::SeqCst) < n {
            status = 503;
        }
    }
    let extra = h("x-echo-response-header");
    let method = req.method().to_string();
    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let version = format!("{:?}", req.version());
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers.entry(k.to_string()).or_default().push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let authority = req.uri().authority().map(|a| a.to_string());
    let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let json = serde_json::json!({
        "upstream": name,
        "method": method,
        "path": path,
        "version": version,
        "authority": authority,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "peer": peer.ip().to_string(),
    });
    seen.lock().unwrap_or_else(|e| e.into_inner()).push(json.clone());
    let mut b = http::Response::builder().status(status).header("content-type", "application/json").header("x-upstream", name);
    if let Some((k, v)) = extra.as_deref().and_then(|e| e.split_once('=')) {
        b = b.header(k, v);
    }
    b.body(Full::new(Bytes::from(json.to_string()))).unwrap_or_default()
}

/// A raw TCP echo server (for `tcp_proxy`), that first writes its name and a newline.
pub struct TcpEcho {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TcpEcho {
    pub async fn start(name: &str) -> TcpEcho {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind tcp echo");
        let addr = listener.local_addr().expect("addr");
        let name = name.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { continue };
                let name = name.clone();
                tokio::spawn(async move {
                    if s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                        return;
                    }
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        TcpEcho { addr, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}
