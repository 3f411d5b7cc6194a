//! A bookinfo-like mesh in network namespaces, driven by `weft control-plane`: sidecars behind
//! iptables capture — real Envoy, or `weft proxy` with the same bootstrap — get their config
//! over ADS, and what callers see follows the VirtualServices, DestinationRules,
//! ServiceEntries and the outbound traffic policy. `gateway.rs`: an ingress gateway.

mod egress;
mod gateway;
mod injected;
mod mtls;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weft_test_support::mesh::{Mesh, Pod, Sidecar, HUB_IP, XDS_PORT};

fn weft() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weft"))
}

fn app() -> PathBuf {
    // Built by the same `cargo test` run: the test-support crate's binary sits next to weft's.
    let p = weft().with_file_name("weft-test-app");
    assert!(p.exists(), "{} is missing: build the workspace (`cargo build --workspace`) first", p.display());
    p
}

struct Bookinfo {
    mesh: Mesh,
    sidecar: Sidecar,
    cp_args: Vec<String>,
    config: PathBuf,
    productpage: Pod,
    _reviews: Vec<Pod>,
    ext: Pod,
    stranger: Pod,
}

const REVIEWS_VIP: &str = "10.96.0.11";

fn services(pods: &[(&str, &str, &str)]) -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\nspec:\n  clusterIP: 10.96.0.11\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: productpage, namespace: default}\nspec:\n  clusterIP: 10.96.0.10\n  selector: {app: productpage}\n  ports: [{name: http, port: 9080}]\n",
    );
    for (name, ip, version) in pods {
        let app = name.split('-').next().unwrap_or(name);
        y.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: default}}\nspec: {{address: {ip}, labels: {{app: {app}, version: {version}}}, serviceAccount: {app}}}\n"
        ));
    }
    y
}

const DESTINATION_RULE: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n  - {name: v3, labels: {version: v3}}\n";

/// The CA's port in the hub (Istio's 15012).
const CA_PORT: u16 = 15012;

/// Starts the control plane in the hub with its CA (bootstrap tokens in `tokens`, root kept in
/// `cacerts`) and waits for the root; its path. `extra`: more flags (`--mesh FILE`).
fn start_control_plane_with_ca(mesh: &mut Mesh, config: &Path, tokens: &Path, cacerts: &Path, extra: &[&str]) -> anyhow::Result<PathBuf> {
    let s = |p: &Path| p.display().to_string();
    let (xds, ca) = (format!("{HUB_IP}:{XDS_PORT}"), format!("{HUB_IP}:{CA_PORT}"));
    let root = cacerts.join("root-cert.pem");
    let (config, cacerts, tokens) = (s(config), s(cacerts), s(tokens));
    let mut cp = vec![
        "control-plane",
        "--config-dir",
        &config,
        "--xds-address",
        &xds,
        "--ca-dir",
        &cacerts,
        "--ca-token-dir",
        &tokens,
        "--secure-address",
        &ca,
        "--debounce",
        "50ms",
    ];
    cp.extend_from_slice(extra);
    mesh.spawn("control-plane", None, false, &weft(), &cp)?;
    Mesh::wait_for(Duration::from_secs(20), "the CA's root", || root.exists().then_some(()))?;
    Ok(root)
}

/// A workload's bootstrap token: the CA's entry in `tokens`, and the file the proxy reads
/// (`<dir>/<pod>.token`).
fn issue_token(mesh: &Mesh, tokens: &Path, pod: &Pod, namespace: &str) -> anyhow::Result<()> {
    let token = format!("{}-bootstrap-token-{}", pod.name, std::process::id());
    let entry = serde_json::json!({"token": token, "namespace": namespace, "serviceAccount": pod.name});
    std::fs::write(tokens.join(format!("{}.json", pod.name)), entry.to_string())?;
    std::fs::write(mesh.dir.join(format!("{}.token", pod.name)), token)?;
    Ok(())
}

/// Starts `pod`'s proxy with a workload identity from the CA at `ca` (its token from
/// [`issue_token`]): `weft proxy` making its own, or a stock Envoy with `weft agent` serving it
/// over SDS. A sidecar (service account `pod.name` in `default`) or, with `gateway`, a gateway
/// (`router~`, in `istio-system`, no capture).
fn start_proxy_with_identity(
    mesh: &mut Mesh,
    pod: &Pod,
    kind: Sidecar,
    labels: &[(&str, &str)],
    (ca, root): (&str, &Path),
    gateway: bool,
) -> anyhow::Result<()> {
    let s = |p: &Path| p.to_str().unwrap_or_default().to_string();
    let token = s(&mesh.dir.join(format!("{}.token", pod.name)));
    let ca_flags = ["--ca-address", ca, "--ca-root-cert", &s(root), "--ca-token-file", &token];
    let namespace = if gateway { "istio-system" } else { "default" };
    match kind {
        Sidecar::Envoy => {
            let sock = mesh.dir.join(format!("{}-sds.sock", pod.name));
            let sock_s = s(&sock);
            let mut agent = vec!["agent", "--namespace", namespace, "--service-account", &pod.name, "--sds-socket", &sock_s];
            agent.extend_from_slice(&ca_flags);
            // The agent talks to the CA from inside the pod, so it runs as the proxy's group.
            mesh.spawn(&format!("{}-agent", pod.name), Some(&pod.ns), true, &weft(), &agent)?;
            let boot = match gateway {
                true => mesh.gateway_bootstrap_with_sds(pod, labels, &sock)?,
                false => mesh.sidecar_bootstrap_with_sds(pod, labels, &sock)?,
            };
            let envoy = weft_test_support::envoy_path()?;
            let args = ["-c", &s(&boot), "--disable-hot-restart", "-l", "warning"];
            mesh.spawn(&format!("{}-sidecar", pod.name), Some(&pod.ns), true, &envoy, &args)
        }
        Sidecar::Weft => {
            let boot = match gateway {
                true => mesh.gateway_bootstrap(pod, labels, false)?,
                false => mesh.sidecar_bootstrap(pod, labels, false)?,
            };
            let boot = s(&boot);
            let mut args = vec!["proxy", "-c", &boot, "--disable-hot-restart", "-l", "info", "--drain-time-s", "5"];
            args.extend_from_slice(&ca_flags);
            mesh.spawn(&format!("{}-sidecar", pod.name), Some(&pod.ns), true, &weft(), &args)
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    // Write then rename, so the watcher never reads half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, dir.join(name)).expect("rename config");
}

fn start(tag: &str, delta: bool, sidecar: Sidecar) -> anyhow::Result<Bookinfo> {
    let proxy = match sidecar {
        Sidecar::Envoy => weft_test_support::envoy_path()?,
        Sidecar::Weft => weft(),
    };
    let mut mesh = Mesh::new(tag)?;
    let config = mesh.dir.join("config");
    std::fs::create_dir_all(&config)?;
    let productpage = mesh.pod("productpage")?;
    let mut reviews = Vec::new();
    for v in ["v1", "v2", "v3"] {
        reviews.push((mesh.pod(&format!("reviews-{v}"))?, v));
    }
    let ext = mesh.pod("ext")?;
    let stranger = mesh.pod("stranger")?;

    let mut wl = vec![("productpage-v1".to_string(), productpage.ip.clone(), "v1")];
    for (p, v) in &reviews {
        wl.push((format!("reviews-{v}"), p.ip.clone(), *v));
    }
    let wl_ref: Vec<(&str, &str, &str)> = wl.iter().map(|(n, ip, v)| (n.as_str(), ip.as_str(), *v)).collect();
    write(&config, "services.yaml", &services(&wl_ref));
    write(&config, "reviews-dr.yaml", DESTINATION_RULE);
    write(
        &config,
        "ext-se.yaml",
        &format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ext}}\nspec:\n  hosts: [ext.example.com]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: {}}}]\n", ext.ip),
    );
    let mesh_file = mesh.dir.join("mesh.yaml");
    std::fs::write(&mesh_file, "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n")?;

    let xds = format!("{HUB_IP}:{XDS_PORT}");
    let cfg = config.to_str().unwrap_or_default().to_string();
    let mf = mesh_file.to_str().unwrap_or_default().to_string();
    let cp_args: Vec<String> =
        ["control-plane", "--config-dir", &cfg, "--mesh", &mf, "--xds-address", &xds, "--debounce", "50ms", "-l", "debug"]
            .map(String::from)
            .to_vec();
    let cp_refs: Vec<&str> = cp_args.iter().map(String::as_str).collect();
    mesh.spawn("control-plane", None, false, &weft(), &cp_refs)?;

    let app = app();
    let proxy = proxy.to_str().unwrap_or_default().to_string();
    let mut sidecars = vec![(&productpage, vec![("app", "productpage"), ("version", "v1")], "productpage")];
    for (p, v) in &reviews {
        sidecars.push((p, vec![("app", "reviews"), ("version", *v)], p.name.as_str()));
    }
    for (pod, labels, name) in &sidecars {
        mesh.capture(pod)?;
        mesh.spawn(&format!("{name}-app"), Some(&pod.ns), false, &app, &["serve", "0.0.0.0:9080", name])?;
        let boot = mesh.sidecar_bootstrap(pod, labels, delta)?;
        let b = boot.to_str().unwrap_or_default().to_string();
        // The same bootstrap and the same Envoy flags for both proxies; weft retires a replaced
        // listener over the drain time, here short so the test does not hold connections long.
        let args: &[&str] = match sidecar {
            Sidecar::Envoy => &["-c", &b, "--disable-hot-restart", "-l", "warning"],
            Sidecar::Weft => &["proxy", "-c", &b, "--disable-hot-restart", "-l", "info", "--drain-time-s", "5"],
        };
        mesh.spawn(&format!("{name}-sidecar"), Some(&pod.ns), true, Path::new(&proxy), args)?;
    }
    mesh.spawn("ext-app", Some(&ext.ns), false, &app, &["serve", "0.0.0.0:80", "ext"])?;
    mesh.spawn("stranger-app", Some(&stranger.ns), false, &app, &["serve", "0.0.0.0:80", "stranger"])?;

    let bi =
        Bookinfo { mesh, sidecar, cp_args, config, productpage, _reviews: reviews.into_iter().map(|(p, _)| p).collect(), ext, stranger };
    bi.wait_synced(4)?;
    Ok(bi)
}

impl Bookinfo {
    fn status(&self) -> String {
        self.mesh.proxy_status(&weft())
    }

    fn wait_synced(&self, proxies: usize) -> anyhow::Result<()> {
        Mesh::wait_for(Duration::from_secs(30), "every sidecar SYNCED", || {
            let s = self.status();
            let synced = s.lines().filter(|l| l.split_whitespace().filter(|w| *w == "SYNCED").count() == 4).count();
            (synced == proxies).then_some(())
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}\ncontrol plane log:\n{}", self.status(), self.mesh.log("control-plane")))
    }

    /// The config version the control plane serves (from `proxy-status`).
    fn version(&self) -> u64 {
        self.status().lines().nth(1).and_then(|l| l.split_whitespace().last()).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// Waits until the control plane serves a version after `v` and every sidecar ACKed it.
    fn wait_version_after(&self, v: u64) -> anyhow::Result<u64> {
        Mesh::wait_for(Duration::from_secs(15), &format!("a config version after {v}, SYNCED everywhere"), || {
            let s = self.status();
            let rows: Vec<&str> = s.lines().skip(1).collect();
            let now = self.version();
            (now > v && rows.len() == 4 && rows.iter().all(|l| l.split_whitespace().filter(|w| *w == "SYNCED").count() == 4)).then_some(now)
        })
    }

    /// `count` requests from productpage's namespace (through its sidecar).
    fn get(&self, url: &str, count: usize, headers: &[&str]) -> serde_json::Map<String, serde_json::Value> {
        let mut args = vec!["get", url];
        let n = count.to_string();
        args.push(&n);
        args.extend_from_slice(headers);
        let out = self.mesh.run(&self.productpage.ns, &app(), &args).unwrap_or_else(|e| panic!("client failed: {e}"));
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("client output {out:?}: {e}"))
    }

    /// Polls until requests to `url` give only `want`, so a test follows the push, not a sleep.
    fn wait_for_only(&self, url: &str, headers: &[&str], want: &str) {
        let r = Mesh::wait_for(Duration::from_secs(15), &format!("{url} {headers:?} to give only {want:?}"), || {
            let got = self.get(url, 5, headers);
            (got.len() == 1 && got.contains_key(want)).then_some(())
        });
        if let Err(e) = r {
            panic!("{e}; last: {:?}\n{}", self.get(url, 5, headers), self.status());
        }
    }
}

fn count(m: &serde_json::Map<String, serde_json::Value>, key: &str) -> u64 {
    m.get(key).and_then(|v| v.as_u64()).unwrap_or(0)
}

fn scenarios(bi: &Bookinfo) {
    let reviews = format!("http://{REVIEWS_VIP}:9080/");
    let host = "host:reviews";

    // With no VirtualService, reviews is load-balanced over its three versions.
    let all = bi.get(&reviews, 30, &[host]);
    assert_eq!(all.values().filter_map(|v| v.as_u64()).sum::<u64>(), 30, "{all:?}");
    assert!(all.keys().all(|k| k.starts_with("200 reviews-v")), "{all:?}\nproductpage sidecar:\n{}", bi.mesh.log("productpage-sidecar"));

    // reviews-v3 routing.
    write(&bi.config, "reviews-vs.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v3}\n");
    bi.wait_for_only(&reviews, &[host], "200 reviews-v3");

    // end-user: jason → v2; everyone else 90/10 between v1 and v3.
    write(
        &bi.config,
        "reviews-vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - match:\n    - headers:\n        end-user: {exact: jason}\n    route:\n    - destination: {host: reviews, subset: v2}\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 90\n    - destination: {host: reviews, subset: v3}\n      weight: 10\n",
    );
    bi.wait_for_only(&reviews, &[host, "end-user:jason"], "200 reviews-v2");
    let split = bi.get(&reviews, 300, &[host]);
    let (v1, v3) = (count(&split, "200 reviews-v1"), count(&split, "200 reviews-v3"));
    assert_eq!(v1 + v3, 300, "only v1 and v3 without the header: {split:?}");
    // 10% of 300 is 30; ±3.5 standard deviations (σ ≈ 5.2) keeps this from flaking.
    assert!((12..=48).contains(&v3), "v3 got {v3} of 300, want about 30: {split:?}");

    // Fault abort and delay.
    write(
        &bi.config,
        "reviews-vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{headers: {end-user: {exact: jason}}}]\n    fault: {delay: {fixedDelay: 1s, percentage: {value: 100}}}\n    route: [{destination: {host: reviews, subset: v2}}]\n  - fault: {abort: {httpStatus: 418, percentage: {value: 100}}}\n    route: [{destination: {host: reviews, subset: v1}}]\n",
    );
    bi.wait_for_only(&reviews, &[host], "418 fault filter abort");
    let t = Instant::now();
    let delayed = bi.get(&reviews, 2, &[host, "end-user:jason"]);
    assert_eq!(count(&delayed, "200 reviews-v2"), 2, "{delayed:?}");
    assert!(t.elapsed() >= Duration::from_secs(2), "two requests with a 1s fixed delay took {:?}", t.elapsed());

    // Retries: reviews-v1's /flaky fails every other request. With retries on 5xx every call
    // succeeds; with retries switched off about half fail.
    let flaky = format!("http://{REVIEWS_VIP}:9080/flaky");
    write(
        &bi.config,
        "reviews-vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - retries: {attempts: 3, retryOn: 5xx}\n    route: [{destination: {host: reviews, subset: v1}}]\n",
    );
    bi.wait_for_only(&reviews, &[host], "200 reviews-v1");
    let retried = bi.get(&flaky, 20, &[host]);
    assert_eq!(count(&retried, "200 reviews-v1"), 20, "retries must hide every other failure: {retried:?}");
    write(
        &bi.config,
        "reviews-vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - retries: {attempts: 0}\n    route: [{destination: {host: reviews, subset: v1}}]\n",
    );
    Mesh::wait_for(Duration::from_secs(15), "the no-retry route", || {
        let out = bi.get(&flaky, 10, &[host]);
        (count(&out, "503 reviews-v1") >= 4).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", bi.get(&flaky, 10, &[host])));

    // sourceLabels: the route applies only to callers with those labels (productpage here).
    write(
        &bi.config,
        "reviews-vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{sourceLabels: {app: productpage}}]\n    route: [{destination: {host: reviews, subset: v3}}]\n  - route: [{destination: {host: reviews, subset: v1}}]\n",
    );
    bi.wait_for_only(&reviews, &[host], "200 reviews-v3");
    write(
        &bi.config,
        "reviews-vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{sourceLabels: {app: ratings}}]\n    route: [{destination: {host: reviews, subset: v3}}]\n  - route: [{destination: {host: reviews, subset: v1}}]\n",
    );
    bi.wait_for_only(&reviews, &[host], "200 reviews-v1");

    // Sidecar egress scoping: productpage may see only ext.example.com; reviews disappears
    // from its config, so REGISTRY_ONLY blocks it (no listener for 9080 is left, so the
    // connection goes to the BlackHoleCluster and fails). Without the Sidecar it is back.
    write(
        &bi.config,
        "sidecar.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: productpage}\nspec:\n  workloadSelector: {labels: {app: productpage}}\n  egress: [{hosts: [\"./ext.example.com\"]}]\n",
    );
    Mesh::wait_for(Duration::from_secs(15), "reviews to be out of productpage's scope", || {
        let got = bi.get(&reviews, 3, &[host]);
        got.keys().all(|k| k.starts_with("error") || k.starts_with("502")).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", bi.get(&reviews, 3, &[host]), bi.status()));
    let ext = bi.get(&format!("http://{}:80/", bi.ext.ip), 2, &["host:ext.example.com"]);
    assert_eq!(count(&ext, "200 ext"), 2, "{ext:?}");
    std::fs::remove_file(bi.config.join("sidecar.yaml")).expect("remove sidecar.yaml");
    bi.wait_for_only(&reviews, &[host], "200 reviews-v1");

    // REGISTRY_ONLY: a declared ServiceEntry host is reachable, an unknown one gets Istio's 502.
    let ext = bi.get(&format!("http://{}:80/", bi.ext.ip), 3, &["host:ext.example.com"]);
    assert_eq!(count(&ext, "200 ext"), 3, "{ext:?}");
    let blocked = bi.get(&format!("http://{}:80/", bi.stranger.ip), 3, &["host:stranger.example.com"]);
    assert_eq!(count(&blocked, "502"), 3, "REGISTRY_ONLY must block an undeclared host: {blocked:?}");
    // Raw TCP to an undeclared port goes to the BlackHoleCluster: the connection is refused
    // by the sidecar, never reaching the stranger.
    let tcp = bi.get(&format!("http://{}:81/", bi.stranger.ip), 1, &[]);
    assert!(tcp.keys().all(|k| k.starts_with("error")), "{tcp:?}");
    // A weft sidecar keeps what it refused, for `weft analyze --proxy`: the HTTP host and the
    // TCP destination.
    if bi.sidecar == Sidecar::Weft {
        let blocked = bi.mesh.run(&bi.productpage.ns, &weft(), &["admin-get", "127.0.0.1:15000", "/blocked"]).expect("admin-get /blocked");
        let v: serde_json::Value = serde_json::from_str(blocked.trim()).unwrap_or_else(|e| panic!("{blocked}: {e}"));
        let has = |host: &str, port: u64, proto: &str| {
            v["blocked"].as_array().into_iter().flatten().any(|e| e["host"] == host && e["port"] == port && e["protocol"] == proto)
        };
        assert!(has("stranger.example.com", 80, "HTTP"), "{v:#}");
        assert!(has(&bi.stranger.ip, 81, "TCP"), "{v:#}");
    }
    // A TCP service by address and port (2018's MySQL-by-IP egress rule): a ServiceEntry that
    // declares the address lets plain TCP through to it, whatever the HTTP host.
    write(
        &bi.config,
        "stranger-se.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: stranger-tcp}}\nspec:\n  hosts: [stranger.tcp.example]\n  addresses: [{}]\n  location: MESH_EXTERNAL\n  resolution: NONE\n  ports: [{{number: 80, name: tcp, protocol: TCP}}]\n",
            bi.stranger.ip
        ),
    );
    Mesh::wait_for(Duration::from_secs(15), "the stranger reached by its declared address", || {
        let got = bi.get(&format!("http://{}:80/", bi.stranger.ip), 2, &["host:stranger.example.com"]);
        (count(&got, "200 stranger") == 2).then_some(())
    })
    .unwrap_or_else(|e| {
        panic!("{e}: {:?}\n{}", bi.get(&format!("http://{}:80/", bi.stranger.ip), 2, &["host:stranger.example.com"]), bi.status())
    });
    std::fs::remove_file(bi.config.join("stranger-se.yaml")).expect("remove stranger-se.yaml");
}

#[test]
fn bookinfo_with_envoy_sidecars_over_state_of_the_world_ads() {
    let bi = start("bse", false, Sidecar::Envoy).unwrap_or_else(|e| panic!("{e:#}"));
    scenarios(&bi);
}

#[test]
fn bookinfo_with_envoy_sidecars_over_delta_ads() {
    let bi = start("bde", true, Sidecar::Envoy).unwrap_or_else(|e| panic!("{e:#}"));
    scenarios(&bi);
}

#[test]
fn bookinfo_with_weft_sidecars_over_state_of_the_world_ads() {
    let bi = start("bsw", false, Sidecar::Weft).unwrap_or_else(|e| panic!("{e:#}"));
    scenarios(&bi);
}

#[test]
fn bookinfo_with_weft_sidecars_over_delta_ads() {
    let bi = start("bdw", true, Sidecar::Weft).unwrap_or_else(|e| panic!("{e:#}"));
    scenarios(&bi);
}

/// Starts `count` requests from productpage in the background (a bounded load).
fn load(bi: &Bookinfo, url: &str, count: usize, headers: &[&str]) -> std::thread::JoinHandle<String> {
    let mut cmd = bi.productpage.ns.command(app().to_str().unwrap_or_default());
    cmd.args(["get", url, &count.to_string()]).args(headers);
    std::thread::spawn(move || cmd.output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default())
}

fn only_successes(out: &str) -> serde_json::Map<String, serde_json::Value> {
    let m: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("load output {out:?}: {e}"));
    assert!(m.keys().all(|k| k.starts_with("200 reviews-v")), "failed requests under load: {m:?}");
    m
}

#[test]
fn pushes_and_a_control_plane_outage_under_load_fail_no_request() {
    pushes_and_outage(start("res", false, Sidecar::Envoy).unwrap_or_else(|e| panic!("{e:#}")));
}

#[test]
fn pushes_and_a_control_plane_outage_under_load_fail_no_request_with_weft_sidecars() {
    pushes_and_outage(start("rew", false, Sidecar::Weft).unwrap_or_else(|e| panic!("{e:#}")));
}

fn pushes_and_outage(mut bi: Bookinfo) {
    let reviews = format!("http://{REVIEWS_VIP}:9080/");
    let vs = |a: &str, b: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: {a}}}\n      weight: 50\n    - destination: {{host: reviews, subset: {b}}}\n      weight: 50\n")
    };

    // Ten pushes, each while a bounded batch of requests is in flight. Every other push also
    // adds or removes a TCP service on the same port, which replaces clusters, endpoints and
    // the port's listener (a filter chain for its address) in every sidecar, not only routes.
    let details = "apiVersion: v1\nkind: Service\nmetadata: {name: details, namespace: default}\nspec:\n  clusterIP: 10.96.0.12\n  selector: {app: reviews, version: v1}\n  ports: [{name: tcp, port: 9080}]\n";
    let pairs = [("v1", "v2"), ("v2", "v3"), ("v1", "v3")];
    let mut version = bi.version();
    let mut total = 0;
    for i in 0..10 {
        let running = load(&bi, &reviews, 300, &["host:reviews"]);
        let (a, b) = pairs[i % 3];
        if i % 2 == 1 {
            if i % 4 == 1 {
                write(&bi.config, "details.yaml", details);
            } else {
                std::fs::remove_file(bi.config.join("details.yaml")).expect("remove details.yaml");
            }
        }
        write(&bi.config, "reviews-vs.yaml", &vs(a, b));
        version = bi.wait_version_after(version).unwrap_or_else(|e| panic!("{e:#}"));
        let m = only_successes(&running.join().expect("load thread"));
        total += m.values().filter_map(|v| v.as_u64()).sum::<u64>();
    }
    assert_eq!(total, 3000);
    // The pushes really replaced listeners (Envoy's stat, which weft keeps too).
    let stats = bi.mesh.run(&bi.productpage.ns, Path::new("curl"), &["-s", "127.0.0.1:15000/stats"]).unwrap_or_default();
    let modified = stats
        .lines()
        .find_map(|l| l.strip_prefix("listener_manager.listener_modified: "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        modified >= 5,
        "expected the port's listener to be replaced on every other push, got listener_modified {modified}:\n{}",
        stats.lines().filter(|l| l.starts_with("listener_manager")).collect::<Vec<_>>().join("\n")
    );

    // A broken resource is rejected with file, line and field; the last good routing stays.
    write(
        &bi.config,
        "reviews-vs.yaml",
        &vs("v1", "v1").replace(
            "subset: v1}\n      weight: 50\n    - destination: {host: reviews, subset: v1}",
            "subset: v1}\n      weight: 50\n    - destination: {host: reviews, subset: v1, port: {number: 70000}}",
        ),
    );
    Mesh::wait_for(Duration::from_secs(10), "the control plane to report the bad resource", || {
        bi.mesh.log("control-plane").contains("reviews-vs.yaml:").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bi.mesh.log("control-plane")));
    let log = bi.mesh.log("control-plane");
    assert!(
        log.contains("VirtualService default/reviews: spec.http[0].route[1].destination.port.number: port 70000 is out of range"),
        "{log}"
    );
    let analyze = std::process::Command::new(weft()).args(["analyze", "--config-dir"]).arg(&bi.config).output().expect("run weft analyze");
    let text = String::from_utf8_lossy(&analyze.stdout);
    assert_eq!(analyze.status.code(), Some(79), "analyze exits 79 (as istioctl does) on errors:\n{text}");
    assert!(
        text.contains("Error [IST0106] reviews-vs.yaml:10: VirtualService default/reviews: spec.http[0].route[1].destination.port.number"),
        "{text}"
    );

    // The control plane goes away for 30 s under load: the sidecars keep their config.
    bi.mesh.kill("control-plane");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        let batch = bi.get(&reviews, 50, &["host:reviews"]);
        assert!(batch.keys().all(|k| k.starts_with("200 reviews-v")), "requests failed while the control plane was down: {batch:?}");
    }
    // It comes back with a fixed config: every sidecar resyncs and follows the new routing.
    write(&bi.config, "reviews-vs.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v2}\n");
    let args = bi.cp_args.clone();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    bi.mesh.spawn("control-plane", None, false, &weft(), &refs).unwrap_or_else(|e| panic!("{e:#}"));
    bi.wait_synced(4).unwrap_or_else(|e| panic!("{e:#}"));
    bi.wait_for_only(&reviews, &["host:reviews"], "200 reviews-v2");
}
