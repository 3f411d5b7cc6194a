//! The names a sidecar answers itself, built from the control plane's name table the way
//! Istio's agent builds its lookup table: a Kubernetes service also under the forms a pod's
//! search list makes of it (`reviews.ns.`, `reviews.ns.svc.`, and `reviews.` from its own
//! namespace); every name also under itself plus the first search domain, answered with a
//! CNAME to the name (the first query a resolver with `ndots:5` sends for an outside name is
//! that expansion, so it is answered at once instead of going upstream); wildcard hosts
//! (`*.example.com`) for the names under them. Anything else is not the table's to answer.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use weft_xds::name_table::{NameTable, KUBERNETES};

use super::message::{Owner, Record, TYPE_A, TYPE_AAAA};

/// Where the proxy is: what its names are relative to.
#[derive(Debug, Clone, Default)]
pub struct Place {
    /// The proxy's namespace: short names of services there are answered.
    pub namespace: String,
    /// The cluster's service domain (`svc.cluster.local`).
    pub domain: String,
    /// The pod's search list (`resolv.conf`), first first.
    pub search: Vec<String>,
}

#[derive(Debug, Clone)]
enum Entry {
    Addresses {
        v4: Vec<Ipv4Addr>,
        v6: Vec<Ipv6Addr>,
    },
    /// A search-list expansion of a known name.
    Alias(String),
}

/// Names (lower case, with their final dot) and what they resolve to.
#[derive(Debug, Clone, Default)]
pub struct Table {
    names: HashMap<String, Entry>,
}

impl Table {
    pub fn build(nt: &NameTable, place: &Place) -> Table {
        let mut names = HashMap::new();
        let first_search = place.search.first().map(|s| s.trim_end_matches('.').to_ascii_lowercase());
        for (host, info) in &nt.table {
            let (mut v4, mut v6) = (Vec::new(), Vec::new());
            for ip in info.ips.iter().filter_map(|s| s.parse::<IpAddr>().ok()) {
                match ip {
                    IpAddr::V4(a) => v4.push(a),
                    IpAddr::V6(a) => v6.push(a),
                }
            }
            if v4.is_empty() && v6.is_empty() {
                continue;
            }
            let forms = forms(host, info, place);
            for form in &forms {
                names.insert(form.clone(), Entry::Addresses { v4: v4.clone(), v6: v6.clone() });
            }
            if let Some(search) = &first_search {
                // Not for a wildcard: its expansion would alias a name no resolver takes.
                for form in forms.iter().filter(|f| !f.starts_with('*')) {
                    if form.ends_with(&format!("{search}.")) {
                        continue;
                    }
                    let expanded = format!("{form}{search}.");
                    if !forms.contains(&expanded) {
                        names.entry(expanded).or_insert_with(|| Entry::Alias(form.clone()));
                    }
                }
            }
        }
        Table { names }
    }

    /// How many names are answered (every form and expansion counted).
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// The answer to `name` (lower case, final dot) of `qtype`, or `None` when the table does
    /// not know the name or only A and AAAA are answered from it: the query goes upstream. A
    /// known name without an address of the type asked is answered with no records (NOERROR,
    /// not NXDOMAIN, which would make a client that asks A and AAAA at once give up).
    pub fn lookup(&self, name: &str, qtype: u16) -> Option<Vec<Record>> {
        if qtype != TYPE_A && qtype != TYPE_AAAA {
            return None;
        }
        let key = match self.names.get(name) {
            Some(_) => name.to_owned(),
            None => wildcard_for(name, &self.names)?,
        };
        let mut out = Vec::new();
        let (owner, entry) = match &self.names[&key] {
            Entry::Alias(target) => {
                out.push(Record::Cname { target: target.clone() });
                (Owner::Name(target.clone()), self.names.get(target)?)
            }
            e => (Owner::Question, e),
        };
        let Entry::Addresses { v4, v6 } = entry else { return Some(out) };
        if qtype == TYPE_A {
            out.extend(rotated(v4).map(|ip| Record::V4 { owner: owner.clone(), ip }));
        } else {
            out.extend(rotated(v6).map(|ip| Record::V6 { owner: owner.clone(), ip }));
        }
        Some(out)
    }
}

/// The names a host is answered under.
fn forms(host: &str, info: &weft_xds::name_table::NameInfo, place: &Place) -> Vec<String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let mut out = vec![format!("{host}.")];
    let in_domain = !place.domain.is_empty() && host.ends_with(&format!(".{}", place.domain));
    if info.registry == KUBERNETES && in_domain && !info.shortname.is_empty() {
        let (short, ns) = (info.shortname.to_ascii_lowercase(), info.namespace.to_ascii_lowercase());
        out.push(format!("{short}.{ns}."));
        let first = place.domain.split('.').next().unwrap_or("svc");
        out.push(format!("{short}.{ns}.{first}."));
        if ns == place.namespace {
            out.push(format!("{short}."));
        }
    }
    out.dedup();
    out
}

/// The most specific wildcard host covering `name` (`*.b.c.` then `*.c.`).
fn wildcard_for(name: &str, names: &HashMap<String, Entry>) -> Option<String> {
    let mut rest = name;
    while let Some((_, parent)) = rest.split_once('.') {
        if parent.is_empty() {
            break;
        }
        let w = format!("*.{parent}");
        if names.contains_key(&w) {
            return Some(w);
        }
        rest = parent;
    }
    None
}

/// The addresses starting at a random one, so callers of a headless service spread over its
/// endpoints as cluster DNS spreads them.
fn rotated<T: Copy>(ips: &[T]) -> impl Iterator<Item = T> + '_ {
    let start = if ips.len() > 1 { rand::random::<usize>() % ips.len() } else { 0 };
    ips[start..].iter().chain(&ips[..start]).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_xds::name_table::NameInfo;

    fn table() -> Table {
        let mut nt = NameTable::default();
        let k8s = |ips: &[&str], short: &str, ns: &str| NameInfo {
            ips: ips.iter().map(|s| s.to_string()).collect(),
            registry: KUBERNETES.into(),
            shortname: short.into(),
            namespace: ns.into(),
            ..Default::default()
        };
        nt.table.insert("reviews.default.svc.cluster.local".into(), k8s(&["10.96.0.7"], "reviews", "default"));
        nt.table.insert("db.prod.svc.cluster.local".into(), k8s(&["10.96.0.9", "fd00::9"], "db", "prod"));
        nt.table.insert(
            "api.example.com".into(),
            NameInfo { ips: vec!["240.240.0.5".into()], registry: "External".into(), ..Default::default() },
        );
        nt.table.insert("*.wild.example".into(), NameInfo { ips: vec!["10.1.1.1".into()], ..Default::default() });
        let place = Place {
            namespace: "default".into(),
            domain: "svc.cluster.local".into(),
            search: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()],
        };
        Table::build(&nt, &place)
    }

    fn v4(recs: &[Record]) -> Vec<String> {
        recs.iter().filter_map(|r| if let Record::V4 { ip, .. } = r { Some(ip.to_string()) } else { None }).collect()
    }

    #[test]
    fn kubernetes_services_answer_under_their_search_forms() {
        let t = table();
        for name in ["reviews.default.svc.cluster.local.", "reviews.default.", "reviews.default.svc.", "reviews."] {
            assert_eq!(v4(&t.lookup(name, TYPE_A).expect(name)), vec!["10.96.0.7"], "{name}");
        }
        assert!(t.lookup("db.", TYPE_A).is_none(), "a short name only from the service's own namespace");
        assert_eq!(v4(&t.lookup("db.prod.", TYPE_A).expect("db.prod")), vec!["10.96.0.9"]);
        let six = t.lookup("db.prod.svc.cluster.local.", TYPE_AAAA).expect("aaaa");
        assert_eq!(six, vec![Record::V6 { owner: Owner::Question, ip: "fd00::9".parse().expect("ip") }]);
        assert_eq!(t.lookup("reviews.", TYPE_AAAA), Some(vec![]), "known, no IPv6: NOERROR with nothing, not forwarded");
        assert!(t.lookup("reviews.", 16).is_none(), "TXT goes upstream");
        assert!(t.lookup("ratings.default.svc.cluster.local.", TYPE_A).is_none(), "unknown: upstream");
    }

    #[test]
    fn a_first_search_expansion_is_a_cname_and_wildcards_cover_names_under_them() {
        let t = table();
        let recs = t.lookup("api.example.com.default.svc.cluster.local.", TYPE_A).expect("expanded");
        assert_eq!(recs[0], Record::Cname { target: "api.example.com.".into() });
        assert_eq!(recs[1], Record::V4 { owner: Owner::Name("api.example.com.".into()), ip: Ipv4Addr::new(240, 240, 0, 5) });
        assert_eq!(v4(&t.lookup("a.b.wild.example.", TYPE_A).expect("wildcard")), vec!["10.1.1.1"]);
        assert!(t.lookup("wild.example.", TYPE_A).is_none(), "a wildcard does not cover its own parent");
    }
}
