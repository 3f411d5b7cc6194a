//! The mesh's workloads and service addresses as one EDS resource, `weft.workloads`, which weft
//! proxies ask for by name (no cluster refers to it; stock Envoy never asks): every address the
//! mesh knows a workload at, with Istio's `istio.workload` metadata and its service account, and
//! every service VIP with its hostname. A proxy's telemetry names the other side of a request
//! from it — also a caller that backs no service, and a caller or server whose sidecar is stock
//! Envoy, which sends no peer metadata.

use std::collections::BTreeMap;

use super::cluster::CLUSTER_ID;
use super::pb::{self, endpoint};
use crate::model::{workload_of_pod, Endpoint, Model};

/// The resource's name.
pub const WORKLOADS: &str = "weft.workloads";

/// An address of the table, with its `istio` metadata.
fn entry(address: &str, istio: Vec<(&str, pb::Value)>) -> endpoint::LbEndpoint {
    let endpoint = endpoint::Endpoint { address: pb::socket_address(address, 0), ..Default::default() };
    endpoint::LbEndpoint {
        host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(endpoint)),
        metadata: pb::metadata([("istio", pb::fields(istio))]),
        ..Default::default()
    }
}

pub fn workloads(model: &Model) -> pb::Endpoints {
    let mut by_address: BTreeMap<String, endpoint::LbEndpoint> = BTreeMap::new();
    // A workload's entry also names the first service it backs: what its own proxy reports as
    // `destination_service` for a request addressed to the workload itself (by IP), as Istio
    // takes it from the inbound cluster's service.
    let mut add = |address: &str, e: &Endpoint, service: Option<&str>| {
        if address.parse::<std::net::IpAddr>().is_err() {
            return;
        }
        let Some(w) = e.istio_workload(CLUSTER_ID) else { return };
        let mut istio = vec![("workload", pb::string(w))];
        if let Some(sa) = &e.service_account {
            istio.push(("service_account", pb::string(sa)));
        }
        if let Some(s) = service {
            istio.push(("service", pb::string(s)));
        }
        by_address.entry(address.to_owned()).or_insert_with(|| entry(address, istio));
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
            by_address.entry(address.clone()).or_insert_with(|| entry(&address, vec![("service", pb::string(&s.hostname))]));
        }
    }
    let lb_endpoints = by_address.into_values().collect();
    pb::Endpoints {
        cluster_name: WORKLOADS.into(),
        endpoints: vec![endpoint::LocalityLbEndpoints { lb_endpoints, ..Default::default() }],
        ..Default::default()
    }
}
