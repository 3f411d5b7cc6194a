//! The connection manager's `normalize_path` and `merge_slashes` on request paths hyper
//! accepts. What routing matches must be what the upstream would make of it again.

use http::uri::PathAndQuery;
use weft_proxy::fuzzing::normalize_path;

pub fn path_norm(data: &[u8]) {
    // Only what parses as a request target's path and query reaches the normaliser.
    let Ok(pq) = PathAndQuery::try_from(data) else { return };
    let path = pq.path();
    for (dots, merge) in [(true, false), (false, true), (true, true)] {
        let once = normalize_path(path, dots, merge);
        // Normalising resolves dots, merges slashes and decodes unreserved characters; it
        // never makes up a character the path did not have.
        let decodable = |c: char| c.is_ascii_alphanumeric() || "/-._~".contains(c);
        let made_up = once.chars().find(|c| !path.contains(*c) && !decodable(*c));
        assert!(made_up.is_none(), "{path:?} normalises to {once:?}, with {made_up:?} from nowhere");
        let twice = normalize_path(&once, dots, merge);
        assert_eq!(twice, once, "{path:?} normalised (dots {dots}, merge {merge}) is not normalised: {once:?} becomes {twice:?}");
        // The result goes back into the request; one that does not parse would leave the
        // request as it came, routed un-normalised.
        let rebuilt = match pq.query() {
            Some(q) => format!("{once}?{q}"),
            None => once.to_string(),
        };
        assert!(rebuilt.parse::<PathAndQuery>().is_ok(), "{path:?} normalises to {once:?}, which is not a path");
        if !path.starts_with('/') {
            assert_eq!(once, path, "a target that is not a path ({path:?}) is left as it is");
            continue;
        }
        assert!(once.starts_with('/'), "{path:?} normalises to {once:?}, not absolute");
        if dots {
            assert!(!once.split('/').any(|s| s == "." || s == ".."), "{path:?} normalises to {once:?}, which has a dot segment");
        }
        if merge {
            assert!(!once.contains("//") || once == "//", "{path:?} with merge_slashes is {once:?}");
        }
    }
}
