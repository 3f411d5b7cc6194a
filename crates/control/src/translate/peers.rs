//! The mesh's workloads and service addresses as one EDS resource, `weft.workloads`, which weft
//! proxies ask for by name (no cluster refers to it; stock Envoy never asks): every address the
//! mesh knows a workload at, with Istio's `istio.workload` metadata and its service account, and
//! every service VIP with its hostname. A proxy's telemetry names the other side of a request
//! from it — also a caller that backs no service, and a caller or server whose sidecar is stock
//! Envoy, which sends no peer metadata.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::cluster::CLUSTER_ID;
use super::socket_address;
use crate::model::{workload_of_pod, Endpoint, Model};

/// The resource's name.
pub const WORKLOADS: &str = "weft.workloads";

pub fn workloads(model: &Model) -> Value {
    let mut by_address: BTreeMap<String, Value> = BTreeMap::new();
    // A workload's entry also names the first service it backs: what its own proxy reports as
    // `destination_service` for a request addressed to the workload itself (by IP), as Istio
    // takes it from the inbound cluster's service.
    let mut add = |address: &str, e: &Endpoint, service: Option<&str>| {
        if address.parse::<std::net::IpAddr>().is_err() {
            return;
        }
        let Some(w) = e.istio_workload(CLUSTER_ID) else { return };
        let mut istio = json!({"workload": w});
        if let Some(sa) = &e.service_account {
            istio["service_account"] = json!(sa);
        }
        if let Some(s) = service {
            istio["service"] = json!(s);
        }
        by_address.entry(address.to_owned()).or_insert_with(
            || json!({"endpoint": {"address": socket_address(address, 0)}, "metadata": {"filter_metadata": {"istio": istio}}}),
        );
    };
    for s in &model.services {
        for e in &s.endpoints {
            add(&e.address, e, (!s.external).then_some(s.hostname.as_str()));
        }
    }
    for w in &model.workloads {
        let e = Endpoint {
            address: w.address.clone(),
            ports: BTreeMap::new(),
            labels: w.labels.clone(),
            service_account: w.service_account.clone(),
            weight: None,
            workload: Some((w.name.clone(), w.namespace.clone())),
        };
        add(&w.address, &e, None);
    }
    for p in &model.pods {
        let e = Endpoint {
            address: p.ip.clone(),
            ports: BTreeMap::new(),
            labels: p.labels.clone(),
            service_account: p.service_account.clone(),
            weight: None,
            workload: Some((workload_of_pod(&p.name, &p.labels), p.namespace.clone())),
        };
        add(&p.ip, &e, None);
    }
    for s in &model.services {
        if let Some(vip) = s.vip {
            let address = vip.to_string();
            by_address.entry(address.clone()).or_insert_with(|| {
                json!({"endpoint": {"address": socket_address(&address, 0)}, "metadata": {"filter_metadata": {"istio": {"service": s.hostname}}}})
            });
        }
    }
    json!({"cluster_name": WORKLOADS, "endpoints": [{"lb_endpoints": by_address.into_values().collect::<Vec<_>>()}]})
}
