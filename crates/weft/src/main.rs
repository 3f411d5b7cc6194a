//! The `weft` binary: command-line parsing and dispatch to a role. Each role lives in its own
//! crate; this file only turns flags into their inputs and errors into exit codes.

/// `println!` that does not panic when stdout has gone away (`weft demo | head`): a command
/// that started processes must still get to stop them. Long-running output loops check
/// `std::io::Write` results themselves and stop when nobody reads.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod agent_cmd;
mod analyze_cmd;
mod capture_cmd;
mod cni_cmd;
mod cni_install_cmd;
mod control_plane_cmd;
mod convert_cmd;
mod dashboard_cmd;
mod demo_cmd;
mod identity_args;
mod inject_cmd;
mod install_cmd;
mod local_cmd;
mod ops_cmd;
mod pod_proxy;
mod proxy_cmd;

use clap::{Parser, Subcommand};

/// `0.1.0 (commit 1a2b3c4d5e6f)`: what `--version` and `weft version` print after the name.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("WEFT_COMMIT"), ")");

#[derive(Parser)]
#[command(name = "weft", version = VERSION, about = "weft: a service mesh in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once at start-up")]
enum Command {
    /// Run the sidecar / gateway proxy from an Envoy v3 bootstrap (Envoy's flags work).
    Proxy(proxy_cmd::ProxyArgs),
    /// Give a stock Envoy sidecar its workload identity over SDS (what pilot-agent does).
    Agent(agent_cmd::AgentArgs),
    /// Run the control plane: Istio resources from a directory in, xDS (ADS) out.
    ControlPlane(control_plane_cmd::ControlPlaneArgs),
    /// Every connected proxy and whether it has ACKed its config (SYNCED/NOT SENT/STALE/NACKED).
    ProxyStatus(ops_cmd::StatusArgs),
    /// The config the control plane generated for one proxy.
    ProxyConfig(ops_cmd::ConfigArgs),
    /// Open the mesh's web dashboard: topology, services, proxies' sync status, findings.
    Dashboard(dashboard_cmd::DashboardArgs),
    /// Validate config files or directories and point out common mistakes (istioctl analyze).
    Analyze(analyze_cmd::AnalyzeArgs),
    /// Print Istio 0.x routing (RouteRule, DestinationPolicy, EgressRule) as the v1 resources
    /// that mean the same (VirtualService, DestinationRule, ServiceEntry).
    Convert(convert_cmd::ConvertArgs),
    /// Capture the namespace's traffic into the sidecar with iptables (what istio-iptables does).
    Capture(capture_cmd::CaptureArgs),
    /// The CNI node agent (istio-cni's install-cni): put weft-cni on the node, chain it into
    /// the node's CNI config, keep it there, and take it out when stopped.
    CniInstall(cni_install_cmd::CniInstallArgs),
    /// Install the mesh on a Kubernetes cluster (istioctl install).
    Install(install_cmd::InstallArgs),
    /// Remove what `weft install` installed.
    Uninstall(install_cmd::InstallArgs),
    /// Check that what `weft install` installs is there and ready.
    VerifyInstall(install_cmd::InstallArgs),
    /// Print what `weft install` would apply (istioctl manifest generate).
    Manifest(install_cmd::ManifestArgs),
    /// Add the sidecar to the workloads of a Kubernetes YAML file (istioctl kube-inject).
    KubeInject(inject_cmd::KubeInjectArgs),
    /// The sidecar container of an injected pod (pilot-agent's role): bootstrap from the pod,
    /// status port, xDS proxy, and the proxy itself.
    PodProxy(pod_proxy::PodProxyArgs),
    /// Start a whole mesh on this machine from a file: namespaces, capture, sidecars, apps.
    Up(local_cmd::UpArgs),
    /// Every workload of the mesh `weft up` started, and whether it is healthy.
    Status(local_cmd::RunDirArgs),
    /// Stop everything `weft up` started and remove its namespaces, bridge and rules.
    Down(local_cmd::RunDirArgs),
    /// Add a file of mesh resources to the mesh `weft up` started.
    Apply(local_cmd::ApplyArgs),
    /// Take a file `weft apply` added back out.
    Delete(local_cmd::ApplyArgs),
    /// Bookinfo on this machine with mTLS, a steady load and live per-service success.
    Demo(demo_cmd::DemoArgs),
    /// Run one of the bookinfo sample services (productpage, details, reviews, ratings).
    Sample(weft_samples::SampleArgs),
    /// Print weft's version and the commit it was built from.
    Version,
    /// One admin page of a proxy (used by `proxy-config` inside a sidecar's namespace).
    #[command(hide = true)]
    AdminGet(ops_cmd::AdminGetArgs),
}

/// A single-threaded runtime for a command that makes a few requests and ends.
pub(crate) fn current_thread_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("cannot start the runtime: {e}"))
}

fn main() -> std::process::ExitCode {
    // Installed (or linked) as `weft-cni`, the binary is a CNI plugin: the container runtime
    // calls it with the CNI environment and config on stdin, never with subcommands.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name().is_some_and(|n| n == "weft-cni") {
        return cni_cmd::run();
    }
    let cli = Cli::parse();
    // A proxy or control plane holds a socket per connection: lift the soft open-file limit
    // to the hard one (as Envoy's and istiod's launchers do), so 1024 is not the ceiling.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("weft: cannot raise the open-file limit: {e}");
    }
    match cli.command {
        Command::Proxy(args) => proxy_cmd::run(args),
        Command::ControlPlane(args) => control_plane_cmd::run(args),
        Command::Agent(args) => agent_cmd::run(args),
        Command::ProxyStatus(args) => ops_cmd::proxy_status(args),
        Command::ProxyConfig(args) => ops_cmd::proxy_config(args),
        Command::Analyze(args) => analyze_cmd::analyze(args),
        Command::Convert(args) => convert_cmd::convert(args),
        Command::Dashboard(args) => dashboard_cmd::run(args),
        Command::Capture(args) => capture_cmd::run(args),
        Command::CniInstall(args) => cni_install_cmd::run(args),
        Command::KubeInject(args) => inject_cmd::run(args),
        Command::Install(args) => install_cmd::install(args),
        Command::Uninstall(args) => install_cmd::uninstall(args),
        Command::VerifyInstall(args) => install_cmd::verify_install(args),
        Command::Manifest(args) => install_cmd::manifest(args),
        Command::PodProxy(args) => pod_proxy::run(args),
        Command::Up(args) => local_cmd::up(args),
        Command::Status(args) => local_cmd::status(args),
        Command::Down(args) => local_cmd::down(args),
        Command::Apply(args) => local_cmd::apply(args),
        Command::Delete(args) => local_cmd::delete(args),
        Command::Demo(args) => demo_cmd::run(args),
        Command::AdminGet(args) => ops_cmd::admin_get(args),
        Command::Version => {
            say!("weft {VERSION}");
            std::process::ExitCode::SUCCESS
        }
        Command::Sample(args) => match weft_samples::run(args) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weft sample: {e}");
                std::process::ExitCode::from(1)
            }
        },
    }
}
