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
    #[arg(short = 'o', long = "output", default_value = "short")]
    output: Format,
    #[arg(long = "control-plane", default_value = "127.0.0.1:15014")]
    control_plane: SocketAddr,
}

/// A GET against the loopback debug API; plain HTTP/1.0 keeps this dependency-free.
fn get(addr: SocketAddr, path: &str) -> Result<(u16, Value), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("cannot reach the control plane at {addr}: {e} (is `weft control-plane` running? see --control-plane)"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed reply from the control plane")?;
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let v = serde_json::from_str(body).map_err(|e| format!("malformed reply from the control plane: {e}"))?;
    Ok((status, v))
}

pub fn proxy_status(args: StatusArgs) -> ExitCode {
    let (_, v) = match get(args.control_plane, "/debug/syncz") {
        Ok(x) => x,
        Err(e) => {
            eprintln!("weft proxy-status: {e}");
            return ExitCode::from(1);
        }
    };
    let mut rows = vec![["NAME", "CDS", "EDS", "LDS", "RDS", "VERSION"].map(String::from).to_vec()];
    let mut nacks = Vec::new();
    for p in v["proxies"].as_array().into_iter().flatten() {
        let name = p["proxy"].as_str().unwrap_or_default().to_string();
        if args.proxy.as_ref().is_some_and(|want| !name.starts_with(want.as_str())) {
            continue;
        }
        let mut row = vec![name.clone()];
        for t in ["CDS", "EDS", "LDS", "RDS"] {
            let st = &p["types"][t];
            row.push(st["state"].as_str().unwrap_or("?").to_string());
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
    let (status, v) = match get(args.control_plane, &format!("/debug/config_dump?proxyID={}", args.proxy)) {
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
        Section::All => &["clusters", "endpoints", "listeners", "routes"],
    };
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
            let mut rows = vec![["NAME", "VIRTUAL SERVICE", "DOMAINS", "MATCH"].map(String::from).to_vec()];
            for r in list {
                for vh in r["virtual_hosts"].as_array().into_iter().flatten() {
                    let domains = vh["domains"]
                        .as_array()
                        .map(|d| d.iter().filter_map(|x| x.as_str()).find(|x| !x.contains(':')).unwrap_or("*").to_string())
                        .unwrap_or_default();
                    let first = &vh["routes"][0]["match"];
                    let m = first.get("prefix").or(first.get("path")).map(s).unwrap_or_else(|| "/*".into());
                    rows.push(vec![s(&r["name"]), s(&vh["name"]), domains, m]);
                }
            }
            rows
        }
        _ => {
            let mut rows = vec![["ENDPOINT", "STATUS", "CLUSTER"].map(String::from).to_vec()];
            for e in list {
                for lb in e["endpoints"][0]["lb_endpoints"].as_array().into_iter().flatten() {
                    let sa = &lb["endpoint"]["address"]["socket_address"];
                    rows.push(vec![format!("{}:{}", s(&sa["address"]), s(&sa["port_value"])), "HEALTHY".into(), s(&e["cluster_name"])]);
                }
            }
            rows
        }
    }
}
