//! Gateway: its servers' ports, hosts, protocols and TLS.

use super::{host, port_number, Check};
use crate::networking as net;

pub(super) fn gateway(g: &net::Gateway, c: &mut Check) {
    if g.servers.is_empty() {
        c.error("spec.servers", "at least one server is required");
    }
    for (i, s) in g.servers.iter().enumerate() {
        let p = format!("spec.servers[{i}]");
        port_number(s.port.number, &format!("{p}.port.number"), c);
        if s.hosts.is_empty() {
            c.error(format!("{p}.hosts"), "at least one host is required");
        }
        for (j, h) in s.hosts.iter().enumerate() {
            let name = h.split_once('/').map(|(_, n)| n).unwrap_or(h);
            host(name, &format!("{p}.hosts[{j}]"), c);
        }
        if s.bind.is_some() {
            c.unsupported(
                format!("{p}.bind"),
                "the gateway listens on every address of its port, so it would also accept traffic sent elsewhere",
            );
        }
        let proto = s.port.protocol.as_deref().unwrap_or_default().to_ascii_uppercase();
        if !["HTTP", "HTTPS", "HTTP2", "GRPC", "TCP", "TLS", "MONGO", "REDIS", "MYSQL"].contains(&proto.as_str()) {
            c.error(format!("{p}.port.protocol"), format!("{:?} is not a gateway protocol", s.port.protocol.as_deref().unwrap_or("")));
        }
        if (proto == "HTTPS" || proto == "TLS") && s.tls.is_none() {
            c.error(format!("{p}.tls"), format!("is required for protocol {proto}"));
        }
        if let Some(t) = &s.tls {
            if t.mode == Some(net::ServerTlsMode::Simple)
                && t.credential_name.is_none()
                && (t.server_certificate.is_none() || t.private_key.is_none())
            {
                c.error(format!("{p}.tls"), "SIMPLE needs serverCertificate and privateKey (or credentialName)");
            }
        }
    }
}
