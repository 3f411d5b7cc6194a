//! Network namespaces with iptables for capture tests. Each namespace is deleted on drop.

use std::process::Command;

/// Runs a command, failing with its output when it does not succeed.
pub fn sh(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| anyhow::anyhow!("cannot run {cmd}: {e}"))?;
    if !out.status.success() {
        anyhow::bail!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails with a clear reason when this process cannot create namespaces or program iptables.
pub fn require_root_netadmin() -> anyhow::Result<()> {
    #[allow(unsafe_code, reason = "geteuid has no std wrapper")]
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        anyhow::bail!("this test needs root (CAP_NET_ADMIN) for network namespaces and iptables; run it as root (CI does)");
    }
    for tool in ["ip", "iptables"] {
        if Command::new(tool).arg("--version").output().is_err() {
            anyhow::bail!("this test needs `{tool}`; run scripts/setup.sh (Debian packages iproute2, iptables)");
        }
    }
    Ok(())
}

/// A network namespace with loopback up; removed on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> anyhow::Result<Netns> {
        require_root_netadmin()?;
        let name = format!("wt-{tag}-{}", std::process::id());
        let _ = sh("ip", &["netns", "del", &name]);
        sh("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.exec("ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["netns", "exec", self.name.as_str(), cmd];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    /// A `Command` that will run inside the namespace.
    pub fn command(&self, cmd: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, cmd]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh("ip", &["netns", "del", &self.name]);
    }
}
