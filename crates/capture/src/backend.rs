//! Which iptables the host uses. Rules written with iptables-legacy are invisible to
//! iptables-nft and the other way round, so capture must use the backend whose rules the
//! kernel actually consults for this namespace: the one already holding rules (kubelet's
//! hint chains first), else the one `iptables` itself points to. A pod's fresh namespace
//! holds nothing yet, so for it the host's namespace decides (where kubelet left its hint).

use crate::apply::{ApplyError, Target};

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

    /// The rule-at-a-time command (for `-C`).
    pub fn iptables(self) -> &'static str {
        match self {
            Backend::Legacy => "iptables-legacy",
            Backend::Nft => "iptables-nft",
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

    /// Picks the backend for `target` and says why.
    pub fn detect(target: &Target) -> Result<(Backend, String), ApplyError> {
        let seen = saves(target)?;
        if seen.is_empty() {
            return Err(ApplyError::MissingTool {
                tool: "iptables-legacy-save or iptables-nft-save".into(),
                hint: "install the iptables package (Debian/Ubuntu: apt-get install iptables)".into(),
            });
        }
        if let Some(found) = by_content(&seen) {
            return Ok(found);
        }
        if let Target::Netns(_) = target {
            if let Some((backend, why)) = by_content(&saves(&Target::Current)?).filter(|(b, _)| seen.iter().any(|(s, _)| s == b)) {
                return Ok((backend, format!("the pod's namespace is empty; on the host {why}")));
            }
        }
        let default =
            target.run("iptables", &["--version"], None).ok().map(|v| if v.contains("nf_tables") { Backend::Nft } else { Backend::Legacy });
        let backend = default.filter(|d| seen.iter().any(|(b, _)| b == d)).unwrap_or(seen[0].0);
        Ok((backend, format!("no rules yet; `iptables` is {}", backend.name())))
    }
}

/// Each backend whose save command runs in `target`, with its output. A missing binary is
/// simply not a candidate; a missing nsenter or namespace is an error.
fn saves(target: &Target) -> Result<Vec<(Backend, String)>, ApplyError> {
    let mut seen = Vec::new();
    for backend in [Backend::Legacy, Backend::Nft] {
        match target.run(backend.save(), &[], None) {
            Ok(text) => seen.push((backend, text)),
            Err(ApplyError::MissingTool { tool, .. }) if tool == backend.save() => {}
            Err(ApplyError::Failed { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(seen)
}

/// The backend the saved rules point to: kubelet's hint chain, then capture's own chains,
/// then any rules at all.
fn by_content(seen: &[(Backend, String)]) -> Option<(Backend, String)> {
    for (backend, text) in seen {
        if text.contains(":KUBE-IPTABLES-HINT") || text.contains(":KUBE-KUBELET-CANARY") {
            return Some((*backend, format!("{} holds kubelet's hint chain", backend.save())));
        }
    }
    for (backend, text) in seen {
        if text.lines().any(|l| l.strip_prefix(':').is_some_and(|c| c.starts_with("ISTIO_"))) {
            return Some((*backend, format!("{} holds Istio's chains", backend.save())));
        }
    }
    let rules = |t: &str| t.lines().filter(|l| l.starts_with("-A ")).count();
    seen.iter()
        .find(|(_, t)| rules(t) > 0)
        .map(|(backend, text)| (*backend, format!("{} already holds {} rules", backend.save(), rules(text))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelets_hint_then_capture_chains_then_any_rules() {
        let hint = (Backend::Nft, "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n".to_owned());
        let istio = (Backend::Legacy, "*nat\n:ISTIO_OUTPUT - [0:0]\nCOMMIT\n".to_owned());
        let rules = (Backend::Legacy, "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n".to_owned());
        let empty = (Backend::Nft, "*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n".to_owned());
        assert_eq!(by_content(&[istio.clone(), hint]).map(|(b, _)| b), Some(Backend::Nft));
        assert_eq!(by_content(&[rules.clone(), (Backend::Nft, istio.1.clone())]).map(|(b, _)| b), Some(Backend::Nft));
        assert_eq!(by_content(&[empty.clone(), rules]).map(|(b, _)| b), Some(Backend::Legacy));
        assert_eq!(by_content(&[empty]), None, "an empty namespace says nothing; the host or `iptables` decides");
    }
}
