//! The rules istio-iptables writes, built from a [`CaptureConfig`] in the same order, as
//! `iptables-restore` input. Rules weft adds to the built-in chains (PREROUTING, OUTPUT) carry
//! the comment [`MARKER`], so a re-run or `--cleanup` finds exactly its own and no one else's.

use std::fmt::Write as _;

use crate::options::{CaptureConfig, DnsCapture, InboundPorts, InterceptMode, OutboundRanges};

/// Comment on every rule weft puts in a built-in chain.
pub const MARKER: &str = "weft-capture";

/// Istio's chain names, per table, in creation order.
pub const NAT_CHAINS: &[&str] = &["ISTIO_INBOUND", "ISTIO_REDIRECT", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT", "ISTIO_OUTPUT_DNS"];
pub const MANGLE_CHAINS: &[&str] = &["ISTIO_DIVERT", "ISTIO_TPROXY", "ISTIO_INBOUND"];
pub const RAW_CHAINS: &[&str] = &["ISTIO_OUTPUT_DNS", "ISTIO_INBOUND"];

/// Where inbound connections from the proxy to the app come from (Envoy's
/// InboundPassthroughCluster binds it), so they are not captured again.
const INBOUND_PASSTHROUGH_SOURCE: &str = "127.0.0.6/32";
const LOOPBACK: &str = "127.0.0.1/32";
/// The mark on the proxy's own packets to the app in TPROXY mode.
const OUTBOUND_MARK: &str = "1338";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    Raw,
    Mangle,
    Nat,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Raw => "raw",
            Table::Mangle => "mangle",
            Table::Nat => "nat",
        }
    }

    /// The chains weft (and Istio) own in this table.
    pub fn own_chains(self) -> &'static [&'static str] {
        match self {
            Table::Raw => RAW_CHAINS,
            Table::Mangle => MANGLE_CHAINS,
            Table::Nat => NAT_CHAINS,
        }
    }

    pub const ALL: [Table; 3] = [Table::Raw, Table::Mangle, Table::Nat];
}

/// One `-A` line: the chain and the arguments after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: Table,
    pub chain: &'static str,
    pub args: Vec<String>,
}

/// Whether `chain` is one of netfilter's own (where capture marks its rules), not Istio's.
pub fn is_builtin_chain(chain: &str) -> bool {
    matches!(chain, "PREROUTING" | "OUTPUT" | "INPUT" | "POSTROUTING" | "FORWARD")
}

/// Everything capture writes: iptables rules per table and, for TPROXY, the policy routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub rules: Vec<Rule>,
    /// `ip` argument lists (TPROXY's fwmark rule and local route).
    pub routes: Vec<Vec<String>>,
}

impl Ruleset {
    /// Builds istio-iptables' rules for `cfg`, in istio-iptables' order.
    pub fn build(cfg: &CaptureConfig) -> Ruleset {
        let mut b = Builder::default();
        let tproxy = cfg.mode == InterceptMode::Tproxy;
        for iface in &cfg.exclude_interfaces {
            b.nat("PREROUTING", &["-i", iface, "-j", "RETURN"]);
            b.nat("OUTPUT", &["-o", iface, "-j", "RETURN"]);
        }
        if tproxy {
            for iface in &cfg.exclude_interfaces {
                b.mangle("PREROUTING", &["-i", iface, "-j", "RETURN"]);
                b.mangle("OUTPUT", &["-o", iface, "-j", "RETURN"]);
            }
        }
        let tunnel = cfg.tunnel_port.to_string();
        b.nat("ISTIO_INBOUND", &["-p", "tcp", "--dport", &tunnel, "-j", "RETURN"]);
        b.nat("ISTIO_REDIRECT", &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &cfg.proxy_port.to_string()]);
        b.nat("ISTIO_IN_REDIRECT", &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &cfg.inbound_capture_port.to_string()]);
        inbound(&mut b, cfg);
        outbound(&mut b, cfg);
        let mut routes = Vec::new();
        if tproxy && cfg.inbound != InboundPorts::None {
            tproxy_marks(&mut b, cfg);
            let (mark, table) = (cfg.tproxy_mark.to_string(), cfg.tproxy_route_table.to_string());
            routes.push(args(&["-f", "inet", "rule", "add", "fwmark", &mark, "lookup", &table]));
            routes.push(args(&["-f", "inet", "route", "add", "local", "default", "dev", "lo", "table", &table]));
        }
        Ruleset { rules: b.rules, routes }
    }

    /// The tables this ruleset writes to.
    pub fn tables(&self) -> Vec<Table> {
        let mut t: Vec<Table> = self.rules.iter().map(|r| r.table).collect();
        t.sort();
        t.dedup();
        t
    }

    /// The chains of `table` this ruleset uses, in Istio's order.
    pub fn chains(&self, table: Table) -> Vec<&'static str> {
        table
            .own_chains()
            .iter()
            .copied()
            .filter(|c| self.rules.iter().any(|r| r.table == table && (r.chain == *c || r.jumps_to(c))))
            .collect()
    }

    /// The `-A` lines for `table`, built-in chain rules marked with [`MARKER`].
    pub fn lines(&self, table: Table) -> Vec<String> {
        self.rules
            .iter()
            .filter(|r| r.table == table)
            .map(|r| {
                if is_builtin_chain(r.chain) {
                    format!("-A {} -m comment --comment {MARKER} {}", r.chain, r.args.join(" "))
                } else {
                    format!("-A {} {}", r.chain, r.args.join(" "))
                }
            })
            .collect()
    }

    /// What `--dry-run` prints: iptables-restore input per table, then the `ip` commands.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for table in self.tables() {
            let _ = writeln!(out, "*{}", table.name());
            for chain in self.chains(table) {
                let _ = writeln!(out, ":{chain} - [0:0]");
            }
            for line in self.lines(table) {
                let _ = writeln!(out, "{line}");
            }
            let _ = writeln!(out, "COMMIT");
        }
        for route in &self.routes {
            let _ = writeln!(out, "ip {}", route.join(" "));
        }
        out
    }
}

impl Rule {
    fn jumps_to(&self, chain: &str) -> bool {
        self.args.windows(2).any(|w| w[0] == "-j" && w[1] == chain)
    }
}

#[derive(Default)]
struct Builder {
    rules: Vec<Rule>,
}

impl Builder {
    fn add(&mut self, table: Table, chain: &'static str, a: &[&str]) {
        self.rules.push(Rule { table, chain, args: args(a) });
    }
    fn nat(&mut self, chain: &'static str, a: &[&str]) {
        self.add(Table::Nat, chain, a);
    }
    fn mangle(&mut self, chain: &'static str, a: &[&str]) {
        self.add(Table::Mangle, chain, a);
    }
    fn raw(&mut self, chain: &'static str, a: &[&str]) {
        self.add(Table::Raw, chain, a);
    }
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

fn inbound(b: &mut Builder, cfg: &CaptureConfig) {
    let tproxy = cfg.mode == InterceptMode::Tproxy;
    let table = if tproxy { Table::Mangle } else { Table::Nat };
    if cfg.inbound == InboundPorts::None {
        return;
    }
    if tproxy {
        let mark = cfg.tproxy_mark.to_string();
        b.mangle("ISTIO_DIVERT", &["-j", "MARK", "--set-mark", &mark]);
        b.mangle("ISTIO_DIVERT", &["-j", "ACCEPT"]);
        let tproxy_mark = format!("{mark}/0xffffffff");
        let port = cfg.inbound_capture_port.to_string();
        b.mangle("ISTIO_TPROXY", &["!", "-d", LOOPBACK, "-p", "tcp", "-j", "TPROXY", "--tproxy-mark", &tproxy_mark, "--on-port", &port]);
        // Istio inserts these at the top of mangle ISTIO_INBOUND: the proxy's own marked
        // packets, its connections from 127.0.0.6, and the app talking to itself over lo.
        b.mangle("ISTIO_INBOUND", &["-p", "tcp", "-m", "mark", "--mark", &mark, "-j", "RETURN"]);
        b.mangle("ISTIO_INBOUND", &["-p", "tcp", "-s", INBOUND_PASSTHROUGH_SOURCE, "-i", "lo", "-j", "RETURN"]);
        b.mangle("ISTIO_INBOUND", &["-p", "tcp", "-i", "lo", "-m", "mark", "!", "--mark", OUTBOUND_MARK, "-j", "RETURN"]);
    }
    b.add(table, "PREROUTING", &["-p", "tcp", "-j", "ISTIO_INBOUND"]);
    match &cfg.inbound {
        InboundPorts::None => {}
        InboundPorts::All { except } => {
            for p in except {
                b.add(table, "ISTIO_INBOUND", &["-p", "tcp", "--dport", &p.to_string(), "-j", "RETURN"]);
            }
            if tproxy {
                b.mangle("ISTIO_INBOUND", &["-p", "tcp", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ISTIO_DIVERT"]);
                b.mangle("ISTIO_INBOUND", &["-p", "tcp", "-j", "ISTIO_TPROXY"]);
            } else {
                b.nat("ISTIO_INBOUND", &["-p", "tcp", "-j", "ISTIO_IN_REDIRECT"]);
            }
        }
        InboundPorts::Only(ports) => {
            for p in ports.iter().map(u16::to_string) {
                if tproxy {
                    b.mangle(
                        "ISTIO_INBOUND",
                        &["-p", "tcp", "--dport", &p, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ISTIO_DIVERT"],
                    );
                    b.mangle("ISTIO_INBOUND", &["-p", "tcp", "--dport", &p, "-j", "ISTIO_TPROXY"]);
                } else {
                    b.nat("ISTIO_INBOUND", &["-p", "tcp", "--dport", &p, "-j", "ISTIO_IN_REDIRECT"]);
                }
            }
        }
    }
}

fn outbound(b: &mut Builder, cfg: &CaptureConfig) {
    let dns = cfg.dns.as_ref();
    let tunnel = cfg.tunnel_port.to_string();
    b.nat("OUTPUT", &["-j", "ISTIO_OUTPUT"]);
    for p in cfg.outbound_ports_exclude.iter().map(u16::to_string) {
        b.nat("ISTIO_OUTPUT", &["-p", "tcp", "--dport", &p, "-j", "RETURN"]);
        b.nat("ISTIO_OUTPUT", &["-p", "udp", "--dport", &p, "-j", "RETURN"]);
    }
    b.nat("ISTIO_OUTPUT", &["-o", "lo", "-s", INBOUND_PASSTHROUGH_SOURCE, "-j", "RETURN"]);
    // Per proxy identity: the app calling itself through a service VIP comes back in via the
    // inbound path; the app talking to itself over lo is left alone; the proxy's own traffic
    // is never captured (that would loop).
    let owners = cfg
        .proxy_uids
        .iter()
        .map(|u| ("--uid-owner", u.to_string(), true))
        .chain(cfg.proxy_gids.iter().map(|g| ("--gid-owner", g.to_string(), false)));
    for (flag, id, is_uid) in owners {
        // With DNS capture the agent's own DNS port is exempt as well (uid only, as Istio has it).
        let ports = format!("53,{tunnel}");
        let not_ports: &[&str] =
            if dns.is_some() && is_uid { &["-m", "multiport", "!", "--dports", &ports] } else { &["!", "--dport", &tunnel] };
        let mut a = vec!["-o", "lo", "!", "-d", LOOPBACK, "-p", "tcp"];
        a.extend_from_slice(not_ports);
        a.extend(["-m", "owner", flag, &id, "-j", "ISTIO_IN_REDIRECT"]);
        b.nat("ISTIO_OUTPUT", &a);
        if !cfg.includes_loopback() {
            if dns.is_some() {
                b.nat("ISTIO_OUTPUT", &["-o", "lo", "-p", "tcp", "!", "--dport", "53", "-m", "owner", "!", flag, &id, "-j", "RETURN"]);
            } else {
                b.nat("ISTIO_OUTPUT", &["-o", "lo", "-m", "owner", "!", flag, &id, "-j", "RETURN"]);
            }
        }
        b.nat("ISTIO_OUTPUT", &["-m", "owner", flag, &id, "-j", "RETURN"]);
    }
    if let Some(dns) = dns {
        dns_rules(b, cfg, dns);
    }
    b.nat("ISTIO_OUTPUT", &["-d", LOOPBACK, "-j", "RETURN"]);
    for net in &cfg.outbound_exclude {
        b.nat("ISTIO_OUTPUT", &["-d", &net.to_string(), "-j", "RETURN"]);
    }
    for p in cfg.outbound_ports_include.iter().map(u16::to_string) {
        b.nat("ISTIO_OUTPUT", &["-p", "tcp", "--dport", &p, "-j", "ISTIO_REDIRECT"]);
    }
    match &cfg.outbound {
        OutboundRanges::None => {}
        OutboundRanges::All => b.nat("ISTIO_OUTPUT", &["-j", "ISTIO_REDIRECT"]),
        OutboundRanges::Only(nets) => {
            for net in nets {
                b.nat("ISTIO_OUTPUT", &["-d", &net.to_string(), "-j", "ISTIO_REDIRECT"]);
            }
        }
    }
}

fn dns_rules(b: &mut Builder, cfg: &CaptureConfig, dns: &DnsCapture) {
    const AGENT_DNS: &str = "15053";
    b.raw("OUTPUT", &["-j", "ISTIO_OUTPUT_DNS"]);
    b.nat("ISTIO_OUTPUT", &["-j", "ISTIO_OUTPUT_DNS"]);
    let servers: Vec<Option<String>> = match dns {
        DnsCapture::AllServers => vec![None],
        DnsCapture::Servers(s) => s.iter().map(|ip| Some(format!("{ip}/32"))).collect(),
    };
    for proto in ["tcp", "udp"] {
        for server in &servers {
            let mut a = vec!["-p", proto, "--dport", "53"];
            if let Some(s) = server {
                a.extend(["-d", s.as_str()]);
            }
            a.extend(["-j", "REDIRECT", "--to-ports", AGENT_DNS]);
            b.nat("ISTIO_OUTPUT_DNS", &a);
        }
    }
    // Separate conntrack zones for the agent's upstream queries and the app's queries, so
    // UDP conntrack entries of the two legs cannot collide.
    let owners =
        cfg.proxy_uids.iter().map(|u| ("--uid-owner", u.to_string())).chain(cfg.proxy_gids.iter().map(|g| ("--gid-owner", g.to_string())));
    for (flag, id) in owners {
        b.raw("ISTIO_OUTPUT_DNS", &["-p", "udp", "--dport", "53", "-m", "owner", flag, &id, "-j", "CT", "--zone", "1"]);
        b.raw("ISTIO_OUTPUT_DNS", &["-p", "udp", "--sport", AGENT_DNS, "-m", "owner", flag, &id, "-j", "CT", "--zone", "2"]);
    }
    b.raw("PREROUTING", &["-j", "ISTIO_INBOUND"]);
    for server in &servers {
        let mut out = vec!["-p", "udp", "--dport", "53"];
        let mut back = vec!["-p", "udp", "--sport", "53"];
        if let Some(s) = server {
            out.extend(["-d", s.as_str()]);
            back.extend(["-s", s.as_str()]);
        }
        out.extend(["-j", "CT", "--zone", "2"]);
        back.extend(["-j", "CT", "--zone", "1"]);
        b.raw("ISTIO_OUTPUT_DNS", &out);
        b.raw("ISTIO_INBOUND", &back);
    }
}

fn tproxy_marks(b: &mut Builder, cfg: &CaptureConfig) {
    let mark = cfg.tproxy_mark.to_string();
    b.mangle("PREROUTING", &["-p", "tcp", "-m", "mark", "--mark", &mark, "-j", "CONNMARK", "--save-mark"]);
    b.mangle("OUTPUT", &["-p", "tcp", "-o", "lo", "-m", "mark", "--mark", &mark, "-j", "RETURN"]);
    let owners =
        cfg.proxy_uids.iter().map(|u| ("--uid-owner", u.to_string())).chain(cfg.proxy_gids.iter().map(|g| ("--gid-owner", g.to_string())));
    for (flag, id) in owners {
        b.mangle(
            "OUTPUT",
            &["!", "-d", LOOPBACK, "-p", "tcp", "-o", "lo", "-m", "owner", flag, &id, "-j", "MARK", "--set-mark", OUTBOUND_MARK],
        );
    }
    b.mangle("OUTPUT", &["-p", "tcp", "-m", "connmark", "--mark", &mark, "-j", "CONNMARK", "--restore-mark"]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::RawOptions;

    fn build(f: impl FnOnce(&mut RawOptions)) -> Ruleset {
        let mut raw = RawOptions::default();
        f(&mut raw);
        Ruleset::build(&CaptureConfig::from_raw(&raw).expect("valid options"))
    }

    #[test]
    fn injected_pod_defaults_match_istio_iptables() {
        let r = build(|_| {});
        let want = "\
*nat
:ISTIO_INBOUND - [0:0]
:ISTIO_REDIRECT - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -m comment --comment weft-capture -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -m comment --comment weft-capture -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
";
        assert_eq!(r.render(), want);
    }

    #[test]
    fn include_and_exclude_ranges() {
        let r = build(|o| {
            o.outbound_ranges = "10.96.0.0/12,172.16.0.0/16".into();
            o.outbound_ranges_exclude = "10.96.0.1/32".into();
            o.outbound_ports_exclude = "5432".into();
            o.inbound_ports = "9080".into();
        });
        let nat = r.lines(Table::Nat);
        let pos = |s: &str| nat.iter().position(|l| l == s).unwrap_or_else(|| panic!("missing {s}\n{nat:#?}"));
        assert!(pos("-A ISTIO_OUTPUT -d 10.96.0.1/32 -j RETURN") < pos("-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT"));
        pos("-A ISTIO_OUTPUT -d 172.16.0.0/16 -j ISTIO_REDIRECT");
        assert!(pos("-A ISTIO_OUTPUT -p tcp --dport 5432 -j RETURN") < pos("-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN"));
        pos("-A ISTIO_INBOUND -p tcp --dport 9080 -j ISTIO_IN_REDIRECT");
        assert!(!nat.iter().any(|l| l == "-A ISTIO_OUTPUT -j ISTIO_REDIRECT"), "only the listed ranges are captured");
    }

    #[test]
    fn nothing_captured_when_both_lists_are_empty() {
        let r = build(|o| {
            o.outbound_ranges = String::new();
            o.inbound_ports = String::new();
        });
        let nat = r.lines(Table::Nat);
        assert!(!nat.iter().any(|l| l.contains("-j ISTIO_REDIRECT")), "{nat:#?}");
        assert!(!nat.iter().any(|l| l.starts_with("-A PREROUTING")), "{nat:#?}");
    }

    #[test]
    fn tproxy_uses_mangle_and_policy_routing() {
        let r = build(|o| o.mode = "TPROXY".into());
        assert_eq!(r.tables(), vec![Table::Mangle, Table::Nat]);
        let mangle = r.lines(Table::Mangle);
        assert!(
            mangle.contains(&"-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006".to_owned())
        );
        assert!(mangle.contains(&"-A PREROUTING -m comment --comment weft-capture -p tcp -j ISTIO_INBOUND".to_owned()));
        assert_eq!(
            mangle.last().map(String::as_str),
            Some("-A OUTPUT -m comment --comment weft-capture -p tcp -m connmark --mark 1337 -j CONNMARK --restore-mark")
        );
        assert!(!r.lines(Table::Nat).iter().any(|l| l.starts_with("-A PREROUTING")), "inbound is not NATed under TPROXY");
        assert_eq!(r.routes[0].join(" "), "-f inet rule add fwmark 1337 lookup 133");
        assert_eq!(r.routes[1].join(" "), "-f inet route add local default dev lo table 133");
    }

    #[test]
    fn dns_capture_goes_to_15053_with_conntrack_zones() {
        let r = build(|o| {
            o.redirect_dns = true;
            o.dns_servers = vec!["10.0.0.10".into()];
        });
        let nat = r.lines(Table::Nat);
        assert!(nat.contains(&"-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.0.0.10/32 -j REDIRECT --to-ports 15053".to_owned()), "{nat:#?}");
        assert!(nat.contains(&"-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS".to_owned()));
        let raw = r.lines(Table::Raw);
        assert!(raw.contains(&"-A ISTIO_INBOUND -p udp --sport 53 -s 10.0.0.10/32 -j CT --zone 1".to_owned()), "{raw:#?}");
        assert!(r.render().contains(":ISTIO_OUTPUT_DNS - [0:0]"));
    }
}
