//! The one-machine mesh end to end, as a user runs it: `weft up -f FILE` builds namespaces,
//! capture, sidecars and apps; unmodified clients (curl) call services by name; `weft down`
//! leaves nothing behind, also after a crash; `weft demo` runs bookinfo with mTLS.
//!
//! Needs root (network namespaces, iptables); fails with the reason otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use weft_test_support::certs::TempDir;
use weft_test_support::mesh::Mesh;
use weft_test_support::netns::require_root_netadmin;
use weft_test_support::prometheus_sum;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A run of `weft up` that is always taken down, also when the test fails.
struct Run {
    dir: PathBuf,
    tmp: TempDir,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = Command::new(WEFT).args(["down", "--run-dir"]).arg(&self.dir).output();
    }
}

impl Run {
    fn state(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.join("state.json")).expect("state.json");
        serde_json::from_str(&text).expect("state json")
    }

    fn workload(&self, id: &str) -> (String, String) {
        let s = self.state();
        let w = s["workloads"].as_array().and_then(|ws| ws.iter().find(|w| w["id"] == id)).unwrap_or_else(|| panic!("no {id} in {s:#}"));
        (w["netns"].as_str().unwrap_or_default().to_owned(), w["address"].as_str().unwrap_or_default().to_owned())
    }

    /// curl inside a workload's namespace, as its application would call.
    fn curl(&self, id: &str, url: &str) -> (String, String) {
        let (netns, _) = self.workload(id);
        let out = Command::new("ip")
            .args(["netns", "exec", &netns, "curl", "-s", "-m", "5", "-o", "/dev/stdout", "-w", "\n%{http_code}", url])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
        (code.to_owned(), body.to_owned())
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(name)).unwrap_or_default()
    }
}

fn weft(args: &[&str]) -> Output {
    Command::new(WEFT).args(args).output().expect("run weft")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `weft up` on `file_text` in a fresh temporary directory, with `args` after the run dir.
fn up_with(tag: &str, file_text: &str, args: &[&str]) -> (Run, Output) {
    require_root_netadmin().unwrap_or_else(|e| panic!("{e:#}"));
    let tmp = TempDir::new(tag).expect("temp dir");
    let file = tmp.path().join("mesh.yaml");
    std::fs::write(&file, file_text).expect("mesh file");
    let dir = tmp.path().join("run");
    let out = Command::new(WEFT).args(["up", "-f"]).arg(&file).arg("--run-dir").arg(&dir).args(args).output().expect("weft up");
    (Run { dir, tmp }, out)
}

fn up(tag: &str, file_text: &str, subnet: &str) -> (Run, Output) {
    let debug = format!("127.0.0.1:{}", weft_test_support::free_port());
    up_with(tag, file_text, &["--subnet", subnet, "--debug-address", &debug, "--ready-timeout", "90s"])
}

const MESH: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: MeshConfig
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
  accessLogFile: /dev/stdout
  defaultConfig: {concurrency: 1}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: client, labels: {app: client}}
spec:
  serviceAccount: client
  command: [sleep, "600"]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata:
  name: narrow
  labels: {app: narrow}
  annotations: {traffic.sidecar.istio.io/includeOutboundIPRanges: "10.234.0.0/16"}
spec:
  serviceAccount: narrow
  command: [sleep, "600"]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1, labels: {app: reviews, version: v1}}
spec:
  serviceAccount: bookinfo-reviews
  command: [weft, sample, reviews, --version, v1]
  ports: [{containerPort: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
"#;

/// A client and reviews v1 behind a Service, as several tests run them.
const CLIENT_AND_REVIEWS: &str = r#"---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: client, labels: {app: client}}
spec:
  serviceAccount: client
  command: [sleep, "600"]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1, labels: {app: reviews, version: v1}}
spec:
  serviceAccount: bookinfo-reviews
  command: [weft, sample, reviews, --version, v1]
  ports: [{containerPort: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
"#;

fn stats(address: &str) -> String {
    let out = weft_test_support::tool("curl")
        .args(["-s", "-m", "5", &format!("http://{address}:15090/stats/prometheus")])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_mesh_on_one_machine_captures_unmodified_clients_into_mtls_and_down_leaves_nothing() {
    let (run, out) = up("e2e", MESH, "10.233.61.0/24");
    assert!(out.status.success(), "weft up failed:\n{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("default/reviews") && printed.contains("10.233.61."), "up prints where things are:\n{printed}");

    // An unmodified client calls the service by its short name; both sidecars are on the
    // path, and the server sees the caller's SPIFFE identity (the hop was mTLS).
    let (code, body) = Mesh::wait_for(Duration::from_secs(30), "reviews through both sidecars", || {
        let (code, body) = run.curl("default/client", "http://reviews:9080/reviews/0");
        (code == "200").then_some((code, body))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", run.log("default.client.sidecar.log")));
    let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {code} {body}"));
    assert_eq!(json["peer"], "spiffe://cluster.local/ns/default/sa/client", "{body}");
    for name in ["reviews.default", "reviews.default.svc.cluster.local"] {
        let (code, body) = run.curl("default/client", &format!("http://{name}:9080/reviews/0"));
        assert_eq!(code, "200", "{name}: {body}");
    }
    let (_, client_ip) = run.workload("default/client");
    let (_, reviews_ip) = run.workload("default/reviews-v1");
    let client_stats = stats(&client_ip);
    let handshakes = prometheus_sum(&client_stats, &["_ssl_handshake{", "|reviews\""]);
    assert!(handshakes.is_some_and(|n| n >= 1.0), "the client sidecar's TLS stats show the mTLS hop:\n{client_stats}");
    assert_eq!(
        prometheus_sum(&client_stats, &["server_concurrency"]),
        Some(1.0),
        "MeshConfig defaultConfig.concurrency reaches the sidecar"
    );
    let server_stats = stats(&reviews_ip);
    let ssl: Vec<&str> = server_stats.lines().filter(|l| l.contains("ssl")).collect();
    assert!(
        prometheus_sum(&server_stats, &["envoy_listener_ssl_versions{", "envoy_ssl_version=\"TLSv1.3\"", "0.0.0.0_15006"])
            .is_some_and(|n| n >= 1.0),
        "the server sidecar accepted TLS 1.3:\n{ssl:#?}"
    );

    // includeOutboundIPRanges limited to the service range: the VIP is captured (mTLS), the
    // pod address outside it goes around the sidecar (plaintext: no peer identity).
    let (code, body) = run.curl("default/narrow", "http://reviews:9080/reviews/0");
    assert_eq!(code, "200", "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).expect("json")["peer"], "spiffe://cluster.local/ns/default/sa/narrow");
    let direct = format!("http://{reviews_ip}:9080/reviews/0");
    let (code, body) = run.curl("default/narrow", &direct);
    assert_eq!(code, "200", "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).expect("json")["peer"], Value::Null, "outside -i the sidecar is bypassed");
    // The same address from a fully captured client goes through its sidecar, where
    // REGISTRY_ONLY knows no such host.
    let (code, _) = run.curl("default/client", &direct);
    assert_eq!(code, "502", "a captured call to an undeclared host is blocked");

    // REGISTRY_ONLY says why in the sidecar's access log: the HTTP call above hit Istio's
    // block_all route; a port no service declares goes to the BlackHoleCluster, which closes
    // the connection, counts it, and logs it too.
    let (code, _) = run.curl("default/client", "http://198.51.100.7/");
    assert_eq!(code, "000", "the BlackHoleCluster closes the connection");
    let client_log = || run.log("default.client.sidecar.log");
    Mesh::wait_for(Duration::from_secs(10), "the access log lines", || {
        let log = client_log();
        let http = log.lines().any(|l| l.contains(&format!("\"{reviews_ip}:9080\"")) && l.contains(" 502 ") && l.contains("block_all"));
        let tcp = log.lines().any(|l| l.contains("198.51.100.7:80") && l.contains("BlackHoleCluster"));
        (http && tcp).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", client_log()));
    let client_stats = stats(&client_ip);
    let blackholed = prometheus_sum(&client_stats, &["upstream_cx_none_healthy", "\"BlackHoleCluster\""]);
    assert!(blackholed.is_some_and(|n| n >= 1.0), "{client_stats}");

    // The proxy's own identity (UID 1337) is not captured: its traffic goes straight out,
    // so it reaches the pod address without its sidecar (no 502, no peer identity).
    let (netns, _) = run.workload("default/client");
    let out = Command::new("ip")
        .args(["netns", "exec", &netns, "setpriv", "--reuid=1337", "--regid=1337", "--clear-groups", "curl", "-s", "-m", "5", &direct])
        .output()
        .expect("curl as 1337");
    let body = String::from_utf8_lossy(&out.stdout);
    assert_eq!(serde_json::from_str::<Value>(&body).map(|j| j["peer"].clone()).ok(), Some(Value::Null), "{body}");

    let status = weft(&["status", "--run-dir", &run.dir.display().to_string()]);
    assert!(status.status.success(), "{}", text(&status));
    assert!(String::from_utf8_lossy(&status.stdout).contains("default/reviews-v1"), "{}", text(&status));

    // A crash: the control plane and a sidecar die hard. `weft down` still removes it all.
    let state = run.state();
    let procs: Vec<(String, u32)> = state["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| (p["role"].as_str().unwrap_or("").to_owned(), p["pid"].as_u64().unwrap_or(0) as u32))
        .collect();
    for (role, pid) in &procs {
        if role == "control-plane" || role == "default/client/sidecar" {
            let _ = weft_test_support::tool("kill").args(["-9", &pid.to_string()]).status();
        }
    }
    let status = weft(&["status", "--run-dir", &run.dir.display().to_string()]);
    assert!(!status.status.success(), "a dead control plane is unhealthy:\n{}", text(&status));
    let down = weft(&["down", "--run-dir", &run.dir.display().to_string()]);
    assert!(down.status.success(), "{}", text(&down));
    assert_nothing_left(&state, &run.dir);
}

/// No namespace, bridge, /etc/netns entry, process or run directory of `state` remains.
fn assert_nothing_left(state: &Value, run_dir: &Path) {
    let netns = String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().expect("ip").stdout).into_owned();
    for ns in state["workloads"].as_array().into_iter().flatten().filter_map(|w| w["netns"].as_str()) {
        assert!(!netns.lines().any(|l| l.split_whitespace().next() == Some(ns)), "namespace {ns} left:\n{netns}");
        assert!(!Path::new("/etc/netns").join(ns).exists(), "/etc/netns/{ns} left");
    }
    if let Some(bridge) = state["bridge"].as_str() {
        let link = Command::new("ip").args(["link", "show", bridge]).output().expect("ip");
        assert!(!link.status.success(), "bridge {bridge} left");
    }
    for p in state["processes"].as_array().into_iter().flatten() {
        let pid = p["pid"].as_u64().unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, a)| a.split_whitespace().collect()).unwrap_or_default();
        // A zombie has exited; only its parent's wait is outstanding.
        let running =
            fields.first().is_some_and(|s| *s != "Z") && fields.get(19).and_then(|s| s.parse::<u64>().ok()) == p["start_time"].as_u64();
        assert!(!running, "process {} ({pid}) left: {stat}", p["role"]);
    }
    assert!(!run_dir.exists(), "{} left", run_dir.display());
}

#[test]
fn a_failed_up_removes_what_it_made() {
    // The control plane cannot bind its debug port: up fails part way and cleans up.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let (run, out) = up_with("fail", MESH, &["--subnet", "10.233.63.0/24", "--debug-address", &format!("127.0.0.1:{port}")]);
    let dir = &run.dir;
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("control-plane exited"), "the failure names the process and shows its log:\n{err}");
    assert!(!dir.exists(), "the run directory is gone");
    let links = String::from_utf8_lossy(&Command::new("ip").args(["-o", "addr", "show"]).output().expect("ip").stdout).into_owned();
    assert!(!links.contains("10.233.63.1/24"), "the bridge is gone:\n{links}");
}

#[test]
fn a_bad_mesh_file_starts_nothing_and_names_file_line_and_field() {
    let (run, out) = up_with("bad", &MESH.replacen("command: [sleep, \"600\"]", "comand: [sleep]", 1), &["--subnet", "10.233.64.0/24"]);
    let (dir, file) = (&run.dir, run.tmp.path().join("mesh.yaml"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:", file.display())) && err.contains("comand"), "{err}");
    assert!(!dir.exists(), "nothing was started");
}

#[test]
fn weft_demo_runs_bookinfo_with_every_hop_over_mtls() {
    require_root_netadmin().unwrap_or_else(|e| panic!("{e:#}"));
    let tmp = TempDir::new("demo").expect("temp dir");
    let dir = tmp.path().join("run");
    // Taken down even if the test fails half way.
    let run = Run { dir: dir.clone(), tmp };
    let debug = format!("127.0.0.1:{}", weft_test_support::free_port());
    let out = Command::new(WEFT)
        .args(["demo", "--duration", "15s", "--check", "--rate", "10", "--run-dir"])
        .arg(&dir)
        .args(["--subnet", "10.233.65.0/24", "--debug-address", &debug, "--ready-timeout", "90s"])
        .output()
        .expect("weft demo");
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("http://10.233.65.2:9080/productpage"), "{stdout}");
    for service in ["details", "reviews", "ratings"] {
        let line =
            stdout.lines().find(|l| l.trim_start().starts_with(service) && l.contains("answered")).unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.contains("plaintext      0"), "every hop into {service} was mTLS: {line}");
    }
    assert!(stdout.contains("reviews-v1") && stdout.contains("reviews-v2") && stdout.contains("reviews-v3"), "{stdout}");
    assert!(stdout.contains("torn down"), "{stdout}");
    assert!(!run.dir.exists());
}

/// A real Prometheus (Debian's) scrapes a `weft up` mesh's sidecars on 15090 while a bounded
/// burst of traffic runs, and the queries Kiali's graph and Istio's dashboards are built on
/// answer: both reporters count the client → reviews-v1 edge with both workloads named and
/// `connection_security_policy="mutual_tls"`, the request rate by source workload and
/// destination service is above zero, and the p99 latency is a number.
#[test]
fn a_real_prometheus_scrapes_istios_metrics_from_a_weft_up_mesh() {
    // `weft up --prometheus` runs Debian's Prometheus beside the mesh, with Istio's jobs.
    let _ = weft_test_support::tool("prometheus");
    let listen = format!("127.0.0.1:{}", weft_test_support::free_port());
    let debug = format!("127.0.0.1:{}", weft_test_support::free_port());
    let (run, out) = up_with(
        "prom",
        MESH,
        &["--subnet", "10.233.62.0/24", "--debug-address", &debug, "--ready-timeout", "90s", "--prometheus", &listen],
    );
    assert!(out.status.success(), "weft up failed:\n{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("prometheus on http://{listen}")), "{}", text(&out));
    Mesh::wait_for(Duration::from_secs(30), "reviews through both sidecars", || {
        (run.curl("default/client", "http://reviews:9080/reviews/0").0 == "200").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", run.log("default.client.sidecar.log")));
    let prom_log = || run.log("prometheus.log");
    let query = |q: &str| -> Vec<Value> {
        let out = weft_test_support::tool("curl")
            .args(["-s", "-m", "5", "--data-urlencode", &format!("query={q}"), &format!("http://{listen}/api/v1/query")])
            .output()
            .expect("curl");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    };
    let value = |r: &Value| r["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // Every target up before the traffic, so rates see it: the three sidecars and the control
    // plane.
    Mesh::wait_for(Duration::from_secs(30), "every sidecar and the control plane scraped", || {
        let sidecars = query("sum(up{job=\"envoy-stats\"})").first().map(value);
        let pilot = query("sum(up{job=\"pilot\"})").first().map(value);
        (sidecars == Some(3.0) && pilot == Some(1.0)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", prom_log()));

    // A bounded burst: 30 requests.
    for _ in 0..30 {
        assert_eq!(run.curl("default/client", "http://reviews:9080/reviews/0").0, "200");
    }
    let edge = |reporter: &str| {
        format!(
            "sum(istio_requests_total{{reporter=\"{reporter}\",source_workload=\"client\",source_workload_namespace=\"default\",destination_workload=\"reviews-v1\",destination_service=\"reviews.default.svc.cluster.local\",response_code=\"200\"}})"
        )
    };
    for reporter in ["source", "destination"] {
        Mesh::wait_for(Duration::from_secs(30), &format!("the {reporter} reporter's count"), || {
            query(&edge(reporter)).first().map(value).filter(|n| *n >= 30.0)
        })
        .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", query(&edge(reporter)), prom_log()));
    }
    // Kiali's graph: request rate per edge, with the edge's security.
    let graph = query(
        "sum(rate(istio_requests_total{reporter=\"destination\"}[1m])) by (source_workload,destination_service_name,destination_workload,connection_security_policy)",
    );
    let edge = graph.iter().find(|r| r["metric"]["source_workload"] == "client" && r["metric"]["destination_workload"] == "reviews-v1");
    let edge = edge.unwrap_or_else(|| panic!("no client → reviews-v1 edge in {graph:?}"));
    assert_eq!(edge["metric"]["destination_service_name"], "reviews", "{edge}");
    assert_eq!(edge["metric"]["connection_security_policy"], "mutual_tls", "{edge}");
    assert!(value(edge) > 0.0, "{edge}");
    // Istio's mesh dashboard: global request volume and success rate (non-5xx share).
    let volume = query("round(sum(irate(istio_requests_total{reporter=\"source\"}[1m])), 0.001)");
    assert!(volume.first().map(value).is_some_and(|v| v.is_finite()), "global request volume: {volume:?}");
    let success = query(
        "sum(rate(istio_requests_total{reporter=\"source\", response_code!~\"5.*\"}[1m])) / sum(rate(istio_requests_total{reporter=\"source\"}[1m]))",
    );
    assert_eq!(success.first().map(value), Some(1.0), "every request of the burst succeeded: {success:?}");
    // Istio's workload dashboard: inbound request volume by source workload.
    let inbound = query(
        "sum(rate(istio_requests_total{reporter=\"destination\", destination_workload=\"reviews-v1\", destination_workload_namespace=\"default\"}[1m])) by (source_workload, source_workload_namespace)",
    );
    assert!(inbound.iter().any(|r| r["metric"]["source_workload"] == "client" && value(r) > 0.0), "{inbound:?}");
    // Istio's service dashboard: p99 latency from the duration histogram.
    let p99 = query(
        "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter=\"destination\",destination_workload=\"reviews-v1\"}[1m])) by (le))",
    );
    let p99 = p99.first().map(value).unwrap_or(f64::NAN);
    assert!(p99.is_finite() && p99 > 0.0, "p99 latency: {p99}");

    // The control plane's own service graph (it scrapes the sidecars itself): the edge with its
    // count and lock, in JSON, DOT and the rendered page.
    let debug = run.state()["control_plane_debug"].as_str().unwrap_or_default().to_owned();
    let get = |path: &str| {
        let out = weft_test_support::tool("curl").args(["-s", "-m", "5", &format!("http://{debug}{path}")]).output().expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let edge = Mesh::wait_for(Duration::from_secs(30), "the client → reviews-v1 edge in /graph", || {
        let g: Value = serde_json::from_str(&get("/graph?time_horizon=5m&filter_empty=true")).ok()?;
        g["edges"]
            .as_array()?
            .iter()
            .find(|e| {
                e["source"] == "client.default" && e["target"] == "reviews-v1.default" && e["requests"].as_f64().is_some_and(|n| n >= 30.0)
            })
            .cloned()
    })
    .unwrap_or_else(|e| panic!("{e}: {}", get("/graph?time_horizon=5m")));
    assert_eq!(edge["mtls"], true, "{edge}");
    assert_eq!(edge["service"], "reviews.default.svc.cluster.local", "{edge}");
    assert!(edge["p99_ms"].as_f64().is_some(), "{edge}");
    assert!(get("/dotgraph").contains("\"client.default\" -> \"reviews-v1.default\""));
    assert!(get("/dotviz").contains("<svg"));
    assert!(get("/graph?time_horizon=forever").contains("time_horizon"), "a bad horizon is named");

    // The same graph from the real Prometheus, with Kiali's PromQL (`--prometheus-url`).
    let prometheus = weft_control::graph::Prometheus::parse(&format!("http://{listen}")).expect("url");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let g = rt.block_on(prometheus.view(Duration::from_secs(300), true)).expect("graph from Prometheus");
    let edge = g["edges"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["source"] == "client.default" && e["target"] == "reviews-v1.default"))
        .cloned();
    let edge = edge.unwrap_or_else(|| panic!("no client → reviews-v1 edge from Prometheus: {g}"));
    // `increase` extrapolates over the window: the count is near the 30+ requests sent.
    assert!(edge["requests"].as_f64().is_some_and(|n| n >= 25.0), "{edge}");
    assert_eq!(edge["mtls"], true, "{edge}");
    assert!(edge["p99_ms"].as_f64().is_some_and(|p| p > 0.0), "{edge}");
    assert!(weft_control::graph::Prometheus::parse("prometheus:9090").is_err(), "a URL that is not http://ip:port is refused");
}

/// Istio's Telemetry API through a running mesh: a MeshConfig `envoyFileAccessLog` provider
/// and a root-namespace Telemetry whose CEL filter logs only failed requests, whose metric
/// override drops `response_code` from the server side's `istio_requests_total` and adds the
/// request method, and whose tracing sends nothing — and the sidecars do exactly that.
#[test]
fn a_telemetry_resource_shapes_the_sidecars_logs_and_metrics() {
    let mesh = format!(
        "{}{CLIENT_AND_REVIEWS}",
        r#"
apiVersion: weft.dev/v1alpha1
kind: MeshConfig
spec:
  defaultConfig: {concurrency: 1}
  extensionProviders:
  - name: failures
    envoyFileAccessLog:
      path: /dev/stdout
      logFormat: {text: "TELEMETRY %RESPONSE_CODE% %REQ(:PATH)%"}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: failures}]
    filter: {expression: "response.code >= 400"}
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: SERVER}
      tagOverrides:
        response_code: {operation: REMOVE}
        request_method: {value: request.method}
"#
    );
    let (run, out) = up("telemetry", &mesh, "10.233.68.0/24");
    assert!(out.status.success(), "weft up failed:\n{}", text(&out));
    Mesh::wait_for(Duration::from_secs(30), "reviews through both sidecars", || {
        (run.curl("default/client", "http://reviews:9080/reviews/0").0 == "200").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", run.log("default.client.sidecar.log")));
    for _ in 0..3 {
        assert_eq!(run.curl("default/client", "http://reviews:9080/reviews/0").0, "200");
    }
    let (missing, _) = run.curl("default/client", "http://reviews:9080/no-such-page");
    assert!(missing.starts_with('4'), "a failed request: {missing}");
    let log = Mesh::wait_for(Duration::from_secs(30), "the failed request in the server's log", || {
        let l = run.log("default.reviews-v1.sidecar.log");
        l.contains(&format!("TELEMETRY {missing} /no-such-page")).then_some(l)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", run.log("default.reviews-v1.sidecar.log")));
    assert!(!log.contains("TELEMETRY 200"), "the filter keeps successes out:\n{log}");
    assert!(run.log("default.client.sidecar.log").contains(&format!("TELEMETRY {missing} /no-such-page")), "the client side logs too");

    let (_, address) = run.workload("default/reviews-v1");
    let server = stats(&address);
    let requests: Vec<&str> = server
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{reporter=\"destination\"") && l.contains("source_workload=\"client\""))
        .collect();
    assert!(!requests.is_empty(), "{server}");
    for r in &requests {
        assert!(!r.contains("response_code="), "response_code removed on the server side: {r}");
        assert!(r.contains("request_method=\"GET\""), "the request method added: {r}");
    }
    // One series for the successes and the failure: their response codes are gone.
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let count = requests[0].split(' ').next_back().and_then(|n| n.parse::<u32>().ok()).unwrap_or(0);
    assert!(count >= 5, "four or more successes and the failure: {}", requests[0]);
    // Other metrics, and the client side, keep Istio's labels.
    assert!(server.lines().any(
        |l| l.starts_with("istio_request_duration_milliseconds_count{reporter=\"destination\"") && l.contains("response_code=\"200\"")
    ));
    let (_, client_address) = run.workload("default/client");
    let client = stats(&client_address);
    assert!(
        client.lines().any(|l| l.starts_with("istio_requests_total{reporter=\"source\"") && l.contains("response_code=\"200\"")),
        "{client}"
    );
}

/// DNS capture in `weft up` (MeshConfig `defaultConfig.proxyMetadata.ISTIO_META_DNS_CAPTURE`):
/// a workload's `/etc/hosts` holds only itself and its resolver is a pod's (search list,
/// `ndots:5`); the sidecar answers the mesh's names, so an unmodified client still calls
/// services by short name, and a ServiceEntry host without an address gets an allocated one.
#[test]
fn with_dns_capture_the_sidecar_answers_names_instead_of_etc_hosts() {
    let file = format!(
        "{}{CLIENT_AND_REVIEWS}{}",
        r#"
apiVersion: weft.dev/v1alpha1
kind: MeshConfig
spec:
  defaultConfig:
    concurrency: 1
    proxyMetadata: {ISTIO_META_DNS_CAPTURE: "true", ISTIO_META_DNS_AUTO_ALLOCATE: "true"}
"#,
        r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 3306, name: mysql, protocol: TCP}]
"#
    );
    let (run, out) = up("dnsup", &file, "10.233.69.0/24");
    assert!(out.status.success(), "weft up failed:\n{}", text(&out));
    let (netns, _) = run.workload("default/client");
    let hosts = std::fs::read_to_string(Path::new("/etc/netns").join(&netns).join("hosts")).expect("hosts");
    assert!(!hosts.contains("reviews"), "no /etc/hosts trick with DNS capture:\n{hosts}");

    let (code, body) = Mesh::wait_for(Duration::from_secs(30), "reviews by name through the sidecar's DNS", || {
        let (code, body) = run.curl("default/client", "http://reviews:9080/reviews/0");
        (code == "200").then_some((code, body))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", run.log("default.client.sidecar.log")));
    let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {code} {body}"));
    assert_eq!(json["peer"], "spiffe://cluster.local/ns/default/sa/client", "{body}");
    let getent = |name: &str| {
        let out = Command::new("ip").args(["netns", "exec", &netns, "getent", "hosts", name]).output().expect("getent");
        String::from_utf8_lossy(&out.stdout).split_whitespace().next().map(str::to_owned)
    };
    let vip = getent("reviews.default.svc.cluster.local").expect("the service's address");
    assert_eq!(getent("reviews.default").as_deref(), Some(vip.as_str()));
    let db = getent("db.example.com").expect("an allocated address");
    assert!(db.starts_with("240.240."), "{db}");
    let started = std::time::Instant::now();
    assert_eq!(getent("nowhere.example"), None, "a name outside the mesh is not answered");
    assert!(started.elapsed() < Duration::from_secs(10), "and fails at once, not after resolver timeouts: {:?}", started.elapsed());
}

/// An egress gateway in `weft up` (Istio's "egress gateway" task with mTLS): a workload with
/// `inject.istio.io/templates: gateway` runs only its proxy, as a gateway; a client's call to an
/// outside host (a workload without a sidecar, declared by a ServiceEntry that selects it) is
/// sent by the client's sidecar to the gateway over the mesh's mTLS and by the gateway to the
/// outside host.
#[test]
fn an_egress_gateway_carries_calls_out_of_the_mesh() {
    let file = r#"
apiVersion: weft.dev/v1alpha1
kind: MeshConfig
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
  defaultConfig: {concurrency: 1}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: client, labels: {app: client}}
spec:
  serviceAccount: client
  command: [sleep, "600"]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata:
  name: egress
  namespace: istio-system
  labels: {istio: egressgateway}
  annotations: {inject.istio.io/templates: gateway}
spec:
  serviceAccount: egress
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata:
  name: outside
  labels: {app: outside}
  annotations: {sidecar.istio.io/inject: "false"}
spec:
  command: [weft, sample, ratings]
  ports: [{containerPort: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: istio-egressgateway, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  ports: [{name: https, port: 443}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  workloadSelector: {labels: {app: outside}}
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 9080}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [api.example.com]
    tls: {mode: ISTIO_MUTUAL}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: egress-for-api}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: api
    trafficPolicy:
      portLevelSettings:
      - port: {number: 443}
        tls: {mode: ISTIO_MUTUAL, sni: api.example.com}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-through-egress}
spec:
  hosts: [api.example.com]
  gateways: [istio-system/egress, mesh]
  http:
  - match: [{gateways: [mesh], port: 80}]
    route: [{destination: {host: istio-egressgateway.istio-system.svc.cluster.local, subset: api, port: {number: 443}}}]
  - match: [{gateways: [istio-system/egress], port: 443}]
    route: [{destination: {host: api.example.com, port: {number: 80}}}]
"#;
    let (run, out) = up("egressgw", file, "10.233.70.0/24");
    assert!(out.status.success(), "weft up failed:\n{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.lines().any(|l| l.contains("istio-system/egress") && l.contains("gateway")), "up names the gateway:\n{table}");
    let (netns, _) = run.workload("default/client");
    let call = || {
        let out = Command::new("ip")
            .args(["netns", "exec", &netns, "curl", "-s", "-m", "5", "--resolve", "api.example.com:80:192.0.2.1"])
            .args(["-o", "/dev/stdout", "-w", "\n%{http_code}", "http://api.example.com/ratings/0"])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
        (code.to_owned(), body.to_owned())
    };
    let (_, body) = Mesh::wait_for(Duration::from_secs(30), "the call out through the egress gateway", || {
        let (code, body) = call();
        (code == "200").then_some((code, body))
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nclient: {:?}\n{}\ngateway:\n{}",
            call(),
            run.log("default.client.sidecar.log"),
            run.log("istio-system.egress.sidecar.log")
        )
    });
    assert!(body.contains("ratings"), "the outside host answered: {body}");
    // The gateway's own counters (its admin, inside its namespace), by Envoy's full names.
    let (gateway_netns, _) = run.workload("istio-system/egress");
    let out = Command::new("ip").args(["netns", "exec", &gateway_netns, "curl", "-s", "127.0.0.1:15000/stats"]).output().expect("curl");
    let gw = String::from_utf8_lossy(&out.stdout).into_owned();
    let counter = |name: &str| gw.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.trim().parse::<u64>().ok());
    let carried = counter("cluster.outbound|80||api.example.com.upstream_rq_total");
    assert!(carried.is_some_and(|n| n >= 1), "the gateway carried the call to the outside host:\n{gw}");
    let handshakes = counter("listener.0.0.0.0_443.ssl.handshake");
    assert!(handshakes.is_some_and(|n| n >= 1), "the client's sidecar reached the gateway over TLS on 443:\n{gw}");
}

/// The Kubernetes Gateway API in `weft up`: a `Gateway` of class istio is served by the
/// gateway workload labelled with its name, and an `HTTPRoute` routes by header and path
/// (a prefix matching whole segments), rewrites a prefix, redirects, sets response headers;
/// an `HTTPRoute` whose parent is a Service (GAMMA) routes sidecar traffic; `weft analyze`
/// shows each object's status.
#[test]
fn gateway_api_routes_through_a_gateway_workload_and_in_the_mesh() {
    require_root_netadmin().unwrap_or_else(|e| panic!("{e:#}"));
    let pki = TempDir::new("gwapi-pki").expect("temp dir");
    let ca = weft_test_support::certs::TestCa::new(pki.path(), "secure").expect("ca");
    let leaf = ca.issue("secure", weft_test_support::certs::Leaf { dns: &["secure.example.com"], ..Default::default() }).expect("leaf");
    let (cert, key, root) = (leaf.cert_str(), leaf.key_str(), ca.root_str());
    let app = std::path::PathBuf::from(WEFT).with_file_name("weft-test-app");
    assert!(app.exists(), "{} is missing: build the workspace first", app.display());
    let app = app.display().to_string();
    let file = format!(
        r#"
apiVersion: weft.dev/v1alpha1
kind: MeshConfig
spec: {{defaultConfig: {{concurrency: 1}}}}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {{name: client, labels: {{app: client}}}}
spec: {{command: [sleep, "600"]}}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata:
  name: web-gw
  labels: {{gateway.networking.k8s.io/gateway-name: web}}
  annotations: {{inject.istio.io/templates: gateway}}
spec: {{}}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {{name: web-v1, labels: {{app: web, version: v1}}}}
spec: {{command: [{app}, serve, "0.0.0.0:8080", v1], ports: [{{containerPort: 8080}}]}}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {{name: web-v2, labels: {{app: web2, version: v2}}}}
spec: {{command: [{app}, serve, "0.0.0.0:8080", v2], ports: [{{containerPort: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec: {{selector: {{app: web}}, ports: [{{name: http, port: 8080}}]}}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata:
  name: secure
  labels: {{app: secure}}
  annotations: {{sidecar.istio.io/inject: "false"}}
spec: {{command: [openssl, s_server, -accept, "8443", -cert, {cert}, -key, {key}, -www, -quiet], ports: [{{containerPort: 8443}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web2}}
spec: {{selector: {{app: web2}}, ports: [{{name: http, port: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: secure}}
spec: {{selector: {{app: secure}}, ports: [{{name: tls, port: 8443}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web}}
spec:
  gatewayClassName: istio
  listeners:
  - {{name: http, port: 80, protocol: HTTP, hostname: "*.example.com"}}
  - {{name: tls, port: 443, protocol: TLS, hostname: secure.example.com, tls: {{mode: Passthrough}}}}
  - {{name: db, port: 5432, protocol: TCP}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: secure}}
spec:
  parentRefs: [{{name: web, sectionName: tls}}]
  rules: [{{backendRefs: [{{name: secure, port: 8443}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: db}}
spec:
  parentRefs: [{{name: web, sectionName: db}}]
  rules: [{{backendRefs: [{{name: web, port: 8080}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: shop}}
spec:
  parentRefs: [{{name: web}}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}}}}]
    backendRefs: [{{name: web2, port: 8080}}]
  - matches: [{{path: {{type: Exact, value: /old}}}}]
    filters: [{{type: RequestRedirect, requestRedirect: {{path: {{type: ReplaceFullPath, replaceFullPath: /new}}, statusCode: 301}}}}]
  - matches: [{{headers: [{{name: x-version, value: v2}}]}}]
    backendRefs: [{{name: web2, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /hdr}}}}]
    filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-added, value: by-gateway}}], remove: [x-drop]}}}}]
    backendRefs: [{{name: web, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /mirrored}}}}]
    filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: web2, port: 8080}}}}}}]
    backendRefs: [{{name: web, port: 8080}}]
  - filters: [{{type: ResponseHeaderModifier, responseHeaderModifier: {{set: [{{name: x-served-by, value: gateway-api}}]}}}}]
    backendRefs: [{{name: web, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: rpc}}
spec:
  parentRefs: [{{name: web, sectionName: http}}]
  hostnames: [rpc.example.com]
  rules:
  - matches: [{{method: {{service: shop.Cart, method: Add}}}}]
    backendRefs: [{{name: web2, port: 8080}}]
  - backendRefs: [{{name: web, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: canary}}
spec:
  parentRefs: [{{group: "", kind: Service, name: web, port: 8080}}]
  rules:
  - matches: [{{headers: [{{name: x-canary, value: "yes"}}]}}]
    backendRefs: [{{name: web2, port: 8080}}]
  - backendRefs: [{{name: web, port: 8080}}]
"#
    );
    let (run, out) = up("gwapi", &file, "10.233.71.0/24");
    assert!(out.status.success(), "weft up failed:\n{}", text(&out));
    let (_, gw) = run.workload("default/web-gw");
    // From the machine to the gateway's address, as a client outside the mesh.
    let get = |path: &str, headers: &[&str]| {
        let mut args =
            vec!["-s".to_owned(), "-m".into(), "5".into(), "-D".into(), "-".into(), "-H".into(), "Host: shop.example.com".into()];
        for h in headers {
            args.extend(["-H".to_owned(), (*h).to_owned()]);
        }
        args.push(format!("http://{gw}{path}"));
        let out = weft_test_support::tool("curl").args(&args).output().expect("curl");
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
    };
    let first = Mesh::wait_for(Duration::from_secs(30), "the Gateway served", || {
        let r = get("/", &[]);
        r.starts_with("http/1.1 200").then_some(r)
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", get("/", &[]), run.log("default.web-gw.sidecar.log")));
    assert!(first.ends_with("v1") && first.contains("x-served-by: gateway-api"), "the default rule, with its response header:\n{first}");
    assert!(get("/", &["x-version: v2"]).ends_with("v2"), "a header match");
    let rewritten = get("/api/items", &[]);
    assert!(rewritten.contains("x-path: /v2/items") && rewritten.ends_with("v2"), "the prefix rewritten:\n{rewritten}");
    assert!(get("/apix", &[]).ends_with("v1"), "a path prefix matches whole segments: /apix is not under /api");
    let moved = get("/old", &[]);
    assert!(moved.starts_with("http/1.1 301") && moved.contains("location: http://shop.example.com/new"), "{moved}");
    let headers = get("/hdr/headers", &["x-drop: secret", "x-keep: yes"]);
    assert!(headers.contains("x-added: by-gateway") && headers.contains("x-keep: yes") && !headers.contains("x-drop"), "{headers}");
    let (_, web2) = run.workload("default/web-v2");
    let served = || {
        let out = weft_test_support::tool("curl").args(["-s", "-m", "5", &format!("http://{web2}:8080/served")]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().ok()
    };
    let before = served().expect("web2 counts what it serves");
    assert!(get("/mirrored", &[]).ends_with("v1"), "the caller gets the primary's answer");
    Mesh::wait_for(Duration::from_secs(10), "the mirror's copy at web2", || served().filter(|n| *n > before))
        .unwrap_or_else(|e| panic!("{e}: web2 served {:?} (before {before})", served()));
    // GRPCRoute: gRPC's paths over HTTP/2, routed by method.
    let rpc = |method: &str| {
        let out = weft_test_support::tool("curl")
            .args([
                "-s",
                "-m",
                "5",
                "--http2-prior-knowledge",
                "-X",
                "POST",
                "-H",
                "Host: rpc.example.com",
                "-H",
                "content-type: application/grpc",
            ])
            .arg(format!("http://{gw}/{method}"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(rpc("shop.Cart/Add"), "v2", "the method's rule");
    assert_eq!(rpc("shop.Cart/List"), "v1", "the service's other methods take the default rule");
    let other = get_host(&gw, "other.org");
    assert!(other.starts_with("http/1.1 404"), "a host no route attaches for:\n{other}");

    // TLSRoute: TLS passed through by SNI (curl checks the backend's own certificate);
    // TCPRoute: bytes forwarded as they are.
    let resolve = format!("secure.example.com:443:{gw}");
    let tls = weft_test_support::tool("curl")
        .args(["-s", "-m", "5", "--resolve", &resolve, "--cacert", &root, "https://secure.example.com/"])
        .output()
        .expect("curl");
    assert!(
        String::from_utf8_lossy(&tls.stdout).contains("s_server"),
        "TLS through the TLSRoute: {:?}",
        String::from_utf8_lossy(&tls.stderr)
    );
    let tcp = get_host(&format!("{gw}:5432"), "anything");
    assert!(tcp.starts_with("http/1.1 200") && tcp.ends_with("v1"), "TCP through the TCPRoute:\n{tcp}");

    // GAMMA: the client's sidecar routes a call to web by the route whose parent is web.
    let (code, body) = Mesh::wait_for(Duration::from_secs(30), "the mesh route", || {
        let (netns, _) = run.workload("default/client");
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns,
                "curl",
                "-s",
                "-m",
                "5",
                "-H",
                "x-canary: yes",
                "-o",
                "/dev/stdout",
                "-w",
                "\n%{http_code}",
                "http://web:8080/",
            ])
            .output()
            .expect("curl");
        let t = String::from_utf8_lossy(&out.stdout).into_owned();
        let (b, c) = t.rsplit_once('\n').map(|(b, c)| (b.to_owned(), c.to_owned())).unwrap_or_default();
        (c == "200" && b == "v2").then_some((c, b))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", run.log("default.client.sidecar.log")));
    assert_eq!((code.as_str(), body.as_str()), ("200", "v2"));

    let file_path = run.tmp.path().join("mesh.yaml");
    let out = weft(&["analyze", file_path.to_str().expect("utf-8")]);
    let t = text(&out);
    assert!(
        t.contains("HTTPRoute default/shop\n  parent Gateway default/web: Accepted=True (Accepted), ResolvedRefs=True (ResolvedRefs)"),
        "{t}"
    );
    assert!(t.contains("listener http: attachedRoutes=2"), "the HTTPRoute and the GRPCRoute: {t}");
    assert_eq!(out.status.code(), Some(0), "no error in a working mesh file: {t}");
    assert!(t.contains("TLSRoute default/secure\n  parent Gateway default/web/tls: Accepted=True (Accepted)"), "{t}");
}

fn get_host(address: &str, host: &str) -> String {
    let out = weft_test_support::tool("curl")
        .args(["-s", "-m", "5", "-D", "-", "-H", &format!("Host: {host}"), &format!("http://{address}/")])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
}
