//! Tiny HTTP/1.1 GETs (`Connection: close`) from the host into the namespaces (health and stats
//! ports, which capture leaves alone), with a timeout: enough for readiness and status, no
//! client stack needed. Not HTTP/1.0: a sidecar, like Envoy, refuses it unless told otherwise.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The status code and body of `GET path` at `addr`, or why not.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: weft\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut buf = Vec::new();
    s.take(4 << 20).read_to_end(&mut buf).map_err(|e| format!("{addr}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("{addr}: not an HTTP response"))?;
    let chunked = head.lines().any(|l| {
        l.split_once(':')
            .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked"))
    });
    let body = if chunked { dechunk(body).ok_or_else(|| format!("{addr}: a malformed chunked body"))? } else { body.to_owned() };
    Ok((code, body))
}

/// The data of a chunked body (extensions and trailers dropped).
fn dechunk(mut rest: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunked_bodies_are_joined_and_malformed_ones_refused() {
        assert_eq!(super::dechunk("5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n").as_deref(), Some("hello world"));
        assert_eq!(super::dechunk("5\r\nhel"), None);
        assert_eq!(super::dechunk("zz\r\n"), None);
    }
}
