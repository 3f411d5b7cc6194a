//! The peer identity a request arrived with, read from `x-forwarded-client-cert`.
//!
//! The header is a comma-separated list of elements, one per mTLS hop, each a `;`-separated
//! list of `Key=Value` pairs (`By=…;Hash=…;Subject="…";URI=spiffe://…`); values may be quoted
//! and quotes escaped with a backslash. The last element is the hop nearest to us: the sidecar
//! in front of this service describing the client certificate it verified.

use http::HeaderMap;

pub(crate) static XFCC: http::HeaderName = http::HeaderName::from_static("x-forwarded-client-cert");

/// The first `URI=` value of the last element of `x-forwarded-client-cert`, if any.
pub(crate) fn peer_uri(headers: &HeaderMap) -> Option<String> {
    let last_line = headers.get_all(&XFCC).iter().filter_map(|v| v.to_str().ok()).rfind(|v| !v.trim().is_empty())?;
    let element = split_unquoted(last_line, ',').into_iter().rfind(|e| !e.trim().is_empty())?;
    split_unquoted(element, ';').into_iter().find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim().eq_ignore_ascii_case("uri").then(|| unquote(value.trim())).filter(|v| !v.is_empty())
    })
}

/// Splits on `sep` where it is not inside double quotes.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            out
        }
        None => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(values: &[&str]) -> Option<String> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&XFCC, v.parse().unwrap());
        }
        peer_uri(&h)
    }

    #[test]
    fn reads_the_uri_of_the_nearest_hop() {
        let sa = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
        assert_eq!(peer(&[&format!("By=spiffe://cluster.local/ns/default/sa/bookinfo-details;Hash=ab12;URI={sa}")]).as_deref(), Some(sa));
        // Quoted subject with commas and semicolons, URI in quotes.
        let v = format!(r#"By=spiffe://a;Hash=1;Subject="CN=x,O=\"a;b\"";URI="{sa}";DNS=x.svc"#);
        assert_eq!(peer(&[&v]).as_deref(), Some(sa));
        // APPEND_FORWARD: the last element is ours.
        assert_eq!(peer(&["By=x;URI=spiffe://first,By=y;URI=spiffe://second"]).as_deref(), Some("spiffe://second"));
        assert_eq!(peer(&["By=x;URI=spiffe://first", "By=y;uri=spiffe://second"]).as_deref(), Some("spiffe://second"));
    }

    #[test]
    fn no_uri_is_no_peer() {
        assert_eq!(peer(&[]), None);
        assert_eq!(peer(&[""]), None);
        assert_eq!(peer(&["By=spiffe://x;Hash=ab"]), None);
        assert_eq!(peer(&["URI="]), None);
    }
}
