//! `weft analyze`: istioctl analyze without a cluster. Inputs are config directories, files or
//! stdin; output is istioctl's log lines, JSON or YAML, with Istio's message codes.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use weft_api::{Diagnostic, Level};

#[derive(clap::Args)]
pub struct AnalyzeArgs {
    /// Files or directories to analyze (`-` for stdin), as istioctl takes them.
    files: Vec<PathBuf>,
    /// A file or directory to analyze (`-` for stdin); may be repeated.
    #[arg(short = 'f', long = "filename")]
    filename: Vec<PathBuf>,
    /// A config directory, read as `weft control-plane --config-dir` reads it.
    #[arg(long = "config-dir")]
    config_dir: Option<PathBuf>,
    /// MeshConfig file, as `weft control-plane --mesh`.
    #[arg(long)]
    mesh: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "log")]
    output: Output,
    /// Leave out messages with this code on this resource: `CODE=Kind name.namespace`, as
    /// istioctl; `*` matches any run of characters (`IST0118=*`, `IST0101=VirtualService *.default`).
    /// May be repeated.
    #[arg(short = 'S', long = "suppress")]
    suppress: Vec<String>,
    /// Analyze what a Kubernetes API server holds, and the pitfalls on the cluster (namespaces
    /// not labelled, pods without sidecars, the injection webhook, UID 1337): in-cluster
    /// credentials, or --kubeconfig.
    #[arg(long)]
    kube: bool,
    /// The kubeconfig for --kube (implies it).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// A proxy's admin address (`HOST:PORT`, its port 15000): the outbound calls its
    /// REGISTRY_ONLY policy refused are reported, with the ServiceEntry that would allow each.
    /// May be repeated.
    #[arg(long = "proxy")]
    proxies: Vec<std::net::SocketAddr>,
    /// The lowest level that makes the exit status non-zero (79).
    #[arg(long = "failure-threshold", value_enum, default_value = "error")]
    failure_threshold: Threshold,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Log,
    Json,
    Yaml,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Threshold {
    Error,
    Warning,
}

/// istioctl's exit status when analysis finds messages at or above the failure threshold.
const FOUND_ISSUES: u8 = 79;

struct Suppression {
    code: String,
    resource: String,
}

impl Suppression {
    fn parse(s: &str) -> Result<Suppression, String> {
        let (code, resource) = s.split_once('=').ok_or_else(|| format!("--suppress {s:?}: expected CODE=Kind name.namespace"))?;
        if code.is_empty() || resource.is_empty() {
            return Err(format!("--suppress {s:?}: expected CODE=Kind name.namespace"));
        }
        Ok(Suppression { code: code.to_string(), resource: resource.to_string() })
    }

    fn matches(&self, d: &Diagnostic) -> bool {
        d.code == Some(self.code.as_str()) && d.resource.as_deref().map(istio_origin).is_some_and(|r| glob(&self.resource, &r))
    }
}

/// `Kind namespace/name` → istioctl's `Kind name.namespace`.
fn istio_origin(resource: &str) -> String {
    match resource.split_once(' ').and_then(|(kind, rest)| rest.split_once('/').map(|(ns, name)| (kind, ns, name))) {
        Some((kind, ns, name)) => format!("{kind} {name}.{ns}"),
        None => resource.to_string(),
    }
}

/// `*` matches any run of characters; everything else is literal.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else { return pattern == text };
    if parts.len() == 1 {
        return pattern == text;
    }
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Everything the inputs hold, loaded as the control plane loads it. Files in `config_dir` are
/// named relative to it, as the control plane's log names them; other inputs as given.
fn load(config_dir: Option<&PathBuf>, inputs: &[PathBuf]) -> Result<weft_control::store::Snapshot, String> {
    let mut snap = match config_dir {
        Some(dir) => weft_control::store::load_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?,
        None => weft_control::store::Snapshot::default(),
    };
    let mut ingresses = Vec::new();
    let mut gateway_api = Vec::new();
    for input in inputs {
        let (text, shown) = if input.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| format!("cannot read stdin: {e}"))?;
            (text, "<stdin>".to_string())
        } else if input.is_dir() {
            let dir = weft_control::store::load_dir(input).map_err(|e| format!("cannot read {}: {e}", input.display()))?;
            let prefix = input.display().to_string();
            snap.objects.extend(dir.objects);
            snap.gateway_api.extend(dir.gateway_api);
            // load_dir names files relative to the directory; name them as the user can find them.
            snap.diagnostics.extend(dir.diagnostics.into_iter().map(|mut d| {
                d.file = format!("{}/{}", prefix.trim_end_matches('/'), d.file);
                d
            }));
            continue;
        } else {
            let text = std::fs::read_to_string(input).map_err(|e| format!("cannot read {}: {e}", input.display()))?;
            (text, input.display().to_string())
        };
        let mut loaded = weft_api::load_text(&text, &shown);
        if text.contains(weft_local::spec::API_VERSION) {
            local_file(&text, &shown, &mut loaded);
        }
        snap.objects.extend(loaded.objects);
        snap.diagnostics.extend(loaded.diagnostics);
        ingresses.extend(loaded.ingress_docs);
        gateway_api.extend(loaded.gateway_api_docs);
    }
    weft_api::ingress::expand(&mut snap.objects, &mut snap.diagnostics, &ingresses);
    let statuses = weft_api::gateway_api::expand(&mut snap.objects, &mut snap.diagnostics, &gateway_api);
    snap.gateway_api.extend(statuses);
    // Duplicates across inputs; load_dir has already reported those inside one directory.
    let (objects, mut diagnostics) = (std::mem::take(&mut snap.objects), std::mem::take(&mut snap.diagnostics));
    let mut objects = objects;
    weft_api::drop_duplicates(&mut objects, &mut diagnostics);
    let mut seen = BTreeSet::new();
    diagnostics.retain(|d| seen.insert(d.to_string()));
    Ok(weft_control::store::Snapshot { objects, diagnostics, pods: Vec::new(), gateway_api: snap.gateway_api })
}

/// A `weft up` file: its Workloads are checked as `weft up` checks them and stand in the
/// model as the WorkloadEntries `weft up` would write (at documentation addresses, 192.0.2.x),
/// so subsets and services see them.
fn local_file(text: &str, file: &str, loaded: &mut weft_api::Loaded) {
    // `weft up` reads its own kinds; the control plane's "not a kind it reads" is beside the point.
    loaded.diagnostics.retain(|d| !(d.code == Some(weft_api::codes::UNREAD_KIND) && d.message.starts_with(weft_local::spec::API_VERSION)));
    match weft_local::spec::parse(text, file) {
        Ok(mesh) => {
            for (i, w) in mesh.workloads.iter().enumerate() {
                let address = format!("192.0.2.{}", i % 254 + 1);
                let entry = weft_local::spec::workload_entry(w, &address, w.labels.clone());
                let yaml = serde_yaml::to_string(&entry).unwrap_or_default();
                loaded.objects.extend(weft_api::load_text(&yaml, file).objects);
            }
        }
        Err(errors) => {
            for e in errors {
                // `file:line: …` as weft up words it; the resources' own errors are already here.
                let rest = e.strip_prefix(file).and_then(|r| r.strip_prefix(':')).unwrap_or(&e);
                let (line, message) = match rest.split_once(": ") {
                    Some((n, m)) if n.chars().all(|c| c.is_ascii_digit()) => (n.parse().ok(), m.to_string()),
                    _ => (None, rest.trim_start().to_string()),
                };
                let d = Diagnostic {
                    level: Level::Error,
                    file: file.to_string(),
                    line,
                    resource: None,
                    field_path: String::new(),
                    message,
                    code: Some(weft_api::codes::SCHEMA_ERROR),
                };
                if !loaded.diagnostics.iter().any(|x| x.to_string() == d.to_string()) {
                    loaded.diagnostics.push(d);
                }
            }
        }
    }
}

fn level_word(l: Level) -> &'static str {
    match l {
        Level::Error => "Error",
        Level::Warning => "Warning",
    }
}

fn as_json(d: &Diagnostic) -> serde_json::Value {
    let mut v = serde_json::json!({
        "code": d.code,
        "level": level_word(d.level),
        "origin": d.resource.as_deref().map(istio_origin),
        "reference": d.line.map(|l| format!("{}:{l}", d.file)).unwrap_or_else(|| d.file.clone()),
        "fieldPath": (!d.field_path.is_empty()).then_some(&d.field_path),
        "message": d.message,
    });
    if let Some(code) = d.code.filter(|c| c.starts_with("IST")) {
        v["documentationUrl"] = format!("https://istio.io/latest/docs/reference/config/analysis/{}/", code.to_lowercase()).into();
    }
    v
}

pub fn analyze(args: AnalyzeArgs) -> ExitCode {
    let suppressions: Vec<Suppression> = match args.suppress.iter().map(|s| Suppression::parse(s)).collect() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("weft analyze: {e}");
            return ExitCode::from(2);
        }
    };
    let mut inputs: Vec<PathBuf> = args.files.clone();
    inputs.extend(args.filename.iter().cloned());
    let kube = args.kube || args.kubeconfig.is_some();
    if inputs.is_empty() && args.config_dir.is_none() && !kube && args.proxies.is_empty() {
        eprintln!("weft analyze: nothing to analyze: give files or directories (-f FILE, `-` for stdin), --config-dir DIR, --kube or --proxy ADMIN");
        return ExitCode::from(2);
    }
    let (mesh, mesh_warnings) = match crate::control_plane_cmd::load_mesh(args.mesh.as_ref()) {
        Ok(m) => m,
        Err(errors) => (Default::default(), errors),
    };
    let snapshot = match load(args.config_dir.as_ref(), &inputs) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("weft analyze: {e}");
            return ExitCode::from(1);
        }
    };
    let mut snapshot = snapshot;
    let mut cluster = Vec::new();
    if kube {
        let read = async {
            let client = weft_kube::client(args.kubeconfig.as_deref()).await?;
            let view = weft_kube::source::once(client.clone(), std::time::Duration::from_secs(30)).await?;
            let pitfalls = weft_kube::pitfalls::check(&client, &view.objects, "istio-system").await?;
            Ok::<_, String>((view, pitfalls))
        };
        let rt = match crate::current_thread_runtime() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("weft analyze: {e}");
                return ExitCode::from(1);
            }
        };
        match rt.block_on(read) {
            Ok((view, pitfalls)) => {
                snapshot.objects.extend(view.objects);
                snapshot.diagnostics.extend(view.diagnostics);
                snapshot.pods = view.pods;
                snapshot.gateway_api.extend(view.gateway_api);
                weft_api::drop_duplicates(&mut snapshot.objects, &mut snapshot.diagnostics);
                cluster = pitfalls;
            }
            Err(e) => {
                eprintln!("weft analyze: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let model = weft_control::model::Model::build_with_pods(&snapshot.objects, &snapshot.pods, mesh);
    let mut diags = mesh_warnings;
    diags.extend(cluster);
    let mut blocked = Vec::new();
    for admin in &args.proxies {
        match blocked_calls(*admin) {
            Ok(calls) => blocked.extend(calls),
            Err(e) => {
                eprintln!("weft analyze: {e}");
                return ExitCode::from(1);
            }
        }
    }
    diags.extend(blocked.iter().map(|b| b.diagnostic()));
    diags.extend(weft_control::analyze::analyze(&snapshot, &model));
    diags.retain(|d| !suppressions.iter().any(|s| s.matches(d)));
    let failing =
        diags.iter().any(|d| d.level == Level::Error || (args.failure_threshold == Threshold::Warning && d.level == Level::Warning));
    match args.output {
        Output::Log => {
            for d in &diags {
                say!("{} [{}] {d}", level_word(d.level), d.code.unwrap_or("-"));
            }
            suggest_conversions(&diags);
            suggest_service_entries(&blocked);
            if !snapshot.gateway_api.is_empty() {
                say!("\nGateway API status (as weft would write it):");
                for s in &snapshot.gateway_api {
                    say!("{s}");
                }
            }
            if diags.is_empty() {
                let mut names: Vec<String> = args.config_dir.iter().chain(&inputs).map(|p| p.display().to_string()).collect();
                if kube {
                    names.push("the cluster".into());
                }
                say!("✔ No validation issues found when analyzing {}.", names.join(", "));
            }
        }
        Output::Json | Output::Yaml => {
            let list = serde_json::Value::Array(diags.iter().map(as_json).collect());
            let text = if args.output == Output::Json {
                serde_json::to_string_pretty(&list).unwrap_or_default()
            } else {
                serde_yaml::to_string(&list).unwrap_or_default()
            };
            say!("{text}");
        }
    }
    if failing {
        ExitCode::from(FOUND_ISSUES)
    } else {
        ExitCode::SUCCESS
    }
}

/// Outbound calls one proxy's REGISTRY_ONLY policy refused (its admin's `/blocked`).
struct Blocked {
    proxy: std::net::SocketAddr,
    host: String,
    port: u16,
    protocol: String,
    calls: u64,
}

impl Blocked {
    fn diagnostic(&self) -> Diagnostic {
        Diagnostic {
            level: Level::Warning,
            file: format!("proxy {}", self.proxy),
            line: None,
            resource: None,
            field_path: String::new(),
            message: format!(
                "{} call{} to {}:{} ({}) refused: outboundTrafficPolicy is REGISTRY_ONLY and no ServiceEntry declares it",
                self.calls,
                if self.calls == 1 { "" } else { "s" },
                self.host,
                self.port,
                self.protocol
            ),
            code: Some(weft_api::codes::BLOCKED_OUTBOUND),
        }
    }
}

fn blocked_calls(admin: std::net::SocketAddr) -> Result<Vec<Blocked>, String> {
    let (status, body) =
        crate::ops_cmd::http_get(admin, "/blocked").map_err(|e| format!("cannot reach the proxy's admin at {admin}: {e}"))?;
    if status != 200 {
        return Err(format!("the proxy's admin at {admin} answered {status} for /blocked (is it a weft proxy?)"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{admin}/blocked: {e}"))?;
    Ok(v["blocked"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(Blocked {
                proxy: admin,
                host: e["host"].as_str()?.to_owned(),
                port: u16::try_from(e["port"].as_u64()?).ok()?,
                protocol: e["protocol"].as_str()?.to_owned(),
                calls: e["calls"].as_u64().unwrap_or(0),
            })
        })
        .collect())
}

/// The ServiceEntry that would allow each blocked destination, one per host with its ports:
/// a name resolved by DNS; an address declared as such (`addresses`, resolution NONE).
fn suggest_service_entries(blocked: &[Blocked]) {
    let mut by_host: std::collections::BTreeMap<&str, BTreeSet<(u16, &str)>> = Default::default();
    for b in blocked {
        by_host.entry(&b.host).or_default().insert((b.port, &b.protocol));
    }
    if by_host.is_empty() {
        return;
    }
    say!("\nServiceEntries that would allow the refused calls (check each host is one the apps should reach):\n");
    let mut docs = Vec::new();
    for (host, ports) in by_host {
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        let name: String = host.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let ports: Vec<serde_json::Value> = ports
            .iter()
            .map(|(port, protocol)| serde_json::json!({"number": port, "name": format!("{}-{port}", protocol.to_ascii_lowercase()), "protocol": protocol}))
            .collect();
        let mut spec = serde_json::json!({"location": "MESH_EXTERNAL", "ports": ports});
        if is_ip {
            spec["hosts"] = serde_json::json!([format!("{name}.external")]);
            spec["addresses"] = serde_json::json!([host]);
            spec["resolution"] = serde_json::json!("NONE");
        } else {
            spec["hosts"] = serde_json::json!([host]);
            spec["resolution"] = serde_json::json!("DNS");
        }
        let se = serde_json::json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": name.trim_matches('-')}, "spec": spec});
        docs.push(serde_yaml::to_string(&se).unwrap_or_default());
    }
    say!("{}", docs.join("---\n").trim_end());
}

/// For files refused for Istio 0.x routing: the v1 resources `weft convert` makes of their
/// 0.x resources, printed after the messages so the fix is on the screen.
fn suggest_conversions(diags: &[Diagnostic]) {
    let mut files: Vec<&str> =
        diags.iter().filter(|d| d.code == Some(weft_api::load::codes::LEGACY_ROUTING)).map(|d| d.file.as_str()).collect();
    files.dedup();
    for file in files {
        // Stdin cannot be read again; the message already says to run `weft convert`.
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        let c = weft_api::legacy::convert(&[(text, file.to_string())]);
        if c.diagnostics.is_empty() {
            say!("\nThe v1 resources that mean the same as {file}'s Istio 0.x routing (`weft convert -f {file}`):\n");
            say!("{}", c.converted_yaml().trim_end());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppressions_match_istioctl_resource_names_with_wildcards() {
        let d = Diagnostic {
            level: Level::Warning,
            file: "a.yaml".into(),
            line: Some(3),
            resource: Some("VirtualService default/reviews".into()),
            field_path: String::new(),
            message: "m".into(),
            code: Some("IST0101"),
        };
        let s = |t: &str| Suppression::parse(t).expect("valid");
        assert!(s("IST0101=VirtualService reviews.default").matches(&d));
        assert!(s("IST0101=VirtualService *.default").matches(&d));
        assert!(s("IST0101=*").matches(&d));
        assert!(!s("IST0102=*").matches(&d));
        assert!(!s("IST0101=VirtualService *.prod").matches(&d));
        assert!(Suppression::parse("IST0101").is_err());
    }
}
