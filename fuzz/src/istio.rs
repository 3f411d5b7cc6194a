//! Istio YAML as the control plane, `weft analyze` and `weft apply` read it: every document
//! loaded, schema- and semantically validated (`weft_api::load_text`), duplicates dropped; and
//! the same text read as a MeshConfig. Every diagnostic must name the file and a line inside it.

use weft_api::{Diagnostic, Level};

const FILE: &str = "fuzz.yaml";

pub fn istio(data: &[u8]) {
    // Config files are read as strings; bytes that are not UTF-8 never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines = crate::bootstrap::max_line(text);
    let mut loaded = weft_api::load_text(text, FILE);
    for d in &loaded.diagnostics {
        check(d, lines, true);
    }
    for o in &loaded.objects {
        let (name, _, origin) = o.meta();
        assert!(!name.is_empty(), "a {} without a name was loaded", o.kind());
        assert!(origin.line >= 1 && origin.line <= lines, "{} {name} is said to start on line {}", o.kind(), origin.line);
    }
    let before = loaded.objects.len() + loaded.diagnostics.len();
    weft_api::drop_duplicates(&mut loaded.objects, &mut loaded.diagnostics);
    // A duplicate leaves the objects and becomes a diagnostic: nothing vanishes unexplained.
    assert_eq!(loaded.objects.len() + loaded.diagnostics.len(), before, "drop_duplicates lost a resource without a diagnostic");
    match weft_api::mesh::load_mesh_checked(text, FILE) {
        Ok((_, warnings)) => warnings.iter().for_each(|d| check(d, lines, false)),
        Err(errors) => {
            assert!(!errors.is_empty(), "a MeshConfig refused without a reason");
            errors.iter().for_each(|d| check(d, lines, false));
        }
    }
}

/// `needs_line`: a resource file's diagnostics always name a line (a MeshConfig's may not,
/// when the problem is the file as a whole).
fn check(d: &Diagnostic, lines: usize, needs_line: bool) {
    let shown = d.to_string();
    assert_eq!(d.file, FILE, "{shown}");
    assert!(d.code.is_some(), "a diagnostic without a code: {shown}");
    assert!(!d.message.is_empty(), "a diagnostic without a message: {shown}");
    if needs_line && d.level == Level::Error {
        assert!(d.line.is_some(), "an error without a line: {shown}");
    }
    if let Some(l) = d.line {
        assert!(l >= 1 && l <= lines, "line {l} is past the text's end (line {lines}): {shown}");
    }
}
