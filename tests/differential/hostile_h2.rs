//! Hostile HTTP/2 (prior knowledge, cleartext), written frame by frame, to Envoy and weft on
//! the same bootstrap, each with its own recording upstream: malformed requests are refused as
//! Envoy refuses them (nothing reaches the upstream), and floods of resets, SETTINGS, PINGs,
//! empty frames, PRIORITY and WINDOW_UPDATE frames end the connection with memory bounded.
//!
//! Deliberate difference: a malformed request makes Envoy (by default,
//! `stream_error_on_invalid_http_message: false`) close the whole connection; the h2 library
//! under weft resets only the offending stream (or sends GOAWAY). Either way nothing reaches
//! the upstream; the test asserts that, and that weft refuses.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix whose other bits are `first`.
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = v - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header block of literal fields without indexing, no Huffman: exactly the bytes given.
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, n.len());
        out.extend_from_slice(n.as_bytes());
        hpack_int(&mut out, 0, 7, v.len());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn get(authority: &str, path: &str) -> Vec<(&'static str, String)> {
    vec![(":method", "GET".into()), (":scheme", "http".into()), (":authority", authority.into()), (":path", path.into())]
}

/// What the client saw on its connection for stream 1.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Status(u16),
    /// RST_STREAM on stream 1 with this error code.
    Reset(u32),
    /// GOAWAY with this error code (before any answer on stream 1).
    GoAway(u32),
    Closed,
    Nothing,
}

impl Seen {
    fn refused(&self) -> bool {
        !matches!(self, Seen::Status(200..=399) | Seen::Nothing)
    }
}

/// The `:status` of a response header block: the first field, indexed from the static table
/// or a literal with the indexed name `:status`, plain or Huffman-coded digits.
fn status_of(block: &[u8]) -> Option<u16> {
    let first = *block.first()?;
    let statics = [(0x88, 200), (0x89, 204), (0x8a, 206), (0x8b, 304), (0x8c, 400), (0x8d, 404), (0x8e, 500)];
    if let Some((_, s)) = statics.iter().find(|(b, _)| *b == first) {
        return Some(*s);
    }
    // Literal with (0x48), without (0x08) or never (0x18) indexing, name = static index 8.
    if ![0x48, 0x08, 0x18].contains(&first) {
        return None;
    }
    let len_byte = *block.get(1)?;
    let (huffman, len) = (len_byte & 0x80 != 0, (len_byte & 0x7f) as usize);
    let raw = block.get(2..2 + len)?;
    let digits = if huffman { huffman_digits(raw)? } else { String::from_utf8(raw.to_vec()).ok()? };
    digits.parse().ok()
}

/// Decodes HPACK Huffman that holds only digits (RFC 7541 Appendix B: 0-2 are 5 bits, 3-9 6).
fn huffman_digits(raw: &[u8]) -> Option<String> {
    let bits: Vec<u8> = raw.iter().flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1)).collect();
    let mut out = String::new();
    let mut i = 0;
    while i + 5 <= bits.len() {
        let v5 = bits[i..i + 5].iter().fold(0u8, |a, b| a << 1 | b);
        if v5 <= 2 {
            out.push((b'0' + v5) as char);
            i += 5;
            continue;
        }
        if i + 6 > bits.len() {
            break;
        }
        let v6 = bits[i..i + 6].iter().fold(0u8, |a, b| a << 1 | b);
        if (0b011001..=0b011111).contains(&v6) {
            out.push((b'3' + (v6 - 0b011001)) as char);
            i += 6;
        } else {
            break;
        }
    }
    Some(out)
}

/// Opens an HTTP/2 connection and sends the preface, an empty SETTINGS and `frames`; reads
/// frames until stream 1 is answered or reset, the connection ends, or 3 s pass.
async fn exchange(addr: &str, frames: &[Vec<u8>]) -> Seen {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    for f in frames {
        out.extend_from_slice(f);
    }
    if s.write_all(&out).await.is_err() {
        return Seen::Closed;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        // Whole frames in what has arrived.
        let mut at = 0;
        while let Some(head) = buf.get(at..at + 9) {
            let len = (head[0] as usize) << 16 | (head[1] as usize) << 8 | head[2] as usize;
            let (ty, stream) = (head[3], u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff);
            let Some(payload) = buf.get(at + 9..at + 9 + len) else { break };
            let code = |off: usize| payload.get(off..off + 4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).unwrap_or(0);
            match (ty, stream) {
                (HEADERS, 1) => {
                    let padded = head[4] & 0x8 != 0;
                    let prio = head[4] & 0x20 != 0;
                    let skip = usize::from(padded) + if prio { 5 } else { 0 };
                    return status_of(payload.get(skip..).unwrap_or_default()).map_or(Seen::Nothing, Seen::Status);
                }
                (RST_STREAM, 1) => return Seen::Reset(code(0)),
                (GOAWAY, 0) => return Seen::GoAway(code(4)),
                _ => {}
            }
            at += 9 + len;
        }
        buf.drain(..at);
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Seen::Closed,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Seen::Nothing,
        }
    }
}

fn headers(fields: &[(&str, &str)], flags: u8) -> Vec<u8> {
    frame(HEADERS, flags, 1, &block(fields))
}

/// A request whose header block is `fields`, ending the stream.
fn request(fields: Vec<(&str, String)>) -> Vec<Vec<u8>> {
    let f: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
    vec![headers(&f, END_STREAM | END_HEADERS)]
}

fn with(mut fields: Vec<(&'static str, String)>, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    fields.extend(extra.iter().map(|(n, v)| (*n, v.to_string())));
    fields
}

#[tokio::test]
async fn hostile_http2_requests_are_refused_as_envoy_refuses_them() {
    let (ups, envoy, weft) = pair(json!({})).await;
    let a = "t.example";
    let big = "a".repeat(70 * 1024);
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("plain GET", request(get(a, "/ok"))),
        ("upper-case header name", request(with(get(a, "/"), &[("X-Upper", "1")]))),
        ("connection header", request(with(get(a, "/"), &[("connection", "keep-alive")]))),
        ("transfer-encoding header", request(with(get(a, "/"), &[("transfer-encoding", "chunked")]))),
        ("upgrade header", request(with(get(a, "/"), &[("upgrade", "websocket")]))),
        ("te: gzip", request(with(get(a, "/"), &[("te", "gzip")]))),
        ("te: trailers", request(with(get(a, "/te"), &[("te", "trailers")]))),
        ("no :path", request(vec![(":method", "GET".into()), (":scheme", "http".into()), (":authority", a.into())])),
        ("no :method", request(vec![(":scheme", "http".into()), (":authority", a.into()), (":path", "/".into())])),
        ("two :path", request(with(get(a, "/"), &[(":path", "/other")]))),
        ("unknown pseudo-header", request(with(get(a, "/"), &[(":foo", "bar")]))),
        (
            "pseudo-header after a regular one",
            request(vec![
                (":method", "GET".into()),
                (":scheme", "http".into()),
                ("x-a", "1".into()),
                (":authority", a.into()),
                (":path", "/".into()),
            ]),
        ),
        ("empty :path", request(get(a, ""))),
        ("space in a value's middle is fine", request(with(get(a, "/sp"), &[("x-a", "b c")]))),
        ("NUL in a value", request(with(get(a, "/"), &[("x-a", "b\0c")]))),
        ("CR LF in a value", request(with(get(a, "/"), &[("x-a", "b\r\nx-injected: 1")]))),
        ("colon in a name", request(with(get(a, "/"), &[("x:a", "1")]))),
        ("70 KB header", request(with(get(a, "/"), &[("x-big", big.as_str())]))),
        (
            "method FOO",
            request(vec![(":method", "FOO".into()), (":scheme", "http".into()), (":authority", a.into()), (":path", "/foo".into())]),
        ),
        ("authority with userinfo", request(get("user@t.example", "/"))),
        ("authority with a space", request(get("a b", "/"))),
        (
            "host without :authority",
            request(vec![(":method", "GET".into()), (":scheme", "http".into()), (":path", "/h".into()), ("host", a.into())]),
        ),
        (
            "content-length larger than the body",
            vec![
                frame(
                    HEADERS,
                    END_HEADERS,
                    1,
                    &block(&[(":method", "POST"), (":scheme", "http"), (":authority", a), (":path", "/cl"), ("content-length", "10")]),
                ),
                frame(DATA, END_STREAM, 1, b"abc"),
            ],
        ),
    ];
    let mut problems = Vec::new();
    let mut table = Vec::new();
    for (name, frames) in &cases {
        let mut seen = Vec::new();
        for (run, up) in [(&envoy, &ups[0]), (&weft, &ups[1])] {
            up.reset();
            let outcome = exchange(&run.addr(), frames).await;
            let forwarded = up.seen().first().map(|r| (r["path"].clone(), r["headers"]["host"].clone()));
            seen.push((outcome, forwarded));
        }
        let ((e, ef), (w, wf)) = (&seen[0], &seen[1]);
        table.push(format!("{name}: envoy {e:?} {ef:?} / weft {w:?} {wf:?}"));
        let ok = match (ef, wf) {
            // Envoy refused: weft forwards nothing either, and refuses.
            (None, None) => w.refused() || e == w,
            (None, Some(_)) => false,
            // Envoy forwarded: weft forwards the same request (or refuses).
            (Some(ef), Some(wf)) => ef == wf && e == w,
            (Some(_), None) => w.refused(),
        };
        if !ok {
            problems.push(format!("{name}:\n    envoy {e:?} forwarded {ef:?}\n    weft  {w:?} forwarded {wf:?}"));
        }
    }
    eprintln!("{}", table.join("\n"));
    assert!(problems.is_empty(), "weft differs from Envoy on:\n{}", problems.join("\n"));
}

/// How a flood ended for the client: GOAWAY (its code), closed, or still open after 5 s.
async fn flood(addr: &str, frames: Vec<u8>) -> Seen {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(frames);
    // Written without reading, as a flooding client does; the proxy may stop reading first.
    let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(&out)).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut at = 0;
        while let Some(head) = buf.get(at..at + 9) {
            let len = (head[0] as usize) << 16 | (head[1] as usize) << 8 | head[2] as usize;
            let Some(payload) = buf.get(at + 9..at + 9 + len) else { break };
            if head[3] == GOAWAY {
                return Seen::GoAway(payload.get(4..8).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).unwrap_or(0));
            }
            at += 9 + len;
        }
        buf.drain(..at);
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Seen::Closed,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Seen::Nothing,
        }
    }
}

/// Anonymous resident memory of `pid` in KiB.
fn anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("RssAnon:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn http2_floods_end_the_connection_or_cost_bounded_memory() {
    let (ups, envoy, weft) = pair(json!({})).await;
    let get = block(&[(":method", "GET"), (":scheme", "http"), (":authority", "t.example"), (":path", "/f")]);
    let floods: Vec<(&str, Vec<u8>)> = vec![
        ("rapid reset", {
            let mut v = Vec::new();
            for i in 0..2000u32 {
                let id = 2 * i + 1;
                v.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &get));
                v.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
            }
            v
        }),
        ("SETTINGS flood", (0..50_000).flat_map(|_| frame(SETTINGS, 0, 0, &[])).collect()),
        ("PING flood", (0..50_000u64).flat_map(|i| frame(PING, 0, 0, &i.to_be_bytes())).collect()),
        ("empty DATA frames", {
            let mut v = frame(
                HEADERS,
                END_HEADERS,
                1,
                &block(&[(":method", "POST"), (":scheme", "http"), (":authority", "t.example"), (":path", "/e")]),
            );
            v.extend((0..10_000).flat_map(|_| frame(DATA, 0, 1, &[])));
            v
        }),
        ("PRIORITY frames", (0..10_000).flat_map(|_| frame(PRIORITY, 0, 3, &[0, 0, 0, 1, 16])).collect()),
        ("WINDOW_UPDATE frames", (0..10_000).flat_map(|_| frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 1])).collect()),
    ];
    let wpid = weft.proxy.pid().expect("pid");
    let mut report = Vec::new();
    let mut problems = Vec::new();
    for (name, bytes) in floods {
        let before = anon_kib(wpid);
        let mut ends = Vec::new();
        for (run, up) in [(&envoy, &ups[0]), (&weft, &ups[1])] {
            up.reset();
            let end = flood(&run.addr(), bytes.clone()).await;
            ends.push((end, up.seen().len()));
        }
        let growth = anon_kib(wpid).saturating_sub(before);
        report.push(format!(
            "{name}: envoy {:?} ({} upstream) / weft {:?} ({} upstream), weft +{growth} KiB",
            ends[0].0, ends[0].1, ends[1].0, ends[1].1
        ));
        let (e, w) = (&ends[0], &ends[1]);
        // Envoy ends a flooded connection; weft must too, or at least hold it at bounded cost.
        if matches!(e.0, Seen::GoAway(_) | Seen::Closed) && !matches!(w.0, Seen::GoAway(_) | Seen::Closed) {
            problems.push(format!("{name}: envoy ended the connection ({:?}), weft left it {:?}", e.0, w.0));
        }
        if w.1 > e.1.max(100) {
            problems.push(format!("{name}: weft's upstream saw {} requests, Envoy's {}", w.1, e.1));
        }
        if growth > 8 * 1024 {
            problems.push(format!("{name}: weft grew {growth} KiB"));
        }
    }
    eprintln!("{}", report.join("\n"));
    // Each flood is counted under Envoy's name for it. (Not `outbound_control_flood`: for the
    // PING flood, Envoy's own counter and its HTTP/2 library's unread-ACK bound race, and
    // either may end the connection first.)
    for name in ["inbound_empty_frames_flood", "inbound_priority_frames_flood", "inbound_window_update_frames_flood"] {
        let name = format!("http2.{name}");
        let (e, w) = (envoy.stat(&name).await, weft.stat(&name).await);
        if e != w {
            problems.push(format!("{name}: envoy {e}, weft {w}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
