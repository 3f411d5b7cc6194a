//! Access log sinks: lines rendered from a request's or connection's context, written whole.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::access_log::{AccessLogConfig, FormatContext, LineFormat, Sink};

pub struct AccessLogger {
    format: LineFormat,
    out: Output,
}

enum Output {
    Stdout,
    Stderr,
    File(Mutex<File>),
}

impl AccessLogger {
    pub fn open(cfg: &AccessLogConfig) -> std::io::Result<Arc<AccessLogger>> {
        let out = match &cfg.sink {
            Sink::Stdout => Output::Stdout,
            Sink::Stderr => Output::Stderr,
            Sink::File(p) => Output::File(Mutex::new(OpenOptions::new().create(true).append(true).open(p)?)),
        };
        Ok(Arc::new(AccessLogger { format: cfg.format.clone(), out }))
    }

    pub fn log(&self, ctx: &dyn FormatContext) {
        let mut line = match &self.format {
            LineFormat::Text(f) => f.render(ctx),
            LineFormat::Json(fields) => {
                let mut m = serde_json::Map::new();
                for (k, f) in fields {
                    let v = f.render(ctx);
                    let v = if f.literal().is_none() && v == "-" {
                        serde_json::Value::Null
                    } else if let Ok(n) = v.parse::<i64>() {
                        // Envoy emits numeric commands as JSON numbers.
                        if f.tokens.len() == 1 { serde_json::Value::from(n) } else { serde_json::Value::String(v) }
                    } else {
                        serde_json::Value::String(v)
                    };
                    m.insert(k.clone(), v);
                }
                let mut s = serde_json::Value::Object(m).to_string();
                s.push('\n');
                s
            }
        };
        if !line.ends_with('\n') && matches!(self.format, LineFormat::Json(_)) {
            line.push('\n');
        }
        let _ = match &self.out {
            Output::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Output::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            Output::File(f) => f.lock().write_all(line.as_bytes()),
        };
    }
}

pub fn open_all(cfgs: &[AccessLogConfig]) -> std::io::Result<Vec<Arc<AccessLogger>>> {
    cfgs.iter().map(AccessLogger::open).collect()
}
