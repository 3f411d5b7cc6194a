//! The one-machine mesh behind `weft up`, `weft status` and `weft down`: every workload in
//! its own network namespace with its own address on a private bridge (no route off the
//! machine), Istio's capture inside it, a `weft proxy` sidecar as UID 1337 with a workload
//! identity from the control plane's CA, and the application unmodified. Services get stable
//! virtual addresses and names in each namespace's `/etc/hosts`.
//!
//! Everything created is recorded in the run directory's `state.json` before the next step,
//! so `weft down` can take it all away, also after `weft up` or a process crashed.
//!
//! Or, in explicit mode (`explicit.rs`), without namespaces, capture or privileges: every
//! workload on loopback addresses of its own, its application pointed at its sidecar.
//!
//! This crate starts processes and runs `ip`; it does not know xDS or the proxy's internals.

pub mod addr;
pub mod bootstrap;
pub mod down;
pub mod explicit;
pub mod host;
pub mod probe;
pub mod process;
pub mod rundir;
pub mod spec;
pub mod state;
pub mod status;
pub mod up;

use std::path::PathBuf;

/// What went wrong, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{0}")]
    Spec(String),
    #[error("{0}")]
    Environment(String),
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Timeout(String),
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LocalError {
    let path = path.into();
    move |source| LocalError::Io { path, source }
}
