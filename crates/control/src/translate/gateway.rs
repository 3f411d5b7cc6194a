//! Gateways (`router~` proxies): a listener per `Gateway` server port, routes from the
//! VirtualServices bound to the gateway by `gateways:`.

use std::collections::BTreeMap;

use serde_json::json;
use weft_api::networking as net;

use super::{outbound_cluster_name, socket_address, Generated, Scope};
use crate::model::{host_matches, labels_match};

pub fn generate(scope: &Scope<'_>, out: &mut Generated) {
    let node = scope.node;
    let gateways: Vec<_> =
        scope.model.gateways.iter().filter(|g| !g.spec.selector.is_empty() && labels_match(&g.spec.selector, &node.labels)).collect();
    // port → (gateway key, server) pairs.
    let mut ports: BTreeMap<u16, Vec<(String, &net::Server)>> = BTreeMap::new();
    for g in &gateways {
        for s in &g.spec.servers {
            ports.entry(s.port.number as u16).or_default().push((g.key(), s));
        }
    }
    for (port, servers) in ports {
        let name = format!("0.0.0.0_{port}");
        let route_name = format!("http.{port}");
        let mut vhosts = Vec::new();
        let mut used = std::collections::BTreeSet::new();
        for (gw_key, server) in &servers {
            let (gw_ns, gw_name) = gw_key.split_once('/').unwrap_or(("", gw_key));
            for vs in &scope.model.virtual_services {
                let bound = vs.spec.gateways.iter().any(|g| g == gw_key || (g == gw_name && vs.namespace == gw_ns));
                if !bound {
                    continue;
                }
                for h in &vs.spec.hosts {
                    let allowed = server.hosts.iter().any(|sh| {
                        let pat = sh.split_once('/').map(|(_, n)| n).unwrap_or(sh);
                        host_matches(pat, h) || host_matches(h, pat)
                    });
                    if !allowed || !used.insert(h.clone()) {
                        continue;
                    }
                    let mut routes = Vec::new();
                    for r in &vs.spec.http {
                        let dest = r.route.first();
                        let Some(d) = dest else { continue };
                        let host = scope.model.resolve_host(&d.destination.host, &vs.namespace);
                        let dport = d
                            .destination
                            .port
                            .map(|p| p.number as u16)
                            .or_else(|| scope.model.service(&host).and_then(|s| s.ports.first().map(|p| p.port)))
                            .unwrap_or(port);
                        let cluster = outbound_cluster_name(dport, d.destination.subset.as_deref().unwrap_or(""), &host);
                        let ms: Vec<_> = if r.matches.is_empty() {
                            vec![json!({"prefix": "/"})]
                        } else {
                            r.matches
                                .iter()
                                .map(|m| match &m.uri {
                                    Some(net::StringMatch::Exact(p)) => json!({"path": p}),
                                    Some(net::StringMatch::Prefix(p)) => json!({"prefix": p}),
                                    Some(net::StringMatch::Regex(p)) => json!({"safe_regex": {"regex": p}}),
                                    None => json!({"prefix": "/"}),
                                })
                                .collect()
                        };
                        for m in ms {
                            routes.push(json!({"match": m, "route": {"cluster": cluster, "timeout": "0s"}}));
                        }
                    }
                    vhosts.push(json!({"name": format!("{h}:{port}"), "domains": [h, format!("{h}:{port}")], "routes": routes}));
                }
            }
        }
        out.routes.insert(route_name.clone(), json!({"name": route_name, "virtual_hosts": vhosts, "validate_clusters": false}));
        out.listeners.insert(name.clone(), json!({
            "name": name,
            "address": socket_address("0.0.0.0", port),
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": format!("outbound_{name}"),
                "rds": {"route_config_name": route_name, "config_source": {"ads": {}, "resource_api_version": "V3"}},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            }}]}],
        }));
    }
}
