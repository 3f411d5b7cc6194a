//! Sidecar: its workload selector, ingress listeners (ports, binds, default endpoints,
//! connection pools) and egress listeners.

use std::collections::BTreeSet;

use super::destination_rule::connection_pool;
use super::{host, ip, port_number, selector, Check};
use crate::networking as net;

pub(super) fn sidecar(s: &net::Sidecar, c: &mut Check) {
    if let Some(sel) = &s.workload_selector {
        selector(&sel.labels, "spec.workloadSelector", "labels", c);
    }
    if s.egress.is_empty() && s.ingress.is_empty() && s.outbound_traffic_policy.is_none() && s.inbound_connection_pool.is_none() {
        c.error("spec", "a Sidecar needs at least one of egress, ingress, outboundTrafficPolicy or inboundConnectionPool");
    }
    // weft applies no inbound connection limits yet; not limiting never sends traffic
    // elsewhere, so the pools are checked and accepted with a warning.
    if let Some(pool) = &s.inbound_connection_pool {
        connection_pool(pool, "spec.inboundConnectionPool", false, c);
        c.not_acted_on("spec.inboundConnectionPool", "connections into the workload are not limited");
    }
    let mut ports = BTreeSet::new();
    for (i, l) in s.ingress.iter().enumerate() {
        let p = format!("spec.ingress[{i}]");
        port_number(l.port.number, &format!("{p}.port.number"), c);
        if !ports.insert(l.port.number) {
            c.error(format!("{p}.port.number"), format!("port {} has two ingress listeners", l.port.number));
        }
        target_port(&l.port, &format!("{p}.port.targetPort"), c);
        if let Some(b) = &l.bind {
            if b.starts_with("unix://") {
                c.error(format!("{p}.bind"), "a Unix domain socket is not supported by weft yet");
            } else {
                ip(b, &format!("{p}.bind"), c);
            }
        }
        if let Some(e) = &l.default_endpoint {
            default_endpoint(e, &format!("{p}.defaultEndpoint"), c);
        }
        if let Some(pool) = &l.connection_pool {
            connection_pool(pool, &format!("{p}.connectionPool"), false, c);
            let proto = l.port.protocol.as_deref().unwrap_or("");
            if pool.http.is_some() && !["http", "http2", "http_proxy", "grpc", "grpc-web"].contains(&proto.to_ascii_lowercase().as_str()) {
                c.warn(
                    format!("{p}.connectionPool.http"),
                    format!("port {} is not HTTP ({proto:?}): only tcp settings would apply", l.port.number),
                );
            }
            c.not_acted_on(format!("{p}.connectionPool"), "connections into the workload are not limited");
        }
    }
    for (i, e) in s.egress.iter().enumerate() {
        if e.hosts.is_empty() {
            c.error(format!("spec.egress[{i}].hosts"), "at least one host is required");
        }
        for (j, h) in e.hosts.iter().enumerate() {
            let p = format!("spec.egress[{i}].hosts[{j}]");
            match h.split_once('/') {
                Some((ns, name)) if !ns.is_empty() => host(name, &p, c),
                _ => c.error(p, format!("{h:?} must be namespace/host (`./*`, `*/reviews.default.svc.cluster.local`, `istio-system/*`)")),
            }
        }
        // weft gives a Sidecar's egress hosts on every port, captured: a listener for one port,
        // bound to one address or not captured would change what the workload can reach.
        if let Some(port) = &e.port {
            port_number(port.number, &format!("spec.egress[{i}].port.number"), c);
            target_port(port, &format!("spec.egress[{i}].port.targetPort"), c);
            c.unsupported(format!("spec.egress[{i}].port"), "the egress hosts would be reachable on every port");
        }
        if e.bind.is_some() {
            c.unsupported(format!("spec.egress[{i}].bind"), "egress traffic is only taken by capture");
        }
        match e.capture_mode.as_deref() {
            None | Some("DEFAULT") => {}
            Some("IPTABLES" | "NONE") => c.unsupported(format!("spec.egress[{i}].captureMode"), "egress traffic is only taken by capture"),
            Some(m) => c.error(format!("spec.egress[{i}].captureMode"), format!("unknown capture mode {m:?} (DEFAULT, IPTABLES, NONE)")),
        }
    }
}

/// Istio refuses a listener port's `targetPort` on a Sidecar: it would have no effect.
fn target_port(port: &net::Port, path: &str, c: &mut Check) {
    if port.target_port.is_some_and(|t| t > 0) {
        c.error(path, "has no effect on a Sidecar (defaultEndpoint says where traffic goes)");
    }
}

/// Istio takes `127.0.0.1:PORT`, `[::1]:PORT` (the workload's localhost), `0.0.0.0:PORT`,
/// `[::]:PORT` (its instance address) or `unix://`. weft also takes any other loopback
/// address: on one machine (`weft up --explicit`) every workload has a loopback address of its
/// own, which is its localhost.
fn default_endpoint(e: &str, path: &str, c: &mut Check) {
    if e.starts_with("unix://") {
        c.error(path, "a Unix domain socket is not supported by weft yet");
        return;
    }
    match e.parse::<std::net::SocketAddr>() {
        Ok(a) if a.port() == 0 => c.error(path, format!("{e:?}: port 0 is not a port")),
        Ok(a) if a.ip().is_loopback() || a.ip().is_unspecified() => {}
        Ok(_) => c.error(
            path,
            format!("{e:?} must be a loopback address (127.0.0.1:PORT, [::1]:PORT) or 0.0.0.0:PORT / [::]:PORT (the workload's address)"),
        ),
        Err(_) => c.error(path, format!("{e:?} is not IP:PORT")),
    }
}
