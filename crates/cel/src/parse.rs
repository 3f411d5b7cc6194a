//! CEL's grammar (cel-spec's `langdef`), minus what telemetry expressions never need: maps and
//! message literals, bytes, comprehension macros. Attribute names are resolved while parsing.

use regex::Regex;

use crate::attribute::{Attribute, MapAttribute, MAPS, ROOTS, SCALARS};
use crate::eval::Value;
use crate::{CompileError, MAX_DEPTH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    /// `x in [..]`.
    InList,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Size,
    StartsWith,
    EndsWith,
    Contains,
    Int,
    Uint,
    Double,
    String,
}

#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Lit(Value),
    Attr(Attribute),
    MapKey(MapAttribute, Box<Expr>),
    HasAttr(Attribute),
    HasKey(MapAttribute, String),
    InMap(Box<Expr>, MapAttribute),
    List(Vec<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
    Matches(Box<Expr>, Box<Regex>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A decimal or hex integer's magnitude (a minus sign is an operator): up to 2^63, so that
    /// `-9223372036854775808` can be read.
    Int(u64),
    Uint(u64),
    Double(f64),
    Str(String),
    Ident(String),
    Punct(&'static str),
    End,
}

const PUNCT: &[&str] =
    &["==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "+", "-", "*", "/", "%", "?", ":", "(", ")", "[", "]", ".", ","];
/// Words CEL reserves; none may name anything.
const RESERVED: &[&str] = &[
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

fn syntax(at: usize, message: impl Into<String>) -> CompileError {
    CompileError::Syntax { at, message: message.into() }
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, CompileError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let (tok, len) = number(&src[i..]).ok_or_else(|| syntax(i, "malformed number"))?;
            out.push((start, tok));
            i += len;
            continue;
        }
        let raw = (c == b'r' || c == b'R') && matches!(b.get(i + 1), Some(b'"' | b'\''));
        if c == b'"' || c == b'\'' || raw {
            if raw {
                i += 1;
            }
            let (s, len) = string(&src[i..], raw).map_err(|m| syntax(i, m))?;
            out.push((start, Tok::Str(s)));
            i += len;
            continue;
        }
        if (c == b'b' || c == b'B') && matches!(b.get(i + 1), Some(b'"' | b'\'')) {
            return Err(CompileError::Unsupported(format!("at offset {i}: bytes literals are not supported")));
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((start, Tok::Ident(src[start..i].to_owned())));
            continue;
        }
        match PUNCT.iter().find(|p| src[i..].starts_with(**p)) {
            Some(p) => {
                out.push((start, Tok::Punct(p)));
                i += p.len();
            }
            None => return Err(syntax(i, format!("unexpected character {:?}", src[i..].chars().next().unwrap_or(' ')))),
        }
    }
    out.push((src.len(), Tok::End));
    Ok(out)
}

/// A number at the start of `s`: its token and length.
fn number(s: &str) -> Option<(Tok, usize)> {
    let b = s.as_bytes();
    if s.starts_with("0x") || s.starts_with("0X") {
        let digits = s[2..].bytes().take_while(u8::is_ascii_hexdigit).count();
        let v = u64::from_str_radix(&s[2..2 + digits], 16).ok()?;
        let end = 2 + digits;
        return if matches!(b.get(end), Some(b'u' | b'U')) { Some((Tok::Uint(v), end + 1)) } else { Some((Tok::Int(v), end)) };
    }
    let mut end = s.bytes().take_while(u8::is_ascii_digit).count();
    let mut float = false;
    if b.get(end) == Some(&b'.') && b.get(end + 1).is_some_and(u8::is_ascii_digit) {
        float = true;
        end += 1 + s[end + 1..].bytes().take_while(u8::is_ascii_digit).count();
    }
    if matches!(b.get(end), Some(b'e' | b'E')) {
        let mut e = end + 1;
        if matches!(b.get(e), Some(b'+' | b'-')) {
            e += 1;
        }
        let digits = s[e..].bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            float = true;
            end = e + digits;
        }
    }
    let text = &s[..end];
    if float {
        return Some((Tok::Double(text.parse().ok()?), end));
    }
    if matches!(b.get(end), Some(b'u' | b'U')) {
        return Some((Tok::Uint(text.parse().ok()?), end + 1));
    }
    Some((Tok::Int(text.parse().ok()?), end))
}

/// A quoted string at the start of `s` (single, double or triple quotes): its value and length.
fn string(s: &str, raw: bool) -> Result<(String, usize), String> {
    let q = &s[..1];
    let triple = s.starts_with(&q.repeat(3));
    let close = if triple { q.repeat(3) } else { q.to_owned() };
    let mut i = close.len();
    let mut out = String::new();
    let mut chars = s[i..].char_indices().peekable();
    while let Some((off, c)) = chars.next() {
        let here = i + off;
        if s[here..].starts_with(close.as_str()) {
            return Ok((out, here + close.len()));
        }
        if c == '\n' && !triple {
            return Err("a string may not span lines (use triple quotes)".into());
        }
        if c == '\\' && !raw {
            let Some((_, e)) = chars.next() else { break };
            out.push(match e {
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                '0' => '\0',
                '\\' | '\'' | '"' | '`' | '?' => e,
                'x' | 'u' | 'U' => {
                    let n = match e {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let mut hex = String::new();
                    for _ in 0..n {
                        hex.push(chars.next().map(|(_, h)| h).ok_or("incomplete escape")?);
                    }
                    let v = u32::from_str_radix(&hex, 16).map_err(|_| format!("bad escape \\{e}{hex}"))?;
                    char::from_u32(v).ok_or_else(|| format!("escape \\{e}{hex} is not a character"))?
                }
                other => return Err(format!("unknown escape \\{other}")),
            });
            continue;
        }
        out.push(c);
    }
    i = s.len();
    Err(format!("unterminated string (reached offset {i})"))
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    depth: usize,
}

/// An expression as parsed, before a bare map attribute must have become something else.
enum Node {
    Expr(Expr),
    Map(MapAttribute),
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].1
    }
    fn at(&self) -> usize {
        self.toks[self.pos.min(self.toks.len() - 1)].0
    }
    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }
    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Tok::Punct(q) if *q == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, p: &str) -> Result<(), CompileError> {
        if self.eat(p) {
            Ok(())
        } else {
            Err(syntax(self.at(), format!("expected {p:?}, found {}", describe(self.peek()))))
        }
    }
    fn enter(&mut self) -> Result<(), CompileError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(CompileError::Unsupported(format!("the expression nests deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, CompileError> {
        self.enter()?;
        let cond = self.or()?;
        let out = if self.eat("?") {
            let a = self.or()?;
            self.expect(":")?;
            let b = self.expr()?;
            Expr::Cond(Box::new(cond), Box::new(a), Box::new(b))
        } else {
            cond
        };
        self.depth -= 1;
        Ok(out)
    }

    fn or(&mut self) -> Result<Expr, CompileError> {
        let mut l = self.and()?;
        while self.eat("||") {
            self.enter()?;
            l = Expr::Or(Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }

    fn and(&mut self) -> Result<Expr, CompileError> {
        let mut l = self.relation()?;
        while self.eat("&&") {
            self.enter()?;
            l = Expr::And(Box::new(l), Box::new(self.relation()?));
        }
        Ok(l)
    }

    fn relation(&mut self) -> Result<Expr, CompileError> {
        let mut l = self.addition()?;
        loop {
            let op = match self.peek() {
                Tok::Punct("==") => BinOp::Eq,
                Tok::Punct("!=") => BinOp::Ne,
                Tok::Punct("<") => BinOp::Lt,
                Tok::Punct("<=") => BinOp::Le,
                Tok::Punct(">") => BinOp::Gt,
                Tok::Punct(">=") => BinOp::Ge,
                Tok::Ident(w) if w == "in" => BinOp::InList,
                _ => return Ok(l),
            };
            self.pos += 1;
            self.enter()?;
            if op == BinOp::InList {
                let at = self.at();
                l = match self.node_addition()? {
                    Node::Map(m) => Expr::InMap(Box::new(l), m),
                    Node::Expr(r @ Expr::List(_)) => Expr::Bin(BinOp::InList, Box::new(l), Box::new(r)),
                    Node::Expr(_) => {
                        return Err(CompileError::Unsupported(format!("at offset {at}: `in` needs a list literal or a header map")))
                    }
                };
            } else {
                l = Expr::Bin(op, Box::new(l), Box::new(self.addition()?));
            }
        }
    }

    fn addition(&mut self) -> Result<Expr, CompileError> {
        let at = self.at();
        let n = self.node_addition()?;
        expr_of(n, at)
    }

    fn node_addition(&mut self) -> Result<Node, CompileError> {
        let at = self.at();
        let first = self.node_multiplication()?;
        if !matches!(self.peek(), Tok::Punct("+" | "-")) {
            return Ok(first);
        }
        let mut l = expr_of(first, at)?;
        loop {
            let op = match self.peek() {
                Tok::Punct("+") => BinOp::Add,
                Tok::Punct("-") => BinOp::Sub,
                _ => return Ok(Node::Expr(l)),
            };
            self.pos += 1;
            self.enter()?;
            l = Expr::Bin(op, Box::new(l), Box::new(self.multiplication()?));
        }
    }

    fn multiplication(&mut self) -> Result<Expr, CompileError> {
        let at = self.at();
        let n = self.node_multiplication()?;
        expr_of(n, at)
    }

    fn node_multiplication(&mut self) -> Result<Node, CompileError> {
        let at = self.at();
        let first = self.unary()?;
        if !matches!(self.peek(), Tok::Punct("*" | "/" | "%")) {
            return Ok(first);
        }
        let mut l = expr_of(first, at)?;
        loop {
            let op = match self.peek() {
                Tok::Punct("*") => BinOp::Mul,
                Tok::Punct("/") => BinOp::Div,
                Tok::Punct("%") => BinOp::Rem,
                _ => return Ok(Node::Expr(l)),
            };
            self.pos += 1;
            self.enter()?;
            let at = self.at();
            let r = self.unary()?;
            l = Expr::Bin(op, Box::new(l), Box::new(expr_of(r, at)?));
        }
    }

    fn unary(&mut self) -> Result<Node, CompileError> {
        self.enter()?;
        let at = self.at();
        let out = if self.eat("!") {
            let inner = self.unary()?;
            Node::Expr(Expr::Not(Box::new(expr_of(inner, at)?)))
        } else if self.eat("-") {
            // `-9223372036854775808` is a literal, not the negation of one that overflows.
            match self.peek().clone() {
                Tok::Int(m) if m <= 1 << 63 => {
                    self.pos += 1;
                    Node::Expr(Expr::Lit(Value::Int(0i64.wrapping_sub_unsigned(m))))
                }
                Tok::Double(v) => {
                    self.pos += 1;
                    Node::Expr(Expr::Lit(Value::Double(-v)))
                }
                _ => {
                    let inner = self.unary()?;
                    Node::Expr(Expr::Neg(Box::new(expr_of(inner, at)?)))
                }
            }
        } else {
            self.member()?
        };
        self.depth -= 1;
        Ok(out)
    }

    fn member(&mut self) -> Result<Node, CompileError> {
        let at = self.at();
        let mut node = self.primary()?;
        loop {
            if self.eat("[") {
                let key = self.expr()?;
                self.expect("]")?;
                node = match node {
                    Node::Map(m) => Node::Expr(Expr::MapKey(m, Box::new(key))),
                    Node::Expr(_) => return Err(CompileError::Unsupported(format!("at offset {at}: only header maps can be indexed"))),
                };
            } else if matches!(self.peek(), Tok::Punct(".")) {
                self.pos += 1;
                let name_at = self.at();
                let Tok::Ident(name) = self.next() else { return Err(syntax(name_at, "expected a name after '.'")) };
                if self.eat("(") {
                    let args = self.args()?;
                    let recv = expr_of(node, at)?;
                    node = Node::Expr(method(recv, &name, args, name_at)?);
                } else {
                    node = match node {
                        Node::Map(m) => Node::Expr(Expr::MapKey(m, Box::new(Expr::Lit(Value::String(name))))),
                        Node::Expr(_) => return Err(CompileError::Unsupported(format!("at offset {name_at}: no field {name:?} here"))),
                    };
                }
            } else {
                return Ok(node);
            }
        }
    }

    fn args(&mut self) -> Result<Vec<Expr>, CompileError> {
        let mut args = Vec::new();
        if self.eat(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat(")") {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }

    fn primary(&mut self) -> Result<Node, CompileError> {
        let at = self.at();
        Ok(Node::Expr(match self.next() {
            Tok::Int(v) => Expr::Lit(Value::Int(i64::try_from(v).map_err(|_| syntax(at, "integer literal out of range"))?)),
            Tok::Uint(v) => Expr::Lit(Value::Uint(v)),
            Tok::Double(v) => Expr::Lit(Value::Double(v)),
            Tok::Str(s) => Expr::Lit(Value::String(s)),
            Tok::Punct("(") => {
                let e = self.expr()?;
                self.expect(")")?;
                e
            }
            Tok::Punct("[") => {
                let mut items = Vec::new();
                if !self.eat("]") {
                    loop {
                        items.push(self.expr()?);
                        if self.eat("]") {
                            break;
                        }
                        self.expect(",")?;
                        if self.eat("]") {
                            break;
                        }
                    }
                }
                Expr::List(items)
            }
            Tok::Punct(".") => return Err(CompileError::Unsupported(format!("at offset {at}: leading-dot names are not supported"))),
            Tok::Ident(w) => match w.as_str() {
                "true" => Expr::Lit(Value::Bool(true)),
                "false" => Expr::Lit(Value::Bool(false)),
                "null" => Expr::Lit(Value::Null),
                _ if RESERVED.contains(&w.as_str()) || w == "in" => return Err(syntax(at, format!("{w:?} is a reserved word"))),
                _ if self.eat("(") => return self.global(&w, at),
                _ => return self.attribute(w, at),
            },
            t => return Err(syntax(at, format!("unexpected {}", describe(&t)))),
        }))
    }

    /// A dotted attribute name starting with `first`.
    fn attribute(&mut self, first: String, at: usize) -> Result<Node, CompileError> {
        let mut path = first;
        loop {
            if let Some((_, a)) = SCALARS.iter().find(|(n, _)| *n == path) {
                return Ok(Node::Expr(Expr::Attr(*a)));
            }
            if let Some((_, m)) = MAPS.iter().find(|(n, _)| *n == path) {
                return Ok(Node::Map(*m));
            }
            let extends = matches!(self.peek(), Tok::Punct("."))
                && matches!(self.toks.get(self.pos + 1), Some((_, Tok::Ident(_))))
                && !matches!(self.toks.get(self.pos + 2), Some((_, Tok::Punct("("))));
            if !extends {
                return Err(unknown_attribute(&path, at));
            }
            self.pos += 1;
            if let Tok::Ident(n) = self.next() {
                path.push('.');
                path.push_str(&n);
            }
        }
    }

    fn global(&mut self, name: &str, at: usize) -> Result<Node, CompileError> {
        if name == "has" {
            let inner_at = self.at();
            let node = self.member()?;
            self.expect(")")?;
            return Ok(Node::Expr(match node {
                Node::Expr(Expr::Attr(a)) => Expr::HasAttr(a),
                Node::Expr(Expr::MapKey(m, key)) => match *key {
                    Expr::Lit(Value::String(k)) => Expr::HasKey(m, k),
                    _ => return Err(syntax(inner_at, "has() takes a field selection, like has(request.headers.x)")),
                },
                _ => return Err(syntax(inner_at, "has() takes a field selection, like has(request.headers.x)")),
            }));
        }
        let args = self.args()?;
        let (func, n) = match name {
            "size" => (Func::Size, 1),
            "int" => (Func::Int, 1),
            "uint" => (Func::Uint, 1),
            "double" => (Func::Double, 1),
            "string" => (Func::String, 1),
            "matches" => {
                let Ok([s, p]) = <[Expr; 2]>::try_from(args) else {
                    return Err(syntax(at, "matches() takes 2 arguments"));
                };
                return Ok(Node::Expr(matches_call(s, p, at)?));
            }
            _ => return Err(CompileError::Unsupported(format!("at offset {at}: function {name}() is not supported"))),
        };
        if args.len() != n {
            return Err(syntax(at, format!("{name}() takes {n} argument(s), got {}", args.len())));
        }
        Ok(Node::Expr(Expr::Call(func, args)))
    }
}

fn expr_of(n: Node, at: usize) -> Result<Expr, CompileError> {
    match n {
        Node::Expr(e) => Ok(e),
        Node::Map(m) => Err(CompileError::Unsupported(format!(
            "at offset {at}: {} is a map: read one entry, as {}['x-user'], or test one with 'x-user' in {}",
            m.name(),
            m.name(),
            m.name()
        ))),
    }
}

fn method(recv: Expr, name: &str, args: Vec<Expr>, at: usize) -> Result<Expr, CompileError> {
    let (func, n) = match name {
        "startsWith" => (Func::StartsWith, 1),
        "endsWith" => (Func::EndsWith, 1),
        "contains" => (Func::Contains, 1),
        "size" => (Func::Size, 0),
        "matches" => {
            let Ok([p]) = <[Expr; 1]>::try_from(args) else {
                return Err(syntax(at, ".matches() takes 1 argument"));
            };
            return matches_call(recv, p, at);
        }
        _ => return Err(CompileError::Unsupported(format!("at offset {at}: method .{name}() is not supported"))),
    };
    if args.len() != n {
        return Err(syntax(at, format!(".{name}() takes {n} argument(s), got {}", args.len())));
    }
    let mut all = vec![recv];
    all.extend(args);
    Ok(Expr::Call(func, all))
}

/// `s.matches(re)`: the pattern must be a literal, compiled now (RE2 syntax, which the regex
/// crate shares), bounded in size.
fn matches_call(s: Expr, pattern: Expr, at: usize) -> Result<Expr, CompileError> {
    let Expr::Lit(Value::String(p)) = pattern else {
        return Err(CompileError::Unsupported(format!("at offset {at}: matches() needs a literal pattern")));
    };
    let re = regex::RegexBuilder::new(&p)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| CompileError::Unsupported(format!("at offset {at}: pattern {p:?}: {e}")))?;
    Ok(Expr::Matches(Box::new(s), Box::new(re)))
}

fn unknown_attribute(path: &str, at: usize) -> CompileError {
    let root = path.split('.').next().unwrap_or(path);
    if !ROOTS.contains(&root) {
        return CompileError::Unsupported(format!(
            "at offset {at}: unknown name {path:?}: expressions read Envoy's attributes, under {}",
            ROOTS.iter().map(|r| format!("{r}.")).collect::<Vec<_>>().join(", ")
        ));
    }
    let known: Vec<&str> =
        SCALARS.iter().map(|(n, _)| *n).chain(MAPS.iter().map(|(n, _)| *n)).filter(|n| n.starts_with(&format!("{root}."))).collect();
    CompileError::Unsupported(format!("at offset {at}: weft does not supply the attribute {path:?} (it supplies {})", known.join(", ")))
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::End => "the end".into(),
        Tok::Punct(p) => format!("{p:?}"),
        Tok::Ident(i) => format!("{i:?}"),
        Tok::Str(s) => format!("the string {s:?}"),
        Tok::Int(v) => v.to_string(),
        Tok::Uint(v) => format!("{v}u"),
        Tok::Double(v) => v.to_string(),
    }
}

pub(crate) fn parse(src: &str) -> Result<Expr, CompileError> {
    let toks = lex(src)?;
    let mut p = Parser { toks, pos: 0, depth: 0 };
    if matches!(p.peek(), Tok::End) {
        return Err(syntax(0, "the expression is empty"));
    }
    let e = p.expr()?;
    if !matches!(p.peek(), Tok::End) {
        return Err(syntax(p.at(), format!("unexpected {} after the expression", describe(p.peek()))));
    }
    Ok(e)
}
