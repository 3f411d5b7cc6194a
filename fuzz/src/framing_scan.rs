//! The HTTP/1 framing scanner that follows the bytes hyper reads (`http::framing_scan`): it
//! must find the same thing however the reads split the stream, and can only report a
//! framing problem when there is a `Content-Length` to make one.

use weft_proxy::http::framing_scan::FramingScanner;

pub fn framing_scan(data: &[u8]) {
    let whole = scan(&[data]);
    let bytewise = {
        let mut s = FramingScanner::new();
        data.iter().find_map(|b| s.feed(std::slice::from_ref(b)))
    };
    assert_eq!(bytewise, whole, "fed a byte at a time, the scanner finds another thing than fed at once");
    for cut in [data.len() / 2, data.len() / 3, data.len().saturating_sub(2)] {
        let (a, b) = data.split_at(cut.min(data.len()));
        assert_eq!(scan(&[a, b]), whole, "split at {cut}, the scanner finds another thing than fed at once");
    }
    if let Some((ordinal, problem)) = whole {
        assert!(ordinal >= 1, "a problem on request {ordinal}");
        let lower = data.to_ascii_lowercase();
        assert!(lower.windows(14).any(|w| w == b"content-length"), "{problem:?} without a Content-Length");
    }
}

fn scan(reads: &[&[u8]]) -> Option<(u64, weft_proxy::http::framing_scan::Problem)> {
    let mut s = FramingScanner::new();
    reads.iter().find_map(|r| s.feed(r))
}
