//! The app's probes through the proxy's status port, as Istio rewrites them: under STRICT
//! mTLS the kubelet's plain probe would be refused by the sidecar, so the kubelet asks the
//! status port (`/app-health/<container>/readyz`, …) and the agent probes the app from inside
//! the pod. The original probes travel in `ISTIO_KUBE_APP_PROBERS`.

use serde_json::{json, Map, Value};

/// The probes and lifecycle hooks of a container, with the status-port path each becomes.
const PROBES: &[(&str, &str)] = &[("readinessProbe", "readyz"), ("livenessProbe", "livez"), ("startupProbe", "startupz")];
const HOOKS: &[(&str, &str)] = &[("preStop", "prestopz"), ("postStart", "poststartz")];

/// Rewrites `container`'s probes and hooks and adds what the agent must probe to `probers`.
pub fn rewrite(container: &mut Value, status_port: u16, probers: &mut Map<String, Value>) {
    let Some(c) = container.as_object_mut() else { return };
    let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let named_ports: Map<String, Value> = c
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p.get("name")?.as_str()?.to_owned(), p.get("containerPort")?.clone())))
        .collect();
    for (field, suffix) in PROBES {
        if let Some(probe) = c.get_mut(*field).and_then(Value::as_object_mut) {
            let url = format!("/app-health/{name}/{suffix}");
            if let Some(entry) = prober(probe, &named_ports, status_port, true) {
                probers.insert(url.clone(), entry);
            }
            convert(probe, &url, status_port, true);
        }
    }
    if let Some(lifecycle) = c.get_mut("lifecycle").and_then(Value::as_object_mut) {
        for (field, suffix) in HOOKS {
            if let Some(hook) = lifecycle.get_mut(*field).and_then(Value::as_object_mut) {
                let url = format!("/app-health/{name}/{suffix}");
                if let Some(entry) = prober(hook, &named_ports, status_port, false) {
                    probers.insert(url.clone(), entry);
                }
                convert(hook, &url, status_port, false);
            }
        }
    }
}

/// What the agent must run for one probe; none when it already points at the status port or
/// names a port the container does not have.
fn prober(probe: &Map<String, Value>, named_ports: &Map<String, Value>, status_port: u16, with_timeout: bool) -> Option<Value> {
    let mut entry = Map::new();
    if let Some(grpc) = probe.get("grpc") {
        entry.insert("grpc".into(), grpc.clone());
    } else {
        let kind = ["httpGet", "tcpSocket"].into_iter().find(|k| probe.contains_key(*k))?;
        let mut action = probe.get(kind)?.clone();
        let port = action.get("port")?.clone();
        let resolved = match &port {
            Value::String(name) => named_ports.get(name)?.clone(),
            Value::Number(n) if n.as_u64() == Some(u64::from(status_port)) => return None,
            other => other.clone(),
        };
        action["port"] = resolved;
        entry.insert(kind.into(), action);
    }
    if with_timeout {
        if let Some(t) = probe.get("timeoutSeconds").filter(|t| t.as_i64().unwrap_or(0) != 0) {
            entry.insert("timeoutSeconds".into(), t.clone());
        }
    }
    Some(Value::Object(entry))
}

/// Points the probe (or hook) at the status port.
fn convert(probe: &mut Map<String, Value>, url: &str, status_port: u16, grpc_allowed: bool) {
    if let Some(Value::Object(http)) = probe.get_mut("httpGet") {
        http.insert("port".into(), json!(status_port));
        http.insert("path".into(), json!(url));
        if http.get("scheme").and_then(Value::as_str) == Some("HTTPS") {
            http.insert("scheme".into(), json!("HTTP"));
        }
        return;
    }
    let replaced = probe.remove("tcpSocket").is_some() || (grpc_allowed && probe.remove("grpc").is_some());
    if replaced {
        probe.insert("httpGet".into(), json!({"path": url, "port": status_port}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_tcp_grpc_and_named_ports_are_rewritten_as_istio_does() {
        let mut c = json!({
            "name": "app",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http", "scheme": "HTTPS"}, "timeoutSeconds": 2},
            "livenessProbe": {"tcpSocket": {"port": 8080}},
            "startupProbe": {"grpc": {"port": 9090}},
            "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}}
        });
        let mut probers = Map::new();
        rewrite(&mut c, 15020, &mut probers);
        assert_eq!(
            c["readinessProbe"],
            json!({"httpGet": {"path": "/app-health/app/readyz", "port": 15020, "scheme": "HTTP"}, "timeoutSeconds": 2})
        );
        assert_eq!(c["livenessProbe"], json!({"httpGet": {"path": "/app-health/app/livez", "port": 15020}}));
        assert_eq!(c["startupProbe"], json!({"httpGet": {"path": "/app-health/app/startupz", "port": 15020}}));
        assert_eq!(c["lifecycle"]["preStop"], json!({"exec": {"command": ["sleep", "5"]}}), "an exec hook is the app's own");
        assert_eq!(
            Value::Object(probers),
            json!({
                "/app-health/app/readyz": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTPS"}, "timeoutSeconds": 2},
                "/app-health/app/livez": {"tcpSocket": {"port": 8080}},
                "/app-health/app/startupz": {"grpc": {"port": 9090}}
            })
        );
        // A second pass changes nothing and finds nothing new to probe.
        let before = c.clone();
        let mut again = Map::new();
        rewrite(&mut c, 15020, &mut again);
        assert_eq!(c, before);
        assert!(again.is_empty(), "{again:?}");
    }
}
