//! `weft agent`: identity for a stock Envoy sidecar, as Istio's pilot-agent provides it. The
//! agent makes the workload's key, keeps its certificate renewed from the mesh CA, follows the
//! trust bundle, and serves both over SDS on a Unix socket that Envoy's bootstrap names as the
//! `sds-grpc` cluster. With `ISTIO_META_DNS_CAPTURE=true` it also answers the workload's DNS
//! (pilot-agent's DNS proxy): it takes the name table from the control plane on an xDS stream
//! of its own (`--xds-address`, as the node Envoy is), and serves it as `weft proxy` does.

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
    /// The control plane's xDS address (HOST:PORT), for the DNS name table; needed with
    /// ISTIO_META_DNS_CAPTURE=true.
    #[arg(long = "xds-address")]
    xds_address: Option<String>,
    /// With DNS capture: the resolver configuration whose nameservers get the names the mesh
    /// does not answer. The DNS proxy listens on DNS_PROXY_ADDR (default 127.0.0.1:15053).
    #[arg(long = "dns-resolv-conf", value_name = "PATH", default_value = "/etc/resolv.conf")]
    dns_resolv_conf: PathBuf,
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
    let dns = match dns_job(&args, &env) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("weft agent: {e}");
            return ExitCode::from(2);
        }
    };
    let identity = match args.ca.options(&env, who) {
        Ok(Some(o)) => Some(o),
        Ok(None) if dns.is_some() => None,
        Ok(None) => {
            eprintln!(
                "weft agent: --ca-address (or CA_ADDR) is required: the agent's job is the workload's certificate (and its DNS, \
                 with ISTIO_META_DNS_CAPTURE=true)"
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("weft agent: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let _names = match dns {
            Some(job) => match job.start().await {
                Ok(client) => Some(client),
                Err(e) => {
                    eprintln!("weft agent: {e}");
                    return ExitCode::from(1);
                }
            },
            None => None,
        };
        let Some(mut opts) = identity else {
            shutdown().await;
            return ExitCode::SUCCESS;
        };
        let secrets = Arc::new(weft_proxy::agent::AgentSecrets::default());
        opts.export = Some(secrets.exporter());
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

/// The DNS proxy's job: where it listens and what it tells the control plane it is.
struct DnsJob {
    options: weft_proxy::dns::DnsOptions,
    xds: String,
    id: String,
    metadata: serde_json::Map<String, serde_json::Value>,
}

impl DnsJob {
    /// Binds the DNS proxy and starts the name-table stream.
    async fn start(self) -> anyhow::Result<weft_xds::ads_client::AdsClient> {
        let dns = weft_proxy::dns::Dns::start(self.options).await?;
        let cfg = weft_xds::ads_client::ClientConfig {
            endpoint: format!("http://{}", self.xds),
            node: weft_xds::ads_client::node(&self.id, "", &self.metadata),
            delta: false,
            backoff_base: std::time::Duration::from_millis(500),
            backoff_max: std::time::Duration::from_secs(5),
            envoy_types: false,
            name_table: true,
        };
        Ok(weft_xds::ads_client::AdsClient::start(cfg, Arc::new(weft_proxy::dns::NamesOnly(dns))))
    }
}

/// The DNS job pilot-agent's environment asks for: ISTIO_META_DNS_CAPTURE=true, the node as
/// POD_NAME, POD_NAMESPACE and INSTANCE_IP make it (Istio's sidecar node id), and the other
/// ISTIO_META_* as its metadata (DNS_AUTO_ALLOCATE among them).
fn dns_job(args: &AgentArgs, env: &[(String, String)]) -> anyhow::Result<Option<DnsJob>> {
    let var = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    if !var("ISTIO_META_DNS_CAPTURE").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let xds = args.xds_address.clone().ok_or_else(|| {
        anyhow::anyhow!("ISTIO_META_DNS_CAPTURE=true: the DNS proxy answers from the control plane's name table; give --xds-address")
    })?;
    let ns = args.namespace.clone().or_else(|| var("POD_NAMESPACE"));
    let (Some(id), mut metadata) = crate::proxy_cmd::pod_node(env, ns.as_deref()) else {
        anyhow::bail!("ISTIO_META_DNS_CAPTURE=true: POD_NAME, POD_NAMESPACE (or --namespace) and INSTANCE_IP name the node, as for Envoy");
    };
    let ns = ns.unwrap_or_default();
    metadata.insert("NAMESPACE".into(), serde_json::Value::String(ns.clone()));
    let listen = weft_proxy::dns::listen_address(env).map_err(|e| anyhow::anyhow!(e))?;
    Ok(Some(DnsJob {
        options: weft_proxy::dns::DnsOptions {
            listen: vec![listen],
            resolv_conf: args.dns_resolv_conf.clone(),
            namespace: ns,
            domain: "svc.cluster.local".into(),
        },
        xds,
        id,
        metadata,
    }))
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
