//! Every field of Istio's `MeshConfig` and `ProxyConfig` (istio/api `mesh/v1alpha1/config.proto`
//! and `proxy.proto`), and the check that sorts the keys of a mesh file into three kinds: fields
//! weft acts on (kept for the typed parse), fields weft does not act on yet (dropped with a
//! warning naming them) and keys that are not Istio fields at all (errors, with the nearest name).
//!
//! Names are proto names; a key may be the JSON name (`defaultConfig`, what Istio writes) or the
//! proto name (`default_config`), as Istio's proto JSON parser accepts both. Messages weft reads
//! inside have their own table; any other message-typed field is accepted whole, unchecked inside.

use serde_yaml::{Mapping, Value};

use crate::Level;

/// What a field's value must look like; `Msg` is a message weft reads inside.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Bool,
    Int,
    Float,
    Str,
    Duration,
    Enum,
    List,
    /// A message weft does not read inside, or a `map<…>`.
    Obj,
    Msg(&'static Message),
}

/// Whether weft acts on a field.
#[derive(Debug, Clone, Copy)]
pub(super) enum Use {
    Acted,
    Ignored,
    /// Ignored, and ignoring it can weaken security: the text says how.
    Insecure(&'static str),
}

#[derive(Debug)]
pub(super) struct Field {
    /// The proto name (`default_config`); the JSON name is derived from it.
    pub name: &'static str,
    pub kind: Kind,
    pub usage: Use,
}

#[derive(Debug)]
pub(super) struct Message {
    pub name: &'static str,
    pub fields: &'static [Field],
    /// Reserved names: fields Istio removed.
    pub removed: &'static [&'static str],
}

/// One finding of the check; the caller adds file and line.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Problem {
    pub level: Level,
    pub path: String,
    pub message: String,
}

use Kind::*;

const fn acted(name: &'static str, kind: Kind) -> Field {
    Field { name, kind, usage: Use::Acted }
}
const fn ignored(name: &'static str, kind: Kind) -> Field {
    Field { name, kind, usage: Use::Ignored }
}
const fn insecure(name: &'static str, kind: Kind, why: &'static str) -> Field {
    Field { name, kind, usage: Use::Insecure(why) }
}

pub(super) const MESH_CONFIG: Message = Message {
    name: "MeshConfig",
    fields: &[
        ignored("proxy_listen_port", Int),
        ignored("proxy_inbound_listen_port", Int),
        acted("proxy_http_port", Int),
        ignored("connect_timeout", Duration),
        ignored("hbone_idle_timeout", Duration),
        ignored("protocol_detection_timeout", Duration),
        ignored("tcp_keepalive", Obj),
        ignored("ingress_class", Str),
        ignored("ingress_service", Str),
        ignored("ingress_controller_mode", Enum),
        ignored("ingress_selector", Str),
        acted("enable_tracing", Bool),
        acted("access_log_file", Str),
        acted("access_log_format", Str),
        ignored("access_log_encoding", Enum),
        ignored("enable_envoy_access_log_service", Bool),
        ignored("disable_envoy_listener_log", Bool),
        acted("default_config", Msg(&PROXY_CONFIG)),
        acted("outbound_traffic_policy", Msg(&OUTBOUND_TRAFFIC_POLICY)),
        ignored("inbound_traffic_policy", Obj),
        ignored("config_sources", List),
        acted("enable_auto_mtls", Bool),
        acted("trust_domain", Str),
        ignored("trust_domain_aliases", List),
        ignored("ca_certificates", List),
        ignored("default_service_export_to", List),
        ignored("default_virtual_service_export_to", List),
        ignored("default_destination_rule_export_to", List),
        acted("root_namespace", Str),
        ignored("locality_lb_setting", Obj),
        ignored("zone_aware_lb_setting", Obj),
        ignored("dns_refresh_rate", Duration),
        ignored("h2_upgrade_policy", Enum),
        ignored("inbound_cluster_stat_name", Str),
        ignored("outbound_cluster_stat_name", Str),
        ignored("certificates", List),
        ignored("service_settings", List),
        ignored("service_scope_configs", List),
        ignored("enable_prometheus_merge", Bool),
        insecure(
            "verify_certificate_at_client",
            Bool,
            "the server-certificate verification default it sets for TLS origination is not applied",
        ),
        insecure("ca", Obj, "workload certificates are not issued by the external CA named here"),
        // Read whole by `mesh::providers`, which warns about each provider kind weft lacks.
        acted("extension_providers", List),
        acted("default_providers", Obj),
        ignored("discovery_selectors", List),
        insecure("path_normalization", Obj, "request paths are not normalized as asked, so path-based policy may match other paths"),
        ignored("default_http_retry_policy", Obj),
        insecure("mesh_mTLS", Obj, "mesh mTLS may use a TLS version, cipher suite or curve that this field excludes"),
        insecure("tls_defaults", Obj, "TLS that proxies originate may use a TLS version, cipher suite or curve that this field excludes"),
        ignored("default_traffic_policy", Obj),
        ignored("service_entry_visibility", Obj),
    ],
    removed: &[
        "mixer_check_server",
        "mixer_report_server",
        "disable_policy_checks",
        "disable_mixer_http_reports",
        "policy_check_fail_open",
        "sidecar_to_telemetry_session_affinity",
        "auth_policy",
        "rds_refresh_delay",
        "mixer_address",
        "enable_client_side_policy_check",
        "sds_uds_path",
        "sds_refresh_delay",
        "enable_sds_token_mount",
        "sds_use_k8s_sa_jwt",
        "termination_drain_duration",
        "disable_report_batch",
        "report_batch_max_entries",
        "report_batch_max_time",
        "file_flush_interval",
        "file_flush_min_size",
        "thrift_config",
    ],
};

pub(super) const PROXY_CONFIG: Message = Message {
    name: "ProxyConfig",
    fields: &[
        ignored("config_path", Str),
        ignored("binary_path", Str),
        ignored("service_cluster", Str),
        ignored("tracing_service_name", Enum),
        ignored("drain_duration", Duration),
        ignored("discovery_address", Str),
        ignored("discovery_refresh_delay", Duration),
        ignored("zipkin_address", Str),
        ignored("statsd_udp_address", Str),
        ignored("envoy_metrics_service_address", Str),
        ignored("proxy_admin_port", Int),
        ignored("availability_zone", Str),
        insecure("control_plane_auth_policy", Enum, "the control-plane authentication it asks for is not enforced by weft"),
        ignored("custom_config_file", Str),
        ignored("stat_name_length", Int),
        acted("concurrency", Int),
        ignored("proxy_bootstrap_template_path", Str),
        ignored("interception_mode", Enum),
        acted("tracing", Msg(&TRACING)),
        ignored("sds", Obj),
        ignored("envoy_access_log_service", Obj),
        ignored("envoy_metrics_service", Obj),
        acted("proxy_metadata", Obj),
        ignored("runtime_values", Obj),
        ignored("status_port", Int),
        ignored("extra_stat_tags", List),
        insecure(
            "gateway_topology",
            Obj,
            "trusted-proxy counting for X-Forwarded-For and client-certificate header (XFCC) handling are not applied as configured",
        ),
        ignored("termination_drain_duration", Duration),
        ignored("mesh_id", Str),
        ignored("readiness_probe", Obj),
        ignored("proxy_stats_matcher", Obj),
        ignored("hold_application_until_proxy_starts", Bool),
        insecure("ca_certificates_pem", List, "proxies do not restrict the control plane's certificate to these roots"),
        ignored("image", Obj),
        ignored("private_key_provider", Obj),
        insecure("proxy_headers", Obj, "its forwardedClientCert (XFCC sanitizing) setting is not applied"),
        ignored("file_flush_interval", Duration),
        ignored("file_flush_min_size_kb", Int),
        ignored("stats_compression", Bool),
        insecure(
            "connection_settings",
            Obj,
            "the request hardening it sets (escaped-slash and underscore-header actions, connection limits) is not applied",
        ),
    ],
    removed: &["parent_shutdown_duration", "connect_timeout"],
};

const TRACING: Message = Message {
    name: "Tracing",
    fields: &[
        acted("zipkin", Msg(&ZIPKIN)),
        ignored("lightstep", Obj),
        ignored("datadog", Obj),
        ignored("stackdriver", Obj),
        ignored("open_census_agent", Obj),
        ignored("custom_tags", Obj),
        ignored("max_path_tag_length", Int),
        acted("sampling", Float),
        insecure("tls_settings", Obj, "spans are sent to the collector without the TLS configured here"),
        ignored("enable_istio_tags", Bool),
    ],
    removed: &[],
};

const ZIPKIN: Message = Message { name: "Tracing.Zipkin", fields: &[acted("address", Str)], removed: &[] };

const OUTBOUND_TRAFFIC_POLICY: Message = Message {
    name: "MeshConfig.OutboundTrafficPolicy",
    fields: &[acted("mode", Enum), insecure("tls", Obj, "connections to unknown destinations do not originate the TLS configured here")],
    removed: &[],
};

impl Field {
    /// The name Istio writes: protoc's JSON name (`mesh_mTLS` → `meshMTLS`).
    pub fn json_name(&self) -> String {
        json_name(self.name)
    }

    fn matches(&self, key: &str) -> bool {
        key == self.name || key == self.json_name()
    }
}

/// Checks `value` (a parsed mesh file) against `MeshConfig`: returns the value with only the
/// fields weft acts on, for the typed parse, and every warning and error in document order.
pub(super) fn check(value: Value) -> (Value, Vec<Problem>) {
    let mut problems = Vec::new();
    let kept = check_message(value, &MESH_CONFIG, "", &mut problems);
    (kept, problems)
}

fn check_message(value: Value, msg: &'static Message, path: &str, problems: &mut Vec<Problem>) -> Value {
    // Anything but a mapping is left to the typed parse, which names the expected type.
    let Value::Mapping(map) = value else { return value };
    let mut kept = Mapping::new();
    let mut seen: Vec<(&'static str, String)> = Vec::new();
    for (key, val) in map {
        let key_text = key_text(&key);
        let here = if path.is_empty() { key_text.clone() } else { format!("{path}.{key_text}") };
        let Some(field) = msg.fields.iter().find(|f| f.matches(&key_text)) else {
            problems.push(Problem { level: Level::Error, path: here, message: unknown(msg, &key_text) });
            continue;
        };
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == field.name) {
            let message = format!("set twice, as {first} and as {key_text}; keep one");
            problems.push(Problem { level: Level::Error, path: here, message });
            continue;
        }
        seen.push((field.name, key_text.clone()));
        match field.usage {
            Use::Acted => {
                let val = match field.kind {
                    Msg(sub) => check_message(val, sub, &here, problems),
                    _ => val,
                };
                kept.insert(key, val);
            }
            Use::Ignored | Use::Insecure(_) if val.is_null() => {}
            Use::Ignored | Use::Insecure(_) => match type_error(field.kind, &val) {
                Some(message) => problems.push(Problem { level: Level::Error, path: here, message }),
                None => {
                    let mut message = "accepted, but weft does not act on this field yet".to_string();
                    if let Use::Insecure(why) = field.usage {
                        message.push_str(&format!("; ignoring it can weaken security: {why}"));
                    }
                    problems.push(Problem { level: Level::Warning, path: here, message });
                }
            },
        }
    }
    Value::Mapping(kept)
}

fn json_name(proto_name: &str) -> String {
    let mut out = String::with_capacity(proto_name.len());
    let mut upper = false;
    for c in proto_name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        _ => "<complex key>".into(),
    }
}

/// The error for a key `msg` has no field for, with the nearest name when one is close.
fn unknown(msg: &Message, key: &str) -> String {
    let mut text = format!("unknown field: {key} is not a field of Istio's {}", msg.name);
    if msg.removed.iter().any(|r| *r == key || json_name(r) == key) {
        text.push_str(" (Istio removed it; delete it)");
        return text;
    }
    // A ProxyConfig field at the top level, or a MeshConfig field under defaultConfig.
    let misplaced = match msg.name {
        "MeshConfig" => PROXY_CONFIG.fields.iter().find(|f| f.matches(key)).map(|f| format!("defaultConfig.{}", f.json_name())),
        "ProxyConfig" => MESH_CONFIG.fields.iter().find(|f| f.matches(key)).map(|f| format!("{} at the top level", f.json_name())),
        _ => None,
    };
    if let Some(m) = misplaced {
        text.push_str(&format!("; did you mean {m}?"));
        return text;
    }
    if let Some(near) = nearest(msg, key) {
        text.push_str(&format!("; did you mean {near}?"));
    }
    text
}

/// The field name closest to `key`, if close enough to be a typo.
fn nearest(msg: &Message, key: &str) -> Option<String> {
    let names: Vec<String> = msg.fields.iter().map(Field::json_name).collect();
    crate::suggest::nearest(key, names.iter().map(String::as_str)).map(str::to_string)
}

/// Why `val` cannot be a value of `kind`, if it cannot (proto JSON's rules, with Go durations).
fn type_error(kind: Kind, val: &Value) -> Option<String> {
    let val = match val {
        Value::Tagged(t) => &t.value,
        v => v,
    };
    let ok = match kind {
        Bool => val.is_bool(),
        Int => val.is_i64() || val.is_u64() || val.as_str().is_some_and(|s| s.trim().parse::<i64>().is_ok()),
        Float => val.is_number() || val.as_str().is_some_and(|s| s.trim().parse::<f64>().is_ok()),
        Str => val.is_string(),
        Duration => match val.as_str() {
            Some(s) => return crate::duration::parse_go_duration(s).err(),
            None => false,
        },
        Enum => val.is_string() || val.is_i64(),
        List => val.is_sequence(),
        Obj | Msg(_) => val.is_mapping(),
    };
    let want = match kind {
        Bool => "true or false",
        Int => "an integer",
        Float => "a number",
        Str => "a string",
        Duration => "a duration string such as \"10s\"",
        Enum => "an enum name (a string)",
        List => "a list",
        Obj | Msg(_) => "a mapping",
    };
    (!ok).then(|| format!("expected {want}, found {}", describe(val)))
}

fn describe(val: &Value) -> &'static str {
    match val {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}
