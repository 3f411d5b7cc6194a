//! Writing a [`Ruleset`] into a network namespace, checking it is there, or taking it out again.
//!
//! Writing goes through one `iptables-restore --noflush` run: Istio's chains are (re)declared,
//! which empties them, weft's earlier rules in the built-in chains are deleted, and the new
//! rules appended, all in one commit per table. A second run converges to the same rules,
//! and a failure leaves the table as it was.
//!
//! Every command runs in a [`Target`]: this process's namespace (`weft capture`, an init
//! container), or another one entered with util-linux `nsenter --net=<path>` (the CNI plugin,
//! which the runtime runs in the host's namespace and hands the pod's as a path).

use std::ffi::OsString;
use std::fmt;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::backend::Backend;
use crate::options::CaptureConfig;
use crate::rules::{is_builtin_chain, Ruleset, Table, MARKER};

/// Where capture's commands run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This process's network namespace.
    Current,
    /// The namespace at this path (`/var/run/netns/<name>`, `/proc/<pid>/ns/net`), entered
    /// with `nsenter --net=<path>` for each command.
    Netns(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("`{tool}` is missing: {hint}")]
    MissingTool { tool: String, hint: String },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    /// The path is not (or no longer) a network namespace: deleted, unmounted, or never one.
    #[error("{path}: not a network namespace ({reason})")]
    NetnsGone { path: String, reason: String },
}

/// Writes `rules` (replacing any earlier capture rules) with `backend` in `target`.
pub fn apply(rules: &Ruleset, backend: Backend, target: &Target) -> Result<(), ApplyError> {
    converge(rules, backend, target)?;
    for route in &rules.routes {
        add_route(route, target)?;
    }
    Ok(())
}

/// Removes every capture rule and chain (weft's or istio-iptables'), and TPROXY's routing.
pub fn cleanup(cfg: &CaptureConfig, backend: Backend, target: &Target) -> Result<(), ApplyError> {
    converge(&Ruleset { rules: Vec::new(), routes: Vec::new() }, backend, target)?;
    let (mark, table) = (cfg.tproxy_mark.to_string(), cfg.tproxy_route_table.to_string());
    // Both may be absent (REDIRECT mode, or cleaned before); absence is the goal.
    while target.run("ip", &["-f", "inet", "rule", "del", "fwmark", &mark, "lookup", &table], None).is_ok() {}
    let _ = target.run("ip", &["-f", "inet", "route", "del", "local", "default", "dev", "lo", "table", &table], None);
    Ok(())
}

/// What differs between `rules` and what `target` holds, one line per difference; empty when
/// capture is in place exactly. iptables-save reorders and completes matches (`-m tcp`), so
/// each rule is looked up with `iptables -C`, which compares parsed rules; counting the rules
/// per chain then catches extra ones.
pub fn verify(rules: &Ruleset, backend: Backend, target: &Target) -> Result<Vec<String>, ApplyError> {
    let mut problems = Vec::new();
    for table in Table::ALL {
        let saved = target.run(backend.save(), &["-t", table.name()], None)?;
        let declared: Vec<&str> = saved.lines().filter_map(|l| l.strip_prefix(':')).filter_map(|l| l.split_whitespace().next()).collect();
        let wanted = rules.chains(table);
        let missing: Vec<&&str> = wanted.iter().filter(|c| !declared.contains(c)).collect();
        for chain in &missing {
            problems.push(format!("{} chain {chain} is missing", table.name()));
        }
        for chain in table.own_chains().iter().filter(|c| declared.contains(c) && !wanted.contains(c)) {
            problems.push(format!("{} chain {chain} is there but capture does not use it", table.name()));
        }
        if !missing.is_empty() {
            continue;
        }
        let lines = rules.lines(table);
        let mut chains: Vec<&str> = lines.iter().filter_map(|l| l.split_whitespace().nth(1)).collect();
        chains.sort_unstable();
        chains.dedup();
        for chain in chains {
            let want = lines.iter().filter(|l| l.split_whitespace().nth(1) == Some(chain)).count();
            let prefix = format!("-A {chain} ");
            let have =
                saved.lines().filter(|l| l.starts_with(&prefix) && (table.own_chains().contains(&chain) || ours_in_builtin(l))).count();
            if have != want {
                problems.push(format!("{} {chain} holds {have} capture rules, {want} expected", table.name()));
            }
        }
        for line in &lines {
            let mut args = vec!["-w", "10", "-t", table.name(), "-C"];
            args.extend(line.split_whitespace().skip(1));
            match target.run(backend.iptables(), &args, None) {
                Ok(_) => {}
                Err(ApplyError::Failed { .. }) => problems.push(format!("{} rule missing: {line}", table.name())),
                Err(e) => return Err(e),
            }
        }
    }
    for route in &rules.routes {
        let shown = if route.iter().any(|w| w == "rule") {
            // `-f inet rule add fwmark M lookup T` -> `ip -f inet rule list fwmark M lookup T`
            let list: Vec<&str> = route.iter().map(|w| if w == "add" { "list" } else { w.as_str() }).collect();
            target.run("ip", &list, None)?
        } else {
            let table = route.last().map(String::as_str).unwrap_or("main");
            target
                .run("ip", &["-f", "inet", "route", "show", "table", table], None)?
                .lines()
                .filter(|l| l.contains("local default"))
                .collect()
        };
        if shown.trim().is_empty() {
            let what: Vec<&str> = route.iter().map(String::as_str).filter(|w| *w != "add").collect();
            problems.push(format!("routing missing: {}", what.join(" ")));
        }
    }
    Ok(problems)
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
    is_builtin_chain(chain)
        && (line.contains(&format!("--comment {MARKER}"))
            || line.split_whitespace().collect::<Vec<_>>().windows(2).any(|w| w[0] == "-j" && w[1].starts_with("ISTIO_")))
}

fn converge(target_rules: &Ruleset, backend: Backend, target: &Target) -> Result<(), ApplyError> {
    let mut current = Vec::new();
    for table in Table::ALL {
        current.push((table, target.run(backend.save(), &["-t", table.name()], None)?));
    }
    match plan(target_rules, &current) {
        // -w: legacy iptables takes a host-wide lock, which a pod starting next door may hold.
        Some(input) => target.run(backend.restore(), &["--noflush", "-w", "10"], Some(&input)).map(|_| ()),
        None => Ok(()),
    }
}

fn add_route(route: &[String], target: &Target) -> Result<(), ApplyError> {
    let a: Vec<&str> = route.iter().map(String::as_str).collect();
    if a.contains(&"rule") {
        // `ip rule add` stacks duplicates: take any earlier copy out first.
        let del: Vec<&str> = a.iter().map(|w| if *w == "add" { "del" } else { w }).collect();
        while target.run("ip", &del, None).is_ok() {}
        target.run("ip", &a, None).map(|_| ())
    } else {
        let replace: Vec<&str> = a.iter().map(|w| if *w == "add" { "replace" } else { w }).collect();
        target.run("ip", &replace, None).map(|_| ())
    }
}

impl Target {
    /// Runs `cmd` in this namespace and returns its stdout; a non-zero exit is an error
    /// carrying stderr.
    pub(crate) fn run(&self, cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ApplyError> {
        let command = format!("{self}: {cmd} {}", args.join(" "));
        let mut process = match self {
            Target::Current => Command::new(cmd),
            Target::Netns(path) => {
                // Checked here so a deleted namespace is told apart from a failing command.
                if !path.exists() {
                    return Err(ApplyError::NetnsGone { path: path.display().to_string(), reason: "no such file".into() });
                }
                let mut net = OsString::from("--net=");
                net.push(path);
                let mut c = Command::new("nsenter");
                c.arg(net).arg(cmd);
                c
            }
        };
        let mut child = process
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => missing(if matches!(self, Target::Netns(_)) { "nsenter" } else { cmd }),
                _ => ApplyError::Failed { command: command.clone(), stderr: e.to_string() },
            })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).map_err(|e| ApplyError::Failed { command: command.clone(), stderr: e.to_string() })?;
        }
        let out = child.wait_with_output().map_err(|e| ApplyError::Failed { command: command.clone(), stderr: e.to_string() })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            if let Target::Netns(path) = self {
                // nsenter's own failures, before it runs `cmd`.
                if stderr.starts_with("nsenter: failed to execute") && stderr.contains("No such file") {
                    return Err(missing(cmd));
                }
                if stderr.starts_with("nsenter: cannot open") || stderr.starts_with("nsenter: reassociate to namespace") {
                    return Err(ApplyError::NetnsGone { path: path.display().to_string(), reason: stderr });
                }
            }
            let hint = if stderr.contains("Permission denied") || stderr.contains("Operation not permitted") {
                " (capture needs root or CAP_NET_ADMIN in this network namespace)"
            } else {
                ""
            };
            return Err(ApplyError::Failed { command, stderr: format!("{stderr}{hint}") });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Current => f.write_str("this network namespace"),
            Target::Netns(path) => write!(f, "netns {}", path.display()),
        }
    }
}

fn missing(tool: &str) -> ApplyError {
    let hint = match tool {
        "ip" => "install iproute2",
        "nsenter" => "install util-linux (it enters the pod's network namespace)",
        _ => "install the iptables package (Debian/Ubuntu: apt-get install iptables)",
    };
    ApplyError::MissingTool { tool: tool.into(), hint: hint.into() }
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
