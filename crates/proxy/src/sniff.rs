//! Protocol detection from a connection's first bytes: TLS ClientHello (SNI, ALPN) for
//! `tls_inspector`, and the HTTP/1.x request line or HTTP/2 preface for `http_inspector`.

/// What the inspected bytes say, or that more bytes are needed.
#[derive(Debug, PartialEq, Eq)]
pub enum Sniff<T> {
    Done(T),
    NeedMore,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    pub sni: Option<String>,
    pub alpn: Vec<String>,
}

/// Parses a TLS ClientHello. `Done(None)` means the bytes are not TLS.
pub fn client_hello(b: &[u8]) -> Sniff<Option<ClientHello>> {
    if b.is_empty() {
        return Sniff::NeedMore;
    }
    if b[0] != 0x16 {
        return Sniff::Done(None);
    }
    if b.len() < 5 {
        return Sniff::NeedMore;
    }
    if b[1] != 0x03 {
        return Sniff::Done(None);
    }
    let rec_len = usize::from(u16::from_be_bytes([b[3], b[4]]));
    if b.len() < 5 + rec_len.min(16 * 1024) {
        return Sniff::NeedMore;
    }
    // A record longer than the peek (beyond TLS's 16 KiB) is read as far as it was peeked;
    // indexing past it would let any client panic the listener task.
    let rec = &b[5..(5 + rec_len).min(b.len())];
    Sniff::Done(parse_hello(rec).or(Some(ClientHello::default())))
}

fn parse_hello(rec: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(rec);
    if r.u8()? != 1 {
        return None;
    }
    let len = r.u24()?;
    let mut h = Reader(r.take(len)?);
    h.take(2 + 32)?;
    let sid = usize::from(h.u8()?);
    h.take(sid)?;
    let cs = usize::from(h.u16()?);
    h.take(cs)?;
    let cm = usize::from(h.u8()?);
    h.take(cm)?;
    let mut out = ClientHello::default();
    if h.0.is_empty() {
        return Some(out);
    }
    let ext_len = usize::from(h.u16()?);
    let mut ext = Reader(h.take(ext_len)?);
    while !ext.0.is_empty() {
        let typ = ext.u16()?;
        let len = usize::from(ext.u16()?);
        let mut data = Reader(ext.take(len)?);
        match typ {
            0 => {
                let _list = data.u16()?;
                while !data.0.is_empty() {
                    let kind = data.u8()?;
                    let n = usize::from(data.u16()?);
                    let name = data.take(n)?;
                    if kind == 0 {
                        out.sni = Some(String::from_utf8_lossy(name).to_ascii_lowercase());
                    }
                }
            }
            16 => {
                let _list = data.u16()?;
                while !data.0.is_empty() {
                    let n = usize::from(data.u8()?);
                    out.alpn.push(String::from_utf8_lossy(data.take(n)?).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some((usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
}

/// The longest request line the HTTP inspector waits for.
const MAX_REQUEST_LINE: usize = 8 * 1024;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Detects HTTP: `Done(Some("h2c"))`, `Done(Some("http/1.1"))`/`"http/1.0"`, or `Done(None)`.
pub fn http(b: &[u8]) -> Sniff<Option<&'static str>> {
    if b.is_empty() {
        return Sniff::NeedMore;
    }
    let n = b.len().min(H2_PREFACE.len());
    if b[..n] == H2_PREFACE[..n] {
        return if b.len() >= H2_PREFACE.len() { Sniff::Done(Some("h2c")) } else { Sniff::NeedMore };
    }
    // The request line: METHOD SP target SP HTTP/1.x CRLF, with a token method.
    // Only the first 8 KiB may hold the line's end, so the answer does not depend on how
    // many bytes the first read happened to bring.
    let window = &b[..b.len().min(MAX_REQUEST_LINE)];
    let line_end = window.windows(2).position(|w| w == b"\r\n");
    let line = match line_end {
        Some(i) => &b[..i],
        None if b.len() > MAX_REQUEST_LINE => return Sniff::Done(None),
        None => {
            // Stop early once the bytes cannot be a method token.
            let method_end = b.iter().position(|c| *c == b' ').unwrap_or(b.len());
            if !b[..method_end].iter().all(|c| c.is_ascii_uppercase() || *c == b'-' || *c == b'_') {
                return Sniff::Done(None);
            }
            return Sniff::NeedMore;
        }
    };
    let mut parts = line.split(|c| *c == b' ');
    let method = parts.next().unwrap_or_default();
    let _target = parts.next();
    let version = parts.next().unwrap_or_default();
    if method.is_empty() || !method.iter().all(|c| c.is_ascii_uppercase() || *c == b'-' || *c == b'_') {
        return Sniff::Done(None);
    }
    match version {
        b"HTTP/1.1" => Sniff::Done(Some("http/1.1")),
        b"HTTP/1.0" => Sniff::Done(Some("http/1.0")),
        _ => Sniff::Done(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_detection() {
        assert_eq!(http(b"GET / HTTP/1.1\r\nHost: a\r\n"), Sniff::Done(Some("http/1.1")));
        assert_eq!(http(b"GET / HT"), Sniff::NeedMore);
        assert_eq!(http(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Sniff::Done(Some("h2c")));
        assert_eq!(http(b"PRI * HT"), Sniff::NeedMore);
        assert_eq!(http(b"\x16\x03\x01"), Sniff::Done(None));
        assert_eq!(http(b"hello world\r\n"), Sniff::Done(None));
    }

    /// Found by fuzzing: the answer used to depend on how much of the line the peek held.
    #[test]
    fn a_request_line_past_8k_is_not_http_however_it_arrives() {
        let mut req = b"GET /".to_vec();
        req.resize(MAX_REQUEST_LINE + 10, b'a');
        req.extend_from_slice(b" HTTP/1.1\r\n");
        assert_eq!(http(&req), Sniff::Done(None));
        assert_eq!(http(&req[..MAX_REQUEST_LINE + 1]), Sniff::Done(None));
    }

    #[test]
    fn not_tls() {
        assert_eq!(client_hello(b"GET /"), Sniff::Done(None));
        assert_eq!(client_hello(b"\x16\x03"), Sniff::NeedMore);
    }

    /// Found by fuzzing: a record header claiming 65535 bytes, with a full 16 KiB peek behind it.
    #[test]
    fn a_record_longer_than_the_peek_does_not_panic() {
        let mut b = vec![0x16, 0x03, 0x01, 0xff, 0xff];
        b.resize(5 + 16 * 1024, 0);
        assert!(matches!(client_hello(&b), Sniff::Done(_)));
    }
}
