//! `weft up`: from a checked mesh file to a running mesh, one recorded step at a time. Any
//! failure takes down what was already made, so a failed `up` leaves nothing behind.
//!
//! Two ways to run it (`Network`): a network namespace per workload with capture (root), or
//! explicit mode (`explicit.rs`: loopback addresses, applications pointed at their sidecars,
//! no privileges). The control plane, certificates, config and supervision are the same.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use rand::distributions::{Alphanumeric, DistString};

use crate::bootstrap::{self, HEALTH_PORT};
use crate::explicit::{self, SECURE_PORT, XDS_PORT};
use crate::spec::{self, MeshFile, Workload};
use crate::state::{State, WorkloadState};
use crate::{addr, host, io_err, probe, process, LocalError};

/// The proxy's identity, as Istio runs it; capture exempts it.
pub const PROXY_UID: u32 = 1337;

/// Where the workloads live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// A network namespace each on a bridge with this subnet, traffic captured (needs root).
    Namespaces { subnet: Ipv4Net },
    /// Explicit mode: two addresses each from this loopback range, no capture, no privileges.
    Explicit { loopback: Ipv4Net },
}

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub file: PathBuf,
    pub run_dir: PathBuf,
    pub network: Network,
    pub service_cidr: Ipv4Net,
    /// The `weft` binary the control plane, sidecars and `weft` commands in workloads run.
    pub weft: PathBuf,
    /// Where the control plane serves `proxy-status` (loopback).
    pub debug_address: SocketAddr,
    pub ready_timeout: Duration,
    /// Run even though the file holds security resources weft does not enforce.
    pub allow_unenforced_security: bool,
    /// Start a Prometheus (Debian's `prometheus`) listening here, scraping every sidecar's
    /// Istio metrics and the control plane, as Istio's Prometheus add-on does on a cluster.
    pub prometheus: Option<SocketAddr>,
}

/// What is running, for the caller to print.
#[derive(Debug, Clone)]
pub struct Running {
    pub state: State,
    /// `namespace/name` → virtual address and ports.
    pub services: Vec<(String, Ipv4Addr, Vec<u16>)>,
    pub warnings: Vec<String>,
    /// Explicit mode: the sidecars' HTTP proxy port.
    pub proxy_http_port: Option<u16>,
}

/// Brings the mesh up; `progress` hears about each step.
pub fn up(opts: &UpOptions, progress: &mut dyn FnMut(&str)) -> Result<Running, LocalError> {
    let file_label = opts.file.display().to_string();
    let text = std::fs::read_to_string(&opts.file).map_err(io_err(&opts.file))?;
    let mesh = spec::parse(&text, &file_label).map_err(|errors| LocalError::Spec(errors.join("\n")))?;
    let mut warnings = mesh.warnings.clone();
    if !mesh.unenforced.is_empty() {
        if !opts.allow_unenforced_security {
            return Err(LocalError::Spec(format!(
                "{}\nrefusing to start a mesh whose security config would not be enforced (traffic it should deny would be allowed); \
                 remove those resources, or pass --allow-unenforced-security to run without them",
                mesh.unenforced.join("\n")
            )));
        }
        warnings.extend(mesh.unenforced.iter().map(|u| format!("NOT ENFORCED: {u}")));
    }
    let mode = match opts.network {
        Network::Namespaces { subnet } => {
            host::check_privileges()?;
            Mode::Namespaces { subnet }
        }
        Network::Explicit { loopback } => {
            if let Some(g) = mesh.workloads.iter().find(|w| w.gateway()) {
                // A gateway binds the ports its Gateway servers name on every address; on one
                // machine without namespaces those are the machine's own.
                return Err(LocalError::Spec(format!(
                    "Workload {}: a gateway (inject.istio.io/templates: gateway) needs network namespaces; run weft up as root without --explicit",
                    g.id()
                )));
            }
            explicit::check_range(loopback).map_err(LocalError::Spec)?;
            let addresses = explicit::addresses(loopback, mesh.workloads.len())?;
            let proxy_port = explicit::proxy_http_port(&mesh);
            explicit::check_ports(&mesh, proxy_port)?;
            warnings.extend(explicit::warnings(&mesh));
            Mode::Explicit { loopback, addresses, proxy_port }
        }
    };
    if let Some(uid) = crate::rundir::effective_uid() {
        crate::rundir::secure_parent(&opts.run_dir, uid)?;
    }
    if let Some(old) = crate::state::State::load(&opts.run_dir)? {
        if old.processes.iter().any(process::alive) {
            return Err(LocalError::Environment(format!(
                "a mesh from {} is already running in {}; `weft down --run-dir {}` first",
                old.file,
                opts.run_dir.display(),
                opts.run_dir.display()
            )));
        }
        progress(&format!("cleaning up a previous run that did not end with `weft down` ({})", opts.run_dir.display()));
        crate::down::down(&opts.run_dir)?;
    }
    match &mode {
        Mode::Namespaces { subnet } => {
            if let Some(iface) = host::subnet_in_use(*subnet)? {
                return Err(LocalError::Environment(format!(
                    "{subnet} is already used by {iface} on this machine; pick another with --subnet"
                )));
            }
        }
        Mode::Explicit { loopback, addresses, proxy_port } => {
            explicit::check_free(&explicit::sockets(&mesh, addresses, opts.debug_address, *proxy_port), *loopback)?;
        }
    }
    let concurrency = mesh.mesh_config.as_ref().and_then(|m| m.get("defaultConfig")?.get("concurrency")?.as_u64());
    let dns = dns_capture(&mesh);
    if dns.is_some() && matches!(mode, Mode::Explicit { .. }) {
        warnings.push(
            "MeshConfig defaultConfig.proxyMetadata ISTIO_META_DNS_CAPTURE: explicit mode captures nothing, so no DNS either; \
             names come from the sidecars' HTTP proxy"
                .into(),
        );
    }
    let proxy_http_port = match &mode {
        Mode::Explicit { proxy_port, .. } => Some(*proxy_port),
        Mode::Namespaces { .. } => None,
    };
    let mut run = Builder { opts, mode, state: State::default(), warnings, concurrency, dns };
    match run.build(&mesh, progress) {
        Ok(services) => Ok(Running { state: run.state, services, warnings: run.warnings, proxy_http_port }),
        Err(e) => {
            progress("start failed; removing what was made");
            let _ = crate::down::down(&opts.run_dir);
            Err(e)
        }
    }
}

/// `Network`, with what explicit mode worked out before anything started.
enum Mode {
    Namespaces { subnet: Ipv4Net },
    Explicit { loopback: Ipv4Net, addresses: explicit::Addresses, proxy_port: u16 },
}

struct Builder<'a> {
    opts: &'a UpOptions,
    mode: Mode,
    state: State,
    warnings: Vec<String>,
    /// MeshConfig `defaultConfig.concurrency`.
    concurrency: Option<u64>,
    /// DNS capture from MeshConfig `defaultConfig.proxyMetadata`.
    dns: Option<Dns>,
}

/// `ISTIO_META_DNS_CAPTURE` (and `ISTIO_META_DNS_AUTO_ALLOCATE`) in MeshConfig
/// `defaultConfig.proxyMetadata`, as Istio's injector hands them to every sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dns {
    pub auto_allocate: bool,
}

pub fn dns_capture(mesh: &MeshFile) -> Option<Dns> {
    let meta = mesh.mesh_config.as_ref()?.get("defaultConfig")?.get("proxyMetadata")?;
    let on = |k: &str| meta.get(k).and_then(|v| v.as_str().map(str::to_owned).or_else(|| v.as_bool().map(|b| b.to_string())));
    let yes = |k: &str| on(k).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    yes("ISTIO_META_DNS_CAPTURE").then(|| Dns { auto_allocate: yes("ISTIO_META_DNS_AUTO_ALLOCATE") })
}

struct Plan {
    id: String,
    services: Vec<(String, Ipv4Addr, Vec<u16>)>,
    /// Where the control plane serves xDS and its CA.
    control_plane: Ipv4Addr,
    /// Each workload's address (its WorkloadEntry's), in file order.
    addresses: Vec<Ipv4Addr>,
    /// Namespace mode: the bridge.
    bridge: Option<String>,
}

impl Builder<'_> {
    fn build(&mut self, mesh: &MeshFile, progress: &mut dyn FnMut(&str)) -> Result<Vec<(String, Ipv4Addr, Vec<u16>)>, LocalError> {
        let opts = self.opts;
        let dir = &opts.run_dir;
        for sub in ["config", "ca", "tokens", "logs", "workloads"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io_err(dir.join(sub)))?;
        }
        // Sidecars (UID 1337) read their bootstrap and the trust bundle under the run
        // directory; the tokens stay root's.
        for (sub, mode) in [("", 0o755), ("config", 0o755), ("ca", 0o755), ("workloads", 0o755), ("tokens", 0o700), ("logs", 0o755)] {
            let p = dir.join(sub);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).map_err(io_err(&p))?;
        }
        let plan = self.plan(mesh)?;
        self.state.file = opts.file.display().to_string();
        self.state.control_plane_debug = opts.debug_address.to_string();
        match &self.mode {
            Mode::Namespaces { subnet } => self.state.subnet = subnet.to_string(),
            Mode::Explicit { loopback, .. } => {
                self.state.subnet = loopback.to_string();
                self.state.explicit = true;
            }
        }
        self.state.save(dir)?;
        self.write_config(mesh, &plan)?;

        if let (Mode::Namespaces { subnet }, Some(bridge)) = (&self.mode, &plan.bridge) {
            progress(&format!("bridge {bridge} ({}/{}, no route off this machine)", plan.control_plane, subnet.prefix_len()));
            self.state.bridge = Some(bridge.clone());
            self.state.bridge_address = Some(plan.control_plane.to_string());
            self.state.save(dir)?;
            host::create_bridge(bridge, plan.control_plane, *subnet)?;
        }

        progress(&format!("control plane (xDS, CA) on {}", plan.control_plane));
        self.start_control_plane(mesh, &plan)?;

        let uid_ok = matches!(self.mode, Mode::Namespaces { .. }) && executable_by_others(&opts.weft);
        if !uid_ok && matches!(self.mode, Mode::Namespaces { .. }) {
            self.warnings.push(format!(
                "{} is not executable by UID {PROXY_UID}; sidecars run as root with GID {PROXY_UID} (capture exempts that GID too)",
                opts.weft.display()
            ));
        }
        for (i, w) in mesh.workloads.iter().enumerate() {
            let at = match &self.mode {
                Mode::Namespaces { .. } => plan.addresses[i].to_string(),
                Mode::Explicit { addresses, .. } if w.sidecar() => {
                    format!("{} (application at {})", plan.addresses[i], addresses.workloads[i].1)
                }
                Mode::Explicit { .. } => plan.addresses[i].to_string(),
            };
            let what = match (w.gateway(), w.sidecar()) {
                (true, _) => " (gateway)",
                (false, true) => "",
                (false, false) => " (no sidecar)",
            };
            progress(&format!("workload {} at {at}{what}", w.id()));
            self.start_workload(w, i, &plan, uid_ok)?;
        }
        self.wait_sidecars_ready(mesh, &plan, progress)?;
        for (i, w) in mesh.workloads.iter().enumerate() {
            self.start_app(w, &plan, i)?;
        }
        if let Some(listen) = opts.prometheus {
            progress(&format!("prometheus on http://{listen} (sidecars' Istio metrics every 2 s)"));
            self.start_prometheus(mesh, &plan, listen)?;
        }
        Ok(plan.services)
    }

    fn plan(&self, mesh: &MeshFile) -> Result<Plan, LocalError> {
        let opts = self.opts;
        let id = short_id(&opts.run_dir);
        let (control_plane, addresses, bridge) = match &self.mode {
            Mode::Namespaces { subnet } => {
                let bridge_ip =
                    addr::host_address(*subnet, 1).ok_or_else(|| LocalError::Spec(format!("--subnet {subnet} is too small")))?;
                let addresses = (0..mesh.workloads.len())
                    .map(|i| addr::host_address(*subnet, i as u32 + 2))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| LocalError::Spec(format!("--subnet {subnet} has no room for {} workloads", mesh.workloads.len())))?;
                (bridge_ip, addresses, Some(format!("weft-{id}")))
            }
            Mode::Explicit { addresses, .. } => (addresses.control_plane, addresses.workloads.iter().map(|(m, _)| *m).collect(), None),
        };
        let mut names = BTreeSet::new();
        let mut fixed = BTreeMap::new();
        for r in &mesh.resources {
            if r.get("kind").and_then(|k| k.as_str()) != Some("Service") {
                continue;
            }
            let key = resource_key(r);
            match r.get("spec").and_then(|s| s.get("clusterIP")).and_then(|c| c.as_str()) {
                Some(ip) if ip != "None" && !ip.is_empty() => {
                    let ip = ip
                        .parse::<Ipv4Addr>()
                        .map_err(|_| LocalError::Spec(format!("Service {key}: spec.clusterIP {ip:?} is not an IPv4 address")))?;
                    fixed.insert(key, ip);
                }
                _ => {
                    names.insert(key);
                }
            }
        }
        let mut vips = addr::virtual_addresses(opts.service_cidr, &names).map_err(LocalError::Spec)?;
        vips.extend(fixed);
        let services = vips
            .into_iter()
            .map(|(key, ip)| {
                let ports = mesh
                    .resources
                    .iter()
                    .find(|r| r.get("kind").and_then(|k| k.as_str()) == Some("Service") && resource_key(r) == key)
                    .and_then(|r| r.get("spec")?.get("ports")?.as_sequence().cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|p| p.get("port")?.as_u64())
                    .filter_map(|p| u16::try_from(p).ok())
                    .collect();
                (key, ip, ports)
            })
            .collect();
        Ok(Plan { id, services, control_plane, addresses, bridge })
    }

    /// The control plane's inputs: the file's resources (Services with their virtual
    /// address), a WorkloadEntry per workload, and the MeshConfig.
    fn write_config(&mut self, mesh: &MeshFile, plan: &Plan) -> Result<(), LocalError> {
        let dir = &self.opts.run_dir;
        let mut docs = Vec::new();
        for r in &mesh.resources {
            let mut r = r.clone();
            if r.get("kind").and_then(|k| k.as_str()) == Some("Service") {
                let key = resource_key(&r);
                if let Some((_, ip, _)) = plan.services.iter().find(|(k, _, _)| *k == key) {
                    if let Some(spec) = r.get_mut("spec").and_then(|s| s.as_mapping_mut()) {
                        spec.insert("clusterIP".into(), ip.to_string().into());
                    }
                }
            }
            docs.push(r);
        }
        for (i, w) in mesh.workloads.iter().enumerate() {
            let entry = spec::workload_entry(w, &plan.addresses[i].to_string(), self.labels(w));
            docs.push(serde_yaml::to_value(entry).map_err(|e| LocalError::Spec(e.to_string()))?);
        }
        if let Mode::Explicit { addresses, .. } = &self.mode {
            let root = mesh.mesh_config.as_ref().and_then(|m| m.get("rootNamespace")?.as_str()).unwrap_or("istio-system");
            for sidecar in explicit::sidecars(mesh, addresses, root)? {
                docs.push(serde_yaml::to_value(sidecar).map_err(|e| LocalError::Spec(e.to_string()))?);
            }
        }
        let mut text = String::new();
        for d in docs {
            text.push_str("---\n");
            text.push_str(&serde_yaml::to_string(&d).map_err(|e| LocalError::Spec(e.to_string()))?);
        }
        let path = dir.join("config").join("mesh-resources.yaml");
        std::fs::write(&path, text).map_err(io_err(&path))?;
        if let Some(mc) = &mesh.mesh_config {
            let path = dir.join("meshconfig.yaml");
            std::fs::write(&path, serde_yaml::to_string(mc).map_err(|e| LocalError::Spec(e.to_string()))?).map_err(io_err(&path))?;
        }
        Ok(())
    }

    fn start_control_plane(&mut self, mesh: &MeshFile, plan: &Plan) -> Result<(), LocalError> {
        let opts = self.opts;
        let dir = &opts.run_dir;
        let s = |p: &Path| p.display().to_string();
        let mut argv = vec![
            s(&opts.weft),
            "control-plane".into(),
            "--config-dir".into(),
            s(&dir.join("config")),
            "--xds-address".into(),
            format!("{}:{XDS_PORT}", plan.control_plane),
            "--secure-address".into(),
            format!("{}:{SECURE_PORT}", plan.control_plane),
            "--debug-address".into(),
            opts.debug_address.to_string(),
            "--ca-dir".into(),
            s(&dir.join("ca")),
            "--ca-token-dir".into(),
            s(&dir.join("tokens")),
        ];
        if mesh.mesh_config.is_some() {
            argv.extend(["--mesh".into(), s(&dir.join("meshconfig.yaml"))]);
        }
        if opts.allow_unenforced_security {
            argv.push("--allow-unenforced-security".into());
        }
        let log = dir.join("logs").join("control-plane.log");
        let proc = process::spawn("control-plane", &argv, &[], dir, &log)?;
        self.state.processes.push(proc.clone());
        self.state.save(dir)?;
        let root = dir.join("ca").join("root-cert.pem");
        let xds = SocketAddr::from((plan.control_plane, XDS_PORT));
        wait_until(opts.ready_timeout, "the control plane to serve xDS and its CA", &proc, || {
            root.exists() && std::net::TcpStream::connect_timeout(&xds, Duration::from_millis(200)).is_ok()
        })?;
        let p = &root;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).map_err(io_err(p))
    }

    fn start_workload(&mut self, w: &Workload, i: usize, plan: &Plan, uid_ok: bool) -> Result<(), LocalError> {
        let opts = self.opts;
        let dir = &opts.run_dir;
        let address = plan.addresses[i];
        let (netns, app_address, explicit_port) = match &self.mode {
            Mode::Namespaces { .. } => (Some(plan.netns(w)), None, None),
            Mode::Explicit { addresses, proxy_port, .. } => (None, Some(addresses.workloads[i].1.to_string()), Some(*proxy_port)),
        };
        self.state.workloads.push(WorkloadState {
            id: w.id(),
            netns: netns.clone(),
            address: address.to_string(),
            app_address: app_address.filter(|_| w.sidecar()),
            sidecar: w.sidecar(),
            gateway: w.gateway(),
            ports: w.ports.clone(),
        });
        self.state.save(dir)?;
        if let (Mode::Namespaces { subnet }, Some(netns), Some(bridge)) = (&self.mode, &netns, &plan.bridge) {
            host::create_netns(netns)?;
            host::attach(netns, bridge, &format!("wv{}{i:03}", plan.id), address, *subnet)?;
            match self.dns.filter(|_| w.sidecar() && !w.gateway()) {
                // The sidecar answers names: /etc/hosts holds only the workload itself, and
                // resolv.conf is a pod's (nameserver 127.0.0.1, captured to the sidecar).
                Some(_) => host::write_etc_dns(netns, &hosts_file(w, address, &[]), &w.namespace)?,
                None => host::write_etc(netns, &hosts_file(w, address, &plan.services))?,
            }
        }
        if !w.sidecar() {
            return Ok(());
        }
        let wdir = workload_dir(dir, w)?;

        if let Some(netns) = netns.as_ref().filter(|_| w.gateway()) {
            host::allow_low_ports(netns)?;
        }
        if let Some(netns) = netns.as_ref().filter(|_| !w.gateway()) {
            // Capture first, as Istio's init container does: the app starts into a captured
            // namespace and never sees a moment without its sidecar.
            let capture = w
                .capture_with_dns(self.dns.is_some())
                .map_err(|e| LocalError::Spec(format!("Workload {}: metadata.annotations: {e}", w.id())))?;
            let target = weft_capture::Target::Netns(Path::new("/var/run/netns").join(netns));
            let captured = weft_capture::Backend::detect(&target)
                .and_then(|(backend, _)| weft_capture::apply(&weft_capture::Ruleset::build(&capture), backend, &target));
            captured.map_err(|e| LocalError::Environment(format!("capture in {netns}: {e}")))?;
        }
        let weft = opts.weft.display().to_string();

        let token = Alphanumeric.sample_string(&mut rand::thread_rng(), 48);
        let token_entry = serde_json::json!({"token": token, "namespace": w.namespace, "serviceAccount": w.service_account});
        let entry_path = dir.join("tokens").join(format!("{}.{}.json", w.namespace, w.name));
        write_private(&entry_path, token_entry.to_string().as_bytes(), None)?;
        let token_path = wdir.join("token");
        write_private(&token_path, token.as_bytes(), uid_ok.then_some(PROXY_UID))?;
        let labels = self.labels(w);
        let node = bootstrap::Node {
            address,
            name: &w.name,
            namespace: &w.namespace,
            service_account: &w.service_account,
            labels: &labels,
            explicit: explicit_port,
        };
        let xds = SocketAddr::from((plan.control_plane, XDS_PORT));
        let mut boot = if w.gateway() { bootstrap::gateway(&node, xds) } else { bootstrap::sidecar(&node, xds) };
        if let (Some(dns), Some(_), false) = (self.dns, &netns, w.gateway()) {
            // As pilot-agent passes ISTIO_META_* on: the control plane sends the name table.
            boot["node"]["metadata"]["DNS_CAPTURE"] = serde_json::json!("true");
            if dns.auto_allocate {
                boot["node"]["metadata"]["DNS_AUTO_ALLOCATE"] = serde_json::json!("true");
            }
        }
        let boot_path = wdir.join("bootstrap.json");
        std::fs::write(&boot_path, serde_json::to_vec_pretty(&boot).unwrap_or_default()).map_err(io_err(&boot_path))?;

        // MeshConfig defaultConfig.concurrency, as Istio's injector applies it: default 2,
        // 0 means one worker per core (the proxy's own default).
        let concurrency = match self.concurrency {
            Some(0) => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).to_string(),
            Some(n) => n.to_string(),
            None => "2".into(),
        };
        // In a namespace the proxy runs as UID/GID 1337, which capture exempts; in explicit
        // mode as the user, with nothing to exempt.
        let mut argv: Vec<String> = match &netns {
            Some(netns) => {
                let ids = if uid_ok { format!("--reuid={PROXY_UID}") } else { "--reuid=0".into() };
                let gid = format!("--regid={PROXY_UID}");
                ["ip", "netns", "exec", netns, "setpriv", &ids, &gid, "--clear-groups", "--"].iter().map(|s| s.to_string()).collect()
            }
            None => Vec::new(),
        };
        argv.extend(
            [
                weft.as_str(),
                "proxy",
                "-c",
                &boot_path.display().to_string(),
                "--concurrency",
                &concurrency,
                "--ca-address",
                &format!("{}:{SECURE_PORT}", plan.control_plane),
                "--ca-root-cert",
                &dir.join("ca").join("root-cert.pem").display().to_string(),
                "--ca-token-file",
                &token_path.display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let log = dir.join("logs").join(format!("{}.{}.sidecar.log", w.namespace, w.name));
        let proc = process::spawn(&format!("{}/sidecar", w.id()), &argv, &[], &wdir, &log)?;
        self.state.processes.push(proc);
        self.state.save(dir)
    }

    /// A Prometheus with Istio's two jobs: `envoy-stats` (every sidecar's `:15090
    /// /stats/prometheus`) and `pilot` (the control plane's `/metrics`).
    fn start_prometheus(&mut self, mesh: &MeshFile, plan: &Plan, listen: SocketAddr) -> Result<(), LocalError> {
        let dir = &self.opts.run_dir;
        let Some(binary) = crate::host::which("prometheus") else {
            return Err(LocalError::Spec(
                "--prometheus needs `prometheus` (Debian package prometheus; scripts/setup.sh installs it)".into(),
            ));
        };
        let targets: Vec<String> = mesh
            .workloads
            .iter()
            .enumerate()
            .filter(|(_, w)| w.sidecar())
            .map(|(i, _)| format!("'{}:{}'", plan.addresses[i], crate::bootstrap::STATS_PORT))
            .collect();
        let config = format!(
            "global: {{scrape_interval: 2s, evaluation_interval: 2s}}\nscrape_configs:\n- job_name: envoy-stats\n  metrics_path: /stats/prometheus\n  static_configs:\n  - targets: [{}]\n- job_name: pilot\n  static_configs:\n  - targets: ['{}']\n",
            targets.join(", "),
            self.opts.debug_address
        );
        let config_path = dir.join("config").join("prometheus.yml");
        std::fs::write(&config_path, config).map_err(io_err(&config_path))?;
        let data = dir.join("prometheus");
        std::fs::create_dir_all(&data).map_err(io_err(&data))?;
        let argv: Vec<String> = vec![
            binary.display().to_string(),
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", data.display()),
            format!("--web.listen-address={listen}"),
        ];
        let log = dir.join("logs").join("prometheus.log");
        let proc = process::spawn("prometheus", &argv, &[], dir, &log)?;
        self.state.processes.push(proc);
        self.state.save(dir)
    }

    /// The labels `w`'s WorkloadEntry and sidecar carry (in explicit mode, also the one its
    /// own Sidecar selects).
    fn labels(&self, w: &Workload) -> BTreeMap<String, String> {
        match self.mode {
            Mode::Namespaces { .. } => w.labels.clone(),
            Mode::Explicit { .. } => explicit::labels(w),
        }
    }

    fn wait_sidecars_ready(&self, mesh: &MeshFile, plan: &Plan, progress: &mut dyn FnMut(&str)) -> Result<(), LocalError> {
        progress("waiting for the sidecars to get their config and certificates");
        for (i, w) in mesh.workloads.iter().enumerate().filter(|(_, w)| w.sidecar()) {
            let role = format!("{}/sidecar", w.id());
            let Some(proc) = self.state.processes.iter().find(|p| p.role == role) else { continue };
            let health = SocketAddr::from((plan.addresses[i], HEALTH_PORT));
            wait_until(self.opts.ready_timeout, &format!("the sidecar of {} to be ready", w.id()), proc, || {
                matches!(probe::get(health, "/healthz/ready", Duration::from_millis(500)), Ok((200, _)))
            })?;
        }
        Ok(())
    }

    fn start_app(&mut self, w: &Workload, plan: &Plan, i: usize) -> Result<(), LocalError> {
        if w.gateway() {
            // Nothing but the proxy runs in a gateway.
            return Ok(());
        }
        let dir = &self.opts.run_dir;
        let mut argv: Vec<String> = match &self.mode {
            Mode::Namespaces { .. } => vec!["ip".into(), "netns".into(), "exec".into(), plan.netns(w)],
            Mode::Explicit { .. } => Vec::new(),
        };
        for (n, word) in w.command.iter().enumerate() {
            // `weft …` in a workload means this weft (the samples), whatever PATH says.
            argv.push(if n == 0 && word == "weft" { self.opts.weft.display().to_string() } else { word.clone() });
        }
        let mut env: Vec<(String, String)> = vec![
            ("POD_NAME".into(), w.name.clone()),
            ("POD_NAMESPACE".into(), w.namespace.clone()),
            ("SERVICE_ACCOUNT".into(), w.service_account.clone()),
        ];
        match &self.mode {
            Mode::Namespaces { .. } => env.push(("INSTANCE_IP".into(), plan.addresses[i].to_string())),
            Mode::Explicit { addresses, proxy_port, .. } => {
                let (mesh_ip, app_ip) = addresses.workloads[i];
                let env_vars = explicit::app_env(w, mesh_ip, app_ip, *proxy_port);
                let listen = env_vars.iter().find(|(k, _)| k == "WEFT_LISTEN_ADDRESS").and_then(|(_, v)| v.parse().ok()).unwrap_or(app_ip);
                env.extend(env_vars);
                argv.extend(explicit::sample_listen(w, listen).into_iter().flatten());
            }
        }
        // The file's own env comes last, so it can override any of these.
        env.extend(w.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let wdir = workload_dir(dir, w)?;
        let log = dir.join("logs").join(format!("{}.{}.app.log", w.namespace, w.name));
        let proc = process::spawn(&format!("{}/app", w.id()), &argv, &env, &wdir, &log)?;
        self.state.processes.push(proc);
        self.state.save(dir)
    }
}

/// `/etc/hosts` for one workload: itself, and every Service by its full name, `name.namespace`
/// and, in its own namespace, the bare name — as Kubernetes DNS answers them.
pub fn hosts_file(w: &Workload, address: Ipv4Addr, services: &[(String, Ipv4Addr, Vec<u16>)]) -> String {
    let mut out = format!("127.0.0.1 localhost\n::1 localhost ip6-localhost\n{address} {}\n", w.name);
    for (key, ip, _) in services {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        out.push_str(&format!("{ip} {name}.{ns}.svc.cluster.local {name}.{ns}.svc {name}.{ns}"));
        if ns == w.namespace {
            out.push_str(&format!(" {name}"));
        }
        out.push('\n');
    }
    out
}

impl Plan {
    /// The network namespace of `w` in this run.
    fn netns(&self, w: &Workload) -> String {
        format!("weft-{}-{}-{}", self.id, w.namespace, w.name)
    }
}

/// The workload's directory under the run (bootstrap, token; the processes' working
/// directory), made on first use and readable by the sidecar's UID.
fn workload_dir(run_dir: &Path, w: &Workload) -> Result<PathBuf, LocalError> {
    let wdir = run_dir.join("workloads").join(format!("{}.{}", w.namespace, w.name));
    std::fs::create_dir_all(&wdir).map_err(io_err(&wdir))?;
    std::fs::set_permissions(&wdir, std::fs::Permissions::from_mode(0o755)).map_err(io_err(&wdir))?;
    Ok(wdir)
}

fn resource_key(r: &serde_yaml::Value) -> String {
    let meta = r.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(|n| n.as_str()).unwrap_or_default();
    let ns = meta.and_then(|m| m.get("namespace")).and_then(|n| n.as_str()).unwrap_or("default");
    format!("{ns}/{name}")
}

/// A short, stable name part for this run directory (bridge and veth names are limited to
/// 15 characters, and two runs must not collide).
fn short_id(run_dir: &Path) -> String {
    format!("{:06x}", addr::fnv(&run_dir.display().to_string()) & 0xff_ffff)
}

fn write_private(path: &Path, bytes: &[u8], owner: Option<u32>) -> Result<(), LocalError> {
    std::fs::write(path, bytes).map_err(io_err(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400)).map_err(io_err(path))?;
    if let Some(uid) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(uid)).map_err(io_err(path))?;
    }
    Ok(())
}

/// Whether a user other than root could run `path` (every directory searchable, file o+x).
fn executable_by_others(path: &Path) -> bool {
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode()).unwrap_or(0);
    mode(path) & 0o001 != 0 && path.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()).all(|a| mode(a) & 0o001 != 0)
}

/// Polls `ready` until true, failing early if `proc` exits (with the end of its log).
fn wait_until(limit: Duration, what: &str, proc: &crate::state::Proc, mut ready: impl FnMut() -> bool) -> Result<(), LocalError> {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return Ok(());
        }
        if !process::alive(proc) {
            return Err(LocalError::Environment(format!(
                "{} exited while waiting for {what}; its log ends:\n{}",
                proc.role,
                tail(&proc.log, 15)
            )));
        }
        if Instant::now() > deadline {
            return Err(LocalError::Timeout(format!(
                "gave up after {}s waiting for {what}; the log of {} ends:\n{}",
                limit.as_secs(),
                proc.role,
                tail(&proc.log, 15)
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
