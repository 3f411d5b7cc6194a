//! Access log sinks: lines rendered from a request's or connection's context, written whole.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::access_log::{AccessLogConfig, FormatContext, LineFormat, Sink, Token};

pub struct AccessLogger {
    format: LineFormat,
    out: Output,
    filter: Option<Arc<weft_cel::Program>>,
}

pub mod otlp;

enum Output {
    Stdout,
    Stderr,
    File(Mutex<File>),
    /// Log records over OTLP, with their attributes' formats.
    Otlp(otlp::Reporter, Vec<(String, crate::config::access_log::Format)>),
}

impl AccessLogger {
    /// `ctx`: where an OpenTelemetry logger finds its collector's cluster and the node it names.
    pub fn open(cfg: &AccessLogConfig, ctx: Option<&crate::server::BuildCtx>) -> std::io::Result<Arc<AccessLogger>> {
        let out = match &cfg.sink {
            Sink::Stdout => Output::Stdout,
            Sink::Stderr => Output::Stderr,
            Sink::File(p) => Output::File(Mutex::new(OpenOptions::new().create(true).append(true).open(p)?)),
            Sink::Otlp(s) => {
                let ctx = ctx.ok_or_else(|| std::io::Error::other("an OpenTelemetry access log needs the proxy's clusters"))?;
                let t = &ctx.tracer;
                let node = otlp::Node { id: t.node_id.clone(), cluster: t.node_cluster.clone(), zone: t.node_zone.clone() };
                Output::Otlp(otlp::Reporter::start(s.clone(), &node, ctx.clusters.clone()), s.attributes.clone())
            }
        };
        Ok(Arc::new(AccessLogger { format: cfg.format.clone(), out, filter: cfg.filter.clone() }))
    }

    pub fn log(&self, ctx: &dyn FormatContext) {
        if let Some(f) = &self.filter {
            if !f.matches(&crate::attributes::Attributes(ctx)) {
                return;
            }
        }
        if let Output::Otlp(reporter, attributes) = &self.out {
            let body = match &self.format {
                LineFormat::Text(f) => f.render(ctx),
                LineFormat::Json(_) => String::new(),
            };
            reporter.log(body, attributes.iter().map(|(k, f)| (k.clone(), f.render(ctx))).collect());
            return;
        }
        let mut line = match &self.format {
            LineFormat::Text(f) => f.render(ctx),
            LineFormat::Json(fields) => {
                let mut m = serde_json::Map::new();
                for (k, f) in fields {
                    let v = match f.tokens.as_slice() {
                        // A lone command keeps its type: absent is null, numbers are numbers.
                        [Token::Command(c)] => match ctx.value(c) {
                            None => serde_json::Value::Null,
                            Some(v) => match v.parse::<i64>() {
                                Ok(n) => serde_json::Value::from(n),
                                Err(_) => serde_json::Value::String(v),
                            },
                        },
                        _ => serde_json::Value::String(f.render(ctx)),
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
            Output::Otlp(..) => Ok(()),
        };
    }
}

pub fn open_all(cfgs: &[AccessLogConfig], ctx: &crate::server::BuildCtx) -> std::io::Result<Vec<Arc<AccessLogger>>> {
    cfgs.iter().map(|c| AccessLogger::open(c, Some(ctx))).collect()
}
