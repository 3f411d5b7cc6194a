//! What the Telemetry API changes about Istio's metrics on one side of the proxy: metrics
//! disabled, labels removed, labels added or overwritten with a CEL expression's value (Istio's
//! `tagOverrides`), and how often open TCP connections report.
//!
//! The control plane writes it as listener metadata (`filter_metadata["istio.stats"]`), where
//! Envoy, which has no Istio stats filter, ignores it:
//!
//! ```json
//! {"client": {"disabled": false, "metrics": {"REQUEST_COUNT": {"disabled": false,
//!   "tags": {"response_code": null, "request_method": "request.method"}}}},
//!  "server": {…}, "reporting_interval": "30s"}
//! ```
//!
//! A series is recorded with the standard labels and, after them, the value of each distinct
//! expression the side upserts; each metric is then rendered with its own labels, series that
//! differ only in removed labels summed together.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::config::ConfigError;

/// Istio's standard metrics, by the Telemetry API's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    RequestCount,
    RequestDuration,
    RequestSize,
    ResponseSize,
    GrpcRequestMessages,
    GrpcResponseMessages,
    TcpOpenedConnections,
    TcpClosedConnections,
    TcpSentBytes,
    TcpReceivedBytes,
}

impl Metric {
    fn parse(name: &str) -> Option<Metric> {
        Some(match name {
            "REQUEST_COUNT" => Metric::RequestCount,
            "REQUEST_DURATION" => Metric::RequestDuration,
            "REQUEST_SIZE" => Metric::RequestSize,
            "RESPONSE_SIZE" => Metric::ResponseSize,
            "GRPC_REQUEST_MESSAGES" => Metric::GrpcRequestMessages,
            "GRPC_RESPONSE_MESSAGES" => Metric::GrpcResponseMessages,
            "TCP_OPENED_CONNECTIONS" => Metric::TcpOpenedConnections,
            "TCP_CLOSED_CONNECTIONS" => Metric::TcpClosedConnections,
            "TCP_SENT_BYTES" => Metric::TcpSentBytes,
            "TCP_RECEIVED_BYTES" => Metric::TcpReceivedBytes,
            _ => return None,
        })
    }
}

/// One metric's changes on one side.
#[derive(Debug, Clone, Default)]
pub struct MetricPlan {
    pub disabled: bool,
    pub removed: Vec<String>,
    /// Label → index of its expression in [`SidePlan::extra`].
    pub upserts: Vec<(String, usize)>,
}

/// One side's changes.
#[derive(Debug, Clone, Default)]
pub struct SidePlan {
    pub disabled: bool,
    pub metrics: BTreeMap<Metric, MetricPlan>,
    /// The distinct expressions upserted, evaluated once per request, in key order.
    pub extra: Vec<Arc<weft_cel::Program>>,
}

impl SidePlan {
    /// Whether `m` is rendered, and how: `None` when disabled.
    pub fn metric(&self, m: Metric) -> Option<&MetricPlan> {
        static DEFAULT: MetricPlan = MetricPlan { disabled: false, removed: Vec::new(), upserts: Vec::new() };
        if self.disabled {
            return None;
        }
        let p = self.metrics.get(&m).unwrap_or(&DEFAULT);
        (!p.disabled).then_some(p)
    }
}

/// Both sides (client = `reporter="source"`, server = `reporter="destination"`).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub client: SidePlan,
    pub server: SidePlan,
    pub reporting_interval: Option<Duration>,
    /// What it was read from, to tell a changed plan from the same one pushed again.
    pub source: Value,
}

impl PartialEq for Plan {
    fn eq(&self, other: &Plan) -> bool {
        self.source == other.source
    }
}

fn side(v: &Value, path: &str) -> Result<SidePlan, ConfigError> {
    let mut out = SidePlan { disabled: v.get("disabled").and_then(Value::as_bool).unwrap_or(false), ..SidePlan::default() };
    let Some(metrics) = v.get("metrics") else { return Ok(out) };
    let metrics = metrics.as_object().ok_or_else(|| ConfigError::new(format!("{path}.metrics"), "must be an object"))?;
    let mut exprs: Vec<String> = Vec::new();
    for (name, m) in metrics {
        let mpath = format!("{path}.metrics.{name}");
        let metric = Metric::parse(name).ok_or_else(|| ConfigError::new(&mpath, "not one of Istio's standard metrics"))?;
        let mut plan = MetricPlan { disabled: m.get("disabled").and_then(Value::as_bool).unwrap_or(false), ..MetricPlan::default() };
        if let Some(tags) = m.get("tags") {
            let tags = tags.as_object().ok_or_else(|| ConfigError::new(format!("{mpath}.tags"), "must be an object"))?;
            for (label, value) in tags {
                match value {
                    Value::Null => plan.removed.push(label.clone()),
                    Value::String(expr) => {
                        let i = match exprs.iter().position(|e| e == expr) {
                            Some(i) => i,
                            None => {
                                let program = weft_cel::Program::compile(expr)
                                    .map_err(|e| ConfigError::new(format!("{mpath}.tags.{label}"), e.to_string()))?;
                                out.extra.push(Arc::new(program));
                                exprs.push(expr.clone());
                                exprs.len() - 1
                            }
                        };
                        plan.upserts.push((label.clone(), i));
                    }
                    _ => return Err(ConfigError::new(format!("{mpath}.tags.{label}"), "a CEL expression, or null to remove the label")),
                }
            }
        }
        out.metrics.insert(metric, plan);
    }
    Ok(out)
}

impl Plan {
    pub fn from_metadata(v: &Value, path: &str) -> Result<Plan, ConfigError> {
        let reporting_interval = match v.get("reporting_interval") {
            None => None,
            Some(Value::String(s)) => Some(
                s.strip_suffix('s')
                    .and_then(|n| n.parse::<f64>().ok())
                    .filter(|n| n.is_finite() && *n > 0.001)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| ConfigError::new(format!("{path}.reporting_interval"), "a duration in seconds, like \"30s\""))?,
            ),
            Some(_) => return Err(ConfigError::new(format!("{path}.reporting_interval"), "a duration in seconds, like \"30s\"")),
        };
        Ok(Plan {
            client: v.get("client").map(|c| side(c, &format!("{path}.client"))).transpose()?.unwrap_or_default(),
            server: v.get("server").map(|c| side(c, &format!("{path}.server"))).transpose()?.unwrap_or_default(),
            reporting_interval,
            source: v.clone(),
        })
    }
}
