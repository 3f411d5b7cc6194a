//! The machine side: the private bridge, one network namespace per workload joined to it by a
//! veth pair, and the namespace's own `/etc/hosts` (which `ip netns exec` mounts over
//! /etc/hosts for every process started in it).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use ipnet::Ipv4Net;

use crate::{io_err, LocalError};

/// Runs `ip` (or another tool) and returns stdout, or the failure with its stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<String, LocalError> {
    let out = Command::new(cmd).args(args).output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LocalError::Environment(format!("`{cmd}` is missing: {}", install_hint(cmd))),
        _ => LocalError::Command { command: format!("{cmd} {}", args.join(" ")), stderr: e.to_string() },
    })?;
    if !out.status.success() {
        return Err(LocalError::Command {
            command: format!("{cmd} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn install_hint(tool: &str) -> &'static str {
    match tool {
        "ip" => "install iproute2 (Debian/Ubuntu: apt-get install iproute2)",
        "iptables" | "iptables-restore" => "install iptables (Debian/Ubuntu: apt-get install iptables)",
        "setpriv" | "setsid" | "nsenter" => "install util-linux (Debian/Ubuntu: apt-get install util-linux)",
        _ => "install it and put it on PATH",
    }
}

/// What explicit mode is, for messages that offer it.
pub const EXPLICIT_MODE: &str = "explicit mode needs no privileges and no system tools: each workload gets \
     loopback addresses of its own (--loopback, default 127.77.0.0/16), its sidecar listens on one of them, \
     and the application is pointed at the sidecar (HTTP_PROXY) instead of being captured";

/// Why this process cannot build namespaces, bridges and capture, or None when it can: the
/// privileges first (without them the tools do not matter), then each tool, with how to
/// install it.
pub fn namespaces_blocked() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default().to_owned();
    let eff = u64::from_str_radix(&field("CapEff:"), 16).unwrap_or(0);
    const CAP_NET_ADMIN: u64 = 1 << 12;
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    if eff & CAP_NET_ADMIN == 0 || eff & CAP_SYS_ADMIN == 0 {
        let uid = field("Uid:").split_whitespace().nth(1).unwrap_or("?").to_owned();
        let who = if uid == "0" { "root without CAP_NET_ADMIN and CAP_SYS_ADMIN".to_owned() } else { format!("not root (uid {uid})") };
        return Some(format!(
            "this process is {who}; network namespaces, a bridge and iptables capture need root (CAP_NET_ADMIN and CAP_SYS_ADMIN)"
        ));
    }
    for tool in ["ip", "iptables", "nsenter", "setpriv", "setsid"] {
        if which(tool).is_none() {
            return Some(format!("`{tool}` is missing: {}", install_hint(tool)));
        }
    }
    None
}

/// Refuses early, with what to do, when this process cannot build namespaces.
pub fn check_privileges() -> Result<(), LocalError> {
    match namespaces_blocked() {
        None => Ok(()),
        Some(why) => Err(LocalError::Environment(format!(
            "weft up builds a network namespace per workload, but {why}.\nRun it as root (sudo), or run `weft up --explicit -f FILE`: \
             {EXPLICIT_MODE}."
        ))),
    }
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin", "/sbin"].map(PathBuf::from)).map(|d| d.join(tool)).find(|p| p.is_file())
}

/// The host interface already holding an address inside `net`, if any.
pub fn subnet_in_use(net: Ipv4Net) -> Result<Option<String>, LocalError> {
    let out = run("ip", &["-o", "-4", "addr", "show"])?;
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(pos) = words.iter().position(|w| *w == "inet") else { continue };
        let Some(addr) = words.get(pos + 1).and_then(|a| a.parse::<Ipv4Net>().ok()) else { continue };
        if net.contains(&addr.addr()) || addr.contains(&net.network()) {
            return Ok(Some(words.get(1).unwrap_or(&"?").to_string()));
        }
    }
    Ok(None)
}

pub fn create_bridge(name: &str, address: Ipv4Addr, net: Ipv4Net) -> Result<(), LocalError> {
    run("ip", &["link", "add", name, "type", "bridge"])?;
    run("ip", &["addr", "add", &format!("{address}/{}", net.prefix_len()), "dev", name])?;
    run("ip", &["link", "set", name, "up"]).map(|_| ())
}

pub fn delete_link(name: &str) {
    // Absent already (deleted with its namespace, or never made) is the goal.
    let _ = run("ip", &["link", "del", name]);
}

pub fn create_netns(name: &str) -> Result<(), LocalError> {
    run("ip", &["netns", "add", name]).map(|_| ())
}

pub fn delete_netns(name: &str) {
    let _ = run("ip", &["netns", "del", name]);
}

/// Lets a gateway's proxy (UID 1337) bind ports below 1024 in its own namespace, as Istio's
/// gateway pods do (`net.ipv4.ip_unprivileged_port_start=0` in their security context): the
/// sysctl is per network namespace.
pub fn allow_low_ports(netns: &str) -> Result<(), LocalError> {
    in_netns(netns, "sysctl", &["-q", "-w", "net.ipv4.ip_unprivileged_port_start=0"]).map(|_| ())
}

/// Runs a command inside a namespace.
fn in_netns(netns: &str, cmd: &str, args: &[&str]) -> Result<String, LocalError> {
    let mut full = vec!["netns", "exec", netns, cmd];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Joins `netns` to the bridge: `eth0` with `address`, loopback up, and a default route on
/// the link itself (no gateway), so every destination is routable — and therefore captured
/// — inside the namespace, yet nothing can leave the machine: the bridge has no uplink.
pub fn attach(netns: &str, bridge: &str, host_if: &str, address: Ipv4Addr, net: Ipv4Net) -> Result<(), LocalError> {
    let peer = format!("{host_if}p");
    run("ip", &["link", "add", host_if, "type", "veth", "peer", "name", &peer])?;
    run("ip", &["link", "set", &peer, "netns", netns])?;
    run("ip", &["link", "set", host_if, "master", bridge, "up"])?;
    in_netns(netns, "ip", &["link", "set", &peer, "name", "eth0"])?;
    in_netns(netns, "ip", &["addr", "add", &format!("{address}/{}", net.prefix_len()), "dev", "eth0"])?;
    in_netns(netns, "ip", &["link", "set", "eth0", "up"])?;
    in_netns(netns, "ip", &["link", "set", "lo", "up"])?;
    in_netns(netns, "ip", &["route", "add", "default", "dev", "eth0"]).map(|_| ())
}

/// Writes `/etc/netns/<netns>/hosts` (and an empty resolv.conf search list, so a name that is
/// not in the mesh fails at once instead of asking the host's resolver).
pub fn write_etc(netns: &str, hosts: &str) -> Result<(), LocalError> {
    let dir = etc_dir(netns);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let file = dir.join("hosts");
    std::fs::write(&file, hosts).map_err(io_err(&file))?;
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        "# weft up: names come from /etc/hosts; there is no DNS server in the mesh\noptions ndots:1 attempts:1 timeout:1\n",
    )
    .map_err(io_err(&resolv))
}

/// `/etc/netns/<netns>` for a workload whose sidecar answers its DNS: `hosts` (the workload
/// itself), a pod's `resolv.conf` (its namespace's search list, `ndots:5`, nameserver
/// 127.0.0.1, which capture sends to the sidecar; nothing listens there, so a name outside the
/// mesh fails at once), and `nsswitch.conf` (files, then DNS: no host mDNS module claiming
/// `.local` names first).
pub fn write_etc_dns(netns: &str, hosts: &str, namespace: &str) -> Result<(), LocalError> {
    let dir = etc_dir(netns);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let resolv = format!(
        "# weft up: the sidecar answers the mesh's names (DNS capture)\nnameserver {DNS_NAMESERVER}\n\
         search {namespace}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 attempts:2 timeout:2\n"
    );
    for (name, text) in [("hosts", hosts), ("resolv.conf", resolv.as_str()), ("nsswitch.conf", "hosts: files dns\n")] {
        let file = dir.join(name);
        std::fs::write(&file, text).map_err(io_err(&file))?;
    }
    Ok(())
}

/// The nameserver a DNS-capturing workload's resolv.conf names.
pub const DNS_NAMESERVER: &str = "127.0.0.1";

/// The directory `ip netns exec` mounts over /etc for `netns`.
pub fn etc_dir(netns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(netns)
}
