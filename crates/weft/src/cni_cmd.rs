//! `weft-cni`: the CNI plugin (the `weft` binary called by that name), what istio-cni does.
//! The container runtime runs it with the `CNI_*` environment and the network config on
//! stdin; this file only reads those, hands them to `weft_capture::cni`, and prints the result
//! or the spec's error object on stdout. Logs go to stderr, which runtimes keep for failures.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::process::ExitCode;

use weft_capture::cni::{self, CniError, Outcome};

pub fn run() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
    // Whatever happens, the runtime gets an answer it can parse.
    let outcome = std::panic::catch_unwind(plugin).unwrap_or_else(|_| {
        let bug = CniError::new(
            cni::INTERNAL,
            "weft-cni panicked (a bug); see its stderr",
            "please report it with the network config and CNI_* environment",
        );
        Outcome::error(&bug, cni::DEFAULT_VERSION)
    });
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_all(outcome.stdout.as_bytes()).and_then(|()| stdout.flush());
    if let Err(e) = &written {
        eprintln!("weft-cni: cannot write the result to stdout: {e}");
    }
    if outcome.success && written.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn plugin() -> Outcome {
    let vars: HashMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with("CNI_").then(|| (k, v.to_string_lossy().into_owned()))
        })
        .collect();
    let mut stdin = Vec::new();
    // Run by hand from a terminal (`CNI_COMMAND=VERSION weft-cni`), there is no config to wait for.
    if !std::io::stdin().is_terminal() {
        if let Err(e) = std::io::stdin().lock().read_to_end(&mut stdin) {
            let err = CniError::new(cni::IO_FAILURE, format!("cannot read the network config from stdin: {e}"), "");
            return Outcome::error(&err, cni::DEFAULT_VERSION);
        }
    }
    cni::run(&vars, &stdin)
}
