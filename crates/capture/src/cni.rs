//! `weft-cni`, what istio-cni does: a chained CNI plugin (spec <https://www.cni.dev/docs/spec/>)
//! that writes a pod's capture rules into its network namespace on ADD, takes them out on
//! DEL and checks them on CHECK, after an interface plugin (bridge, ptp, Calico...) has set
//! the namespace up.
//!
//! The runtime runs the plugin in the host's namespace with the `CNI_*` environment and the
//! network config on stdin. This module takes both as values (the binary reads them, tests
//! make them up) and answers with what to print and whether it failed: [`run`] parses the
//! environment ([`Invocation::from_env`]) and the config ([`conf::parse`]), decides what to
//! do without touching anything ([`plan`]), then does it ([`Plan::execute`]: `nsenter` into
//! the namespace, `iptables-restore` there). Every refusal happens before the first command.

pub mod chain;
pub mod conf;

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::{json, Map, Value};

use crate::apply::{self, ApplyError, Target};
use crate::backend::Backend;
use crate::options::{CaptureConfig, RawOptions};
use crate::rules::Ruleset;

pub use conf::{Capture, KubeConf, NetConf};

/// What the API server says about a pod, for the plugin in Kubernetes mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodCapture {
    /// Leave the pod alone, and why (no sidecar; it captures itself with istio-init; host
    /// network).
    Skip(String),
    /// Capture with these options: the ones its `istio-validation` container will check.
    Capture(Box<RawOptions>),
}

/// Looks a pod up on the API server (the binary does it with the config's kubeconfig; tests
/// answer from a table).
pub trait PodLookup {
    fn capture_of(&self, kube: &KubeConf, namespace: &str, name: &str) -> Result<PodCapture, CniError>;
}

/// For a config without `kubernetes`: never asked.
pub struct NoLookup;

impl PodLookup for NoLookup {
    fn capture_of(&self, _: &KubeConf, _: &str, _: &str) -> Result<PodCapture, CniError> {
        Err(CniError::new(INTERNAL, "no API server lookup in this build", ""))
    }
}

/// The spec versions whose config and result formats the plugin reads and writes. (0.1.0 and
/// 0.2.0 results have another shape, which a chained plugin would have to convert.)
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The version answered in when the input names none the plugin speaks.
pub const DEFAULT_VERSION: &str = "1.0.0";

// The spec's well-known error codes (0-99 are reserved).
pub const INCOMPATIBLE_VERSION: u32 = 1;
pub const INVALID_ENVIRONMENT: u32 = 4;
pub const IO_FAILURE: u32 = 5;
pub const DECODING_FAILURE: u32 = 6;
pub const INVALID_CONFIG: u32 = 7;
/// STATUS: the plugin cannot serve ADD.
pub const NOT_AVAILABLE: u32 = 50;
// weft-cni's own codes (100 and up are the plugin's).
/// CHECK: the namespace does not hold the capture rules the config asks for.
pub const NOT_CAPTURED: u32 = 100;
/// An iptables or ip command failed in the namespace.
pub const NETFILTER_FAILED: u32 = 101;
/// nsenter, iptables or ip is not installed on the node.
pub const TOOL_MISSING: u32 = 102;
/// Kubernetes mode: the pod could not be read from the API server.
pub const API_UNAVAILABLE: u32 = 103;
/// A bug: the plugin panicked.
pub const INTERNAL: u32 = 999;

/// The spec's error result, printed on stdout with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg} (CNI error {code})")]
pub struct CniError {
    pub code: u32,
    /// Names the problem: the variable, the config key, the command.
    pub msg: String,
    /// What to do about it, or the failing command's output.
    pub details: String,
}

/// The operation in `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

/// The protocol parameters from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    pub container_id: String,
    /// The pod's network namespace; optional for DEL (the runtime may have removed it).
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS` pairs in order (Kubernetes runtimes pass `K8S_POD_NAMESPACE`, `K8S_POD_NAME`).
    pub args: Vec<(String, String)>,
}

/// What the plugin will do, decided before doing any of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub work: Work,
    /// stdout on success: the ADD result or the VERSION answer; empty for the others.
    pub reply: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Nothing to write or check; the reason goes to the log.
    Nothing {
        reason: String,
    },
    Capture {
        target: Target,
        rules: Ruleset,
    },
    Release {
        target: Target,
        cfg: Box<CaptureConfig>,
    },
    Verify {
        target: Target,
        rules: Ruleset,
    },
    /// STATUS: are the tools ADD needs installed?
    Status,
}

/// What the binary prints on stdout, and whether it exits with success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub success: bool,
}

/// The whole plugin: `vars` are the process's `CNI_*` environment variables, `stdin` what the
/// runtime wrote to it. Never panics on any input.
pub fn run(vars: &HashMap<String, String>, stdin: &[u8]) -> Outcome {
    run_with(vars, stdin, &NoLookup)
}

/// [`run`], asking `pods` about the pod when the config names an API server.
pub fn run_with(vars: &HashMap<String, String>, stdin: &[u8], pods: &dyn PodLookup) -> Outcome {
    let answer = |result: Result<String, CniError>| match result {
        Ok(stdout) => Outcome { stdout, success: true },
        Err(e) => {
            tracing::error!(code = e.code, details = %e.details, "{}", e.msg);
            Outcome::error(&e, &reply_version(stdin))
        }
    };
    let invocation = match Invocation::from_env(vars) {
        Ok(i) => i,
        Err(e) => return answer(Err(e)),
    };
    if invocation.command == Command::Version {
        return answer(Ok(version_reply(stdin)));
    }
    answer(
        conf::parse(stdin)
            .and_then(|conf| {
                let pod = pod_capture(&invocation, &conf, pods)?;
                plan_for(&invocation, &conf, pod)
            })
            .and_then(|plan| plan.execute().map(|()| plan.reply)),
    )
}

/// In Kubernetes mode, for ADD and CHECK of a pod outside the excluded namespaces: what the
/// API server says about it. An API server that cannot say fails the call (the runtime
/// retries): a pod with a sidecar must never start uncaptured.
fn pod_capture(invocation: &Invocation, conf: &NetConf, pods: &dyn PodLookup) -> Result<Option<PodCapture>, CniError> {
    let Some(kube) = &conf.kubernetes else { return Ok(None) };
    if !matches!(invocation.command, Command::Add | Command::Check) {
        return Ok(None);
    }
    let (Some(namespace), Some(name)) = (invocation.arg("K8S_POD_NAMESPACE"), invocation.arg("K8S_POD_NAME")) else {
        return Err(CniError::new(
            INVALID_ENVIRONMENT,
            "CNI_ARGS has no K8S_POD_NAMESPACE and K8S_POD_NAME",
            "with kubernetes.kubeconfig the plugin captures only pods with a sidecar, which it looks up by name; the kubelet passes them",
        ));
    };
    if conf.exclude_namespaces.iter().any(|x| x == namespace) {
        return Ok(None);
    }
    pods.capture_of(kube, namespace, name).map(Some)
}

/// Decides what `invocation` does with `conf`; touches nothing.
pub fn plan(invocation: &Invocation, conf: &NetConf) -> Result<Plan, CniError> {
    plan_for(invocation, conf, None)
}

/// [`plan`], with what the API server said about the pod (Kubernetes mode).
pub fn plan_for(invocation: &Invocation, conf: &NetConf, pod: Option<PodCapture>) -> Result<Plan, CniError> {
    // Kubernetes mode: the pod's own options replace the config's `capture` block.
    let pod_capture = |conf_capture: Result<Capture, CniError>| -> Result<Capture, CniError> {
        match &pod {
            None => conf_capture,
            Some(PodCapture::Skip(_)) => Ok(Capture::Off),
            Some(PodCapture::Capture(raw)) => {
                let mut raw = (**raw).clone();
                if raw.dns_servers.is_empty() {
                    raw.dns_servers = conf.nameservers.clone();
                }
                CaptureConfig::from_raw(&raw).map(|c| Capture::On(Box::new(c))).map_err(|e| {
                    CniError::new(
                        INVALID_CONFIG,
                        format!("the pod's istio-validation options: {} {:?}: {}", e.option, e.value, e.reason),
                        "",
                    )
                })
            }
        }
    };
    if let Some(PodCapture::Skip(reason)) = &pod {
        let reply = if invocation.command == Command::Add { add_result(conf) } else { String::new() };
        if matches!(invocation.command, Command::Add | Command::Check) {
            return Ok(Plan { work: Work::Nothing { reason: reason.clone() }, reply });
        }
    }
    let namespace = invocation.arg("K8S_POD_NAMESPACE");
    let excluded = namespace.filter(|ns| conf.exclude_namespaces.iter().any(|x| x == ns));
    let nothing = |reason: String, reply: String| Ok(Plan { work: Work::Nothing { reason }, reply });
    let target = || {
        invocation.netns.clone().map(Target::Netns).ok_or_else(|| {
            CniError::new(INVALID_ENVIRONMENT, "CNI_NETNS is not set", "ADD and CHECK need the pod's network namespace path")
        })
    };
    match invocation.command {
        Command::Add => {
            let reply = add_result(conf);
            if let Some(ns) = excluded {
                return nothing(format!("namespace {ns} is in excludeNamespaces"), reply);
            }
            match pod_capture(conf.capture.clone())? {
                Capture::Off => nothing("interceptionMode is NONE".into(), reply),
                Capture::On(cfg) => Ok(Plan { work: Work::Capture { target: target()?, rules: Ruleset::build(&cfg) }, reply }),
            }
        }
        Command::Del => {
            if let Some(ns) = excluded {
                return nothing(format!("namespace {ns} is in excludeNamespaces"), String::new());
            }
            let Some(netns) = invocation.netns.clone() else {
                return nothing("no CNI_NETNS: the namespace, and its rules with it, is gone".into(), String::new());
            };
            let cfg = match conf.capture.clone() {
                Ok(Capture::Off) => return nothing("interceptionMode is NONE".into(), String::new()),
                Ok(Capture::On(cfg)) => cfg,
                Err(e) => {
                    // DEL is best effort: clean up with the default TPROXY mark and table
                    // (the chains are removed whatever the config said).
                    tracing::warn!("{}; removing capture rules anyway", e.msg);
                    CaptureConfig::from_raw(&RawOptions::default()).map(Box::new).map_err(|_| e)?
                }
            };
            Ok(Plan { work: Work::Release { target: Target::Netns(netns), cfg }, reply: String::new() })
        }
        Command::Check => {
            at_least(conf, "0.4.0", "CHECK")?;
            if conf.prev_result.is_none() {
                return Err(CniError::new(
                    INVALID_CONFIG,
                    "prevResult is missing",
                    "the runtime must pass the result of ADD as prevResult to CHECK",
                ));
            }
            if let Some(ns) = excluded {
                return nothing(format!("namespace {ns} is in excludeNamespaces"), String::new());
            }
            match pod_capture(conf.capture.clone())? {
                Capture::Off => nothing("interceptionMode is NONE".into(), String::new()),
                Capture::On(cfg) => {
                    Ok(Plan { work: Work::Verify { target: target()?, rules: Ruleset::build(&cfg) }, reply: String::new() })
                }
            }
        }
        Command::Status => {
            at_least(conf, "1.1.0", "STATUS")?;
            Ok(Plan { work: Work::Status, reply: String::new() })
        }
        Command::Gc => {
            at_least(conf, "1.1.0", "GC")?;
            // The rules live in the pods' namespaces and go away with them.
            nothing("capture keeps no state outside the pods' namespaces".into(), String::new())
        }
        Command::Version => Ok(Plan { work: Work::Nothing { reason: "VERSION".into() }, reply: version_reply(&[]) }),
    }
}

impl Plan {
    /// Does the work in the pod's namespace.
    pub fn execute(&self) -> Result<(), CniError> {
        match &self.work {
            Work::Nothing { reason } => {
                tracing::info!("nothing to do: {reason}");
                Ok(())
            }
            Work::Capture { target, rules } => {
                let (backend, why) = Backend::detect(target).map_err(command_error)?;
                apply::apply(rules, backend, target).map_err(command_error)?;
                tracing::info!("{target}: {} capture rules written with iptables-{} ({why})", rules.rules.len(), backend.name());
                Ok(())
            }
            Work::Release { target, cfg } => {
                let result = Backend::detect(target).and_then(|(backend, _)| apply::cleanup(cfg, backend, target));
                match result {
                    Ok(()) => {
                        tracing::info!("{target}: capture rules removed");
                        Ok(())
                    }
                    // DEL succeeds when the namespace is gone: its rules went with it.
                    Err(ApplyError::NetnsGone { path, reason }) => {
                        tracing::info!("{path} is gone ({reason}); nothing to remove");
                        Ok(())
                    }
                    Err(e) => Err(command_error(e)),
                }
            }
            Work::Verify { target, rules } => {
                let (backend, _) = Backend::detect(target).map_err(command_error)?;
                let problems = apply::verify(rules, backend, target).map_err(command_error)?;
                let Some(first) = problems.first() else { return Ok(()) };
                Err(CniError::new(
                    NOT_CAPTURED,
                    format!("{target}: the capture rules are not in place ({} differences, first: {first})", problems.len()),
                    format!("iptables-{}: {}", backend.name(), problems.join("; ")),
                ))
            }
            Work::Status => {
                Backend::detect(&Target::Current).map_err(|e| CniError::new(NOT_AVAILABLE, e.to_string(), ""))?;
                match std::process::Command::new("nsenter").arg("--version").output() {
                    Ok(_) => Ok(()),
                    Err(e) => Err(CniError::new(NOT_AVAILABLE, format!("nsenter cannot run: {e}"), "install util-linux")),
                }
            }
        }
    }
}

impl Invocation {
    /// Reads the protocol parameters; a missing or malformed one is INVALID_ENVIRONMENT naming
    /// every such variable.
    pub fn from_env(vars: &HashMap<String, String>) -> Result<Invocation, CniError> {
        let get = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let command = match get("CNI_COMMAND") {
            None => {
                return Err(CniError::new(
                    INVALID_ENVIRONMENT,
                    "CNI_COMMAND is not set",
                    "weft-cni is a CNI plugin: a container runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC or VERSION) \
                     and the network config on stdin",
                ))
            }
            Some(c) => match c {
                "ADD" => Command::Add,
                "DEL" => Command::Del,
                "CHECK" => Command::Check,
                "STATUS" => Command::Status,
                "GC" => Command::Gc,
                "VERSION" => Command::Version,
                other => {
                    return Err(CniError::new(
                        INVALID_ENVIRONMENT,
                        format!("CNI_COMMAND {other:?} is not a CNI operation"),
                        "expected ADD, DEL, CHECK, STATUS, GC or VERSION",
                    ))
                }
            },
        };
        let attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let mut required = Vec::new();
        if attachment {
            required.extend(["CNI_CONTAINERID", "CNI_IFNAME"]);
        }
        if matches!(command, Command::Add | Command::Check) {
            required.push("CNI_NETNS");
        }
        let missing: Vec<&str> = required.iter().copied().filter(|name| get(name).is_none()).collect();
        if !missing.is_empty() {
            return Err(CniError::new(INVALID_ENVIRONMENT, format!("required environment variables missing: {}", missing.join(", ")), ""));
        }
        let container_id = get("CNI_CONTAINERID").unwrap_or_default().to_owned();
        let ifname = get("CNI_IFNAME").unwrap_or_default().to_owned();
        if attachment {
            let id_ok = container_id.starts_with(|c: char| c.is_ascii_alphanumeric())
                && container_id.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !id_ok {
                return Err(CniError::new(
                    INVALID_ENVIRONMENT,
                    format!("CNI_CONTAINERID {container_id:?} is not a container ID"),
                    "it must start with a letter or digit, then letters, digits, '_', '.' or '-'",
                ));
            }
            let ifname_ok = ifname.len() < 16
                && ifname != "."
                && ifname != ".."
                && !ifname.contains(|c: char| c == '/' || c == ':' || c.is_whitespace());
            if !ifname_ok {
                return Err(CniError::new(INVALID_ENVIRONMENT, format!("CNI_IFNAME {ifname:?} is not an interface name"), ""));
            }
        }
        let args = match get("CNI_ARGS") {
            None => Vec::new(),
            Some(text) => text
                .split(';')
                .filter(|p| !p.is_empty())
                .map(|pair| match pair.split_once('=') {
                    Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                    _ => Err(CniError::new(
                        INVALID_ENVIRONMENT,
                        format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
                        "CNI_ARGS is KEY=VALUE pairs separated by ';'",
                    )),
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Invocation { command, container_id, netns: get("CNI_NETNS").map(PathBuf::from), ifname, args })
    }

    /// The value of a `CNI_ARGS` key.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: details.into() }
    }

    /// The spec's error object.
    pub fn to_json(&self, cni_version: &str) -> String {
        json!({"cniVersion": cni_version, "code": self.code, "msg": self.msg, "details": self.details}).to_string()
    }
}

impl Outcome {
    /// A failure, printed as the spec's error object in `cni_version`.
    pub fn error(e: &CniError, cni_version: &str) -> Outcome {
        Outcome { stdout: e.to_json(cni_version), success: false }
    }
}

/// ADD's result: the previous plugin's result passed through (capture changes no interface,
/// address or route), in the config's version; a valid empty result when first in the chain.
fn add_result(conf: &NetConf) -> String {
    let mut result = conf.prev_result.clone().unwrap_or_else(|| {
        let mut empty = Map::new();
        empty.insert("interfaces".into(), json!([]));
        empty.insert("ips".into(), json!([]));
        empty
    });
    result.insert("cniVersion".into(), Value::String(conf.cni_version.clone()));
    Value::Object(result).to_string()
}

/// VERSION's answer: `cniVersion` is the one on input, as the spec says.
fn version_reply(stdin: &[u8]) -> String {
    let asked = serde_json::from_slice::<Value>(stdin).ok().and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(str::to_owned));
    json!({"cniVersion": asked.as_deref().unwrap_or(DEFAULT_VERSION), "supportedVersions": SUPPORTED_VERSIONS}).to_string()
}

/// The version errors are answered in: the config's when the plugin speaks it.
fn reply_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(str::to_owned))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| DEFAULT_VERSION.to_owned())
}

fn at_least(conf: &NetConf, min: &str, what: &str) -> Result<(), CniError> {
    let position = |v: &str| SUPPORTED_VERSIONS.iter().position(|s| *s == v);
    if position(&conf.cni_version) >= position(min) {
        return Ok(());
    }
    Err(CniError::new(INCOMPATIBLE_VERSION, format!("cniVersion {} does not have {what} (it came in {min})", conf.cni_version), ""))
}

fn command_error(e: ApplyError) -> CniError {
    match e {
        ApplyError::NetnsGone { path, reason } => {
            CniError::new(INVALID_ENVIRONMENT, format!("CNI_NETNS {path} is not a network namespace"), reason)
        }
        ApplyError::MissingTool { tool, hint } => CniError::new(TOOL_MISSING, format!("`{tool}` is not installed on this node"), hint),
        ApplyError::Failed { command, stderr } => CniError::new(NETFILTER_FAILED, format!("`{command}` failed"), stderr),
    }
}

#[cfg(test)]
mod tests;
