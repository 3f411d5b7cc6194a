//! The NDS name table of a sidecar that answers its workload's DNS (node metadata
//! `DNS_CAPTURE`): every service the proxy may call that has an address, as Istio's
//! `BuildNameTable` lists them. A Kubernetes service carries its short name and namespace (the
//! sidecar answers `reviews`, `reviews.ns` and `reviews.ns.svc` from them); a headless one
//! (no cluster IP) resolves to its endpoints' addresses, as cluster DNS does; a ServiceEntry
//! host resolves to its addresses (a CIDR range is no address to answer with), or, for a proxy
//! with auto-allocation on, to the address weft allocated for it. A host with none of these
//! is left to the upstream resolver.

use std::net::IpAddr;

use weft_xds::name_table::{NameInfo, NameTable, KUBERNETES};

use super::Scope;
use crate::model::Service;

pub fn build(scope: &Scope<'_>) -> NameTable {
    let auto = scope.node.dns.auto_allocated();
    let mut out = NameTable::default();
    for svc in scope.services() {
        let ips = addresses(svc, auto);
        if ips.is_empty() {
            continue;
        }
        let info = match &svc.short_name {
            Some(short) => NameInfo {
                ips,
                registry: KUBERNETES.into(),
                shortname: short.clone(),
                namespace: svc.namespace.clone(),
                ..Default::default()
            },
            None => NameInfo { ips, registry: "External".into(), ..Default::default() },
        };
        out.table.insert(svc.hostname.clone(), info);
    }
    out
}

fn addresses(svc: &Service, auto: bool) -> Vec<String> {
    if svc.short_name.is_some() && svc.vip.is_none() {
        // Headless: the endpoints themselves (only addresses; a name is not an answer).
        let mut ips: Vec<String> =
            svc.endpoints.iter().filter(|e| e.address.parse::<IpAddr>().is_ok()).map(|e| e.address.clone()).collect();
        ips.dedup();
        return ips;
    }
    let single = svc.ranges.iter().filter(|r| r.prefix_len() == r.max_prefix_len()).map(|r| r.addr().to_string());
    let mut ips: Vec<String> = single.collect();
    if ips.is_empty() {
        ips.extend(svc.vip_for(auto).map(|a| a.to_string()));
    }
    ips
}
