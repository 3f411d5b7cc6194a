//! The validated configuration the data path runs on.
//!
//! Built once from Envoy wire types (`weft-xds`) by `TryFrom`-style conversions that check every
//! cross-reference and value; past this module nothing re-parses strings or looks up names that
//! might not exist. A conversion error carries the Envoy field path of the offending value.

pub mod access_log;
pub mod cluster;
pub mod listener;
pub mod process;
pub mod route;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use weft_xds::core::Address;
use weft_xds::Bootstrap;

pub use cluster::ClusterConfig;
pub use listener::ListenerConfig;

/// A configuration value that cannot be used, with the Envoy field path that holds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { path: path.into(), message: message.into() }
    }
}

pub type Result<T> = std::result::Result<T, ConfigError>;

/// The whole validated proxy configuration.
#[derive(Debug)]
pub struct Config {
    pub node_id: String,
    pub node_cluster: String,
    /// Sent to the control plane with the node id.
    pub node_metadata: serde_json::Map<String, serde_json::Value>,
    /// `node.locality`, with `--service-zone` over its zone; sent to the control plane.
    pub node_locality: Option<weft_xds::core::Locality>,
    /// `application_log_config.log_format`: how weft's own log lines look.
    pub app_log_format: Option<crate::applog::Pattern>,
    /// Where listeners, clusters, endpoints and routes come from at run time, if anywhere.
    pub ads: Option<AdsConfig>,
    pub admin: Option<AdminConfig>,
    pub listeners: Vec<Arc<ListenerConfig>>,
    pub clusters: Vec<Arc<ClusterConfig>>,
    /// The original bootstrap, as JSON, for `/config_dump`.
    pub dump: serde_json::Value,
    /// `stats_config` and `deferred_stat_options`.
    pub stats: Arc<crate::stats::StatsSettings>,
    pub overload: process::Overload,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub address: SocketAddr,
    pub access_log: Vec<access_log::AccessLogConfig>,
}

/// The control plane's ADS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdsConfig {
    /// `host:port`, or `unix:<path>` for a Unix socket.
    pub address: String,
    pub delta: bool,
}

/// Overrides from the command line (`--service-node`, `--service-cluster`, `--xds-address`,
/// node metadata from flags and environment).
#[derive(Debug, Clone, Default)]
pub struct NodeOverrides {
    pub id: Option<String>,
    pub cluster: Option<String>,
    /// `--service-zone`: replaces `node.locality.zone`.
    pub zone: Option<String>,
    /// Merged over the bootstrap's `node.metadata`.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Replaces the bootstrap's `dynamic_resources.ads_config`.
    pub ads: Option<AdsConfig>,
}

impl Config {
    /// Validates a bootstrap. `dump` is the bootstrap as JSON for `/config_dump`.
    pub fn from_bootstrap(b: Bootstrap, overrides: &NodeOverrides, dump: serde_json::Value) -> Result<Config> {
        let node =
            b.node.unwrap_or(weft_xds::core::Node { id: None, cluster: None, metadata: None, locality: None, user_agent_name: None });
        let node_id = overrides.id.clone().or(node.id).unwrap_or_default();
        let node_cluster = overrides.cluster.clone().or(node.cluster).unwrap_or_default();
        let mut node_metadata = node.metadata.unwrap_or_default();
        node_metadata.extend(overrides.metadata.clone());
        let node_locality = match (node.locality, &overrides.zone) {
            (l, None) => l,
            (l, Some(z)) => Some(weft_xds::core::Locality { zone: z.clone(), ..l.unwrap_or_default() }),
        };
        let app_log_format = match b.application_log_config.and_then(|a| a.log_format) {
            None => None,
            Some(f) => Some(match (f.text_format, f.json_format) {
                (Some(t), None) => {
                    crate::applog::Pattern::parse(&t).map_err(|e| ConfigError::new("application_log_config.log_format.text_format", e))?
                }
                (None, Some(j)) => crate::applog::Pattern::from_json_format(&j)
                    .map_err(|e| ConfigError::new("application_log_config.log_format.json_format", e))?,
                _ => {
                    return Err(ConfigError::new(
                        "application_log_config.log_format",
                        "exactly one of text_format and json_format is required",
                    ))
                }
            }),
        };

        let mut stats = process::stats_settings(b.stats_config.as_ref())?;
        stats.deferred = process::deferred_stats(b.deferred_stat_options.as_ref());
        let overload = process::overload(b.overload_manager.as_ref())?;
        process::bootstrap_extensions(&b.bootstrap_extensions)?;
        process::layered_runtime(b.layered_runtime.as_ref())?;

        let admin = match b.admin {
            Some(a) => {
                let address = match a.address {
                    Some(addr) => socket_addr(&addr, "admin.address")?,
                    None => return Err(ConfigError::new("admin.address", "required when admin is set")),
                };
                let mut logs = Vec::new();
                for (i, l) in a.access_log.iter().enumerate() {
                    logs.push(access_log::AccessLogConfig::from_wire(l, &format!("admin.access_log[{i}]"))?);
                }
                Some(AdminConfig { address, access_log: logs })
            }
            None => None,
        };

        let mut clusters = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for (i, c) in b.static_resources.clusters.iter().enumerate() {
            let path = format!("static_resources.clusters[{i}]");
            let cfg = ClusterConfig::from_wire(c, &path)?;
            if by_name.insert(cfg.name.clone(), i).is_some() {
                return Err(ConfigError::new(format!("{path}.name"), format!("duplicate cluster name {:?}", cfg.name)));
            }
            clusters.push(Arc::new(cfg));
        }
        let pipes: std::collections::HashSet<String> = clusters.iter().filter(|c| c.is_pipe()).map(|c| c.name.clone()).collect();
        let cluster_names = listener::ClusterNames::Static(&by_name, &pipes);

        let mut listeners: Vec<Arc<ListenerConfig>> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, l) in b.static_resources.listeners.iter().enumerate() {
            let path = format!("static_resources.listeners[{i}]");
            let cfg = ListenerConfig::from_wire(l, &path, &cluster_names, i)?;
            if seen.insert(cfg.name.clone(), i).is_some() {
                return Err(ConfigError::new(format!("{path}.name"), format!("duplicate listener name {:?}", cfg.name)));
            }
            if cfg.bind_to_port {
                if let Some(other) = listeners.iter().find(|o| o.bind_to_port && o.address == cfg.address) {
                    return Err(ConfigError::new(
                        format!("{path}.address"),
                        format!("{} is already used by listener {:?}", cfg.address, other.name),
                    ));
                }
            }
            listeners.push(Arc::new(cfg));
        }

        let ads = match (&overrides.ads, &b.dynamic_resources) {
            (Some(a), _) => Some(a.clone()),
            (None, Some(d)) => ads_from_bootstrap(d, &clusters)?,
            (None, None) => None,
        };
        if ads.is_some() && node_id.is_empty() {
            return Err(ConfigError::new("node.id", "required when a control plane is used (or give --service-node)"));
        }
        Ok(Config {
            node_id,
            node_cluster,
            node_metadata,
            node_locality,
            app_log_format,
            ads,
            admin,
            listeners,
            clusters,
            dump,
            stats: Arc::new(stats),
            overload,
        })
    }
}

/// The ADS server named by `dynamic_resources`: its `envoy_grpc` cluster must be a static
/// cluster with an endpoint; CDS and LDS, when given, must come over that stream.
fn ads_from_bootstrap(d: &weft_xds::bootstrap::DynamicResources, clusters: &[Arc<ClusterConfig>]) -> Result<Option<AdsConfig>> {
    use weft_xds::bootstrap::ApiType;
    for (field, src) in [("cds_config", &d.cds_config), ("lds_config", &d.lds_config)] {
        if let Some(s) = src {
            if s.ads.is_none() {
                return Err(ConfigError::new(format!("dynamic_resources.{field}"), "only ads: {} is supported"));
            }
        }
    }
    let Some(a) = &d.ads_config else {
        if d.cds_config.is_some() || d.lds_config.is_some() {
            return Err(ConfigError::new("dynamic_resources.ads_config", "required when cds_config or lds_config uses ads"));
        }
        return Ok(None);
    };
    let delta = match a.api_type {
        ApiType::Grpc | ApiType::AggregatedGrpc => false,
        ApiType::DeltaGrpc | ApiType::AggregatedDeltaGrpc => true,
        ApiType::Rest => {
            return Err(ConfigError::new("dynamic_resources.ads_config.api_type", "REST is not supported (GRPC or DELTA_GRPC)"))
        }
    };
    let path = "dynamic_resources.ads_config.grpc_services";
    let svc = match a.grpc_services.as_slice() {
        [one] => one,
        _ => return Err(ConfigError::new(path, "exactly one grpc_service is required")),
    };
    let name = &svc.envoy_grpc.as_ref().ok_or_else(|| ConfigError::new(format!("{path}[0].envoy_grpc"), "required"))?.cluster_name;
    let cluster = clusters.iter().find(|c| &c.name == name).ok_or_else(|| {
        ConfigError::new(format!("{path}[0].envoy_grpc.cluster_name"), format!("{name:?} is not a cluster in static_resources"))
    })?;
    let is_pipe = matches!(cluster.endpoints.first().map(|e| &e.address), Some(cluster::EndpointAddress::Pipe(_)));
    if cluster.tcp_keepalive.is_some() && !is_pipe {
        // Over a Unix socket (Istio's xds-grpc) TCP keepalive has nothing to act on.
        return Err(ConfigError::new(
            format!("{path}[0].envoy_grpc.cluster_name"),
            format!("cluster {name:?} sets upstream_connection_options.tcp_keepalive, which weft's ADS client does not apply yet"),
        ));
    }
    let address = match cluster.endpoints.first().map(|e| &e.address) {
        Some(cluster::EndpointAddress::Ip(a)) => a.to_string(),
        Some(cluster::EndpointAddress::Dns { host, port }) => format!("{host}:{port}"),
        // Istio's xds-grpc: pilot-agent's xDS proxy on a Unix socket.
        Some(cluster::EndpointAddress::Pipe(p)) => format!("unix:{p}"),
        None => {
            return Err(ConfigError::new(
                format!("{path}[0].envoy_grpc.cluster_name"),
                format!("cluster {name:?} has no endpoint to reach the control plane at"),
            ))
        }
    };
    Ok(Some(AdsConfig { address, delta }))
}

/// Resolves an Envoy `Address` that must be a literal IP socket address.
pub fn socket_addr(a: &Address, path: &str) -> Result<SocketAddr> {
    let sa = a.socket_address.as_ref().ok_or_else(|| ConfigError::new(path, "only socket_address is supported"))?;
    let ip: IpAddr = sa
        .address
        .parse()
        .map_err(|_| ConfigError::new(format!("{path}.socket_address.address"), format!("{:?} is not an IP address", sa.address)))?;
    let port = port_value(sa.port_value, &format!("{path}.socket_address.port_value"))?;
    Ok(SocketAddr::new(ip, port))
}

pub fn port_value(p: Option<u32>, path: &str) -> Result<u16> {
    let p = p.unwrap_or(0);
    u16::try_from(p).map_err(|_| ConfigError::new(path, format!("port {p} is out of range (0-65535)")))
}

/// Compiles a RE2-style regex; Envoy anchors `safe_regex` matches on the whole value.
pub fn full_regex(re: &str, path: &str) -> Result<regex::Regex> {
    regex::Regex::new(&format!("^(?:{re})$"))
        .map_err(|e| ConfigError::new(path, format!("invalid regex {re:?}: {}", first_line(&e.to_string()))))
}

pub fn plain_regex(re: &str, path: &str) -> Result<regex::Regex> {
    regex::Regex::new(re).map_err(|e| ConfigError::new(path, format!("invalid regex {re:?}: {}", first_line(&e.to_string()))))
}

fn first_line(s: &str) -> String {
    s.lines().rfind(|l| !l.trim().is_empty()).unwrap_or(s).trim().to_string()
}
