//! Evaluation with CEL's semantics: checked integer arithmetic, numeric comparison across int,
//! uint and double, and `&&`/`||` that let a decided side absorb an error on the other.

use std::cmp::Ordering;

use crate::attribute::Activation;
use crate::parse::{BinOp, Expr, Func};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    String(String),
    List(Vec<Value>),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Uint(_) => "uint",
            Value::Double(_) => "double",
            Value::String(_) => "string",
            Value::List(_) => "list",
        }
    }

    /// The text a metric label gets.
    pub fn to_label(&self) -> String {
        match self {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(v) => v.to_string(),
            Value::Uint(v) => v.to_string(),
            Value::Double(v) => v.to_string(),
            Value::String(s) => s.clone(),
            Value::List(items) => format!("[{}]", items.iter().map(Value::to_label).collect::<Vec<_>>().join(", ")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("no such attribute {0}")]
    NoSuchAttribute(&'static str),
    #[error("no such key {key:?} in {map}")]
    NoSuchKey { map: &'static str, key: String },
    #[error("no such overload: {0}")]
    NoOverload(String),
    #[error("integer overflow")]
    Overflow,
    #[error("division by zero")]
    DivideByZero,
}

fn no_overload(op: &str, a: &Value, b: &Value) -> EvalError {
    EvalError::NoOverload(format!("{} {op} {}", a.type_name(), b.type_name()))
}

pub(crate) fn eval(e: &Expr, act: &dyn Activation) -> Result<Value, EvalError> {
    match e {
        Expr::Lit(v) => Ok(v.clone()),
        Expr::Attr(a) => act.get(*a).ok_or(EvalError::NoSuchAttribute(a.name())),
        Expr::MapKey(m, key) => match eval(key, act)? {
            Value::String(k) => act.get_key(*m, &k).map(Value::String).ok_or_else(|| EvalError::NoSuchKey { map: m.name(), key: k }),
            other => Err(EvalError::NoOverload(format!("{}[{}]", m.name(), other.type_name()))),
        },
        Expr::HasAttr(a) => Ok(Value::Bool(act.get(*a).is_some())),
        Expr::HasKey(m, k) => Ok(Value::Bool(act.get_key(*m, k).is_some())),
        Expr::InMap(k, m) => match eval(k, act)? {
            Value::String(k) => Ok(Value::Bool(act.get_key(*m, &k).is_some())),
            other => Err(EvalError::NoOverload(format!("{} in {}", other.type_name(), m.name()))),
        },
        Expr::List(items) => Ok(Value::List(items.iter().map(|i| eval(i, act)).collect::<Result<_, _>>()?)),
        Expr::Not(x) => match eval(x, act)? {
            Value::Bool(b) => Ok(Value::Bool(!b)),
            other => Err(EvalError::NoOverload(format!("!{}", other.type_name()))),
        },
        Expr::Neg(x) => match eval(x, act)? {
            Value::Int(v) => v.checked_neg().map(Value::Int).ok_or(EvalError::Overflow),
            Value::Double(v) => Ok(Value::Double(-v)),
            other => Err(EvalError::NoOverload(format!("-{}", other.type_name()))),
        },
        Expr::And(a, b) => logic(eval(a, act), || eval(b, act), false),
        Expr::Or(a, b) => logic(eval(a, act), || eval(b, act), true),
        Expr::Cond(c, a, b) => match eval(c, act)? {
            Value::Bool(true) => eval(a, act),
            Value::Bool(false) => eval(b, act),
            other => Err(EvalError::NoOverload(format!("{} ? _ : _", other.type_name()))),
        },
        Expr::Bin(op, a, b) => binary(*op, eval(a, act)?, eval(b, act)?),
        Expr::Matches(s, re) => match eval(s, act)? {
            Value::String(s) => Ok(Value::Bool(re.is_match(&s))),
            other => Err(EvalError::NoOverload(format!("{}.matches(string)", other.type_name()))),
        },
        Expr::Call(f, args) => {
            let vals = args.iter().map(|a| eval(a, act)).collect::<Result<Vec<_>, _>>()?;
            call(*f, vals)
        }
    }
}

/// `&&` (`decisive` false) and `||` (`decisive` true): the decisive value on either side wins,
/// even over an error on the other.
fn logic(a: Result<Value, EvalError>, b: impl FnOnce() -> Result<Value, EvalError>, decisive: bool) -> Result<Value, EvalError> {
    let bool_of = |r: Result<Value, EvalError>| match r {
        Ok(Value::Bool(v)) => Ok(v),
        Ok(other) => Err(EvalError::NoOverload(format!("{} {} _", other.type_name(), if decisive { "||" } else { "&&" }))),
        Err(e) => Err(e),
    };
    let a = bool_of(a);
    if a == Ok(decisive) {
        return Ok(Value::Bool(decisive));
    }
    let b = bool_of(b());
    match (a, b) {
        (_, Ok(v)) if v == decisive => Ok(Value::Bool(decisive)),
        (Ok(_), Ok(_)) => Ok(Value::Bool(!decisive)),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// Numbers compare by value across int, uint and double (CEL's heterogeneous comparison).
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    use Value::*;
    match (a, b) {
        (Int(x), Int(y)) => Some(x.cmp(y)),
        (Uint(x), Uint(y)) => Some(x.cmp(y)),
        (Int(x), Uint(y)) => Some(if *x < 0 { Ordering::Less } else { (*x as u64).cmp(y) }),
        (Uint(x), Int(y)) => Some(if *y < 0 { Ordering::Greater } else { x.cmp(&(*y as u64)) }),
        (Double(x), Double(y)) => x.partial_cmp(y),
        (Double(x), Int(y)) => x.partial_cmp(&(*y as f64)),
        (Int(x), Double(y)) => (*x as f64).partial_cmp(y),
        (Double(x), Uint(y)) => x.partial_cmp(&(*y as f64)),
        (Uint(x), Double(y)) => (*x as f64).partial_cmp(y),
        (String(x), String(y)) => Some(x.cmp(y)),
        (Bool(x), Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b)),
        _ => compare(a, b) == Some(Ordering::Equal),
    }
}

fn binary(op: BinOp, a: Value, b: Value) -> Result<Value, EvalError> {
    use Value::*;
    let ord = |want: fn(Ordering) -> bool, sym: &str| match compare(&a, &b) {
        Some(o) => Ok(Bool(want(o))),
        None => Err(no_overload(sym, &a, &b)),
    };
    match op {
        BinOp::Eq => Ok(Bool(equal(&a, &b))),
        BinOp::Ne => Ok(Bool(!equal(&a, &b))),
        BinOp::Lt => ord(|o| o == Ordering::Less, "<"),
        BinOp::Le => ord(|o| o != Ordering::Greater, "<="),
        BinOp::Gt => ord(|o| o == Ordering::Greater, ">"),
        BinOp::Ge => ord(|o| o != Ordering::Less, ">="),
        BinOp::InList => match &b {
            List(items) => Ok(Bool(items.iter().any(|i| equal(&a, i)))),
            _ => Err(no_overload("in", &a, &b)),
        },
        BinOp::Add => match (&a, &b) {
            (Int(x), Int(y)) => x.checked_add(*y).map(Int).ok_or(EvalError::Overflow),
            (Uint(x), Uint(y)) => x.checked_add(*y).map(Uint).ok_or(EvalError::Overflow),
            (Double(x), Double(y)) => Ok(Double(x + y)),
            (String(x), String(y)) => Ok(String(format!("{x}{y}"))),
            (List(x), List(y)) => Ok(List(x.iter().chain(y).cloned().collect())),
            _ => Err(no_overload("+", &a, &b)),
        },
        BinOp::Sub => match (&a, &b) {
            (Int(x), Int(y)) => x.checked_sub(*y).map(Int).ok_or(EvalError::Overflow),
            (Uint(x), Uint(y)) => x.checked_sub(*y).map(Uint).ok_or(EvalError::Overflow),
            (Double(x), Double(y)) => Ok(Double(x - y)),
            _ => Err(no_overload("-", &a, &b)),
        },
        BinOp::Mul => match (&a, &b) {
            (Int(x), Int(y)) => x.checked_mul(*y).map(Int).ok_or(EvalError::Overflow),
            (Uint(x), Uint(y)) => x.checked_mul(*y).map(Uint).ok_or(EvalError::Overflow),
            (Double(x), Double(y)) => Ok(Double(x * y)),
            _ => Err(no_overload("*", &a, &b)),
        },
        BinOp::Div | BinOp::Rem => {
            let div = op == BinOp::Div;
            match (&a, &b) {
                (Int(_), Int(0)) | (Uint(_), Uint(0)) => Err(EvalError::DivideByZero),
                (Int(x), Int(y)) => (if div { x.checked_div(*y) } else { x.checked_rem(*y) }).map(Int).ok_or(EvalError::Overflow),
                (Uint(x), Uint(y)) => Ok(Uint(if div { x / y } else { x % y })),
                (Double(x), Double(y)) if div => Ok(Double(x / y)),
                _ => Err(no_overload(if div { "/" } else { "%" }, &a, &b)),
            }
        }
    }
}

fn call(f: Func, args: Vec<Value>) -> Result<Value, EvalError> {
    use Value::*;
    let mut it = args.into_iter();
    let first = it.next().unwrap_or(Null);
    let second = it.next();
    let text_test = |name: &str, test: fn(&str, &str) -> bool| match (&first, &second) {
        (String(s), Some(String(p))) => Ok(Bool(test(s, p))),
        (a, b) => Err(EvalError::NoOverload(format!("{}.{name}({})", a.type_name(), b.as_ref().map_or("", Value::type_name)))),
    };
    match f {
        Func::StartsWith => text_test("startsWith", |s, p| s.starts_with(p)),
        Func::EndsWith => text_test("endsWith", |s, p| s.ends_with(p)),
        Func::Contains => text_test("contains", |s, p| s.contains(p)),
        Func::Size => match &first {
            String(s) => Ok(Int(s.chars().count() as i64)),
            List(l) => Ok(Int(l.len() as i64)),
            other => Err(EvalError::NoOverload(format!("size({})", other.type_name()))),
        },
        Func::Int => match &first {
            Int(v) => Ok(Int(*v)),
            Uint(v) => i64::try_from(*v).map(Int).map_err(|_| EvalError::Overflow),
            Double(v) if v.is_finite() && *v >= i64::MIN as f64 && *v < i64::MAX as f64 => Ok(Int(*v as i64)),
            Double(_) => Err(EvalError::Overflow),
            String(s) => s.parse().map(Int).map_err(|_| EvalError::NoOverload(format!("int({s:?})"))),
            other => Err(EvalError::NoOverload(format!("int({})", other.type_name()))),
        },
        Func::Uint => match &first {
            Uint(v) => Ok(Uint(*v)),
            Int(v) => u64::try_from(*v).map(Uint).map_err(|_| EvalError::Overflow),
            Double(v) if v.is_finite() && *v >= 0.0 && *v < u64::MAX as f64 => Ok(Uint(*v as u64)),
            Double(_) => Err(EvalError::Overflow),
            String(s) => s.parse().map(Uint).map_err(|_| EvalError::NoOverload(format!("uint({s:?})"))),
            other => Err(EvalError::NoOverload(format!("uint({})", other.type_name()))),
        },
        Func::Double => match &first {
            Double(v) => Ok(Double(*v)),
            Int(v) => Ok(Double(*v as f64)),
            Uint(v) => Ok(Double(*v as f64)),
            String(s) => s.parse().map(Double).map_err(|_| EvalError::NoOverload(format!("double({s:?})"))),
            other => Err(EvalError::NoOverload(format!("double({})", other.type_name()))),
        },
        Func::String => match &first {
            List(_) | Null => Err(EvalError::NoOverload(format!("string({})", first.type_name()))),
            v => Ok(String(v.to_label())),
        },
    }
}
