//! istioctl's operator views: `proxy-status`, `proxy-config`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The control plane's debug address.
    #[arg(long = "control-plane", default_value = "127.0.0.1:15014")]
    control_plane: SocketAddr,
    /// Show only this proxy.
    proxy: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Section {
    Clusters,
    Listeners,
    Routes,
    Endpoints,
    /// The SDS secrets the control plane sends (a gateway's credentialName), by name only.
    Secret,
    All,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Short,
    Json,
    Yaml,
}

#[derive(clap::Args)]
pub struct ConfigArgs {
    section: Section,
    /// `<pod>.<namespace>`, the pod name, or the full node ID.
    proxy: String,
    /// `short` tables as istioctl prints them, or the config itself as JSON or YAML.
    #[arg(short = 'o', long = "output", default_value = "short")]
    output: Format,
    /// The control plane's debug address.
    #[arg(long = "control-plane", default_value = "127.0.0.1:15014")]
    control_plane: SocketAddr,
    /// The proxy's admin address, where `endpoints` reads each endpoint's health. Without it,
    /// a proxy that `weft up` started is found through its run directory.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// The `weft up` run directory [default: as `weft up`'s].
    #[arg(long = "run-dir")]
    run_dir: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
pub struct AdminGetArgs {
    admin: SocketAddr,
    path: String,
}

/// A GET over plain HTTP/1.0 (dependency-free); the status and the body.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), std::io::Error> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    // One write: some peers read one segment and close.
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

/// A GET against the loopback debug API.
fn get(addr: SocketAddr, path: &str) -> Result<(u16, Value), String> {
    let (status, body) = http_get(addr, path)
        .map_err(|e| format!("cannot reach the control plane at {addr}: {e} (is `weft control-plane` running? see --control-plane)"))?;
    let v = serde_json::from_str(&body).map_err(|e| format!("malformed reply from the control plane: {e}"))?;
    Ok((status, v))
}

/// `weft admin-get ADDR PATH` (hidden): prints one admin page. `proxy-config` runs it inside a
/// sidecar's network namespace, where the admin port listens on loopback.
pub fn admin_get(args: AdminGetArgs) -> ExitCode {
    match http_get(args.admin, &args.path) {
        Ok((200, body)) => {
            say!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("weft admin-get: {} answered {status}: {}", args.admin, body.trim());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("weft admin-get: cannot reach {}: {e}", args.admin);
            ExitCode::from(1)
        }
    }
}

/// The proxy's own `/clusters?format=json`: what it holds and how healthy each host is.
fn proxy_clusters(args: &ConfigArgs, node_id: &str) -> Result<Value, String> {
    const PATH: &str = "/clusters?format=json";
    let parse = |body: &str| serde_json::from_str::<Value>(body).map_err(|e| format!("malformed /clusters from the proxy: {e}"));
    if let Some(admin) = args.admin {
        return match http_get(admin, PATH) {
            Ok((200, body)) => parse(&body),
            Ok((status, _)) => Err(format!("the proxy's admin at {admin} answered {status}")),
            Err(e) => Err(format!("cannot reach the proxy's admin at {admin}: {e}")),
        };
    }
    // A sidecar `weft up` started: explicit mode binds its admin on its mesh address; in a
    // network namespace it listens on that namespace's loopback, reached from inside it.
    let ip = node_id.split('~').nth(1).unwrap_or_default();
    let dir = crate::local_cmd::run_dir(args.run_dir.as_ref());
    let state = weft_local::state::State::load(&dir).map_err(|e| e.to_string())?;
    let Some(w) = state.as_ref().and_then(|s| s.workloads.iter().find(|w| w.address == ip)) else {
        return Err(format!("cannot find the admin port of proxy {node_id}: pass --admin HOST:PORT (its port 15000)"));
    };
    let port = weft_local::bootstrap::ADMIN_PORT;
    match &w.netns {
        None => {
            let admin: SocketAddr = format!("{ip}:{port}").parse().map_err(|e| format!("{ip}: {e}"))?;
            let (_, body) = http_get(admin, PATH).map_err(|e| format!("cannot reach the proxy's admin at {admin}: {e}"))?;
            parse(&body)
        }
        Some(ns) => {
            let me = std::env::current_exe().map_err(|e| format!("cannot find the weft binary: {e}"))?;
            let out = std::process::Command::new("nsenter")
                .arg(format!("--net=/run/netns/{ns}"))
                .arg(me)
                .args(["admin-get", &format!("127.0.0.1:{port}"), PATH])
                .output()
                .map_err(|e| format!("cannot run nsenter (util-linux) to reach the admin port in {ns}: {e}"))?;
            if !out.status.success() {
                return Err(format!("cannot read the admin port in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
            parse(&String::from_utf8_lossy(&out.stdout))
        }
    }
}

pub fn proxy_status(args: StatusArgs) -> ExitCode {
    let (_, v) = match get(args.control_plane, "/debug/syncz") {
        Ok(x) => x,
        Err(e) => {
            eprintln!("weft proxy-status: {e}");
            return ExitCode::from(1);
        }
    };
    let mut rows = vec![["NAME", "CDS", "EDS", "LDS", "RDS", "SDS", "VERSION"].map(String::from).to_vec()];
    let mut nacks = Vec::new();
    for p in v["proxies"].as_array().into_iter().flatten() {
        let name = p["proxy"].as_str().unwrap_or_default().to_string();
        if args.proxy.as_ref().is_some_and(|want| !name.starts_with(want.as_str())) {
            continue;
        }
        let mut row = vec![name.clone()];
        for t in ["CDS", "EDS", "LDS", "RDS", "SDS"] {
            let st = &p["types"][t];
            // SDS is asked for only by gateways with a credentialName.
            let absent = if t == "SDS" { "-" } else { "?" };
            row.push(st["state"].as_str().unwrap_or(absent).to_string());
            if let Some(n) = st["nack"].as_str() {
                nacks.push(format!("{name} {t}: {n}"));
            }
        }
        row.push(v["version"].to_string());
        rows.push(row);
    }
    print_table(&rows);
    for n in nacks {
        say!("NACK {n}");
    }
    // Config meant to restrict traffic that no proxy enforces: the operator must see it here.
    let unenforced: Vec<&str> = v["unenforced"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    for u in &unenforced {
        say!("NOT ENFORCED {u}");
    }
    if unenforced.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_table(rows: &[Vec<String>]) {
    let cols = rows.first().map(Vec::len).unwrap_or(0);
    let widths: Vec<usize> = (0..cols).map(|c| rows.iter().map(|r| r.get(c).map(String::len).unwrap_or(0)).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        say!("{}", line.join("   ").trim_end());
    }
}

pub fn proxy_config(args: ConfigArgs) -> ExitCode {
    let (status, mut v) = match get(args.control_plane, &format!("/debug/config_dump?proxyID={}", args.proxy)) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("weft proxy-config: {e}");
            return ExitCode::from(1);
        }
    };
    if status != 200 {
        eprintln!("weft proxy-config: {}", v["error"].as_str().unwrap_or("failed"));
        return ExitCode::from(1);
    }
    let keys: &[&str] = match args.section {
        Section::Clusters => &["clusters"],
        Section::Listeners => &["listeners"],
        Section::Routes => &["routes"],
        Section::Endpoints => &["endpoints"],
        Section::Secret => &["secrets"],
        Section::All => &["clusters", "endpoints", "listeners", "routes", "secrets"],
    };
    // Endpoints and their health are what the proxy holds, as istioctl shows them, not what
    // the control plane sent.
    if keys.contains(&"endpoints") {
        let node_id = v["node_id"].as_str().unwrap_or_default().to_string();
        match proxy_clusters(&args, &node_id) {
            Ok(c) => v["endpoints"] = c["cluster_statuses"].clone(),
            Err(e) => {
                eprintln!("weft proxy-config: {e}");
                return ExitCode::from(1);
            }
        }
    }
    match args.output {
        Format::Json | Format::Yaml => {
            let picked: serde_json::Map<String, Value> = keys.iter().map(|k| (k.to_string(), v[*k].clone())).collect();
            let out = if matches!(args.output, Format::Json) {
                serde_json::to_string_pretty(&picked).unwrap_or_default()
            } else {
                serde_yaml::to_string(&picked).unwrap_or_default()
            };
            say!("{out}");
        }
        Format::Short => {
            for k in keys {
                print_table(&short_rows(k, &v[*k]));
                say!();
            }
        }
    }
    ExitCode::SUCCESS
}

fn short_rows(section: &str, items: &Value) -> Vec<Vec<String>> {
    let s = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| if v.is_null() { "-".into() } else { v.to_string() });
    let list = items.as_array().cloned().unwrap_or_default();
    match section {
        "secrets" => {
            let mut rows = vec![vec!["RESOURCE NAME".to_string()]];
            rows.extend(list.iter().map(|x| vec![s(&x["name"])]));
            rows
        }
        "clusters" => {
            let mut rows = vec![["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"].map(String::from).to_vec()];
            for c in list {
                let name = s(&c["name"]);
                let parts: Vec<&str> = name.split('|').collect();
                let row = if parts.len() == 4 {
                    vec![
                        parts[3].to_string(),
                        parts[1].to_string(),
                        if parts[2].is_empty() { "-".into() } else { parts[2].to_string() },
                        parts[0].to_string(),
                        s(&c["type"]),
                    ]
                } else {
                    vec![name, "-".into(), "-".into(), "-".into(), s(&c["type"])]
                };
                rows.push(row);
            }
            rows
        }
        "listeners" => {
            let mut rows = vec![["NAME", "ADDRESS", "PORT", "CHAINS"].map(String::from).to_vec()];
            for l in list {
                let sa = &l["address"]["socket_address"];
                rows.push(vec![
                    s(&l["name"]),
                    s(&sa["address"]),
                    s(&sa["port_value"]),
                    l["filter_chains"].as_array().map(Vec::len).unwrap_or(0).to_string(),
                ]);
            }
            rows
        }
        "routes" => {
            let mut rows = vec![["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"].map(String::from).to_vec()];
            for r in list {
                for vh in r["virtual_hosts"].as_array().into_iter().flatten() {
                    let domains: Vec<&str> = vh["domains"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    let domains = describe_domains(&domains);
                    let routes = vh["routes"].as_array().cloned().unwrap_or_default();
                    if routes.is_empty() {
                        rows.push(vec![s(&r["name"]), s(&vh["name"]), domains.clone(), "/*".into(), "404".into()]);
                    }
                    for route in routes.iter().filter(|rt| rt["route"]["cluster"] != "PassthroughCluster") {
                        rows.push(vec![
                            s(&r["name"]),
                            s(&vh["name"]),
                            domains.clone(),
                            describe_match(&route["match"]),
                            virtual_service(route),
                        ]);
                    }
                }
            }
            rows
        }
        _ => {
            let mut rows = vec![["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"].map(String::from).to_vec()];
            let mut found = Vec::new();
            for c in list {
                for h in c["host_statuses"].as_array().into_iter().flatten() {
                    let sa = &h["address"]["socket_address"];
                    let status = h["health_status"]["eds_health_status"].as_str().unwrap_or("UNKNOWN").to_string();
                    let outlier = if h["health_status"]["failed_outlier_check"] == true { "FAILED" } else { "OK" };
                    found.push(vec![format!("{}:{}", s(&sa["address"]), s(&sa["port_value"])), status, outlier.into(), s(&c["name"])]);
                }
            }
            found.sort();
            rows.extend(found);
            rows
        }
    }
}

/// istioctl's DOMAINS column: the names without a port, FQDN forms dropped when the short one
/// is there, at most two and a count of the rest. Where every name has a port (an HTTP proxy
/// listener's routes), the same rule over `name:port`, so the column is never blank.
fn describe_domains(domains: &[&str]) -> String {
    match domains {
        [] => return String::new(),
        [one] => return (*one).to_string(),
        _ => {}
    }
    let without_port: Vec<&str> =
        domains.iter().copied().filter(|d| !d.contains(':') || (d.matches(':').count() > 2 && d.ends_with(']'))).collect();
    let candidates = if without_port.is_empty() { domains.to_vec() } else { without_port };
    let split = |d: &str| match d.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && port.chars().all(|c| c.is_ascii_digit()) => (host.to_string(), format!(":{port}")),
        _ => (d.to_string(), String::new()),
    };
    let shown: Vec<&str> = candidates
        .iter()
        .copied()
        .filter(|d| {
            let (host, port) = split(d);
            let longer_form_of =
                |suffix: &str| host.strip_suffix(suffix).is_some_and(|short| candidates.contains(&format!("{short}{port}").as_str()));
            !longer_form_of(".svc.cluster.local") && !longer_form_of(".svc")
        })
        .collect();
    if shown.len() > 2 {
        format!("{} + {} more...", shown[..2].join(", "), shown.len() - 2)
    } else {
        shown.join(", ")
    }
}

/// istioctl's MATCH column: `/prefix*`, the exact path, or the regex.
fn describe_match(m: &Value) -> String {
    let mut conds = Vec::new();
    if let Some(p) = m["prefix"].as_str().filter(|p| !p.is_empty()) {
        conds.push(format!("{p}*"));
    }
    if let Some(p) = m["path_separated_prefix"].as_str() {
        conds.push(format!("PathPrefix:{p}"));
    }
    if let Some(p) = m["path"].as_str() {
        conds.push(p.to_string());
    }
    if let Some(r) = m["safe_regex"]["regex"].as_str() {
        conds.push(format!("regex {r}"));
    }
    conds.join(" ")
}

/// The VirtualService a route came from (`name.namespace`), from the metadata the control
/// plane writes as Istio does.
fn virtual_service(route: &Value) -> String {
    let Some(config) = route["metadata"]["filter_metadata"]["istio"]["config"].as_str() else { return String::new() };
    let pieces: Vec<&str> = config.split('/').collect();
    match pieces.as_slice() {
        ["", "apis", "networking.istio.io", _, "namespaces", ns, _, name] => format!("{name}.{ns}"),
        _ => "<unknown>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_shown_as_istioctl_shows_them() {
        assert_eq!(describe_domains(&["*"]), "*");
        assert_eq!(
            describe_domains(&[
                "reviews.default.svc.cluster.local",
                "reviews.default.svc.cluster.local:9080",
                "reviews",
                "reviews:9080",
                "reviews.default.svc",
                "reviews.default.svc:9080",
                "reviews.default",
                "reviews.default:9080",
                "10.96.0.7",
                "10.96.0.7:9080"
            ]),
            "reviews, reviews.default + 1 more..."
        );
        assert_eq!(describe_domains(&["a.example", "a.example:80"]), "a.example");
        assert_eq!(
            describe_domains(&[
                "reviews.default.svc.cluster.local:9080",
                "reviews:9080",
                "reviews.default.svc:9080",
                "reviews.default:9080"
            ]),
            "reviews:9080, reviews.default:9080"
        );
    }

    #[test]
    fn a_route_names_its_virtual_service() {
        let route = serde_json::json!({"match": {"prefix": "/"}, "metadata": {"filter_metadata": {"istio": {
            "config": "/apis/networking.istio.io/v1/namespaces/default/virtual-service/reviews"}}}});
        assert_eq!(virtual_service(&route), "reviews.default");
        assert_eq!(describe_match(&route["match"]), "/*");
        assert_eq!(describe_match(&serde_json::json!({"path": "/exact"})), "/exact");
        assert_eq!(virtual_service(&serde_json::json!({})), "");
    }
}
