//! Which iptables the host uses. Rules written with iptables-legacy are invisible to
//! iptables-nft and the other way round, so capture must use the backend whose rules the
//! kernel actually consults for this namespace: the one already holding rules (kubelet's
//! hint chains first), else the one `iptables` itself points to.

use std::process::Command;

use crate::apply::ApplyError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    pub fn save(self) -> &'static str {
        match self {
            Backend::Legacy => "iptables-legacy-save",
            Backend::Nft => "iptables-nft-save",
        }
    }

    pub fn restore(self) -> &'static str {
        match self {
            Backend::Legacy => "iptables-legacy-restore",
            Backend::Nft => "iptables-nft-restore",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        }
    }

    /// `legacy`, `nft` or `auto` (None) as given on the command line.
    pub fn parse(s: &str) -> Result<Option<Backend>, String> {
        match s {
            "legacy" => Ok(Some(Backend::Legacy)),
            "nft" => Ok(Some(Backend::Nft)),
            "auto" | "" => Ok(None),
            other => Err(format!("--iptables-backend {other:?}: expected legacy, nft or auto")),
        }
    }

    /// Picks the backend for the current network namespace and says why.
    pub fn detect() -> Result<(Backend, String), ApplyError> {
        let mut seen = Vec::new();
        for backend in [Backend::Legacy, Backend::Nft] {
            // A missing binary is simply not a candidate; both missing is reported below.
            if let Ok(out) = Command::new(backend.save()).output() {
                if out.status.success() {
                    seen.push((backend, String::from_utf8_lossy(&out.stdout).into_owned()));
                }
            }
        }
        if seen.is_empty() {
            return Err(ApplyError::MissingTool {
                tool: "iptables-legacy-save or iptables-nft-save".into(),
                hint: "install the iptables package (Debian/Ubuntu: apt-get install iptables)".into(),
            });
        }
        for (backend, text) in &seen {
            if text.contains(":KUBE-IPTABLES-HINT") || text.contains(":KUBE-KUBELET-CANARY") {
                return Ok((*backend, format!("{} holds kubelet's hint chain", backend.save())));
            }
        }
        let rules = |t: &str| t.lines().filter(|l| l.starts_with("-A ")).count();
        if let Some((backend, text)) = seen.iter().find(|(_, t)| rules(t) > 0) {
            return Ok((*backend, format!("{} already holds {} rules", backend.save(), rules(text))));
        }
        let default = Command::new("iptables").arg("--version").output().ok().map(|o| {
            if String::from_utf8_lossy(&o.stdout).contains("nf_tables") {
                Backend::Nft
            } else {
                Backend::Legacy
            }
        });
        let backend = default.filter(|d| seen.iter().any(|(b, _)| b == d)).unwrap_or(seen[0].0);
        Ok((backend, format!("no rules yet; `iptables` is {}", backend.name())))
    }
}
