//! `weft pod-proxy`: the sidecar container the injector adds, pilot-agent's role. From what the
//! pod says (environment and volumes) it writes the proxy's bootstrap, serves the pod's status
//! port (readiness, the app's probes, merged metrics), carries xDS to the control plane over
//! TLS with the pod's token, and runs the proxy — `weft proxy`, or a stock Envoy given its
//! identity over SDS — until the pod stops, draining first.

mod env;
mod relay;
mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use http::Method;

pub use env::Role;
use env::{Paths, PodEnv};

#[derive(Args)]
pub struct PodProxyArgs {
    #[command(subcommand)]
    command: PodProxyCommand,
}

#[derive(Subcommand)]
enum PodProxyCommand {
    /// Run the pod's proxy as a sidecar.
    Sidecar(RunArgs),
    /// Run the pod's proxy as a gateway (Istio's router).
    Router(RunArgs),
    /// Wait until the proxy is ready (the app container's postStart hook, so the app starts
    /// after its sidecar).
    Wait(WaitArgs),
    /// Start draining the proxy (the native sidecar's preStop hook).
    Drain(WaitArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The DNS domain of the pod's namespace (`$(POD_NAMESPACE).svc.cluster.local`).
    #[arg(long)]
    domain: Option<String>,
    /// The proxy's log level (trace, debug, info, warning, error, critical, off).
    #[arg(long = "proxyLogLevel", default_value = "warning")]
    proxy_log_level: String,
    /// Per-component log levels (`misc:error,upstream:debug`).
    #[arg(long = "proxyComponentLogLevel", default_value = "misc:error")]
    proxy_component_log_level: String,
    /// The proxy to run: weft's own, or a stock Envoy (`binaryPath` of PROXY_CONFIG).
    #[arg(long = "data-plane", value_enum, default_value = "weft")]
    data_plane: DataPlane,
    /// Where the pod's volumes are mounted (`/` in a container; another directory to run a
    /// pod's sidecar outside one).
    #[arg(long, default_value = "/", hide = true)]
    root: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DataPlane {
    Weft,
    Envoy,
}

#[derive(Args)]
struct WaitArgs {
    /// How long to wait.
    #[arg(long = "timeoutSeconds", default_value_t = 60)]
    timeout_seconds: u64,
    /// The status port.
    #[arg(long = "status-port", default_value_t = 15020)]
    status_port: u16,
}

pub fn run(args: PodProxyArgs) -> ExitCode {
    match args.command {
        PodProxyCommand::Sidecar(a) => sidecar(Role::Sidecar, a),
        PodProxyCommand::Router(a) => sidecar(Role::Router, a),
        PodProxyCommand::Wait(a) => hook("wait", wait(a)),
        PodProxyCommand::Drain(a) => hook("drain", drain(a)),
    }
}

/// Runs a hook (`wait`, `drain`) to its end: success, or the reason on stderr.
fn hook(what: &str, work: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    match crate::current_thread_runtime().and_then(|rt| rt.block_on(work)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft pod-proxy {what}: {e}");
            ExitCode::from(1)
        }
    }
}

async fn wait(a: WaitArgs) -> Result<(), String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], a.status_port));
    let deadline = Instant::now() + Duration::from_secs(a.timeout_seconds);
    let mut last = String::new();
    while Instant::now() < deadline {
        match status::http1(addr, Method::GET, "/healthz/ready", &[], Duration::from_secs(1)).await {
            Ok((200, _)) => {
                eprintln!("weft pod-proxy wait: the proxy is ready");
                return Ok(());
            }
            Ok((code, body)) => last = format!("{code} {}", String::from_utf8_lossy(&body).trim()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("the proxy was not ready within {}s (last: {last})", a.timeout_seconds))
}

async fn drain(a: WaitArgs) -> Result<(), String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], a.status_port));
    match status::http1(addr, Method::POST, "/drain", &[], Duration::from_secs(a.timeout_seconds)).await? {
        (200, _) => Ok(()),
        (code, body) => Err(format!("{code} {}", String::from_utf8_lossy(&body).trim())),
    }
}

fn sidecar(role: Role, a: RunArgs) -> ExitCode {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new("info")).with_writer(std::io::stderr).init();
    match run_sidecar(role, a) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft pod-proxy: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_sidecar(role: Role, a: RunArgs) -> Result<ExitCode, String> {
    let paths = Paths { root: a.root.clone() };
    let vars: BTreeMap<String, String> = std::env::vars().collect();
    let pod = PodEnv::read(&vars, &paths)?;
    for w in &pod.warnings {
        tracing::warn!("{w}");
    }
    let domain = a.domain.clone().unwrap_or_else(|| format!("{}.svc.cluster.local", pod.namespace));
    let xds_socket = paths.xds_socket();
    let sds_socket = paths.sds_socket();
    for p in [paths.bootstrap(), xds_socket.clone(), sds_socket.clone()] {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    let (xds, sds) = (xds_socket.display().to_string(), sds_socket.display().to_string());
    let mut metadata = pod.metadata();
    // The proxy has the workload's identity (from the agent's SDS, or made by weft proxy
    // itself), so the control plane configures mTLS for it.
    metadata["SDS"] = serde_json::json!("true");
    let boot = weft_local::bootstrap::pod(&weft_local::bootstrap::PodBootstrap {
        id: &pod.node_id(role, &domain),
        cluster: &pod.cluster(),
        metadata,
        admin_port: pod.proxy.admin_port,
        xds_pipe: &xds,
        sds_pipe: (a.data_plane == DataPlane::Envoy).then_some(sds.as_str()),
    });
    let text = serde_json::to_string_pretty(&boot).map_err(|e| e.to_string())?;
    std::fs::write(paths.bootstrap(), text).map_err(|e| format!("{}: {e}", paths.bootstrap().display()))?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(supervise(role, a, paths, pod))
}

async fn supervise(role: Role, a: RunArgs, paths: Paths, pod: PodEnv) -> Result<ExitCode, String> {
    let upstream =
        Arc::new(relay::Upstream { address: pod.proxy.discovery_address.clone(), root_cert: paths.root_cert(), token: paths.token() });
    let xds_socket = paths.xds_socket();
    tokio::spawn(async move {
        if let Err(e) = relay::serve(&xds_socket, upstream).await {
            tracing::error!("xDS proxy: {e}");
        }
    });

    let (quit_tx, mut quit_rx) = tokio::sync::mpsc::channel(1);
    let status_addr = std::net::SocketAddr::from(([0, 0, 0, 0], pod.proxy.status_port));
    let listener = tokio::net::TcpListener::bind(status_addr).await.map_err(|e| format!("status port {status_addr}: {e}"))?;
    let status = Arc::new(status::Status {
        pod_ip: pod.ip,
        health_port: weft_local::bootstrap::HEALTH_PORT,
        stats_port: weft_local::bootstrap::STATS_PORT,
        admin_port: pod.proxy.admin_port,
        probers: pod.probers.clone(),
        app_metrics: pod.app_metrics.clone(),
        quit: quit_tx,
    });
    tokio::spawn(status::serve(listener, status));

    let exe = std::env::current_exe().map_err(|e| format!("the weft binary: {e}"))?;
    let boot = paths.bootstrap().display().to_string();
    let drain_s = pod.proxy.drain_duration.as_secs().to_string();
    let concurrency = pod.proxy.concurrency.to_string();
    let mut cmd = match a.data_plane {
        DataPlane::Weft => {
            let mut c = tokio::process::Command::new(&exe);
            c.args(["proxy", "-c", &boot, "--concurrency", &concurrency, "--drain-time-s", &drain_s, "--log-level", &a.proxy_log_level]);
            c.args(["--component-log-level", &a.proxy_component_log_level, "--ca-address", &pod.ca_address]);
            c.arg("--ca-root-cert").arg(paths.root_cert()).arg("--ca-token-file").arg(paths.token());
            c.args(["--trust-domain", &pod.trust_domain]);
            c
        }
        DataPlane::Envoy => {
            start_sds(&pod, &paths).await?;
            let mut c = tokio::process::Command::new(&pod.proxy.binary_path);
            c.args(["-c", &boot, "--concurrency", &concurrency, "--drain-time-s", &drain_s, "-l", &a.proxy_log_level]);
            c.args(["--component-log-level", &a.proxy_component_log_level, "--disable-hot-restart"]);
            c
        }
    };
    cmd.kill_on_drop(true);
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| format!("start the proxy: {e}"))?;
    tracing::info!(role = ?role, pid = child.id().unwrap_or(0), "proxy started");

    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let drain = tokio::select! {
        status = child.wait() => {
            let status = status.map_err(|e| format!("the proxy: {e}"))?;
            tracing::warn!("the proxy exited: {status}");
            return Ok(ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1)));
        }
        _ = term => true,
        _ = tokio::signal::ctrl_c() => true,
        _ = quit_rx.recv() => false,
    };
    if drain {
        // The pod is stopping: stop taking new connections, let the ones in flight finish.
        let admin = std::net::SocketAddr::from(([127, 0, 0, 1], pod.proxy.admin_port));
        let _ = status::http1(admin, Method::POST, "/drain_listeners?graceful", &[], Duration::from_secs(2)).await;
        tracing::info!(seconds = pod.proxy.termination_drain_duration.as_secs_f64(), "draining before the proxy stops");
        tokio::time::sleep(pod.proxy.termination_drain_duration).await;
    }
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SIGTERM: the proxy ends its connections and exits.
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    }
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(_) => {
            let _ = child.kill().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// For a stock Envoy: the workload's identity over SDS on the pod's socket, as `weft agent`.
async fn start_sds(pod: &PodEnv, paths: &Paths) -> Result<(), String> {
    let ca = crate::identity_args::CaArgs {
        ca_address: Some(pod.ca_address.clone()),
        ca_root_cert: Some(paths.root_cert()),
        ca_token_file: Some(paths.token()),
        ca_server_name: "istiod.istio-system.svc".into(),
        trust_domain: Some(pod.trust_domain.clone()),
        workload_cert_ttl: None,
    };
    let env: Vec<(String, String)> = Vec::new();
    let mut opts = ca.options(&env, || Ok((pod.namespace.clone(), pod.service_account.clone())))?.ok_or("no CA address")?;
    let secrets = Arc::new(weft_proxy::agent::AgentSecrets::default());
    opts.export = Some(secrets.exporter());
    tokio::spawn(weft_proxy::identity::maintain(opts));
    let socket = paths.sds_socket();
    tokio::spawn(async move {
        if let Err(e) = weft_xds::sds_server::serve_unix(&socket, secrets).await {
            tracing::error!("SDS socket {}: {e}", socket.display());
        }
    });
    Ok(())
}

/// The proxy goes when this process goes, also when it is killed outright (SIGKILL gives no
/// chance to stop the child, and an orphaned proxy would hold the pod's ports).
#[allow(unsafe_code, reason = "prctl in the child before exec has no safe wrapper")]
fn die_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe; it allocates nothing and touches no locks.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
