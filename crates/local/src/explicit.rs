//! Explicit mode (`weft up --explicit`): the mesh without network namespaces, bridge, capture or
//! privileges. Every process runs as the invoking user in the machine's own network namespace;
//! each workload gets two loopback addresses from `--loopback`:
//!
//! - the **mesh address**, its WorkloadEntry's: its sidecar listens there on the workload's
//!   ports (mTLS from other sidecars, as PeerAuthentication says), on the HTTP proxy port, and
//!   on 15000/15021/15090;
//! - the **app address**, where the application listens (`WEFT_LISTEN_ADDRESS`; `weft sample`
//!   gets `--listen`).
//!
//! The application is pointed at its sidecar rather than captured: `HTTP_PROXY` names the
//! sidecar's HTTP proxy listener (Istio's `proxyHttpPort`). The sidecar tells the control plane
//! so with Istio's node metadata (`INTERCEPTION_MODE: NONE`, `HTTP_PROXY_PORT`), and its
//! inbound listeners come from a `Sidecar` per workload with `ingress` listeners bound to the
//! mesh address and `defaultEndpoint` the app address — the Istio way to configure a proxy
//! that captures nothing. The control plane (xDS, CA, debug) takes the range's first address.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;
use serde_json::{json, Value};

use crate::bootstrap::{ADMIN_PORT, HEALTH_PORT, STATS_PORT};
use crate::spec::{MeshFile, Workload, CAPTURE_ANNOTATION_PREFIX};
use crate::{addr, LocalError};

pub const DEFAULT_LOOPBACK: &str = "127.77.0.0/16";
/// The sidecar's HTTP proxy port unless MeshConfig `proxyHttpPort` says otherwise (Istio has
/// no default; 15080 sits among its other sidecar ports).
pub const DEFAULT_PROXY_HTTP_PORT: u16 = 15080;
/// The label that makes each workload's own `Sidecar` select it and nothing else.
pub const WORKLOAD_LABEL: &str = "weft.dev/workload";
/// The ports of the control plane on its address: xDS, xDS + CA over TLS, debug API.
pub const XDS_PORT: u16 = 15010;
pub const SECURE_PORT: u16 = 15012;
pub const DEBUG_PORT: u16 = 15014;

/// The loopback addresses of one explicit run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses {
    pub control_plane: Ipv4Addr,
    /// Per workload, in file order: its mesh address and its app address.
    pub workloads: Vec<(Ipv4Addr, Ipv4Addr)>,
}

/// Checks `--loopback`: inside 127.0.0.0/8 and clear of 127.0.0.1, which every program on the
/// machine shares.
pub fn check_range(range: Ipv4Net) -> Result<(), String> {
    let loopback: Ipv4Net = Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).map_err(|e| e.to_string())?;
    if !loopback.contains(&range) {
        return Err(format!("--loopback {range}: not a loopback range (it must lie inside 127.0.0.0/8)"));
    }
    if range.contains(&Ipv4Addr::LOCALHOST) {
        return Err(format!(
            "--loopback {range}: contains 127.0.0.1, which every program on this machine shares; pick another, e.g. {DEFAULT_LOOPBACK}"
        ));
    }
    if range.prefix_len() > 30 {
        return Err(format!("--loopback {range}: too small; a /30 holds the control plane and one workload"));
    }
    Ok(())
}

/// The control plane's address in `range`: its first.
pub fn control_plane_address(range: Ipv4Net) -> Option<Ipv4Addr> {
    addr::host_address(range, 1)
}

/// Addresses for `n` workloads: the control plane first, then two per workload.
pub fn addresses(range: Ipv4Net, n: usize) -> Result<Addresses, LocalError> {
    let room = || {
        let hosts = (1u64 << (32 - range.prefix_len())).saturating_sub(3);
        LocalError::Spec(format!("--loopback {range} has room for {} workloads (two addresses each); the file has {n}", hosts / 2))
    };
    let control_plane = control_plane_address(range).ok_or_else(room)?;
    let workloads = (0..n as u32)
        .map(|i| Some((addr::host_address(range, 2 + 2 * i)?, addr::host_address(range, 3 + 2 * i)?)))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(room)?;
    Ok(Addresses { control_plane, workloads })
}

/// The HTTP proxy port: MeshConfig `proxyHttpPort`, else 15080.
pub fn proxy_http_port(mesh: &MeshFile) -> u16 {
    mesh.mesh_config
        .as_ref()
        .and_then(|m| m.get("proxyHttpPort")?.as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(DEFAULT_PROXY_HTTP_PORT)
}

/// The ports a sidecar holds on its workload's mesh address.
fn sidecar_ports(proxy_port: u16) -> [(u16, &'static str); 4] {
    [(ADMIN_PORT, "admin"), (HEALTH_PORT, "health"), (proxy_port, "HTTP proxy"), (STATS_PORT, "stats")]
}

/// A workload port the sidecar needs on the same address is refused, naming the field; so is a
/// `proxyHttpPort` that collides with the sidecar's own ports.
pub fn check_ports(mesh: &MeshFile, proxy_port: u16) -> Result<(), LocalError> {
    if [ADMIN_PORT, HEALTH_PORT, STATS_PORT].contains(&proxy_port) {
        return Err(LocalError::Spec(format!(
            "MeshConfig spec.proxyHttpPort: {proxy_port} is already a sidecar port ({ADMIN_PORT} admin, {HEALTH_PORT} health, {STATS_PORT} stats)"
        )));
    }
    let taken = sidecar_ports(proxy_port);
    for w in mesh.workloads.iter().filter(|w| w.sidecar()) {
        if let Some((port, what)) = w.ports.iter().find_map(|p| taken.iter().find(|(t, _)| t == p)) {
            let list: Vec<String> = taken.iter().map(|(p, n)| format!("{p} {n}")).collect();
            return Err(LocalError::Spec(format!(
                "Workload {}: spec.ports: {port} is the sidecar's {what} port on the workload's mesh address in explicit mode (taken: {}); \
                 move the application to another port",
                w.id(),
                list.join(", ")
            )));
        }
    }
    Ok(())
}

/// What is worth saying about the file in explicit mode.
pub fn warnings(mesh: &MeshFile) -> Vec<String> {
    mesh.workloads
        .iter()
        .filter(|w| w.annotations.keys().any(|k| k.starts_with(CAPTURE_ANNOTATION_PREFIX)))
        .map(|w| format!("Workload {}: {CAPTURE_ANNOTATION_PREFIX}* annotations do nothing in explicit mode (nothing is captured)", w.id()))
        .collect()
}

/// Every socket the run will listen on, so a clash with another mesh or program is found before
/// anything starts: the control plane's, and per workload the sidecar's and the application's.
pub fn sockets(mesh: &MeshFile, addrs: &Addresses, debug: SocketAddr, proxy_port: u16) -> Vec<SocketAddr> {
    let cp = IpAddr::V4(addrs.control_plane);
    let mut out = vec![SocketAddr::new(cp, XDS_PORT), SocketAddr::new(cp, SECURE_PORT), debug];
    for (w, (mesh_ip, app_ip)) in mesh.workloads.iter().zip(&addrs.workloads) {
        let app_ip = if w.sidecar() { *app_ip } else { *mesh_ip };
        if w.sidecar() {
            out.extend(sidecar_ports(proxy_port).iter().map(|(p, _)| SocketAddr::from((*mesh_ip, *p))));
            out.extend(w.ports.iter().map(|p| SocketAddr::from((*mesh_ip, *p))));
        }
        out.extend(w.ports.iter().map(|p| SocketAddr::from((app_ip, *p))));
    }
    out
}

/// Binds each socket for a moment; the first that cannot be bound is the error.
pub fn check_free(sockets: &[SocketAddr], range: Ipv4Net) -> Result<(), LocalError> {
    for s in sockets {
        if let Err(e) = std::net::TcpListener::bind(s) {
            return Err(LocalError::Environment(format!(
                "{s} cannot be bound ({e}): another mesh on --loopback {range}, or another program, holds it; \
                 stop that one (`weft down --run-dir …`) or pick another range with --loopback"
            )));
        }
    }
    Ok(())
}

/// The labels of `w` in explicit mode: its own plus the one its `Sidecar` selects.
pub fn labels(w: &Workload) -> BTreeMap<String, String> {
    let mut labels = w.labels.clone();
    labels.insert(WORKLOAD_LABEL.into(), w.name.clone());
    labels
}

/// A `Sidecar` per workload with a sidecar: ingress listeners on the mesh address delivering to
/// the app address, and the egress scoping and outbound policy the namespace's (or the mesh's)
/// own `Sidecar` would have given it, since a workload-selecting Sidecar replaces those in
/// Istio. A Sidecar of the file that already selects a workload is refused: two selecting one
/// workload is undefined in Istio.
pub fn sidecars(mesh: &MeshFile, addrs: &Addresses, root_namespace: &str) -> Result<Vec<Value>, LocalError> {
    let sidecars: Vec<&serde_yaml::Value> = mesh.resources.iter().filter(|r| kind(r) == "Sidecar").collect();
    let mut out = Vec::new();
    for (w, (mesh_ip, app_ip)) in mesh.workloads.iter().zip(&addrs.workloads) {
        if !w.sidecar() {
            continue;
        }
        if let Some(s) = sidecars.iter().find(|s| namespace(s) == w.namespace && selects(s, w)) {
            return Err(LocalError::Spec(format!(
                "Sidecar {}/{} selects Workload {}; in explicit mode weft up writes the Sidecar that selects each workload \
                 (its ingress listeners bind the workload's addresses). Give egress and outboundTrafficPolicy to a \
                 namespace-wide Sidecar (no workloadSelector) instead",
                namespace(s),
                name(s),
                w.id()
            )));
        }
        let wide = |ns: &str| sidecars.iter().find(|s| namespace(s) == ns && selector(s).is_none());
        let inherited = wide(&w.namespace).or_else(|| wide(root_namespace));
        let ingress: Vec<Value> = w
            .ports
            .iter()
            .map(|p| {
                let mut port = json!({"number": p, "name": format!("port-{p}")});
                if let Some(proto) = ingress_protocol(mesh, w, *p) {
                    port["protocol"] = json!(proto);
                }
                json!({"port": port, "bind": mesh_ip.to_string(), "captureMode": "NONE", "defaultEndpoint": format!("{app_ip}:{p}")})
            })
            .collect();
        let mut spec = json!({"workloadSelector": {"labels": {WORKLOAD_LABEL: w.name}}, "ingress": ingress});
        for field in ["egress", "outboundTrafficPolicy"] {
            if let Some(v) = inherited.and_then(|s| s.get("spec")?.get(field)) {
                spec[field] = serde_json::to_value(v).map_err(|e| LocalError::Spec(e.to_string()))?;
            }
        }
        // No port and nothing inherited: a Sidecar would say nothing (Istio refuses an empty
        // one), and with no namespace-wide Sidecar there is nothing for it to replace.
        let says_something = ["ingress", "egress", "outboundTrafficPolicy"]
            .iter()
            .any(|f| spec.get(*f).is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty())));
        if !says_something {
            continue;
        }
        out.push(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
            "metadata": {"name": format!("weft-explicit-{}", w.name), "namespace": w.namespace},
            "spec": spec,
        }));
    }
    Ok(out)
}

/// The protocol of `w`'s `port` as the Services selecting it name it (Istio reads a Sidecar
/// ingress port's protocol from `protocol` only, so it is written out): `appProtocol`, else the
/// port name's prefix. None: sniffed.
fn ingress_protocol(mesh: &MeshFile, w: &Workload, port: u16) -> Option<String> {
    const KNOWN: [&str; 10] = ["http", "http2", "grpc", "grpc-web", "https", "tcp", "tls", "mongo", "redis", "mysql"];
    for svc in mesh.resources.iter().filter(|r| kind(r) == "Service" && namespace(r) == w.namespace) {
        let Some(spec) = svc.get("spec") else { continue };
        let sel = spec.get("selector").and_then(|s| s.as_mapping());
        let selected = sel.is_some_and(|m| {
            !m.is_empty()
                && m.iter().all(|(k, v)| k.as_str().zip(v.as_str()).is_some_and(|(k, v)| w.labels.get(k).map(String::as_str) == Some(v)))
        });
        if !selected {
            continue;
        }
        for p in spec.get("ports").and_then(|p| p.as_sequence()).into_iter().flatten() {
            let target = p.get("targetPort").and_then(|t| t.as_u64()).or_else(|| p.get("port").and_then(|t| t.as_u64()));
            if target != Some(u64::from(port)) {
                continue;
            }
            let app = p.get("appProtocol").and_then(|a| a.as_str()).map(str::to_ascii_lowercase);
            let name = p.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_ascii_lowercase();
            let from_name =
                if name.starts_with("grpc-web") { "grpc-web".to_string() } else { name.split('-').next().unwrap_or_default().to_string() };
            let proto = app.unwrap_or(from_name);
            return KNOWN.contains(&proto.as_str()).then(|| proto.to_ascii_uppercase());
        }
    }
    None
}

/// The application's environment in explicit mode: where to listen, where its sidecar is, and
/// `HTTP_PROXY`/`http_proxy` pointing at the sidecar (none without a sidecar). `INSTANCE_IP`
/// is the listen address, since applications bind it.
pub fn app_env(w: &Workload, mesh_ip: Ipv4Addr, app_ip: Ipv4Addr, proxy_port: u16) -> Vec<(String, String)> {
    let listen = if w.sidecar() { app_ip } else { mesh_ip };
    let mut env = vec![
        ("INSTANCE_IP".into(), listen.to_string()),
        ("WEFT_LISTEN_ADDRESS".into(), listen.to_string()),
        ("WEFT_MESH_ADDRESS".into(), mesh_ip.to_string()),
    ];
    if w.sidecar() {
        let proxy = format!("http://{mesh_ip}:{proxy_port}");
        env.push(("HTTP_PROXY".into(), proxy.clone()));
        env.push(("http_proxy".into(), proxy));
    }
    env
}

/// `weft sample …` with one port and no `--listen` listens on the app address at that port.
pub fn sample_listen(w: &Workload, listen: Ipv4Addr) -> Option<[String; 2]> {
    let sample = w.command.first().is_some_and(|c| c == "weft") && w.command.get(1).is_some_and(|c| c == "sample");
    let told = w.command.iter().any(|a| a == "--listen" || a.starts_with("--listen="));
    match (sample && !told, w.ports.as_slice()) {
        (true, [port]) => Some(["--listen".into(), format!("{listen}:{port}")]),
        _ => None,
    }
}

fn kind(r: &serde_yaml::Value) -> &str {
    r.get("kind").and_then(|k| k.as_str()).unwrap_or_default()
}

fn name(r: &serde_yaml::Value) -> &str {
    r.get("metadata").and_then(|m| m.get("name")).and_then(|n| n.as_str()).unwrap_or_default()
}

fn namespace(r: &serde_yaml::Value) -> &str {
    r.get("metadata").and_then(|m| m.get("namespace")).and_then(|n| n.as_str()).unwrap_or("default")
}

fn selector(r: &serde_yaml::Value) -> Option<&serde_yaml::Mapping> {
    r.get("spec")?.get("workloadSelector")?.get("labels")?.as_mapping().filter(|m| !m.is_empty())
}

fn selects(r: &serde_yaml::Value, w: &Workload) -> bool {
    selector(r).is_some_and(|m| {
        m.iter().all(|(k, v)| k.as_str().zip(v.as_str()).is_some_and(|(k, v)| w.labels.get(k).map(String::as_str) == Some(v)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1, labels: {app: reviews, version: v1}}
spec:
  command: [weft, sample, reviews]
  ports: [{containerPort: 9080}]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: client, labels: {app: client}}
spec:
  command: [sleep, '600']
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http-web, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress: [{hosts: ['./*']}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
";

    fn range() -> Ipv4Net {
        DEFAULT_LOOPBACK.parse().expect("range")
    }

    #[test]
    fn ranges_must_be_loopback_clear_of_localhost_and_big_enough() {
        assert!(check_range(range()).is_ok());
        assert!(check_range("10.0.0.0/24".parse().expect("net")).unwrap_err().contains("not a loopback range"));
        assert!(check_range("127.0.0.0/16".parse().expect("net")).unwrap_err().contains("127.0.0.1"));
        assert!(check_range("127.9.0.0/31".parse().expect("net")).unwrap_err().contains("too small"));
        let a = addresses(range(), 2).expect("room");
        assert_eq!(a.control_plane, Ipv4Addr::new(127, 77, 0, 1));
        assert_eq!(
            a.workloads,
            [(Ipv4Addr::new(127, 77, 0, 2), Ipv4Addr::new(127, 77, 0, 3)), (Ipv4Addr::new(127, 77, 0, 4), Ipv4Addr::new(127, 77, 0, 5))]
        );
        let tiny: Ipv4Net = "127.9.0.0/29".parse().expect("net");
        assert!(addresses(tiny, 2).is_ok());
        assert!(matches!(addresses(tiny, 3), Err(LocalError::Spec(m)) if m.contains("--loopback 127.9.0.0/29 has room for 2 workloads")));
    }

    #[test]
    fn sidecar_ports_cannot_be_workload_ports() {
        let mesh = crate::spec::parse(FILE, "m.yaml").expect("valid");
        assert!(check_ports(&mesh, DEFAULT_PROXY_HTTP_PORT).is_ok());
        let clash = crate::spec::parse(&FILE.replace("containerPort: 9080", "containerPort: 15021"), "m.yaml").expect("valid");
        assert!(
            matches!(check_ports(&clash, 15080), Err(LocalError::Spec(m)) if m.contains("Workload default/reviews-v1: spec.ports: 15021 is the sidecar's health port"))
        );
        assert!(matches!(check_ports(&mesh, 9080), Err(LocalError::Spec(_))), "9080 is the application's port");
        assert!(matches!(check_ports(&mesh, 15090), Err(LocalError::Spec(m)) if m.starts_with("MeshConfig spec.proxyHttpPort")));
    }

    #[test]
    fn a_workload_with_no_port_and_nothing_to_inherit_gets_no_sidecar() {
        let file = "apiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {name: client}\nspec:\n  command: [\"true\"]\n";
        let mesh = crate::spec::parse(file, "m.yaml").expect("valid");
        let addrs = addresses(range(), mesh.workloads.len()).expect("room");
        assert!(sidecars(&mesh, &addrs, "istio-system").expect("sidecars").is_empty(), "an empty Sidecar is invalid in Istio");
    }

    #[test]
    fn each_workload_gets_a_sidecar_binding_its_addresses_with_the_namespace_egress() {
        let mesh = crate::spec::parse(FILE, "m.yaml").expect("valid");
        let addrs = addresses(range(), mesh.workloads.len()).expect("room");
        let out = sidecars(&mesh, &addrs, "istio-system").expect("sidecars");
        assert_eq!(out.len(), 2);
        let reviews = &out[0];
        assert_eq!(reviews["metadata"]["name"], "weft-explicit-reviews-v1");
        assert_eq!(reviews["spec"]["workloadSelector"]["labels"][WORKLOAD_LABEL], "reviews-v1");
        assert_eq!(
            reviews["spec"]["ingress"][0],
            json!({"port": {"number": 9080, "name": "port-9080", "protocol": "HTTP"}, "bind": "127.77.0.2", "captureMode": "NONE", "defaultEndpoint": "127.77.0.3:9080"})
        );
        assert_eq!(reviews["spec"]["egress"], json!([{"hosts": ["./*"]}]));
        assert_eq!(reviews["spec"]["outboundTrafficPolicy"]["mode"], "REGISTRY_ONLY");
        assert_eq!(out[1]["spec"]["ingress"], json!([]), "the client serves nothing");
        // The generated Sidecars load as the control plane will read them.
        let text: String = out.iter().map(|s| format!("---\n{}", serde_yaml::to_string(s).expect("yaml"))).collect();
        let loaded = weft_api::load_text(&text, "sidecars.yaml");
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);

        let selecting = FILE.replace(
            "metadata: {name: default, namespace: default}\nspec:\n",
            "metadata: {name: r, namespace: default}\nspec:\n  workloadSelector: {labels: {app: reviews}}\n",
        );
        let mesh = crate::spec::parse(&selecting, "m.yaml").expect("valid");
        assert!(
            matches!(sidecars(&mesh, &addrs, "istio-system"), Err(LocalError::Spec(m)) if m.starts_with("Sidecar default/r selects Workload default/reviews-v1"))
        );
    }

    #[test]
    fn applications_are_pointed_at_their_sidecar() {
        let mesh = crate::spec::parse(FILE, "m.yaml").expect("valid");
        let (m, a) = (Ipv4Addr::new(127, 77, 0, 2), Ipv4Addr::new(127, 77, 0, 3));
        let env: BTreeMap<String, String> = app_env(&mesh.workloads[0], m, a, 15080).into_iter().collect();
        assert_eq!(env["HTTP_PROXY"], "http://127.77.0.2:15080");
        assert_eq!(env["http_proxy"], "http://127.77.0.2:15080");
        assert_eq!(env["WEFT_LISTEN_ADDRESS"], "127.77.0.3");
        assert_eq!(env["WEFT_MESH_ADDRESS"], "127.77.0.2");
        assert_eq!(sample_listen(&mesh.workloads[0], a), Some(["--listen".to_string(), "127.77.0.3:9080".to_string()]));
        assert_eq!(sample_listen(&mesh.workloads[1], a), None, "not a sample");
        let mut told = mesh.workloads[0].clone();
        told.command.push("--listen=127.0.0.1:1".into());
        assert_eq!(sample_listen(&told, a), None, "the file's own --listen stays");
        let mut bare = mesh.workloads[0].clone();
        bare.annotations.insert("sidecar.istio.io/inject".into(), "false".into());
        let env: BTreeMap<String, String> = app_env(&bare, m, a, 15080).into_iter().collect();
        assert!(!env.contains_key("HTTP_PROXY"));
        assert_eq!(env["WEFT_LISTEN_ADDRESS"], "127.77.0.2", "without a sidecar the application is at the mesh address");
    }
}
