//! Virtual hosts on demand (VHDS) for weft sidecars that fetch on first use: their outbound
//! route configurations keep only the catch-all virtual host and say `vhds`; every other
//! virtual host becomes a VirtualHost resource named `<route configuration>/<virtual host>`,
//! sent when the proxy first asks for a host it names (Envoy's VHDS naming: the proxy asks for
//! `<route configuration>/<host>`, and [`Aliases`] says which virtual host that is). A sidecar
//! then holds, and is sent changes to, only the hosts it calls. Envoy clients are never sent
//! route configurations so: they get what istiod would send them.

use std::collections::HashMap;
use std::sync::Arc;

use super::pb::{self, route};
use super::Generated;

/// Which virtual host resource a host asked for (`<route configuration>/<host>`) means, by the
/// domains of the virtual hosts moved out of each route configuration.
#[derive(Debug, Default)]
pub struct Aliases {
    exact: HashMap<String, Arc<str>>,
    /// `*.suffix` and `prefix*` domains: (route configuration, pattern, resource), suffixes
    /// before prefixes and longest first within each, as a proxy matches them.
    wildcards: Vec<(String, String, Arc<str>)>,
    /// For a virtual host with a wildcard domain: the virtual hosts of its route configuration
    /// that name a host the wildcard also matches, more specifically. They are sent with it, so
    /// a proxy holding the wildcard routes those hosts as a whole route configuration would.
    companions: HashMap<Arc<str>, Vec<Arc<str>>>,
}

/// Whether wildcard domain `pattern` (`*.suffix` or `prefix*`) matches `host`.
fn wildcard_matches(pattern: &str, host: &str) -> bool {
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(suffix), _) => host.len() > suffix.len() && host.ends_with(suffix),
        (None, Some(prefix)) => host.len() > prefix.len() && host.starts_with(prefix),
        _ => false,
    }
}

impl Aliases {
    /// The virtual host resources `alias` names, if any: the one whose domain (or name) it is,
    /// with that one's companions.
    pub fn resolve(&self, alias: &str) -> Option<Vec<Arc<str>>> {
        let alias = alias.to_ascii_lowercase();
        let found = match self.exact.get(&alias) {
            Some(r) => r.clone(),
            None => {
                let (table, host) = alias.split_once('/')?;
                self.wildcards.iter().find(|(t, pattern, _)| t == table && wildcard_matches(pattern, host)).map(|(_, _, r)| r.clone())?
            }
        };
        let mut out = vec![found.clone()];
        out.extend(self.companions_of(&found));
        Some(out)
    }

    /// What must be sent with the virtual host resource `name` (see `companions`).
    pub fn companions_of(&self, name: &str) -> impl Iterator<Item = Arc<str>> + '_ {
        self.companions.get(name).into_iter().flatten().cloned()
    }
}

fn is_catch_all(vh: &pb::VirtualHost) -> bool {
    vh.domains.iter().any(|d| d == "*")
}

/// VHDS over the ADS stream the route configuration came on.
fn over_ads() -> Option<route::Vhds> {
    Some(route::Vhds { config_source: pb::ads() })
}

/// Moves every virtual host but the catch-all out of `g`'s route configurations into VHDS
/// resources; returns what each host asked for resolves to. A route configuration with
/// nothing to move is left as it is.
pub fn split(g: &mut Generated) -> Aliases {
    let mut aliases = Aliases::default();
    // Every moved domain, for the companions: (route configuration, domain, resource).
    let mut domains: Vec<(String, String, Arc<str>)> = Vec::new();
    for (table, rc) in g.routes.iter_mut() {
        if rc.virtual_hosts.iter().all(is_catch_all) {
            continue;
        }
        let (keep, moved): (Vec<_>, Vec<_>) = std::mem::take(&mut rc.virtual_hosts).into_iter().partition(is_catch_all);
        rc.virtual_hosts = keep;
        rc.vhds = over_ads();
        for mut vh in moved {
            let name: Arc<str> = Arc::from(format!("{table}/{}", vh.name));
            aliases.exact.entry(name.to_ascii_lowercase()).or_insert_with(|| name.clone());
            for d in &vh.domains {
                let d = d.to_ascii_lowercase();
                if d.starts_with('*') || d.ends_with('*') {
                    aliases.wildcards.push((table.clone(), d.clone(), name.clone()));
                } else {
                    aliases.exact.entry(format!("{table}/{d}")).or_insert_with(|| name.clone());
                }
                domains.push((table.clone(), d, name.clone()));
            }
            vh.name = name.to_string();
            g.virtual_hosts.insert(name.to_string(), vh);
        }
    }
    // Wildcards are few; each is checked against every moved domain once per group.
    for (table, pattern, owner) in &aliases.wildcards {
        let mut with: Vec<Arc<str>> = domains
            .iter()
            .filter(|(t, d, r)| t == table && r != owner && d != pattern && wildcard_matches(pattern, d.trim_start_matches('*')))
            .map(|(_, _, r)| r.clone())
            .collect();
        with.sort();
        with.dedup();
        if !with.is_empty() {
            aliases.companions.entry(owner.clone()).or_default().extend(with);
        }
    }
    aliases.wildcards.sort_by_key(|(_, p, _)| (p.ends_with('*') && !p.starts_with('*'), std::cmp::Reverse(p.len())));
    aliases
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(name: &str, hosts: &[(&str, &[&str])]) -> pb::RouteConfiguration {
        let vh = |(n, d): &(&str, &[&str])| pb::VirtualHost {
            name: n.to_string(),
            domains: d.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        };
        pb::RouteConfiguration { name: name.into(), virtual_hosts: hosts.iter().map(vh).collect(), ..Default::default() }
    }

    #[test]
    fn a_route_configuration_keeps_its_catch_all_and_each_host_resolves_to_its_virtual_host() {
        let mut g = Generated::default();
        let a: &[&str] = &["a.ns.svc.cluster.local:8080", "a.ns:8080", "10.0.0.1:8080"];
        g.routes
            .insert("8080".into(), rc("8080", &[("a.ns.svc.cluster.local:8080", a), ("wild", &["*.example.com"]), ("allow_any", &["*"])]));
        let aliases = split(&mut g);
        let rc = &g.routes["8080"];
        assert_eq!(rc.virtual_hosts.len(), 1, "only the catch-all stays");
        assert_eq!(rc.vhds, over_ads());
        assert_eq!(g.virtual_hosts.len(), 2);
        assert_eq!(g.virtual_hosts["8080/a.ns.svc.cluster.local:8080"].name, "8080/a.ns.svc.cluster.local:8080");
        let one = |alias: &str| aliases.resolve(alias).map(|v| v.iter().map(|n| n.to_string()).collect::<Vec<_>>());
        let a = Some(vec!["8080/a.ns.svc.cluster.local:8080".to_string()]);
        assert_eq!(one("8080/A.ns:8080"), a);
        assert_eq!(one("8080/10.0.0.1:8080"), a);
        assert_eq!(one("8080/a.ns.svc.cluster.local:8080"), a);
        assert_eq!(one("8080/api.example.com"), Some(vec!["8080/wild".to_string()]));
        assert_eq!(one("9090/a.ns:8080"), None, "another route configuration's host");
        assert_eq!(one("8080/elsewhere.org"), None);
    }

    #[test]
    fn a_wildcard_comes_with_the_more_specific_hosts_it_would_otherwise_shadow() {
        let mut g = Generated::default();
        let hosts: &[(&str, &[&str])] = &[
            ("wild", &["*.example.com"]),
            ("deeper", &["*.api.example.com"]),
            ("storage", &["storage.example.com"]),
            ("other", &["other.org"]),
        ];
        g.routes.insert("80".into(), rc("80", hosts));
        g.routes.insert("90".into(), rc("90", &[("allow_any", &["*"])]));
        let aliases = split(&mut g);
        let got = aliases.resolve("80/anything.example.com").expect("the wildcard");
        assert_eq!(got.iter().map(|n| n.as_ref()).collect::<Vec<_>>(), ["80/wild", "80/deeper", "80/storage"]);
        assert_eq!(aliases.resolve("80/x.api.example.com").map(|v| v[0].to_string()).as_deref(), Some("80/deeper"), "longest suffix");
        assert!(g.routes["90"].vhds.is_none(), "nothing to move: the route configuration is left whole");
    }
}
