//! Records the commit the binary is built from, for `weft version` and `--version`. Only git
//! is asked, and only about this repository; outside a git checkout the commit is "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

/// Watches `path` if it exists: cargo re-runs a build script on every build for a missing one.
fn watch(path: Option<String>) {
    if let Some(p) = path.filter(|p| std::path::Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={p}");
    }
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=WEFT_COMMIT={commit}");
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the ref it points to (a commit).
    watch(git(&["rev-parse", "--path-format=absolute", "--git-path", "HEAD"]));
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(git(&["rev-parse", "--path-format=absolute", "--git-path", &reference]));
    }
    watch(git(&["rev-parse", "--path-format=absolute", "--git-path", "packed-refs"]));
    println!("cargo:rerun-if-changed=build.rs");
}
