//! What the sample tests share: start a service in-process on an ephemeral loopback port, a
//! "sidecar" that records what crosses a hop and stamps an `x-forwarded-client-cert` on it, and
//! an HTTP client.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};
use weft_samples::{serve, App, SampleArgs};

/// How long a test waits for anything before failing.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// `weft sample …` as the CLI will parse it.
#[derive(Parser, Debug)]
#[command(name = "sample")]
pub struct Cli {
    #[command(flatten)]
    pub args: SampleArgs,
}

/// A sample service served in-process until dropped.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// A service `serve` runs on `addr` until `stop` fires.
    pub fn new(addr: SocketAddr, stop: oneshot::Sender<()>, task: tokio::task::JoinHandle<()>) -> Running {
        Running { addr, stop: Some(stop), task: Some(task) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Asks `serve` to stop and waits until it has returned.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task).await.expect("serve returns after shutdown").expect("serve does not panic");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Parses `weft sample <argv…>` (plus `--pod-name test-pod`) and serves it on 127.0.0.1:0.
pub async fn start(argv: &[&str]) -> Running {
    let cli = Cli::try_parse_from(["sample"].iter().chain(argv).chain(&["--pod-name", "test-pod"])).expect("valid flags");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(App::new(&cli.args), listener, async move {
        let _ = stopped.await;
    }));
    Running { addr, stop: Some(stop), task: Some(task) }
}

/// The bookinfo call graph on loopback, with `reviews` at `version` and `ratings` behind a
/// recording sidecar.
pub struct Bookinfo {
    pub productpage: Running,
    pub details: Running,
    pub reviews: Running,
    pub ratings: Running,
    pub ratings_hop: Sidecar,
}

impl Bookinfo {
    pub async fn start(version: &str) -> Bookinfo {
        let ratings = start(&["ratings"]).await;
        let ratings_hop = Sidecar::start(&ratings.url(), None).await;
        let reviews = start(&["reviews", "--version", version, "--ratings-url", &ratings_hop.url()]).await;
        let details = start(&["details"]).await;
        let productpage = start(&["productpage", "--details-url", &details.url(), "--reviews-url", &reviews.url()]).await;
        Bookinfo { productpage, details, reviews, ratings, ratings_hop }
    }
}

/// A stand-in for the sidecar in front of a service: forwards each request to `upstream`,
/// records the request headers, and replaces `x-forwarded-client-cert` with its own element
/// (Envoy's SANITIZE_SET) when given one.
pub struct Sidecar {
    pub addr: SocketAddr,
    seen: Arc<Seen>,
    _stop: oneshot::Sender<()>,
}

#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(String, HeaderMap)>>,
    changed: Notify,
}

impl Sidecar {
    pub async fn start(upstream: &str, xfcc: Option<&str>) -> Sidecar {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Seen::default());
        let (stop, mut stopped) = oneshot::channel::<()>();
        let upstream = upstream.to_string();
        let xfcc = xfcc.map(|v| HeaderValue::from_str(v).expect("valid xfcc"));
        let client = client();
        let state = seen.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = &mut stopped => return,
                    accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => continue },
                };
                let (upstream, xfcc, client, state) = (upstream.clone(), xfcc.clone(), client.clone(), state.clone());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (upstream, xfcc, client, state) = (upstream.clone(), xfcc.clone(), client.clone(), state.clone());
                    async move {
                        let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                        let mut headers = req.headers().clone();
                        state.requests.lock().expect("lock").push((path.clone(), headers.clone()));
                        state.changed.notify_waiters();
                        headers.remove(http::header::HOST);
                        match xfcc {
                            Some(v) => headers.insert(HeaderName::from_static("x-forwarded-client-cert"), v),
                            None => headers.remove("x-forwarded-client-cert"),
                        };
                        let mut out = Request::builder()
                            .method(req.method())
                            .uri(format!("{upstream}{path}"))
                            .body(Full::new(Bytes::new()))
                            .expect("valid request");
                        *out.headers_mut() = headers;
                        let resp = match client.request(out).await {
                            Ok(resp) => {
                                let (parts, body) = resp.into_parts();
                                let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                Response::from_parts(parts, Full::new(body))
                            }
                            Err(_) => {
                                let mut r = Response::new(Full::new(Bytes::from_static(b"upstream connect error")));
                                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                                r
                            }
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        Sidecar { addr, seen, _stop: stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests that crossed this hop so far (path, headers).
    pub fn requests(&self) -> Vec<(String, HeaderMap)> {
        self.seen.requests.lock().expect("lock").clone()
    }

    /// Waits until at least `n` requests crossed this hop.
    pub async fn wait_for(&self, n: usize) -> Vec<(String, HeaderMap)> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                let changed = self.seen.changed.notified();
                let seen = self.requests();
                if seen.len() >= n {
                    return seen;
                }
                changed.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{n} requests did not reach the sidecar at {} within {DEADLINE:?}", self.addr))
    }
}

/// A loopback address where nothing listens: bound, then closed.
pub async fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    format!("http://{addr}")
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn sample(&self) -> &str {
        self.headers.get("x-weft-sample").and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `method url` with `headers`, within the test deadline.
pub async fn request(method: Method, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(Bytes::new())).expect("valid request");
    let resp = tokio::time::timeout(DEADLINE, client().request(req)).await.expect("answer within the deadline").expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body =
        tokio::time::timeout(DEADLINE, resp.into_body().collect()).await.expect("body within the deadline").expect("body").to_bytes();
    Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

pub async fn get(url: &str) -> Reply {
    request(Method::GET, url, &[]).await
}

pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    request(Method::GET, url, headers).await
}
