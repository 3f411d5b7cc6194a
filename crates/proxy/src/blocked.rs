//! Calls the outbound traffic policy refused (REGISTRY_ONLY): what a request routed to Istio's
//! `block_all` route asked for (its authority), and what a connection sent to Istio's
//! `BlackHoleCluster` was going to (its SNI, else its original destination). Each destination
//! is logged the first time, then counted; the admin serves them at `/blocked`, which
//! `weft analyze --proxy` reads to suggest the ServiceEntry that would allow each one.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use parking_lot::Mutex;

/// The route istiod (and weft's control plane) name for "refused by REGISTRY_ONLY".
pub const BLOCK_ALL_ROUTE: &str = "block_all";
/// The cluster that drops a connection: REGISTRY_ONLY's catch-all, and the loop guard on the
/// capture ports (not a blocked call: [`record_connection`] leaves those out).
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
/// Destinations kept; calls to more are counted in `others` only, so a scan cannot grow it.
const MAX: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Http,
    /// TLS, named by its SNI.
    Tls,
    /// Plain TCP, named by its address.
    Tcp,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Tls => "TLS",
            Protocol::Tcp => "TCP",
        }
    }
}

#[derive(Default)]
struct Record {
    /// (host, port, protocol) → calls
    calls: BTreeMap<(String, u16, Protocol), u64>,
    others: u64,
}

static BLOCKED: Mutex<Record> = Mutex::new(Record { calls: BTreeMap::new(), others: 0 });

fn record(host: &str, port: u16, protocol: Protocol) {
    let host = host.to_ascii_lowercase();
    {
        let mut r = BLOCKED.lock();
        let key = (host.clone(), port, protocol);
        if let Some(n) = r.calls.get_mut(&key) {
            *n += 1;
            return;
        }
        if r.calls.len() >= MAX {
            r.others += 1;
            return;
        }
        r.calls.insert(key, 1);
    }
    // Logged outside the lock: writing a log line must not hold up other connections' counts.
    tracing::warn!(
        host = %host,
        port,
        protocol = protocol.name(),
        "outbound call blocked: outboundTrafficPolicy is REGISTRY_ONLY and no ServiceEntry declares this host (`weft analyze --proxy` suggests one)"
    );
}

/// A request the `block_all` route answered: `authority` as the client sent it; the port,
/// when the authority has none, is where the connection was going.
pub fn record_request(authority: &str, destination_port: u16) {
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 literal: `[addr]` or `[addr]:port`.
        Some(rest) => match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(destination_port)),
            None => (rest, destination_port),
        },
        None => match authority.rsplit_once(':').and_then(|(h, p)| p.parse().ok().map(|p| (h, p))) {
            Some((h, p)) => (h, p),
            None => (authority, destination_port),
        },
    };
    if !host.is_empty() {
        record(host, port, Protocol::Http);
    }
}

/// A connection sent to the BlackHoleCluster on its way to `original_dst`.
pub fn record_connection(original_dst: Option<SocketAddr>, sni: Option<&str>) {
    let Some(dst) = original_dst else { return };
    // The capture ports' own guard against loops, not a call out.
    if matches!(dst.port(), 15001 | 15006) {
        return;
    }
    match sni {
        Some(name) if !name.is_empty() => record(name, dst.port(), Protocol::Tls),
        _ => record(&dst.ip().to_string(), dst.port(), Protocol::Tcp),
    }
}

/// What `/blocked` serves: `{"blocked": [{host, port, protocol, calls}], "others": n}`.
pub fn json() -> serde_json::Value {
    let r = BLOCKED.lock();
    let list: Vec<serde_json::Value> = r
        .calls
        .iter()
        .map(|((host, port, protocol), calls)| serde_json::json!({"host": host, "port": port, "protocol": protocol.name(), "calls": calls}))
        .collect();
    serde_json::json!({"blocked": list, "others": r.others})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_destination_is_kept_once_with_its_count() {
        record_request("API.example.com:8443", 80);
        record_request("api.example.com:8443", 80);
        record_request("plain.example.com", 80);
        record_connection(Some("203.0.113.9:3306".parse().expect("addr")), None);
        record_connection(Some("203.0.113.9:443".parse().expect("addr")), Some("db.example.com"));
        record_connection(Some("10.0.0.1:15001".parse().expect("addr")), None);
        let j = json();
        let list = j["blocked"].as_array().expect("list");
        let find = |host: &str, port: u16| list.iter().find(|e| e["host"] == host && e["port"] == port).cloned();
        assert_eq!(find("api.example.com", 8443).expect("api")["calls"], 2, "{j}");
        assert_eq!(find("plain.example.com", 80).expect("plain")["protocol"], "HTTP");
        assert_eq!(find("203.0.113.9", 3306).expect("tcp")["protocol"], "TCP");
        assert_eq!(find("db.example.com", 443).expect("tls")["protocol"], "TLS");
        assert!(find("10.0.0.1", 15001).is_none(), "the capture port's loop guard is not a call out");
    }
}
