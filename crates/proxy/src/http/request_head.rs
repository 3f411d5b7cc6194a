//! What an HTTP/1 request head must be before weft acts on it, checked as Envoy's codec checks
//! it: hyper parses leniently (it takes any method token, a request target without a slash,
//! duplicate `Content-Length`s, `Transfer-Encoding: gzip, chunked`), and a proxy in front of an
//! application must never pass on what Envoy would refuse. A refused request is answered here
//! as a client error and never reaches an upstream.

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode, Version};

/// Why a request head is refused: the status Envoy answers with and its response details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub details: &'static str,
}

const fn refuse(status: StatusCode, details: &'static str) -> Refusal {
    Refusal { status, details }
}

/// The methods Envoy's HTTP/1 codec knows (llhttp's list); any other token is refused.
const METHODS: &[&str] = &[
    "DELETE",
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "COPY",
    "LOCK",
    "MKCOL",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "SEARCH",
    "UNLOCK",
    "BIND",
    "REBIND",
    "UNBIND",
    "ACL",
    "REPORT",
    "MKACTIVITY",
    "CHECKOUT",
    "MERGE",
    "M-SEARCH",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "PATCH",
    "PURGE",
    "MKCALENDAR",
    "LINK",
    "UNLINK",
    "SOURCE",
];

/// Checks an HTTP/1 request head. `max_header_bytes` is `max_request_headers_kb` in bytes,
/// measured as Envoy measures a header map: the names' and values' lengths summed.
pub fn check(method: &Method, version: Version, uri: &http::Uri, headers: &HeaderMap, max_header_bytes: usize) -> Result<(), Refusal> {
    if !METHODS.contains(&method.as_str()) {
        return Err(refuse(StatusCode::BAD_REQUEST, "http1.codec_error"));
    }
    let size: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if size > max_header_bytes {
        return Err(refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "http1.headers_too_large"));
    }
    framing(headers)?;
    target(method, uri)?;
    host(version, uri, headers)
}

/// Body framing: one `Transfer-Encoding`, and only `chunked` (Envoy implements no other coding
/// and answers 501); never together with `Content-Length`; at most one `Content-Length`.
fn framing(headers: &HeaderMap) -> Result<(), Refusal> {
    let mut te = headers.get_all(TRANSFER_ENCODING).iter();
    if let Some(v) = te.next() {
        let only_chunked = te.next().is_none() && v.to_str().is_ok_and(|s| s.trim().eq_ignore_ascii_case("chunked"));
        if !only_chunked {
            return Err(refuse(StatusCode::NOT_IMPLEMENTED, "http1.invalid_transfer_encoding"));
        }
        if headers.contains_key(CONTENT_LENGTH) {
            return Err(refuse(StatusCode::BAD_REQUEST, "http1.content_length_and_chunked_not_allowed"));
        }
    }
    if headers.get_all(CONTENT_LENGTH).iter().count() > 1 {
        return Err(refuse(StatusCode::BAD_REQUEST, "http1.content_length_not_allowed"));
    }
    Ok(())
}

/// An HTTP/2 request's `:authority`, as Envoy's codec checks it: `host[:port]`, never userinfo.
/// (h2 itself has refused malformed pseudo-headers, names and values by now.)
pub fn check_h2(uri: &http::Uri) -> Result<(), Refusal> {
    match uri.authority() {
        Some(a) if !valid_authority(a.as_str().as_bytes()) => Err(refuse(StatusCode::BAD_REQUEST, "http2.invalid_authority")),
        _ => Ok(()),
    }
}

/// A framing problem hyper hid from the header map (see `framing_scan`), refused with what
/// Envoy answers.
pub fn framing_refusal(problem: super::framing_scan::Problem) -> Refusal {
    match problem {
        super::framing_scan::Problem::ContentLengthWithTransferEncoding => {
            refuse(StatusCode::BAD_REQUEST, "http1.content_length_and_chunked_not_allowed")
        }
        super::framing_scan::Problem::DuplicateContentLength => refuse(StatusCode::BAD_REQUEST, "http1.codec_error"),
    }
}

/// The request target: origin-form (`/…`) for every method but CONNECT (authority-form) and
/// OPTIONS (which may be `*`); absolute-form only for http and https. No fragment, no byte
/// outside visible ASCII.
fn target(method: &Method, uri: &http::Uri) -> Result<(), Refusal> {
    let bad = refuse(StatusCode::BAD_REQUEST, "http1.codec_error");
    if *method == Method::CONNECT {
        return Ok(());
    }
    match (uri.scheme_str(), uri.authority()) {
        (Some(s), Some(_)) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
        (None, None) => {}
        // Authority-form off CONNECT, or another scheme.
        _ => return Err(bad),
    }
    let path = uri.path();
    let star = path == "*" && *method == Method::OPTIONS;
    if !star && !path.starts_with('/') {
        return Err(bad);
    }
    let pq = uri.path_and_query().map_or(path, |p| p.as_str());
    if pq.bytes().any(|b| !(0x21..=0x7e).contains(&b) || b == b'#') {
        return Err(bad);
    }
    Ok(())
}

/// HTTP/1.1 needs a Host (RFC 9112 §3.2); it must be one, and a valid `host[:port]`.
fn host(version: Version, uri: &http::Uri, headers: &HeaderMap) -> Result<(), Refusal> {
    let bad = refuse(StatusCode::BAD_REQUEST, "http1.codec_error");
    let mut all = headers.get_all(HOST).iter();
    match (all.next(), all.next()) {
        (None, _) if version == Version::HTTP_11 && uri.authority().is_none() => Err(bad),
        (None, _) => Ok(()),
        (Some(_), Some(_)) => Err(bad),
        (Some(h), None) if valid_authority(h.as_bytes()) => Ok(()),
        (Some(_), None) => Err(bad),
    }
}

/// RFC 3986 `host [":" port]`: a reg-name or IPv4 (unreserved, sub-delims, pct-encoded) or a
/// bracketed IP literal; no userinfo, no path, no spaces.
fn valid_authority(v: &[u8]) -> bool {
    if v.is_empty() {
        return false;
    }
    let (host, port) = if v.first() == Some(&b'[') {
        let Some(end) = v.iter().position(|&b| b == b']') else { return false };
        let literal = &v[1..end];
        if literal.is_empty() || !literal.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return false;
        }
        (&v[..=end], &v[end + 1..])
    } else {
        match v.iter().rposition(|&b| b == b':') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, &v[v.len()..]),
        }
    };
    let reg_name = |b: &u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(b);
    let host_ok = host.first() == Some(&b'[') || host.iter().all(reg_name);
    let port_ok = port.is_empty() || (port.len() <= 6 && port[1..].iter().all(u8::is_ascii_digit));
    host_ok && port_ok
}

/// The authority an absolute-form target gives (`host[:port]`, without userinfo).
pub fn authority_without_userinfo(a: &http::uri::Authority) -> &str {
    let s = a.as_str();
    s.rsplit_once('@').map_or(s, |(_, host)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, target: &str, headers: &[(&str, &str)]) -> Result<(), Refusal> {
        let uri: http::Uri = target.parse().expect("uri");
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                http::HeaderValue::from_bytes(v.as_bytes()).expect("value"),
            );
        }
        check(&Method::from_bytes(method.as_bytes()).expect("method"), Version::HTTP_11, &uri, &h, 60 * 1024)
    }

    #[test]
    fn what_envoy_refuses_is_refused() {
        let host = ("host", "t.example");
        let status = |r: Result<(), Refusal>| r.err().map(|e| e.status.as_u16());
        assert_eq!(status(head("GET", "/", &[host])), None);
        assert_eq!(status(head("FOO", "/", &[host])), Some(400));
        assert_eq!(status(head("get", "/", &[host])), Some(400));
        assert_eq!(status(head("POST", "/", &[host, ("content-length", "6"), ("transfer-encoding", "chunked")])), Some(400));
        assert_eq!(status(head("POST", "/", &[host, ("content-length", "5"), ("content-length", "5")])), Some(400));
        assert_eq!(status(head("POST", "/", &[host, ("transfer-encoding", "gzip, chunked")])), Some(501));
        assert_eq!(status(head("POST", "/", &[host, ("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")])), Some(501));
        assert_eq!(status(head("POST", "/", &[host, ("transfer-encoding", "Chunked")])), None);
        assert_eq!(status(head("GET", "/", &[])), Some(400), "HTTP/1.1 without Host");
        assert_eq!(status(head("GET", "/", &[("host", "a b")])), Some(400));
        assert_eq!(status(head("GET", "/", &[("host", "a/b@c")])), Some(400));
        assert_eq!(status(head("GET", "/", &[("host", "[::1]:8080")])), None);
        assert_eq!(status(head("GET", "evil.example:8080", &[host])), Some(400));
        assert_eq!(status(head("GET", "ftp://x.example/", &[host])), Some(400));
        assert_eq!(status(head("GET", "http://x.example/a", &[host])), None);
        assert_eq!(status(head("OPTIONS", "*", &[host])), None);
        assert_eq!(status(head("CONNECT", "x.example:443", &[host])), None);
        assert_eq!(status(head("GET", "/", &[host, ("x-big", &"a".repeat(62 * 1024))])), Some(431));
    }

    #[test]
    fn userinfo_never_reaches_the_host() {
        let uri: http::Uri = "http://user:pw@other.example:8080/".parse().expect("uri");
        assert_eq!(authority_without_userinfo(uri.authority().expect("authority")), "other.example:8080");
    }
}
