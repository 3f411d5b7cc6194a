//! The service model one config snapshot describes: services (from Kubernetes `Service` and
//! `ServiceEntry`) with their ports, protocols and endpoints, and the routing resources that
//! apply to them. Built once per snapshot, immutable, shared by every proxy's translation.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use weft_api::core::IntOrString;
use weft_api::mesh::MeshConfig;
use weft_api::networking::{self as net, Resolution};
use weft_api::security::PeerAuthentication;
use weft_api::{Object, Resource};

use crate::protocol::Protocol;

pub const DOMAIN_SUFFIX: &str = "svc.cluster.local";

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Fully qualified: `reviews.default.svc.cluster.local`, or a ServiceEntry host.
    pub hostname: String,
    pub namespace: String,
    /// The Kubernetes name, for short-name domains; `None` for ServiceEntry hosts.
    pub short_name: Option<String>,
    /// The address the service is called at: a cluster IP, or a ServiceEntry's first address
    /// when it is a single one.
    pub vip: Option<IpAddr>,
    /// Every address range traffic to the service may be sent to: the cluster IP, or all of a
    /// ServiceEntry's `addresses` (CIDR ranges included, the "authorise this IP range" case).
    pub ranges: Vec<ipnet::IpNet>,
    /// For a ServiceEntry host with no address (not a wildcard, resolution not NONE): the
    /// address weft allocated for it (Istio's DNS auto-allocation, 240.240.0.0/16). Used only
    /// for proxies that resolve DNS through their sidecar with auto-allocation on; see
    /// [`Service::vip_for`].
    pub auto_vip: Option<IpAddr>,
    pub ports: Vec<ServicePort>,
    pub endpoints: Vec<Endpoint>,
    pub discovery: Discovery,
    pub external: bool,
    /// Istio's `exportTo`: the namespaces whose proxies see it (`.` its own, `*` all, `~`
    /// none); empty: all. See [`exported_to`].
    pub export_to: Vec<String>,
    /// A ServiceEntry's `subjectAltNames`: identities its servers may present under mTLS,
    /// besides those of its endpoints' service accounts.
    pub subject_alt_names: Vec<String>,
}

impl Service {
    /// The address `node`'s proxy knows the service by: its own, or, for a proxy with DNS
    /// auto-allocation on, the one weft allocated.
    pub fn vip_for(&self, auto_allocated: bool) -> Option<IpAddr> {
        self.vip.or(self.auto_vip.filter(|_| auto_allocated))
    }

    /// The address ranges traffic to the service is told apart by, as [`Service::vip_for`].
    pub fn ranges_for(&self, auto_allocated: bool) -> Vec<ipnet::IpNet> {
        match self.auto_vip.filter(|_| auto_allocated && self.ranges.is_empty()) {
            Some(a) => vec![a.into()],
            None => self.ranges.clone(),
        }
    }
}

/// Slots of 240.240.0.0/16 handed out: third octet 0–253, fourth 1–254 (never a `.0` or
/// `.255`, which some stacks treat specially).
const AUTO_SLOTS: u32 = 254 * 254;

/// Gives each ServiceEntry host without an address an address of 240.240.0.0/16, as Istio's
/// DNS auto-allocation does: only hosts that are not wildcards and whose resolution is not
/// NONE (a NONE service is reached at the address the application resolved itself). A host's
/// slot comes from a hash of `namespace/hostname`, probing on to the next free one, in host
/// order: the same mesh gets the same addresses on every control plane and after a restart,
/// and a host added later moves no other (unless it collides first in the order).
fn auto_allocate(services: &mut [Service]) {
    let mut taken = std::collections::HashSet::new();
    for s in services.iter_mut() {
        let wants = s.short_name.is_none() && s.ranges.is_empty() && !s.hostname.starts_with('*') && s.discovery != Discovery::Passthrough;
        if !wants || taken.len() as u32 >= AUTO_SLOTS {
            continue;
        }
        let mut slot = fnv1a(format!("{}/{}", s.namespace, s.hostname).as_bytes()) % AUTO_SLOTS;
        while !taken.insert(slot) {
            slot = (slot + 1) % AUTO_SLOTS;
        }
        let (third, fourth) = ((slot / 254) as u8, (slot % 254 + 1) as u8);
        s.auto_vip = Some(IpAddr::V4(std::net::Ipv4Addr::new(240, 240, third, fourth)));
    }
}

/// 32-bit FNV-1a: stable across builds and platforms, unlike the standard hasher.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// Whether a resource of `own` namespace with `export_to` is visible to proxies in
/// `namespace` (Istio's exportTo; empty means every namespace).
pub fn exported_to(export_to: &[String], own: &str, namespace: &str) -> bool {
    export_to.is_empty() || export_to.iter().any(|e| e == "*" || e == namespace || (e == "." && own == namespace))
}

/// How a service's endpoints are found by the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// Endpoints pushed over EDS.
    Eds,
    /// The proxy resolves the endpoint names (`STRICT_DNS`).
    Dns,
    /// One DNS name, connections follow the answer (`LOGICAL_DNS`).
    DnsRoundRobin,
    /// No endpoints: connect to where the caller was going (`ORIGINAL_DST`).
    Passthrough,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// An IP, or a DNS name for DNS services.
    pub address: String,
    /// Service port → port on this endpoint.
    pub ports: BTreeMap<u16, u16>,
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub weight: Option<u32>,
    /// The workload behind the address (name, namespace), when the mesh knows it: a
    /// WorkloadEntry, or a pod (named by its Deployment, as Istio names workloads).
    pub workload: Option<(String, String)>,
}

impl Endpoint {
    /// Istio's endpoint metadata `istio.workload`: `name;namespace;canonical service;canonical
    /// revision;cluster`, which the proxies' telemetry names peers by.
    pub fn istio_workload(&self, cluster: &str) -> Option<String> {
        let (name, namespace) = self.workload.as_ref()?;
        let label = |keys: &[&str]| keys.iter().find_map(|k| self.labels.get(*k).cloned());
        let service = label(&["service.istio.io/canonical-name", "app.kubernetes.io/name", "app"]).unwrap_or_else(|| name.clone());
        let revision =
            label(&["service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"]).unwrap_or_else(|| "latest".into());
        Some(format!("{name};{namespace};{service};{revision};{cluster}"))
    }
}

/// The workload a pod belongs to, as Istio names it: a Deployment's pod (`<deployment>-<pod
/// template hash>-<suffix>`) by its Deployment, any other by its own name.
pub fn workload_of_pod(name: &str, labels: &BTreeMap<String, String>) -> String {
    if let Some(hash) = labels.get("pod-template-hash") {
        if let Some(i) = name.rfind(&format!("-{hash}-")) {
            return name[..i].to_owned();
        }
    }
    name.to_owned()
}

/// A workload the mesh knows from a `WorkloadEntry` (or from endpoints given directly).
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub address: String,
    pub labels: BTreeMap<String, String>,
    pub ports: BTreeMap<String, u32>,
    pub service_account: Option<String>,
}

#[derive(Debug, Default)]
pub struct Model {
    pub mesh: MeshConfig,
    pub services: Vec<Arc<Service>>,
    by_host: HashMap<String, usize>,
    pub virtual_services: Vec<Resource<net::VirtualService>>,
    pub destination_rules: Vec<Resource<net::DestinationRule>>,
    pub gateways: Vec<Resource<net::Gateway>>,
    pub sidecars: Vec<Resource<net::Sidecar>>,
    pub workloads: Vec<Workload>,
    pub peer_authentications: Vec<Resource<PeerAuthentication>>,
    /// Telemetry resources, sorted by namespace and name (Istio orders by creation time, which
    /// files do not have; a namespace with two selector-less ones is reported by `analyze`).
    pub telemetries: Vec<Resource<weft_api::telemetry::Telemetry>>,
    /// Running pods from the API server: labels and identity by address.
    pub pods: Vec<weft_api::core::PodInfo>,
    /// TLS credentials a gateway's `credentialName` may name, by (namespace, name).
    pub secrets: BTreeMap<(String, String), Arc<weft_api::core::TlsCredential>>,
}

pub fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn port16(p: u32) -> u16 {
    u16::try_from(p).unwrap_or(0)
}

impl Model {
    /// Builds the model from validated objects. Objects are taken in a stable order (namespace,
    /// name) so the same files always give the same config.
    pub fn build(objects: &[Object], mesh: MeshConfig) -> Model {
        Model::build_with_pods(objects, &[], mesh)
    }

    /// [`Model::build`] with the running pods an API server reports: the labels and service
    /// account of each address an EndpointSlice lists.
    pub fn build_with_pods(objects: &[Object], pods: &[weft_api::core::PodInfo], mesh: MeshConfig) -> Model {
        let mut m = Model { mesh, pods: pods.to_vec(), ..Model::default() };
        let mut k8s_services = Vec::new();
        let mut endpoints = HashMap::new();
        let mut slices: HashMap<(String, String), Vec<&Resource<weft_api::core::EndpointSlice>>> = HashMap::new();
        let mut service_entries = Vec::new();
        for o in objects {
            match o {
                Object::VirtualService(r) => m.virtual_services.push(r.clone()),
                Object::DestinationRule(r) => m.destination_rules.push(r.clone()),
                Object::Gateway(r) => m.gateways.push(r.clone()),
                Object::Sidecar(r) => m.sidecars.push(r.clone()),
                Object::PeerAuthentication(r) => m.peer_authentications.push(r.clone()),
                Object::Telemetry(r) => m.telemetries.push(r.clone()),
                // No address (another network's workload, warned about at load): nothing to
                // connect to.
                Object::WorkloadEntry(r) if r.spec.address.is_empty() => {}
                Object::WorkloadEntry(r) => m.workloads.push(Workload {
                    name: r.name.clone(),
                    namespace: r.namespace.clone(),
                    address: r.spec.address.clone(),
                    labels: merged(&r.labels, &r.spec.labels),
                    ports: r.spec.ports.clone(),
                    service_account: r.spec.service_account.clone(),
                }),
                Object::Service(r) => k8s_services.push(r),
                Object::Endpoints(r) => {
                    endpoints.insert((r.namespace.clone(), r.name.clone()), r);
                }
                Object::EndpointSlice(r) => {
                    if let Some(svc) = r.labels.get("kubernetes.io/service-name") {
                        slices.entry((r.namespace.clone(), svc.clone())).or_default().push(r);
                    }
                }
                Object::ServiceEntry(r) => service_entries.push(r),
                Object::Secret(r) => {
                    m.secrets.insert((r.namespace.clone(), r.name.clone()), Arc::new(r.spec.clone()));
                }
            }
        }
        m.virtual_services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        m.destination_rules.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        m.gateways.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        m.sidecars.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        m.workloads.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        m.peer_authentications.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        m.telemetries.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));

        let mut services = Vec::new();
        for r in k8s_services {
            services.push(m.kube_service(
                r,
                endpoints.get(&(r.namespace.clone(), r.name.clone())).copied(),
                slices.get(&(r.namespace.clone(), r.name.clone())),
            ));
        }
        for r in service_entries {
            services.extend(m.service_entry(r));
        }
        services.sort_by(|a: &Service, b| a.hostname.cmp(&b.hostname));
        // The first definition of a host wins (Kubernetes services sort before ServiceEntries of
        // the same name only by hostname order; duplicates are reported by `analyze`).
        services.dedup_by(|a, b| a.hostname == b.hostname);
        auto_allocate(&mut services);
        m.services = services.into_iter().map(Arc::new).collect();
        m.by_host = m.services.iter().enumerate().map(|(i, s)| (s.hostname.clone(), i)).collect();
        m
    }

    pub fn service(&self, host: &str) -> Option<&Arc<Service>> {
        self.by_host.get(host).map(|i| &self.services[*i])
    }

    fn kube_service(
        &self,
        r: &Resource<weft_api::core::Service>,
        eps: Option<&Resource<weft_api::core::Endpoints>>,
        slices: Option<&Vec<&Resource<weft_api::core::EndpointSlice>>>,
    ) -> Service {
        let ports: Vec<ServicePort> = r
            .spec
            .ports
            .iter()
            .map(|p| ServicePort {
                name: p.name.clone().unwrap_or_default(),
                port: port16(p.port),
                protocol: Protocol::for_service_port(p.name.as_deref(), p.app_protocol.as_deref(), p.protocol.as_deref(), p.port),
            })
            .collect();
        let mut endpoints = Vec::new();
        if !r.spec.selector.is_empty() {
            for w in &self.workloads {
                if w.namespace != r.namespace || !labels_match(&r.spec.selector, &w.labels) {
                    continue;
                }
                let mut map = BTreeMap::new();
                for p in &r.spec.ports {
                    let target = match &p.target_port {
                        None => Some(p.port),
                        Some(IntOrString::Int(n)) => Some(*n),
                        Some(IntOrString::String(name)) => w.ports.get(name).copied(),
                    };
                    // A WorkloadEntry may also map the service port's name to its own port.
                    let target = p.name.as_ref().and_then(|n| w.ports.get(n)).copied().or(target);
                    if let Some(t) = target {
                        map.insert(port16(p.port), port16(t));
                    }
                }
                endpoints.push(Endpoint {
                    address: w.address.clone(),
                    ports: map,
                    labels: w.labels.clone(),
                    service_account: w.service_account.clone(),
                    weight: None,
                    workload: Some((w.name.clone(), w.namespace.clone())),
                });
            }
        }
        let by_name = |name: &Option<String>, port: u32| -> Option<u16> {
            r.spec
                .ports
                .iter()
                .find(|sp| sp.name == *name || (r.spec.ports.len() == 1 && name.is_none()))
                .map(|sp| port16(sp.port))
                .or_else(|| {
                    // Unnamed endpoint port on a single-port service.
                    (r.spec.ports.len() == 1).then(|| port16(r.spec.ports[0].port)).filter(|_| port > 0)
                })
        };
        if let Some(e) = eps {
            for s in &e.spec.subsets {
                for a in &s.addresses {
                    let mut map = BTreeMap::new();
                    for p in &s.ports {
                        if let Some(sp) = by_name(&p.name, p.port) {
                            map.insert(sp, port16(p.port));
                        }
                    }
                    let labels = self.labels_for_ip(&a.ip, &r.namespace);
                    let workload = self.workload_at(&a.ip, &r.namespace);
                    endpoints.push(Endpoint { address: a.ip.clone(), ports: map, labels, service_account: None, weight: None, workload });
                }
            }
        }
        for sl in slices.into_iter().flatten() {
            for ep in &sl.spec.endpoints {
                if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for a in &ep.addresses {
                    let mut map = BTreeMap::new();
                    for p in &sl.spec.ports {
                        if let Some(sp) = by_name(&p.name, p.port) {
                            map.insert(sp, port16(p.port));
                        }
                    }
                    let labels = self.labels_for_ip(a, &r.namespace);
                    let service_account = self.pod_at(a, &r.namespace).and_then(|p| p.service_account.clone());
                    let workload = self.workload_at(a, &r.namespace);
                    endpoints.push(Endpoint { address: a.clone(), ports: map, labels, service_account, weight: None, workload });
                }
            }
        }
        endpoints.sort_by(|a, b| a.address.cmp(&b.address));
        endpoints.dedup_by(|a, b| a.address == b.address);
        Service {
            hostname: format!("{}.{}.{DOMAIN_SUFFIX}", r.name, r.namespace),
            namespace: r.namespace.clone(),
            short_name: Some(r.name.clone()),
            vip: r.spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()),
            ranges: r.spec.cluster_ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()).map(ipnet::IpNet::from).into_iter().collect(),
            auto_vip: None,
            ports,
            endpoints,
            discovery: Discovery::Eds,
            external: false,
            // Istio's annotation on a Kubernetes Service.
            export_to: r
                .annotations
                .get("networking.istio.io/exportTo")
                .map(|v| v.split(',').map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect())
                .unwrap_or_default(),
            subject_alt_names: Vec::new(),
        }
    }

    /// Labels of the WorkloadEntry at `ip`, so subsets can select endpoints given directly.
    fn labels_for_ip(&self, ip: &str, namespace: &str) -> BTreeMap<String, String> {
        if let Some(p) = self.pod_at(ip, namespace) {
            return p.labels.clone();
        }
        self.workloads.iter().find(|w| w.address == ip && w.namespace == namespace).map(|w| w.labels.clone()).unwrap_or_default()
    }

    /// The workload at `ip`: the pod's (by its Deployment), else a WorkloadEntry's.
    fn workload_at(&self, ip: &str, namespace: &str) -> Option<(String, String)> {
        if let Some(p) = self.pod_at(ip, namespace) {
            return Some((workload_of_pod(&p.name, &p.labels), p.namespace.clone()));
        }
        self.workloads.iter().find(|w| w.address == ip && w.namespace == namespace).map(|w| (w.name.clone(), w.namespace.clone()))
    }

    fn pod_at(&self, ip: &str, namespace: &str) -> Option<&weft_api::core::PodInfo> {
        self.pods.iter().find(|p| p.ip == ip && p.namespace == namespace)
    }

    fn service_entry(&self, r: &Resource<net::ServiceEntry>) -> Vec<Service> {
        let se = &r.spec;
        let ports: Vec<ServicePort> = se
            .ports
            .iter()
            .map(|p| ServicePort {
                name: p.name.clone().unwrap_or_default(),
                port: port16(p.number),
                protocol: p.protocol.as_deref().and_then(Protocol::parse).unwrap_or(Protocol::Auto),
            })
            .collect();
        // Endpoints in WorkloadEntry shape, whether listed inline or selected.
        // A selector picks WorkloadEntries and, from an API server, running pods of the
        // entry's namespace, as Istio's does.
        let entries: Vec<net::WorkloadEntry> = match &se.workload_selector {
            Some(sel) => self
                .workloads
                .iter()
                .filter(|w| w.namespace == r.namespace && labels_match(&sel.labels, &w.labels))
                .map(|w| net::WorkloadEntry {
                    address: w.address.clone(),
                    ports: w.ports.clone(),
                    labels: w.labels.clone(),
                    service_account: w.service_account.clone(),
                    ..Default::default()
                })
                .chain(self.pods.iter().filter(|p| p.namespace == r.namespace && labels_match(&sel.labels, &p.labels)).map(|p| {
                    net::WorkloadEntry {
                        address: p.ip.clone(),
                        labels: p.labels.clone(),
                        service_account: p.service_account.clone(),
                        ..Default::default()
                    }
                }))
                .collect(),
            None => se.endpoints.clone(),
        };
        let discovery = match se.resolution {
            Resolution::None => Discovery::Passthrough,
            Resolution::Static => Discovery::Eds,
            Resolution::Dns => Discovery::Dns,
            Resolution::DnsRoundRobin => Discovery::DnsRoundRobin,
        };
        // Validation refused anything that is not an address or a CIDR range.
        let ranges: Vec<ipnet::IpNet> = se
            .addresses
            .iter()
            .filter_map(|a| a.parse::<ipnet::IpNet>().ok().or_else(|| a.parse::<IpAddr>().ok().map(Into::into)))
            .collect();
        let vip = ranges.first().filter(|r| r.prefix_len() == r.max_prefix_len()).map(|r| r.addr());
        se.hosts
            .iter()
            .map(|host| {
                let mut endpoints: Vec<Endpoint> = entries
                    .iter()
                    .filter(|e| !e.address.is_empty())
                    .map(|e| Endpoint {
                        address: e.address.clone(),
                        ports: se
                            .ports
                            .iter()
                            .map(|p| {
                                let name = p.name.clone().unwrap_or_default();
                                let target = e.ports.get(&name).copied().or(p.target_port).unwrap_or(p.number);
                                (port16(p.number), port16(target))
                            })
                            .collect(),
                        labels: e.labels.clone(),
                        service_account: e.service_account.clone(),
                        weight: e.weight,
                        workload: None,
                    })
                    .collect();
                // DNS resolution with no endpoints resolves the host itself.
                if endpoints.is_empty() && matches!(discovery, Discovery::Dns | Discovery::DnsRoundRobin) {
                    endpoints.push(Endpoint {
                        address: host.clone(),
                        ports: ports.iter().map(|p| (p.port, p.port)).collect(),
                        labels: BTreeMap::new(),
                        service_account: None,
                        weight: None,
                        workload: None,
                    });
                }
                Service {
                    hostname: host.clone(),
                    namespace: r.namespace.clone(),
                    short_name: None,
                    vip,
                    ranges: ranges.clone(),
                    auto_vip: None,
                    ports: ports.clone(),
                    endpoints,
                    discovery,
                    external: se.location == net::Location::MeshExternal,
                    export_to: se.export_to.clone(),
                    subject_alt_names: se.subject_alt_names.clone(),
                }
            })
            .collect()
    }

    /// Resolves a host as written in a resource of `namespace` (`reviews`, `reviews.prod`,
    /// or a full name) to the hostname the registry uses.
    pub fn resolve_host(&self, host: &str, namespace: &str) -> String {
        if host.contains('*') || self.by_host.contains_key(host) {
            return host.to_string();
        }
        match host.matches('.').count() {
            0 => format!("{host}.{namespace}.{DOMAIN_SUFFIX}"),
            1 => format!("{host}.{DOMAIN_SUFFIX}"),
            _ if host.ends_with(".svc") => format!("{host}.cluster.local"),
            _ => host.to_string(),
        }
    }

    /// The DestinationRule for `host` as seen from `namespace`: the proxy's own namespace first,
    /// then the host's namespace, then the root namespace (Istio's lookup order).
    pub fn destination_rule(&self, host: &str, proxy_ns: &str) -> Option<&Resource<net::DestinationRule>> {
        let svc_ns = self.service(host).map(|s| s.namespace.as_str());
        let order = [Some(proxy_ns), svc_ns, Some(self.mesh.root_namespace.as_str())];
        for ns in order.into_iter().flatten() {
            if let Some(dr) = self.destination_rules.iter().find(|d| {
                d.namespace == ns
                    && self.resolve_host(&d.spec.host, &d.namespace) == host
                    && d.spec.workload_selector.is_none()
                    && exported_to(&d.spec.export_to, &d.namespace, proxy_ns)
            }) {
                return Some(dr);
            }
        }
        None
    }
}

fn merged(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut m = a.clone();
    m.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())));
    m
}

/// Whether `pattern` (a host, possibly `*.suffix` or `*`) covers `host`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod workload_tests {
    use super::*;

    #[test]
    fn a_deployments_pod_is_named_by_its_deployment() {
        let hash = BTreeMap::from([("pod-template-hash".to_owned(), "7c9d8f5b6".to_owned())]);
        assert_eq!(workload_of_pod("reviews-v1-7c9d8f5b6-x2k4q", &hash), "reviews-v1");
        assert_eq!(workload_of_pod("db-0", &BTreeMap::new()), "db-0", "a StatefulSet's pod keeps its name");
        let e = Endpoint {
            address: "10.1.0.5".into(),
            ports: BTreeMap::new(),
            labels: BTreeMap::from([("app".to_owned(), "reviews".to_owned())]),
            service_account: None,
            weight: None,
            workload: Some(("reviews-v1".into(), "shop".into())),
        };
        assert_eq!(e.istio_workload("Kubernetes").as_deref(), Some("reviews-v1;shop;reviews;latest;Kubernetes"));
    }
}
