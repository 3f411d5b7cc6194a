//! A trace collector for tests: accepts `POST /api/v2/spans` (Zipkin JSON) and
//! `POST /v1/traces` (OTLP over HTTP, protobuf) on loopback (HTTP/1.1 with keep-alive; sized or
//! chunked bodies, as weft and Envoy send them) and keeps what came.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::Value;

pub struct Collector {
    pub port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
    otlp: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Collector {
    /// Listens on 127.0.0.1 until the test process ends.
    pub fn start() -> std::io::Result<Collector> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let spans: Arc<Mutex<Vec<Value>>> = Arc::default();
        let otlp: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let (keep, keep_otlp) = (spans.clone(), otlp.clone());
        std::thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                let (keep, keep_otlp) = (keep.clone(), keep_otlp.clone());
                std::thread::spawn(move || {
                    let _ = serve(sock, &keep, &keep_otlp);
                });
            }
        });
        Ok(Collector { port, spans, otlp })
    }

    /// The OTLP export requests received so far (protobuf bodies).
    pub fn otlp_requests(&self) -> Vec<Vec<u8>> {
        self.otlp.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<Value> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn serve(sock: TcpStream, spans: &Mutex<Vec<Value>>, otlp: &Mutex<Vec<Vec<u8>>>) -> std::io::Result<()> {
    let mut w = sock.try_clone()?;
    let mut r = BufReader::new(sock);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let (mut len, mut chunked) = (0usize, false);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if h.starts_with("transfer-encoding:") && h.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                r.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            body.resize(len, 0);
            r.read_exact(&mut body)?;
        }
        if line.starts_with("POST /api/v2/spans ") {
            if let Ok(Value::Array(list)) = serde_json::from_slice::<Value>(&body) {
                spans.lock().unwrap_or_else(|e| e.into_inner()).extend(list);
            }
        }
        if line.starts_with("POST /v1/traces ") {
            otlp.lock().unwrap_or_else(|e| e.into_inner()).push(body);
            w.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")?;
            continue;
        }
        w.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")?;
    }
}
