//! HTTP/2 (h2c) downstream and upstream, gRPC with a real grpcio client and server in all four
//! call shapes, and WebSocket upgrades.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use weft_test_support::{free_port, Req, Upstream};

use crate::harness::*;

#[tokio::test]
async fn h2c_downstream_and_http2_upstream() {
    let up = Upstream::start("up").await;
    let port = up.port();
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/h2up"}, "route": {"cluster": "h2"}},
                {"match": {"prefix": "/"}, "route": {"cluster": "h1"}},
            ]}]),
            vec![cluster("h1", &[port], json!({})), h2_cluster("h2", port)],
            json!({}),
        )
    })
    .await;
    let seen = same(
        &runs,
        &[
            Req::get("/a").h2(),
            Req::get("/h2up/b"),
            Req::get("/h2up/c").h2().method("POST").body("streamed body"),
            Req::get("/d").method("PUT").body("h1 body"),
        ],
    )
    .await;
    let versions: Vec<&str> = seen.iter().map(|v| v["body"]["version"].as_str().unwrap_or_default()).collect();
    assert_eq!(versions, ["HTTP/1.1", "HTTP/2.0", "HTTP/2.0", "HTTP/1.1"]);
    assert_eq!(seen[2]["body"]["body"], "streamed body");
    assert_eq!(seen[2]["body"]["authority"], "test.local");
    for r in &runs {
        assert!(r.stat("http.ingress.downstream_rq_http2_total").await >= 2, "{}", r.kind);
        assert!(r.stat("cluster.h2.upstream_cx_http2_total").await >= 1, "{}", r.kind);
    }
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn grpc_peer() -> String {
    format!("{}/../test-support/assets/grpc_peer.py", env!("CARGO_MANIFEST_DIR"))
}

async fn grpc_server(port: u16) -> Child {
    let mut child = weft_test_support::tool("python3")
        .args([&grpc_peer(), "server", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 with grpcio (run scripts/setup.sh)");
    let out = child.stdout.take().expect("stdout");
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
        line
    });
    let line = tokio::time::timeout(Duration::from_secs(20), ready).await.ok().and_then(|r| r.ok()).unwrap_or_default();
    assert_eq!(line.trim(), "ready", "gRPC server did not start (is grpcio installed? run scripts/setup.sh)");
    Child(child)
}

fn grpc_client(target: &str) -> serde_json::Value {
    let out = weft_test_support::tool("python3").args([&grpc_peer(), "client", target]).output().expect("python3");
    assert!(out.status.success(), "gRPC client failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

#[tokio::test]
async fn grpc_all_four_streaming_shapes() {
    let port = free_port();
    let _server = grpc_server(port).await;
    let runs = both(|p| {
        http_bootstrap(
            p,
            json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "grpc", "timeout": "0s"},
                "request_headers_to_add": [{"header": {"key": "x-hop", "value": "proxy"}}]}]}]),
            vec![h2_cluster("grpc", port)],
            json!({}),
        )
    })
    .await;
    let direct = grpc_client(&format!("127.0.0.1:{port}"));
    assert_eq!(direct["unary"], "unary:hello");
    let mut results = Vec::new();
    for r in &runs {
        let target = r.addr();
        let v = tokio::task::spawn_blocking(move || grpc_client(&target)).await.expect("client task");
        results.push(v);
    }
    assert_eq!(results[1], results[0], "weft vs envoy");
    let e = &results[0];
    assert_eq!(e["unary"], "unary:hello via proxy");
    assert_eq!(e["trailer"], "unary-done");
    assert_eq!(e["server_stream"], json!(["0:s", "1:s", "2:s"]));
    assert_eq!(e["client_stream"], "a|b|c");
    assert_eq!(e["bidi"], json!(["bidi:x", "bidi:y"]));
    assert_eq!(e["fail"], json!(["NOT_FOUND", "missing thing"]));
}

async fn websocket(addr: &str, path: &str) -> (String, Option<String>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: test.local\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).await.expect("status line");
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).await.unwrap_or(0) == 0 || l == "\r\n" {
            break;
        }
    }
    if !status.contains(" 101 ") {
        return (status.trim().to_string(), None);
    }
    r.get_mut().write_all(b"ping frame").await.expect("write frame");
    let mut buf = [0u8; 10];
    let echoed = tokio::time::timeout(Duration::from_secs(5), r.read_exact(&mut buf))
        .await
        .ok()
        .and_then(|x| x.ok())
        .map(|_| String::from_utf8_lossy(&buf).into_owned());
    (status.trim().to_string(), echoed)
}

#[tokio::test]
async fn websocket_upgrade() {
    let up = Upstream::start("ws").await;
    let port = up.port();
    let runs = both(|p| {
        let vh = json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "ws"}}]}]);
        let b = http_bootstrap(
            p,
            vh.clone(),
            vec![cluster("ws", &[port], json!({}))],
            json!({"upgrade_configs": [{"upgrade_type": "websocket"}]}),
        );
        // The same routes without upgrade_configs.
        with_second_listener(b, p, "plain", vh, json!({}))
    })
    .await;
    let mut got = Vec::new();
    for r in &runs {
        let with = websocket(&r.addr(), "/chat").await;
        let without = websocket(&r.addr_n(1), "/chat").await;
        got.push((with, without));
    }
    assert_eq!(got[1], got[0], "weft vs envoy");
    assert_eq!(got[0].0, ("HTTP/1.1 101 Switching Protocols".to_string(), Some("ping frame".to_string())));
    assert!(got[0].1 .0.starts_with("HTTP/1.1 403"), "upgrade without upgrade_configs: {:?}", got[0].1);
}
