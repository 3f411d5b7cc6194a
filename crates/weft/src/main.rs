//! The `weft` binary: command-line parsing and dispatch to a role. Each role lives in its own
//! crate; this file only turns flags into their inputs and errors into exit codes.

mod proxy_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weft", version, about = "weft: a service mesh in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar / gateway proxy from an Envoy v3 bootstrap (Envoy's flags work).
    Proxy(proxy_cmd::ProxyArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Proxy(args) => proxy_cmd::run(args),
    }
}
