//! `weft proxy`: Envoy's command line, so launchers written for Envoy run weft unchanged.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use tracing_subscriber::{reload, EnvFilter};
use weft_proxy::config::NodeOverrides;
use weft_xds::load::{self, SourceFormat};

#[derive(Args, Debug)]
#[command(disable_version_flag = true)]
pub struct ProxyArgs {
    /// Path to an Envoy v3 bootstrap (YAML, or JSON when it ends in .json).
    #[arg(short = 'c', long = "config-path", visible_alias = "config")]
    config_path: Option<String>,
    /// Bootstrap YAML given inline; merged over --config-path when both are set.
    #[arg(long = "config-yaml")]
    config_yaml: Option<String>,
    /// Worker threads (default: the number of cores).
    #[arg(long)]
    concurrency: Option<usize>,
    /// trace, debug, info, warning, error, critical or off.
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    log_level: String,
    /// Accepted for Envoy compatibility; component levels apply to all of weft.
    #[arg(long = "component-log-level")]
    component_log_level: Option<String>,
    #[arg(long = "log-format")]
    log_format: Option<String>,
    #[arg(long = "log-path")]
    log_path: Option<String>,
    /// Overrides node.cluster.
    #[arg(long = "service-cluster")]
    service_cluster: Option<String>,
    /// Overrides node.id.
    #[arg(long = "service-node")]
    service_node: Option<String>,
    #[arg(long = "service-zone")]
    service_zone: Option<String>,
    /// Seconds open connections get to finish when draining (SIGTERM, /quitquitquit).
    #[arg(long = "drain-time-s", default_value_t = 600)]
    drain_time_s: u64,
    #[arg(long = "drain-strategy")]
    drain_strategy: Option<String>,
    #[arg(long = "parent-shutdown-time-s")]
    parent_shutdown_time_s: Option<u64>,
    /// Accepted: weft has no hot restart.
    #[arg(long = "disable-hot-restart")]
    disable_hot_restart: bool,
    /// Accepted: weft has no shared-memory base id.
    #[arg(long = "base-id")]
    base_id: Option<u64>,
    #[arg(long = "use-dynamic-base-id")]
    use_dynamic_base_id: bool,
    #[arg(long = "restart-epoch")]
    restart_epoch: Option<u64>,
    #[arg(long = "local-address-ip-version")]
    local_address_ip_version: Option<String>,
    #[arg(long = "allow-unknown-static-fields", hide = true)]
    allow_unknown_static_fields: bool,
    /// The control plane's ADS server (HOST:PORT); replaces the bootstrap's
    /// dynamic_resources.ads_config. Without a bootstrap, the proxy runs on xDS alone.
    #[arg(long = "xds-address")]
    xds_address: Option<String>,
    /// Use incremental (delta) xDS with --xds-address instead of state of the world.
    #[arg(long = "xds-delta", requires = "xds_address")]
    xds_delta: bool,
    /// Node metadata KEY=VALUE sent to the control plane (repeatable; a VALUE that is a JSON
    /// object, like LABELS, is sent as one). ISTIO_META_<KEY> environment variables are read
    /// the same way, as Istio's agent does.
    #[arg(long = "node-meta", value_name = "KEY=VALUE")]
    node_meta: Vec<String>,
    #[command(flatten)]
    ca: crate::identity_args::CaArgs,
    /// serve (default) or validate (check the config and exit).
    #[arg(long, default_value = "serve")]
    mode: String,
    /// Print the version and exit.
    #[arg(long)]
    version: bool,
}

fn level_directive(l: &str) -> Result<&'static str, String> {
    Ok(match l {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" | "critical" => "error",
        "off" => "off",
        other => return Err(format!("invalid log level {other:?}: use trace, debug, info, warning, error, critical or off")),
    })
}

/// Deep merge with protobuf `MergeFrom` semantics: objects merge, lists concatenate.
fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (serde_json::Value::Array(b), serde_json::Value::Array(o)) => b.extend(o),
        (b, o) => *b = o,
    }
}

fn load_config(args: &ProxyArgs) -> anyhow::Result<(weft_xds::Bootstrap, serde_json::Value)> {
    let file = match &args.config_path {
        Some(p) => Some((p.clone(), std::fs::read_to_string(p).with_context(|| format!("cannot read {p}"))?)),
        None => None,
    };
    let to_json = |text: &str, name: &str| -> anyhow::Result<serde_json::Value> {
        serde_yaml::from_str::<serde_json::Value>(text).map_err(|e| anyhow::anyhow!("{name}: {e}"))
    };
    match (file, &args.config_yaml) {
        (Some((path, text)), None) => {
            let b = load::load_bootstrap(&text, SourceFormat::from_path(&path), &path)?;
            Ok((b, to_json(&text, &path)?))
        }
        (None, Some(yaml)) => {
            let b = load::load_bootstrap(yaml, SourceFormat::Yaml, "--config-yaml")?;
            Ok((b, to_json(yaml, "--config-yaml")?))
        }
        (Some((path, text)), Some(yaml)) => {
            // Validate each source alone first, so errors keep their line numbers.
            load::load_bootstrap(&text, SourceFormat::from_path(&path), &path)?;
            let mut v = to_json(&text, &path)?;
            merge(&mut v, to_json(yaml, "--config-yaml")?);
            let b = load::from_value(v.clone(), &format!("{path} + --config-yaml"))?;
            Ok((b, v))
        }
        (None, None) if args.xds_address.is_some() => Ok((weft_xds::Bootstrap::default(), serde_json::json!({}))),
        (None, None) => bail!("no configuration: give --config-path (-c), --config-yaml or --xds-address"),
    }
}

fn meta_value(v: &str) -> serde_json::Value {
    match serde_json::from_str::<serde_json::Value>(v) {
        Ok(o @ serde_json::Value::Object(_)) => o,
        _ => serde_json::Value::String(v.to_string()),
    }
}

/// Node id, cluster, metadata and control plane from flags and the environment, the way
/// Istio's agent derives them (`POD_NAME`, `POD_NAMESPACE`, `INSTANCE_IP`, `ISTIO_META_*`).
fn node_overrides(args: &ProxyArgs, env: &[(String, String)]) -> anyhow::Result<NodeOverrides> {
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    let mut metadata = serde_json::Map::new();
    for (k, v) in env {
        if let Some(key) = k.strip_prefix("ISTIO_META_") {
            metadata.insert(key.to_string(), meta_value(v));
        }
    }
    for kv in &args.node_meta {
        let Some((k, v)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            bail!("--node-meta {kv:?}: expected KEY=VALUE");
        };
        metadata.insert(k.to_string(), meta_value(v));
    }
    let ns = get("POD_NAMESPACE");
    if let Some(ns) = &ns {
        metadata.entry("NAMESPACE").or_insert_with(|| serde_json::Value::String(ns.clone()));
    }
    let id = args.service_node.clone().or_else(|| match (get("INSTANCE_IP"), get("POD_NAME"), &ns) {
        (Some(ip), Some(pod), Some(ns)) => Some(format!("sidecar~{ip}~{pod}.{ns}~{ns}.svc.cluster.local")),
        _ => None,
    });
    let ads = match &args.xds_address {
        Some(a) => {
            if a.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
                bail!("--xds-address {a:?}: expected HOST:PORT");
            }
            Some(weft_proxy::config::AdsConfig { address: a.clone(), delta: args.xds_delta })
        }
        None => None,
    };
    Ok(NodeOverrides { id, cluster: args.service_cluster.clone(), metadata, ads })
}

pub fn run(args: ProxyArgs) -> ExitCode {
    if args.version {
        say!("weft proxy version: {} (Envoy v3 API)", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let directive = match level_directive(&args.log_level) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("weft proxy: {e}");
            return ExitCode::from(1);
        }
    };
    let (filter, handle) = reload::Layer::new(EnvFilter::new(directive));
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
        .init();

    let (bootstrap, dump) = match load_config(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("weft proxy: invalid configuration: {e:#}");
            return ExitCode::from(1);
        }
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let overrides = match node_overrides(&args, &env) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("weft proxy: {e:#}");
            return ExitCode::from(1);
        }
    };
    let mut config = match weft_proxy::Config::from_bootstrap(bootstrap, &overrides, dump) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weft proxy: invalid configuration: {}: {e}", args.config_path.as_deref().unwrap_or("--config-yaml"));
            return ExitCode::from(1);
        }
    };
    if args.mode == "validate" {
        say!("configuration '{}' OK", args.config_path.as_deref().unwrap_or("--config-yaml"));
        return ExitCode::SUCCESS;
    }
    if args.mode != "serve" {
        eprintln!("weft proxy: --mode {:?} is not supported (serve, validate)", args.mode);
        return ExitCode::from(1);
    }
    let identity = match identity_options(&args, &env, &config) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("weft proxy: {e}");
            return ExitCode::from(1);
        }
    };
    if identity.is_some() {
        // Tells the control plane this proxy can present a workload certificate.
        config.node_metadata.insert("SDS".into(), serde_json::json!("true"));
    }
    let concurrency =
        args.concurrency.filter(|c| *c > 0).unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(concurrency).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft proxy: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let set_level: weft_proxy::admin::LogLevelSetter = Arc::new(move |l: &str| {
        let d = level_directive(l)?;
        handle.reload(EnvFilter::new(d)).map_err(|e| e.to_string())
    });
    let drain_time = Duration::from_secs(args.drain_time_s);
    let opts = weft_proxy::Options { concurrency, drain_time, set_log_level: set_level };
    rt.block_on(async move {
        if let Some(i) = identity {
            tokio::spawn(weft_proxy::identity::maintain(i));
        }
        match weft_proxy::start(config, opts).await {
            Ok(running) => {
                running.wait_and_drain(drain_time).await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("weft proxy: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// The workload identity to maintain, when a CA is given; the namespace and service account
/// come from the node metadata the proxy sends the control plane.
fn identity_options(
    args: &ProxyArgs,
    env: &[(String, String)],
    config: &weft_proxy::Config,
) -> Result<Option<weft_proxy::identity::IdentityOptions>, String> {
    let meta = |k: &str| config.node_metadata.get(k).and_then(|v| v.as_str()).map(str::to_string).filter(|s| !s.is_empty());
    args.ca.options(env, || {
        let ns = meta("NAMESPACE").ok_or("--ca-address needs the NAMESPACE node metadata (--node-meta NAMESPACE=…)")?;
        let sa = meta("SERVICE_ACCOUNT").ok_or("--ca-address needs the SERVICE_ACCOUNT node metadata (--node-meta SERVICE_ACCOUNT=…)")?;
        Ok((ns, sa))
    })
}
