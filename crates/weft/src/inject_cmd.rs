//! `weft kube-inject`: istioctl kube-inject. Reads Kubernetes YAML (several documents, `List`s),
//! adds the sidecar to every pod template with the same code the admission webhook runs, and
//! prints the result. An object that cannot be injected is an error naming file, line and
//! field; then nothing is printed.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;
use weft_inject::Values;

#[derive(clap::Args)]
pub struct KubeInjectArgs {
    /// Input Kubernetes YAML (`-` for stdin).
    #[arg(short = 'f', long = "filename")]
    filename: PathBuf,
    /// Where to write the injected YAML (default: stdout).
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// MeshConfig file: its `defaultConfig` (PROXY_CONFIG), `trustDomain` and
    /// `enablePrometheusMerge` shape the sidecar.
    #[arg(long = "meshConfigFile")]
    mesh_config_file: Option<PathBuf>,
    /// The injector's values (YAML): hub, tag, dataPlane, cni, nativeSidecars, proxy, …
    #[arg(long = "valuesFile")]
    values_file: Option<PathBuf>,
    /// The control-plane revision the sidecars connect to.
    #[arg(short = 'r', long = "revision")]
    revision: Option<String>,
}

pub fn run(args: KubeInjectArgs) -> ExitCode {
    match kube_inject(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft kube-inject: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read(path: &PathBuf) -> Result<(String, String), String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("stdin: {e}"))?;
        return Ok((text, "<stdin>".into()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((text, path.display().to_string()))
}

/// The values the injector runs with: the values file, then the mesh config and flags over it.
pub fn values(values_file: Option<&PathBuf>, mesh_config_file: Option<&PathBuf>, revision: Option<&String>) -> Result<Values, String> {
    let mut values = match values_file {
        Some(p) => {
            let (text, file) = read(p)?;
            Values::from_yaml(&text).map_err(|e| format!("{file}: {e}"))?
        }
        None => Values::default(),
    };
    if let Some(p) = mesh_config_file {
        let (text, file) = read(p)?;
        let (mesh, warnings) = weft_api::mesh::load_mesh_checked(&text, &file)
            .map_err(|d| d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))?;
        for w in warnings {
            eprintln!("{w}");
        }
        values.trust_domain = mesh.trust_domain.clone();
        let raw: Value = serde_yaml::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
        if let Some(Value::Object(dc)) = raw.get("defaultConfig") {
            values.default_config = dc.clone();
        }
        if let Some(merge) = raw.get("enablePrometheusMerge").and_then(Value::as_bool) {
            values.enable_prometheus_merge = merge;
        }
    }
    if let Some(r) = revision {
        values.revision = r.clone();
    }
    Ok(values)
}

fn kube_inject(args: KubeInjectArgs) -> Result<(), String> {
    let values = values(args.values_file.as_ref(), args.mesh_config_file.as_ref(), args.revision.as_ref())?;
    let (text, file) = read(&args.filename)?;
    let (out, notices) = weft_inject::inject_yaml(&text, &file, &values)?;
    for n in notices {
        eprintln!("{n}");
    }
    match &args.output {
        Some(p) => std::fs::write(p, out).map_err(|e| format!("{}: {e}", p.display())),
        None => {
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(out.as_bytes());
            Ok(())
        }
    }
}
