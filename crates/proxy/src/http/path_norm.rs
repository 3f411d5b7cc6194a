//! `normalize_path` and `merge_slashes`: the request path as the connection manager sees it
//! before routing, and as the upstream gets it. Normalization follows what Envoy gets from
//! Chromium's URL canonicalizer for the cases a mesh sees: `\` is a `/`, percent-encoded
//! unreserved characters are decoded (so `%2e` is a dot), other escapes are kept as they are,
//! and `.`/`..` segments are resolved (RFC 3986, section 5.2.4), never above the root.

use std::borrow::Cow;

/// The path (without its query) after the manager's normalizations. Characters Chromium would
/// percent-encode (`"`, `{`, `}` …) are left as sent.
pub fn normalize<'a>(path: &'a str, dots: bool, merge: bool) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(path);
    if !path.starts_with('/') {
        // CONNECT has no path and `*` is not one; Envoy leaves both to what follows (a path
        // that is not absolute is answered 404).
        return out;
    }
    if dots && (path.contains(['\\', '%']) || path.contains("/.")) {
        out = Cow::Owned(remove_dot_segments(&decode_unreserved(path)));
    }
    if merge && out.contains("//") {
        // Envoy's way: the leading `/`, the non-empty segments joined, a trailing `/` if there
        // was one (so `//` stays `//`).
        let segments: Vec<&str> = out.split('/').filter(|s| !s.is_empty()).collect();
        let trailing = if out.ends_with('/') { "/" } else { "" };
        out = Cow::Owned(format!("/{}{trailing}", segments.join("/")));
    }
    out
}

/// The value of one hex digit.
pub(crate) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `\` → `/`; `%XX` of an unreserved character → the character; other escapes kept.
fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => out.push('/'),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    let c = h * 16 + l;
                    // A decoded hex digit after a stray `%` (or `%` and one hex digit) would
                    // make a new escape — `%4%41` becoming `%4A` — that the upstream decodes
                    // again into what routing never saw; such an escape is kept.
                    let t = out.as_bytes();
                    let joins = c.is_ascii_hexdigit()
                        && (t.last() == Some(&b'%') || (t.len() >= 2 && t[t.len() - 2] == b'%' && t[t.len() - 1].is_ascii_hexdigit()));
                    if !joins && (c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')) {
                        out.push(char::from(c));
                    } else {
                        out.push_str(&path[i..i + 3]);
                    }
                    i += 3;
                    continue;
                }
                _ => out.push('%'),
            },
            _ => {
                // Copied as a run up to the next `%` or `\\` (this byte may be a `%` too
                // close to the end to escape anything): both are ASCII, so the run
                // ends on a character boundary and raw UTF-8 (HTTP/2 lets it through)
                // keeps its bytes.
                let end = b[i + 1..].iter().position(|c| matches!(c, b'%' | b'\\')).map_or(b.len(), |n| i + 1 + n);
                out.push_str(&path[i..end]);
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// RFC 3986 5.2.4 on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut segs: Vec<&str> = Vec::new();
    let parts: Vec<&str> = path[1..].split('/').collect();
    let last = parts.len() - 1;
    let mut trailing_slash = false;
    for (i, seg) in parts.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                segs.pop();
                trailing_slash = i == last;
            }
            s => {
                segs.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    fn n(p: &str) -> String {
        normalize(p, true, false).into_owned()
    }

    #[test]
    fn dot_segments_resolve_and_never_climb_above_the_root() {
        assert_eq!(n("/a/./b"), "/a/b");
        assert_eq!(n("/a/../b"), "/b");
        assert_eq!(n("/../../a"), "/a");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/a/."), "/a/");
        assert_eq!(n("/a/%2e%2E/b"), "/b");
        assert_eq!(n("/a\\..\\b"), "/b");
        assert_eq!(n("/%41%2fb%zz"), "/A%2fb%zz");
        // Found by fuzzing: decoding must not complete a stray `%` into a new escape.
        assert_eq!(n("/%4%41%2f41%%zz"), "/%4%41%2f41%%zz");
        assert_eq!(n("/%%34%31"), "/%%341");
        assert_eq!(n(&n("/%2%65%2%65/admin")), n("/%2%65%2%65/admin"));
        assert_eq!(n("/plain/path"), "/plain/path");
        // Found by fuzzing: raw UTF-8, which HTTP/2 lets through, keeps its bytes.
        assert_eq!(n("/café/./x%4"), "/café/x%4");
        assert_eq!(n("/a%"), "/a%");
        assert_eq!(n("*"), "*");
        assert_eq!(n(""), "");
    }

    #[test]
    fn merging_collapses_runs_of_slashes() {
        assert_eq!(normalize("//a///b/", false, true), "/a/b/");
        assert_eq!(normalize("/a/..//b", true, true), "/b");
        assert_eq!(normalize("//", false, true), "//");
    }
}
