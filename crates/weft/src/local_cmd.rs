//! `weft up`, `weft status`, `weft down`: a whole mesh on one machine (crates/local).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use weft_local::up::{Network, Running, UpOptions};

#[derive(Args, Debug)]
pub struct UpArgs {
    /// The mesh file: Workload documents (weft.dev/v1alpha1) and ordinary mesh resources.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    #[command(flatten)]
    net: NetArgs,
}

/// Where a run lives and which addresses it takes; shared with `weft demo`.
#[derive(Args, Debug, Clone)]
pub struct NetArgs {
    /// Where the run's state, config, certificates and logs live [default: /run/weft/default
    /// as root, else $XDG_RUNTIME_DIR/weft/default or /tmp/weft-$UID/default].
    #[arg(long = "run-dir")]
    pub run_dir: Option<PathBuf>,
    /// Explicit mode: no network namespaces, capture or privileges. Each workload gets two
    /// addresses from --loopback (its sidecar's, which other sidecars reach, and its
    /// application's); applications reach the mesh through their sidecar as HTTP_PROXY.
    #[arg(long)]
    pub explicit: bool,
    /// Explicit mode: the loopback range the control plane and workloads take addresses from.
    #[arg(long, default_value = weft_local::explicit::DEFAULT_LOOPBACK)]
    pub loopback: String,
    /// The private subnet of the bridge between the workloads' namespaces.
    #[arg(long, default_value = weft_local::addr::DEFAULT_SUBNET)]
    pub subnet: String,
    /// Where Services' virtual addresses come from.
    #[arg(long = "service-cidr", default_value = weft_local::addr::DEFAULT_SERVICE_CIDR)]
    pub service_cidr: String,
    /// The control plane's debug address (what `weft proxy-status` asks), on loopback
    /// [default: 127.0.0.1:15014; in explicit mode the control plane's own address :15014].
    #[arg(long = "debug-address")]
    pub debug_address: Option<SocketAddr>,
    /// How long to wait for the control plane and each sidecar to be ready.
    #[arg(long = "ready-timeout", default_value = "60s")]
    pub ready_timeout: String,
    /// Start even though the file holds resources that would restrict traffic but that weft
    /// does not enforce (AuthorizationPolicy, RequestAuthentication, EnvoyFilter, …); they stay
    /// unenforced and are reported as errors.
    #[arg(long = "allow-unenforced-security")]
    pub allow_unenforced_security: bool,
    /// Also run a Prometheus (Debian's) on this loopback address, scraping every sidecar's
    /// Istio metrics and the control plane, so Kiali's and Grafana's queries work on one machine.
    #[arg(long, value_name = "ADDRESS", num_args = 0..=1, default_missing_value = "127.0.0.1:9090")]
    pub prometheus: Option<SocketAddr>,
}

#[derive(Args, Debug)]
pub struct RunDirArgs {
    /// The run's directory [default: as `weft up`'s].
    #[arg(long = "run-dir")]
    run_dir: Option<PathBuf>,
}

/// `--run-dir`, or the default for this user (the same one `weft up` took).
pub fn run_dir(given: Option<&PathBuf>) -> PathBuf {
    match given {
        Some(p) => p.clone(),
        None => {
            let uid = weft_local::rundir::effective_uid().unwrap_or(0);
            let xdg = std::env::var("XDG_RUNTIME_DIR").ok();
            weft_local::rundir::default_run_dir(uid, xdg.as_deref())
        }
    }
}

impl NetArgs {
    /// The options of a run of `file`, in explicit mode when `explicit` (the flag, or `weft
    /// demo`'s own decision).
    pub fn options(&self, file: PathBuf, explicit: bool) -> Result<UpOptions, String> {
        let service_cidr = self.service_cidr.parse().map_err(|_| format!("--service-cidr {:?}: not an IPv4 CIDR", self.service_cidr))?;
        let ready_timeout = weft_api::duration::parse_go_duration(&self.ready_timeout)
            .map_err(|e| format!("--ready-timeout {:?}: {e}", self.ready_timeout))?;
        let (network, default_debug) = if explicit {
            let loopback =
                self.loopback.parse().map_err(|_| format!("--loopback {:?}: not an IPv4 CIDR (e.g. 127.77.0.0/16)", self.loopback))?;
            weft_local::explicit::check_range(loopback)?;
            let cp = weft_local::explicit::control_plane_address(loopback).ok_or_else(|| format!("--loopback {loopback}: too small"))?;
            (Network::Explicit { loopback }, SocketAddr::from((cp, weft_local::explicit::DEBUG_PORT)))
        } else {
            let subnet = self.subnet.parse().map_err(|_| format!("--subnet {:?}: not an IPv4 CIDR", self.subnet))?;
            (Network::Namespaces { subnet }, SocketAddr::from(([127, 0, 0, 1], weft_local::explicit::DEBUG_PORT)))
        };
        let debug_address = self.debug_address.unwrap_or(default_debug);
        if !debug_address.ip().is_loopback() {
            return Err(format!("--debug-address {debug_address}: the control plane's debug port stays on loopback"));
        }
        let weft = std::env::current_exe().map_err(|e| format!("cannot find the weft binary: {e}"))?;
        let dir = run_dir(self.run_dir.as_ref());
        let run_dir = if dir.is_absolute() { dir } else { std::env::current_dir().map_err(|e| e.to_string())?.join(dir) };
        Ok(UpOptions {
            file,
            run_dir,
            network,
            service_cidr,
            weft,
            debug_address,
            ready_timeout,
            allow_unenforced_security: self.allow_unenforced_security,
            prometheus: match self.prometheus {
                Some(p) if !p.ip().is_loopback() => return Err(format!("--prometheus {p}: Prometheus stays on loopback")),
                p => p,
            },
        })
    }
}

pub fn up(args: UpArgs) -> ExitCode {
    let opts = match args.net.options(args.file, args.net.explicit) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("weft up: {e}");
            return ExitCode::from(2);
        }
    };
    match start(&opts) {
        Ok(running) => {
            print_running(&opts, &running);
            let dir = opts.run_dir.display();
            say!("\n  weft status --run-dir {dir}                  health of every workload");
            say!("  weft proxy-status --control-plane {}   config sync of every sidecar", opts.debug_address);
            say!("  weft apply -f FILE --run-dir {dir}          add VirtualServices, DestinationRules, …");
            say!("  weft down --run-dir {dir}                    stop it all");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Brings the mesh up with progress on stderr; errors are printed here.
pub fn start(opts: &UpOptions) -> Result<Running, ExitCode> {
    let mut progress = |step: &str| eprintln!("weft up: {step}");
    weft_local::up::up(opts, &mut progress).map_err(|e| {
        eprintln!("weft up: {e}");
        match e {
            weft_local::LocalError::Spec(_) => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    })
}

pub fn print_running(opts: &UpOptions, running: &Running) {
    for w in &running.warnings {
        eprintln!("weft up: warning: {w}");
    }
    let explicit = running.state.explicit;
    let mode = if explicit { ", explicit mode: nothing captured, applications use their sidecar as HTTP_PROXY" } else { "" };
    say!("mesh from {} is up ({}{mode})", running.state.file, opts.run_dir.display());
    if explicit {
        say!("\n  {:<32} {:<15} {:<15} SIDECAR", "WORKLOAD", "MESH ADDRESS", "APP ADDRESS");
        for w in &running.state.workloads {
            let app = w.app_address.as_deref().unwrap_or(&w.address);
            say!("  {:<32} {:<15} {:<15} {}", w.id, w.address, app, if w.sidecar { "yes" } else { "no" });
        }
    } else {
        say!("\n  {:<32} {:<15} {:<8} NETNS", "WORKLOAD", "ADDRESS", "SIDECAR");
        for w in &running.state.workloads {
            let proxy = match (w.gateway, w.sidecar) {
                (true, _) => "gateway",
                (false, true) => "yes",
                (false, false) => "no",
            };
            say!("  {:<32} {:<15} {:<8} {}", w.id, w.address, proxy, w.netns.as_deref().unwrap_or("-"));
        }
    }
    say!("\n  {:<32} {:<15} PORTS", "SERVICE", "ADDRESS");
    for (name, ip, ports) in &running.services {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        say!("  {:<32} {:<15} {}", name, ip, ports.join(","));
    }
    say!("\n  logs: {}/logs   control plane debug: {}", opts.run_dir.display(), opts.debug_address);
    say!("  dashboard: http://{}/   (or `weft dashboard`)", opts.debug_address);
    say!("  service graph: http://{}/dotviz?time_horizon=5m&filter_empty=true", opts.debug_address);
    if let Some(p) = opts.prometheus {
        say!("  prometheus on http://{p} (Istio's metrics from every sidecar)");
    }
    if let (true, Some(w)) = (explicit, running.state.workloads.iter().find(|w| w.sidecar)) {
        let port = running.proxy_http_port.unwrap_or(weft_local::explicit::DEFAULT_PROXY_HTTP_PORT);
        say!("\n  call a service through a sidecar, as its application does (HTTP_PROXY):");
        say!("    curl -x http://{}:{port} http://SERVICE:PORT/PATH     (from {})", w.address, w.id);
        say!("  reach a workload from this machine: http://MESH-ADDRESS:PORT/ (its sidecar; plaintext where mTLS is PERMISSIVE)");
    }
}

pub fn down(args: RunDirArgs) -> ExitCode {
    let dir = run_dir(args.run_dir.as_ref());
    match weft_local::down::down(&dir) {
        Ok(r) if r.bridge.is_none() && r.namespaces == 0 && r.processes == 0 && !r.run_dir => {
            say!("nothing runs from {}", dir.display());
            ExitCode::SUCCESS
        }
        Ok(r) if r.namespaces == 0 && r.bridge.is_none() => {
            say!("stopped {} processes and removed {}", r.processes, dir.display());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            say!(
                "stopped {} processes, removed {} network namespaces{} and {}",
                r.processes,
                r.namespaces,
                r.bridge.map(|b| format!(", bridge {b}")).unwrap_or_default(),
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft down: {e}");
            ExitCode::from(1)
        }
    }
}

pub fn status(args: RunDirArgs) -> ExitCode {
    let dir = run_dir(args.run_dir.as_ref());
    match weft_local::status::status(&dir) {
        Ok(None) => {
            say!("nothing runs from {} (start a mesh with `weft up -f FILE`)", dir.display());
            ExitCode::from(3)
        }
        Ok(Some(s)) => {
            let mode = if s.explicit { " (explicit mode)" } else { "" };
            say!("mesh from {}{mode}: control plane {}", s.file, if s.control_plane { "running" } else { "NOT RUNNING" });
            let addr_head = if s.explicit { "MESH/APP ADDRESS" } else { "ADDRESS" };
            say!("\n  {:<32} {:<27} {:<8} {:<10} READY", "WORKLOAD", addr_head, "APP", "SIDECAR");
            let word = |b: bool| if b { "running" } else { "EXITED" };
            for w in &s.workloads {
                let sidecar = w.sidecar.map(word).unwrap_or("none");
                let ready = match w.ready {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "-",
                };
                let address = match &w.app_address {
                    Some(app) => format!("{} / {app}", w.address),
                    None => w.address.clone(),
                };
                say!("  {:<32} {:<27} {:<8} {:<10} {}", w.id, address, word(w.app), sidecar, ready);
            }
            if s.healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("weft status: {e}");
            ExitCode::from(1)
        }
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    weft_api::duration::parse_go_duration(s).map_err(|e| e.to_string())
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// A file of mesh resources (VirtualService, DestinationRule, …): `apply` adds it to the
    /// running mesh, `delete` takes a file `apply` added back out.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// The run's directory [default: as `weft up`'s].
    #[arg(long = "run-dir")]
    run_dir: Option<PathBuf>,
}

/// Where `weft apply` keeps files, inside the directory the control plane watches.
fn applied_path(args: &ApplyArgs) -> Result<PathBuf, String> {
    let dir = run_dir(args.run_dir.as_ref());
    if !dir.join(weft_local::state::STATE_FILE).exists() {
        return Err(format!("nothing runs from {} (start a mesh with `weft up -f FILE`)", dir.display()));
    }
    let name = args.file.file_name().ok_or_else(|| format!("{}: not a file name", args.file.display()))?;
    Ok(dir.join("config").join("applied").join(name))
}

/// `weft apply -f`: checks the file like the control plane does, then hands it over; the
/// control plane picks it up within a second and pushes only what changed.
pub fn apply(args: ApplyArgs) -> ExitCode {
    let result = (|| -> Result<String, String> {
        let target = applied_path(&args)?;
        let text = std::fs::read_to_string(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
        let loaded = weft_api::load_text(&text, &args.file.display().to_string());
        let errors: Vec<String> = loaded.diagnostics.iter().filter(|d| d.level == weft_api::Level::Error).map(|d| d.to_string()).collect();
        if !errors.is_empty() {
            return Err(format!("nothing applied:\n{}", errors.join("\n")));
        }
        if loaded.objects.is_empty() && loaded.ingress_docs.is_empty() && loaded.gateway_api_docs.is_empty() {
            return Err(format!("{}: no mesh resource in it", args.file.display()));
        }
        let Some(dir) = target.parent() else { return Err(format!("{}: no directory", target.display())) };
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // Write then rename, so the control plane never reads half a file.
        let tmp = dir.join(".weft-apply.tmp");
        std::fs::write(&tmp, &text).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &target).map_err(|e| format!("{}: {e}", target.display()))?;
        let mut names: Vec<String> = loaded.objects.iter().map(|o| o.kind().to_string()).collect();
        names.extend(loaded.gateway_api_docs.iter().map(|d| d.kind.clone()));
        Ok(format!("applied {} ({})", args.file.display(), names.join(", ")))
    })();
    match result {
        Ok(msg) => {
            say!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft apply: {e}");
            ExitCode::from(2)
        }
    }
}

/// `weft delete -f`: takes a file `weft apply` added back out.
pub fn delete(args: ApplyArgs) -> ExitCode {
    match applied_path(&args).and_then(|p| std::fs::remove_file(&p).map_err(|e| format!("{} was not applied ({e})", args.file.display()))) {
        Ok(()) => {
            say!("deleted {}", args.file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft delete: {e}");
            ExitCode::from(2)
        }
    }
}
