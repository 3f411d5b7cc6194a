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
            if t.mode == Some(net::ServerTlsMode::AutoPassthrough) {
                c.unsupported(
                    format!("{p}.tls.mode"),
                    "AUTO_PASSTHROUGH (a multi-network gateway routing by SNI to any service, with no VirtualService) is not \
                     implemented, and treating it as PASSTHROUGH would route nothing; use PASSTHROUGH with tls routes",
                );
            }
            if t.mode == Some(net::ServerTlsMode::Simple)
                && t.credential_name.is_none()
                && (t.server_certificate.is_none() || t.private_key.is_none())
            {
                c.error(format!("{p}.tls"), "SIMPLE needs serverCertificate and privateKey (or credentialName)");
            }
            if let Some(name) = &t.credential_name {
                let path = format!("{p}.tls.credentialName");
                if t.server_certificate.is_some() || t.private_key.is_some() || t.ca_certificates.is_some() {
                    c.error(
                        path.clone(),
                        "give credentialName or serverCertificate/privateKey/caCertificates, not both (a MUTUAL server's CA comes \
                         from the Secret's ca.crt, or a Secret named <credentialName>-cacert)",
                    );
                }
                match credential_secret(name) {
                    Ok(_) => {}
                    Err(why) => c.error(path, why),
                }
            }
        }
    }
}

/// The Secret a `credentialName` names, in the gateway workload's namespace: `name` or
/// `kubernetes://name`, as Istio writes them.
pub fn credential_secret(credential_name: &str) -> Result<&str, String> {
    let name = credential_name.strip_prefix("kubernetes://").unwrap_or(credential_name);
    if name.contains('/') {
        return Err(format!(
            "{credential_name:?} names a Secret in another namespace, which weft does not serve: put the Secret in the \
             gateway workload's namespace and name it alone"
        ));
    }
    if name.contains("://") || name.is_empty() {
        return Err(format!("{credential_name:?} is not a Secret name (kubernetes://name or name)"));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use crate::{load_text, Level};

    fn errors(tls: &str) -> Vec<String> {
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: g}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [a.example.com]\n    tls: {tls}\n"
        );
        load_text(&text, "g.yaml")
            .diagnostics
            .iter()
            .filter(|d| d.level == Level::Error)
            .map(|d| format!("{} {}", d.field_path, d.message))
            .collect()
    }

    #[test]
    fn credential_name_is_one_secret_in_the_gateway_namespace() {
        assert!(errors("{mode: SIMPLE, credentialName: web}").is_empty());
        assert!(errors("{mode: ISTIO_MUTUAL}").is_empty());
        let e = errors("{mode: AUTO_PASSTHROUGH}");
        assert!(e.iter().any(|m| m.contains("AUTO_PASSTHROUGH") && m.contains("not supported by weft yet")), "{e:?}");
        assert!(errors("{mode: MUTUAL, credentialName: kubernetes://web}").is_empty());
        let e = errors("{mode: SIMPLE, credentialName: other-ns/web}");
        assert!(e[0].starts_with("spec.servers[0].tls.credentialName") && e[0].contains("another namespace"), "{e:?}");
        let e = errors("{mode: SIMPLE, credentialName: web, serverCertificate: /c.pem, privateKey: /k.pem}");
        assert!(e[0].contains("not both"), "{e:?}");
    }
}
