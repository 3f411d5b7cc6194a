//! Entry points for the fuzz targets (`fuzz/`, the `weft-fuzz` crate) into parsers that are
//! private to this crate: the connection sniffers of `tls_inspector`/`http_inspector` and the
//! connection manager's path normalisation, and the DNS proxy's query handling. Nothing else may use them; they are not API and
//! can change with the code they reach.

use std::borrow::Cow;

pub use crate::sniff::{ClientHello, Sniff};

/// `tls_inspector`'s ClientHello parser, on the bytes peeked from a new connection.
#[doc(hidden)]
pub fn client_hello(bytes: &[u8]) -> Sniff<Option<ClientHello>> {
    crate::sniff::client_hello(bytes)
}

/// `http_inspector`'s HTTP/1.x request line and HTTP/2 preface detection.
#[doc(hidden)]
pub fn sniff_http(bytes: &[u8]) -> Sniff<Option<&'static str>> {
    crate::sniff::http(bytes)
}

/// The connection manager's `normalize_path` (`dots`) and `merge_slashes` (`merge`) on a
/// request path without its query.
#[doc(hidden)]
pub fn normalize_path(path: &str, dots: bool, merge: bool) -> Cow<'_, str> {
    crate::http::path_norm::normalize(path, dots, merge)
}

/// The DNS proxy's reply to one message from a fixed name table (`None`: not answered, or
/// forwarded upstream); `tcp` lifts the UDP size limit.
#[doc(hidden)]
pub fn dns_reply(msg: &[u8], tcp: bool) -> Option<Vec<u8>> {
    crate::dns::fuzz_reply(msg, tcp)
}
