//! `weft cni-install`: the CNI node agent, what istio-cni's install-cni container does, run
//! by the DaemonSet `weft install` adds with `components.cni.enabled`. It puts the `weft`
//! binary on the node as the plugin `weft-cni`, writes the kubeconfig the plugin reads pods
//! with (the DaemonSet's service-account token), and chains `weft-cni` into the node's primary
//! CNI config; then it keeps all three in place (the node's network plugin may rewrite its
//! config, the token is rotated) until it is stopped, when it takes out exactly what it put in.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};
use weft_capture::cni::chain;

/// The kubeconfig file the plugin reads, in the CNI config directory (as istio-cni's
/// `ZZZ-istio-cni-kubeconfig`).
const KUBECONFIG: &str = "weft-cni-kubeconfig";
/// Where a pod finds its service account's credentials.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Args, Debug)]
pub struct CniInstallArgs {
    /// The node's CNI plugin directory, as mounted in this container.
    #[arg(long, default_value = "/host/opt/cni/bin")]
    bin_dir: PathBuf,
    /// The node's CNI config directory, as mounted in this container.
    #[arg(long, default_value = "/host/etc/cni/net.d")]
    net_dir: PathBuf,
    /// The same directory as the node (and so the plugin) sees it.
    #[arg(long, default_value = "/etc/cni/net.d")]
    host_net_dir: PathBuf,
    /// Namespaces whose pods the plugin never touches, comma separated.
    #[arg(long, default_value = "kube-system", value_delimiter = ',')]
    exclude_namespaces: Vec<String>,
    /// The kubeconfig to give the plugin [default: one made from this pod's service account].
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Written once the plugin is in place (the DaemonSet's readiness probe checks it).
    #[arg(long, default_value = "/tmp/weft-cni-ready")]
    ready_file: PathBuf,
    /// How often to check that everything is still in place.
    #[arg(long, default_value = "2s", value_parser = crate::local_cmd::parse_duration)]
    interval: Duration,
}

pub fn run(args: CniInstallArgs) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    let rt = match crate::current_thread_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft cni-install: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(install(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft cni-install: {e}");
            // Whatever was put in place comes out: a half-installed plugin would fail pods.
            if let Err(e) = remove(&args) {
                eprintln!("weft cni-install: removing what was installed: {e}");
            }
            ExitCode::from(1)
        }
    }
}

/// Installs, keeps in place until SIGTERM or SIGINT, then removes.
async fn install(args: &CniInstallArgs) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let mut ready = false;
    let mut waiting_said = false;
    let mut written = None;
    loop {
        match converge(args, &mut written) {
            Ok(Some(conf)) if !ready => {
                std::fs::write(&args.ready_file, "ready\n").map_err(|e| format!("{}: {e}", args.ready_file.display()))?;
                tracing::info!(config = %conf.display(), "weft-cni is chained into the node's CNI config");
                ready = true;
            }
            Ok(Some(_)) => {}
            Ok(None) if !waiting_said => {
                tracing::info!(dir = %args.net_dir.display(), "waiting for the node's network plugin to write its CNI config");
                waiting_said = true;
            }
            Ok(None) => {}
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            () = tokio::time::sleep(args.interval) => {}
        }
    }
    tracing::info!("stopping: taking weft-cni out of the node's CNI config");
    remove(args)
}

/// Puts the binary, the kubeconfig and the chain entry in place where any is missing or stale;
/// the primary config's path, or `None` while the node has none. `written` is the plugin file
/// as last written (size and modification time), so it is copied again only when someone
/// removed or replaced it, not read back at every check.
fn converge(args: &CniInstallArgs, written: &mut Option<(u64, std::time::SystemTime)>) -> Result<Option<PathBuf>, String> {
    let plugin = args.bin_dir.join(chain::PLUGIN_TYPE);
    let stamp = |p: &Path| std::fs::metadata(p).ok().and_then(|m| Some((m.len(), m.modified().ok()?)));
    if written.is_none() || stamp(&plugin) != *written {
        let exe = std::env::current_exe().map_err(|e| format!("this binary's path: {e}"))?;
        write_atomic(&plugin, &std::fs::read(&exe).map_err(|e| format!("{}: {e}", exe.display()))?, 0o755)?;
        *written = stamp(&plugin);
        tracing::info!(path = %plugin.display(), "installed the plugin");
    }
    let kubeconfig = kubeconfig(args)?;
    let path = args.net_dir.join(KUBECONFIG);
    if std::fs::read(&path).ok().as_deref() != Some(kubeconfig.as_bytes()) {
        write_atomic(&path, kubeconfig.as_bytes(), 0o600)?;
    }
    let names: Vec<String> = std::fs::read_dir(&args.net_dir)
        .map_err(|e| format!("{}: {e}", args.net_dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let Some(primary) = chain::primary(names.iter().map(String::as_str)) else { return Ok(None) };
    let primary = args.net_dir.join(primary);
    let text = std::fs::read_to_string(&primary).map_err(|e| format!("{}: {e}", primary.display()))?;
    let existing: Value = serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", primary.display()))?;
    let entry = entry(args);
    if chain::is_chained(&existing, &entry) {
        return Ok(Some(primary));
    }
    let chained = chain::chain(&existing, &entry).map_err(|e| format!("{}: {e}", primary.display()))?;
    let text = serde_json::to_string_pretty(&chained).unwrap_or_default();
    // A single-plugin `.conf` becomes a `.conflist` of the same name (a list has `plugins`).
    let target = if primary.extension().is_some_and(|e| e == "conflist") { primary.clone() } else { primary.with_extension("conflist") };
    write_atomic(&target, text.as_bytes(), 0o644)?;
    if target != primary {
        std::fs::remove_file(&primary).map_err(|e| format!("{}: {e}", primary.display()))?;
    }
    tracing::info!(config = %target.display(), "chained weft-cni");
    Ok(Some(target))
}

/// The plugin's entry in the chain.
fn entry(args: &CniInstallArgs) -> Value {
    json!({
        "type": chain::PLUGIN_TYPE,
        "kubernetes": {"kubeconfig": args.host_net_dir.join(KUBECONFIG).display().to_string()},
        "excludeNamespaces": args.exclude_namespaces,
    })
}

/// The plugin's kubeconfig: the one given, or this pod's service account's credentials.
fn kubeconfig(args: &CniInstallArgs) -> Result<String, String> {
    if let Some(path) = &args.kubeconfig {
        return std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()));
    }
    use base64::Engine as _;
    let (host, port) = match (std::env::var("KUBERNETES_SERVICE_HOST"), std::env::var("KUBERNETES_SERVICE_PORT")) {
        (Ok(h), Ok(p)) => (h, p),
        _ => return Err("not in a pod (no KUBERNETES_SERVICE_HOST/PORT): give --kubeconfig".into()),
    };
    let sa = Path::new(SERVICE_ACCOUNT);
    let read = |f: &str| std::fs::read(sa.join(f)).map_err(|e| format!("{}: {e}", sa.join(f).display()));
    let ca = base64::engine::general_purpose::STANDARD.encode(read("ca.crt")?);
    let token = String::from_utf8(read("token")?).map_err(|_| "the service-account token is not text".to_owned())?;
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    Ok(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: https://{host}:{port}\n    certificate-authority-data: {ca}\nusers:\n- name: weft-cni\n  user:\n    token: {}\ncontexts:\n- name: weft-cni\n  context: {{cluster: local, user: weft-cni}}\ncurrent-context: weft-cni\n",
        token.trim()
    ))
}

/// Takes out the chain entry, the kubeconfig, the plugin and the ready file.
fn remove(args: &CniInstallArgs) -> Result<(), String> {
    let mut problems = Vec::new();
    if let Ok(dir) = std::fs::read_dir(&args.net_dir) {
        for e in dir.filter_map(Result::ok) {
            let path = e.path();
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
            let without = chain::unchain(&v);
            if without != v {
                if let Err(e) = write_atomic(&path, serde_json::to_string_pretty(&without).unwrap_or_default().as_bytes(), 0o644) {
                    problems.push(e);
                }
            }
        }
    }
    for path in [args.net_dir.join(KUBECONFIG), args.bin_dir.join(chain::PLUGIN_TYPE), args.ready_file.clone()] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Writes through a temporary file in the same directory and renames it over `path`, so the
/// runtime never reads half a config or executes half a binary.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().ok_or_else(|| format!("{}: no directory", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.weft-tmp"));
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}
