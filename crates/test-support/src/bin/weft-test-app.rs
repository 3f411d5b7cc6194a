//! A sample workload for mesh tests, run inside a test's network namespace.
//!
//! `weft-test-app serve ADDR NAME`: answers every request with `NAME` (and headers `x-app`, and
//!   `x-path` with the path it was asked for); `/status/<code>` answers with that status;
//!   `/flaky` answers 503 to every other request (the first, third, …), for retry tests;
//!   `/peer` answers `NAME peer=<x-forwarded-client-cert or none>`; a path ending in
//!   `/headers` answers the request's headers, one `name: value` a line, sorted; `/served`
//!   answers how many other requests this process has served (a mirror's copies count).
//! `weft-test-app get URL COUNT [NAME:VALUE…]`: sends COUNT requests one after another and
//!   prints a JSON object counting each `"<status> <body>"` (`"error <reason>"` for failures).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Requests served so far (but `/served`), in this process.
static SERVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Requests to `/flaky` so far, in this process.
static FLAKY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    match args.get(1).map(String::as_str) {
        Some("serve") if args.len() == 4 => rt.block_on(serve(args[2].clone(), args[3].clone())),
        Some("get") if args.len() >= 4 => {
            let Ok(count) = args[3].parse::<usize>() else {
                eprintln!("COUNT must be a number");
                return ExitCode::from(2);
            };
            rt.block_on(get(args[2].clone(), count, args[4..].to_vec()))
        }
        _ => {
            eprintln!("usage: weft-test-app serve ADDR NAME | get URL COUNT [NAME:VALUE...]");
            ExitCode::from(2)
        }
    }
}

async fn serve(addr: String, name: String) -> ExitCode {
    let l = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bind {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    loop {
        let Ok((s, _)) = l.accept().await else { continue };
        let name = name.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let name = name.clone();
                async move {
                    let mut status = req.uri().path().strip_prefix("/status/").and_then(|c| c.parse::<u16>().ok()).unwrap_or(200);
                    if req.uri().path() == "/flaky" && FLAKY.fetch_add(1, std::sync::atomic::Ordering::Relaxed).is_multiple_of(2) {
                        status = 503;
                    }
                    // `/peer`: who the sidecar says called, as the application sees it.
                    let path = req.uri().path();
                    if path != "/served" {
                        SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let body = if path == "/peer" {
                        let xfcc = req.headers().get("x-forwarded-client-cert").and_then(|v| v.to_str().ok());
                        format!("{name} peer={}", xfcc.unwrap_or("none"))
                    } else if path.ends_with("/headers") {
                        let mut lines: Vec<String> =
                            req.headers().iter().map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes()))).collect();
                        lines.sort();
                        lines.join("\n")
                    } else if path == "/served" {
                        SERVED.load(std::sync::atomic::Ordering::Relaxed).to_string()
                    } else {
                        name.clone()
                    };
                    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
                    if let Ok(v) = hyper::header::HeaderValue::from_str(&name) {
                        r.headers_mut().insert("x-app", v);
                    }
                    if let Ok(v) = hyper::header::HeaderValue::from_str(req.uri().path()) {
                        r.headers_mut().insert("x-path", v);
                    }
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}

async fn get(url: String, count: usize, headers: Vec<String>) -> ExitCode {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..count {
        let mut b = hyper::Request::get(url.as_str());
        for h in &headers {
            if let Some((k, v)) = h.split_once(':') {
                b = b.header(k.trim(), v.trim());
            }
        }
        let Ok(req) = b.body(Full::new(Bytes::new())) else {
            eprintln!("bad request");
            return ExitCode::from(2);
        };
        let key = match tokio::time::timeout(Duration::from_secs(20), client.request(req)).await {
            Err(_) => "error timeout".to_string(),
            Ok(Err(e)) => format!("error {e}"),
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                format!("{status} {}", String::from_utf8_lossy(&body).trim()).trim_end().to_string()
            }
        };
        *counts.entry(key).or_default() += 1;
    }
    println!("{}", serde_json::to_string(&counts).unwrap_or_default());
    ExitCode::SUCCESS
}
