//! ServiceEntry and WorkloadEntry (also as a ServiceEntry's `endpoints`): hosts, addresses,
//! ports, resolution and the entries' addresses and ports.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{cidr, dns_label, export_to, fqdn, host, labels, port_number, selector, Check};
use crate::networking as net;

/// Where a WorkloadEntry-shaped value sits: its own resource, or a ServiceEntry's `endpoints`.
#[derive(Clone, Copy)]
pub(super) enum EntryOf<'a> {
    Resource,
    ServiceEntry(&'a net::ServiceEntry),
}

pub(super) fn service_entry(se: &net::ServiceEntry, c: &mut Check) {
    use net::Resolution as R;
    if se.hosts.is_empty() {
        c.error("spec.hosts", "at least one host is required");
    }
    let mut seen = BTreeSet::new();
    for (i, h) in se.hosts.iter().enumerate() {
        let p = format!("spec.hosts[{i}]");
        if h == "*" {
            c.error(p, "`*` is not allowed as a ServiceEntry host");
            continue;
        }
        host(h, &p, c);
        if partial_wildcard(h) {
            c.warn(
                p.as_str(),
                format!("partial wildcard {h:?}: it matches every host ending in {:?}; `*.suffix` is what Istio intends", &h[1..]),
            );
        }
        if !seen.insert(h.to_ascii_lowercase()) {
            c.error(p.as_str(), format!("duplicate host {h:?}"));
        }
        // Without endpoints the hosts themselves are resolved, so they must be names.
        if matches!(se.resolution, R::Dns | R::DnsRoundRobin) && se.endpoints.is_empty() && !fqdn(h) {
            c.error(p, "with DNS resolution and no endpoints every host must be a DNS name without wildcards (it is what gets resolved)");
        }
    }
    for (i, a) in se.addresses.iter().enumerate() {
        cidr(a, &format!("spec.addresses[{i}]"), c);
    }
    if se.addresses.iter().any(|a| a.contains('/')) && !matches!(se.resolution, R::None | R::Static) {
        c.error("spec.addresses", "CIDR ranges are only allowed with resolution NONE or STATIC");
    }
    // Istio accepts a ServiceEntry without ports (it then gets no listeners or clusters).
    let mut nums = BTreeSet::new();
    let mut port_names = BTreeSet::new();
    for (i, p) in se.ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        port_number(p.number, &format!("{pp}.number"), c);
        if !nums.insert(p.number) {
            c.error(format!("{pp}.number"), format!("port {} is listed twice", p.number));
        }
        match p.name.as_deref() {
            None | Some("") => c.error(format!("{pp}.name"), "is required"),
            Some(n) if !dns_label(n) => c.error(format!("{pp}.name"), format!("{n:?} is not a valid port name (a DNS-1123 label)")),
            Some(n) if !port_names.insert(n) => c.error(format!("{pp}.name"), format!("port name {n:?} is listed twice")),
            Some(_) => {}
        }
        if let Some(proto) = p.protocol.as_deref().filter(|p| !p.is_empty() && !protocol_known(p)) {
            c.error(format!("{pp}.protocol"), format!("unknown protocol {proto:?}"));
        }
        if let Some(t) = p.target_port.filter(|t| *t != 0) {
            port_number(t, &format!("{pp}.targetPort"), c);
        }
        // Istio warns when it will not allocate an address itself (PILOT_ENABLE_IP_AUTOALLOCATE
        // off, resolution NONE, or the entry opting out); weft allocates one only for sidecars
        // that capture DNS with auto-allocation, which a file cannot know of.
        if se.addresses.is_empty() && p.protocol.as_deref().is_none_or(|proto| proto.is_empty() || proto.eq_ignore_ascii_case("tcp")) {
            c.warn(
                pp.as_str(),
                "addresses are required for ports serving TCP (or unset) protocol when IP autoallocation is not enabled \
                 (weft allocates one only for sidecars with ISTIO_META_DNS_CAPTURE and ISTIO_META_DNS_AUTO_ALLOCATE, \
                 and never for resolution NONE)",
            );
        }
    }
    // Plain TCP cannot tell several hosts apart unless nothing is resolved (NONE).
    if se.resolution != R::None && se.hosts.len() > 1 {
        if let Some(i) = se.ports.iter().position(|p| !protocol_is_http_or_tls(p.protocol.as_deref().unwrap_or(""))) {
            c.error(format!("spec.ports[{i}].protocol"), "with several hosts every port must be HTTP or TLS (unless resolution is NONE)");
        }
    }
    if let Some(sel) = &se.workload_selector {
        selector(&sel.labels, "spec.workloadSelector", "labels", c);
        if !se.endpoints.is_empty() {
            c.error("spec.workloadSelector", "workloadSelector and endpoints are mutually exclusive");
        }
    }
    match se.resolution {
        R::None => {
            if !se.endpoints.is_empty() {
                c.error("spec.endpoints", "endpoints cannot be set with resolution NONE");
            }
            if se.workload_selector.is_some() {
                c.warn("spec.workloadSelector", "has no effect with resolution NONE");
            }
        }
        R::Static if se.endpoints.is_empty() && se.workload_selector.is_none() => {
            c.warn("spec.endpoints", "STATIC resolution without endpoints or a workloadSelector: there is nowhere to send traffic");
        }
        R::DnsRoundRobin if se.endpoints.len() > 1 => {
            c.error("spec.endpoints", "DNS_ROUND_ROBIN takes at most one endpoint");
        }
        R::Static | R::Dns | R::DnsRoundRobin => {}
    }
    for (i, e) in se.endpoints.iter().enumerate() {
        workload_entry(e, &format!("spec.endpoints[{i}]"), EntryOf::ServiceEntry(se), c);
    }
    export_to(&se.export_to, "spec.exportTo", c);
}

/// A WorkloadEntry, or an endpoint of a ServiceEntry (Istio's `validateWorkloadEntry`, and its
/// ServiceEntry rules for DNS resolution). `p` is the path of the entry itself.
pub(super) fn workload_entry(e: &net::WorkloadEntry, p: &str, of: EntryOf<'_>, c: &mut Check) {
    let se = match of {
        EntryOf::ServiceEntry(se) => Some(se),
        EntryOf::Resource => None,
    };
    let dns = se.is_some_and(|se| matches!(se.resolution, net::Resolution::Dns | net::Resolution::DnsRoundRobin));
    let ap = format!("{p}.address");
    let network = e.network.as_deref().filter(|n| !n.is_empty());
    let a = e.address.as_str();
    if a.is_empty() {
        match network {
            Some(n) if !dns => c.warn(
                ap,
                format!(
                    "is unset with network {n:?}: Istio reaches such a workload through that network's gateway; \
                     weft does not route between networks, so it gets no traffic"
                ),
            ),
            _ if dns => c.error(ap, "is required"),
            _ => c.error(ap, "is required (Istio allows leaving it out only when network is set)"),
        }
    } else if let (Some(path), false) = (a.strip_prefix("unix://"), dns) {
        // Istio's rules for a Unix domain socket first; a socket that passes them is refused
        // because weft cannot connect to one.
        let before = c.problems.len();
        if path.is_empty() {
            c.error(ap.as_str(), "a unix:// address needs a path");
        } else if !path.starts_with('@') && (!path.starts_with('/') || path.ends_with('/')) {
            c.error(ap.as_str(), format!("{path:?} is not an absolute path to a socket (or @name, an abstract socket)"));
        }
        if !e.ports.is_empty() {
            c.error(format!("{p}.ports"), "a unix:// address takes no ports");
        }
        if se.is_some_and(|se| se.ports.len() != 1) {
            c.error("spec.ports", "a ServiceEntry with unix:// endpoints needs exactly one port");
        }
        if c.problems.len() == before {
            c.error(ap, "unix:// addresses are not supported by weft yet: it cannot send traffic to a Unix domain socket");
        }
    } else if a.parse::<IpAddr>().is_err() {
        // A DNS name is resolved by a DNS ServiceEntry; STATIC needs IP addresses.
        match of {
            EntryOf::ServiceEntry(se) if se.resolution == net::Resolution::Static => {
                c.error(ap, format!("{a:?} is not an IP address (resolution STATIC)"));
            }
            _ if !fqdn(a) => c.error(ap, format!("{a:?} is not an IP address or a DNS name")),
            _ => {}
        }
    }
    for (name, port) in &e.ports {
        let pp = format!("{p}.ports.{name}");
        port_number(*port, &pp, c);
        if !dns_label(name) {
            c.error(pp.as_str(), format!("{name:?} is not a valid port name (a DNS-1123 label)"));
        }
        if se.is_some_and(|se| !se.ports.iter().any(|sp| sp.name.as_deref() == Some(name.as_str()))) {
            c.error(pp, format!("{name:?} is not the name of one of the ServiceEntry's ports"));
        }
    }
    if network.is_some() && !a.is_empty() {
        c.not_acted_on(
            format!("{p}.network"),
            "weft reaches every address directly, as Istio does from a proxy whose own network is unset",
        );
    }
    labels(&e.labels, &format!("{p}.labels"), c);
    if e.locality.as_deref().is_some_and(|l| !l.is_empty()) {
        c.not_acted_on(format!("{p}.locality"), "weft has no locality-aware load balancing");
    }
}

/// A host with `*` other than `*` alone or a leading `*.`: Istio warns about these on a
/// ServiceEntry (`*x` matches every host ending in `x`).
fn partial_wildcard(h: &str) -> bool {
    h.contains('*') && h != "*" && !h.starts_with("*.")
}

/// Istio's port protocols (`protocol.Parse`), case-insensitive.
fn protocol_known(p: &str) -> bool {
    const KNOWN: &[&str] = &["tcp", "udp", "grpc", "grpc-web", "http", "http_proxy", "http2", "https", "tls", "mongo", "redis", "mysql"];
    KNOWN.contains(&p.to_ascii_lowercase().as_str())
}

fn protocol_is_http_or_tls(p: &str) -> bool {
    ["http", "http2", "http_proxy", "grpc", "grpc-web", "https", "tls"].contains(&p.to_ascii_lowercase().as_str())
}
