//! `weft convert`: Istio 0.x routing (`config.istio.io/v1alpha2` RouteRule, DestinationPolicy,
//! EgressRule) printed as the v1 VirtualService, DestinationRule and ServiceEntry that mean the
//! same; every other document passes through unchanged, so the output replaces the input.
//! Notes on fields with no equivalent are comments above the resource they concern.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// Files to convert (`-` for stdin).
    files: Vec<PathBuf>,
    /// A file to convert (`-` for stdin); may be repeated.
    #[arg(short = 'f', long = "filename")]
    filename: Vec<PathBuf>,
}

pub fn convert(args: ConvertArgs) -> ExitCode {
    let paths: Vec<PathBuf> = args.files.into_iter().chain(args.filename).collect();
    if paths.is_empty() {
        eprintln!("weft convert: name the files to convert (FILE… or -f FILE; - for stdin)");
        return ExitCode::from(2);
    }
    let mut inputs = Vec::new();
    for p in &paths {
        let read = if p.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map(|_| (text, "<stdin>".to_string()))
        } else {
            std::fs::read_to_string(p).map(|t| (t, p.display().to_string()))
        };
        match read {
            Ok(input) => inputs.push(input),
            Err(e) => {
                eprintln!("weft convert: cannot read {}: {e}", p.display());
                return ExitCode::from(2);
            }
        }
    }
    let conversion = weft_api::legacy::convert(&inputs);
    if !conversion.diagnostics.is_empty() {
        for d in &conversion.diagnostics {
            eprintln!("{d}");
        }
        eprintln!("weft convert: nothing printed: fix the resources above first");
        return ExitCode::FAILURE;
    }
    if std::io::stdout().write_all(conversion.to_yaml().as_bytes()).is_err() {
        return ExitCode::FAILURE;
    }
    let notes = match conversion.notes {
        0 => String::new(),
        1 => "; 1 note, as a comment in the output".into(),
        n => format!("; {n} notes, as comments in the output"),
    };
    let resources = conversion.documents.iter().filter(|d| matches!(d, weft_api::legacy::Document::Converted { .. })).count();
    eprintln!("weft convert: {} Istio 0.x resources → {resources} v1 resources{notes}", conversion.converted);
    ExitCode::SUCCESS
}
