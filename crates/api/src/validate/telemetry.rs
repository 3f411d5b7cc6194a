//! Telemetry: Istio's checks (`ValidateTelemetry` and the CRD's rules), in Istio's words, plus
//! the CEL in filters and tag values compiled by the same code the proxy evaluates them with,
//! so an expression that loads is one the proxy runs.

use std::time::Duration;

use super::{selector, Check};
use crate::telemetry::{IstioMetric, ProviderRef, TagOperation, Telemetry};

fn providers(list: &[ProviderRef], path: &str, c: &mut Check) {
    for (i, p) in list.iter().enumerate() {
        if p.name.is_empty() {
            c.error(format!("{path}.providers[{i}].name"), "providers.name may not be empty");
        }
    }
}

fn cel(expr: &str, path: &str, c: &mut Check) {
    match weft_cel::Program::compile(expr) {
        Ok(_) => {}
        Err(e @ weft_cel::CompileError::Syntax { .. }) => c.error(path, format!("must be a valid CEL expression, {e}")),
        Err(e) => c.unsupported(path, &e.to_string()),
    }
}

pub(super) fn telemetry(t: &Telemetry, c: &mut Check) {
    let targets = usize::from(t.target_ref.is_some()) + usize::from(!t.target_refs.is_empty());
    if t.selector.is_some() && targets > 0 || targets > 1 {
        c.error("spec", "only one of targetRefs or workloadSelector can be set");
    }
    if let Some(sel) = &t.selector {
        selector(&sel.match_labels, "spec.selector", "matchLabels", c);
    }
    if t.target_ref.is_some() {
        c.unsupported("spec.targetRef", "weft applies a Telemetry to a namespace or to the workloads its selector picks");
    }
    if !t.target_refs.is_empty() {
        c.unsupported("spec.targetRefs", "weft applies a Telemetry to a namespace or to the workloads its selector picks");
    }

    if t.tracing.len() > 1 {
        c.warn("spec.tracing", "multiple tracing is not currently supported");
    }
    for (i, tr) in t.tracing.iter().enumerate() {
        let path = format!("spec.tracing[{i}]");
        if tr.providers.len() > 1 {
            c.warn(format!("{path}.providers"), "multiple providers is not currently supported");
        }
        providers(&tr.providers, &path, c);
        if let Some(p) = tr.random_sampling_percentage {
            if !(0.0..=100.0).contains(&p) {
                c.error(format!("{path}.randomSamplingPercentage"), "randomSamplingPercentage must be in range [0.0, 100.0]");
            }
        }
        for (name, tag) in &tr.custom_tags {
            let tp = format!("{path}.customTags.{name}");
            if name.is_empty() {
                c.error(&tp, "tag name may not be empty");
            }
            let set = [tag.literal.is_some(), tag.environment.is_some(), tag.header.is_some(), tag.formatter.is_some()];
            match set.iter().filter(|s| **s).count() {
                0 => c.error(&tp, format!("tag '{name}' may not have a nil value")),
                1 => {}
                _ => c.error(&tp, "only one of literal, environment, header or formatter may be set"),
            }
            if tag.literal.as_ref().is_some_and(|l| l.value.is_empty()) {
                c.error(format!("{tp}.literal.value"), "literal tag value may not be empty");
            }
            if tag.header.as_ref().is_some_and(|h| h.name.is_empty()) {
                c.error(format!("{tp}.header.name"), "header tag name may not be empty");
            }
            if tag.environment.as_ref().is_some_and(|e| e.name.is_empty()) {
                c.error(format!("{tp}.environment.name"), "environment tag name may not be empty");
            }
            if tag.formatter.is_some() {
                c.unsupported(format!("{tp}.formatter"), "use a literal, environment or header tag");
            }
        }
        if tr.use_request_id_for_trace_sampling.is_some() {
            c.not_acted_on(format!("{path}.useRequestIdForTraceSampling"), "weft samples each request at random");
        }
        if tr.enable_istio_tags.is_some() {
            c.not_acted_on(format!("{path}.enableIstioTags"), "weft's spans carry Envoy's standard tags");
        }
        if tr.disable_context_propagation == Some(true) {
            c.unsupported(format!("{path}.disableContextPropagation"), "weft always propagates trace context");
        }
    }

    for (i, m) in t.metrics.iter().enumerate() {
        let path = format!("spec.metrics[{i}]");
        providers(&m.providers, &path, c);
        if let Some(d) = m.reporting_interval {
            if d.0 <= Duration::from_millis(1) {
                c.error(format!("{path}.reportingInterval"), "must be a valid duration greater than 1ms");
            }
        }
        for (j, o) in m.overrides.iter().enumerate() {
            let op = format!("{path}.overrides[{j}]");
            for (name, to) in &o.tag_overrides {
                let tp = format!("{op}.tagOverrides.{name}");
                if name.is_empty() {
                    c.warn(&tp, "tagOverrides.name may not be empty");
                }
                match (to.operation, to.value.as_deref()) {
                    (TagOperation::Upsert, None | Some("")) => c.error(&tp, "tagOverrides.value must be set when operation is UPSERT"),
                    (TagOperation::Upsert, Some(v)) => cel(v, &format!("{tp}.value"), c),
                    (TagOperation::Remove, Some(v)) if !v.is_empty() => {
                        c.error(&tp, "tagOverrides.value may only be set when operation is UPSERT")
                    }
                    (TagOperation::Remove, _) => {}
                }
            }
            if let Some(sel) = &o.match_ {
                if sel.metric.is_some() && sel.custom_metric.is_some() {
                    c.error(format!("{op}.match"), "only one of metric or customMetric may be set");
                }
                match sel.custom_metric.as_deref() {
                    Some("") => c.error(format!("{op}.match.customMetric"), "customMetric may not be empty"),
                    Some(name) => c.unsupported(
                        format!("{op}.match.customMetric"),
                        &format!("weft exports Istio's standard metrics only, and defines no metric {name:?}"),
                    ),
                    None => {}
                }
                if sel.metric == Some(IstioMetric::AllMetrics) && o.disabled.is_none() && o.tag_overrides.is_empty() {
                    c.warn(op.clone(), "this override changes nothing");
                }
            }
        }
    }

    for (i, l) in t.access_logging.iter().enumerate() {
        let path = format!("spec.accessLogging[{i}]");
        providers(&l.providers, &path, c);
        if let Some(f) = &l.filter {
            cel(&f.expression, &format!("{path}.filter.expression"), c);
        }
    }
}
