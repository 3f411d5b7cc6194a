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
use telemetry::telemetry;
use virtual_service::virtual_service;

mod destination_rule;
mod gateway;
pub use gateway::credential_secret;
mod security;
mod service_entry;
mod sidecar;
mod telemetry;
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
        Object::Telemetry(r) => telemetry(&r.spec, &mut c),
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
        Object::Secret(r) => {
            let pem = |text: &Option<String>, what: &str, marker: &str, keys: [&str; 2], c: &mut Check| {
                if text.as_deref().is_some_and(|t| !t.contains(marker)) {
                    c.error(format!("data.{}", keys[0]), format!("({} or {}) holds no PEM {what}", keys[0], keys[1]));
                }
            };
            use crate::core::TlsCredential as T;
            pem(&r.spec.cert_chain, "certificate", "-----BEGIN CERTIFICATE-----", T::CERT_KEYS, &mut c);
            pem(&r.spec.private_key, "private key", "PRIVATE KEY-----", T::KEY_KEYS, &mut c);
            pem(&r.spec.ca_certificates, "certificate", "-----BEGIN CERTIFICATE-----", T::CA_KEYS, &mut c);
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

/// A host as Istio's `ValidateWildcardDomain` allows it: at most 255 characters; a first label
/// that is a DNS-1123 label, `*`, or one with a `*` or `*-` prefix; then DNS-1123 labels whose
/// last (the top-level domain) is not a number. The last label may be empty: an absolute name
/// such as `istio.io.` is a valid host. weft also takes an IP address.
fn host(h: &str, path: &str, c: &mut Check) {
    if h.parse::<IpAddr>().is_ok() {
        return;
    }
    let ok = h.len() <= 255
        && match h.split_once('.') {
            None => wildcard_label(h),
            Some((first, rest)) => wildcard_label(first) && dns1123_labels(rest),
        };
    if !ok {
        c.error(path, format!("{h:?} is not a valid host (a DNS name whose first label may be `*` or `*suffix`, or `*`)"));
    }
}

/// Istio's `IsWildcardDNS1123Label`: `*`, or a DNS-1123 label optionally prefixed by `*` or
/// `*-`, at most 63 characters in all.
fn wildcard_label(l: &str) -> bool {
    let bare = match l.strip_prefix('*') {
        Some("") => return true,
        Some(w) => w.strip_prefix('-').unwrap_or(w),
        None => l,
    };
    l.len() <= 63 && dns_label(bare)
}

/// Istio's `ValidateDNS1123Labels`: dot-separated DNS-1123 labels, the last of which may be
/// empty (a trailing dot) and must not be a number (`strconv.Atoi`, so it fits in 64 bits).
fn dns1123_labels(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    let tld = labels.last().copied().unwrap_or_default();
    if tld.parse::<i64>().is_ok() {
        return false;
    }
    labels.iter().enumerate().all(|(i, l)| (i + 1 == labels.len() && l.is_empty()) || dns_label(l))
}

/// A DNS-1123 label (Istio also takes upper case).
fn dns_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// A DNS name without wildcards (Istio's `ValidateFQDN`), for addresses that are resolved. As
/// for hosts, a trailing dot is allowed.
fn fqdn(h: &str) -> bool {
    !h.is_empty() && h.len() <= 255 && h.parse::<IpAddr>().is_err() && dns1123_labels(h)
}

/// Istio's `ValidateDuration`, for the durations it checks: at least 1ms, in whole ms.
fn duration(d: GoDuration, path: &str, c: &mut Check) {
    if d.0 < Duration::from_millis(1) {
        c.error(path, "must be at least 1ms");
    } else if !d.0.subsec_nanos().is_multiple_of(1_000_000) {
        c.error(path, "only millisecond precision is supported");
    }
}

/// The 1ms minimum alone: for the durations only Istio's CRD checks (`duration(self) >=
/// duration('1ms')`), which has no precision rule.
fn at_least_1ms(d: GoDuration, path: &str, c: &mut Check) {
    if d.0 < Duration::from_millis(1) {
        c.error(path, "must be at least 1ms");
    }
}

/// Labels as Istio's `labels.Instance.Validate` checks them (subsets, workload entries,
/// `sourceLabels`), at `{path}.{key}`: Kubernetes label keys, and values of alphanumerics, `-`,
/// `_` and `.` that start and end with an alphanumeric, or empty. Istio sets no length limit on
/// values.
fn labels(labels: &BTreeMap<String, String>, path: &str, c: &mut Check) {
    for (k, v) in labels {
        let p = format!("{path}.{k}");
        if let Err(why) = label_key(k) {
            c.error(p.as_str(), format!("{k:?} is not a valid label key: {why}"));
        }
        if !v.is_empty() && !qualified_name(v) {
            c.error(
                p,
                format!("{v:?} is not a valid label value (alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric)"),
            );
        }
    }
}

/// A Kubernetes label key: an optional DNS-subdomain prefix of at most 253 characters and `/`,
/// then a name of at most 63.
fn label_key(k: &str) -> Result<(), &'static str> {
    const SHAPE: &str = "an optional DNS prefix and '/', then alphanumerics, '-', '_' and '.', \
                         starting and ending with an alphanumeric";
    let (prefix, name) = k.split_once('/').map_or((None, k), |(p, n)| (Some(p), n));
    if !qualified_name(name) || prefix.is_some_and(|p| !p.split('.').all(dns_label_any_length)) {
        return Err(SHAPE);
    }
    if prefix.is_some_and(|p| p.len() > 253) {
        return Err("its DNS prefix is longer than 253 characters");
    }
    if name.len() > 63 {
        return Err("its name is longer than 63 characters");
    }
    Ok(())
}

/// Kubernetes' qualified name (without its length limit): alphanumerics, `-`, `_` and `.`,
/// starting and ending with an alphanumeric.
fn qualified_name(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    edge(s.chars().next()) && edge(s.chars().last()) && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A DNS-1123 label's characters, with no length limit (Istio's label-key prefix pattern).
fn dns_label_any_length(l: &str) -> bool {
    !l.is_empty() && l.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-') && !l.starts_with('-') && !l.ends_with('-')
}

/// A selector's labels (`matchLabels`, or `labels` on a Sidecar or ServiceEntry) at
/// `{path}.{key}`: no empty keys, no wildcards, values of at most 63 characters (Istio's CRDs).
/// Istio checks no other label syntax on selectors. An empty selector selects every workload
/// of the namespace, which Istio warns about.
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
        if v.chars().count() > 63 {
            c.error(format!("{path}.{key}.{k}"), format!("the value of {k:?} is longer than 63 characters"));
        }
    }
}

/// `exportTo`: `.` (the resource's own namespace), `*` (every one), `~` (none), or namespace
/// names.
fn export_to(list: &[String], path: &str, c: &mut Check) {
    for (i, e) in list.iter().enumerate() {
        let ok = matches!(e.as_str(), "." | "*" | "~") || dns_label(e);
        if !ok {
            c.error(format!("{path}[{i}]"), format!("{e:?} is not `.`, `*`, `~` or a namespace name"));
        }
    }
    if list.len() > 1 && list.iter().any(|e| e == "~") {
        c.error(path, "`~` (export to no namespace) cannot be combined with other entries");
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
