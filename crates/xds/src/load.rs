//! Reading a bootstrap from YAML or JSON text, with errors that name the line and field path.

use std::fmt;

use serde::de::DeserializeOwned;

use crate::Bootstrap;

/// The syntax of a configuration text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    Yaml,
    Json,
}

impl SourceFormat {
    /// Envoy's rule: `.json` is JSON, anything else is YAML (a superset of JSON).
    pub fn from_path(path: &str) -> Self {
        if path.ends_with(".json") {
            SourceFormat::Json
        } else {
            SourceFormat::Yaml
        }
    }
}

/// Why a configuration text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// The source the text came from (a file path, or `--config-yaml`).
    pub source_name: String,
    /// 1-based line, when the parser knows it.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Field path in Envoy's notation: `static_resources.listeners[0].name`.
    pub field_path: String,
    pub message: String,
}

impl LoadError {
    /// True when the error is a field that is not one of Envoy's (a typo, or a field of
    /// another version), as opposed to a known field weft refuses or a bad value.
    pub fn is_unknown_field(&self) -> bool {
        self.message.starts_with("unknown field ")
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source_name)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        f.write_str(": ")?;
        if !self.field_path.is_empty() {
            write!(f, "{}: ", self.field_path)?;
        }
        f.write_str(&self.message)
    }
}

/// Parses a bootstrap. `source_name` only labels errors.
pub fn load_bootstrap(text: &str, format: SourceFormat, source_name: &str) -> Result<Bootstrap, LoadError> {
    load_typed(text, format, source_name)
}

/// Parses any wire type with the same error reporting as [`load_bootstrap`].
pub fn load_typed<T: DeserializeOwned>(text: &str, format: SourceFormat, source_name: &str) -> Result<T, LoadError> {
    match format {
        SourceFormat::Yaml => {
            if text.trim().is_empty() {
                return Err(LoadError {
                    source_name: source_name.into(),
                    line: None,
                    column: None,
                    field_path: String::new(),
                    message: "the configuration is empty".into(),
                });
            }
            let de = serde_yaml::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let loc = inner.location();
                let raw = inner.to_string();
                let mut message = match raw.rsplit_once(" at line ") {
                    Some((m, _)) => m.to_string(),
                    None => raw,
                };
                // serde_yaml prefixes its own copy of the path; we report ours.
                if let Some((p, m)) = message.split_once(": ") {
                    if !p.contains(char::is_whitespace) && !path.is_empty() && path != "." {
                        message = m.to_string();
                    }
                }
                if let Some(l) = loc.as_ref().filter(|l| is_tab_at(text, l.line(), l.column())) {
                    // A syntax error: the field being read when it struck says nothing.
                    let message = format!("line {} is indented with a tab; YAML indentation must use spaces", l.line());
                    return shape_error(source_name, Some(l.line()), Some(l.column()), "", message);
                }
                shape_error(source_name, loc.as_ref().map(|l| l.line()), loc.as_ref().map(|l| l.column()), &path, message)
            })
        }
        SourceFormat::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let res: Result<T, _> = serde_path_to_error::deserialize(&mut de);
            let v = res.map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let (line, col) = (inner.line(), inner.column());
                let raw = inner.to_string();
                let message = match raw.rsplit_once(" at line ") {
                    Some((m, _)) => m.to_string(),
                    None => raw,
                };
                shape_error(source_name, Some(line), Some(col), &path, message)
            })?;
            de.end().map_err(|e| {
                shape_error(source_name, Some(e.line()), Some(e.column()), "", "trailing characters after the document".into())
            })?;
            Ok(v)
        }
    }
}

/// Parses a JSON value that has already been assembled (e.g. merged from several sources).
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value, source_name: &str) -> Result<T, LoadError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        shape_error(source_name, None, None, &path, message)
    })
}

/// A field `--allow-unknown-static-fields` let through: its path, and the error it would have
/// been without the flag (with file and line when the text had them).
pub type IgnoredField = LoadError;

/// Envoy's `--allow-unknown-static-fields`: like [`load_typed`], but a field that is not one
/// of Envoy's (an unknown field) is dropped and returned, so the caller can warn about each.
/// Fields weft knows but does not implement are still refused, as is every other error.
pub fn load_lenient<T: DeserializeOwned>(text: &str, format: SourceFormat, source_name: &str) -> Result<(T, Vec<IgnoredField>), LoadError> {
    let first = match load_typed::<T>(text, format, source_name) {
        Ok(v) => return Ok((v, Vec::new())),
        Err(e) if !e.is_unknown_field() => return Err(e),
        Err(e) => e,
    };
    let value = to_value(text, format, source_name)?;
    // The strict error has the line; the value's errors only have the path.
    from_value_lenient(value, source_name, |path| (path == first.field_path).then(|| first.clone()))
}

/// [`load_lenient`] for an assembled value. `located` may supply, for a field path, the same
/// error with its line.
pub fn from_value_lenient<T: DeserializeOwned>(
    mut value: serde_json::Value,
    source_name: &str,
    located: impl Fn(&str) -> Option<LoadError>,
) -> Result<(T, Vec<IgnoredField>), LoadError> {
    let mut ignored = Vec::new();
    // Each round removes one unknown field; a bootstrap has far fewer fields than this.
    for _ in 0..10_000 {
        let res: Result<T, _> = serde_path_to_error::deserialize(value.clone());
        let e = match res {
            Ok(v) => return Ok((v, ignored)),
            Err(e) => e,
        };
        let mut segments: Vec<Seg> = e
            .path()
            .iter()
            .map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Seg::Index(*index),
                serde_path_to_error::Segment::Map { key } => Seg::Key(key.clone()),
                _ => Seg::Other,
            })
            .collect();
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let shaped = shape_error(source_name, None, None, &path, message.clone());
        let field = unknown_field_name(&message);
        let Some(field) = field.filter(|_| !segments.contains(&Seg::Other)) else {
            return Err(shaped);
        };
        if segments.last() != Some(&Seg::Key(field.to_string())) {
            segments.push(Seg::Key(field.to_string()));
        }
        if !remove_at(&mut value, &segments) {
            return Err(shaped);
        }
        ignored.push(located(&shaped.field_path).filter(LoadError::is_unknown_field).unwrap_or(shaped));
    }
    Err(LoadError {
        source_name: source_name.into(),
        line: None,
        column: None,
        field_path: String::new(),
        message: "too many unknown fields".into(),
    })
}

/// The text as a JSON value (YAML is read as YAML), with syntax errors shaped like
/// [`load_typed`]'s.
pub fn to_value(text: &str, format: SourceFormat, source_name: &str) -> Result<serde_json::Value, LoadError> {
    load_typed::<serde_json::Value>(text, format, source_name)
}

/// The line and column of the value at `field_path` (Envoy notation:
/// `static_resources.listeners[0].name`) in a configuration text, for errors found after
/// parsing (an unknown cluster, a duplicate name). `None` when the path is not in the text.
pub fn locate(text: &str, format: SourceFormat, field_path: &str) -> Option<(usize, usize)> {
    use serde::de::DeserializeSeed as _;
    let seed = locate::PathSeed { rest: field_path };
    match format {
        SourceFormat::Yaml => {
            let e = seed.deserialize(serde_yaml::Deserializer::from_str(text)).err()?;
            let l = e.location().filter(|_| e.to_string().contains(locate::HERE))?;
            Some((l.line(), l.column()))
        }
        SourceFormat::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let e = seed.deserialize(&mut de).err()?;
            e.to_string().contains(locate::HERE).then(|| (e.line(), e.column()))
        }
    }
}

/// [`locate`]: walks the text along the path and fails on purpose at the value it names; the
/// parser puts its position on the error.
mod locate {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

    pub const HERE: &str = "__weft_locate_here__";

    pub struct PathSeed<'a> {
        pub rest: &'a str,
    }

    impl<'de> DeserializeSeed<'de> for PathSeed<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            if self.rest.is_empty() {
                d.deserialize_any(Here)
            } else {
                d.deserialize_any(Walk { rest: self.rest })
            }
        }
    }

    struct Here;

    impl<'de> Visitor<'de> for Here {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any value")
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_none<E: de::Error>(self) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
            Err(de::Error::custom(HERE))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
            Err(de::Error::custom(HERE))
        }
    }

    struct Walk<'a> {
        rest: &'a str,
    }

    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map or a list")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            while let Some(k) = m.next_key::<String>()? {
                // Keys may hold dots (`envoy.extensions…`): match the key, then a separator.
                let next = self.rest.strip_prefix(k.as_str()).filter(|r| r.is_empty() || r.starts_with('.') || r.starts_with('['));
                match next {
                    Some(r) => return m.next_value_seed(PathSeed { rest: r.strip_prefix('.').unwrap_or(r) }),
                    None => {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
            let Some((n, r)) = self.rest.strip_prefix('[').and_then(|i| i.split_once(']')) else { return Ok(()) };
            let Ok(n) = n.parse::<usize>() else { return Ok(()) };
            for _ in 0..n {
                if s.next_element::<IgnoredAny>()?.is_none() {
                    return Ok(());
                }
            }
            s.next_element_seed(PathSeed { rest: r.strip_prefix('.').unwrap_or(r) }).map(|_| ())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Index(usize),
    Key(String),
    Other,
}

/// Removes the member `segments` leads to; false when the path does not lead to one.
fn remove_at(v: &mut serde_json::Value, segments: &[Seg]) -> bool {
    let Some((last, parents)) = segments.split_last() else { return false };
    let mut cur = v;
    for s in parents {
        cur = match (s, cur) {
            (Seg::Index(i), serde_json::Value::Array(a)) => match a.get_mut(*i) {
                Some(x) => x,
                None => return false,
            },
            (Seg::Key(k), serde_json::Value::Object(o)) => match o.get_mut(k) {
                Some(x) => x,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        (Seg::Key(k), serde_json::Value::Object(o)) => o.remove(k).is_some(),
        _ => false,
    }
}

/// The field an "unknown field" message from serde names.
fn unknown_field_name(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `").and_then(|r| r.split('`').next())
}

/// True when the character at 1-based `line`, `column` of `text` is a tab.
fn is_tab_at(text: &str, line: usize, column: usize) -> bool {
    text.lines().nth(line.saturating_sub(1)).and_then(|l| l.chars().nth(column.saturating_sub(1))) == Some('\t')
}

/// Levenshtein distance between two field names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known name nearest to `field`, when it is near enough to be a typo of it.
fn nearest<'a>(field: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (field.chars().count() / 3).clamp(1, 3);
    known.iter().map(|k| (edit_distance(field, k), *k)).filter(|(d, _)| *d <= limit).min_by_key(|(d, _)| *d).map(|(_, k)| k)
}

/// Turns serde's wording into weft's: the unknown field's full path, and the known field it
/// most likely misspells.
fn shape_error(source: &str, line: Option<usize>, column: Option<usize>, path: &str, message: String) -> LoadError {
    let path = if path == "." { "" } else { path };
    let (field_path, message) = if let Some(rest) = message.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        // path_to_error already records the unknown key on some deserializers.
        let full = if path == field || path.ends_with(&format!(".{field}")) {
            path.to_string()
        } else if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        // serde lists the known names as "`a`, `b` or `c`" (or "one of `a`, …", "there are no fields").
        let known: Vec<&str> = rest.split_once(", expected ").map(|(_, e)| e.split('`').skip(1).step_by(2).collect()).unwrap_or_default();
        let msg = match nearest(field, &known) {
            Some(k) => format!("unknown field {field:?}; did you mean {k:?}?"),
            None if known.is_empty() => format!("unknown field {field:?} (no fields are allowed here)"),
            None => format!("unknown field {field:?} (fields here: {})", known.join(", ")),
        };
        (full, msg)
    } else {
        (path.to_string(), message)
    };
    LoadError { source_name: source.into(), line, column, field_path, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> LoadError {
        match load_bootstrap(yaml, SourceFormat::Yaml, "b.yaml") {
            Ok(_) => panic!("expected an error for:\n{yaml}"),
            Err(e) => e,
        }
    }

    #[test]
    fn unknown_field_inside_typed_config_is_refused_with_path_and_line() {
        let e = err(r#"
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: x
          foo: 1
"#);
        assert_eq!(e.field_path, "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.foo");
        assert!(e.message.starts_with("unknown field \"foo\" (fields here: "), "{e}");
        assert!(e.message.contains("stat_prefix"), "{e}");
        assert_eq!(e.line, Some(12), "{e}");
    }

    #[test]
    fn a_misspelt_field_is_unknown_and_the_nearest_name_suggested() {
        let e = err(r#"
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefx: x
"#);
        assert_eq!(
            e.to_string(),
            "b.yaml:11:11: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.stat_prefx: \
             unknown field \"stat_prefx\"; did you mean \"stat_prefix\"?"
        );
        let e = err("statc_resources: {}\n");
        assert_eq!(e.to_string(), "b.yaml:1:1: statc_resources: unknown field \"statc_resources\"; did you mean \"static_resources\"?");
        assert!(e.is_unknown_field());
    }

    #[test]
    fn locate_finds_the_line_of_a_field_path() {
        let yaml = "static_resources:\n  clusters:\n  - name: a\n  - name: b\n    type: STATIC\n    typed_extension_protocol_options:\n      envoy.x.v3.Y: {k: 1}\n";
        assert_eq!(locate(yaml, SourceFormat::Yaml, "static_resources.clusters[1].type"), Some((5, 11)));
        assert_eq!(
            locate(yaml, SourceFormat::Yaml, "static_resources.clusters[1].typed_extension_protocol_options.envoy.x.v3.Y.k"),
            Some((7, 25))
        );
        assert_eq!(locate(yaml, SourceFormat::Yaml, "static_resources.clusters[2].name"), None);
        let json = "{\"static_resources\": {\"clusters\": [{\"name\": \"a\"},\n {\"name\": \"b\"}]}}";
        assert_eq!(locate(json, SourceFormat::Json, "static_resources.clusters[1].name").map(|l| l.0), Some(2));
    }

    #[test]
    fn a_tab_in_the_indentation_is_named() {
        let e = err("static_resources:\n\tclusters: []\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert_eq!(e.to_string(), "b.yaml:2:1: line 2 is indented with a tab; YAML indentation must use spaces");
        let e = err("static_resources:\n  clusters: []\n \tlisteners: []\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert_eq!(e.to_string(), "b.yaml:3:2: line 3 is indented with a tab; YAML indentation must use spaces");
    }

    #[test]
    fn lenient_loading_drops_unknown_fields_only() {
        let text = "bogus: 1\nstatic_resources:\n  clusters:\n  - name: c\n    connect_timeout: 1s\n    foo_bar: 2\n";
        let (b, ignored): (Bootstrap, _) = load_lenient(text, SourceFormat::Yaml, "b.yaml").expect("loads");
        assert_eq!(b.static_resources.clusters.len(), 1);
        let paths: Vec<&str> = ignored.iter().map(|e| e.field_path.as_str()).collect();
        assert_eq!(paths, ["bogus", "static_resources.clusters[0].foo_bar"]);
        assert_eq!(ignored[0].line, Some(1), "the first keeps its line: {}", ignored[0]);
        // A known field weft does not implement is still refused.
        let e = load_lenient::<Bootstrap>("bogus: 1\ndynamic_resources: {cds_resources_locator: x}\n", SourceFormat::Yaml, "b.yaml")
            .expect_err("refused");
        assert_eq!(e.field_path, "dynamic_resources.cds_resources_locator");
    }

    #[test]
    fn known_but_unimplemented_field_is_refused() {
        let e = err("dynamic_resources: {cds_resources_locator: xdstp://x}\n");
        assert_eq!(e.field_path, "dynamic_resources.cds_resources_locator");
        assert_eq!(e.message, "not supported");
    }

    #[test]
    fn syntax_error_names_the_line() {
        let e = err("static_resources:\n  listeners: [\n  - a\n");
        assert!(e.line.is_some(), "{e}");
    }

    #[test]
    fn bad_duration_names_the_field() {
        let e = err(r#"
static_resources:
  clusters:
  - name: c
    connect_timeout: 5
"#);
        assert_eq!(e.field_path, "static_resources.clusters[0].connect_timeout");
    }

    #[test]
    fn unknown_type_url_is_named() {
        let e = err(r#"
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: x
        typed_config: {"@type": "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy"}
"#);
        assert!(e.message.contains("RedisProxy"), "{e}");
        assert!(e.field_path.ends_with("filters[0].typed_config"), "{e}");
    }

    #[test]
    fn json_is_accepted() {
        let b =
            load_bootstrap(r#"{"static_resources": {"clusters": [{"name": "c", "connect_timeout": "1s"}]}}"#, SourceFormat::Json, "b.json");
        assert!(b.is_ok(), "{:?}", b.err());
    }
}
