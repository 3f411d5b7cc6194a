//! Starting the mesh's processes detached (their own session, output to a log file, so they
//! outlive `weft up`), and stopping exactly those: a PID is signalled only while its start
//! time still matches the one recorded, so a recycled PID is never hit.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::state::Proc;
use crate::{io_err, LocalError};

/// Starts `argv` under `setsid` (a new session: no terminal's signals reach it) with
/// stdout/stderr to `log`. `setsid`, `ip netns exec` and `setpriv` all exec in place, so the
/// PID returned is the program's own. Without `setsid` (util-linux missing; explicit mode
/// needs nothing else from it) the program gets a process group of its own, which keeps the
/// terminal's Ctrl-C away from it too.
pub fn spawn(role: &str, argv: &[String], env: &[(String, String)], cwd: &Path, log: &Path) -> Result<Proc, LocalError> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(io_err(log))?;
    let err = out.try_clone().map_err(io_err(log))?;
    let mut cmd = match crate::host::which("setsid") {
        Some(setsid) => {
            let mut c = Command::new(setsid);
            c.args(argv);
            c
        }
        None => {
            let (program, args) = argv.split_first().ok_or_else(|| LocalError::Spec(format!("{role}: nothing to run")))?;
            let mut c = Command::new(program);
            c.args(args);
            std::os::unix::process::CommandExt::process_group(&mut c, 0);
            c
        }
    };
    let child = cmd
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| LocalError::Command { command: format!("setsid {}", argv.join(" ")), stderr: e.to_string() })?;
    let pid = child.id();
    // The child is reaped by init once this process exits; dropping the handle does not kill it.
    drop(child);
    let start_time = start_time(pid).unwrap_or(0);
    Ok(Proc { role: role.into(), pid, start_time, log: log.to_path_buf() })
}

/// Field 22 of /proc/<pid>/stat, None when the process is gone.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the recorded process still runs (and is not a zombie).
pub fn alive(p: &Proc) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", p.pid)) else { return false };
    let state = stat.rsplit_once(')').and_then(|(_, a)| a.split_whitespace().next()).unwrap_or("");
    state != "Z" && start_time(p.pid) == Some(p.start_time)
}

/// SIGTERM, up to `grace` to exit, then SIGKILL.
pub fn stop(p: &Proc, grace: Duration) {
    if !alive(p) {
        return;
    }
    signal(p.pid, "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !alive(p) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(p) {
        signal(p.pid, "KILL");
    }
}

fn signal(pid: u32, sig: &str) {
    // The process may exit between the check and the signal; that is fine. Without procps'
    // `kill`, the shell's builtin does the same.
    let sent = Command::new("kill").args([format!("-{sig}"), pid.to_string()]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    if sent.is_err() {
        let _ = Command::new("sh")
            .args(["-c", "kill -s \"$0\" \"$1\"", sig, &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
