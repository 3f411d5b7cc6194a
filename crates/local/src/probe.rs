//! Tiny HTTP/1.0 GETs from the host into the namespaces (health and stats ports, which capture
//! leaves alone), with a timeout: enough for readiness and status, no client stack needed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The status code and body of `GET path` at `addr`, or why not.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: weft\r\n\r\n").map_err(|e| format!("{addr}: {e}"))?;
    let mut buf = Vec::new();
    s.take(4 << 20).read_to_end(&mut buf).map_err(|e| format!("{addr}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("{addr}: not an HTTP response"))?;
    Ok((code, body.to_owned()))
}
