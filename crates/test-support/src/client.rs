//! A plain HTTP client for tests: one fresh connection per request, HTTP/1.1 or h2c.

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Debug, Clone, Default)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub h2: bool,
    pub authority: Option<String>,
}

impl Req {
    pub fn get(path: &str) -> Req {
        Req { method: "GET".into(), path: path.into(), ..Default::default() }
    }
    pub fn method(mut self, m: &str) -> Req {
        self.method = m.into();
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Req {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn host(mut self, h: &str) -> Req {
        self.authority = Some(h.into());
        self
    }
    pub fn body(mut self, b: impl Into<Bytes>) -> Req {
        self.body = b.into();
        self
    }
    pub fn h2(mut self) -> Req {
        self.h2 = true;
        self
    }
}

#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
    /// The echo upstream's JSON description of the request it received.
    pub fn echo(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends `req` to `addr` ("127.0.0.1:port") over a new connection.
pub async fn send(addr: &str, req: Req) -> anyhow::Result<Reply> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let authority = req.authority.clone().unwrap_or_else(|| addr.to_string());
    let mut b = http::Request::builder().method(req.method.as_str());
    if req.h2 {
        b = b.uri(format!("http://{authority}{}", req.path)).version(http::Version::HTTP_2);
    } else {
        b = b.uri(req.path.as_str()).header(http::header::HOST, authority.as_str());
    }
    for (k, v) in &req.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let request = b.body(Full::new(req.body.clone()))?;
    let resp = if req.h2 {
        let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        s.send_request(request).await?
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        s.send_request(request).await?
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await?;
    let trailers = collected.trailers().cloned();
    Ok(Reply { status, headers, body: collected.to_bytes(), trailers })
}
