//! Transparent traffic capture, as istio-iptables does it: the application's TCP traffic is
//! redirected by netfilter to the sidecar (outbound to 15001, inbound to 15006) while the
//! proxy's own traffic (UID/GID 1337) and loopback are left alone.
//!
//! `options` turns istio-iptables' flag values into a checked [`CaptureConfig`] (nothing is
//! written before every value is valid); `rules` builds the exact chains and rules from it;
//! `backend` picks iptables-legacy or iptables-nft the way the host uses them; `apply` writes
//! the rules atomically and idempotently with `iptables-restore`, checks them, or removes
//! them; `cni` is the CNI plugin protocol around all that (what istio-cni does).
//!
//! This crate knows nothing about proxies or the control plane; it only runs `iptables-*`
//! and `ip`, in the current network namespace or, through `nsenter`, in a pod's.

pub mod apply;
pub mod backend;
pub mod cni;
pub mod options;
pub mod rules;

pub use apply::{apply, cleanup, verify, ApplyError, Target};
pub use backend::Backend;
pub use options::{CaptureConfig, InboundPorts, InterceptMode, OptionError, OutboundRanges, RawOptions};
pub use rules::Ruleset;
