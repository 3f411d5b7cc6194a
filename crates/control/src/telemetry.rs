//! The Telemetry API resolved for one proxy, with Istio's merge rules
//! (`pilot/pkg/model/telemetry.go`): the root namespace's selector-less Telemetry, then the
//! proxy's namespace's, then those whose selector picks the proxy, later ones overriding.
//!
//! - **Tracing**, per side (CLIENT = what the proxy sends: outbound listeners and gateways;
//!   SERVER = its inbound listeners): provider, `randomSamplingPercentage`,
//!   `disableSpanReporting` and `customTags` are each last-writer-wins. No provider at all
//!   means no span reporting. No Telemetry and no default tracing provider means MeshConfig
//!   `defaultConfig.tracing` applies, as before the Telemetry API.
//! - **Metrics**: the providers the most specific level names (default `prometheus`, which
//!   Istio's installation sets as the default metrics provider); overrides are applied in order
//!   on top of the parents', per side and metric, disabling a metric or upserting or removing
//!   a label; `reportingInterval` sets how often open TCP connections report their bytes.
//! - **Access logging**, per side: the providers the most specific level names, each with
//!   that level's filter, or none where the level says `disabled`. No Telemetry and no default
//!   provider means MeshConfig `accessLogFile` applies.
//!
//! A provider name that MeshConfig does not define, or one of a kind weft does not implement,
//! drops only that part, and `weft analyze` reports it (`analyze::telemetry`).

use std::collections::BTreeMap;
use std::time::Duration;

use weft_api::mesh::providers::{self, ExtensionProvider, Provider};
use weft_api::telemetry::{CustomTag, IstioMetric, TagOperation, Telemetry, WorkloadMode};
use weft_api::Resource;

use crate::model::{labels_match, Model};

/// Which side of a call a setting is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    fn mode(self) -> WorkloadMode {
        match self {
            Side::Client => WorkloadMode::Client,
            Side::Server => WorkloadMode::Server,
        }
    }
}

/// Tracing for one side, when the Telemetry API (or a default provider) decides it.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSpec {
    /// Where spans go; `None` (or `disabled`) reports none, though context still propagates.
    pub provider: Option<ExtensionProvider>,
    pub disabled: bool,
    pub sampling: Option<f64>,
    pub custom_tags: BTreeMap<String, CustomTag>,
}

/// One access log for one side.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSpec {
    pub provider: ExtensionProvider,
    /// A CEL expression; only requests it is true for are logged.
    pub filter: Option<String>,
}

/// A metric's override for one side, after every level was applied in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricOverride {
    pub disabled: bool,
    /// Label → `Some(CEL)` to upsert, `None` to remove.
    pub tags: BTreeMap<String, Option<String>>,
}

/// Istio's metrics for one side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSide {
    /// Every metric off (ALL_METRICS disabled).
    pub disabled: bool,
    pub overrides: BTreeMap<IstioMetric, MetricOverride>,
}

/// The Istio metrics a proxy reports to its `prometheus` provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSpec {
    /// No prometheus provider is in scope: no Istio metrics at all.
    pub off: bool,
    pub client: MetricsSide,
    pub server: MetricsSide,
    pub reporting_interval: Option<Duration>,
}

impl MetricsSpec {
    pub fn side(&self, side: Side) -> &MetricsSide {
        match side {
            Side::Client => &self.client,
            Side::Server => &self.server,
        }
    }

    /// Whether this is what a proxy does with no Telemetry at all.
    pub fn is_default(&self) -> bool {
        *self == MetricsSpec::default()
    }
}

/// Everything the Telemetry API says about one proxy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    /// `None`: no Telemetry and no default provider says anything; MeshConfig's legacy
    /// `defaultConfig.tracing` applies.
    pub tracing: Option<[TracingSpec; 2]>,
    /// `None`: MeshConfig `accessLogFile` applies.
    pub logging: Option<[Vec<LogSpec>; 2]>,
    pub metrics: MetricsSpec,
}

impl Resolved {
    pub fn tracing(&self, side: Side) -> Option<&TracingSpec> {
        self.tracing.as_ref().map(|t| &t[side as usize])
    }
    pub fn logs(&self, side: Side) -> Option<&[LogSpec]> {
        self.logging.as_ref().map(|l| l[side as usize].as_slice())
    }
}

/// The Telemetries that apply to a proxy in `namespace` with `labels`, in merge order.
pub fn applicable<'a>(model: &'a Model, namespace: &str, labels: &BTreeMap<String, String>) -> Vec<&'a Resource<Telemetry>> {
    let root = &model.mesh.root_namespace;
    let wide = |ns: &str| model.telemetries.iter().find(|t| t.namespace == ns && t.spec.namespace_wide());
    let mut out: Vec<&Resource<Telemetry>> = Vec::new();
    out.extend(wide(root));
    if namespace != root {
        out.extend(wide(namespace));
    }
    out.extend(model.telemetries.iter().filter(|t| {
        t.namespace == namespace
            && !t.spec.namespace_wide()
            && t.spec.selector.as_ref().is_some_and(|s| labels_match(&s.match_labels, labels))
    }));
    out
}

/// A provider by name, if MeshConfig defines it (or it is built in) and weft implements it.
fn provider(model: &Model, name: &str) -> Option<ExtensionProvider> {
    providers::find(&model.mesh.extension_providers, name).map(|p| p.into_owned()).filter(|p| !matches!(p.provider, Provider::Other(_)))
}

pub fn resolve(model: &Model, namespace: &str, labels: &BTreeMap<String, String>) -> Resolved {
    let list = applicable(model, namespace, labels);
    Resolved { tracing: tracing(model, &list), logging: logging(model, &list), metrics: metrics(model, &list) }
}

fn tracing(model: &Model, list: &[&Resource<Telemetry>]) -> Option<[TracingSpec; 2]> {
    let defaults = &model.mesh.default_providers.tracing;
    let rules: Vec<_> = list.iter().flat_map(|t| t.spec.tracing.iter()).collect();
    if rules.is_empty() && defaults.is_empty() {
        return None;
    }
    let base = TracingSpec {
        provider: defaults.first().and_then(|n| provider(model, n)),
        disabled: false,
        sampling: None,
        custom_tags: BTreeMap::new(),
    };
    let mut specs = [base.clone(), base];
    for r in rules {
        let mode = r.match_.map(|m| m.mode).unwrap_or_default();
        for side in [Side::Client, Side::Server] {
            if !mode.covers(side.mode()) {
                continue;
            }
            let s = &mut specs[side as usize];
            // Only the first provider is used (Istio warns that several are not supported).
            if let Some(p) = r.providers.first() {
                s.provider = provider(model, &p.name);
            }
            if let Some(d) = r.disable_span_reporting {
                s.disabled = d;
            }
            if !r.custom_tags.is_empty() {
                s.custom_tags = r.custom_tags.clone();
            }
            if let Some(p) = r.random_sampling_percentage {
                s.sampling = Some(p);
            }
        }
    }
    for s in &mut specs {
        if s.provider.is_none() {
            s.disabled = true;
        }
    }
    Some(specs)
}

fn logging(model: &Model, list: &[&Resource<Telemetry>]) -> Option<[Vec<LogSpec>; 2]> {
    let defaults = &model.mesh.default_providers.access_logging;
    let levels: Vec<_> = list.iter().filter(|t| !t.spec.access_logging.is_empty()).collect();
    if levels.is_empty() && defaults.is_empty() {
        return None;
    }
    let side_logs = |side: Side| -> Vec<LogSpec> {
        // (filter, disabled) per provider name, as the last level that speaks of it left it.
        let mut decided: BTreeMap<String, (Option<String>, bool)> = defaults.iter().map(|n| (n.clone(), (None, false))).collect();
        // The providers in scope are those of the most specific level that names any.
        let mut in_scope: Vec<String> = defaults.clone();
        let mut filters: BTreeMap<String, Option<String>> = BTreeMap::new();
        for t in &levels {
            let mut named = Vec::new();
            for l in &t.spec.access_logging {
                if !l.match_.map(|m| m.mode).unwrap_or_default().covers(side.mode()) {
                    continue;
                }
                for p in &l.providers {
                    named.push(p.name.clone());
                    filters.insert(p.name.clone(), l.filter.as_ref().map(|f| f.expression.clone()));
                }
            }
            if !named.is_empty() {
                in_scope = named;
            }
        }
        let mut parent: Vec<String> = defaults.clone();
        for t in &levels {
            for l in &t.spec.access_logging {
                let names: Vec<String> =
                    if l.providers.is_empty() { parent.clone() } else { l.providers.iter().map(|p| p.name.clone()).collect() };
                parent = names.clone();
                if !l.match_.map(|m| m.mode).unwrap_or_default().covers(side.mode()) {
                    continue;
                }
                for n in names.into_iter().filter(|n| in_scope.contains(n)) {
                    let entry = if l.disabled == Some(true) { (None, true) } else { (filters.get(&n).cloned().flatten(), false) };
                    decided.insert(n, entry);
                }
            }
        }
        decided
            .into_iter()
            .filter(|(n, (_, disabled))| !disabled && in_scope.contains(n))
            .filter_map(|(n, (filter, _))| {
                provider(model, &n)
                    .filter(|p| matches!(p.provider, Provider::EnvoyFileAccessLog(_) | Provider::EnvoyOtelAls(_)))
                    .map(|p| (p, filter))
            })
            .map(|(provider, filter)| LogSpec { provider, filter })
            .collect()
    };
    Some([side_logs(Side::Client), side_logs(Side::Server)])
}

fn metrics(model: &Model, list: &[&Resource<Telemetry>]) -> MetricsSpec {
    let mut defaults = model.mesh.default_providers.metrics.clone();
    if defaults.is_empty() {
        defaults.push("prometheus".into());
    }
    let rules: Vec<_> = list.iter().flat_map(|t| t.spec.metrics.iter()).collect();
    let mut in_scope = defaults.clone();
    for m in &rules {
        if !m.providers.is_empty() {
            in_scope = m.providers.iter().map(|p| p.name.clone()).collect();
        }
    }
    let is_prometheus = |n: &str| provider(model, n).is_some_and(|p| p.provider == Provider::Prometheus);
    let mut spec = MetricsSpec { off: !in_scope.iter().any(|n| is_prometheus(n)), ..MetricsSpec::default() };
    let mut parent = defaults;
    for m in rules {
        let names: Vec<String> = if m.providers.is_empty() { parent.clone() } else { m.providers.iter().map(|p| p.name.clone()).collect() };
        parent = names.clone();
        if !names.iter().any(|n| in_scope.contains(n) && is_prometheus(n)) {
            continue;
        }
        if let Some(d) = m.reporting_interval {
            spec.reporting_interval = Some(d.0);
        }
        for o in &m.overrides {
            let sel = o.match_.clone().unwrap_or_default();
            let metric = sel.metric.unwrap_or(IstioMetric::AllMetrics);
            for side in [Side::Client, Side::Server] {
                if !sel.mode.covers(side.mode()) {
                    continue;
                }
                let ms = match side {
                    Side::Client => &mut spec.client,
                    Side::Server => &mut spec.server,
                };
                if metric == IstioMetric::AllMetrics && o.disabled == Some(true) {
                    ms.disabled = true;
                    continue;
                }
                // A later override of the side turns its metrics back on (Istio does the same).
                ms.disabled = false;
                let each: Vec<IstioMetric> = if metric == IstioMetric::AllMetrics { IstioMetric::EACH.to_vec() } else { vec![metric] };
                for m in each {
                    let entry = ms.overrides.entry(m).or_default();
                    if let Some(d) = o.disabled {
                        entry.disabled = d;
                    }
                    for (tag, to) in &o.tag_overrides {
                        let value = match to.operation {
                            TagOperation::Upsert => to.value.clone(),
                            TagOperation::Remove => None,
                        };
                        entry.tags.insert(tag.clone(), value);
                    }
                }
            }
        }
    }
    spec
}
