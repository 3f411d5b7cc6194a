//! Finding the line a field path points at, so semantic errors found after parsing still name
//! the line, like syntax errors do.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// For each document of a YAML text: the line it starts on and the line of every field path in
/// it (`spec.http[0].route[1].weight`), in serde_path_to_error's notation.
#[derive(Debug, Default)]
pub struct LineIndex {
    pub docs: Vec<DocLines>,
}

#[derive(Debug, Default, Clone)]
pub struct DocLines {
    pub start: usize,
    lines: HashMap<String, usize>,
}

impl DocLines {
    /// The line of `path`, or of its longest known prefix (a missing field is reported where
    /// its parent is).
    pub fn line_of(&self, path: &str) -> usize {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return *l;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.start,
            }
        }
    }

    /// The lines under `prefix` (`items[2]`, an item of a `List`) as a document of its own.
    pub fn under(&self, prefix: &str) -> DocLines {
        let lines = self
            .lines
            .iter()
            .filter_map(|(p, l)| {
                let rest = p.strip_prefix(prefix)?;
                let rest = match rest.strip_prefix('.') {
                    Some(r) => r,
                    // `items[1]` is not a prefix of `items[10]`.
                    None if rest.is_empty() || rest.starts_with('[') => rest,
                    None => return None,
                };
                Some((rest.to_string(), *l))
            })
            .collect();
        DocLines { start: self.line_of(prefix), lines }
    }
}

impl DocLines {
    /// A document whose fields have no known lines, starting on `start`.
    pub fn starting_at(start: usize) -> DocLines {
        DocLines { start, lines: HashMap::new() }
    }
}

/// The line document `n` of `text` starts on, from its `---` separators alone: for a document
/// the index does not hold, because the index's parser stopped at an error the loader's parser
/// read past. 1 when the text has fewer documents than that.
pub fn document_start(text: &str, n: usize) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let mut starts = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match line.strip_prefix("---").filter(|r| r.is_empty() || r.starts_with([' ', '\t'])) {
            // `--- {a: 1}` starts on the separator's line, a bare `---` on the next.
            Some(rest) if !rest.trim().is_empty() => starts.push(i + 1),
            Some(_) => starts.push((i + 2).min(lines.len())),
            // Content before the first separator is document 0.
            None if starts.is_empty() && !line.trim().is_empty() && !line.trim_start().starts_with(['#', '%']) => starts.push(i + 1),
            None => {}
        }
    }
    starts.get(n).copied().unwrap_or(1).max(1)
}

#[derive(Default)]
struct Collect {
    events: Vec<(Event, usize)>,
}

impl MarkedEventReceiver for Collect {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        self.events.push((ev, mark.line()));
    }
}

impl LineIndex {
    /// The lines of document `n` of `text`, the text this index was built from; for a
    /// document the index does not hold, its start from the separators alone.
    pub fn doc(&self, text: &str, n: usize) -> std::borrow::Cow<'_, DocLines> {
        match self.docs.get(n) {
            Some(l) => std::borrow::Cow::Borrowed(l),
            None => std::borrow::Cow::Owned(DocLines::starting_at(document_start(text, n))),
        }
    }

    /// Indexes `text`. A text the YAML parser rejects is indexed up to the error: the
    /// documents before it still load and need their lines (serde reports the syntax error
    /// with its own line).
    pub fn build(text: &str) -> LineIndex {
        let mut c = Collect::default();
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut c, true);
        let mut docs = Vec::new();
        let mut i = 0;
        while i < c.events.len() {
            if let Event::DocumentStart = c.events[i].0 {
                let start = c.events.get(i + 1).map(|e| e.1).unwrap_or(c.events[i].1);
                let mut doc = DocLines { start, lines: HashMap::new() };
                i += 1;
                walk(&c.events, &mut i, String::new(), &mut doc.lines);
                docs.push(doc);
            } else {
                i += 1;
            }
        }
        LineIndex { docs }
    }
}

/// Consumes one node starting at `events[*i]`, recording the line of every path below it.
fn walk(events: &[(Event, usize)], i: &mut usize, path: String, out: &mut HashMap<String, usize>) {
    let Some((ev, line)) = events.get(*i) else { return };
    *i += 1;
    match ev {
        Event::MappingStart(..) => {
            out.entry(path.clone()).or_insert(*line);
            while let Some((ev, key_line)) = events.get(*i) {
                match ev {
                    Event::MappingEnd => {
                        *i += 1;
                        return;
                    }
                    Event::Scalar(key, ..) => {
                        *i += 1;
                        let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                        out.insert(child.clone(), *key_line);
                        walk(events, i, child, out);
                    }
                    _ => {
                        // A complex key: skip it and its value without recording paths.
                        let mut sink = HashMap::new();
                        walk(events, i, String::new(), &mut sink);
                        walk(events, i, String::new(), &mut sink);
                    }
                }
            }
        }
        Event::SequenceStart(..) => {
            out.entry(path.clone()).or_insert(*line);
            let mut n = 0;
            while let Some((ev, _)) = events.get(*i) {
                if let Event::SequenceEnd = ev {
                    *i += 1;
                    return;
                }
                let child = format!("{path}[{n}]");
                if let Some((_, l)) = events.get(*i) {
                    out.insert(child.clone(), *l);
                }
                walk(events, i, child, out);
                n += 1;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_lines_across_documents() {
        let text = "a: 1\n---\nkind: X\nspec:\n  http:\n  - route:\n    - weight: 5\n      x: [1, 2]\n";
        let idx = LineIndex::build(text);
        assert_eq!(idx.docs.len(), 2);
        let d = &idx.docs[1];
        assert_eq!(d.line_of("kind"), 3);
        assert_eq!(d.line_of("spec.http[0].route[0].weight"), 7);
        assert_eq!(d.line_of("spec.http[0].route[0].missing"), 7);
        assert_eq!(d.line_of("spec.http[0].route[0].x[1]"), 8);
    }
}
