//! `weft agent`: identity for a stock Envoy sidecar, as Istio's pilot-agent provides it. The
//! agent makes the workload's key, keeps its certificate renewed from the mesh CA, follows the
//! trust bundle, and serves both over SDS on a Unix socket that Envoy's bootstrap names as the
//! `sds-grpc` cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::identity_args::CaArgs;

#[derive(Args, Debug)]
pub struct AgentArgs {
    #[command(flatten)]
    ca: CaArgs,
    /// The workload's namespace (POD_NAMESPACE in the environment).
    #[arg(long)]
    namespace: Option<String>,
    /// The workload's service account (SERVICE_ACCOUNT in the environment).
    #[arg(long = "service-account")]
    service_account: Option<String>,
    /// The Unix socket to serve SDS on (Istio: ./var/run/secrets/workload-spiffe-uds/socket).
    #[arg(long = "sds-socket", default_value = "./var/run/secrets/workload-spiffe-uds/socket")]
    sds_socket: PathBuf,
    /// trace, debug, info, warning or error.
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    log_level: String,
}

pub fn run(args: AgentArgs) -> ExitCode {
    let level = match args.log_level.as_str() {
        "warning" => "warn",
        l @ ("trace" | "debug" | "info" | "warn" | "error") => l,
        other => {
            eprintln!("weft agent: --log-level {other:?}: use trace, debug, info, warning or error");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(level)).with_writer(std::io::stderr).init();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let var = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    let who = || {
        let ns = args.namespace.clone().or_else(|| var("POD_NAMESPACE")).ok_or("--namespace (or POD_NAMESPACE) is required")?;
        let sa =
            args.service_account.clone().or_else(|| var("SERVICE_ACCOUNT")).ok_or("--service-account (or SERVICE_ACCOUNT) is required")?;
        Ok((ns, sa))
    };
    let mut opts = match args.ca.options(&env, who) {
        Ok(Some(o)) => o,
        Ok(None) => {
            eprintln!("weft agent: --ca-address (or CA_ADDR) is required: the agent's job is the workload's certificate");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("weft agent: {e}");
            return ExitCode::from(2);
        }
    };
    let secrets = Arc::new(weft_proxy::agent::AgentSecrets::default());
    opts.export = Some(secrets.exporter());
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        tracing::info!(identity = %opts.spiffe_id, socket = %args.sds_socket.display(), "serving SDS (default, ROOTCA)");
        tokio::spawn(weft_proxy::identity::maintain(opts));
        tokio::select! {
            r = weft_xds::sds_server::serve_unix(&args.sds_socket, secrets) => {
                if let Err(e) = r {
                    eprintln!("weft agent: SDS socket {}: {e}", args.sds_socket.display());
                    return ExitCode::from(1);
                }
                ExitCode::SUCCESS
            }
            _ = shutdown() => ExitCode::SUCCESS,
        }
    })
}

/// SIGINT or SIGTERM.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
