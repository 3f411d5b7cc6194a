//! The run directory's `state.json`: everything `weft up` created, written before each next
//! step so `weft down` can undo a half-finished or crashed run.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{io_err, LocalError};

pub const STATE_FILE: &str = "state.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// The mesh file this run came from.
    pub file: String,
    pub bridge: Option<String>,
    pub bridge_address: Option<String>,
    /// The workloads' address range: the bridge's subnet, or in explicit mode the loopback
    /// range.
    pub subnet: String,
    /// Explicit mode: no namespaces, bridge or capture; every process runs as the user.
    #[serde(default)]
    pub explicit: bool,
    pub control_plane_debug: String,
    /// Processes started, in start order.
    pub processes: Vec<Proc>,
    pub workloads: Vec<WorkloadState>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Proc {
    /// `control-plane`, `<ns>/<name>/sidecar` or `<ns>/<name>/app`.
    pub role: String,
    pub pid: u32,
    /// The process's start time (clock ticks since boot, /proc/<pid>/stat field 22), so a
    /// recycled PID is never signalled.
    pub start_time: u64,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkloadState {
    pub id: String,
    /// Its network namespace, recorded before it is made; `/etc/netns/<netns>` goes with it.
    /// None in explicit mode.
    pub netns: Option<String>,
    /// The workload's address: the WorkloadEntry's, where other sidecars reach it (in explicit
    /// mode its sidecar's, the "mesh address").
    pub address: String,
    /// Explicit mode: where the application listens (its own loopback address).
    #[serde(default)]
    pub app_address: Option<String>,
    pub sidecar: bool,
    /// A gateway workload: its proxy is all that runs.
    #[serde(default)]
    pub gateway: bool,
    pub ports: Vec<u16>,
}

impl State {
    pub fn load(run_dir: &Path) -> Result<Option<State>, LocalError> {
        let path = run_dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| LocalError::Environment(format!("{}: unreadable ({e}); remove the run directory by hand", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LocalError::Io { path, source: e }),
        }
    }

    /// Writes atomically (temp file + rename), so a crash never leaves half a state.
    pub fn save(&self, run_dir: &Path) -> Result<(), LocalError> {
        let path = run_dir.join(STATE_FILE);
        let tmp = run_dir.join(format!("{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| LocalError::Environment(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))
    }
}
