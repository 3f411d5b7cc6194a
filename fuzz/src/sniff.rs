//! `tls_inspector` (ClientHello SNI and ALPN) and `http_inspector` (request line or HTTP/2
//! preface) on the first bytes of a connection. The listener peeks again as more bytes
//! arrive, so a decision must not depend on how the bytes were split: once a prefix decides,
//! every longer input decides the same.

use weft_proxy::fuzzing::{client_hello, sniff_http, Sniff};

/// What `listener::inspect` peeks at most.
const PEEK_BYTES: usize = 16 * 1024 + 5;

pub fn sniff(data: &[u8]) {
    let data = data.get(..PEEK_BYTES).unwrap_or(data);
    let hello = client_hello(data);
    let http = sniff_http(data);
    if let Sniff::Done(Some(h)) = &hello {
        if let Some(sni) = &h.sni {
            assert_eq!(sni, &sni.to_ascii_lowercase(), "SNI is matched lower-case");
        }
    }
    // The prefixes a listener may have peeked before these bytes.
    let len = data.len();
    for cut in [1, 5, 9, len / 3, len / 2, len.saturating_sub(1)] {
        let Some(prefix) = data.get(..cut).filter(|p| !p.is_empty() && p.len() < len) else { continue };
        if let Sniff::Done(d) = client_hello(prefix) {
            assert_eq!(hello, Sniff::Done(d), "the ClientHello decision on {cut} bytes changed with {len}");
        }
        if let Sniff::Done(d) = sniff_http(prefix) {
            assert_eq!(http, Sniff::Done(d), "the HTTP decision on {cut} bytes changed with {len}");
        }
    }
    // The client goes on sending, up to a full peek buffer.
    let mut more = data.to_vec();
    more.resize(PEEK_BYTES, b'a');
    let (hello_more, http_more) = (client_hello(&more), sniff_http(&more));
    if let Sniff::Done(d) = hello {
        assert_eq!(hello_more, Sniff::Done(d), "the ClientHello decision on {len} bytes changed with a full peek buffer");
    }
    if let Sniff::Done(d) = http {
        assert_eq!(http_more, Sniff::Done(d), "the HTTP decision on {len} bytes changed with a full peek buffer");
    }
}
