//! `weft down`: stops every process `weft up` recorded (only those: PID and start time must
//! match) and removes every namespace (its capture rules go with it), veth, `/etc/netns`
//! directory and the bridge, then the run directory. Safe to run twice, and after a crash. An
//! explicit-mode run made no namespace or bridge: its processes and run directory are all.

use std::path::Path;
use std::time::Duration;

use crate::state::State;
use crate::{host, process, LocalError};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub processes: usize,
    pub namespaces: usize,
    pub bridge: Option<String>,
    /// A run was recorded there (and its directory is now gone).
    pub run_dir: bool,
}

pub fn down(run_dir: &Path) -> Result<Removed, LocalError> {
    let Some(state) = State::load(run_dir)? else {
        return Ok(Removed::default());
    };
    let mut removed = Removed { run_dir: true, ..Removed::default() };
    // Applications first, then sidecars, then the control plane: the reverse of start.
    for p in state.processes.iter().rev() {
        if process::alive(p) {
            process::stop(p, Duration::from_secs(5));
            removed.processes += 1;
        }
    }
    for netns in state.workloads.iter().rev().filter_map(|w| w.netns.as_deref()).filter(|n| !n.is_empty()) {
        host::delete_netns(netns);
        // Absent when up stopped before writing it.
        let _ = std::fs::remove_dir_all(host::etc_dir(netns));
        removed.namespaces += 1;
    }
    if let Some(bridge) = &state.bridge {
        host::delete_link(bridge);
        removed.bridge = Some(bridge.clone());
    }
    std::fs::remove_dir_all(run_dir).map_err(crate::io_err(run_dir))?;
    Ok(removed)
}
