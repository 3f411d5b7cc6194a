//! istio-iptables' options as `weft capture` and the CNI plugin take them: values (flags,
//! annotations, resolv.conf) into a checked `CaptureConfig`, into rules, into the
//! `iptables-restore` input planned against what a namespace already holds.
//!
//! Input: lines `KEY=VALUE`. KEY is a flag letter (`p z u g m b d i x o q c t r`), an Istio
//! annotation name (`includeOutboundIPRanges`…), `redirect-dns` or `capture-all-dns` (`true`),
//! `resolv` (a resolv.conf line), or a table name (`nat`, `mangle`, `raw`) whose value is a
//! line of that table's `iptables-save` output. Other lines are ignored.

use weft_capture::apply;
use weft_capture::options::resolv_conf_servers;
use weft_capture::rules::Table;
use weft_capture::{CaptureConfig, RawOptions, Ruleset};

/// The options `OptionError` may name: istio-iptables' flags.
const OPTIONS: &[&str] = &["-p", "-z", "-u", "-g", "-m", "-b", "-d", "-i", "-x", "-o", "-q", "-c", "-t", "-r", "--redirect-dns"];

pub fn capture_options(data: &[u8]) {
    // Flags and annotations are strings: clap and the JSON reader refuse what is not UTF-8.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut raw = RawOptions::default();
    let mut resolv = String::new();
    let mut saved: Vec<(Table, String)> = Table::ALL.iter().map(|t| (*t, String::new())).collect();
    for line in text.split('\n') {
        let Some((key, value)) = line.split_once('=') else { continue };
        let field = match key {
            "p" => &mut raw.proxy_port,
            "z" => &mut raw.inbound_capture_port,
            "u" => &mut raw.proxy_uid,
            "g" => &mut raw.proxy_gid,
            "m" => &mut raw.mode,
            "b" => &mut raw.inbound_ports,
            "d" => &mut raw.inbound_ports_exclude,
            "i" => &mut raw.outbound_ranges,
            "x" => &mut raw.outbound_ranges_exclude,
            "o" => &mut raw.outbound_ports_exclude,
            "q" => &mut raw.outbound_ports_include,
            "c" => &mut raw.exclude_interfaces,
            "t" => &mut raw.tproxy_mark,
            "r" => &mut raw.tproxy_route_table,
            "redirect-dns" => {
                raw.redirect_dns = value == "true";
                continue;
            }
            "capture-all-dns" => {
                raw.capture_all_dns = value == "true";
                continue;
            }
            "resolv" => {
                resolv.push_str(value);
                resolv.push('\n');
                continue;
            }
            "nat" | "mangle" | "raw" => {
                if let Some((_, s)) = saved.iter_mut().find(|(t, _)| t.name() == key) {
                    s.push_str(value);
                    s.push('\n');
                }
                continue;
            }
            name => {
                raw.set_annotation(name, value);
                continue;
            }
        };
        *field = value.to_owned();
    }
    raw.dns_servers = resolv_conf_servers(&resolv);
    let cfg = match CaptureConfig::from_raw(&raw) {
        Ok(cfg) => cfg,
        Err(e) => {
            assert!(OPTIONS.contains(&e.option), "an error names {:?}, which is not an option: {e}", e.option);
            return;
        }
    };
    let rules = Ruleset::build(&cfg);
    check_rules(&rules);
    let _ = rules.render();
    if let Some(input) = apply::plan(&rules, &saved) {
        check_restore_input(&input);
    }
    // `--cleanup` plans against the same state with nothing wanted.
    if let Some(input) = apply::plan(&Ruleset { rules: Vec::new(), routes: Vec::new() }, &saved) {
        check_restore_input(&input);
    }
}

/// Every rule argument is one word of plain text: `iptables-restore` splits its input on
/// whitespace and lines, so a value that carried a space or a newline would inject a rule.
pub(crate) fn check_rules(rules: &Ruleset) {
    let words = rules.rules.iter().flat_map(|r| r.args.iter()).chain(rules.routes.iter().flatten());
    for w in words {
        assert!(!w.is_empty() && w.bytes().all(|b| b.is_ascii_graphic()), "a rule argument that is not one plain word: {w:?}");
    }
}

/// One `*table … COMMIT` block per table, each line one command.
fn check_restore_input(input: &str) {
    let opened = input.lines().filter(|l| l.starts_with('*')).count();
    let committed = input.lines().filter(|l| *l == "COMMIT").count();
    assert_eq!(opened, committed, "iptables-restore input with unbalanced tables:\n{input}");
    assert!(opened <= Table::ALL.len(), "a table written twice:\n{input}");
}
