//! `weft-cni`: the CNI plugin entry point (the `weft` binary called by that name).

use std::process::ExitCode;

pub fn run() -> ExitCode {
    eprintln!("weft-cni: not built yet");
    ExitCode::from(1)
}
