//! `weft dashboard`: opens the control plane's web dashboard (topology, services, proxies'
//! sync status, analyzer findings), which the control plane serves on its loopback debug port.
//! Like `istioctl dashboard`, it checks the page answers before it sends anyone to it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

#[derive(clap::Args)]
pub struct DashboardArgs {
    /// The control plane's debug address [default: that of the mesh `weft up` started, else
    /// 127.0.0.1:15014].
    #[arg(long = "control-plane")]
    control_plane: Option<SocketAddr>,
    /// The `weft up` run whose control plane to use [default: as `weft up`'s].
    #[arg(long = "run-dir")]
    run_dir: Option<PathBuf>,
    /// Print the address only; do not start a browser.
    #[arg(long = "no-browser")]
    no_browser: bool,
}

/// The debug address: given, else the `weft up` run's, else Istio's 15014 on loopback.
fn address(args: &DashboardArgs) -> Result<SocketAddr, String> {
    if let Some(a) = args.control_plane {
        return Ok(a);
    }
    let dir = crate::local_cmd::run_dir(args.run_dir.as_ref());
    match weft_local::state::State::load(&dir) {
        Ok(Some(state)) if !state.control_plane_debug.is_empty() => state
            .control_plane_debug
            .parse()
            .map_err(|_| format!("{}: control plane address {:?} is not host:port", dir.display(), state.control_plane_debug)),
        _ => Ok(SocketAddr::from(([127, 0, 0, 1], 15014))),
    }
}

pub fn run(args: DashboardArgs) -> ExitCode {
    let addr = match address(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("weft dashboard: {e}");
            return ExitCode::from(2);
        }
    };
    match crate::ops_cmd::http_get(addr, "/") {
        Ok((200, body)) if body.contains("weft") => {}
        Ok((status, _)) => {
            eprintln!("weft dashboard: {addr} answered {status} for the dashboard page: is it a weft control plane's debug port?");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("weft dashboard: cannot reach the control plane at {addr}: {e} (is `weft up` or `weft control-plane` running? see --control-plane)");
            return ExitCode::from(1);
        }
    }
    let url = format!("http://{addr}/");
    say!("weft dashboard: {url}");
    if args.no_browser {
        return ExitCode::SUCCESS;
    }
    // Only where a desktop session can show a window; elsewhere the address is the answer.
    let desktop = std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    if desktop || cfg!(target_os = "macos") {
        match Command::new(opener).arg(&url).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn() {
            Ok(_) => say!("opened in your browser"),
            Err(e) => say!("could not start {opener} ({e}); open the address above in a browser"),
        }
    } else {
        say!("no desktop session here: open the address above in a browser (over ssh: ssh -L {0}:{0} this-host)", addr.port());
    }
    ExitCode::SUCCESS
}
