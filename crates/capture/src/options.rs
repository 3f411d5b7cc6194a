//! istio-iptables' options, as strings in (from flags, environment or pod annotations) and a
//! checked [`CaptureConfig`] out. Where istio-iptables skips a bad CIDR "for bug
//! compatibility", weft refuses it: a typo in `includeOutboundIPRanges` would otherwise
//! silently send traffic around the sidecar.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The proxy's own inbound ports (Envoy's Prometheus port, the health port, the agent's status
/// port), never captured; an `excludeInboundPorts` annotation adds to them, as Istio's injector
/// and istio-cni do.
pub const PROXY_INBOUND_PORTS: &str = "15090,15021,15020";

/// Istio's pod annotation names that shape capture (`traffic.sidecar.istio.io/<name>`;
/// `interceptionMode` is `sidecar.istio.io/interceptionMode`), which the CNI config's `capture`
/// block and `weft up` workloads also use.
pub const ANNOTATIONS: &[&str] = &[
    "interceptionMode",
    "includeOutboundIPRanges",
    "excludeOutboundIPRanges",
    "includeInboundPorts",
    "excludeInboundPorts",
    "excludeOutboundPorts",
    "includeOutboundPorts",
    "excludeInterfaces",
];

/// The options exactly as istio-iptables spells them; every field is the raw flag value.
/// Defaults are what Istio's sidecar injector passes, so `weft capture` with no flags
/// captures like an injected pod does (istio-iptables' own empty defaults capture nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOptions {
    /// `-p`: where outbound traffic goes.
    pub proxy_port: String,
    /// `-z`: where inbound traffic goes.
    pub inbound_capture_port: String,
    /// `-u`: the proxy's UIDs, comma separated.
    pub proxy_uid: String,
    /// `-g`: the proxy's GIDs, comma separated.
    pub proxy_gid: String,
    /// `-m`: REDIRECT or TPROXY.
    pub mode: String,
    /// `-b`: inbound ports to capture, `*` for all, empty for none.
    pub inbound_ports: String,
    /// `-d`: inbound ports not captured when `-b` is `*`.
    pub inbound_ports_exclude: String,
    /// `-i`: outbound destinations captured (`*`, empty, or CIDRs).
    pub outbound_ranges: String,
    /// `-x`: outbound destinations never captured.
    pub outbound_ranges_exclude: String,
    /// `-o`: outbound ports never captured.
    pub outbound_ports_exclude: String,
    /// `-q`: outbound ports always captured, whatever the destination.
    pub outbound_ports_include: String,
    /// `-c`: interfaces whose traffic is never captured.
    pub exclude_interfaces: String,
    /// `-t`: the mark TPROXY puts on inbound packets.
    pub tproxy_mark: String,
    /// `-r`: the routing table TPROXY-marked packets are looked up in.
    pub tproxy_route_table: String,
    /// `--redirect-dns`: DNS (port 53) to the agent on 15053.
    pub redirect_dns: bool,
    /// `--capture-all-dns`: every DNS destination, not only the resolv.conf servers.
    pub capture_all_dns: bool,
    /// The nameservers to capture DNS for when not all (resolv.conf's, read by the caller).
    pub dns_servers: Vec<String>,
}

impl Default for RawOptions {
    fn default() -> Self {
        RawOptions {
            proxy_port: "15001".into(),
            inbound_capture_port: "15006".into(),
            proxy_uid: "1337".into(),
            proxy_gid: "1337".into(),
            mode: "REDIRECT".into(),
            inbound_ports: "*".into(),
            inbound_ports_exclude: PROXY_INBOUND_PORTS.into(),
            outbound_ranges: "*".into(),
            outbound_ranges_exclude: String::new(),
            outbound_ports_exclude: String::new(),
            outbound_ports_include: String::new(),
            exclude_interfaces: String::new(),
            tproxy_mark: "1337".into(),
            tproxy_route_table: "133".into(),
            redirect_dns: false,
            capture_all_dns: false,
            dns_servers: Vec::new(),
        }
    }
}

impl RawOptions {
    /// Sets the option the annotation `name` (one of [`ANNOTATIONS`]) stands for, as Istio's
    /// injector turns it into an istio-iptables flag; false for any other name.
    pub fn set_annotation(&mut self, name: &str, value: &str) -> bool {
        let field = match name {
            "interceptionMode" => &mut self.mode,
            "includeOutboundIPRanges" => &mut self.outbound_ranges,
            "excludeOutboundIPRanges" => &mut self.outbound_ranges_exclude,
            "includeInboundPorts" => &mut self.inbound_ports,
            "excludeOutboundPorts" => &mut self.outbound_ports_exclude,
            "includeOutboundPorts" => &mut self.outbound_ports_include,
            "excludeInterfaces" => &mut self.exclude_interfaces,
            "excludeInboundPorts" => {
                self.inbound_ports_exclude = match value.trim() {
                    "" => PROXY_INBOUND_PORTS.to_owned(),
                    ports => format!("{PROXY_INBOUND_PORTS},{ports}"),
                };
                return true;
            }
            _ => return false,
        };
        *field = value.to_owned();
        true
    }
}

/// How inbound connections reach the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptMode {
    /// NAT: the destination is rewritten; the proxy reads it back with SO_ORIGINAL_DST.
    Redirect,
    /// The packet keeps its destination and source; the proxy's listener is transparent.
    Tproxy,
}

/// Which inbound ports are captured (`-b`, `-d`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPorts {
    None,
    All { except: Vec<u16> },
    Only(Vec<u16>),
}

/// Which outbound destinations are captured (`-i`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundRanges {
    None,
    All,
    Only(Vec<Ipv4Net>),
}

/// DNS capture (`--redirect-dns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsCapture {
    AllServers,
    Servers(Vec<Ipv4Addr>),
}

/// Checked capture settings: every port is a port, every range a CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    pub proxy_port: u16,
    pub inbound_capture_port: u16,
    /// Istio's HBONE port, never captured inbound.
    pub tunnel_port: u16,
    pub proxy_uids: Vec<u32>,
    pub proxy_gids: Vec<u32>,
    pub mode: InterceptMode,
    pub inbound: InboundPorts,
    pub outbound: OutboundRanges,
    pub outbound_exclude: Vec<Ipv4Net>,
    pub outbound_ports_exclude: Vec<u16>,
    pub outbound_ports_include: Vec<u16>,
    pub exclude_interfaces: Vec<String>,
    pub tproxy_mark: u32,
    pub tproxy_route_table: u32,
    pub dns: Option<DnsCapture>,
}

/// A value that is not what its option takes; names the option as istio-iptables does.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{option} {value:?}: {reason}")]
pub struct OptionError {
    pub option: &'static str,
    pub value: String,
    pub reason: String,
}

impl CaptureConfig {
    /// Checks every value; the first wrong one is the error, and nothing has been written yet.
    pub fn from_raw(raw: &RawOptions) -> Result<CaptureConfig, OptionError> {
        let mode = match raw.mode.trim() {
            "REDIRECT" | "redirect" => InterceptMode::Redirect,
            "TPROXY" | "tproxy" => InterceptMode::Tproxy,
            other => return Err(err("-m", other, "expected REDIRECT or TPROXY")),
        };
        let inbound = match raw.inbound_ports.trim() {
            "" => InboundPorts::None,
            "*" => InboundPorts::All { except: ports("-d", &raw.inbound_ports_exclude)? },
            list => InboundPorts::Only(ports("-b", list)?),
        };
        let outbound = match raw.outbound_ranges.trim() {
            "" => OutboundRanges::None,
            "*" => OutboundRanges::All,
            list => OutboundRanges::Only(cidrs("-i", list)?),
        };
        if raw.outbound_ranges_exclude.trim() == "*" {
            return Err(err(
                "-x",
                "*",
                "excluding every destination would make the sidecar useless; use -i '' to capture no outbound traffic",
            ));
        }
        let dns = match (raw.redirect_dns, raw.capture_all_dns) {
            (false, _) => None,
            (true, true) => Some(DnsCapture::AllServers),
            (true, false) => {
                let servers = raw
                    .dns_servers
                    .iter()
                    .filter_map(|s| s.parse::<std::net::IpAddr>().ok())
                    .filter_map(|ip| match ip {
                        std::net::IpAddr::V4(v4) => Some(v4),
                        std::net::IpAddr::V6(_) => None,
                    })
                    .collect::<Vec<_>>();
                if servers.is_empty() {
                    return Err(err(
                        "--redirect-dns",
                        "",
                        "no IPv4 nameserver to capture DNS for; add --capture-all-dns or give the nameservers",
                    ));
                }
                Some(DnsCapture::Servers(servers))
            }
        };
        let exclude_interfaces = split(&raw.exclude_interfaces).map(|i| interface("-c", i)).collect::<Result<Vec<_>, _>>()?;
        let cfg = CaptureConfig {
            proxy_port: port("-p", &raw.proxy_port)?,
            inbound_capture_port: port("-z", &raw.inbound_capture_port)?,
            tunnel_port: 15008,
            proxy_uids: ids("-u", &raw.proxy_uid)?,
            proxy_gids: ids("-g", &raw.proxy_gid)?,
            mode,
            inbound,
            outbound,
            outbound_exclude: cidrs("-x", &raw.outbound_ranges_exclude)?,
            outbound_ports_exclude: ports("-o", &raw.outbound_ports_exclude)?,
            outbound_ports_include: ports("-q", &raw.outbound_ports_include)?,
            exclude_interfaces,
            tproxy_mark: number("-t", &raw.tproxy_mark)?,
            tproxy_route_table: number("-r", &raw.tproxy_route_table)?,
            dns,
        };
        if cfg.proxy_uids.is_empty() && cfg.proxy_gids.is_empty() {
            return Err(err("-u", &raw.proxy_uid, "the proxy needs a UID or GID to exempt, or its own traffic would loop back into it"));
        }
        Ok(cfg)
    }

    /// Whether `-i` names a loopback range (then app-to-self traffic over lo is captured too).
    pub fn includes_loopback(&self) -> bool {
        matches!(&self.outbound, OutboundRanges::Only(nets) if nets.iter().any(|n| n.addr().is_loopback()))
    }
}

/// The nameservers in a resolv.conf, in order.
pub fn resolv_conf_servers(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten().map(str::to_owned)
        })
        .collect()
}

fn split(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn err(option: &'static str, value: &str, reason: &str) -> OptionError {
    OptionError { option, value: value.to_owned(), reason: reason.to_owned() }
}

fn port(option: &'static str, value: &str) -> Result<u16, OptionError> {
    match value.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(_) => Err(err(option, value, "port out of range 1-65535")),
        Err(_) => Err(err(option, value, "not a port number")),
    }
}

fn ports(option: &'static str, list: &str) -> Result<Vec<u16>, OptionError> {
    split(list).map(|p| port(option, p)).collect()
}

fn number(option: &'static str, value: &str) -> Result<u32, OptionError> {
    value.trim().parse::<u32>().map_err(|_| err(option, value, "not a non-negative integer"))
}

fn ids(option: &'static str, list: &str) -> Result<Vec<u32>, OptionError> {
    split(list).map(|p| number(option, p)).collect()
}

fn cidrs(option: &'static str, list: &str) -> Result<Vec<Ipv4Net>, OptionError> {
    split(list)
        .filter(|c| !c.contains(':'))
        .map(|c| {
            // A bare address means that one host, as iptables reads it.
            let net = if c.contains('/') { c.parse::<Ipv4Net>().ok() } else { c.parse::<Ipv4Addr>().ok().map(Ipv4Net::from) };
            net.map(|n| n.trunc()).ok_or_else(|| err(option, c, "not an IPv4 CIDR (like 10.96.0.0/12)"))
        })
        .collect()
}

fn interface(option: &'static str, name: &str) -> Result<String, OptionError> {
    let ok = name.len() < 16 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(err(option, name, "not a network interface name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut RawOptions)) -> Result<CaptureConfig, OptionError> {
        let mut raw = RawOptions::default();
        f(&mut raw);
        CaptureConfig::from_raw(&raw)
    }

    #[test]
    fn defaults_capture_like_an_injected_pod() {
        let cfg = with(|_| {}).expect("defaults are valid");
        assert_eq!(cfg.inbound, InboundPorts::All { except: vec![15090, 15021, 15020] });
        assert_eq!(cfg.outbound, OutboundRanges::All);
        assert_eq!((cfg.proxy_port, cfg.inbound_capture_port), (15001, 15006));
        assert_eq!((cfg.proxy_uids.clone(), cfg.proxy_gids.clone()), (vec![1337], vec![1337]));
    }

    #[test]
    fn bad_values_name_the_option() {
        let e = with(|r| r.outbound_ranges = "10.0.0.0/8,10.300.0.0/16".into()).unwrap_err();
        assert_eq!((e.option, e.value.as_str()), ("-i", "10.300.0.0/16"));
        let e = with(|r| r.proxy_port = "70000".into()).unwrap_err();
        assert_eq!(e.option, "-p");
        assert!(e.to_string().contains("out of range"), "{e}");
        assert_eq!(with(|r| r.inbound_ports_exclude = "15090,x".into()).unwrap_err().option, "-d");
        assert_eq!(with(|r| r.mode = "NAT".into()).unwrap_err().option, "-m");
        assert_eq!(with(|r| r.outbound_ranges_exclude = "*".into()).unwrap_err().option, "-x");
        assert_eq!(with(|r| r.exclude_interfaces = "eth0;rm".into()).unwrap_err().option, "-c");
        assert_eq!(with(|r| r.redirect_dns = true).unwrap_err().option, "--redirect-dns");
    }

    #[test]
    fn lists_and_hosts_parse() {
        let cfg = with(|r| {
            r.outbound_ranges = "10.96.0.0/12, 192.168.1.7".into();
            r.inbound_ports = "9080,8080".into();
            r.outbound_ranges_exclude = "10.96.0.1/12".into();
        })
        .expect("valid");
        assert_eq!(cfg.outbound, OutboundRanges::Only(vec!["10.96.0.0/12".parse().unwrap(), "192.168.1.7/32".parse().unwrap()]));
        assert_eq!(cfg.outbound_exclude, vec!["10.96.0.0/12".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(cfg.inbound, InboundPorts::Only(vec![9080, 8080]));
    }

    #[test]
    fn annotations_set_their_options() {
        let mut raw = RawOptions::default();
        for name in ANNOTATIONS {
            assert!(raw.set_annotation(name, ""), "{name}");
        }
        assert!(!raw.set_annotation("includeOutboundIpRanges", "*"), "a misspelt name is not an option");
        let mut raw = RawOptions::default();
        raw.set_annotation("excludeInboundPorts", "9901");
        raw.set_annotation("includeOutboundIPRanges", "10.96.0.0/12");
        assert_eq!(raw.inbound_ports_exclude, "15090,15021,15020,9901");
        assert_eq!(raw.outbound_ranges, "10.96.0.0/12");
    }

    #[test]
    fn resolv_conf_nameservers() {
        let servers = resolv_conf_servers("# x\nsearch a.b\nnameserver 10.0.0.10\nnameserver ::1\noptions ndots:5\n");
        assert_eq!(servers, vec!["10.0.0.10", "::1"]);
    }
}
