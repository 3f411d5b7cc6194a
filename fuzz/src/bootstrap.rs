//! `weft proxy -c FILE`: a bootstrap read as YAML and as JSON (Envoy picks by the file name),
//! strictly and with `--allow-unknown-static-fields`, then validated into the proxy's `Config`.

use weft_proxy::config::{Config, NodeOverrides};
use weft_xds::load::{self, LoadError, SourceFormat};
use weft_xds::Bootstrap;

const SOURCE: &str = "fuzz.yaml";

/// Errors about the text as a whole, which have no place in it to name.
const WHOLE_TEXT: &[&str] = &["the configuration is empty", "deserializing from YAML containing more than one document is not supported"];

pub fn bootstrap(data: &[u8]) {
    // `weft proxy` reads the file as a string: bytes that are not UTF-8 never reach a parser.
    let Ok(text) = std::str::from_utf8(data) else { return };
    for format in [SourceFormat::Yaml, SourceFormat::Json] {
        match load::load_bootstrap(text, format, SOURCE) {
            Ok(b) => validate(text, format, b),
            Err(e) => check_load_error(&e, text),
        }
    }
    match load::load_lenient::<Bootstrap>(text, SourceFormat::Yaml, SOURCE) {
        Ok((_, ignored)) => {
            for e in &ignored {
                assert!(e.is_unknown_field(), "--allow-unknown-static-fields ignored a field that is not unknown: {e}");
                check_load_error(e, text);
            }
        }
        Err(e) => check_load_error(&e, text),
    }
}

/// What `weft proxy` does with a bootstrap that parsed: the JSON dump for `/config_dump`, then
/// validation, and for a validation error the line its field path points at.
fn validate(text: &str, format: SourceFormat, b: Bootstrap) {
    let Ok(dump) = load::to_value(text, format, SOURCE) else { return };
    if crate::names_a_device(&dump) {
        return;
    }
    if let Err(e) = Config::from_bootstrap(b, &NodeOverrides::default(), dump) {
        let _ = e.to_string();
        if let Some((line, column)) = load::locate(text, format, &e.path) {
            assert!(line >= 1 && line <= max_line(text) && column >= 1, "{e} located at {line}:{column}, outside the text");
        }
    }
}

/// An error names where the problem is: a line, or a field path (a value read after parsing
/// has no line), unless it is about the whole text.
fn check_load_error(e: &LoadError, text: &str) {
    let shown = e.to_string();
    assert!(shown.starts_with(SOURCE), "an error names its source: {shown}");
    assert!(
        e.line.is_some() || !e.field_path.is_empty() || WHOLE_TEXT.contains(&e.message.as_str()),
        "an error names neither a line nor a field: {shown}"
    );
    if let Some(line) = e.line {
        assert!(line >= 1 && line <= max_line(text), "{shown}: line {line} is past the text's end (line {})", max_line(text));
    }
}

/// The last line a parser may name in `text`: every YAML line break (LF, CRLF, a lone CR,
/// NEL, LS, PS) starts a line, and libyaml puts the end of a text that does not end with a
/// break on the line after it.
pub(crate) fn max_line(text: &str) -> usize {
    let mut n = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => n += 1,
            _ => {}
        }
    }
    let ends_with_break = text.ends_with(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']);
    if ends_with_break || text.is_empty() {
        n
    } else {
        n + 1
    }
}
