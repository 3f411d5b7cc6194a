//! What a pod tells its sidecar, as the injector wrote it: Istio's environment variables
//! (`POD_NAME`, `INSTANCE_IP`, `PROXY_CONFIG`, `ISTIO_META_*`, …) and the files of its volumes
//! (the token, the mesh's root, the pod's labels). Read once at start; anything missing that
//! the sidecar needs is an error naming the variable or file.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};

/// The sidecar's role (`sidecar` or `router`, Istio's node types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Sidecar,
    Router,
}

/// Where the pod's volumes are mounted, under `root` (`/` in a container).
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    fn at(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    pub fn token(&self) -> PathBuf {
        self.at("var/run/secrets/tokens/istio-token")
    }
    pub fn root_cert(&self) -> PathBuf {
        self.at("var/run/secrets/istio/root-cert.pem")
    }
    pub fn labels(&self) -> PathBuf {
        self.at("etc/istio/pod/labels")
    }
    pub fn bootstrap(&self) -> PathBuf {
        self.at("etc/istio/proxy/envoy-rev.json")
    }
    /// The agent's xDS proxy, which the proxy's bootstrap names.
    pub fn xds_socket(&self) -> PathBuf {
        self.at("etc/istio/proxy/XDS")
    }
    pub fn sds_socket(&self) -> PathBuf {
        self.at("var/run/secrets/workload-spiffe-uds/socket")
    }
}

/// The ProxyConfig fields the sidecar acts on (`PROXY_CONFIG`, MeshConfig `defaultConfig`
/// with the pod's `proxy.istio.io/config` over it), with Istio's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    pub discovery_address: String,
    pub status_port: u16,
    pub admin_port: u16,
    pub concurrency: u32,
    pub drain_duration: Duration,
    pub termination_drain_duration: Duration,
    pub binary_path: String,
}

/// ProxyConfig fields that only concern Envoy's own process or Istio's agent internals, which
/// weft's sidecar has no use for; read, and not reported.
const MOOT: &[&str] =
    &["configPath", "serviceCluster", "controlPlaneAuthPolicy", "proxyMetadata", "holdApplicationUntilProxyStarts", "tracing", "image"];

impl ProxySettings {
    pub fn read(config: &Map<String, Value>, warnings: &mut Vec<String>) -> Result<ProxySettings, String> {
        let mut s = ProxySettings {
            discovery_address: "istiod.istio-system.svc:15012".into(),
            status_port: 15020,
            admin_port: 15000,
            concurrency: 2,
            drain_duration: Duration::from_secs(45),
            termination_drain_duration: Duration::from_secs(5),
            binary_path: "/usr/local/bin/envoy".into(),
        };
        let duration = |k: &str, v: &Value| -> Result<Duration, String> {
            let text = v.as_str().ok_or_else(|| format!("PROXY_CONFIG.{k}: not a duration"))?;
            weft_api::duration::parse_go_duration(text).map_err(|e| format!("PROXY_CONFIG.{k}: {e}"))
        };
        let port = |k: &str, v: &Value| -> Result<u16, String> {
            v.as_u64().and_then(|n| u16::try_from(n).ok()).ok_or_else(|| format!("PROXY_CONFIG.{k}: {v} is not a port"))
        };
        for (k, v) in config {
            match k.as_str() {
                "discoveryAddress" => s.discovery_address = v.as_str().ok_or("PROXY_CONFIG.discoveryAddress: not a string")?.to_owned(),
                "statusPort" => s.status_port = port(k, v)?,
                "proxyAdminPort" => s.admin_port = port(k, v)?,
                "concurrency" => {
                    s.concurrency = v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or("PROXY_CONFIG.concurrency: not a whole number")?
                }
                "drainDuration" => s.drain_duration = duration(k, v)?,
                "terminationDrainDuration" => s.termination_drain_duration = duration(k, v)?,
                "binaryPath" => s.binary_path = v.as_str().ok_or("PROXY_CONFIG.binaryPath: not a string")?.to_owned(),
                k if MOOT.contains(&k) => {}
                other => warnings.push(format!("PROXY_CONFIG.{other} is not acted on by weft's sidecar; ignored")),
            }
        }
        if s.concurrency == 0 {
            // Istio's 0 means "as many as the CPU limit"; ISTIO_CPU_LIMIT says what that is.
            s.concurrency = std::env::var("ISTIO_CPU_LIMIT").ok().and_then(|c| c.parse().ok()).filter(|c| *c > 0).unwrap_or(2);
        }
        Ok(s)
    }
}

/// Everything the pod says.
#[derive(Debug, Clone)]
pub struct PodEnv {
    pub name: String,
    pub namespace: String,
    pub ip: IpAddr,
    pub service_account: String,
    pub ca_address: String,
    pub trust_domain: String,
    pub labels: BTreeMap<String, String>,
    /// `ISTIO_META_*`, prefix taken off: the node metadata the control plane reads.
    pub meta: Map<String, Value>,
    pub proxy: ProxySettings,
    pub proxy_config: Map<String, Value>,
    /// `ISTIO_KUBE_APP_PROBERS`: status-port path → the app's original probe.
    pub probers: Map<String, Value>,
    /// `ISTIO_PROMETHEUS_ANNOTATIONS`: where the app's own metrics are, to merge.
    pub app_metrics: Option<(u16, String)>,
    pub warnings: Vec<String>,
}

impl PodEnv {
    pub fn read(vars: &BTreeMap<String, String>, paths: &Paths) -> Result<PodEnv, String> {
        let need = |k: &str| {
            vars.get(k).filter(|v| !v.is_empty()).cloned().ok_or_else(|| format!("{k} is not set (the injector sets it from the pod)"))
        };
        let name = need("POD_NAME")?;
        let namespace = need("POD_NAMESPACE")?;
        let ip_text = need("INSTANCE_IP")?;
        let ip: IpAddr = ip_text.parse().map_err(|_| format!("INSTANCE_IP {ip_text:?} is not an IP address"))?;
        let service_account = vars.get("SERVICE_ACCOUNT").filter(|v| !v.is_empty()).cloned().unwrap_or_else(|| "default".into());
        let ca_address = need("CA_ADDR")?;
        let trust_domain = vars.get("TRUST_DOMAIN").filter(|v| !v.is_empty()).cloned().unwrap_or_else(|| "cluster.local".into());
        let json_var = |k: &str| -> Result<Option<Value>, String> {
            match vars.get(k).filter(|v| !v.trim().is_empty()) {
                None => Ok(None),
                Some(t) => serde_json::from_str(t).map(Some).map_err(|e| format!("{k}: not JSON: {e}")),
            }
        };
        let mut warnings = Vec::new();
        let proxy_config = match json_var("PROXY_CONFIG")? {
            None => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err("PROXY_CONFIG: not a JSON object".into()),
        };
        let proxy = ProxySettings::read(&proxy_config, &mut warnings)?;
        let probers = match json_var("ISTIO_KUBE_APP_PROBERS")? {
            None => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err("ISTIO_KUBE_APP_PROBERS: not a JSON object".into()),
        };
        let app_metrics = match json_var("ISTIO_PROMETHEUS_ANNOTATIONS")? {
            Some(v) if v.get("scrape").and_then(Value::as_str) != Some("false") => match v.get("port").and_then(Value::as_str) {
                Some(p) => {
                    let port = p.parse().map_err(|_| format!("ISTIO_PROMETHEUS_ANNOTATIONS: port {p:?} is not a port"))?;
                    Some((port, v.get("path").and_then(Value::as_str).unwrap_or("/metrics").to_owned()))
                }
                None => None,
            },
            _ => None,
        };
        let mut meta = Map::new();
        for (k, v) in vars {
            if let Some(key) = k.strip_prefix("ISTIO_META_") {
                // Istio passes JSON-valued metadata (POD_PORTS) as text; so does weft.
                meta.insert(key.to_owned(), json!(v));
            }
        }
        let labels = read_labels(&paths.labels())?;
        Ok(PodEnv {
            name,
            namespace,
            ip,
            service_account,
            ca_address,
            trust_domain,
            labels,
            meta,
            proxy,
            proxy_config,
            probers,
            app_metrics,
            warnings,
        })
    }

    /// Istio's node ID: `sidecar~<ip>~<pod>.<ns>~<domain>`.
    pub fn node_id(&self, role: Role, domain: &str) -> String {
        let kind = match role {
            Role::Sidecar => "sidecar",
            Role::Router => "router",
        };
        format!("{kind}~{}~{}.{}~{domain}", self.ip, self.name, self.namespace)
    }

    /// The node metadata the control plane reads, as pilot-agent sends it.
    pub fn metadata(&self) -> Value {
        let mut m = self.meta.clone();
        m.insert("NAME".into(), json!(self.name));
        m.insert("NAMESPACE".into(), json!(self.namespace));
        m.insert("LABELS".into(), json!(self.labels));
        m.insert("SERVICE_ACCOUNT".into(), json!(self.service_account));
        m.insert("INSTANCE_IPS".into(), json!(self.ip.to_string()));
        m.entry("CLUSTER_ID").or_insert(json!("Kubernetes"));
        m.entry("WORKLOAD_NAME").or_insert(json!(self.name));
        m.insert("PROXY_CONFIG".into(), Value::Object(self.proxy_config.clone()));
        Value::Object(m)
    }

    /// Istio's service cluster: `<canonical name>.<namespace>`.
    pub fn cluster(&self) -> String {
        let app = ["service.istio.io/canonical-name", "app.kubernetes.io/name", "app"].iter().find_map(|k| self.labels.get(*k)).cloned();
        let workload = self.meta.get("WORKLOAD_NAME").and_then(Value::as_str).map(str::to_owned);
        format!("{}.{}", app.or(workload).unwrap_or_else(|| self.name.clone()), self.namespace)
    }
}

/// The downward API's `labels` file: `key="value"` per line, values quoted as Go quotes them.
/// A missing file is an empty set (outside Kubernetes there may be none).
fn read_labels(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut labels = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = || format!("{}:{}: expected key=\"value\"", path.display(), i + 1);
        let (k, v) = line.split_once('=').ok_or_else(bad)?;
        let v: String = serde_json::from_str(v).map_err(|_| bad())?;
        labels.insert(k.to_owned(), v);
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut v: BTreeMap<String, String> = [
            ("POD_NAME", "reviews-v1-6b9d7f8c4-x2x9z"),
            ("POD_NAMESPACE", "shop"),
            ("INSTANCE_IP", "10.1.2.3"),
            ("SERVICE_ACCOUNT", "reviews"),
            ("CA_ADDR", "istiod.istio-system.svc:15012"),
            ("ISTIO_META_WORKLOAD_NAME", "reviews-v1"),
            ("ISTIO_META_POD_PORTS", "[{\"containerPort\":9080}]"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, val) in extra {
            v.insert(k.to_string(), val.to_string());
        }
        v
    }

    #[test]
    fn the_pod_environment_makes_istios_node() {
        let dir = std::env::temp_dir().join(format!("weft-podenv-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc/istio/pod")).expect("dir");
        std::fs::write(dir.join("etc/istio/pod/labels"), "app=\"reviews\"\nversion=\"v1\"\n").expect("labels");
        let paths = Paths { root: dir.clone() };
        let env = PodEnv::read(&vars(&[("PROXY_CONFIG", r#"{"discoveryAddress":"istiod-canary.istio-system.svc:15012","concurrency":1,"drainDuration":"10s","proxyStatsMatcher":{}}"#)]), &paths).expect("env");
        assert_eq!(
            env.node_id(Role::Sidecar, "shop.svc.cluster.local"),
            "sidecar~10.1.2.3~reviews-v1-6b9d7f8c4-x2x9z.shop~shop.svc.cluster.local"
        );
        assert_eq!(env.cluster(), "reviews.shop");
        assert_eq!(env.proxy.discovery_address, "istiod-canary.istio-system.svc:15012");
        assert_eq!(env.proxy.drain_duration, Duration::from_secs(10));
        assert_eq!(env.warnings, ["PROXY_CONFIG.proxyStatsMatcher is not acted on by weft's sidecar; ignored"]);
        let meta = env.metadata();
        assert_eq!(meta["WORKLOAD_NAME"], "reviews-v1");
        assert_eq!(meta["LABELS"]["version"], "v1");
        assert_eq!(meta["NAMESPACE"], "shop");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn what_is_missing_or_wrong_is_named() {
        let paths = Paths { root: PathBuf::from("/nonexistent") };
        let mut v = vars(&[]);
        v.remove("POD_NAMESPACE");
        assert!(PodEnv::read(&v, &paths).unwrap_err().starts_with("POD_NAMESPACE is not set"));
        let e = PodEnv::read(&vars(&[("INSTANCE_IP", "10.1.2")]), &paths).unwrap_err();
        assert!(e.contains("INSTANCE_IP"), "{e}");
        let e = PodEnv::read(&vars(&[("PROXY_CONFIG", r#"{"statusPort": 70000}"#)]), &paths).unwrap_err();
        assert_eq!(e, "PROXY_CONFIG.statusPort: 70000 is not a port");
        let e = PodEnv::read(&vars(&[("ISTIO_KUBE_APP_PROBERS", "{")]), &paths).unwrap_err();
        assert!(e.starts_with("ISTIO_KUBE_APP_PROBERS: not JSON"), "{e}");
    }
}
