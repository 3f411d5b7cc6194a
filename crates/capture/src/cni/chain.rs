//! Chaining `weft-cni` into a node's network config, as istio-cni's installer does: the
//! node's primary config (the first `.conflist` or `.conf` in the CNI config directory by
//! name, the one the runtime uses) gets weft-cni appended to its plugin list; removing it
//! takes out only that entry. Pure functions on the JSON: `weft cni-install` does the files.

use serde_json::{json, Map, Value};

/// The `type` the plugin is chained as (its binary's name in the CNI bin directory).
pub const PLUGIN_TYPE: &str = "weft-cni";

/// The config file the runtime uses: the first `.conflist`/`.conf`/`.json` by name (libcni's
/// order), among `names`.
pub fn primary<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut configs: Vec<&str> =
        names.into_iter().filter(|n| n.ends_with(".conflist") || n.ends_with(".conf") || n.ends_with(".json")).collect();
    configs.sort_unstable();
    configs.first().copied()
}

/// `existing` (a `.conflist`, or a single-plugin `.conf`) with `entry` as its last plugin; an
/// entry already there is replaced, so chaining twice changes nothing.
pub fn chain(existing: &Value, entry: &Value) -> Result<Value, String> {
    let mut list = as_list(existing)?;
    let plugins = list.get_mut("plugins").and_then(Value::as_array_mut).ok_or("plugins is not a list")?;
    plugins.retain(|p| !is_ours(p));
    plugins.push(entry.clone());
    Ok(Value::Object(list))
}

/// `existing` without weft-cni's entry.
pub fn unchain(existing: &Value) -> Value {
    let mut out = existing.clone();
    if let Some(plugins) = out.get_mut("plugins").and_then(Value::as_array_mut) {
        plugins.retain(|p| !is_ours(p));
    }
    out
}

/// Whether `existing` has weft-cni as its last plugin (after every interface plugin).
pub fn is_chained(existing: &Value, entry: &Value) -> bool {
    existing.get("plugins").and_then(Value::as_array).and_then(|p| p.last()) == Some(entry)
}

fn is_ours(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

/// A config as a plugin list: a `.conf` holds one plugin, whose `cniVersion` and `name` become
/// the list's.
fn as_list(existing: &Value) -> Result<Map<String, Value>, String> {
    let Value::Object(obj) = existing else { return Err("not a JSON object".into()) };
    if obj.contains_key("plugins") {
        return Ok(obj.clone());
    }
    if !obj.contains_key("type") {
        return Err("neither a plugin list (plugins) nor a plugin (type)".into());
    }
    let mut plugin = obj.clone();
    let version = plugin.remove("cniVersion").unwrap_or_else(|| json!("0.3.1"));
    let name = plugin.remove("name").unwrap_or_else(|| json!("k8s-pod-network"));
    let mut list = Map::new();
    list.insert("cniVersion".into(), version);
    list.insert("name".into(), name);
    list.insert("plugins".into(), json!([plugin]));
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Value {
        json!({"type": PLUGIN_TYPE, "kubernetes": {"kubeconfig": "/etc/cni/net.d/weft-cni-kubeconfig"}})
    }

    #[test]
    fn chained_last_once_and_removed_alone() {
        let calico = json!({"cniVersion": "0.3.1", "name": "k8s-pod-network", "plugins": [{"type": "calico"}, {"type": "portmap"}]});
        let once = chain(&calico, &entry()).expect("chain");
        assert_eq!(once["plugins"].as_array().map(Vec::len), Some(3));
        assert!(is_chained(&once, &entry()));
        assert_eq!(chain(&once, &entry()).expect("again"), once, "chaining twice changes nothing");
        assert_eq!(unchain(&once), calico, "removal leaves the node's config as it was");
        assert!(!is_chained(&calico, &entry()));
    }

    #[test]
    fn a_single_plugin_conf_becomes_a_list() {
        let bridge = json!({"cniVersion": "1.0.0", "name": "mynet", "type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}});
        let list = chain(&bridge, &entry()).expect("chain");
        assert_eq!(list["cniVersion"], "1.0.0");
        assert_eq!(list["name"], "mynet");
        assert_eq!(list["plugins"][0], json!({"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}}));
        assert_eq!(list["plugins"][1], entry());
        assert!(chain(&json!({"name": "x"}), &entry()).is_err());
    }

    #[test]
    fn the_primary_config_is_the_first_by_name() {
        assert_eq!(primary(["99-loopback.conf", "10-calico.conflist", "weft-cni-kubeconfig", "README"]), Some("10-calico.conflist"));
        assert_eq!(primary(["weft-cni-kubeconfig"]), None);
    }
}
