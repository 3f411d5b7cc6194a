//! A mesh in network namespaces: a hub namespace with a bridge (the control plane lives there)
//! and one namespace per pod, each with its own address on the bridge, iptables capture as
//! istio-iptables sets it up, a sidecar running with GID 1337, and its application.
//! Nothing routes off the hub. Processes are killed by PID and namespaces deleted on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::{sh, Netns};

pub const HUB_IP: &str = "10.77.0.1";
pub const XDS_PORT: u16 = 15010;

pub struct Pod {
    pub name: String,
    pub ns: Netns,
    pub ip: String,
}

pub struct Mesh {
    pub hub: Netns,
    pub dir: PathBuf,
    pods: usize,
    children: Vec<(String, Child)>,
}

/// The sidecar a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sidecar {
    Envoy,
    Weft,
}

impl Mesh {
    pub fn new(tag: &str) -> anyhow::Result<Mesh> {
        let hub = Netns::new(&format!("{tag}-hub"))?;
        hub.exec("ip", &["link", "add", "br0", "type", "bridge"])?;
        hub.exec("ip", &["addr", "add", &format!("{HUB_IP}/16"), "dev", "br0"])?;
        hub.exec("ip", &["link", "set", "br0", "up"])?;
        let dir = crate::proxy::temp_dir(&format!("mesh-{tag}"));
        Ok(Mesh { hub, dir, pods: 0, children: Vec::new() })
    }

    /// A pod namespace on the bridge, with a default route to the hub so service VIPs are
    /// routable (and then captured) inside it.
    pub fn pod(&mut self, name: &str) -> anyhow::Result<Pod> {
        self.pods += 1;
        let n = self.pods;
        let ns = Netns::new(&format!("{}{n}", &name[..name.len().min(6)]))?;
        let ip = format!("10.77.1.{n}");
        let peer = format!("wp{n}x{}", std::process::id() % 100_000);
        sh("ip", &["-n", &ns.name, "link", "add", "eth0", "type", "veth", "peer", "name", &peer, "netns", &self.hub.name])?;
        self.hub.exec("ip", &["link", "set", &peer, "master", "br0", "up"])?;
        ns.exec("ip", &["addr", "add", &format!("{ip}/16"), "dev", "eth0"])?;
        ns.exec("ip", &["link", "set", "eth0", "up"])?;
        ns.exec("ip", &["route", "add", "default", "via", HUB_IP])?;
        Ok(Pod { name: name.into(), ns, ip })
    }

    /// Starts `cmd` in `ns` (the hub when `None`), logging to `<dir>/<label>.log`.
    pub fn spawn(&mut self, label: &str, ns: Option<&Netns>, gid_1337: bool, cmd: &Path, args: &[&str]) -> anyhow::Result<()> {
        self.spawn_env(label, ns, gid_1337, cmd, args, &[])
    }

    /// [`Mesh::spawn`] with these environment variables added (a container's `env`).
    pub fn spawn_env(
        &mut self,
        label: &str,
        ns: Option<&Netns>,
        gid_1337: bool,
        cmd: &Path,
        args: &[&str],
        env: &[(String, String)],
    ) -> anyhow::Result<()> {
        let ns = ns.unwrap_or(&self.hub);
        let log = std::fs::File::create(self.dir.join(format!("{label}.log")))?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns.name]);
        if gid_1337 {
            // Root UID keeps access to the Envoy binary under /root; GID 1337 is what the
            // capture rules exempt, as istio-iptables does for the proxy.
            c.args(["setpriv", "--regid=1337", "--clear-groups", "--"]);
        }
        c.arg(cmd).args(args).envs(env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = c.spawn().map_err(|e| anyhow::anyhow!("cannot start {}: {e}", cmd.display()))?;
        self.children.push((label.into(), child));
        Ok(())
    }

    pub fn log(&self, label: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{label}.log"))).unwrap_or_default()
    }

    /// Stops one process by label (SIGKILL, by PID).
    pub fn kill(&mut self, label: &str) {
        if let Some(i) = self.children.iter().position(|(l, _)| l == label) {
            let (_, mut c) = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// istio-iptables' nat rules in `pod`: inbound TCP to 15006, outbound to 15001, the proxy's
    /// own traffic (GID 1337) and loopback left alone.
    pub fn capture(&self, pod: &Pod) -> anyhow::Result<()> {
        let ipt = |args: &[&str]| -> anyhow::Result<()> {
            let mut full = vec!["-t", "nat"];
            full.extend_from_slice(args);
            pod.ns.exec("iptables", &full).map(|_| ())
        };
        ipt(&["-N", "ISTIO_REDIRECT"])?;
        ipt(&["-A", "ISTIO_REDIRECT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001"])?;
        ipt(&["-N", "ISTIO_IN_REDIRECT"])?;
        ipt(&["-A", "ISTIO_IN_REDIRECT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15006"])?;
        ipt(&["-N", "ISTIO_INBOUND"])?;
        ipt(&["-A", "PREROUTING", "-p", "tcp", "-j", "ISTIO_INBOUND"])?;
        ipt(&["-A", "ISTIO_INBOUND", "-p", "tcp", "--dport", "15000", "-j", "RETURN"])?;
        ipt(&["-A", "ISTIO_INBOUND", "-p", "tcp", "-j", "ISTIO_IN_REDIRECT"])?;
        ipt(&["-N", "ISTIO_OUTPUT"])?;
        ipt(&["-A", "OUTPUT", "-p", "tcp", "-j", "ISTIO_OUTPUT"])?;
        ipt(&["-A", "ISTIO_OUTPUT", "-m", "owner", "--gid-owner", "1337", "-j", "RETURN"])?;
        ipt(&["-A", "ISTIO_OUTPUT", "-d", "127.0.0.1/32", "-j", "RETURN"])?;
        ipt(&["-A", "ISTIO_OUTPUT", "-j", "ISTIO_REDIRECT"])?;
        Ok(())
    }

    /// A bootstrap that points a sidecar at the control plane over ADS, identifying itself
    /// the way pilot-agent does.
    pub fn sidecar_bootstrap(&self, pod: &Pod, labels: &[(&str, &str)], delta: bool) -> anyhow::Result<PathBuf> {
        self.bootstrap(pod, "sidecar", "default", labels, delta, None)
    }

    /// A sidecar bootstrap that also names the `sds-grpc` cluster: the agent's SDS socket,
    /// where Envoy gets its certificate and trust bundle (as pilot-agent's bootstrap does).
    pub fn sidecar_bootstrap_with_sds(&self, pod: &Pod, labels: &[(&str, &str)], sds_socket: &Path) -> anyhow::Result<PathBuf> {
        self.bootstrap(pod, "sidecar", "default", labels, false, Some(sds_socket))
    }

    /// A gateway bootstrap that names the `sds-grpc` cluster (a stock Envoy gateway whose
    /// identity `weft agent` serves).
    pub fn gateway_bootstrap_with_sds(&self, pod: &Pod, labels: &[(&str, &str)], sds_socket: &Path) -> anyhow::Result<PathBuf> {
        self.bootstrap(pod, "router", "istio-system", labels, false, Some(sds_socket))
    }

    /// The same for a gateway (`router~` node) in `istio-system`.
    pub fn gateway_bootstrap(&self, pod: &Pod, labels: &[(&str, &str)], delta: bool) -> anyhow::Result<PathBuf> {
        self.bootstrap(pod, "router", "istio-system", labels, delta, None)
    }

    fn bootstrap(
        &self,
        pod: &Pod,
        kind: &str,
        ns: &str,
        labels: &[(&str, &str)],
        delta: bool,
        sds: Option<&Path>,
    ) -> anyhow::Result<PathBuf> {
        let labels: serde_json::Map<String, serde_json::Value> =
            labels.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
        let mut b = serde_json::json!({
            "node": {
                "id": format!("{kind}~{}~{}-1.{ns}~{ns}.svc.cluster.local", pod.ip, pod.name),
                "cluster": format!("{}.{ns}", pod.name),
                "metadata": {"NAMESPACE": ns, "LABELS": labels, "SERVICE_ACCOUNT": pod.name, "WORKLOAD_NAME": pod.name, "CLUSTER_ID": "Kubernetes"},
            },
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}}},
            "dynamic_resources": {
                "ads_config": {"api_type": if delta { "DELTA_GRPC" } else { "GRPC" }, "transport_api_version": "V3",
                               "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]},
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
                "lds_config": {"ads": {}, "resource_api_version": "V3"},
            },
            "static_resources": {"clusters": [{
                "name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
                "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}}},
                "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": HUB_IP, "port_value": XDS_PORT}}}}]}]},
            }]},
        });
        if let Some(sock) = sds {
            b["node"]["metadata"]["SDS"] = serde_json::json!("true");
            let sock = sock.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 socket path"))?;
            let sds_cluster = serde_json::json!({
                "name": "sds-grpc", "type": "STATIC", "connect_timeout": "1s",
                "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}}},
                "load_assignment": {"cluster_name": "sds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": sock}}}}]}]},
            });
            if let Some(clusters) = b["static_resources"]["clusters"].as_array_mut() {
                clusters.push(sds_cluster);
            }
        }
        let path = self.dir.join(format!("{}-bootstrap.json", pod.name));
        std::fs::write(&path, serde_json::to_vec_pretty(&b)?)?;
        Ok(path)
    }

    /// `weft proxy-status` against the control plane in the hub (its default debug address).
    pub fn proxy_status(&self, weft: &Path) -> String {
        self.run(&self.hub, weft, &["proxy-status"]).unwrap_or_default()
    }

    /// Runs `cmd` in `ns` to completion and returns stdout.
    pub fn run(&self, ns: &Netns, cmd: &Path, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec![cmd.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?];
        full.extend_from_slice(args);
        ns.exec(full[0], &full[1..])
    }

    /// Polls `check` until it returns `Some`, or fails after `limit` with `what`.
    pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
        let start = Instant::now();
        loop {
            if let Some(v) = check() {
                return Ok(v);
            }
            if start.elapsed() > limit {
                anyhow::bail!("timed out after {limit:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
