//! `weft-cni`'s stdin: the network config parsed, then what each CNI command would do with it
//! planned (nothing is executed). VERSION is run whole, since it only answers.

use std::collections::HashMap;
use std::path::PathBuf;

use weft_capture::cni::{self, conf, CniError, Command, Invocation, Work};
use weft_capture::Ruleset;

pub fn cni(data: &[u8]) {
    let vars = HashMap::from([("CNI_COMMAND".to_owned(), "VERSION".to_owned())]);
    let out = cni::run(&vars, data);
    assert!(out.success, "VERSION failed: {}", out.stdout);
    json_object(&out.stdout, "VERSION's answer");
    let conf = match conf::parse(data) {
        Ok(c) => c,
        Err(e) => return check_error(&e),
    };
    for command in [Command::Add, Command::Del, Command::Check, Command::Status, Command::Gc] {
        for netns in [Some(PathBuf::from("/var/run/netns/fuzz")), None] {
            let invocation = Invocation {
                command,
                container_id: "fuzz".into(),
                netns,
                ifname: "eth0".into(),
                args: vec![("K8S_POD_NAMESPACE".into(), "default".into()), ("K8S_POD_NAME".into(), "fuzz".into())],
            };
            let plan = match cni::plan(&invocation, &conf) {
                Ok(p) => p,
                Err(e) => {
                    check_error(&e);
                    continue;
                }
            };
            if command == Command::Add {
                json_object(&plan.reply, "ADD's result");
            }
            match &plan.work {
                Work::Capture { rules, .. } | Work::Verify { rules, .. } => crate::capture::check_rules(rules),
                Work::Release { cfg, .. } => crate::capture::check_rules(&Ruleset::build(cfg)),
                Work::Nothing { .. } | Work::Status => {}
            }
        }
    }
}

/// The spec's error object, with the error's own code.
fn check_error(e: &CniError) {
    let v = json_object(&e.to_json(cni::DEFAULT_VERSION), "an error result");
    assert_eq!(v.get("code").and_then(serde_json::Value::as_u64), Some(u64::from(e.code)), "{e}");
    assert!(!e.msg.is_empty(), "an error without a message: {e:?}");
}

fn json_object(text: &str, what: &str) -> serde_json::Value {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        other => panic!("{what} is not a JSON object: {text:?} ({other:?})"),
    }
}
