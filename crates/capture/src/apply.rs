//! Writing a [`Ruleset`] into the current network namespace, or taking it out again.
//!
//! Both go through one `iptables-restore --noflush` run: Istio's chains are (re)declared,
//! which empties them, weft's earlier rules in the built-in chains are deleted, and the new
//! rules appended, all in one commit per table. A second run converges to the same rules,
//! and a failure leaves the table as it was.

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::backend::Backend;
use crate::options::CaptureConfig;
use crate::rules::{Ruleset, Table, MARKER};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("`{tool}` is missing: {hint}")]
    MissingTool { tool: String, hint: String },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
}

/// Writes `rules` (replacing any earlier capture rules) with `backend`.
pub fn apply(rules: &Ruleset, backend: Backend) -> Result<(), ApplyError> {
    converge(rules, backend)?;
    for route in &rules.routes {
        add_route(route)?;
    }
    Ok(())
}

/// Removes every capture rule and chain (weft's or istio-iptables'), and TPROXY's routing.
pub fn cleanup(cfg: &CaptureConfig, backend: Backend) -> Result<(), ApplyError> {
    converge(&Ruleset { rules: Vec::new(), routes: Vec::new() }, backend)?;
    let (mark, table) = (cfg.tproxy_mark.to_string(), cfg.tproxy_route_table.to_string());
    // Both may be absent (REDIRECT mode, or cleaned before); absence is the goal.
    while run("ip", &["-f", "inet", "rule", "del", "fwmark", &mark, "lookup", &table], None).is_ok() {}
    let _ = run("ip", &["-f", "inet", "route", "del", "local", "default", "dev", "lo", "table", &table], None);
    Ok(())
}

/// The restore input that takes the namespace from `current` (iptables-save output per
/// table) to `target`; None when nothing is to be done.
pub fn plan(target: &Ruleset, current: &[(Table, String)]) -> Option<String> {
    let mut out = String::new();
    for table in Table::ALL {
        let saved = current.iter().find(|(t, _)| *t == table).map(|(_, s)| s.as_str()).unwrap_or("");
        let existing: Vec<&str> = saved
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| table.own_chains().contains(c))
            .collect();
        let stale_rules: Vec<&str> = saved.lines().filter(|l| ours_in_builtin(l)).collect();
        let wanted = target.chains(table);
        if existing.is_empty() && stale_rules.is_empty() && wanted.is_empty() {
            continue;
        }
        out.push_str(&format!("*{}\n", table.name()));
        for chain in &wanted {
            out.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for rule in &stale_rules {
            out.push_str(&format!("-D{}\n", &rule[2..]));
        }
        let unwanted: Vec<&&str> = existing.iter().filter(|c| !wanted.contains(c)).collect();
        for chain in &unwanted {
            out.push_str(&format!("-F {chain}\n"));
        }
        for chain in &unwanted {
            out.push_str(&format!("-X {chain}\n"));
        }
        for line in target.lines(table) {
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    (!out.is_empty()).then_some(out)
}

/// A rule in a built-in chain that capture put there: marked by weft, or a jump into one of
/// Istio's chains (left by istio-iptables).
fn ours_in_builtin(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("-A ") else { return false };
    let chain = rest.split_whitespace().next().unwrap_or("");
    let builtin = matches!(chain, "PREROUTING" | "OUTPUT" | "INPUT" | "POSTROUTING" | "FORWARD");
    builtin
        && (line.contains(&format!("--comment {MARKER}"))
            || line.split_whitespace().collect::<Vec<_>>().windows(2).any(|w| w[0] == "-j" && w[1].starts_with("ISTIO_")))
}

fn converge(target: &Ruleset, backend: Backend) -> Result<(), ApplyError> {
    let mut current = Vec::new();
    for table in Table::ALL {
        current.push((table, run(backend.save(), &["-t", table.name()], None)?));
    }
    match plan(target, &current) {
        Some(input) => run(backend.restore(), &["--noflush"], Some(&input)).map(|_| ()),
        None => Ok(()),
    }
}

fn add_route(route: &[String]) -> Result<(), ApplyError> {
    let a: Vec<&str> = route.iter().map(String::as_str).collect();
    if a.contains(&"rule") {
        // `ip rule add` stacks duplicates: take any earlier copy out first.
        let del: Vec<&str> = a.iter().map(|w| if *w == "add" { "del" } else { w }).collect();
        while run("ip", &del, None).is_ok() {}
        run("ip", &a, None).map(|_| ())
    } else {
        let replace: Vec<&str> = a.iter().map(|w| if *w == "add" { "replace" } else { w }).collect();
        run("ip", &replace, None).map(|_| ())
    }
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ApplyError> {
    let command = format!("{cmd} {}", args.join(" "));
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ApplyError::MissingTool {
                tool: cmd.into(),
                hint: if cmd == "ip" {
                    "install iproute2".into()
                } else {
                    "install the iptables package (Debian/Ubuntu: apt-get install iptables)".into()
                },
            },
            _ => ApplyError::Failed { command: command.clone(), stderr: e.to_string() },
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).map_err(|e| ApplyError::Failed { command: command.clone(), stderr: e.to_string() })?;
    }
    let out = child.wait_with_output().map_err(|e| ApplyError::Failed { command: command.clone(), stderr: e.to_string() })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let hint = if stderr.contains("Permission denied") || stderr.contains("Operation not permitted") {
            " (capture needs root or CAP_NET_ADMIN in this network namespace)"
        } else {
            ""
        };
        return Err(ApplyError::Failed { command, stderr: format!("{stderr}{hint}") });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::RawOptions;

    fn target() -> Ruleset {
        Ruleset::build(&CaptureConfig::from_raw(&RawOptions::default()).expect("defaults"))
    }

    #[test]
    fn fresh_namespace_gets_declarations_and_rules_only() {
        let input = plan(&target(), &[]).expect("something to do");
        assert!(input.starts_with("*nat\n:ISTIO_INBOUND - [0:0]\n"), "{input}");
        assert!(!input.contains("-D ") && !input.contains("-X "), "{input}");
        assert!(input.ends_with("COMMIT\n"));
    }

    #[test]
    fn rerun_deletes_earlier_jumps_and_keeps_foreign_rules() {
        let saved = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:ISTIO_INBOUND - [0:0]\n:ISTIO_OUTPUT - [0:0]\n\
            -A PREROUTING -p tcp -m comment --comment weft-capture -j ISTIO_INBOUND\n\
            -A OUTPUT -j ISTIO_OUTPUT\n-A OUTPUT -d 10.1.0.0/16 -j ACCEPT\nCOMMIT\n";
        let input = plan(&target(), &[(Table::Nat, saved.into())]).expect("plan");
        assert!(input.contains("-D PREROUTING -p tcp -m comment --comment weft-capture -j ISTIO_INBOUND\n"), "{input}");
        assert!(input.contains("-D OUTPUT -j ISTIO_OUTPUT\n"), "istio-iptables' own jump is replaced too: {input}");
        assert!(!input.contains("10.1.0.0/16"), "someone else's rule is left alone: {input}");
    }

    #[test]
    fn cleanup_flushes_then_deletes_chains() {
        let saved = "*nat\n:ISTIO_INBOUND - [0:0]\n:ISTIO_IN_REDIRECT - [0:0]\n-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT\nCOMMIT\n";
        let input = plan(&Ruleset { rules: vec![], routes: vec![] }, &[(Table::Nat, saved.into())]).expect("plan");
        assert_eq!(input, "*nat\n-F ISTIO_INBOUND\n-F ISTIO_IN_REDIRECT\n-X ISTIO_INBOUND\n-X ISTIO_IN_REDIRECT\nCOMMIT\n");
        assert_eq!(plan(&Ruleset { rules: vec![], routes: vec![] }, &[(Table::Nat, "*nat\nCOMMIT\n".into())]), None);
    }
}
