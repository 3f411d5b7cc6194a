//! `x-forwarded-client-cert` (Envoy's `forward_client_cert_details`): how the client
//! certificate of an mTLS connection is told to the application, and how a header the client
//! sent itself is kept from passing as one.

use http::{HeaderMap, HeaderName, HeaderValue};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::tls::san::Sans;
use crate::transport::TlsInfo;

pub static XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Envoy's modes, as the wire names them: SANITIZE (the default: remove the header),
/// FORWARD_ONLY (keep it on mTLS connections), APPEND_FORWARD (add this connection's element on
/// mTLS connections), SANITIZE_SET (replace it with this connection's element on mTLS
/// connections), ALWAYS_FORWARD_ONLY (keep it whatever the connection). Without mTLS every mode
/// but the last removes the header.
pub use weft_xds::filters::ForwardClientCertDetails as ForwardMode;

/// Which parts of the client certificate go into the element this proxy adds (`By` and
/// `Hash` always do).
#[derive(Debug, Clone, Copy, Default)]
pub struct Details {
    pub subject: bool,
    pub uri: bool,
    pub dns: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct XfccConfig {
    pub mode: ForwardMode,
    pub details: Details,
}

impl XfccConfig {
    pub fn apply(&self, h: &mut HeaderMap, tls: Option<&TlsInfo>) {
        let mutual = tls.filter(|t| t.peer.is_some());
        match (self.mode, mutual) {
            (ForwardMode::AlwaysForwardOnly, _) | (ForwardMode::ForwardOnly, Some(_)) => {}
            (ForwardMode::AppendForward, Some(t)) => {
                let mine = t.xfcc.get_or_init(|| self.element(t));
                let v = match h.get(&XFCC).and_then(|v| v.to_str().ok()) {
                    Some(prev) if !prev.is_empty() => format!("{prev},{mine}"),
                    _ => mine.clone(),
                };
                set(h, &v);
            }
            (ForwardMode::SanitizeSet, Some(t)) => set(h, t.xfcc.get_or_init(|| self.element(t))),
            _ => {
                h.remove(&XFCC);
            }
        }
    }

    /// `By=<our URI SAN>;Hash=<SHA-256 of the client certificate>;Subject="…";URI=…;DNS=…`,
    /// in Envoy's order.
    fn element(&self, t: &TlsInfo) -> String {
        let mut parts = Vec::new();
        if let Some(by) = t.local.as_ref().and_then(|c| Sans::of(c).uri.into_iter().next()) {
            parts.push(format!("By={by}"));
        }
        let Some(peer) = &t.peer else { return parts.join(";") };
        let digest = ring::digest::digest(&ring::digest::SHA256, peer);
        parts.push(format!("Hash={}", digest.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()));
        if self.details.subject {
            let subject = X509Certificate::from_der(peer).map(|(_, c)| rfc2253(&c)).unwrap_or_default();
            parts.push(format!("Subject=\"{}\"", subject.replace('"', "\\\"")));
        }
        let sans = Sans::of(peer);
        if self.details.uri {
            parts.extend(sans.uri.iter().map(|u| format!("URI={u}")));
        }
        if self.details.dns {
            parts.extend(sans.dns.iter().map(|d| format!("DNS={d}")));
        }
        parts.join(";")
    }
}

/// The subject in RFC 2253 order (most specific first, comma-separated), as Envoy prints it.
fn rfc2253(c: &X509Certificate<'_>) -> String {
    let mut rdns: Vec<String> = c.subject().iter().map(|rdn| rdn.iter().map(|a| attribute(a)).collect::<Vec<_>>().join("+")).collect();
    rdns.reverse();
    rdns.join(",")
}

fn attribute(a: &x509_parser::x509::AttributeTypeAndValue<'_>) -> String {
    let oid = a.attr_type();
    let name = x509_parser::objects::oid2abbrev(oid, x509_parser::objects::oid_registry())
        .map(str::to_string)
        .unwrap_or_else(|_| oid.to_id_string());
    format!("{name}={}", a.as_str().unwrap_or_default())
}

fn set(h: &mut HeaderMap, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        h.insert(XFCC.clone(), v);
    } else {
        h.remove(&XFCC);
    }
}
