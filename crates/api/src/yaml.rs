//! Splitting YAML text into documents, read as Kubernetes reads it where libyaml is stricter.
//!
//! Kubernetes and Istio parse with go-yaml, which takes a plain scalar with colons inside a flow
//! sequence (`addresses: [1.2.3.4, 2001:db8::]`) as a string; libyaml, under serde_yaml, calls
//! it a syntax error and the whole file would be lost. When parsing fails, such items are quoted
//! (on their own lines, so line numbers hold) and the text parsed again; if that parses, it is
//! what go-yaml would have read.

use serde::Deserialize;

/// Where and why the text stops being YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: Option<usize>,
    pub message: String,
}

/// Every document of `text`, up to the first syntax error (returned with the documents before
/// it).
pub fn documents(text: &str) -> (Vec<serde_yaml::Value>, Option<SyntaxError>) {
    let (docs, err) = parse(text);
    let Some(err) = err else { return (docs, None) };
    if let Some(quoted) = quote_colon_scalars_in_flow_sequences(text) {
        if let (again, None) = parse(&quoted) {
            return (again, None);
        }
    }
    (docs, Some(explain_tabs(text, err)))
}

fn parse(text: &str) -> (Vec<serde_yaml::Value>, Option<SyntaxError>) {
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(de) {
            Ok(v) => docs.push(v),
            Err(e) => {
                let line = e.location().map(|l| l.line());
                let msg = e.to_string();
                let message = msg.rsplit_once(" at line ").map(|(m, _)| m.to_string()).unwrap_or(msg);
                return (docs, Some(SyntaxError { line, message }));
            }
        }
    }
    (docs, None)
}

/// libyaml's words for a tab where indentation is expected say nothing about tabs.
fn explain_tabs(text: &str, err: SyntaxError) -> SyntaxError {
    let tab_at = |n: usize| text.lines().nth(n.saturating_sub(1)).is_some_and(|l| l.trim_start_matches(' ').starts_with('\t'));
    match err.line {
        Some(n) if tab_at(n) || tab_at(n + 1) => {
            SyntaxError { message: format!("{} (a tab indents this line: YAML allows only spaces for indentation)", err.message), ..err }
        }
        _ => err,
    }
}

/// `text` with every plain (unquoted) scalar item of a flow sequence that holds a colon not
/// followed by a space put in single quotes; `None` when there is none.
fn quote_colon_scalars_in_flow_sequences(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 16);
    // Open flow collections, innermost last: true for `[`, false for `{`.
    let mut stack: Vec<bool> = Vec::new();
    let mut changed = false;
    for line in text.split_inclusive('\n') {
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        // At the start of a sequence item (after `[` or `,`, spaces skipped).
        let mut item_start = false;
        while i < chars.len() {
            let c = chars[i];
            match c {
                '#' if i == 0 || chars[i - 1].is_whitespace() => {
                    out.extend(&chars[i..]);
                    break;
                }
                '\'' | '"' => {
                    // A quoted scalar: copy through its closing quote (on this line).
                    let end = chars[i + 1..].iter().position(|&q| q == c).map_or(chars.len(), |p| i + 2 + p);
                    out.extend(&chars[i..end]);
                    i = end;
                    item_start = false;
                    continue;
                }
                '[' | '{' => {
                    stack.push(c == '[');
                    item_start = c == '[';
                }
                ']' | '}' => {
                    stack.pop();
                    item_start = false;
                }
                ',' => item_start = stack.last() == Some(&true),
                ' ' | '\t' => {}
                _ if item_start => {
                    // A plain scalar item runs to the next `,` or `]` (or a comment).
                    let end = (i..chars.len())
                        .find(|&j| matches!(chars[j], ',' | ']' | '\n' | '\r') || (chars[j] == '#' && chars[j - 1] == ' '))
                        .unwrap_or(chars.len());
                    let item: String = chars[i..end].iter().collect::<String>();
                    let item = item.trim_end();
                    let colon_inside =
                        item.char_indices().any(|(k, ch)| ch == ':' && item[k + 1..].chars().next().is_none_or(|n| n != ' '));
                    if colon_inside && !item.contains(": ") {
                        out.push('\'');
                        out.push_str(&item.replace('\'', "''"));
                        out.push('\'');
                        changed = true;
                        i += item.chars().count();
                    } else {
                        out.extend(&chars[i..end]);
                        i = end;
                    }
                    item_start = false;
                    continue;
                }
                _ => item_start = false,
            }
            out.push(c);
            i += 1;
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_in_flow_lists_load_as_go_yaml_reads_them() {
        let (docs, err) = documents("spec:\n  addresses: [1.2.3.4, 001:db8::]\n  other: [2001:db8::1, \"::1\", ::2] # c\n");
        assert_eq!(err, None);
        let a = &docs[0]["spec"]["addresses"];
        assert_eq!(a[0].as_str(), Some("1.2.3.4"));
        assert_eq!(a[1].as_str(), Some("001:db8::"));
        let o = &docs[0]["spec"]["other"];
        assert_eq!([o[0].as_str(), o[1].as_str(), o[2].as_str()], [Some("2001:db8::1"), Some("::1"), Some("::2")]);
    }

    #[test]
    fn real_syntax_errors_keep_their_line_and_tabs_are_named() {
        let (docs, err) = documents("a: 1\n---\nb: [1, 2\n");
        assert_eq!(docs.len(), 1);
        assert!(err.is_some_and(|e| e.line.is_some()));
        let (_, err) = documents("spec:\n\thosts: [a]\n");
        let err = err.expect("a tab is an error");
        assert!(err.message.contains("tab"), "{err:?}");
        assert_eq!(err.line, Some(2));
    }

    #[test]
    fn nothing_is_rewritten_in_yaml_that_parses() {
        let text = "a: [x:y, {b: c:d}, 'q']\n";
        let (docs, err) = documents(text);
        assert_eq!(err, None);
        assert_eq!(docs[0]["a"][0].as_str(), Some("x:y"));
    }
}
