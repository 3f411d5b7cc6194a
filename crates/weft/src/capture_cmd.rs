//! `weft capture`: istio-iptables' job, with its flag names. Every value is checked before a
//! rule is written; `--dry-run` prints what would be written; `--cleanup` takes it all out.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Args;
use weft_capture::{Backend, CaptureConfig, RawOptions, Ruleset, Target};

/// Defaults are what Istio's injector passes to istio-iptables (`-i '*' -b '*' -d
/// 15090,15021,15020`), so a bare `weft capture` captures the way an injected pod does.
#[derive(Args, Debug)]
pub struct CaptureArgs {
    /// Port outbound traffic is redirected to.
    #[arg(short = 'p', long = "envoy-port", default_value = "15001")]
    proxy_port: String,
    /// Port inbound traffic is redirected to.
    #[arg(short = 'z', long = "inbound-capture-port", default_value = "15006")]
    inbound_capture_port: String,
    /// UIDs whose traffic is never captured (the proxy's), comma separated.
    #[arg(short = 'u', long = "proxy-uid", default_value = "1337")]
    proxy_uid: String,
    /// GIDs whose traffic is never captured (the proxy's), comma separated.
    #[arg(short = 'g', long = "proxy-gid", default_value = "1337")]
    proxy_gid: String,
    /// Inbound interception: REDIRECT or TPROXY.
    #[arg(short = 'm', long = "istio-inbound-interception-mode", default_value = "REDIRECT")]
    mode: String,
    /// Inbound ports to capture: a comma-separated list, `*` for all, empty for none.
    #[arg(short = 'b', long = "istio-inbound-ports", default_value = "*")]
    inbound_ports: String,
    /// Inbound ports left alone when -b is `*`.
    #[arg(short = 'd', long = "istio-local-exclude-ports", default_value = "15090,15021,15020")]
    inbound_ports_exclude: String,
    /// Outbound destinations to capture (includeOutboundIPRanges): CIDRs, `*` for all, empty for none.
    #[arg(short = 'i', long = "istio-service-cidr", default_value = "*")]
    outbound_ranges: String,
    /// Outbound destinations never captured (excludeOutboundIPRanges), CIDRs.
    #[arg(short = 'x', long = "istio-service-exclude-cidr", default_value = "")]
    outbound_ranges_exclude: String,
    /// Outbound ports never captured (excludeOutboundPorts).
    #[arg(short = 'o', long = "istio-local-outbound-ports-exclude", default_value = "")]
    outbound_ports_exclude: String,
    /// Outbound ports always captured, whatever the destination.
    #[arg(short = 'q', long = "istio-outbound-ports", default_value = "")]
    outbound_ports_include: String,
    /// Interfaces whose traffic is never captured.
    #[arg(short = 'c', long = "istio-exclude-interfaces", default_value = "")]
    exclude_interfaces: String,
    /// TPROXY mark.
    #[arg(short = 't', long = "istio-inbound-tproxy-mark", default_value = "1337")]
    tproxy_mark: String,
    /// Routing table for TPROXY-marked packets.
    #[arg(short = 'r', long = "istio-inbound-tproxy-route-table", default_value = "133")]
    tproxy_route_table: String,
    /// Send DNS (port 53) to the agent's DNS proxy on 15053.
    #[arg(long = "redirect-dns")]
    redirect_dns: bool,
    /// With --redirect-dns: every DNS server, not only those in /etc/resolv.conf.
    #[arg(long = "capture-all-dns")]
    capture_all_dns: bool,
    /// Print the rules (iptables-restore input and `ip` commands) instead of writing them.
    #[arg(long = "dry-run")]
    dry_run: bool,
    /// Write nothing: check that the rules these flags give are in place (as the CNI plugin
    /// writes them), and fail listing each difference — the job of Istio's istio-validation
    /// init container, which the injector adds instead of istio-init when CNI is on
    #[arg(long, conflicts_with_all = ["cleanup", "dry_run"])]
    verify: bool,
    /// Remove every capture rule and chain instead of writing them (istio-clean-iptables).
    #[arg(long)]
    cleanup: bool,
    /// iptables backend: legacy, nft, or auto (the one the host already uses).
    #[arg(long = "iptables-backend", default_value = "auto")]
    backend: String,
}

impl CaptureArgs {
    /// The options as istio-iptables takes them, with the nameservers DNS capture covers.
    fn raw(&self, dns_servers: Vec<String>) -> RawOptions {
        RawOptions {
            proxy_port: self.proxy_port.clone(),
            inbound_capture_port: self.inbound_capture_port.clone(),
            proxy_uid: self.proxy_uid.clone(),
            proxy_gid: self.proxy_gid.clone(),
            mode: self.mode.clone(),
            inbound_ports: self.inbound_ports.clone(),
            inbound_ports_exclude: self.inbound_ports_exclude.clone(),
            outbound_ranges: self.outbound_ranges.clone(),
            outbound_ranges_exclude: self.outbound_ranges_exclude.clone(),
            outbound_ports_exclude: self.outbound_ports_exclude.clone(),
            outbound_ports_include: self.outbound_ports_include.clone(),
            exclude_interfaces: self.exclude_interfaces.clone(),
            tproxy_mark: self.tproxy_mark.clone(),
            tproxy_route_table: self.tproxy_route_table.clone(),
            redirect_dns: self.redirect_dns,
            capture_all_dns: self.capture_all_dns,
            dns_servers,
        }
    }
}

/// The options in a `weft capture …` command line, as the injector writes it into a pod's
/// `istio-init` or `istio-validation` container (`args`, starting with `capture`): what the CNI
/// plugin writes for the pod is exactly what that container checks.
pub fn options_of(args: &[String]) -> Result<RawOptions, String> {
    #[derive(clap::Parser)]
    #[command(name = "weft", no_binary_name = true)]
    struct Line {
        #[command(subcommand)]
        command: Sub,
    }
    #[derive(clap::Subcommand)]
    enum Sub {
        Capture(CaptureArgs),
    }
    use clap::Parser as _;
    let Line { command: Sub::Capture(args) } = Line::try_parse_from(args).map_err(|e| e.to_string())?;
    Ok(args.raw(Vec::new()))
}

pub fn run(args: CaptureArgs) -> ExitCode {
    match capture(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft capture: {e}");
            ExitCode::from(2)
        }
    }
}

fn capture(args: CaptureArgs) -> Result<(), String> {
    let backend = Backend::parse(&args.backend)?;
    let dns_servers = if args.redirect_dns && !args.capture_all_dns {
        let text = std::fs::read_to_string("/etc/resolv.conf").map_err(|e| format!("--redirect-dns: /etc/resolv.conf: {e}"))?;
        weft_capture::options::resolv_conf_servers(&text)
    } else {
        Vec::new()
    };
    let raw = args.raw(dns_servers);
    let cfg = CaptureConfig::from_raw(&raw).map_err(|e| e.to_string())?;
    let rules = Ruleset::build(&cfg);
    if args.dry_run && !args.cleanup {
        let _ = write!(std::io::stdout(), "{}", rules.render());
        return Ok(());
    }
    let (backend, why) = match backend {
        Some(b) => (b, "chosen by --iptables-backend".to_owned()),
        None => Backend::detect(&Target::Current).map_err(|e| e.to_string())?,
    };
    if args.cleanup {
        if args.dry_run {
            say!("would remove the ISTIO_* chains and weft's rules with iptables-{} ({why})", backend.name());
            return Ok(());
        }
        weft_capture::cleanup(&cfg, backend, &Target::Current).map_err(|e| e.to_string())?;
        eprintln!("weft capture: capture rules removed (iptables-{}, {why})", backend.name());
        return Ok(());
    }
    if args.verify {
        let problems = weft_capture::verify(&rules, backend, &Target::Current).map_err(|e| e.to_string())?;
        if !problems.is_empty() {
            return Err(format!("capture is not in place (was the CNI plugin run for this pod?): {}", problems.join("; ")));
        }
        eprintln!("weft capture: the {} capture rules are in place (iptables-{}, {why})", rules.rules.len(), backend.name());
        return Ok(());
    }
    weft_capture::apply(&rules, backend, &Target::Current).map_err(|e| e.to_string())?;
    eprintln!("weft capture: {} rules written with iptables-{} ({why})", rules.rules.len(), backend.name());
    Ok(())
}
