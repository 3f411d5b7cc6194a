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

/// Turns serde's wording into Envoy-style "path: not supported" where it applies.
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
        let expected = rest.split_once(", expected ").map(|(_, e)| e.replace('`', ""));
        let msg = match expected {
            Some(e) => format!("not supported (weft knows: {e})"),
            None => "not supported".to_string(),
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
        assert!(e.message.starts_with("not supported"), "{e}");
        assert_eq!(e.line, Some(12), "{e}");
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
