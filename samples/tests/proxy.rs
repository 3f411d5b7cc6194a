//! Upstream calls through an HTTP proxy, the way `weft up --explicit` points the samples at
//! their sidecar: with `http_proxy` set, productpage asks the proxy for
//! `http://details:9080/details/0` in absolute form, Host header kept — names it could not
//! resolve itself — and `no_proxy` sends the hosts it lists around the proxy.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Parser;
use common::{get, get_with, start, Cli, Running, DEADLINE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use weft_samples::{serve, App, ProxyEnv};

/// What a request to the proxy looked like: its request target, `Host`, `Proxy-Authorization`,
/// `end-user`.
#[derive(Debug, Clone)]
struct Seen {
    target: String,
    host: String,
    auth: Option<String>,
    end_user: Option<String>,
}

/// A forward proxy on loopback that records each request and sends it to the address its
/// `Host` maps to (names that mean nothing to the system resolver).
struct ForwardProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl ForwardProxy {
    async fn start(routes: BTreeMap<String, SocketAddr>) -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (state, routes) = (seen.clone(), Arc::new(routes));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (state, routes) = (state.clone(), routes.clone());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (state, routes) = (state.clone(), routes.clone());
                    async move {
                        let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
                        let host = header("host").unwrap_or_default();
                        state.lock().expect("lock").push(Seen {
                            target: req.uri().to_string(),
                            host: host.clone(),
                            auth: header("proxy-authorization"),
                            end_user: header("end-user"),
                        });
                        let Some(to) = routes.get(&host) else {
                            let mut r = Response::new(Full::new(Bytes::from_static(b"unknown host")));
                            *r.status_mut() = StatusCode::BAD_GATEWAY;
                            return Ok::<_, std::convert::Infallible>(r);
                        };
                        let url = format!("http://{to}{}", req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"));
                        let reply = forward(&url, req.headers().clone()).await;
                        Ok(reply)
                    }
                });
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        ForwardProxy { addr, seen, _task: task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

async fn forward(url: &str, headers: http::HeaderMap) -> Response<Full<Bytes>> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let mut req = Request::get(url).body(Full::new(Bytes::new())).expect("request");
    for (k, v) in &headers {
        if k != http::header::HOST && k != http::header::PROXY_AUTHORIZATION {
            req.headers_mut().append(k.clone(), v.clone());
        }
    }
    match client.request(req).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            Response::from_parts(parts, Full::new(body))
        }
        Err(_) => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r
        }
    }
}

/// productpage with `argv` and the proxy variables `vars`.
async fn productpage(argv: &[&str], vars: &[(&str, String)]) -> Running {
    let mut cli = Cli::try_parse_from(["sample", "productpage"].iter().chain(argv)).expect("valid flags");
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    cli.args.proxy = ProxyEnv::from_lookup(move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(App::new(&cli.args), listener, async move {
        let _ = stopped.await;
    }));
    Running::new(addr, stop, task)
}

#[tokio::test]
async fn calls_go_to_the_proxy_in_absolute_form_with_their_host_header() {
    let details = start(&["details"]).await;
    let reviews = start(&["reviews"]).await;
    let routes = BTreeMap::from([("details:9080".to_string(), details.addr), ("reviews:9080".to_string(), reviews.addr)]);
    let proxy = ForwardProxy::start(routes).await;
    // Upper case, as many tools set it; productpage's default upstreams are `http://details:9080`
    // and `http://reviews:9080`, names only the proxy knows.
    let page = productpage(&[], &[("HTTP_PROXY", format!("http://{}", proxy.addr))]).await;

    let reply = tokio::time::timeout(DEADLINE, get_with(&format!("{}/api/v1/products/0", page.url()), &[("end-user", "jason")]))
        .await
        .expect("answer in time");
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["details"]["author"], "William Shakespeare", "{body}");
    assert_eq!(body["reviews"]["podname"], "test-pod", "{body}");

    let mut seen = proxy.seen();
    seen.sort_by(|a, b| a.target.cmp(&b.target));
    let targets: Vec<(&str, &str)> = seen.iter().map(|s| (s.target.as_str(), s.host.as_str())).collect();
    assert_eq!(targets, [("http://details:9080/details/0", "details:9080"), ("http://reviews:9080/reviews/0", "reviews:9080")]);
    assert!(seen.iter().all(|s| s.end_user.as_deref() == Some("jason") && s.auth.is_none()), "{seen:?}");
}

#[tokio::test]
async fn no_proxy_hosts_are_called_directly_and_proxy_credentials_are_sent() {
    let details = start(&["details"]).await;
    let reviews = start(&["reviews"]).await;
    let proxy = ForwardProxy::start(BTreeMap::from([("reviews:9080".to_string(), reviews.addr)])).await;
    let page = productpage(
        &["--details-url", &details.url()],
        &[("http_proxy", format!("http://weft:secret@{}", proxy.addr)), ("no_proxy", "localhost,127.0.0.0/8".into())],
    )
    .await;
    let reply = get(&format!("{}/api/v1/products/0", page.url())).await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["details"]["author"], "William Shakespeare", "details reached directly: {body}");
    assert_eq!(body["reviews"]["podname"], "test-pod", "{body}");
    let seen = proxy.seen();
    assert_eq!(seen.len(), 1, "only reviews went through the proxy: {seen:?}");
    assert_eq!(seen[0].target, "http://reviews:9080/reviews/0");
    assert_eq!(seen[0].auth.as_deref(), Some("Basic d2VmdDpzZWNyZXQ="));
}
