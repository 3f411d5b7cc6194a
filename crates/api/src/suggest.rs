//! "Did you mean …?": the known name nearest to a misspelt one.

/// The candidate closest to `key` by edit distance (ignoring case, `_` and `-`), when it is
/// close enough to be a typo.
pub fn nearest<'a>(key: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let fold = |s: &str| s.chars().filter(|c| *c != '_' && *c != '-').map(|c| c.to_ascii_lowercase()).collect::<Vec<_>>();
    let k = fold(key);
    let limit = match k.len() {
        0..=4 => 1,
        5..=10 => 2,
        _ => 3,
    };
    candidates.into_iter().map(|c| (edit_distance(&k, &fold(c)), c)).filter(|(d, _)| *d <= limit).min_by_key(|(d, _)| *d).map(|(_, c)| c)
}

fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let swap = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + swap).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::nearest;

    #[test]
    fn typos_find_their_field_and_strangers_find_none() {
        let known = ["loadBalancer", "connectionPool", "outlierDetection", "tls"];
        assert_eq!(nearest("loadBalancr", known), Some("loadBalancer"));
        assert_eq!(nearest("load_balancer", known), Some("loadBalancer"));
        assert_eq!(nearest("tsl", known), None, "two edits is too far for a short name");
        assert_eq!(nearest("retries", known), None);
    }
}
