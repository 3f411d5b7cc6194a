//! PeerAuthentication: its selector and mTLS modes.

use super::{selector, Check};
use crate::security::PeerAuthentication;

pub(super) fn peer_authentication(pa: &PeerAuthentication, c: &mut Check) {
    // Port keys are checked as they are read (`crate::security::port_level_mtls`).
    if let Some(sel) = &pa.selector {
        selector(&sel.match_labels, "spec.selector", "matchLabels", c);
    }
    if !pa.port_level_mtls.is_empty() && pa.selector.as_ref().map(|s| s.match_labels.is_empty()).unwrap_or(true) {
        c.error("spec.portLevelMtls", "port-level mTLS needs a workload selector");
    }
    if pa.mtls.is_none() && pa.port_level_mtls.is_empty() {
        c.warn("spec", "neither mtls nor portLevelMtls is set; this policy inherits its parent's mode");
    }
}
