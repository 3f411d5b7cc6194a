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
            identity: match metadata.get("SDS") {
                Some(serde_json::Value::Bool(b)) => *b,
                Some(serde_json::Value::String(s)) => s == "true",
                _ => false,
            },
        })
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
    }
}
