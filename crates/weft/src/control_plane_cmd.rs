//! `weft control-plane`: istiod's job — Istio resources in, xDS out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use weft_api::{Diagnostic, Level};

#[derive(clap::Args)]
pub struct ControlPlaneArgs {
    /// Directory of Kubernetes-style YAML/JSON (Istio resources, Services, WorkloadEntries…),
    /// watched for changes. Without it the Kubernetes API server is the source.
    #[arg(long = "config-dir")]
    config_dir: Option<PathBuf>,
    /// Read the Kubernetes API server too (in-cluster credentials, or the kubeconfig), next to
    /// --config-dir. Implied without --config-dir.
    #[arg(long)]
    kube: bool,
    /// The control-plane revision (`istio.io/rev`): whose webhook configurations this control
    /// plane keeps its root in.
    #[arg(long, default_value = "default")]
    revision: String,
    /// The kubeconfig to use (default: in-cluster credentials, then $KUBECONFIG or
    /// ~/.kube/config, as kubectl).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// MeshConfig file (outboundTrafficPolicy, defaultConfig, trustDomain, enableAutoMtls).
    #[arg(long)]
    mesh: Option<PathBuf>,
    /// Where ADS is served (Istio: 15010). Loopback unless you ask otherwise.
    #[arg(long = "xds-address", default_value = "127.0.0.1:15010")]
    xds_address: SocketAddr,
    /// Debug API for `proxy-status` / `proxy-config` (Istio: 15014). Keep it on loopback.
    #[arg(long = "debug-address", default_value = "127.0.0.1:15014")]
    debug_address: SocketAddr,
    /// The service graph (`/graph` on the debug address) asks this Prometheus
    /// (`http://<ip>:<port>`) with Kiali's PromQL instead of scraping the proxies itself.
    #[arg(long = "prometheus-url")]
    prometheus_url: Option<String>,
    /// Quiet period after a file change before pushing (e.g. 100ms, 1s).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    debounce: Duration,
    /// Runs the certificate authority with the root of trust in this directory (Istio's
    /// `cacerts` layout: ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem). A root is
    /// generated and saved here when it holds none.
    #[arg(long = "ca-dir")]
    ca_dir: Option<PathBuf>,
    /// Bootstrap token files, one per workload (`{"token", "namespace", "serviceAccount"}`).
    /// With the API server as a source, pods' service-account tokens are checked with it
    /// (TokenReview) as well.
    #[arg(long = "ca-token-dir")]
    ca_token_dir: Option<PathBuf>,
    /// Lifetime of workload certificates when the CSR does not ask (Istio: 24h).
    #[arg(long = "workload-cert-ttl", default_value = "24h", value_parser = parse_duration)]
    workload_cert_ttl: Duration,
    /// Longest lifetime a workload may ask for (Istio: 90 days).
    #[arg(long = "max-workload-cert-ttl", default_value = "2160h", value_parser = parse_duration)]
    max_workload_cert_ttl: Duration,
    /// Where xDS and the certificate API are served over TLS (Istio: 15012).
    #[arg(long = "secure-address", default_value = "127.0.0.1:15012")]
    secure_address: SocketAddr,
    /// Serve the admission webhooks here over TLS (Istio: 15017; `/inject`, `/validate`), with
    /// the CA's serving certificate. Needs --ca-dir.
    #[arg(long = "webhook-address", requires = "ca_dir")]
    webhook_address: Option<SocketAddr>,
    /// The injector's values (YAML: hub, tag, dataPlane, cni, nativeSidecars, proxy, …) for
    /// the injection webhook; `--mesh` gives it defaultConfig and the trust domain.
    #[arg(long = "injection-values", requires = "webhook_address")]
    injection_values: Option<PathBuf>,
    /// Log level or filter (error, warn, info, debug, trace; or `weft_control=debug,info`).
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    log_level: String,
    /// Start even though the config holds resources weft does not enforce that would restrict
    /// traffic (AuthorizationPolicy, RequestAuthentication, EnvoyFilter, …). They stay
    /// unenforced: traffic they would deny is allowed. Each is still an error in the log,
    /// `weft proxy-status` and `weft analyze`.
    #[arg(long = "allow-unenforced-security")]
    allow_unenforced_security: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    weft_api::duration::parse_go_duration(s)
}

/// The MeshConfig at `path` (the default without one) and its warnings, or every error in it.
pub fn load_mesh(path: Option<&PathBuf>) -> Result<(weft_api::mesh::MeshConfig, Vec<Diagnostic>), Vec<Diagnostic>> {
    let Some(p) = path else { return Ok(Default::default()) };
    let file = p.display().to_string();
    let text = std::fs::read_to_string(p).map_err(|e| {
        vec![Diagnostic {
            level: Level::Error,
            file: file.clone(),
            line: None,
            resource: Some("MeshConfig".into()),
            field_path: String::new(),
            message: format!("cannot read: {e}"),
            code: None,
        }]
    })?;
    weft_api::mesh::load_mesh_checked(&text, &file)
}

pub fn run(args: ControlPlaneArgs) -> ExitCode {
    let filter = match EnvFilter::try_new(&args.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("weft control-plane: --log-level {:?}: {e}", args.log_level);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mesh = match load_mesh(args.mesh.as_ref()) {
        Ok((m, warnings)) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            m
        }
        Err(errors) => {
            for e in errors {
                eprintln!("weft control-plane: invalid mesh config: {e}");
            }
            return ExitCode::from(1);
        }
    };
    let webhook = match args.webhook_address {
        Some(addr) => match crate::inject_cmd::values(args.injection_values.as_ref(), args.mesh.as_ref(), None) {
            Ok(values) => Some((addr, values)),
            Err(e) => {
                eprintln!("weft control-plane: --injection-values: {e}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    if let Some(dir) = args.config_dir.as_ref().filter(|d| !d.is_dir()) {
        eprintln!("weft control-plane: --config-dir {}: not a directory", dir.display());
        return ExitCode::from(1);
    }
    let use_kube = args.kube || args.config_dir.is_none() || args.kubeconfig.is_some();
    if args.ca_dir.is_some() && args.ca_token_dir.is_none() && !use_kube {
        eprintln!(
            "weft control-plane: --ca-dir needs --ca-token-dir (bootstrap tokens) or the API server (TokenReview) to know who is asking"
        );
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft control-plane: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let kube = if use_kube {
        match rt.block_on(weft_kube::client(args.kubeconfig.as_deref())) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!(
                    "weft control-plane: {e}{}",
                    if args.config_dir.is_none() { " (give --config-dir to run without Kubernetes)" } else { "" }
                );
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    let prometheus = match args.prometheus_url.as_deref().map(weft_control::graph::Prometheus::parse) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            eprintln!("weft control-plane: --prometheus-url {e}");
            return ExitCode::from(2);
        }
    };
    let opts = weft_control::server::Options {
        mesh_path: args.mesh.clone(),
        config_dir: args.config_dir,
        kube,
        cluster: weft_control::server::ClusterIdentity {
            // The Deployment gives these through the downward API, as istiod's does.
            namespace: std::env::var("POD_NAMESPACE").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "istio-system".into()),
            replica: std::env::var("POD_NAME").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| format!("weft-{}", std::process::id())),
            revision: args.revision.clone(),
        },
        mesh,
        xds_addr: args.xds_address,
        debug_addr: args.debug_address,
        debounce: args.debounce,
        ca: args.ca_dir.map(|dir| weft_control::server::CaOptions {
            dir,
            token_dir: args.ca_token_dir,
            default_ttl: args.workload_cert_ttl,
            max_ttl: args.max_workload_cert_ttl,
            secure_addr: args.secure_address,
            webhook: webhook.map(|(addr, values)| {
                let (values_file, mesh_file) = (args.injection_values.clone(), args.mesh.clone());
                let files = values_file.iter().chain(mesh_file.iter()).cloned().collect();
                let read = move || crate::inject_cmd::values(values_file.as_ref(), mesh_file.as_ref(), None);
                weft_control::server::WebhookOptions {
                    addr,
                    values,
                    reload: Some(weft_control::server::ValuesSource { files, read: std::sync::Arc::new(read) }),
                }
            }),
        }),
        allow_unenforced_security: args.allow_unenforced_security,
        prometheus,
        scrape_proxies: true,
    };
    rt.block_on(async move {
        let running = match weft_control::server::start(opts).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("weft control-plane: {e}");
                return ExitCode::from(1);
            }
        };
        match running.secure_addr {
            Some(s) => {
                say!("weft control-plane: xDS on {}, xDS and CA over TLS on {s}, debug on {}", running.xds_addr, running.debug_addr)
            }
            None => say!("weft control-plane: xDS on {}, debug on {}", running.xds_addr, running.debug_addr),
        }
        if let Some(w) = running.webhook_addr {
            say!("weft control-plane: admission webhooks (/inject, /validate) over TLS on {w}");
        }
        tokio::select! {
            r = running.wait() => match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => { eprintln!("weft control-plane: {e}"); ExitCode::from(1) }
            },
            _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
            _ = async { match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => { s.recv().await; }
                Err(_) => std::future::pending::<()>().await,
            } } => ExitCode::SUCCESS,
        }
    })
}
