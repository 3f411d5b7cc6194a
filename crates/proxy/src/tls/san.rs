//! Subject alternative names: reading them from a peer certificate and matching them the way
//! Envoy's `match_typed_subject_alt_names` (and the older untyped `match_subject_alt_names`) do.

use std::fmt;
use std::net::IpAddr;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use weft_xds::tls::{SanType, SubjectAltNameMatcher};

use crate::config::route::{string_match, StringMatch, StringMatchCase};
use crate::config::{ConfigError, Result};
use crate::http::routing::string_matches;

/// The names a certificate carries, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sans {
    pub dns: Vec<String>,
    pub uri: Vec<String>,
    pub ip: Vec<IpAddr>,
    pub email: Vec<String>,
}

impl Sans {
    /// Reads the SAN extension of a DER certificate; a certificate without one has no names.
    pub fn of(der: &[u8]) -> Sans {
        let mut sans = Sans::default();
        let Ok((_, cert)) = X509Certificate::from_der(der) else { return sans };
        let Ok(Some(ext)) = cert.subject_alternative_name() else { return sans };
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(d) => sans.dns.push(d.to_string()),
                GeneralName::URI(u) => sans.uri.push(u.to_string()),
                GeneralName::RFC822Name(e) => sans.email.push(e.to_string()),
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        sans.ip.push(IpAddr::from(a));
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        sans.ip.push(IpAddr::from(a));
                    }
                }
                _ => {}
            }
        }
        sans
    }
}

impl fmt::Display for Sans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = self
            .uri
            .iter()
            .map(|u| format!("URI:{u}"))
            .chain(self.dns.iter().map(|d| format!("DNS:{d}")))
            .chain(self.ip.iter().map(|i| format!("IP:{i}")))
            .chain(self.email.iter().map(|e| format!("email:{e}")))
            .collect();
        if all.is_empty() {
            f.write_str("no subject alternative names")
        } else {
            f.write_str(&all.join(", "))
        }
    }
}

/// Which SANs a matcher looks at; `Any` is the untyped form, which tries every kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dns,
    Uri,
    Ip,
    Email,
    Any,
}

#[derive(Debug)]
struct Matcher {
    kind: Kind,
    value: StringMatchCase,
}

/// The SAN matchers of one validation context: a peer passes when any matcher matches any of
/// its names of that kind; an empty list accepts every peer.
#[derive(Debug, Default)]
pub struct SanMatchers(Vec<Matcher>);

impl SanMatchers {
    pub fn from_wire(typed: &[SubjectAltNameMatcher], untyped: &[weft_xds::core::StringMatcher], path: &str) -> Result<Self> {
        let mut v = Vec::new();
        for (i, m) in typed.iter().enumerate() {
            let p = format!("{path}.match_typed_subject_alt_names[{i}]");
            let kind = match m.san_type {
                SanType::Dns => Kind::Dns,
                SanType::Uri => Kind::Uri,
                SanType::IpAddress => Kind::Ip,
                SanType::Email => Kind::Email,
                SanType::Unspecified => return Err(ConfigError::new(format!("{p}.san_type"), "a SAN type is required")),
                SanType::OtherName => return Err(ConfigError::new(format!("{p}.san_type"), "OTHER_NAME is not supported")),
            };
            v.push(Matcher { kind, value: string_match(&m.matcher, &format!("{p}.matcher"))? });
        }
        for (i, m) in untyped.iter().enumerate() {
            let p = format!("{path}.match_subject_alt_names[{i}]");
            v.push(Matcher { kind: Kind::Any, value: string_match(m, &p)? });
        }
        Ok(SanMatchers(v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn accepts(&self, sans: &Sans) -> bool {
        self.0.is_empty() || self.0.iter().any(|m| m.accepts(sans))
    }
}

impl Matcher {
    fn accepts(&self, sans: &Sans) -> bool {
        let dns = || sans.dns.iter().any(|d| dns_matches(&self.value, d));
        let uri = || sans.uri.iter().any(|u| string_matches(&self.value, u));
        let ip = || sans.ip.iter().any(|a| string_matches(&self.value, &a.to_string()));
        let email = || sans.email.iter().any(|e| string_matches(&self.value, e));
        match self.kind {
            Kind::Dns => dns(),
            Kind::Uri => uri(),
            Kind::Ip => ip(),
            Kind::Email => email(),
            Kind::Any => dns() || uri() || ip() || email(),
        }
    }
}

/// A DNS SAN against a matcher. As in Envoy, an exact matcher also accepts a wildcard SAN
/// (`*.example.com`) that covers the expected name's first label.
fn dns_matches(m: &StringMatchCase, san: &str) -> bool {
    if string_matches(m, san) {
        return true;
    }
    match (&m.kind, san.strip_prefix("*.")) {
        (StringMatch::Exact(want), Some(suffix)) => {
            want.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(kind: Kind, s: &str) -> Matcher {
        Matcher { kind, value: StringMatchCase { kind: StringMatch::Exact(s.into()), ignore_case: false } }
    }

    #[test]
    fn typed_matchers_look_only_at_their_kind() {
        let sans =
            Sans { uri: vec!["spiffe://cluster.local/ns/default/sa/reviews".into()], dns: vec!["reviews".into()], ..Default::default() };
        assert!(SanMatchers(vec![exact(Kind::Uri, "spiffe://cluster.local/ns/default/sa/reviews")]).accepts(&sans));
        assert!(!SanMatchers(vec![exact(Kind::Dns, "spiffe://cluster.local/ns/default/sa/reviews")]).accepts(&sans));
        assert!(SanMatchers(vec![exact(Kind::Any, "reviews")]).accepts(&sans));
        assert!(!SanMatchers(vec![exact(Kind::Uri, "spiffe://cluster.local/ns/default/sa/ratings")]).accepts(&sans));
        assert!(SanMatchers::default().accepts(&Sans::default()));
    }

    #[test]
    fn wildcard_dns_san_covers_one_label() {
        let sans = Sans { dns: vec!["*.example.com".into()], ..Default::default() };
        assert!(SanMatchers(vec![exact(Kind::Dns, "api.example.com")]).accepts(&sans));
        assert!(!SanMatchers(vec![exact(Kind::Dns, "a.b.example.com")]).accepts(&sans));
        assert!(!SanMatchers(vec![exact(Kind::Dns, "example.com")]).accepts(&sans));
    }
}
