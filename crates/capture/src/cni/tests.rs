//! The protocol without root: environment, planning, replies and errors. What the plan does
//! in a real namespace is tested end to end in `tests/cni.rs`.

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn add_env() -> HashMap<String, String> {
    env(&[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c0ffee"),
        ("CNI_NETNS", "/var/run/netns/pod"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=productpage-1"),
        ("CNI_PATH", "/opt/cni/bin"),
    ])
}

fn with(vars: &HashMap<String, String>, name: &str, value: Option<&str>) -> HashMap<String, String> {
    let mut v = vars.clone();
    match value {
        Some(x) => v.insert(name.to_owned(), x.to_owned()),
        None => v.remove(name),
    };
    v
}

const PREV: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/pod"}],
    "ips":[{"address":"10.1.2.3/24","interface":0}],"dns":{}}"#;

fn conf(extra: &str) -> NetConf {
    let text = format!(r#"{{"cniVersion":"1.0.0","name":"net","type":"weft-cni","prevResult":{PREV}{extra}}}"#);
    conf::parse(text.as_bytes()).expect("valid config")
}

fn error_of(outcome: &Outcome) -> Value {
    assert!(!outcome.success, "expected a failure, got {}", outcome.stdout);
    serde_json::from_str(&outcome.stdout).expect("the error is JSON")
}

#[test]
fn environment_is_read_and_checked() {
    let inv = Invocation::from_env(&add_env()).expect("valid");
    assert_eq!(inv.command, Command::Add);
    assert_eq!(inv.netns, Some(PathBuf::from("/var/run/netns/pod")));
    assert_eq!(inv.arg("K8S_POD_NAMESPACE"), Some("default"));

    let e = Invocation::from_env(&with(&add_env(), "CNI_NETNS", None)).expect_err("no netns");
    assert_eq!((e.code, e.msg.as_str()), (INVALID_ENVIRONMENT, "required environment variables missing: CNI_NETNS"));
    let e = Invocation::from_env(&with(&with(&add_env(), "CNI_NETNS", Some("")), "CNI_IFNAME", None)).expect_err("two missing");
    assert!(e.msg.ends_with("CNI_IFNAME, CNI_NETNS"), "{}", e.msg);
    let del = with(&with(&add_env(), "CNI_COMMAND", Some("DEL")), "CNI_NETNS", None);
    assert_eq!(Invocation::from_env(&del).expect("DEL needs no netns").netns, None);

    for (name, value) in [
        ("CNI_COMMAND", Some("ATTACH")),
        ("CNI_COMMAND", None),
        ("CNI_CONTAINERID", Some("-x")),
        ("CNI_IFNAME", Some("eth0/1")),
        ("CNI_IFNAME", Some("averyveryverylongname")),
        ("CNI_ARGS", Some("K8S_POD_NAMESPACE")),
    ] {
        let e = Invocation::from_env(&with(&add_env(), name, value)).expect_err(name);
        assert_eq!(e.code, INVALID_ENVIRONMENT, "{name}={value:?}");
        assert!(e.msg.contains(name), "{name}: {}", e.msg);
    }
    let version_only = env(&[("CNI_COMMAND", "VERSION")]);
    assert_eq!(Invocation::from_env(&version_only).expect("VERSION needs nothing else").command, Command::Version);
}

#[test]
fn add_passes_prev_result_through_in_the_configs_version() {
    let plan = plan(&Invocation::from_env(&add_env()).expect("env"), &conf("")).expect("plan");
    let Work::Capture { target, rules } = &plan.work else { panic!("expected capture, got {plan:?}") };
    assert_eq!(target, &Target::Netns("/var/run/netns/pod".into()));
    assert!(rules.render().contains("-A ISTIO_OUTPUT -j ISTIO_REDIRECT"));
    let mut reply: Value = serde_json::from_str(&plan.reply).expect("JSON");
    let prev: Value = serde_json::from_str(PREV).expect("JSON");
    assert_eq!(reply, prev, "nothing but cniVersion may change");

    let mut older = conf("");
    older.cni_version = "0.4.0".into();
    reply = serde_json::from_str(&super::plan(&Invocation::from_env(&add_env()).expect("env"), &older).expect("plan").reply).expect("JSON");
    assert_eq!(reply["cniVersion"], "0.4.0");
    assert_eq!(reply["ips"], prev["ips"]);
}

#[test]
fn first_in_chain_add_answers_an_empty_result() {
    let c = conf::parse(br#"{"cniVersion":"0.3.1","name":"net","type":"weft-cni"}"#).expect("valid");
    let reply: Value = serde_json::from_str(&plan(&Invocation::from_env(&add_env()).expect("env"), &c).expect("plan").reply).expect("JSON");
    assert_eq!(reply, json!({"cniVersion": "0.3.1", "interfaces": [], "ips": []}));
}

#[test]
fn excluded_namespaces_and_interception_none_touch_nothing() {
    let kube_system = with(&add_env(), "CNI_ARGS", Some("K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns"));
    let c = conf(r#","excludeNamespaces":["kube-system"]"#);
    for command in ["ADD", "DEL", "CHECK"] {
        let plan = plan(&Invocation::from_env(&with(&kube_system, "CNI_COMMAND", Some(command))).expect("env"), &c).expect("plan");
        assert!(matches!(&plan.work, Work::Nothing { reason } if reason.contains("kube-system")), "{command}: {plan:?}");
    }
    let add = plan(&Invocation::from_env(&kube_system).expect("env"), &c).expect("plan");
    assert_eq!(serde_json::from_str::<Value>(&add.reply).expect("JSON"), serde_json::from_str::<Value>(PREV).expect("JSON"));
    // Another namespace is captured.
    assert!(matches!(plan(&Invocation::from_env(&add_env()).expect("env"), &c).expect("plan").work, Work::Capture { .. }));
    let none = conf(r#","capture":{"interceptionMode":"NONE"}"#);
    assert!(matches!(plan(&Invocation::from_env(&add_env()).expect("env"), &none).expect("plan").work, Work::Nothing { .. }));
}

#[test]
fn del_is_best_effort() {
    let del = with(&add_env(), "CNI_COMMAND", Some("DEL"));
    let p = plan(&Invocation::from_env(&with(&del, "CNI_NETNS", None)).expect("env"), &conf("")).expect("plan");
    assert!(matches!(p.work, Work::Nothing { .. }), "no namespace, nothing to remove: {p:?}");
    assert_eq!(p.reply, "", "DEL prints nothing");
    // A config that went bad since ADD still removes the rules.
    let bad = conf(r#","capture":{"includeOutboundIPRanges":"10.0.0/8"}"#);
    let p = plan(&Invocation::from_env(&del).expect("env"), &bad).expect("plan");
    assert!(matches!(p.work, Work::Release { .. }), "{p:?}");
    // ADD refuses it.
    let e = plan(&Invocation::from_env(&add_env()).expect("env"), &bad).expect_err("ADD refuses");
    assert_eq!(e.code, INVALID_CONFIG);
}

#[test]
fn check_needs_prev_result_and_a_version_that_has_check() {
    let check = Invocation::from_env(&with(&add_env(), "CNI_COMMAND", Some("CHECK"))).expect("env");
    assert!(matches!(plan(&check, &conf("")).expect("plan").work, Work::Verify { .. }));
    let mut c = conf("");
    c.prev_result = None;
    let e = plan(&check, &c).expect_err("no prevResult");
    assert!(e.msg.contains("prevResult"), "{e:?}");
    let mut old = conf("");
    old.cni_version = "0.3.1".into();
    assert_eq!(plan(&check, &old).expect_err("0.3.1 has no CHECK").code, INCOMPATIBLE_VERSION);
    let gc = Invocation::from_env(&env(&[("CNI_COMMAND", "GC")])).expect("env");
    assert_eq!(plan(&gc, &conf("")).expect_err("1.0.0 has no GC").code, INCOMPATIBLE_VERSION);
}

#[test]
fn version_answers_in_the_asked_version() {
    let vars = env(&[("CNI_COMMAND", "VERSION")]);
    let out = run(&vars, br#"{"cniVersion":"1.0.0"}"#);
    assert!(out.success);
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).expect("JSON"),
        json!({"cniVersion": "1.0.0", "supportedVersions": SUPPORTED_VERSIONS})
    );
    let out = run(&vars, b"");
    assert_eq!(serde_json::from_str::<Value>(&out.stdout).expect("JSON")["cniVersion"], DEFAULT_VERSION);
}

#[test]
fn errors_are_the_specs_error_object() {
    let e = error_of(&run(&add_env(), b"{not json"));
    assert_eq!(e["code"], DECODING_FAILURE);
    assert_eq!(e["cniVersion"], DEFAULT_VERSION);
    assert!(e["msg"].as_str().is_some_and(|m| m.contains("line 1 column 2")), "{e}");
    assert!(e.get("details").is_some());

    let e = error_of(&run(&add_env(), br#"{"cniVersion":"0.2.0","name":"net","type":"weft-cni"}"#));
    assert_eq!(e["code"], INCOMPATIBLE_VERSION);

    let e = error_of(&run(
        &add_env(),
        br#"{"cniVersion":"0.4.0","name":"net","type":"weft-cni","capture":{"includeOutboundIPRanges":"10.0.0/8"}}"#,
    ));
    assert_eq!((e["code"].as_u64(), e["cniVersion"].as_str()), (Some(7), Some("0.4.0")));

    let e = error_of(&run(&env(&[]), b"{}"));
    assert_eq!(e["code"], INVALID_ENVIRONMENT);
}

#[test]
fn arbitrary_input_never_panics() {
    let inputs: [&[u8]; 8] = [
        b"",
        b"\xff\xfe",
        b"null",
        b"{\"cniVersion\":1}",
        b"{\"cniVersion\":\"1.0.0\",\"name\":\"\"}",
        b"{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"capture\":{\"excludeInterfaces\":\"\\u0000\"}}",
        b"{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"prevResult\":{\"dns\":{\"nameservers\":[1,null]}}}",
        b"{\"cniVersion\":\"1.1.0\",\"name\":\"n\",\"capture\":{\"includeInboundPorts\":\"99999999999999999999\"}}",
    ];
    for command in ["ADD", "CHECK", "GC"] {
        let vars = with(&with(&add_env(), "CNI_COMMAND", Some(command)), "CNI_NETNS", Some("/nonexistent/netns"));
        for input in inputs {
            let out = run(&vars, input);
            // GC has nothing to do; everything else fails before touching the namespace or
            // on its absence.
            if !out.success {
                let e: Value = serde_json::from_str(&out.stdout).expect("error JSON");
                assert!(e["code"].as_u64().is_some_and(|c| c > 0), "{e}");
            }
        }
    }
}
