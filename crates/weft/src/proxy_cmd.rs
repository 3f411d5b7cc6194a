//! `weft proxy`: Envoy's command line, so launchers written for Envoy run weft unchanged.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use tracing_subscriber::{reload, EnvFilter};
use weft_proxy::applog::{self, LogFormat};
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
    /// Worker threads (default: the number of cores; 0 means 1, as in Envoy).
    #[arg(long)]
    concurrency: Option<usize>,
    /// trace, debug, info, warning, error, critical or off.
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    log_level: String,
    /// Levels per Envoy component, e.g. upstream:debug,config:trace. Each applies to the weft
    /// modules doing that component's job (upstream: clusters and pools, router: the router,
    /// config: config loading, …); a component weft has no code for (lua, redis, misc, …) logs
    /// nothing either way. An unknown component or level is refused, as by Envoy.
    #[arg(long = "component-log-level", value_name = "COMPONENT:LEVEL,…")]
    component_log_level: Option<String>,
    /// weft's log line format, in spdlog syntax as Envoy's (times in UTC). Supported flags:
    /// %v %j %l %L %n %t %P %Y %C %m %d %H %M %S %e %f %F %T %X %D %R %E %z %g %s %# %@ %%;
    /// any other is refused. Default: weft's own layout.
    #[arg(long = "log-format")]
    log_format: Option<String>,
    /// Write weft's log to this file (appended to, created if missing) instead of stderr.
    #[arg(long = "log-path", value_name = "FILE")]
    log_path: Option<String>,
    /// Overrides node.cluster.
    #[arg(long = "service-cluster")]
    service_cluster: Option<String>,
    /// Overrides node.id.
    #[arg(long = "service-node")]
    service_node: Option<String>,
    /// Overrides node.locality.zone (sent to the control plane, shown in /server_info).
    #[arg(long = "service-zone")]
    service_zone: Option<String>,
    /// Seconds open connections get to finish when draining (SIGTERM, /quitquitquit,
    /// /drain_listeners?graceful, a replaced listener).
    #[arg(long = "drain-time-s", default_value_t = 600)]
    drain_time_s: u64,
    /// immediate: every connection of a draining listener is told to close at once (HTTP/1
    /// `Connection: close` on its next response, HTTP/2 GOAWAY), which is how weft drains.
    /// Envoy's gradual strategy is refused.
    #[arg(long = "drain-strategy", value_name = "immediate")]
    drain_strategy: Option<String>,
    /// Hot restart only: how long a new epoch lets its parent run. weft runs epoch 0 only, where
    /// this has no effect (as in Envoy at epoch 0).
    #[arg(long = "parent-shutdown-time-s", value_name = "SECONDS")]
    parent_shutdown_time_s: Option<u32>,
    /// weft has no hot restart; the flag says what is always so.
    #[arg(long = "disable-hot-restart")]
    disable_hot_restart: bool,
    /// Names Envoy's hot-restart shared memory, which weft does not have: any number of weft
    /// proxies run side by side, whatever their base id.
    #[arg(long = "base-id")]
    base_id: Option<u32>,
    /// As --base-id: weft has no shared memory to choose an id for.
    #[arg(long = "use-dynamic-base-id")]
    use_dynamic_base_id: bool,
    /// Hot restart epoch: 0. weft has no hot restart, so a later epoch is refused.
    #[arg(long = "restart-epoch", value_name = "0")]
    restart_epoch: Option<u32>,
    /// v4 (default) or v6: the family of the node's own address (its first non-loopback
    /// interface address), which is the local endpoint of Zipkin spans and what requests the
    /// proxy sends itself (mirrors, span reports) append to x-forwarded-for, as in Envoy.
    #[arg(long = "local-address-ip-version", value_name = "v4|v6")]
    local_address_ip_version: Option<String>,
    /// Ignore bootstrap fields that are not Envoy's (each is logged as a warning and counted in
    /// server.static_unknown_fields); fields weft knows but does not implement are still refused.
    #[arg(long = "allow-unknown-static-fields")]
    allow_unknown_static_fields: bool,
    /// Envoy's access-log flush interval. weft writes every access-log line as it happens, so
    /// any interval is met.
    #[arg(long = "file-flush-interval-msec", value_name = "MS")]
    file_flush_interval_msec: Option<u32>,
    /// Envoy's access-log buffer size before a flush. weft does not buffer access-log lines, so
    /// any size is met.
    #[arg(long = "file-flush-min-size-kb", value_name = "KB")]
    file_flush_min_size_kb: Option<u32>,
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
    /// With node metadata DNS_CAPTURE=true (ISTIO_META_DNS_CAPTURE): the resolver
    /// configuration whose nameservers get the queries the mesh's names do not answer, and
    /// whose search list the answers follow. The DNS proxy listens on DNS_PROXY_ADDR from the
    /// environment, as Istio's agent does (default 127.0.0.1:15053).
    #[arg(long = "dns-resolv-conf", value_name = "PATH", default_value = "/etc/resolv.conf")]
    dns_resolv_conf: std::path::PathBuf,
    /// serve (default) or validate (check the config and exit).
    #[arg(long, default_value = "serve")]
    mode: String,
    /// Print the version and exit.
    #[arg(long)]
    version: bool,
}

/// The process settings the flags ask for, checked before anything starts.
struct Settings {
    log_levels: applog::LogLevels,
    log_format: LogFormat,
    log_file: Option<std::fs::File>,
    local_address_v6: bool,
    concurrency: usize,
}

/// Checks every flag whose value weft must act on; an error names the flag and why.
fn settings(args: &ProxyArgs) -> anyhow::Result<Settings> {
    applog::level_directive(&args.log_level).map_err(|e| anyhow::anyhow!("{e}"))?;
    let log_levels = applog::LogLevels::parse(&args.log_level, args.component_log_level.as_deref())
        .map_err(|e| anyhow::anyhow!("--component-log-level: {e}"))?;
    let log_format = match &args.log_format {
        Some(f) => LogFormat::Pattern(applog::Pattern::parse(f).map_err(|e| anyhow::anyhow!("--log-format {f:?}: {e}"))?),
        None => LogFormat::Default,
    };
    match args.drain_strategy.as_deref() {
        None | Some("immediate") => {}
        Some("gradual") => bail!(
            "--drain-strategy gradual is not supported: weft drains immediately (every connection of a draining listener is \
             told to close at once); use --drain-strategy immediate"
        ),
        Some(other) => bail!("--drain-strategy {other:?}: unknown drain strategy (gradual or immediate)"),
    }
    match args.restart_epoch {
        None | Some(0) => {}
        Some(n) => bail!("--restart-epoch {n}: weft has no hot restart, so only epoch 0 can run; start a new proxy instead"),
    }
    let local_address_v6 = match args.local_address_ip_version.as_deref() {
        None | Some("v4") => false,
        Some("v6") => true,
        Some(other) => bail!("--local-address-ip-version {other:?}: unknown IP address version (v4 or v6)"),
    };
    let log_file = match &args.log_path {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| anyhow::anyhow!("--log-path {p:?}: cannot open the log file: {e}"))?,
        ),
        None => None,
    };
    let concurrency = match args.concurrency {
        Some(0) => 1,
        Some(n) => n,
        None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    Ok(Settings { log_levels, log_format, log_file, local_address_v6, concurrency })
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

/// A configuration text and where it came from, kept to put lines on later errors.
struct Source {
    name: String,
    text: String,
    format: SourceFormat,
}

/// What was loaded: the bootstrap, its JSON for `/config_dump`, the unknown fields
/// `--allow-unknown-static-fields` let through, and the texts (the one that wins a merge first).
struct Loaded {
    bootstrap: weft_xds::Bootstrap,
    dump: serde_json::Value,
    ignored: Vec<load::LoadError>,
    sources: Vec<Source>,
}

/// `file:line:column: path: message` for an error found after parsing (an unknown cluster, a
/// duplicate name), with the line in the text the value came from.
fn located(sources: &[Source], e: &weft_proxy::ConfigError) -> String {
    let at = |src: &Source| load::locate(&src.text, src.format, &e.path).map(|(l, c)| format!("{}:{l}:{c}: {e}", src.name));
    match sources {
        [] => e.to_string(),
        [one] => at(one).unwrap_or_else(|| format!("{}: {e}", one.name)),
        // Merged: `--config-yaml` wins for a value inside objects; a list holds the file's
        // items first, so an index is the file's when the file has it, and otherwise is
        // shifted in `--config-yaml` (not worked out: the merged name is given instead).
        [yaml, file, ..] => {
            let from_yaml = if e.path.contains('[') { None } else { at(yaml) };
            from_yaml.or_else(|| at(file)).unwrap_or_else(|| format!("{} + --config-yaml: {e}", file.name))
        }
    }
}

fn load_config(args: &ProxyArgs) -> anyhow::Result<Loaded> {
    let file = match &args.config_path {
        Some(p) => Some((p.clone(), std::fs::read_to_string(p).with_context(|| format!("cannot read {p}"))?)),
        None => None,
    };
    let to_json = |text: &str, name: &str| -> anyhow::Result<serde_json::Value> {
        serde_yaml::from_str::<serde_json::Value>(text).map_err(|e| anyhow::anyhow!("{name}: {e}"))
    };
    let lenient = args.allow_unknown_static_fields;
    let one = |text: &str, format: SourceFormat, name: &str| -> Result<(weft_xds::Bootstrap, Vec<load::LoadError>), load::LoadError> {
        if lenient {
            load::load_lenient(text, format, name)
        } else {
            load::load_bootstrap(text, format, name).map(|b| (b, Vec::new()))
        }
    };
    let src = |name: &str, text: &str, format: SourceFormat| Source { name: name.into(), text: text.into(), format };
    match (file, &args.config_yaml) {
        (Some((path, text)), None) => {
            let format = SourceFormat::from_path(&path);
            let (bootstrap, ignored) = one(&text, format, &path)?;
            let dump = to_json(&text, &path)?;
            Ok(Loaded { bootstrap, dump, ignored, sources: vec![src(&path, &text, format)] })
        }
        (None, Some(yaml)) => {
            let (bootstrap, ignored) = one(yaml, SourceFormat::Yaml, "--config-yaml")?;
            let dump = to_json(yaml, "--config-yaml")?;
            Ok(Loaded { bootstrap, dump, ignored, sources: vec![src("--config-yaml", yaml, SourceFormat::Yaml)] })
        }
        (Some((path, text)), Some(yaml)) => {
            // Validate each source alone first, so errors keep their line numbers.
            let format = SourceFormat::from_path(&path);
            let (_, mut ignored) = one(&text, format, &path)?;
            ignored.extend(one(yaml, SourceFormat::Yaml, "--config-yaml")?.1);
            let mut v = to_json(&text, &path)?;
            merge(&mut v, to_json(yaml, "--config-yaml")?);
            let name = format!("{path} + --config-yaml");
            let bootstrap = if lenient {
                // Already reported above, per source.
                load::from_value_lenient(v.clone(), &name, |_| None)?.0
            } else {
                load::from_value(v.clone(), &name)?
            };
            let sources = vec![src("--config-yaml", yaml, SourceFormat::Yaml), src(&path, &text, format)];
            Ok(Loaded { bootstrap, dump: v, ignored, sources })
        }
        (None, None) if args.xds_address.is_some() => {
            Ok(Loaded { bootstrap: weft_xds::Bootstrap::default(), dump: serde_json::json!({}), ignored: Vec::new(), sources: Vec::new() })
        }
        (None, None) => bail!("no configuration: give --config-path (-c), --config-yaml or --xds-address"),
    }
}

fn meta_value(v: &str) -> serde_json::Value {
    match serde_json::from_str::<serde_json::Value>(v) {
        Ok(o @ serde_json::Value::Object(_)) => o,
        _ => serde_json::Value::String(v.to_string()),
    }
}

/// The node Istio's agent makes of a pod's environment: every `ISTIO_META_<KEY>` as metadata
/// `KEY` (a JSON object, like LABELS, as one), `NAMESPACE` from `namespace` unless given, and
/// the sidecar node id when `INSTANCE_IP`, `POD_NAME` and `namespace` are all there.
pub(crate) fn pod_node(env: &[(String, String)], namespace: Option<&str>) -> (Option<String>, serde_json::Map<String, serde_json::Value>) {
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    let mut metadata = serde_json::Map::new();
    for (k, v) in env {
        if let Some(key) = k.strip_prefix("ISTIO_META_") {
            metadata.insert(key.to_string(), meta_value(v));
        }
    }
    if let Some(ns) = namespace {
        metadata.entry("NAMESPACE").or_insert_with(|| serde_json::Value::String(ns.to_owned()));
    }
    let id = match (get("INSTANCE_IP"), get("POD_NAME"), namespace) {
        (Some(ip), Some(pod), Some(ns)) => Some(format!("sidecar~{ip}~{pod}.{ns}~{ns}.svc.cluster.local")),
        _ => None,
    };
    (id, metadata)
}

/// Node id, cluster, metadata and control plane from flags and the environment, the way
/// Istio's agent derives them (`POD_NAME`, `POD_NAMESPACE`, `INSTANCE_IP`, `ISTIO_META_*`).
fn node_overrides(args: &ProxyArgs, env: &[(String, String)]) -> anyhow::Result<NodeOverrides> {
    let ns = env.iter().find(|(n, _)| n == "POD_NAMESPACE").map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
    let (pod_id, mut metadata) = pod_node(env, ns);
    for kv in &args.node_meta {
        let Some((k, v)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            bail!("--node-meta {kv:?}: expected KEY=VALUE");
        };
        metadata.insert(k.to_string(), meta_value(v));
    }
    let id = args.service_node.clone().or(pod_id);
    let ads = match &args.xds_address {
        Some(a) => {
            if a.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
                bail!("--xds-address {a:?}: expected HOST:PORT");
            }
            Some(weft_proxy::config::AdsConfig { address: a.clone(), delta: args.xds_delta })
        }
        None => None,
    };
    Ok(NodeOverrides { id, cluster: args.service_cluster.clone(), zone: args.service_zone.clone(), metadata, ads })
}

pub fn run(args: ProxyArgs) -> ExitCode {
    if args.version {
        say!("weft proxy version: {} (Envoy v3 API)", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let settings = match settings(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("weft proxy: {e:#}");
            return ExitCode::from(1);
        }
    };
    let (filter, handle) = reload::Layer::new(EnvFilter::new(settings.log_levels.directives()));
    let formatter = applog::Formatter::new(settings.log_format.clone());
    use tracing_subscriber::prelude::*;
    let layer = tracing_subscriber::fmt::layer().event_format(formatter.clone());
    match settings.log_file {
        // Envoy writes its log only to the file when --log-path is given.
        Some(f) => tracing_subscriber::registry().with(filter).with(layer.with_writer(std::sync::Mutex::new(f)).with_ansi(false)).init(),
        None => tracing_subscriber::registry()
            .with(filter)
            .with(layer.with_writer(std::io::stderr).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .init(),
    }

    let Loaded { bootstrap, dump, ignored, sources } = match load_config(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("weft proxy: invalid configuration: {e:#}");
            return ExitCode::from(1);
        }
    };
    for e in &ignored {
        tracing::warn!("--allow-unknown-static-fields: ignoring {e}");
    }
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
            eprintln!("weft proxy: invalid configuration: {}", located(&sources, &e));
            return ExitCode::from(1);
        }
    };
    if let Some(p) = config.app_log_format.clone() {
        if args.log_format.is_some() {
            eprintln!("weft proxy: invalid configuration: application_log_config.log_format and --log-format cannot both be given");
            return ExitCode::from(1);
        }
        formatter.set(LogFormat::Pattern(p));
    }
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
    let dns = match dns_options(&args, &env, &config) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("weft proxy: {e}");
            return ExitCode::from(1);
        }
    };
    let concurrency = settings.concurrency;
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(concurrency).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft proxy: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let set_level: weft_proxy::admin::LogLevelSetter = Arc::new(move |directives: &str| {
        let f = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        handle.reload(f).map_err(|e| e.to_string())
    });
    let drain_time = Duration::from_secs(args.drain_time_s);
    let opts = weft_proxy::Options {
        concurrency,
        drain_time,
        set_log_level: set_level,
        local_address_v6: settings.local_address_v6,
        static_unknown_fields: ignored.len() as u64,
        log_levels: settings.log_levels.clone(),
        dns,
    };
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

/// The DNS proxy a sidecar runs when its node metadata says `DNS_CAPTURE` (as pilot-agent runs
/// one for `ISTIO_META_DNS_CAPTURE`). Its names come from the control plane, so it needs ADS.
fn dns_options(
    args: &ProxyArgs,
    env: &[(String, String)],
    config: &weft_proxy::Config,
) -> anyhow::Result<Option<weft_proxy::dns::DnsOptions>> {
    let on = match config.node_metadata.get("DNS_CAPTURE") {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    };
    if !on {
        return Ok(None);
    }
    if config.ads.is_none() {
        bail!("node metadata DNS_CAPTURE: the DNS proxy answers from the control plane's name table; give --xds-address");
    }
    if !config.node_id.starts_with("sidecar~") {
        bail!("node metadata DNS_CAPTURE: only a sidecar answers its workload's DNS (node id {:?})", config.node_id);
    }
    let listen = weft_proxy::dns::listen_address(env).map_err(|e| anyhow::anyhow!(e))?;
    // `sidecar~ip~pod.ns~ns.svc.cluster.local`: the namespace, then the cluster's domain.
    let domain_part = config.node_id.split('~').nth(3).unwrap_or_default();
    let (id_ns, domain) = domain_part.split_once('.').unwrap_or((domain_part, "svc.cluster.local"));
    let namespace = config.node_metadata.get("NAMESPACE").and_then(|v| v.as_str()).unwrap_or(id_ns).to_owned();
    Ok(Some(weft_proxy::dns::DnsOptions {
        listen: vec![listen],
        resolv_conf: args.dns_resolv_conf.clone(),
        namespace,
        domain: domain.to_owned(),
    }))
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
