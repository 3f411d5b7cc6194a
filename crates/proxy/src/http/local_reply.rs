//! Responses the proxy generates itself, shaped as Envoy shapes them (and as gRPC status when
//! the caller speaks gRPC).

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::body::{self, Body};

/// Envoy's HTTP→gRPC status mapping for local replies.
fn grpc_status(s: StatusCode) -> u32 {
    match s.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

pub fn build(status: StatusCode, text: impl Into<Bytes>, grpc: bool) -> Response<Body> {
    let text: Bytes = text.into();
    if grpc {
        let mut r = Response::new(body::empty());
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from(grpc_status(status)));
        if !text.is_empty() {
            if let Ok(v) = HeaderValue::from_bytes(&percent_encode(&text)) {
                h.insert("grpc-message", v);
            }
        }
        return r;
    }
    let len = text.len();
    let mut r = Response::new(if len == 0 { body::empty() } else { body::full(text) });
    *r.status_mut() = status;
    if len > 0 {
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(len));
    r
}

fn percent_encode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    for &c in b {
        if (0x20..0x7f).contains(&c) && c != b'%' {
            out.push(c);
        } else {
            out.extend_from_slice(format!("%{c:02X}").as_bytes());
        }
    }
    out
}
