//! Process-wide parts of the bootstrap: `stats_config` (tags and which stats exist),
//! `overload_manager`, `bootstrap_extensions`, `layered_runtime`, `stats_sinks` and
//! `deferred_stat_options`. What weft acts on is turned into settings; the rest is refused by
//! name, except values that change nothing weft does (each says why below).

use weft_xds::bootstrap as wire;

use super::route::string_match;
use super::{ConfigError, Result};
use crate::stats::tags::{TagProducer, TagSpec};
use crate::stats::{StatsMatcher, StatsSettings};

/// What the overload manager asks of the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overload {
    /// `envoy.resource_monitors.global_downstream_max_connections`.
    pub global_max_connections: Option<u64>,
}

/// `stats_config` → how stats are tagged and which exist.
pub fn stats_settings(c: Option<&wire::StatsConfig>) -> Result<StatsSettings> {
    let Some(c) = c else { return Ok(StatsSettings::default()) };
    let path = "stats_config";
    let mut specs = Vec::new();
    for (i, t) in c.stats_tags.iter().enumerate() {
        let p = format!("{path}.stats_tags[{i}]");
        if t.tag_name.is_empty() {
            return Err(ConfigError::new(format!("{p}.tag_name"), "required"));
        }
        specs.push(match (&t.regex, &t.fixed_value) {
            (Some(_), Some(_)) => return Err(ConfigError::new(p, "regex and fixed_value are mutually exclusive")),
            (Some(r), None) if !r.is_empty() => TagSpec::Regex { name: t.tag_name.clone(), regex: r.clone() },
            (None, Some(v)) => TagSpec::Fixed { name: t.tag_name.clone(), value: v.clone() },
            _ => TagSpec::Default { name: t.tag_name.clone() },
        });
    }
    let tags = TagProducer::new(&specs, c.use_all_default_tags.unwrap_or(true)).map_err(|(i, e)| {
        let field = match &specs[i] {
            TagSpec::Regex { .. } => "regex",
            _ => "tag_name",
        };
        ConfigError::new(format!("{path}.stats_tags[{i}].{field}"), e)
    })?;
    let matcher = match &c.stats_matcher {
        None => StatsMatcher::All,
        Some(m) => {
            let mp = format!("{path}.stats_matcher");
            let list = |l: &wire::ListStringMatcher, field: &str| -> Result<Vec<_>> {
                l.patterns.iter().enumerate().map(|(i, p)| string_match(p, &format!("{mp}.{field}.patterns[{i}]"))).collect()
            };
            match (m.reject_all, &m.inclusion_list, &m.exclusion_list) {
                (Some(reject), None, None) => {
                    if reject {
                        StatsMatcher::RejectAll
                    } else {
                        StatsMatcher::All
                    }
                }
                (None, Some(l), None) => StatsMatcher::Inclusion(list(l, "inclusion_list")?),
                (None, None, Some(l)) => StatsMatcher::Exclusion(list(l, "exclusion_list")?),
                _ => return Err(ConfigError::new(mp, "exactly one of reject_all, inclusion_list and exclusion_list is required")),
            }
        }
    };
    Ok(StatsSettings { tags, matcher, deferred: false })
}

/// `overload_manager`: the resource monitor Istio configures is implemented; actions and every
/// other monitor are refused by name.
pub fn overload(o: Option<&wire::OverloadManager>) -> Result<Overload> {
    let Some(o) = o else { return Ok(Overload::default()) };
    let mut out = Overload::default();
    for (i, m) in o.resource_monitors.iter().enumerate() {
        let p = format!("overload_manager.resource_monitors[{i}]");
        match (m.name.as_str(), &m.typed_config) {
            (
                "envoy.resource_monitors.global_downstream_max_connections" | "envoy.resource_monitors.downstream_connections",
                Some(wire::ResourceMonitorConfig::DownstreamConnections(c)),
            ) => {
                let vp = format!("{p}.typed_config.max_active_downstream_connections");
                let n = match &c.max_active_downstream_connections {
                    Some(serde_json::Value::Number(n)) => n.as_u64(),
                    Some(serde_json::Value::String(s)) => s.parse::<u64>().ok(),
                    _ => None,
                };
                match n {
                    Some(n) if n > 0 => out.global_max_connections = Some(n),
                    _ => return Err(ConfigError::new(vp, "a positive number of connections is required")),
                }
                if out.global_max_connections.is_some() && o.resource_monitors[..i].iter().any(|m| m.typed_config.is_some()) {
                    return Err(ConfigError::new(p, "only one downstream connections monitor may be given"));
                }
            }
            (_, None) => return Err(ConfigError::new(format!("{p}.typed_config"), "required")),
            (other, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{p}.name"),
                    format!("{other:?} is not a resource monitor weft has (envoy.resource_monitors.global_downstream_max_connections)"),
                ))
            }
        }
    }
    Ok(out)
}

/// `bootstrap_extensions`: `envoy.bootstrap.internal_listener` is accepted — it only makes
/// internal listeners (`envoy_internal_address`) possible, and weft refuses every such address,
/// so there is nothing for it to change. Any other extension is refused by name.
pub fn bootstrap_extensions(exts: &[wire::BootstrapExtension]) -> Result<()> {
    const INTERNAL_LISTENER: &str = "envoy.extensions.bootstrap.internal_listener.v3.InternalListener";
    for (i, e) in exts.iter().enumerate() {
        let p = format!("bootstrap_extensions[{i}]");
        let Some(tc) = &e.typed_config else { return Err(ConfigError::new(format!("{p}.typed_config"), "required")) };
        let ty = tc.get("@type").and_then(|t| t.as_str()).map(weft_xds::typed::type_name).unwrap_or_default();
        // A TypedStruct carries the real type and its fields in `type_url` / `value`.
        let (real, fields, fields_path) = match ty {
            "udpa.type.v1.TypedStruct" | "xds.type.v3.TypedStruct" => (
                tc.get("type_url").and_then(|t| t.as_str()).map(weft_xds::typed::type_name).unwrap_or_default(),
                tc.get("value").and_then(|v| v.as_object()).cloned().unwrap_or_default(),
                format!("{p}.typed_config.value"),
            ),
            other => (
                other,
                tc.iter().filter(|(k, _)| *k != "@type").map(|(k, v)| (k.clone(), v.clone())).collect(),
                format!("{p}.typed_config"),
            ),
        };
        if real != INTERNAL_LISTENER {
            return Err(ConfigError::new(
                format!("{p}.typed_config"),
                format!("bootstrap extension {:?} ({real}) is not supported by weft (it has envoy.bootstrap.internal_listener)", e.name),
            ));
        }
        for (k, v) in &fields {
            let ok = match k.as_str() {
                "buffer_size_kb" => v.as_u64().is_some_and(|n| (1..=8192).contains(&n)),
                "max_connections_per_listener" => false,
                _ => return Err(ConfigError::new(format!("{fields_path}.{k}"), format!("unknown field {k:?} of InternalListener"))),
            };
            if !ok {
                return Err(ConfigError::new(format!("{fields_path}.{k}"), "not supported"));
            }
        }
    }
    Ok(())
}

/// Runtime keys weft accepts, and why each changes nothing weft would do otherwise.
const RUNTIME_KEYS: &[(&str, RuntimeValue)] = &[
    // Envoy's RE2 program-size limits: weft's regex engine has no such limit to raise.
    ("re2.max_program_size.error_level", RuntimeValue::Number),
    ("re2.max_program_size.warn_level", RuntimeValue::Number),
    // Lets Envoy keep reading `use_original_dst`, which weft reads anyway.
    ("envoy.deprecated_features:envoy.config.listener.v3.Listener.hidden_envoy_deprecated_use_original_dst", RuntimeValue::Bool(true)),
    // weft strips a fragment from the request path, which is what `false` asks of Envoy.
    ("envoy.reloadable_features.http_reject_path_with_fragment", RuntimeValue::Bool(false)),
    // Only changes the fixed_heap resource monitor, which weft refuses.
    ("envoy.reloadable_features.fixed_heap_use_allocated", RuntimeValue::Any),
    // When Envoy rebuilds load balancers during an EDS batch: nothing a caller can see.
    ("envoy.reloadable_features.coalesce_lb_rebuilds_on_batch_update", RuntimeValue::Any),
];

#[derive(Debug, Clone, Copy)]
enum RuntimeValue {
    Any,
    Number,
    /// Only this value is what weft does.
    Bool(bool),
}

/// `layered_runtime`: static layers may hold the keys weft accepts (Istio's defaults); an
/// admin layer is accepted (weft's admin has no `/runtime_modify`, so it stays empty); disk
/// and RTDS layers are refused.
pub fn layered_runtime(r: Option<&wire::LayeredRuntime>) -> Result<()> {
    let Some(r) = r else { return Ok(()) };
    for (i, l) in r.layers.iter().enumerate() {
        let p = format!("layered_runtime.layers[{i}]");
        let kinds = [l.static_layer.is_some(), l.admin_layer.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(ConfigError::new(p, "exactly one of static_layer, admin_layer, disk_layer and rtds_layer is required"));
        }
        for (k, v) in l.static_layer.iter().flatten() {
            let kp = format!("{p}.static_layer.{k}");
            let Some((_, want)) = RUNTIME_KEYS.iter().find(|(name, _)| name == k) else {
                return Err(ConfigError::new(kp, "a runtime key weft does not implement"));
            };
            let as_bool = v.as_bool().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
            let ok = match want {
                RuntimeValue::Any => true,
                RuntimeValue::Number => v.as_u64().is_some() || v.as_str().is_some_and(|s| s.parse::<u64>().is_ok()),
                RuntimeValue::Bool(b) => as_bool == Some(*b),
            };
            if !ok {
                let what = match want {
                    RuntimeValue::Bool(b) => format!("weft supports only {b} here"),
                    _ => "expected a number".to_string(),
                };
                return Err(ConfigError::new(kp, format!("value {v} is not supported: {what}")));
            }
        }
    }
    Ok(())
}

/// `deferred_stat_options.enable_deferred_creation_stats`: a cluster's traffic stats
/// (`upstream_*`) appear once the cluster carries traffic, as in Envoy.
pub fn deferred_stats(d: Option<&wire::DeferredStatOptions>) -> bool {
    d.is_some_and(|d| d.enable_deferred_creation_stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml<T: serde::de::DeserializeOwned>(y: &str) -> T {
        match weft_xds::load::load_typed(y, weft_xds::SourceFormat::Yaml, "t.yaml") {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn stats_config_refusals_name_the_field() {
        let c: wire::StatsConfig = yaml("stats_tags: [{tag_name: a, regex: '('}]");
        assert_eq!(stats_settings(Some(&c)).err().map(|e| e.path), Some("stats_config.stats_tags[0].regex".into()));
        let c: wire::StatsConfig = yaml("stats_tags: [{tag_name: nope}]");
        assert!(stats_settings(Some(&c)).err().is_some_and(|e| e.message.contains("no default regex")));
        let c: wire::StatsConfig = yaml("stats_matcher: {reject_all: true, inclusion_list: {patterns: []}}");
        assert!(stats_settings(Some(&c)).is_err());
        let c: wire::StatsConfig = yaml("stats_matcher: {inclusion_list: {patterns: [{prefix: cluster.}]}}");
        let s = stats_settings(Some(&c)).expect("valid");
        assert!(s.matcher.accepts("cluster.a.x") && !s.matcher.accepts("http.a.x"));
    }

    #[test]
    fn overload_and_extensions() {
        let o: wire::OverloadManager = yaml(
            "resource_monitors: [{name: envoy.resource_monitors.global_downstream_max_connections, typed_config: {'@type': type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig, max_active_downstream_connections: '7'}}]",
        );
        assert_eq!(overload(Some(&o)), Ok(Overload { global_max_connections: Some(7) }));
        let e = weft_xds::load::load_typed::<wire::OverloadManager>("actions: [{name: x}]", weft_xds::SourceFormat::Yaml, "t.yaml");
        assert_eq!(e.err().map(|e| e.to_string()), Some("t.yaml:1:10: actions[0]: not supported".into()));
        let o: wire::OverloadManager = yaml("resource_monitors: [{name: envoy.resource_monitors.fixed_heap, typed_config: {'@type': type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig}}]");
        assert!(overload(Some(&o)).err().is_some_and(|e| e.message.contains("envoy.resource_monitors.fixed_heap")));
        let e: Vec<wire::BootstrapExtension> = yaml(
            "[{name: envoy.bootstrap.internal_listener, typed_config: {'@type': type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener, value: {buffer_size_kb: 64}}}]",
        );
        assert_eq!(bootstrap_extensions(&e), Ok(()));
        let e: Vec<wire::BootstrapExtension> = yaml(
            "[{name: metadata_discovery, typed_config: {'@type': type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/istio.workload.BootstrapExtension, value: {}}}]",
        );
        assert!(bootstrap_extensions(&e).err().is_some_and(|e| e.message.contains("istio.workload.BootstrapExtension")));
    }

    #[test]
    fn runtime_keys() {
        let r: wire::LayeredRuntime = yaml(
            "layers: [{name: g, static_layer: {re2.max_program_size.error_level: '32768', envoy.reloadable_features.http_reject_path_with_fragment: false}}, {name: a, admin_layer: {}}]",
        );
        assert_eq!(layered_runtime(Some(&r)), Ok(()));
        let r: wire::LayeredRuntime =
            yaml("layers: [{name: g, static_layer: {envoy.reloadable_features.http_reject_path_with_fragment: true}}]");
        assert!(layered_runtime(Some(&r)).is_err());
        let r: wire::LayeredRuntime = yaml("layers: [{name: g, static_layer: {some.key: 1}}]");
        assert_eq!(layered_runtime(Some(&r)).err().map(|e| e.path), Some("layered_runtime.layers[0].static_layer.some.key".into()));
    }
}
