//! Who a connecting proxy is: Istio's node ID (`sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`)
//! and the metadata keys pilot-agent sends, or, failing labels, the WorkloadEntry at its IP.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::Model;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Sidecar,
    Router,
}

/// How the workload's traffic reaches its proxy (Istio's `INTERCEPTION_MODE` node metadata,
/// which pilot-agent sets from `ISTIO_META_INTERCEPTION_MODE`; anything else means REDIRECT,
/// as in Istio).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Interception {
    /// iptables REDIRECT into 15001/15006: virtual listeners with original destination.
    #[default]
    Redirect,
    /// iptables TPROXY: the same listeners (weft's proxy treats them alike today).
    Tproxy,
    /// No capture: the proxy binds real ports — inbound from `Sidecar` ingress listeners, and
    /// outbound only where the application is pointed at it (the HTTP proxy port).
    None,
}

/// Whether the proxy answers its workload's DNS (Istio's `DNS_CAPTURE` node metadata, which
/// pilot-agent sets from `ISTIO_META_DNS_CAPTURE`), and with addresses allocated for
/// ServiceEntry hosts that have none (`DNS_AUTO_ALLOCATE`, which means nothing without it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Dns {
    #[default]
    Off,
    /// Sent the name table (NDS): mesh services and ServiceEntry hosts with addresses.
    Capture,
    /// The same, and ServiceEntry hosts without an address get one, and a listener for it.
    AutoAllocate,
}

impl Dns {
    pub fn auto_allocated(self) -> bool {
        self == Dns::AutoAllocate
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyNode {
    pub id: String,
    pub kind: ProxyKind,
    pub ip: IpAddr,
    /// `<pod>.<ns>`, as istioctl shows it.
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub workload_name: Option<String>,
    pub cluster_id: Option<String>,
    /// The proxy holds a workload identity: it can resolve the SDS secrets `default` and
    /// `ROOTCA` (node metadata `SDS: "true"`, as Istio's agent once announced it; `weft proxy`
    /// with a CA and `weft agent` bootstraps send it). Without one it gets no mTLS config:
    /// an Envoy would wait forever for secrets nobody serves.
    pub identity: bool,
    pub interception: Interception,
    /// Istio's `HTTP_PROXY_PORT` metadata: listen for HTTP proxy requests on this port (it
    /// overrides MeshConfig `proxyHttpPort`).
    pub http_proxy_port: Option<u16>,
    /// Istio's `HTTP10: "1"` metadata: this proxy's connection managers accept HTTP/1.0
    /// (`accept_http_10`), which Envoy otherwise answers with 426.
    pub http10: bool,
    /// weft's `WEFT_ON_DEMAND: "true"` metadata: the proxy fetches service clusters when it
    /// first uses them, so CDS is scoped to what it asked for (sidecars only).
    pub on_demand: bool,
    /// DNS capture (sidecars only).
    pub dns: Dns,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    #[error("node id {0:?} is not Istio's <type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local")]
    BadId(String),
    #[error("node id {id:?}: proxy type {kind:?} is neither sidecar nor router")]
    BadKind { id: String, kind: String },
    #[error("node id {id:?}: {ip:?} is not an IP address")]
    BadIp { id: String, ip: String },
}

impl ProxyNode {
    /// Reads a node from its ID and its metadata (a JSON object, as `google.protobuf.Struct`
    /// maps to JSON). Metadata wins over what the ID implies.
    pub fn parse(id: &str, metadata: &serde_json::Value) -> Result<ProxyNode, NodeError> {
        let parts: Vec<&str> = id.split('~').collect();
        let [kind, ip, pod, domain] = parts.as_slice() else { return Err(NodeError::BadId(id.into())) };
        let kind = match *kind {
            "sidecar" => ProxyKind::Sidecar,
            "router" => ProxyKind::Router,
            other => return Err(NodeError::BadKind { id: id.into(), kind: other.into() }),
        };
        let ip: IpAddr = ip.parse().map_err(|_| NodeError::BadIp { id: id.into(), ip: ip.to_string() })?;
        let ns_from_id = domain.split('.').next().unwrap_or_default().to_string();
        let meta = |k: &str| metadata.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let labels = metadata
            .get("LABELS")
            .and_then(|l| l.as_object())
            .map(|o| o.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
            .unwrap_or_default();
        Ok(ProxyNode {
            id: id.into(),
            kind,
            ip,
            name: pod.to_string(),
            namespace: meta("NAMESPACE").unwrap_or(ns_from_id),
            labels,
            service_account: meta("SERVICE_ACCOUNT"),
            workload_name: meta("WORKLOAD_NAME"),
            cluster_id: meta("CLUSTER_ID"),
            identity: flag(metadata, "SDS"),
            interception: match metadata.get("INTERCEPTION_MODE").and_then(|v| v.as_str()) {
                Some("NONE") => Interception::None,
                Some("TPROXY") => Interception::Tproxy,
                _ => Interception::Redirect,
            },
            http_proxy_port: http_proxy_port(id, metadata.get("HTTP_PROXY_PORT")),
            http10: metadata.get("HTTP10").and_then(|v| v.as_str()) == Some("1"),
            on_demand: kind == ProxyKind::Sidecar && metadata.get("WEFT_ON_DEMAND").and_then(|v| v.as_str()) == Some("true"),
            dns: match (kind, flag(metadata, "DNS_CAPTURE"), flag(metadata, "DNS_AUTO_ALLOCATE")) {
                (ProxyKind::Sidecar, true, true) => Dns::AutoAllocate,
                (ProxyKind::Sidecar, true, false) => Dns::Capture,
                _ => Dns::Off,
            },
        })
    }

    /// The port of the HTTP proxy listener, if this proxy has one: its own metadata, else the
    /// mesh's `proxyHttpPort`.
    pub fn http_proxy_port(&self, mesh: &weft_api::mesh::MeshConfig) -> Option<u16> {
        if self.kind != ProxyKind::Sidecar {
            return None;
        }
        self.http_proxy_port.or(mesh.proxy_http_port)
    }

    /// Fills labels and service account from the WorkloadEntry at this proxy's IP when the
    /// proxy sent none (a VM or a `weft up` workload registered by IP).
    pub fn enrich(&mut self, model: &Model) {
        if !self.labels.is_empty() {
            return;
        }
        let ip = self.ip.to_string();
        if let Some(w) = model.workloads.iter().find(|w| w.address == ip && (w.namespace == self.namespace || self.namespace.is_empty())) {
            self.labels = w.labels.clone();
            self.namespace = w.namespace.clone();
            if self.service_account.is_none() {
                self.service_account = w.service_account.clone();
            }
        }
    }
}

/// A boolean metadata value: Istio's agent sends `"true"`; a JSON `true` is taken too.
fn flag(metadata: &serde_json::Value, key: &str) -> bool {
    match metadata.get(key) {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// `HTTP_PROXY_PORT` is a string in Istio's metadata; a number is taken too. Like istiod, a
/// value that is not a port is ignored (the proxy gets no HTTP proxy listener from it), and
/// said so in the log.
fn http_proxy_port(id: &str, v: Option<&serde_json::Value>) -> Option<u16> {
    let v = v?;
    let port = match v {
        serde_json::Value::String(s) if s.is_empty() => return None,
        serde_json::Value::String(s) => s.parse::<u16>().ok(),
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        _ => None,
    };
    match port.filter(|p| *p > 0) {
        Some(p) => Some(p),
        None => {
            tracing::warn!(node = id, value = %v, "HTTP_PROXY_PORT is not a port; no HTTP proxy listener from it");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_node_ids_parse() {
        let meta =
            serde_json::json!({"NAMESPACE": "bookinfo", "LABELS": {"app": "reviews", "version": "v2"}, "SERVICE_ACCOUNT": "reviews"});
        let n = ProxyNode::parse("sidecar~10.1.0.7~reviews-v2-abc.bookinfo~bookinfo.svc.cluster.local", &meta).expect("parse");
        assert_eq!(n.kind, ProxyKind::Sidecar);
        assert_eq!(n.ip.to_string(), "10.1.0.7");
        assert_eq!(n.namespace, "bookinfo");
        assert_eq!(n.labels.get("version").map(String::as_str), Some("v2"));
        let g = ProxyNode::parse("router~10.1.0.9~gw.istio-system~istio-system.svc.cluster.local", &serde_json::json!({})).expect("router");
        assert_eq!((g.kind, g.namespace.as_str()), (ProxyKind::Router, "istio-system"));
        assert!(matches!(ProxyNode::parse("sidecar~x~a.b~b.svc.cluster.local", &meta), Err(NodeError::BadIp { .. })));
        assert!(matches!(ProxyNode::parse("envoy", &meta), Err(NodeError::BadId(_))));
        assert_eq!((n.interception, n.http_proxy_port), (Interception::Redirect, None));
    }

    #[test]
    fn interception_mode_and_http_proxy_port_come_from_istio_metadata() {
        let id = "sidecar~127.77.0.2~reviews-v1.default~default.svc.cluster.local";
        let meta = serde_json::json!({"INTERCEPTION_MODE": "NONE", "HTTP_PROXY_PORT": "15080"});
        let n = ProxyNode::parse(id, &meta).expect("parse");
        assert_eq!((n.interception, n.http_proxy_port), (Interception::None, Some(15080)));
        let tproxy = ProxyNode::parse(id, &serde_json::json!({"INTERCEPTION_MODE": "TPROXY", "HTTP_PROXY_PORT": 15081})).expect("parse");
        assert_eq!((tproxy.interception, tproxy.http_proxy_port), (Interception::Tproxy, Some(15081)));
        let odd = ProxyNode::parse(id, &serde_json::json!({"INTERCEPTION_MODE": "none", "HTTP_PROXY_PORT": "x"})).expect("parse");
        assert_eq!((odd.interception, odd.http_proxy_port), (Interception::Redirect, None), "Istio's values are upper case");
        let mut mesh = weft_api::mesh::MeshConfig { proxy_http_port: Some(15007), ..Default::default() };
        assert_eq!(odd.http_proxy_port(&mesh), Some(15007), "the mesh-wide port applies without the metadata");
        assert_eq!(n.http_proxy_port(&mesh), Some(15080), "the proxy's own port wins");
        mesh.proxy_http_port = None;
        let router = ProxyNode::parse("router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local", &meta).expect("router");
        assert_eq!(router.http_proxy_port(&mesh), None, "gateways get no HTTP proxy listener");
    }
}
