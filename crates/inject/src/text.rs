//! Kubernetes YAML in and out, for `weft kube-inject`.

use serde_json::Value;
use weft_api::locate::{document_start, LineIndex};

use crate::{inject_object, Outcome, Values};

/// Injects every document of Kubernetes YAML `text` (from `file`, for messages): the output
/// YAML and a line per pod template skipped or warned about, or every error found (then
/// there is no output: nothing is injected half way).
pub fn inject_yaml(text: &str, file: &str, values: &Values) -> Result<(String, Vec<String>), String> {
    let (docs, syntax) = weft_api::yaml::documents(text);
    if let Some(e) = syntax {
        return Err(format!("{file}:{}: YAML syntax error: {}", e.line.unwrap_or(1), e.message));
    }
    let index = LineIndex::build(text);
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let mut notices = Vec::new();
    for (n, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let start = index.docs.get(n).map(|d| d.start).unwrap_or_else(|| document_start(text, n));
        let mut object: Value = match serde_json::to_value(&doc) {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("{file}:{start}: not a Kubernetes object: {e}"));
                continue;
            }
        };
        match inject_object(&mut object, None, values) {
            Ok(reports) => {
                for r in reports {
                    match r.outcome {
                        Outcome::Injected { warnings } => {
                            for w in warnings {
                                notices.push(format!("{file}:{start}: {}: warning: {w}", r.workload));
                            }
                        }
                        Outcome::Skipped(why) => notices.push(format!("{file}:{start}: {}: not injected: {why}", r.workload)),
                    }
                }
            }
            Err(e) => {
                let line = index.docs.get(n).map(|d| d.line_of(&e.at.replace('[', ".").replace(']', ""))).unwrap_or(start);
                let what = object.get("kind").and_then(Value::as_str).unwrap_or("object");
                let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                errors.push(format!("{file}:{line}: {what} {name}: {e}"));
                continue;
            }
        }
        out.push(serde_yaml::to_string(&object).map_err(|e| format!("{file}:{start}: {e}"))?);
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    Ok((out.join("---\n"), notices))
}
