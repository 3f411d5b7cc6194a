use std::collections::BTreeMap;

use crate::{response_flag_bits_for_tests as flags, Activation, Attribute, CompileError, MapAttribute, Program, Value};

/// One request's attributes.
#[derive(Default)]
struct Req {
    scalars: BTreeMap<&'static str, Value>,
    headers: BTreeMap<String, String>,
}

impl Activation for Req {
    fn get(&self, a: Attribute) -> Option<Value> {
        self.scalars.get(a.name()).cloned()
    }
    fn get_key(&self, m: MapAttribute, key: &str) -> Option<String> {
        (m == MapAttribute::RequestHeaders).then(|| self.headers.get(key).cloned()).flatten()
    }
}

fn req(code: i64, flags_text: &str) -> Req {
    let mut r = Req::default();
    r.scalars.insert("response.code", Value::Int(code));
    r.scalars.insert("response.flags", Value::Uint(flags(flags_text)));
    r.scalars.insert("request.method", Value::String("GET".into()));
    r.scalars.insert("request.path", Value::String("/api/v1/items?x=1".into()));
    r.scalars.insert("xds.cluster_name", Value::String("outbound|9080||reviews.default.svc.cluster.local".into()));
    r.headers.insert("x-user".into(), "jason".into());
    r
}

fn yes(src: &str, r: &Req) -> bool {
    Program::compile(src).unwrap_or_else(|e| panic!("{src}: {e}")).matches(r)
}

#[test]
fn istios_documented_filters_select_what_they_say() {
    let ok = req(200, "-");
    let failed = req(503, "UH");
    for (src, on_ok, on_failed) in [
        ("response.code >= 400", false, true),
        ("response.code >= 500 || xds.cluster_name == 'BlackHoleCluster'", false, true),
        ("response.flags != 0u", false, true),
        ("response.flags != 0", false, true),
        ("response.flags == 0x2u", false, true),
        ("request.headers['x-user'] == 'jason' && response.code == 200", true, false),
        ("'x-user' in request.headers", true, true),
        ("has(request.headers.x_missing)", false, false),
        ("request.path.startsWith('/api/') && !request.path.contains('health')", true, true),
        ("request.method in ['GET', 'HEAD']", true, true),
        ("request.path.matches('^/api/v[0-9]+/')", true, true),
        ("size(request.path) > 5 ? response.code < 300 : false", true, false),
        ("int('12') + 3 == 15", true, true),
        ("string(response.code) == '503'", false, true),
    ] {
        assert_eq!(yes(src, &ok), on_ok, "{src} on 200");
        assert_eq!(yes(src, &failed), on_failed, "{src} on 503 UH");
    }
}

#[test]
fn an_error_is_not_a_match_unless_the_other_side_decides() {
    let r = req(200, "-");
    // A header that is absent is an error: not logged, as Envoy's filter does.
    assert!(!yes("request.headers['absent'] == 'x'", &r));
    assert!(yes("request.headers['absent'] == 'x' || response.code == 200", &r));
    assert!(yes("response.code == 200 || request.headers['absent'] == 'x'", &r));
    assert!(!yes("request.headers['absent'] == 'x' && response.code == 200", &r));
    // An attribute a TCP connection does not have.
    assert!(!yes("request.size > 0", &r));
    // Not a boolean.
    assert!(!yes("response.code", &r));
    assert_eq!(Program::compile("response.code + 1").map(|p| p.label(&r)).ok().flatten().as_deref(), Some("201"));
    assert_eq!(Program::compile("9223372036854775807 + 1").map(|p| p.label(&r)).ok().flatten(), None, "overflow is an error");
}

#[test]
fn names_weft_does_not_supply_are_refused_by_name() {
    for (src, says) in [
        ("xds.node.id == 'x'", "xds.node.id"),
        ("filter_state['wasm.upstream_peer'] == 'x'", "filter_state"),
        ("response.code >= 400 && foo", "\"foo\""),
        ("request.headers == 1", "is a map"),
        ("request.time > 0", "request.time"),
        ("request.path.lowerAscii() == 'x'", "lowerAscii"),
        ("b'abc' == 'x'", "bytes"),
        ("request.path.matches(request.host)", "literal pattern"),
        ("request.path.matches('(')", "pattern"),
    ] {
        let e = Program::compile(src).err().unwrap_or_else(|| panic!("{src} compiled"));
        assert!(e.to_string().contains(says), "{src}: {e}");
    }
}

#[test]
fn syntax_errors_say_where() {
    for src in ["", "response.code >=", "(response.code", "response.code == 'a", "1 2", "a.", "response.code ==== 1", "if"] {
        let e = Program::compile(src).err().unwrap_or_else(|| panic!("{src:?} compiled"));
        assert!(matches!(e, CompileError::Syntax { .. } | CompileError::Unsupported(_)), "{src:?}: {e}");
    }
    let Err(CompileError::Syntax { at, .. }) = Program::compile("response.code >= 400 &&& 1") else { panic!("syntax error") };
    assert_eq!(at, 23);
}

#[test]
fn hostile_expressions_are_bounded() {
    let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(Program::compile(&deep).is_err());
    let long_chain = vec!["response.code == 1"; 5_000].join(" || ");
    assert!(Program::compile(&long_chain).is_err(), "a chain longer than the depth cap is refused");
    let nots = format!("{}true", "!".repeat(10_000));
    assert!(Program::compile(&nots).is_err());
    assert!(Program::compile(&"a".repeat(crate::MAX_LEN + 1)).is_err());
}

#[test]
fn literals_read_as_cel_writes_them() {
    let r = Req::default();
    for (src, want) in [
        ("'a\\'b' + \"c\\n\"", Value::String("a'bc\n".into())),
        ("r'\\d+'", Value::String("\\d+".into())),
        ("'''multi\nline'''", Value::String("multi\nline".into())),
        ("'\\u00e9'", Value::String("é".into())),
        ("-9223372036854775808", Value::Int(i64::MIN)),
        ("1.5e2", Value::Double(150.0)),
        ("18446744073709551615u", Value::Uint(u64::MAX)),
        ("7 / 2 * 2 % 5", Value::Int(1)),
        ("[1, 2,] + [3]", Value::List(vec![Value::Int(1), Value::Int(2), Value::Int(3)])),
    ] {
        assert_eq!(Program::compile(src).unwrap_or_else(|e| panic!("{src}: {e}")).eval(&r), Ok(want), "{src}");
    }
}
