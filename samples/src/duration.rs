//! Go duration strings ("3s", "500ms", "1m30s"), the format Istio and its samples use for
//! timeouts.

use std::time::Duration;

/// Parses a non-negative Go duration: one or more decimal numbers (with an optional fraction),
/// each followed by a unit: ns, us (or µs), ms, s, m, h. A bare "0" is zero.
pub(crate) fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad =
        |why: &str| format!("invalid duration {s:?}: {why}; expected a number with a unit (ns, us, ms, s, m, h), e.g. \"3s\" or \"500ms\"");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(bad("must not be negative"));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
        if whole.is_empty() && frac.is_empty() {
            return Err(bad("missing number"));
        }
        if frac.contains('.') {
            return Err(bad("more than one decimal point"));
        }
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(bad("missing unit")),
            _ => return Err(bad(&format!("unknown unit {unit:?}"))),
        };
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad("number too large"))? };
        let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(|| bad("too large"))?;
        // The fraction in the unit's nanoseconds, truncated as Go does; digits past the unit's
        // precision cannot change the result, so they are not parsed.
        let mut scale = unit_nanos;
        for d in frac.bytes().map(|b| u128::from(b - b'0')) {
            scale /= 10;
            if scale == 0 {
                break;
            }
            nanos += d * scale;
        }
        total = total.checked_add(nanos).ok_or_else(|| bad("too large"))?;
        rest = next;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad("too large"))?;
    let sub = u32::try_from(total % 1_000_000_000).map_err(|_| bad("too large"))?;
    Ok(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ok = |s: &str| parse_go_duration(s).unwrap();
        assert_eq!(ok("3s"), Duration::from_secs(3));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok(".25s"), Duration::from_millis(250));
        assert_eq!(ok("10us"), Duration::from_micros(10));
        assert_eq!(ok("10µs"), Duration::from_micros(10));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("1.0000000001s"), Duration::from_secs(1));
    }

    #[test]
    fn rejects_what_go_rejects() {
        for s in ["", "3", "s", "3x", "-1s", "1..5s", "1.2.3s", ".s", "99999999999999999999999h"] {
            let e = parse_go_duration(s).unwrap_err();
            assert!(e.contains("invalid duration"), "{s:?}: {e}");
        }
    }
}
