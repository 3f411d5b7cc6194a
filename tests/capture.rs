//! `weft capture` in a fresh network namespace, with both iptables backends: Istio's chains
//! appear, a second run gives the same rules, `--cleanup` removes them, and a bad value is
//! refused before anything is written.

use std::process::Output;

use weft_test_support::netns::Netns;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn capture(ns: &Netns, args: &[&str]) -> Output {
    ns.command(WEFT).arg("capture").args(args).output().expect("weft capture")
}

/// The namespace's rules as `save` prints them, without comments and counters.
fn rules(ns: &Netns, save: &str) -> String {
    let out = ns.command(save).output().expect("iptables-save");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")).collect()
}

fn text(o: &Output) -> String {
    format!("{:?}\n{}{}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn capture_is_idempotent_and_removable_with_both_backends() {
    for (backend, save) in [("legacy", "iptables-legacy-save"), ("nft", "iptables-nft-save")] {
        let ns = Netns::new(&format!("cap{backend}")).unwrap_or_else(|e| panic!("{e:#}"));
        let args = ["--iptables-backend", backend, "-i", "10.96.0.0/12", "-x", "10.96.0.1/32", "-o", "5432"];
        let first = capture(&ns, &args);
        assert!(first.status.success(), "{}", text(&first));
        let once = rules(&ns, save);
        for want in [
            ":ISTIO_INBOUND",
            ":ISTIO_REDIRECT",
            ":ISTIO_IN_REDIRECT",
            ":ISTIO_OUTPUT",
            "-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT",
            "-A ISTIO_OUTPUT -d 10.96.0.1/32 -j RETURN",
            "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
            "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
            "--uid-owner 1337 -j RETURN",
        ] {
            assert!(once.contains(want), "{backend}: missing {want:?} in\n{once}");
        }
        let second = capture(&ns, &args);
        assert!(second.status.success(), "{}", text(&second));
        assert_eq!(rules(&ns, save), once, "{backend}: a second run gives the same rules");
        assert_eq!(once.matches("-j ISTIO_OUTPUT").count(), 1, "{backend}: one jump from OUTPUT\n{once}");

        let clean = capture(&ns, &["--iptables-backend", backend, "--cleanup"]);
        assert!(clean.status.success(), "{}", text(&clean));
        let after = rules(&ns, save);
        assert!(!after.contains("ISTIO"), "{backend}: cleanup leaves nothing\n{after}");
    }
}

/// The istio-validation init container's job: with capture in place `--verify` passes; with
/// none, or with rules for other flags, it fails and says what differs.
#[test]
fn verify_passes_only_when_the_rules_are_in_place() {
    let ns = Netns::new("capverify").unwrap_or_else(|e| panic!("{e:#}"));
    let args = ["--iptables-backend", "nft", "-i", "10.96.0.0/12"];
    let before = capture(&ns, &[&args[..], &["--verify"]].concat());
    assert_eq!(before.status.code(), Some(2), "{}", text(&before));
    assert!(text(&before).contains("capture is not in place") && text(&before).contains("ISTIO_OUTPUT"), "{}", text(&before));
    let written = capture(&ns, &args);
    assert!(written.status.success(), "{}", text(&written));
    let after = capture(&ns, &[&args[..], &["--verify"]].concat());
    assert!(after.status.success(), "{}", text(&after));
    let other = capture(&ns, &["--iptables-backend", "nft", "-i", "10.0.0.0/8", "--verify"]);
    assert_eq!(other.status.code(), Some(2), "rules for another range are not these: {}", text(&other));
    assert_eq!(
        rules(&ns, "iptables-nft-save"),
        {
            let again = capture(&ns, &[&args[..], &["--verify"]].concat());
            assert!(again.status.success());
            rules(&ns, "iptables-nft-save")
        },
        "--verify writes nothing"
    );
}

#[test]
fn the_backend_already_in_use_is_detected() {
    let ns = Netns::new("capdetect").unwrap_or_else(|e| panic!("{e:#}"));
    // Someone else's rule in legacy tables: capture must write there too, or its rules
    // would sit in the other backend where the kernel path in use never sees them.
    ns.exec("iptables-legacy", &["-t", "filter", "-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "ACCEPT"]).expect("legacy rule");
    let out = capture(&ns, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("iptables-legacy"), "{}", text(&out));
    assert!(rules(&ns, "iptables-legacy-save").contains(":ISTIO_OUTPUT"));
    assert!(!rules(&ns, "iptables-nft-save").contains("ISTIO"));
}

#[test]
fn bad_values_are_refused_before_any_rule_is_written() {
    let ns = Netns::new("capbad").unwrap_or_else(|e| panic!("{e:#}"));
    for (args, names) in [
        (&["-i", "10.0.0/8"][..], "-i \"10.0.0/8\""),
        (&["-p", "70000"][..], "-p \"70000\""),
        (&["-d", "15090,abc"][..], "-d \"abc\""),
        (&["-m", "NAT"][..], "-m \"NAT\""),
        (&["--iptables-backend", "iptables"][..], "--iptables-backend"),
    ] {
        let out = capture(&ns, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(names), "{args:?} must name {names}: {}", text(&out));
    }
    for save in ["iptables-legacy-save", "iptables-nft-save"] {
        assert!(!rules(&ns, save).contains("ISTIO"), "{save}: nothing written");
    }
    let dry = capture(&ns, &["--dry-run", "-m", "TPROXY"]);
    assert!(dry.status.success(), "{}", text(&dry));
    let printed = String::from_utf8_lossy(&dry.stdout);
    assert!(printed.contains("*mangle") && printed.contains("TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006"), "{printed}");
    assert!(printed.contains("ip -f inet rule add fwmark 1337 lookup 133"), "{printed}");
    for save in ["iptables-legacy-save", "iptables-nft-save"] {
        assert!(!rules(&ns, save).contains("ISTIO"), "{save}: --dry-run writes nothing");
    }
}
