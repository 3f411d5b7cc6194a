//! The part of CEL (the Common Expression Language) that a mesh's telemetry is written in:
//! Istio's Telemetry `accessLogging[].filter.expression` and `tagOverrides[].value`, which
//! istiod hands to Envoy as its CEL access-log filter and stats expressions, evaluated over
//! Envoy's request attributes (`request.path`, `response.code`, `response.flags`,
//! `xds.cluster_name`, …).
//!
//! An expression is compiled once ([`Program::compile`]): parsed, its attribute names resolved
//! (a name weft does not supply is an error naming it, never a silent `false`), its regexes
//! compiled. Evaluation follows CEL: `&&` and `||` absorb errors when the other side decides,
//! any other error makes the whole expression an error, and a filter treats an error or a
//! non-boolean result as "do not log" — as Envoy's filter does.
//!
//! Hostile or accidental input stays bounded: expressions are capped in length and nesting
//! depth, so neither compiling nor evaluating can exhaust the stack.

mod attribute;
mod eval;
mod parse;

pub use attribute::{response_flag_bits, Activation, Attribute, MapAttribute, RESPONSE_FLAG_BITS};
pub use eval::{EvalError, Value};

/// Longest expression accepted, in bytes.
pub const MAX_LEN: usize = 16 * 1024;
/// Deepest nesting accepted (parentheses, operators, calls).
pub const MAX_DEPTH: usize = 48;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("at offset {at}: {message}")]
    Syntax { at: usize, message: String },
    #[error("{0}")]
    Unsupported(String),
}

/// A compiled expression.
#[derive(Debug, Clone)]
pub struct Program {
    expr: parse::Expr,
    source: String,
}

impl Program {
    pub fn compile(source: &str) -> Result<Program, CompileError> {
        if source.len() > MAX_LEN {
            return Err(CompileError::Unsupported(format!("the expression is {} bytes; at most {MAX_LEN} are accepted", source.len())));
        }
        let expr = parse::parse(source)?;
        Ok(Program { expr, source: source.to_owned() })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn eval(&self, act: &dyn Activation) -> Result<Value, EvalError> {
        eval::eval(&self.expr, act)
    }

    /// As a filter: true only when the expression evaluates to `true`.
    pub fn matches(&self, act: &dyn Activation) -> bool {
        matches!(self.eval(act), Ok(Value::Bool(true)))
    }

    /// As a metric label: the value's text, `None` when evaluation fails.
    pub fn label(&self, act: &dyn Activation) -> Option<String> {
        self.eval(act).ok().map(|v| v.to_label())
    }
}

#[cfg(test)]
use response_flag_bits as response_flag_bits_for_tests;
#[cfg(test)]
mod tests;
