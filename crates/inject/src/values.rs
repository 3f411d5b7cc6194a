//! What the injector is configured with: the part of Istio's `values` (and of MeshConfig) that
//! shapes an injected pod. Read from YAML with every unknown key refused by name.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Which proxy runs in the sidecar container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataPlane {
    /// `weft proxy`, in the same process as the agent.
    #[default]
    Weft,
    /// Stock Envoy, started and given its identity by the weft agent beside it (pilot-agent's
    /// role), from the same image.
    Envoy,
}

impl DataPlane {
    pub fn name(self) -> &'static str {
        match self {
            DataPlane::Weft => "weft",
            DataPlane::Envoy => "envoy",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<DataPlane> {
        match s {
            "weft" => Some(DataPlane::Weft),
            "envoy" => Some(DataPlane::Envoy),
            _ => None,
        }
    }
}

/// The injector's settings, with Istio's defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Values {
    /// Registry of weft's image (`<hub>/weft:<tag>`); Istio's `global.hub`.
    pub hub: String,
    /// Image tag; Istio's `global.tag`.
    pub tag: String,
    /// The data plane unless a namespace label or pod annotation `weft.io/data-plane` says
    /// otherwise.
    pub data_plane: DataPlane,
    /// The control-plane revision (`istio.io/rev`); empty is `default`.
    pub revision: String,
    /// The namespace the control plane runs in.
    pub istio_namespace: String,
    /// Where the sidecar asks for certificates (`CA_ADDR`); empty: the control plane's 15012.
    pub ca_address: String,
    /// The CNI plugin writes capture rules, so the init container only checks them.
    pub cni: bool,
    /// The proxy runs as a native sidecar (an init container with `restartPolicy: Always`,
    /// Kubernetes 1.29 and later): it is ready before the app starts and outlives it, and a
    /// Job's pod completes when its app exits. Off: the proxy is the first container and the
    /// app waits for it (`holdApplicationUntilProxyStarts`).
    pub native_sidecars: bool,
    /// Without native sidecars: the app containers start only once the proxy is ready.
    pub hold_application_until_proxy_starts: bool,
    /// Rewrite the app's HTTP, TCP and gRPC probes through the status port, so they keep
    /// working under STRICT mTLS (Istio's `sidecarInjectorWebhook.rewriteAppHTTPProbe`).
    pub rewrite_app_probes: bool,
    /// Merge the app's Prometheus metrics into the status port's (MeshConfig
    /// `enablePrometheusMerge`).
    pub enable_prometheus_merge: bool,
    pub trust_domain: String,
    /// `ISTIO_META_CLUSTER_ID` (Istio's `global.multiCluster.clusterName`).
    pub cluster_id: String,
    /// `ISTIO_META_MESH_ID`; empty: the trust domain.
    pub mesh_id: String,
    /// `ISTIO_META_NETWORK` and the pod's `topology.istio.io/network` label, when set.
    pub network: String,
    pub image_pull_policy: String,
    pub image_pull_secrets: Vec<String>,
    /// The Kubernetes cluster's DNS domain.
    pub cluster_domain: String,
    pub proxy: ProxyValues,
    /// MeshConfig `defaultConfig`, as the user wrote it, passed to the sidecar in
    /// `PROXY_CONFIG` (a pod's `proxy.istio.io/config` annotation is laid over it).
    pub default_config: serde_json::Map<String, serde_json::Value>,
    /// Namespaces never injected.
    pub ignored_namespaces: Vec<String>,
}

/// Istio's `global.proxy` values.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyValues {
    pub log_level: String,
    pub component_log_level: String,
    pub status_port: u16,
    pub include_ip_ranges: String,
    pub exclude_ip_ranges: String,
    pub include_inbound_ports: String,
    pub exclude_inbound_ports: String,
    pub include_outbound_ports: String,
    pub exclude_outbound_ports: String,
    /// Istio's `interceptionMode` default.
    pub interception_mode: String,
    pub readiness_initial_delay_seconds: i32,
    pub readiness_period_seconds: i32,
    pub readiness_failure_threshold: i32,
    pub startup_probe_failure_threshold: i32,
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
    pub uid: i64,
    pub gid: i64,
}

impl Default for Values {
    fn default() -> Self {
        Values {
            hub: "ghcr.io/weft-mesh".into(),
            tag: env!("CARGO_PKG_VERSION").into(),
            data_plane: DataPlane::Weft,
            revision: String::new(),
            istio_namespace: "istio-system".into(),
            ca_address: String::new(),
            cni: false,
            native_sidecars: true,
            hold_application_until_proxy_starts: true,
            rewrite_app_probes: true,
            enable_prometheus_merge: true,
            trust_domain: "cluster.local".into(),
            cluster_id: "Kubernetes".into(),
            mesh_id: String::new(),
            network: String::new(),
            image_pull_policy: String::new(),
            image_pull_secrets: Vec::new(),
            cluster_domain: "cluster.local".into(),
            proxy: ProxyValues::default(),
            default_config: serde_json::Map::new(),
            ignored_namespaces: vec!["kube-system".into(), "kube-public".into()],
        }
    }
}

impl Default for ProxyValues {
    fn default() -> Self {
        let quantities = |cpu: &str, memory: &str| BTreeMap::from([("cpu".into(), cpu.into()), ("memory".into(), memory.into())]);
        ProxyValues {
            log_level: "warning".into(),
            component_log_level: "misc:error".into(),
            status_port: 15020,
            include_ip_ranges: "*".into(),
            exclude_ip_ranges: String::new(),
            include_inbound_ports: "*".into(),
            exclude_inbound_ports: String::new(),
            include_outbound_ports: String::new(),
            exclude_outbound_ports: String::new(),
            interception_mode: "REDIRECT".into(),
            readiness_initial_delay_seconds: 0,
            readiness_period_seconds: 15,
            readiness_failure_threshold: 4,
            startup_probe_failure_threshold: 600,
            requests: quantities("100m", "128Mi"),
            limits: quantities("2000m", "1024Mi"),
            uid: 1337,
            gid: 1337,
        }
    }
}

impl Values {
    /// Reads values from YAML; an unknown key is an error naming it.
    pub fn from_yaml(text: &str) -> Result<Values, String> {
        // serde_yaml's message names the key and its line ("unknown field `x`, expected one
        // of … at line 3 column 3").
        Values::deserialize(serde_yaml::Deserializer::from_str(text)).map_err(|e| e.to_string())
    }

    pub(crate) fn image(&self) -> String {
        format!("{}/weft:{}", self.hub.trim_end_matches('/'), self.tag)
    }

    pub(crate) fn revision(&self) -> &str {
        if self.revision.is_empty() {
            "default"
        } else {
            &self.revision
        }
    }

    pub(crate) fn ca_address(&self) -> String {
        if !self.ca_address.is_empty() {
            return self.ca_address.clone();
        }
        match self.revision.as_str() {
            "" | "default" => format!("istiod.{}.svc:15012", self.istio_namespace),
            rev => format!("istiod-{rev}.{}.svc:15012", self.istio_namespace),
        }
    }

    pub(crate) fn mesh_id(&self) -> &str {
        if self.mesh_id.is_empty() {
            &self.trust_domain
        } else {
            &self.mesh_id
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = Values::from_yaml("hub: r.example\nproxy:\n  logLevl: debug\n").unwrap_err();
        assert!(e.contains("logLevl") && e.contains("line 3"), "{e}");
        let v = Values::from_yaml("hub: r.example/\ntag: '1'\ndataPlane: envoy\n").expect("values");
        assert_eq!(v.image(), "r.example/weft:1");
        assert_eq!(v.data_plane, DataPlane::Envoy);
        assert_eq!(v.proxy.status_port, 15020, "defaults fill what is not given");
    }
}
