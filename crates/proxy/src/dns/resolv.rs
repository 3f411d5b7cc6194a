//! `resolv.conf`, as far as a forwarding proxy needs it: `nameserver` lines (port 53) and the
//! `search` list (or the older `domain`). Other lines (`options`, `sortlist`) are for the
//! application's own resolver, which still reads them.

use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<SocketAddr>,
    pub search: Vec<String>,
}

pub fn parse(text: &str) -> ResolvConf {
    let mut out = ResolvConf::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                // An IPv6 address may carry a zone (`fe80::1%eth0`), which a socket address
                // cannot: such a server is skipped.
                if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
                    out.nameservers.push(SocketAddr::new(ip, 53));
                }
            }
            // The last of `search` and `domain` wins, as in glibc.
            Some("search") => out.search = words.map(str::to_owned).collect(),
            Some("domain") => out.search = words.take(1).map(str::to_owned).collect(),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_and_search_list_of_a_kubernetes_pod() {
        let c = parse(
            "# generated\nsearch default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\nnameserver fe80::1%eth0\nnameserver ::1\noptions ndots:5\n",
        );
        assert_eq!(c.nameservers, vec!["10.96.0.10:53".parse().expect("addr"), "[::1]:53".parse().expect("addr")]);
        assert_eq!(c.search, vec!["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]);
        assert_eq!(parse("domain example.org\n").search, vec!["example.org"]);
    }
}
