//! On-demand clusters and virtual hosts (VHDS) with real processes: `weft control-plane` and
//! `weft proxy` sidecars fed over ADS (explicit mode, on loopback). A sidecar holds no service
//! cluster and no service virtual host until it uses one; the first request to a service
//! fetches its virtual host and cluster and follows the service's VirtualService;
//! a restarted sidecar of the same workload gets its working set at once; a service that
//! leaves the mesh leaves the sidecar; and while the control plane is away, a service never
//! used fails with a 503 that says why, while those in use keep working.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weft_test_support::certs::TempDir;
use weft_test_support::upstream::Upstream;
use weft_test_support::{client, eventually, free_port, Req};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const WAIT: Duration = Duration::from_secs(20);

/// A child process, killed by its own PID when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    // Write then rename, so the control plane's watcher never reads half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, dir.join(name)).expect("rename config");
}

fn service_entry(name: &str, endpoints: &[(u16, &str)]) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|(port, version)| format!("  - {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{version: {version}}}}}"))
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{name}.mesh.test]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints:\n{}\n",
        eps.join("\n")
    )
}

const ROUTING: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: b, namespace: default}\nspec:\n  host: b.mesh.test\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b, namespace: default}\nspec:\n  hosts: [b.mesh.test]\n  http:\n  - match: [{headers: {x-version: {exact: two}}}]\n    route: [{destination: {host: b.mesh.test, subset: v2}}]\n  - route: [{destination: {host: b.mesh.test, subset: v1}}]\n";

/// `weft control-plane` on `config`; its xDS and debug addresses.
fn control_plane(config: &Path, xds: Option<&str>) -> (Proc, String, String) {
    let mut child = Command::new(WEFT)
        .args(["control-plane", "--config-dir"])
        .arg(config)
        .args(["--xds-address", xds.unwrap_or("127.0.0.1:0"), "--debug-address", "127.0.0.1:0", "--debounce", "20ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn control plane");
    let stdout = child.stdout.take().expect("stdout");
    let process = Proc(child);
    // "weft control-plane: xDS on A, debug on B" once it serves.
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read the control plane's first line");
    let xds = line.split("xDS on ").nth(1).and_then(|r| r.split(',').next()).unwrap_or_default().trim().to_string();
    let debug = line.rsplit("debug on ").next().map(str::trim).unwrap_or_default().to_string();
    assert!(xds.starts_with("127.0.0.1:"), "control plane did not start: {line}");
    (process, xds, debug)
}

/// A `weft proxy` sidecar of workload `client`; its admin and HTTP proxy addresses.
struct Sidecar {
    _proc: Proc,
    admin: String,
    proxy: String,
}

async fn sidecar(xds: &str, pod: &str, delta: bool) -> Sidecar {
    let (admin, port) = (free_port(), free_port());
    let admin_yaml = format!("admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}");
    let mut cmd = Command::new(WEFT);
    cmd.args(["proxy", "--xds-address", xds, "--config-yaml", &admin_yaml, "-l", "warning", "--concurrency", "1"])
        .args(["--service-node", &format!("sidecar~127.0.0.1~{pod}.default~default.svc.cluster.local")])
        .args(["--node-meta", "NAMESPACE=default", "--node-meta", "LABELS={\"app\":\"client\"}"])
        .args(["--node-meta", "INTERCEPTION_MODE=NONE", "--node-meta", &format!("HTTP_PROXY_PORT={port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if delta {
        cmd.arg("--xds-delta");
    }
    let s = Sidecar {
        _proc: Proc(cmd.spawn().expect("spawn weft proxy")),
        admin: format!("127.0.0.1:{admin}"),
        proxy: format!("127.0.0.1:{port}"),
    };
    let admin = s.admin.clone();
    eventually(WAIT, "the sidecar to be ready", || {
        let admin = admin.clone();
        async move { client::send(&admin, Req::get("/ready")).await.ok().filter(|r| r.status == 200) }
    })
    .await;
    s
}

impl Sidecar {
    /// The service clusters the sidecar holds.
    async fn service_clusters(&self) -> Vec<String> {
        let r = client::send(&self.admin, Req::get("/clusters")).await.expect("admin /clusters");
        let mut names: Vec<String> =
            r.text().lines().filter_map(|l| l.split("::").next()).filter(|n| n.starts_with("outbound|")).map(str::to_string).collect();
        names.sort();
        names.dedup();
        names
    }

    /// The virtual hosts the sidecar's `http_proxy` route configuration holds, by name.
    async fn virtual_hosts(&self) -> Vec<String> {
        let r = client::send(&self.admin, Req::get("/config_dump")).await.expect("admin /config_dump");
        let dump: serde_json::Value = serde_json::from_str(&r.text()).expect("config dump is JSON");
        let routes =
            dump["configs"].as_array().into_iter().flatten().flat_map(|c| c["dynamic_route_configs"].as_array().into_iter().flatten());
        let mut names: Vec<String> = routes
            .filter(|r| r["route_config"]["name"] == "http_proxy")
            .flat_map(|r| r["route_config"]["virtual_hosts"].as_array().into_iter().flatten())
            .filter_map(|v| v["name"].as_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    async fn get(&self, host: &str, headers: &[(&str, &str)]) -> client::Reply {
        let mut req = Req::get("/").host(host);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        client::send(&self.proxy, req).await.expect("request through the sidecar")
    }

    async fn stat(&self, name: &str) -> i64 {
        let r = client::send(&self.admin, Req::get("/stats")).await.expect("admin /stats");
        r.text()
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(": ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

const B_V1: &str = "outbound|80|v1|b.mesh.test";
const B_V2: &str = "outbound|80|v2|b.mesh.test";

async fn scenario(delta: bool) {
    let (a, b1, b2) = (Upstream::start("a").await, Upstream::start("b-v1").await, Upstream::start("b-v2").await);
    let dir = TempDir::new("on-demand").expect("temp dir");
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).expect("config dir");
    write(&config, "a.yaml", &service_entry("a", &[(a.port(), "v1")]));
    write(&config, "b.yaml", &service_entry("b", &[(b1.port(), "v1"), (b2.port(), "v2")]));
    write(&config, "b-routing.yaml", ROUTING);
    let (cp, xds, _debug) = control_plane(&config, None);

    let s = sidecar(&xds, "client-1", delta).await;
    assert_eq!(s.service_clusters().await, Vec::<String>::new(), "no service cluster is held before one is used");
    let catch_all = s.virtual_hosts().await;
    assert!(!catch_all.iter().any(|v| v.contains("mesh.test")), "no service virtual host is held before use: {catch_all:?}");

    // First use of b, with the header that its VirtualService sends to v2: fetched, and routed.
    let r = s.get("b.mesh.test", &[("x-version", "two")]).await;
    assert_eq!((r.status, r.header("x-upstream").as_deref()), (200, Some("b-v2")), "{}", r.text());
    assert_eq!(s.service_clusters().await, vec![B_V2.to_string()], "only the subset used is fetched");
    let r = s.get("b.mesh.test", &[]).await;
    assert_eq!((r.status, r.header("x-upstream").as_deref()), (200, Some("b-v1")), "{}", r.text());
    assert_eq!(s.service_clusters().await, vec![B_V1.to_string(), B_V2.to_string()]);
    assert_eq!(s.stat("cluster_manager.on_demand.requested").await, 2);
    assert_eq!(s.stat("cluster_manager.on_demand.failed").await, 0);
    assert_eq!(s.stat("vhds.on_demand.requested").await, 1, "b's virtual host was fetched once");
    let held = s.virtual_hosts().await;
    assert_eq!(held.iter().filter(|v| v.contains("b.mesh.test")).count(), 1, "{held:?}");
    assert!(!held.iter().any(|v| v.contains("a.mesh.test")), "a, never used, is not held: {held:?}");
    // A host the mesh does not have gets the catch-all, as with every virtual host held.
    let r = s.get("nowhere.invalid", &[]).await;
    assert_ne!(r.status, 200, "{}", r.text());
    assert_eq!(s.stat("vhds.on_demand.failed").await, 0, "a host that is not in the mesh is an answer, not a failure");

    // The same workload restarted: its working set arrives with its first config, before any
    // request.
    drop(s);
    let s = sidecar(&xds, "client-2", delta).await;
    assert_eq!(s.service_clusters().await, vec![B_V1.to_string(), B_V2.to_string()], "the working set survives a restart");
    let r = s.get("b.mesh.test", &[("x-version", "two")]).await;
    assert_eq!(r.header("x-upstream").as_deref(), Some("b-v2"));
    assert_eq!(s.stat("cluster_manager.on_demand.requested").await, 0, "nothing had to be fetched");
    assert_eq!(s.stat("vhds.on_demand.requested").await, 0, "b's virtual host came with the working set");

    // b leaves the mesh: the sidecar drops what it held of it.
    std::fs::remove_file(config.join("b-routing.yaml")).expect("remove b's routing");
    std::fs::remove_file(config.join("b.yaml")).expect("remove b");
    let sc = &s;
    eventually(WAIT, "b's clusters to leave the sidecar", || async move { sc.service_clusters().await.is_empty().then_some(()) }).await;
    eventually(WAIT, "b's virtual host to leave the sidecar", || async move {
        (!sc.virtual_hosts().await.iter().any(|v| v.contains("b.mesh.test"))).then_some(())
    })
    .await;

    // A host that is not in the mesh yet goes to the catch-all. Once its service is added, its
    // virtual host is sent without the sidecar asking again.
    let r = s.get("c.mesh.test", &[]).await;
    assert_ne!(r.status, 200, "{}", r.text());
    write(&config, "c.yaml", &service_entry("c", &[(b1.port(), "v1")]));
    eventually(WAIT, "c's virtual host to be sent once c is in the mesh", || async move {
        sc.virtual_hosts().await.iter().any(|v| v.contains("c.mesh.test")).then_some(())
    })
    .await;
    let r = s.get("c.mesh.test", &[]).await;
    assert_eq!((r.status, r.header("x-upstream").as_deref()), (200, Some("b-v1")), "{}", r.text());

    // The control plane goes away. a, never used, cannot be fetched: a 503 that says why.
    // b comes back in the files meanwhile, but nothing can tell the sidecar.
    drop(cp);
    let sc = &s;
    eventually(WAIT, "the sidecar to see the control plane gone", || async move {
        (sc.stat("control_plane.connected_state").await == 0).then_some(())
    })
    .await;
    let r = s.get("a.mesh.test", &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("control plane is unreachable"), "the 503 says why: {}", r.text());
    assert!(r.text().contains("\"a.mesh.test\""), "and names the host: {}", r.text());
    assert_eq!(a.requests(), 0);

    // It comes back on the same address: a is fetched on first use again.
    write(&config, "b.yaml", &service_entry("b", &[(b1.port(), "v1"), (b2.port(), "v2")]));
    let _cp = control_plane(&config, Some(&xds));
    let sc = &s;
    let r = eventually(WAIT, "a to be fetched once the control plane is back", || async move {
        Some(sc.get("a.mesh.test", &[]).await).filter(|r| r.status == 200)
    })
    .await;
    assert_eq!(r.header("x-upstream").as_deref(), Some("a"));
}

#[tokio::test]
async fn service_clusters_are_fetched_on_first_use_over_state_of_the_world() {
    scenario(false).await;
}

#[tokio::test]
async fn service_clusters_are_fetched_on_first_use_over_delta() {
    scenario(true).await;
}
