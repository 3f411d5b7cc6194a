//! Where a run lives when `--run-dir` is not given: root keeps `/run/weft/default`; any other
//! user a directory of their own — `$XDG_RUNTIME_DIR/weft/default`, else
//! `/tmp/weft-<uid>/default` — so explicit mode works without privileges, and `weft status` /
//! `weft down` find the same run without being told.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::{io_err, LocalError};

/// Root's run directory.
pub const SYSTEM_RUN_DIR: &str = "/run/weft/default";

/// This process's effective UID (from /proc, so no `unsafe` call is needed).
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// The default run directory for `uid`, given `$XDG_RUNTIME_DIR` (ignored unless absolute).
pub fn default_run_dir(uid: u32, xdg_runtime_dir: Option<&str>) -> PathBuf {
    if uid == 0 {
        return PathBuf::from(SYSTEM_RUN_DIR);
    }
    match xdg_runtime_dir.map(Path::new).filter(|p| p.is_absolute()) {
        Some(xdg) => xdg.join("weft").join("default"),
        None => tmp_base(uid).join("default"),
    }
}

fn tmp_base(uid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/weft-{uid}"))
}

/// When `run_dir` is under `/tmp/weft-<uid>`, makes sure that directory is this user's own and
/// private (made 0700 if absent; refused if it is a link, someone else's, or open to others),
/// so no other user can put files or links where the run's keys and state go.
pub fn secure_parent(run_dir: &Path, uid: u32) -> Result<(), LocalError> {
    let base = tmp_base(uid);
    if uid == 0 || !run_dir.starts_with(&base) {
        return Ok(());
    }
    match std::fs::create_dir(&base) {
        Ok(()) => std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700)).map_err(io_err(&base))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(LocalError::Io { path: base, source: e }),
    }
    let meta = std::fs::symlink_metadata(&base).map_err(io_err(&base))?;
    if !meta.file_type().is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(LocalError::Environment(format!(
            "{} is not a private directory of uid {uid} (a link, another user's, or open to others); remove it or pass --run-dir",
            base.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_keeps_run_and_users_get_their_own() {
        assert_eq!(default_run_dir(0, Some("/run/user/0")), PathBuf::from(SYSTEM_RUN_DIR));
        assert_eq!(default_run_dir(1000, Some("/run/user/1000")), PathBuf::from("/run/user/1000/weft/default"));
        assert_eq!(default_run_dir(1000, None), PathBuf::from("/tmp/weft-1000/default"));
        assert_eq!(default_run_dir(1000, Some("relative")), PathBuf::from("/tmp/weft-1000/default"));
    }

    #[test]
    fn a_tmp_base_owned_by_someone_else_is_refused() {
        // Only meaningful when the test does not run as the uid it pretends to be.
        let me = effective_uid().expect("uid");
        let other = if me == 4242 { 4243 } else { 4242 };
        let base = tmp_base(other);
        if base.exists() {
            return;
        }
        // Made by this process, so owned by `me`, not by `other`.
        let made = secure_parent(&base.join("default"), other);
        let _ = std::fs::remove_dir(&base);
        assert!(matches!(made, Err(LocalError::Environment(m)) if m.contains("not a private directory")));
        assert!(secure_parent(Path::new("/somewhere/else"), other).is_ok());
    }
}
