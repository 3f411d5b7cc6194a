//! `weft status`: each workload's processes and whether its sidecar is ready.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::bootstrap::HEALTH_PORT;
use crate::state::State;
use crate::{probe, process, LocalError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadStatus {
    pub id: String,
    pub address: String,
    /// Explicit mode: where the application listens.
    pub app_address: Option<String>,
    pub app: bool,
    /// None: no sidecar.
    pub sidecar: Option<bool>,
    /// The sidecar's `/healthz/ready` answered 200.
    pub ready: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub file: String,
    pub control_plane: bool,
    pub control_plane_debug: String,
    pub explicit: bool,
    pub workloads: Vec<WorkloadStatus>,
}

impl Status {
    pub fn healthy(&self) -> bool {
        self.control_plane && self.workloads.iter().all(|w| w.app && w.sidecar != Some(false) && w.ready != Some(false))
    }
}

/// None when nothing runs from `run_dir`.
pub fn status(run_dir: &Path) -> Result<Option<Status>, LocalError> {
    let Some(state) = State::load(run_dir)? else { return Ok(None) };
    let alive = |role: &str| state.processes.iter().find(|p| p.role == role).map(process::alive);
    let workloads = state
        .workloads
        .iter()
        .map(|w| {
            let sidecar = if w.sidecar { Some(alive(&format!("{}/sidecar", w.id)).unwrap_or(false)) } else { None };
            let ready = (sidecar == Some(true)).then(|| {
                w.address.parse::<Ipv4Addr>().ok().is_some_and(|ip| {
                    matches!(probe::get(SocketAddr::from((ip, HEALTH_PORT)), "/healthz/ready", Duration::from_secs(1)), Ok((200, _)))
                })
            });
            let ready = if w.sidecar { Some(ready.unwrap_or(false)) } else { None };
            WorkloadStatus {
                id: w.id.clone(),
                address: w.address.clone(),
                app_address: w.app_address.clone(),
                app: alive(&format!("{}/app", w.id)).unwrap_or(false),
                sidecar,
                ready,
            }
        })
        .collect();
    Ok(Some(Status {
        file: state.file.clone(),
        control_plane: alive("control-plane").unwrap_or(false),
        control_plane_debug: state.control_plane_debug.clone(),
        explicit: state.explicit,
        workloads,
    }))
}
