//! Virtual hosts on demand (VHDS) for weft sidecars that fetch on first use: their outbound
//! route configurations keep only the catch-all virtual host and say `vhds`; every other
//! virtual host becomes a VirtualHost resource named `<route configuration>/<virtual host>`,
//! sent when the proxy first asks for a host it names (Envoy's VHDS naming: the proxy asks for
//! `<route configuration>/<host>`, and [`Aliases`] says which virtual host that is). A sidecar
//! then holds, and is sent changes to, only the hosts it calls. Envoy clients are never sent
//! route configurations so: they get what istiod would send them.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::Generated;

/// Which virtual host resource a host asked for (`<route configuration>/<host>`) means, by the
/// domains of the virtual hosts moved out of each route configuration.
#[derive(Debug, Default)]
pub struct Aliases {
    exact: HashMap<String, Arc<str>>,
    /// `*.suffix` and `prefix*` domains: (route configuration, pattern, resource), longest
    /// pattern first, as a proxy matches them.
    wildcards: Vec<(String, String, Arc<str>)>,
}

impl Aliases {
    /// The virtual host resource `alias` names, if any: a domain of it, or its own name.
    pub fn resolve(&self, alias: &str) -> Option<Arc<str>> {
        let alias = alias.to_ascii_lowercase();
        if let Some(r) = self.exact.get(&alias) {
            return Some(r.clone());
        }
        let (table, host) = alias.split_once('/')?;
        self.wildcards
            .iter()
            .filter(|(t, _, _)| t == table)
            .find(|(_, pattern, _)| match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
                (Some(suffix), _) => host.len() > suffix.len() && host.ends_with(suffix),
                (None, Some(prefix)) => host.len() > prefix.len() && host.starts_with(prefix),
                _ => false,
            })
            .map(|(_, _, r)| r.clone())
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcards.is_empty()
    }
}

fn is_catch_all(vh: &Value) -> bool {
    vh.get("domains").and_then(Value::as_array).is_some_and(|d| d.iter().any(|d| d == "*"))
}

/// Moves every virtual host but the catch-all out of `g`'s route configurations into VHDS
/// resources; returns what each host asked for resolves to.
pub fn split(g: &mut Generated) -> Aliases {
    let mut aliases = Aliases::default();
    for (table, rc) in g.routes.iter_mut() {
        let Some(hosts) = rc.get_mut("virtual_hosts").and_then(Value::as_array_mut) else { continue };
        let (keep, moved): (Vec<Value>, Vec<Value>) = std::mem::take(hosts).into_iter().partition(is_catch_all);
        *hosts = keep;
        rc["vhds"] = json!({"config_source": {"ads": {}, "resource_api_version": "V3"}});
        for mut vh in moved {
            let own = vh.get("name").and_then(Value::as_str).unwrap_or_default();
            let name: Arc<str> = Arc::from(format!("{table}/{own}"));
            aliases.exact.insert(name.to_ascii_lowercase(), name.clone());
            for d in vh.get("domains").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                let d = d.to_ascii_lowercase();
                if d.starts_with('*') || d.ends_with('*') {
                    aliases.wildcards.push((table.clone(), d, name.clone()));
                } else {
                    aliases.exact.entry(format!("{table}/{d}")).or_insert_with(|| name.clone());
                }
            }
            vh["name"] = json!(name.as_ref());
            g.virtual_hosts.insert(name.to_string(), vh);
        }
    }
    aliases.wildcards.sort_by_key(|(_, p, _)| std::cmp::Reverse(p.len()));
    aliases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_configuration_keeps_its_catch_all_and_each_host_resolves_to_its_virtual_host() {
        let mut g = Generated::default();
        g.routes.insert(
            "8080".into(),
            json!({"name": "8080", "virtual_hosts": [
                {"name": "a.ns.svc.cluster.local:8080", "domains": ["a.ns.svc.cluster.local:8080", "a.ns:8080", "10.0.0.1:8080"], "routes": []},
                {"name": "wild", "domains": ["*.example.com"], "routes": []},
                {"name": "allow_any", "domains": ["*"], "routes": []},
            ]}),
        );
        let aliases = split(&mut g);
        let rc = &g.routes["8080"];
        assert_eq!(rc["virtual_hosts"].as_array().map(Vec::len), Some(1), "only the catch-all stays");
        assert_eq!(rc["vhds"]["config_source"]["ads"], json!({}));
        assert_eq!(g.virtual_hosts.len(), 2);
        assert_eq!(g.virtual_hosts["8080/a.ns.svc.cluster.local:8080"]["name"], "8080/a.ns.svc.cluster.local:8080");
        assert_eq!(aliases.resolve("8080/A.ns:8080").as_deref(), Some("8080/a.ns.svc.cluster.local:8080"));
        assert_eq!(aliases.resolve("8080/10.0.0.1:8080").as_deref(), Some("8080/a.ns.svc.cluster.local:8080"));
        assert_eq!(aliases.resolve("8080/a.ns.svc.cluster.local:8080").as_deref(), Some("8080/a.ns.svc.cluster.local:8080"));
        assert_eq!(aliases.resolve("8080/api.example.com").as_deref(), Some("8080/wild"));
        assert_eq!(aliases.resolve("9090/a.ns:8080"), None, "another route configuration's host");
        assert_eq!(aliases.resolve("8080/elsewhere.org"), None);
    }
}
