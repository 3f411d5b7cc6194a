//! The one-machine mesh in explicit mode, as a user without privileges runs it: `weft up
//! --explicit` gives each workload loopback addresses of its own, no namespaces, capture or
//! root. A client calls through its sidecar as an HTTP proxy (curl `-x`, or `HTTP_PROXY` as
//! the samples read it); the hop to the server's sidecar is mTLS, VirtualService routes apply,
//! REGISTRY_ONLY blocks an unknown host; `weft down` stops every process. Plain `weft up`
//! without privileges fails naming `--explicit`; `weft demo --explicit` runs bookinfo.
//!
//! Run as root (as CI does), every `weft` command here runs as `nobody` through `setpriv`; run
//! as another user, as that user. Traffic stays on 127.0.0.0/8.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use weft_test_support::certs::TempDir;
use weft_test_support::mesh::Mesh;
use weft_test_support::prometheus_sum;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
/// Who runs `weft` when the test runs as root.
const NOBODY: u32 = 65534;

/// `weft args…` as an unprivileged user.
fn weft_as_user(args: &[&str]) -> Command {
    let root = weft_local::rundir::effective_uid() == Some(0);
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args([format!("--reuid={NOBODY}"), format!("--regid={NOBODY}"), "--clear-groups".into(), "--".into(), WEFT.into()]);
        c
    } else {
        Command::new(WEFT)
    };
    cmd.args(args);
    // Nobody's HOME does not exist; a run dir is always given, so nothing else is needed.
    cmd.env_remove("XDG_RUNTIME_DIR");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (setpriv is in util-linux)"))
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A temporary directory the unprivileged user can write (the run dir goes inside it), with
/// the mesh file in it.
fn user_dir(tag: &str, mesh: &str) -> TempDir {
    let tmp = TempDir::new(tag).expect("temp dir");
    std::fs::write(tmp.path().join("mesh.yaml"), mesh).expect("mesh file");
    if weft_local::rundir::effective_uid() == Some(0) {
        for p in [tmp.path().to_path_buf(), tmp.path().join("mesh.yaml")] {
            std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).expect("chown to nobody");
        }
        let probe = run(&mut weft_as_user(&["--version"]));
        assert!(
            probe.status.success(),
            "{WEFT} must be executable by uid {NOBODY} (every directory above it searchable):\n{}",
            text(&probe)
        );
    }
    tmp
}

/// A run of `weft up --explicit`, always taken down, also when the test fails.
struct Run {
    dir: PathBuf,
    _tmp: TempDir,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = weft_as_user(&["down", "--run-dir"]).arg(&self.dir).output();
        // Should the user's `weft down` have failed, root's stops the same recorded PIDs.
        let _ = Command::new(WEFT).args(["down", "--run-dir"]).arg(&self.dir).output();
    }
}

impl Run {
    fn state(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.join("state.json")).expect("state.json");
        serde_json::from_str(&text).expect("state json")
    }

    /// (mesh address, app address) of a workload.
    fn workload(&self, id: &str) -> (String, String) {
        let s = self.state();
        let w = s["workloads"].as_array().and_then(|ws| ws.iter().find(|w| w["id"] == id)).unwrap_or_else(|| panic!("no {id} in {s:#}"));
        (w["address"].as_str().unwrap_or_default().to_owned(), w["app_address"].as_str().unwrap_or_default().to_owned())
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(name)).unwrap_or_default()
    }
}

/// curl with `proxy` as its HTTP proxy (`-x`), and extra arguments; (status code, body).
fn curl_via(proxy: &str, url: &str, extra: &[&str]) -> (String, String) {
    let out = weft_test_support::tool("curl")
        .args(["-s", "-m", "5", "-x", proxy, "-o", "/dev/stdout", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl");
    split(&out)
}

fn split(out: &Output) -> (String, String) {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
    (code.to_owned(), body.to_owned())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn stats(mesh_address: &str) -> String {
    let out = weft_test_support::tool("curl")
        .args(["-s", "-m", "5", &format!("http://{mesh_address}:15090/stats/prometheus")])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// No process of `state` runs any more (a zombie has exited; only its parent's wait is left).
fn assert_no_process_left(state: &Value) {
    for p in state["processes"].as_array().into_iter().flatten() {
        let pid = p["pid"].as_u64().unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, a)| a.split_whitespace().collect()).unwrap_or_default();
        let running =
            fields.first().is_some_and(|s| *s != "Z") && fields.get(19).and_then(|s| s.parse::<u64>().ok()) == p["start_time"].as_u64();
        assert!(!running, "process {} ({pid}) left: {stat}", p["role"]);
    }
}

/// Two sample services (reviews in two versions, ratings) and a client with no application
/// port; STRICT mTLS in the namespace, REGISTRY_ONLY, an access log; a VirtualService sends
/// `end-user: jason` to reviews v2 (which calls ratings through its own sidecar) and the rest
/// to v1.
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
metadata: {name: reviews-v1, labels: {app: reviews, version: v1}}
spec:
  serviceAccount: bookinfo-reviews
  command: [weft, sample, reviews, --version, v1]
  ports: [{containerPort: 9080}]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v2, labels: {app: reviews, version: v2}}
spec:
  serviceAccount: bookinfo-reviews
  command: [weft, sample, reviews, --version, v2]
  ports: [{containerPort: 9080}]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: ratings-v1, labels: {app: ratings, version: v1}}
spec:
  serviceAccount: bookinfo-ratings
  command: [weft, sample, ratings]
  ports: [{containerPort: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
"#;

#[test]
fn an_unprivileged_user_runs_a_mesh_whose_clients_call_through_their_sidecar_over_mtls() {
    let tmp = user_dir("explicit", MESH);
    let dir = tmp.path().join("run");
    let file = tmp.path().join("mesh.yaml");
    let run_guard = Run { dir: dir.clone(), _tmp: tmp };
    let out = run(weft_as_user(&["up", "--explicit", "--loopback", "127.81.0.0/24", "--ready-timeout", "90s", "-f"])
        .arg(&file)
        .arg("--run-dir")
        .arg(&dir));
    assert!(out.status.success(), "weft up --explicit failed:\n{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    for want in ["explicit mode", "default/reviews-v1", "127.81.0.", "MESH ADDRESS", "curl -x http://127.81.0.2:15080"] {
        assert!(printed.contains(want), "up prints where things are ({want}):\n{printed}");
    }
    let state = run_guard.state();
    assert_eq!(state["explicit"], true);
    assert!(state["workloads"].as_array().into_iter().flatten().all(|w| w["netns"].is_null()), "no namespaces: {state:#}");
    let (client, _) = run_guard.workload("default/client");
    let (reviews_v1, reviews_v1_app) = run_guard.workload("default/reviews-v1");
    assert_ne!(reviews_v1, reviews_v1_app, "the sidecar and the application have addresses of their own");
    let proxy = format!("http://{client}:15080");

    // Through the client's sidecar, by name: the server's sidecar sees the client's SPIFFE
    // identity (the hop was mTLS) and the VirtualService's default route (v1) applies.
    let (code, body) = Mesh::wait_for(Duration::from_secs(30), "reviews through the client's sidecar", || {
        let (code, body) = curl_via(&proxy, "http://reviews:9080/reviews/0", &[]);
        (code == "200").then_some((code, body))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", run_guard.log("default.client.sidecar.log")));
    let reply = json(&body);
    assert_eq!(reply["peer"], "spiffe://cluster.local/ns/default/sa/client", "{code} {body}");
    assert_eq!(reply["podname"], "reviews-v1", "{body}");
    for name in ["reviews.default:9080", "reviews.default.svc.cluster.local:9080"] {
        let (code, body) = curl_via(&proxy, &format!("http://{name}/reviews/0"), &[]);
        assert_eq!(code, "200", "{name}: {body}");
    }

    // The VirtualService's header route: v2, which calls ratings through its own sidecar (the
    // sample honours HTTP_PROXY), over mTLS too. Here the client is curl reading
    // `http_proxy` from its environment, as the samples do.
    let out = weft_test_support::tool("curl")
        .env("http_proxy", &proxy)
        .args(["-s", "-m", "5", "-o", "/dev/stdout", "-w", "\n%{http_code}", "-H", "end-user: jason", "http://reviews:9080/reviews/0"])
        .output()
        .expect("curl");
    let (code, body) = split(&out);
    assert_eq!(code, "200", "{body}");
    let reply = json(&body);
    assert_eq!(reply["podname"], "reviews-v2", "{body}");
    assert_eq!(reply["ratings_peer"], "spiffe://cluster.local/ns/default/sa/bookinfo-reviews", "reviews reached ratings over mTLS: {body}");
    assert_eq!(reply["reviews"][0]["rating"]["stars"], 5, "{body}");

    // The sidecars' own stats say the same: the client's TLS handshakes to reviews, and TLS
    // 1.3 accepted on the server's bound inbound listener.
    let client_stats = stats(&client);
    let handshakes = prometheus_sum(&client_stats, &["_ssl_handshake{", "|reviews\""]);
    assert!(handshakes.is_some_and(|n| n >= 1.0), "the client sidecar's TLS stats show the mTLS hop:\n{client_stats}");
    let server_stats = stats(&reviews_v1);
    let inbound = format!("{reviews_v1}_9080");
    let ssl: Vec<&str> = server_stats.lines().filter(|l| l.contains("ssl")).collect();
    assert!(
        prometheus_sum(&server_stats, &["envoy_listener_ssl_versions{", "envoy_ssl_version=\"TLSv1.3\"", &inbound])
            .is_some_and(|n| n >= 1.0),
        "the server sidecar accepted TLS 1.3 on {inbound}:\n{ssl:#?}"
    );

    // STRICT: plaintext straight to the server's sidecar is refused; the application's own
    // address is not the mesh's business (reachable on loopback, as an app on localhost is).
    let plain = weft_test_support::tool("curl")
        .args(["-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{reviews_v1}:9080/reviews/0")])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "000", "STRICT refuses plaintext at the sidecar");

    // REGISTRY_ONLY: a host no service declares gets the sidecar's 502, and its access log
    // names the reason (Istio's block_all route).
    let (code, _) = curl_via(&proxy, "http://unknown.example:9080/", &[]);
    assert_eq!(code, "502", "an undeclared host is blocked");
    let client_log = || run_guard.log("default.client.sidecar.log");
    Mesh::wait_for(Duration::from_secs(10), "the block_all access log line", || {
        client_log().lines().any(|l| l.contains("\"unknown.example:9080\"") && l.contains(" 502 ") && l.contains("block_all")).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", client_log()));
    // The sidecar keeps what it refused; `weft analyze --proxy` reports it with the
    // ServiceEntry that would allow it.
    let analyze = run(Command::new(WEFT).args(["analyze", "--proxy", &format!("{client}:15000")]));
    let said = text(&analyze);
    assert!(said.contains("Warning [WFT0009] proxy ") && said.contains("call to unknown.example:9080 (HTTP) refused"), "{said}");
    assert!(said.contains("- unknown.example\n") && said.contains("resolution: DNS") && said.contains("name: http-9080"), "{said}");

    // Everything runs as the unprivileged user.
    if weft_local::rundir::effective_uid() == Some(0) {
        for p in state["processes"].as_array().into_iter().flatten() {
            let pid = p["pid"].as_u64().unwrap_or(0);
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            assert_eq!(uid, NOBODY.to_string(), "{} runs as uid {uid}", p["role"]);
        }
    }

    let status = run(weft_as_user(&["status", "--run-dir"]).arg(&dir));
    assert!(status.status.success(), "{}", text(&status));
    assert!(String::from_utf8_lossy(&status.stdout).contains("default/reviews-v2"), "{}", text(&status));

    let down = run(weft_as_user(&["down", "--run-dir"]).arg(&dir));
    assert!(down.status.success(), "{}", text(&down));
    assert!(String::from_utf8_lossy(&down.stdout).contains("stopped 9 processes"), "{}", text(&down));
    assert_no_process_left(&state);
    assert!(!dir.exists(), "{} left", dir.display());
}

#[test]
fn plain_weft_up_without_privileges_names_explicit_mode_and_starts_nothing() {
    let tmp = user_dir("explicit-refused", MESH);
    let dir = tmp.path().join("run");
    let out = run(weft_as_user(&["up", "-f"]).arg(tmp.path().join("mesh.yaml")).arg("--run-dir").arg(&dir));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not root") && err.contains("CAP_NET_ADMIN"), "says what is missing:\n{err}");
    assert!(
        err.contains("weft up --explicit") && err.contains("loopback") && err.contains("HTTP_PROXY"),
        "offers explicit mode and says what it is:\n{err}"
    );
    assert!(!dir.exists(), "nothing was started");
}

#[test]
fn bad_explicit_input_names_the_flag_or_field() {
    let tmp = user_dir("explicit-bad", MESH);
    let file = tmp.path().join("mesh.yaml");
    let dir = tmp.path().join("run");
    for (range, want) in [("10.1.0.0/24", "not a loopback range"), ("127.0.0.0/16", "contains 127.0.0.1"), ("127.x", "not an IPv4 CIDR")] {
        let out = run(weft_as_user(&["up", "--explicit", "--loopback", range, "-f"]).arg(&file).arg("--run-dir").arg(&dir));
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--loopback") && err.contains(want), "{range}: {err}");
    }
    let out = run(weft_as_user(&["up", "--explicit", "--loopback", "127.84.0.0/29", "-f"]).arg(&file).arg("--run-dir").arg(&dir));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--loopback 127.84.0.0/29 has room for 2 workloads"), "{}", text(&out));

    let clash = MESH.replacen("containerPort: 9080", "containerPort: 15021", 1);
    std::fs::write(&file, clash).expect("mesh file");
    let out = run(weft_as_user(&["up", "--explicit", "--loopback", "127.84.0.0/24", "-f"]).arg(&file).arg("--run-dir").arg(&dir));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Workload default/reviews-v1: spec.ports: 15021") && err.contains("health"), "{err}");
    assert!(!dir.exists(), "nothing was started");
}

#[test]
fn weft_demo_explicit_runs_bookinfo_with_every_hop_over_mtls() {
    let tmp = user_dir("explicit-demo", "");
    let dir = tmp.path().join("run");
    let run_guard = Run { dir: dir.clone(), _tmp: tmp };
    let out = run(weft_as_user(&["demo", "--explicit", "--duration", "15s", "--check", "--rate", "10", "--loopback", "127.82.0.0/24"])
        .args(["--ready-timeout", "90s", "--run-dir"])
        .arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("(explicit mode)"), "{stdout}");
    // productpage's sidecar, which a browser on this machine can open (PERMISSIVE).
    assert!(stdout.contains("http://127.82.0.2:9080/productpage"), "{stdout}");
    for service in ["details", "reviews", "ratings"] {
        let line =
            stdout.lines().find(|l| l.trim_start().starts_with(service) && l.contains("answered")).unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.contains("plaintext      0"), "every hop into {service} was mTLS: {line}");
    }
    assert!(stdout.contains("reviews-v1") && stdout.contains("reviews-v2") && stdout.contains("reviews-v3"), "{stdout}");
    assert!(stdout.contains("torn down"), "{stdout}");
    assert!(!run_guard.dir.exists());
}

#[test]
fn mesh_tracing_reports_one_trace_across_every_sidecar_on_the_path() {
    // The collector stands outside the mesh, as Istio's usually does.
    let collector = weft_test_support::zipkin::Collector::start().expect("collector");
    let port = collector.port;
    let mesh = MESH.replace(
        "  defaultConfig: {concurrency: 1}",
        &format!("  defaultConfig: {{concurrency: 1, tracing: {{sampling: 100, zipkin: {{address: \"127.0.0.1:{port}\"}}}}}}"),
    );
    let tmp = user_dir("explicit-trace", &mesh);
    let dir = tmp.path().join("run");
    let file = tmp.path().join("mesh.yaml");
    let run_guard = Run { dir: dir.clone(), _tmp: tmp };
    let out = run(weft_as_user(&["up", "--explicit", "--loopback", "127.85.0.0/24", "--ready-timeout", "90s", "-f"])
        .arg(&file)
        .arg("--run-dir")
        .arg(&dir));
    assert!(out.status.success(), "weft up --explicit failed:\n{}", text(&out));
    let (client, _) = run_guard.workload("default/client");
    let proxy = format!("http://{client}:15080");

    // client → reviews v2 (the header route) → ratings: four sidecar hops, one trace.
    let body = Mesh::wait_for(Duration::from_secs(30), "reviews v2 through the client's sidecar", || {
        let (code, body) = curl_via(&proxy, "http://reviews:9080/reviews/0", &["-H", "end-user: jason"]);
        (code == "200").then_some(body)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", run_guard.log("default.client.sidecar.log")));
    assert_eq!(json(&body)["podname"], "reviews-v2", "{body}");
    let trace = Mesh::wait_for(Duration::from_secs(30), "four spans of one trace at the collector", || {
        let all = collector.spans();
        // The request that answered: an earlier try may have reached reviews' sidecar before
        // the application listened (503 UF), a trace of two spans that never grows.
        let reviews = all.iter().find(|s| {
            s["kind"] == "CLIENT"
                && s["tags"]["http.url"].as_str().is_some_and(|u| u.contains("reviews"))
                && s["tags"]["http.status_code"] == "200"
        })?;
        let id = reviews["traceId"].clone();
        let trace: Vec<Value> = all.into_iter().filter(|s| s["traceId"] == id).collect();
        (trace.len() >= 4).then_some(trace)
    })
    .unwrap_or_else(|e| panic!("{e}: {:#?}", collector.spans()));
    let find = |kind: &str, host: &str| {
        trace
            .iter()
            .find(|s| s["kind"] == kind && s["tags"]["http.url"].as_str().is_some_and(|u| u.contains(host)))
            .unwrap_or_else(|| panic!("no {kind} span for {host}: {trace:#?}"))
            .clone()
    };
    let (out_reviews, in_reviews) = (find("CLIENT", "reviews"), find("SERVER", "reviews"));
    let (out_ratings, in_ratings) = (find("CLIENT", "ratings"), find("SERVER", "ratings"));
    // Each proxy's span is a child of the one before it (istiod turns shared span context off).
    assert_eq!(in_reviews["parentId"], out_reviews["id"], "reviews' sidecar continues the client's span");
    assert_eq!(in_ratings["parentId"], out_ratings["id"], "ratings' sidecar continues reviews' outbound span");
    assert!(out_reviews.get("parentId").is_none(), "the client's sidecar starts the trace");
    for s in [&out_reviews, &in_reviews, &out_ratings, &in_ratings] {
        assert_eq!(s["tags"]["http.status_code"], "200", "{s:#}");
        assert_eq!(s["tags"]["component"], "proxy");
    }
    assert_eq!(in_reviews["tags"]["upstream_cluster"], "inbound|9080||", "{in_reviews:#}");
    assert_eq!(out_reviews["tags"]["upstream_cluster"], "outbound|9080|v2|reviews.default.svc.cluster.local", "{out_reviews:#}");
    let stats = stats(&client);
    assert!(prometheus_sum(&stats, &["envoy_tracing_zipkin_spans_sent"]).is_some_and(|n| n >= 1.0), "{stats}");

    // A caller that speaks only W3C trace context (an OpenTelemetry SDK): its trace continues
    // through every sidecar, the client's span a child of the caller's.
    let (trace_id, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let (code, _) = curl_via(&proxy, "http://reviews:9080/reviews/0", &["-H", &format!("traceparent: 00-{trace_id}-{caller_span}-01")]);
    assert_eq!(code, "200");
    let w3c = Mesh::wait_for(Duration::from_secs(30), "the W3C caller's trace at the collector", || {
        let trace: Vec<Value> = collector.spans().into_iter().filter(|s| s["traceId"] == trace_id).collect();
        (trace.len() >= 2).then_some(trace)
    })
    .unwrap_or_else(|e| panic!("{e}: {:#?}", collector.spans()));
    let client_span = w3c
        .iter()
        .find(|s| s["kind"] == "CLIENT" && s["tags"]["http.url"].as_str().is_some_and(|u| u.contains("reviews")))
        .unwrap_or_else(|| panic!("no client span in {w3c:#?}"));
    assert_eq!(client_span["parentId"], caller_span, "the client's sidecar continues the W3C caller's span");
    assert!(w3c.iter().any(|s| s["kind"] == "SERVER"), "reviews' sidecar is in the same trace: {w3c:#?}");
}
