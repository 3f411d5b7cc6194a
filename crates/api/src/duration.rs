//! Durations as Istio's YAML writes them: Go duration strings (`10s`, `0.5s`, `1m30s`, `100ms`).

use std::time::Duration;

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};

/// A duration from a Go-style string. Istio's examples use `5m`, `0.5s` and `1h`, which
/// proto3's canonical `"<seconds>s"` form would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub Duration);

/// Parses `1h2m3.5s`, `100ms`, `250us`, `0`. Each part is rounded to the nanosecond, so
/// `1.001s` is exactly 1001ms (Istio checks some durations for millisecond precision).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: expected a number with a unit (ns, us, ms, s, m, h), e.g. \"10s\" or \"0.5s\"");
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() || t.starts_with('-') {
        return Err(bad());
    }
    let mut nanos = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        if num_end == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        nanos += (n * scale).round();
        rest = &rest[unit_end..];
    }
    // At most about 31,700 years: far beyond any timeout, well inside u64 seconds.
    if !nanos.is_finite() || nanos > 1e21 {
        return Err(bad());
    }
    let secs = (nanos / 1e9).floor();
    Ok(Duration::new(secs as u64, (nanos - secs * 1e9) as u32))
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_go_duration(&s).map(GoDuration).map_err(serde::de::Error::custom)
    }
}

/// Any string: what a valid duration is stays with [`parse_go_duration`], whose message says
/// what to write.
impl JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string"})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("1.001s"), Ok(Duration::from_millis(1001)), "rounded to the nanosecond, not truncated");
        assert_eq!(parse_go_duration("1h0.5ms"), Ok(Duration::from_secs(3600) + Duration::from_micros(500)));
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("5 s").is_err());
        assert!(parse_go_duration("-1s").is_err());
        assert!(parse_go_duration("s").is_err());
    }
}
