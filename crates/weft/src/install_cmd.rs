//! `weft manifest generate`, `weft install`, `weft uninstall`, `weft verify-install`:
//! istioctl's install commands, from an IstioOperator file, a profile and `--set` paths.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use weft_kube::install::{apply, manifest, operator};

#[derive(clap::Args)]
pub struct InstallArgs {
    /// An IstioOperator file (install.istio.io/v1alpha1).
    #[arg(short = 'f', long = "filename")]
    filename: Option<PathBuf>,
    /// PATH=VALUE over the IstioOperator spec: `profile=demo`, `values.global.hub=…`,
    /// `meshConfig.accessLogFile=/dev/stdout`, `components.pilot.enabled=false`.
    #[arg(short = 's', long = "set")]
    set: Vec<String>,
    /// The kubeconfig (default: in-cluster credentials, then $KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// How long to wait for every component to be ready.
    #[arg(long = "readiness-timeout", default_value = "300s", value_parser = parse_duration)]
    readiness_timeout: Duration,
    /// Do not wait for readiness.
    #[arg(long = "skip-wait")]
    skip_wait: bool,
    /// Proceed without asking (istioctl's -y; weft never asks, so it changes nothing).
    #[arg(short = 'y', long = "skip-confirmation")]
    skip_confirmation: bool,
}

#[derive(clap::Args)]
pub struct ManifestArgs {
    #[command(subcommand)]
    command: ManifestCommand,
}

#[derive(clap::Subcommand)]
enum ManifestCommand {
    /// Print the Kubernetes objects an install would apply, as YAML.
    Generate(GenerateArgs),
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// An IstioOperator file (install.istio.io/v1alpha1).
    #[arg(short = 'f', long = "filename")]
    filename: Option<PathBuf>,
    /// PATH=VALUE over the IstioOperator spec (as `weft install --set`).
    #[arg(short = 's', long = "set")]
    set: Vec<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    weft_api::duration::parse_go_duration(s)
}

fn manifests(filename: Option<&PathBuf>, sets: &[String]) -> Result<Vec<manifest::Manifest>, String> {
    let text = match filename {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    let plan = operator::plan_from(text.as_deref(), sets).map_err(|e| match filename {
        Some(p) => format!("{}: {e}", p.display()),
        None => e,
    })?;
    manifest::generate(&plan)
}

pub fn manifest(args: ManifestArgs) -> ExitCode {
    let ManifestCommand::Generate(g) = args.command;
    match manifests(g.filename.as_ref(), &g.set) {
        Ok(m) => {
            use std::io::Write as _;
            let _ = std::io::stdout().write_all(manifest::to_yaml(&m).as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft manifest generate: {e}");
            ExitCode::from(2)
        }
    }
}

pub fn install(args: InstallArgs) -> ExitCode {
    let _ = args.skip_confirmation;
    let run = || -> Result<(), String> {
        let m = manifests(args.filename.as_ref(), &args.set)?;
        crate::current_thread_runtime()?.block_on(async {
            let client = weft_kube::client(args.kubeconfig.as_deref()).await?;
            let mut say = |s: String| eprintln!("weft install: {s}");
            apply::apply(&client, &m, &mut say).await?;
            if args.skip_wait {
                say("applied; not waiting for readiness (--skip-wait)".into());
                return Ok(());
            }
            apply::wait_ready(&client, &m, args.readiness_timeout, &mut say).await?;
            say("installation complete".into());
            Ok(())
        })
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft install: {e}");
            ExitCode::from(1)
        }
    }
}

pub fn uninstall(args: InstallArgs) -> ExitCode {
    let run = || -> Result<(), String> {
        let m = manifests(args.filename.as_ref(), &args.set)?;
        crate::current_thread_runtime()?.block_on(async {
            let client = weft_kube::client(args.kubeconfig.as_deref()).await?;
            let mut say = |s: String| eprintln!("weft uninstall: {s}");
            apply::remove(&client, &m, &mut say).await
        })
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft uninstall: {e}");
            ExitCode::from(1)
        }
    }
}

pub fn verify_install(args: InstallArgs) -> ExitCode {
    let run = || -> Result<Vec<String>, String> {
        let m = manifests(args.filename.as_ref(), &args.set)?;
        crate::current_thread_runtime()?.block_on(async {
            let client = weft_kube::client(args.kubeconfig.as_deref()).await?;
            apply::verify(&client, &m).await
        })
    };
    match run() {
        Ok(problems) if problems.is_empty() => {
            eprintln!("weft verify-install: every component is installed and ready");
            ExitCode::SUCCESS
        }
        Ok(problems) => {
            for p in problems {
                eprintln!("weft verify-install: {p}");
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("weft verify-install: {e}");
            ExitCode::from(1)
        }
    }
}
