//! EgressRule → a ServiceEntry (MESH_EXTERNAL, resolution NONE: the connection goes where
//! the application sent it, as 0.x egress did). An IP or CIDR destination becomes the entry's
//! `addresses` under a made-up host. An `https` port keeps 0.x's meaning: the application calls
//! `http://host:443` and the sidecar originates TLS — HTTP on the port, and a DestinationRule
//! with `tls: SIMPLE` on it.

use serde_json::json;

use super::spec::EgressRule;
use super::{is_address, Converter, Problem, Source};

impl Converter {
    pub(super) fn egress_rule(&mut self, src: &Source, rule: EgressRule) -> Result<(), Problem> {
        let d = &rule.destination;
        if d.name.is_some() || d.namespace.is_some() || d.domain.is_some() || !d.labels.is_empty() {
            return Err(("destination".into(), "an egress rule's destination takes only service (Istio 0.x refused the rest)".into()));
        }
        let Some(service) = d.service.clone() else { return Err(("destination.service".into(), "is required".into())) };
        if rule.ports.is_empty() {
            return Err(("ports".into(), "at least one port is required".into()));
        }
        let mut notes = Vec::new();
        let mut note = |field: &str, text: String| notes.push(src.note(field, text));
        let address = is_address(&service);
        // A ServiceEntry's hosts are names; an address-only entry is named after the rule.
        let host = if address { format!("{}.{}.external", src.name, src.namespace) } else { service.clone() };
        let mut ports = Vec::new();
        let mut originate = Vec::new();
        for (i, p) in rule.ports.iter().enumerate() {
            let protocol = p.protocol.to_ascii_lowercase();
            let v1 = match protocol.as_str() {
                "http" => "HTTP",
                "http2" => "HTTP2",
                "grpc" => "GRPC",
                "tcp" => "TCP",
                "mongo" => "MONGO",
                "https" if address => {
                    return Err((
                        format!("ports[{i}].protocol"),
                        "an IP or CIDR destination takes only tcp or mongo (Istio 0.x refused https)".into(),
                    ))
                }
                "https" => {
                    originate.push(p.port);
                    "HTTP"
                }
                other => {
                    return Err((
                        format!("ports[{i}].protocol"),
                        format!("{other:?} is not an egress protocol of Istio 0.x (http, http2, grpc, https, tcp, mongo)"),
                    ))
                }
            };
            ports.push(json!({"number": p.port, "name": format!("{}-{}", v1.to_ascii_lowercase(), p.port), "protocol": v1}));
        }
        let mut spec = json!({"hosts": [host], "ports": ports, "location": "MESH_EXTERNAL", "resolution": "NONE"});
        if address {
            spec["addresses"] = json!([service]);
        }
        if rule.use_egress_proxy {
            note("useEgressProxy", "Istio 0.x never implemented it (its validation refused true); to send this traffic through an egress gateway, write a Gateway and VirtualServices for it".into());
        }
        if !originate.is_empty() {
            let list = originate.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
            note(
                "ports",
                format!(
                    "https here meant that the sidecar originates TLS (the application calls http://{service}:{list}); kept so: HTTP on \
                     the port and a DestinationRule with tls SIMPLE. If the application speaks https itself, make the port protocol TLS \
                     and delete that DestinationRule"
                ),
            );
            if service.starts_with('*') {
                note(
                    "destination.service",
                    "TLS to a wildcard host sends no SNI; most HTTPS servers need one, so list the hosts it stands for".into(),
                );
            }
            let dr = self.destination_rules.entry((src.namespace.clone(), host.clone())).or_default();
            dr.built.from(src);
            for port in &originate {
                dr.port_level.push(json!({"port": {"number": port}, "tls": {"mode": "SIMPLE"}}));
            }
        }
        let mut built = super::Built::default();
        built.from(src);
        built.notes = notes;
        self.service_entries.insert((src.namespace.clone(), src.name.clone()), (built, spec));
        Ok(())
    }
}
