//! Istio's semantic checks, beyond what the schema says: regexes compile, weights add up,
//! hosts are not repeated, each route has one action. Paths are serde_path_to_error's, rooted
//! at the document, so the loader can name the line.
//!
//! Where Istio's validation (`pkg/config/validation` and the CRDs' rules) warns, this warns;
//! where it refuses, this refuses. It also reports the Istio fields weft reads but does not act
//! on: a field that only tunes (ignoring it can neither weaken security nor send traffic
//! anywhere the user did not ask) is accepted with a warning (`not_acted_on`); any other is
//! refused by name (`unsupported`, or the `NotImplemented` type at parse time).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use crate::duration::GoDuration;
use crate::load::{Level, Object};

use destination_rule::destination_rule;
use gateway::gateway;
use security::peer_authentication;
use service_entry::{service_entry, workload_entry, EntryOf};
use sidecar::sidecar;
use virtual_service::virtual_service;

mod destination_rule;
mod gateway;
mod security;
mod service_entry;
mod sidecar;
mod virtual_service;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub level: Level,
    pub path: String,
    pub message: String,
}

#[derive(Default)]
struct Check {
    problems: Vec<Problem>,
}

impl Check {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { level: Level::Error, path: path.into(), message: message.into() });
    }
    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { level: Level::Warning, path: path.into(), message: message.into() });
    }
    /// A field that only tunes, set in the resource: accepted, with a warning naming it.
    fn not_acted_on(&mut self, path: impl Into<String>, why: &str) {
        let path = path.into();
        let message = format!("{} is accepted, but weft does not act on it yet: {why}", field_name(&path));
        self.warn(path, message);
    }
    /// A field weft reads but does not implement, where ignoring it would change routing or
    /// security: refused by name.
    fn unsupported(&mut self, path: impl Into<String>, why: &str) {
        let path = path.into();
        let message = format!("{} is not supported by weft yet: {why}", field_name(&path));
        self.error(path, message);
    }
}

/// The last field of a path: `exportTo` for `spec.exportTo[1]`.
fn field_name(path: &str) -> &str {
    let last = path.rsplit('.').next().unwrap_or(path);
    last.split('[').next().unwrap_or(last)
}

/// Every problem in `obj`. Any `Level::Error` keeps the resource out of the mesh.
pub fn object(obj: &Object) -> Vec<Problem> {
    let mut c = Check::default();
    match obj {
        Object::VirtualService(r) => virtual_service(&r.spec, &mut c),
        Object::DestinationRule(r) => destination_rule(&r.spec, &mut c),
        Object::ServiceEntry(r) => service_entry(&r.spec, &mut c),
        Object::Gateway(r) => gateway(&r.spec, &mut c),
        Object::Sidecar(r) => sidecar(&r.spec, &mut c),
        Object::WorkloadEntry(r) => workload_entry(&r.spec, "spec", EntryOf::Resource, &mut c),
        Object::PeerAuthentication(r) => peer_authentication(&r.spec, &mut c),
        Object::Service(r) => {
            let mut seen = BTreeSet::new();
            for (i, p) in r.spec.ports.iter().enumerate() {
                port_number(p.port, &format!("spec.ports[{i}].port"), &mut c);
                if !seen.insert(p.port) {
                    c.error(format!("spec.ports[{i}].port"), format!("port {} is listed twice", p.port));
                }
                if r.spec.ports.len() > 1 && p.name.as_deref().unwrap_or_default().is_empty() {
                    c.error(format!("spec.ports[{i}].name"), "is required when a Service has more than one port");
                }
            }
        }
        Object::Endpoints(r) => {
            for (i, s) in r.spec.subsets.iter().enumerate() {
                for (j, a) in s.addresses.iter().enumerate() {
                    ip(&a.ip, &format!("subsets[{i}].addresses[{j}].ip"), &mut c);
                }
            }
        }
        Object::EndpointSlice(r) => {
            for (i, e) in r.spec.endpoints.iter().enumerate() {
                for (j, a) in e.addresses.iter().enumerate() {
                    ip(a, &format!("endpoints[{i}].addresses[{j}]"), &mut c);
                }
            }
        }
    }
    c.problems
}

fn port_number(p: u32, path: &str, c: &mut Check) {
    if !(1..=65535).contains(&p) {
        c.error(path, format!("port {p} is out of range 1-65535"));
    }
}

fn ip(s: &str, path: &str, c: &mut Check) {
    if s.parse::<IpAddr>().is_err() {
        c.error(path, format!("{s:?} is not an IP address"));
    }
}

/// A host as Istio's `ValidateWildcardDomain` allows it: DNS labels, the first of which may be
/// a wildcard (`*`, `*suffix`, `*-suffix`), and a top-level label that is not all digits; or
/// `*` alone. weft also takes an IP address.
fn host(h: &str, path: &str, c: &mut Check) {
    if h == "*" || h.parse::<IpAddr>().is_ok() {
        return;
    }
    let (first, rest) = h.split_once('.').map_or((h, None), |(f, r)| (f, Some(r)));
    let first_ok = match first.strip_prefix('*') {
        Some(w) => w.is_empty() || dns_label(w.strip_prefix('-').unwrap_or(w)),
        None => dns_label(first),
    };
    let labels: Vec<&str> = rest.map(|r| r.split('.').collect()).unwrap_or_default();
    let tld = labels.last().copied().unwrap_or(first);
    let numeric_tld = !tld.is_empty() && tld.bytes().all(|b| b.is_ascii_digit());
    let ok = !h.is_empty() && h.len() <= 255 && first_ok && labels.iter().all(|l| dns_label(l)) && !numeric_tld;
    if !ok {
        c.error(path, format!("{h:?} is not a valid host (a DNS name whose first label may be `*` or `*suffix`, or `*`)"));
    }
}

/// A DNS-1123 label (Istio also takes upper case).
fn dns_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// A DNS name without wildcards (Istio's `ValidateFQDN`), for addresses that are resolved.
fn fqdn(h: &str) -> bool {
    !h.contains('*') && h.parse::<IpAddr>().is_err() && {
        let mut probe = Check::default();
        host(h, "", &mut probe);
        probe.problems.is_empty()
    }
}

/// Istio's `ValidateDuration`, for the durations it checks: at least 1ms, in whole ms.
fn duration(d: GoDuration, path: &str, c: &mut Check) {
    if d.0 < Duration::from_millis(1) {
        c.error(path, "must be at least 1ms");
    } else if !d.0.subsec_nanos().is_multiple_of(1_000_000) {
        c.error(path, "only millisecond precision is supported");
    }
}

/// A selector's labels (`matchLabels`, or `labels` on a Sidecar or ServiceEntry) at
/// `{path}.{key}`: no empty keys, no wildcards. An empty selector selects every workload of
/// the namespace, which Istio warns about.
fn selector(labels: &BTreeMap<String, String>, path: &str, key: &str, c: &mut Check) {
    if labels.is_empty() {
        c.warn(path, format!("has no {key}, so it selects every workload in the namespace"));
    }
    for (k, v) in labels {
        if k.is_empty() {
            c.error(format!("{path}.{key}"), "a label key must not be empty");
        } else if k.contains('*') || v.contains('*') {
            c.error(format!("{path}.{key}.{k}"), format!("wildcards are not supported in selectors ({k}={v})"));
        }
    }
}

/// `exportTo`. weft makes every resource visible to every namespace, which is what `*` asks
/// for; any narrower visibility would make the resource apply where it is not exported.
fn export_to(list: &[String], path: &str, c: &mut Check) {
    for (i, e) in list.iter().enumerate() {
        if e != "*" {
            c.unsupported(
                format!("{path}[{i}]"),
                &format!("{e:?}: weft makes every resource visible in every namespace (only \"*\" is accepted)"),
            );
        }
    }
}

fn percent(p: f64, path: &str, c: &mut Check) {
    if !(0.0..=100.0).contains(&p) {
        c.error(path, format!("percentage {p} is outside 0-100"));
    }
}

fn cidr(s: &str, path: &str, c: &mut Check) {
    if s.parse::<ipnet::IpNet>().is_err() && s.parse::<IpAddr>().is_err() {
        c.error(path, format!("{s:?} is not an IP address or CIDR range"));
    }
}
