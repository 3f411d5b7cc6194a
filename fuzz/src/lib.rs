//! Fuzz targets for weft's parsers and validators: one function per target, `fn(&[u8])`, each
//! feeding the bytes to the production entry point and asserting what must hold for any input
//! — no panic, no hang, and the cheap properties each parser has (a normalised path
//! normalises to itself, a decoded xDS resource encodes again, an error names where it is).
//!
//! Two drivers call these: the `cargo fuzz` binaries in `fuzz_targets/` (libFuzzer, nightly,
//! for long runs; their package is `libfuzzer/`, outside the workspace) and the stable short
//! run in `tests/short_run.rs`, which CI runs over `corpus/<target>/` plus mutations.
//!
//! This crate owns no parser; it must not grow a copy of one. Where a parser is private to its
//! crate, that crate has a hidden entry point for it (`weft_proxy::fuzzing`).

mod bootstrap;
mod capture;
mod cni;
mod dns;
mod framing_scan;
mod http_proxy;
mod istio;
mod path_norm;
mod sniff;
mod xds;

pub use bootstrap::bootstrap;
pub use capture::capture_options;
pub use cni::cni;
pub use dns::dns;
pub use framing_scan::framing_scan;
pub use http_proxy::{h2, http1};
pub use istio::istio;
pub use path_norm::path_norm;
pub use sniff::sniff;
pub use xds::xds;

/// A fuzz target: takes any bytes, panics when weft misbehaves on them.
pub type Target = fn(&[u8]);

/// Every target by name; the name is also its corpus directory and its `cargo fuzz` binary.
pub const TARGETS: &[(&str, Target)] = &[
    ("http1", http1),
    ("h2", h2),
    ("framing_scan", framing_scan),
    ("bootstrap", bootstrap),
    ("xds", xds),
    ("istio", istio),
    ("cni", cni),
    ("capture_options", capture_options),
    ("path_norm", path_norm),
    ("sniff", sniff),
    ("dns", dns),
];

/// Whether a configuration value names a device or process file anywhere (a `DataSource`
/// `filename` of `/dev/zero`, `/dev/stdin`, `/proc/kmsg`): validation reads the files a config
/// names, and those never end or block, which is not a bug in weft. Looked for in the parsed
/// value, so escapes in the text do not hide one.
pub(crate) fn names_a_device(v: &serde_json::Value) -> bool {
    let bad = |s: &str| ["/dev/", "/proc/", "/sys/"].iter().any(|d| s.contains(d) || s.starts_with(&d[1..]));
    match v {
        serde_json::Value::String(s) => bad(s),
        serde_json::Value::Array(a) => a.iter().any(names_a_device),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| bad(k) || names_a_device(v)),
        _ => false,
    }
}
