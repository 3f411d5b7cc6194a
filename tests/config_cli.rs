//! What a user writes is never silently dropped: `weft analyze`, `weft apply`, `weft up` and
//! `weft control-plane` on security kinds weft does not enforce, unknown kinds, typos,
//! duplicates and Istio's MeshConfig; and the small CLI promises (`weft version`, help texts).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use weft_test_support::certs::TempDir;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

const DENY_ALL: &str =
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: default}\nspec: {}\n";

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec:\n  ports: [{name: http, port: 9080}]\n";

fn weft(args: &[&str]) -> Output {
    Command::new(WEFT).args(args).stdin(Stdio::null()).output().expect("run weft")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write");
    p
}

#[test]
fn analyze_fails_on_a_deny_all_weft_does_not_enforce() {
    let dir = TempDir::new("analyze-deny").expect("tmp");
    let f = write(dir.path(), "deny.yaml", &format!("{DENY_ALL}---\n{SERVICE}"));
    let out = weft(&["analyze", f.to_str().expect("utf-8")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(79), "{t}");
    assert!(t.contains("Error [WFT0001]"), "{t}");
    assert!(t.contains("deny.yaml:1: AuthorizationPolicy default/deny-all: AuthorizationPolicy is not enforced by weft"), "{t}");

    for (kind, api) in [
        ("RequestAuthentication", "security.istio.io/v1"),
        ("EnvoyFilter", "networking.istio.io/v1alpha3"),
        ("WasmPlugin", "extensions.istio.io/v1alpha1"),
        ("NetworkPolicy", "networking.k8s.io/v1"),
    ] {
        let f = write(dir.path(), "k.yaml", &format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\nspec: {{}}\n"));
        let out = weft(&["analyze", "-f", f.to_str().expect("utf-8")]);
        assert_eq!(out.status.code(), Some(79), "{kind}: {}", text(&out));
        assert!(text(&out).contains(&format!("{kind} is not enforced by weft")), "{}", text(&out));
    }
}

#[test]
fn analyze_says_what_to_use_instead_of_kinds_it_does_not_read() {
    let dir = TempDir::new("analyze-kinds").expect("tmp");
    let f = write(
        dir.path(),
        "old.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {}\n---\n\
         apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata: {name: t}\nspec: {}\n",
    );
    let out = weft(&["analyze", f.to_str().expect("utf-8")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "warnings alone do not fail: {t}");
    for want in [
        "Deployment is ignored: weft does not run Kubernetes workloads",
        "ProxyConfig is ignored: not read: set proxy settings in MeshConfig defaultConfig",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
    // --failure-threshold Warning makes warnings fail, as in istioctl.
    let out = weft(&["analyze", "--failure-threshold", "warning", f.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(79), "{}", text(&out));
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(rel)
}

/// Istio 0.x routing as 2018 files wrote it becomes the v1 resources the golden file holds
/// (`WEFT_UPDATE_GOLDEN=1` rewrites it), with a note for each field whose meaning changes; the
/// output is a whole replacement file (a Service in it passes through) that weft loads.
#[test]
fn convert_prints_2018_routing_as_v1_resources() {
    let golden = fixture("legacy/2018.golden.yaml");
    // From the repository root, so the comments name the input as the golden file does.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(WEFT)
        .current_dir(&root)
        .args(["convert", "-f", "tests/fixtures/legacy/2018.yaml"])
        .stdin(Stdio::null())
        .output()
        .expect("run weft");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let got = String::from_utf8_lossy(&out.stdout).to_string();
    if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).expect("write golden");
    }
    let want = std::fs::read_to_string(&golden).expect("golden file (WEFT_UPDATE_GOLDEN=1 writes it)");
    assert_eq!(got, want, "weft convert output differs from {}", golden.display());
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("7 Istio 0.x resources → 8 v1 resources; 3 notes"), "{summary}");
    // weft reads what it wrote: no errors (warnings about hosts outside this file are fine).
    let dir = TempDir::new("convert-out").expect("tmp");
    let converted = write(dir.path(), "v1.yaml", &got);
    let out = weft(&["analyze", converted.to_str().expect("utf-8")]);
    assert!(!text(&out).contains("Error ["), "{}", text(&out));
}

/// An Ingress in a file is read as the ingress gateway serves it, in 2018's form too; analyze
/// says which path will 404 and which backend port is not HTTP to the mesh, at the Ingress.
#[test]
fn analyze_explains_an_ingress_path_that_404s_and_a_port_that_is_not_http() {
    let dir = TempDir::new("analyze-ingress").expect("tmp");
    let f = write(
        dir.path(),
        "ing.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: qd}\nspec:\n  ports: [{name: web, port: 8080}]\n---\n\
         apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata:\n  name: gw\n  annotations: {kubernetes.io/ingress.class: istio}\nspec:\n  rules:\n  - http:\n      paths:\n      - path: /qingdaoliuyi\n        backend: {serviceName: qd, servicePort: 8080}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: other, annotations: {kubernetes.io/ingress.class: nginx}}\nspec: {}\n",
    );
    let out = weft(&["analyze", f.to_str().expect("utf-8")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "warnings only: {t}");
    for want in [
        "ing.yaml:7: Ingress default/gw: spec.rules[0].http.paths[0].path: \"/qingdaoliuyi\" matches only /qingdaoliuyi itself",
        "write /qingdaoliuyi/.* or pathType: Prefix",
        "ing.yaml:7: Ingress default/gw: spec.rules[0].http.paths[0].backend: Service default/qd port 8080 (named \"web\") selects no HTTP protocol",
        "Ingress default/other: not of class istio",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
}

#[test]
fn istio_0x_routing_is_refused_with_its_conversion_and_bad_input_names_the_line() {
    let input = fixture("legacy/2018.yaml");
    let out = weft(&["analyze", input.to_str().expect("utf-8")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(79), "{t}");
    assert!(t.contains("Error [WFT0008]"), "{t}");
    assert!(
        t.contains("EgressRule default/mysql: config.istio.io/v1alpha2 EgressRule is Istio 0.x routing, which weft does not read; refused"),
        "{t}"
    );
    assert!(t.contains("prints a ServiceEntry"), "{t}");
    assert!(t.contains("The v1 resources that mean the same as"), "the conversion is shown: {t}");
    assert!(t.contains("kind: ServiceEntry") && t.contains("198.51.100.7"), "{t}");

    let dir = TempDir::new("convert-bad").expect("tmp");
    let bad = write(
        dir.path(),
        "bad.yaml",
        "apiVersion: config.istio.io/v1alpha2\nkind: RouteRule\nmetadata: {name: r}\nspec:\n  destination: {name: a}\n  precednce: 2\n",
    );
    let out = weft(&["convert", bad.to_str().expect("utf-8")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("bad.yaml:6: RouteRule default/r: spec.precednce: unknown field; did you mean precedence?"), "{t}");
    assert!(out.stdout.is_empty(), "nothing printed half way: {t}");
}

#[test]
fn analyze_reports_every_unknown_field_with_a_suggestion() {
    let dir = TempDir::new("analyze-typos").expect("tmp");
    let f = write(
        dir.path(),
        "dr.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: typo}\nspec:\n  host: reviews\n  trafficPolicy:\n    loadBalancr: {simple: ROUND_ROBIN}\n    conectionPool: {}\n  subsets:\n  - name: v1\n    lables: {version: v1}\n",
    );
    let out = weft(&["analyze", f.to_str().expect("utf-8")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(79), "{t}");
    for want in [
        "dr.yaml:7: DestinationRule default/typo: spec.trafficPolicy.loadBalancr: unknown field; did you mean loadBalancer?",
        "dr.yaml:8: DestinationRule default/typo: spec.trafficPolicy.conectionPool: unknown field; did you mean connectionPool?",
        "dr.yaml:11: DestinationRule default/typo: spec.subsets[0].lables: unknown field; did you mean labels?",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
}

#[test]
fn analyze_takes_files_stdin_and_directories_and_speaks_json_and_yaml() {
    let dir = TempDir::new("analyze-io").expect("tmp");
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v9}\n";
    write(dir.path(), "svc.yaml", SERVICE);
    let vs_file = write(dir.path(), "vs.yaml", vs);

    // From stdin, with the Service from a file: the subset is the only problem.
    let mut child = Command::new(WEFT)
        .args(["analyze", "-o", "json", "-f", "-", "-f"])
        .arg(dir.path().join("svc.yaml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(vs.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(79));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let list = v.as_array().expect("a list");
    assert_eq!(list.len(), 1, "{v:#}");
    assert_eq!(list[0]["code"], "IST0101");
    assert_eq!(list[0]["level"], "Error");
    assert_eq!(list[0]["origin"], "VirtualService reviews.default");
    assert_eq!(list[0]["reference"], "<stdin>:1");
    assert!(list[0]["documentationUrl"].as_str().is_some_and(|u| u.ends_with("/ist0101/")), "{v:#}");

    // A directory, as YAML.
    let out = weft(&["analyze", "-o", "yaml", dir.path().to_str().expect("utf-8")]);
    let v: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).expect("YAML");
    assert_eq!(v[0]["code"].as_str(), Some("IST0101"), "{}", text(&out));

    // --suppress with istioctl's resource form, wildcards allowed.
    let out = weft(&["analyze", "--suppress", "IST0101=VirtualService *.default", dir.path().to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("No validation issues found"), "{}", text(&out));
    let out = weft(&["analyze", "--suppress", "IST0101", vs_file.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "a malformed --suppress is refused: {}", text(&out));
    let out = weft(&["analyze"]);
    assert_eq!(out.status.code(), Some(2), "nothing to analyze is an error: {}", text(&out));
}

#[test]
fn duplicate_resources_are_reported_and_a_host_conflict_names_two_resources() {
    let dir = TempDir::new("analyze-dup").expect("tmp");
    let vs = |name: &str, subset: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [reviews, reviews.default.svc.cluster.local]\n  http:\n  - route:\n    - destination: {{host: reviews}}\n# {subset}\n")
    };
    write(dir.path(), "a.yaml", &format!("{SERVICE}---\n{}", vs("reviews", "a")));
    write(dir.path(), "b.yaml", &vs("reviews", "b"));
    let out = weft(&["analyze", "--config-dir", dir.path().to_str().expect("utf-8")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(79), "{t}");
    assert!(t.contains("Error [WFT0003]"), "{t}");
    assert!(t.contains("b.yaml:1: VirtualService default/reviews: is also defined at a.yaml:7"), "{t}");
    assert!(!t.contains("is also routed by"), "one VirtualService naming a host twice conflicts with nothing: {t}");

    write(dir.path(), "b.yaml", &vs("reviews-2", "b"));
    let out = weft(&["analyze", "--config-dir", dir.path().to_str().expect("utf-8")]);
    let t = text(&out);
    assert!(t.contains("VirtualService default/reviews-2: spec.hosts: host reviews.default.svc.cluster.local is also routed by VirtualService default/reviews; only default/reviews takes effect"), "{t}");
    assert!(!t.contains("WFT0003"), "{t}");
}

#[test]
fn a_mesh_config_with_istio_fields_loads_with_warnings_and_typos_are_refused() {
    let dir = TempDir::new("analyze-mesh").expect("tmp");
    write(dir.path(), "svc.yaml", SERVICE);
    let mesh = write(
        dir.path(),
        "mesh.yaml",
        "enableEnvoyAccessLogService: true\naccessLogFile: /dev/stdout\ndefaultConfig:\n  drainDuration: 45s\n  proxyMetadata: {ISTIO_META_DNS_CAPTURE: \"true\"}\nenableTracing: true\n",
    );
    let cfg = dir.path().join("svc.yaml");
    let out = weft(&["analyze", "--mesh", mesh.to_str().expect("utf-8"), cfg.to_str().expect("utf-8")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("mesh.yaml:1: MeshConfig: enableEnvoyAccessLogService: accepted, but weft does not act on this field yet"), "{t}");
    assert!(!t.contains("enableTracing"), "enableTracing is acted on:\n{t}");
    assert!(t.contains("mesh.yaml:4: MeshConfig: defaultConfig.drainDuration: accepted, but weft does not act on this field yet"), "{t}");
    assert!(!t.contains("proxyMetadata"), "proxyMetadata is acted on (the injector and weft up hand it to proxies):\n{t}");

    let bad = write(dir.path(), "bad-mesh.yaml", "enableTracng: true\n");
    let out = weft(&["analyze", "--mesh", bad.to_str().expect("utf-8"), cfg.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(79), "{}", text(&out));
    assert!(text(&out).contains("did you mean enableTracing?"), "{}", text(&out));
}

/// `weft apply` against a run directory that looks like a running mesh: it must refuse the
/// policy before anything reaches the control plane's directory.
#[test]
fn apply_refuses_a_policy_weft_would_not_enforce() {
    let run = TempDir::new("apply-deny").expect("tmp");
    std::fs::write(run.path().join("state.json"), "{}").expect("state");
    let f = write(run.path(), "deny.yaml", DENY_ALL);
    let out = weft(&["apply", "-f", f.to_str().expect("utf-8"), "--run-dir", run.path().to_str().expect("utf-8")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("nothing applied") && t.contains("AuthorizationPolicy is not enforced by weft"), "{t}");
    assert!(!run.path().join("config/applied/deny.yaml").exists(), "the file must not reach the control plane");
}

#[test]
fn weft_up_refuses_a_mesh_file_with_an_unenforced_policy() {
    let run = TempDir::new("up-deny").expect("tmp");
    let f = write(
        run.path(),
        "mesh.yaml",
        &format!("apiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {{name: a}}\nspec:\n  command: [\"true\"]\n  ports: [{{containerPort: 8080}}]\n---\n{DENY_ALL}"),
    );
    let rd = run.path().join("run");
    let out = weft(&["up", "--explicit", "-f", f.to_str().expect("utf-8"), "--run-dir", rd.to_str().expect("utf-8")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("AuthorizationPolicy default/deny-all: AuthorizationPolicy is not enforced by weft"), "{t}");
    assert!(t.contains("--allow-unenforced-security"), "{t}");
    assert!(!rd.join("state.json").exists(), "nothing may start");
}

struct ControlPlane(Child);

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn control_plane(config: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(WEFT);
    c.args(["control-plane", "--config-dir"]).arg(config);
    c.args(["--xds-address", "127.0.0.1:0", "--debug-address", "127.0.0.1:0"]).args(extra);
    c
}

/// A running control plane on `config`, its xDS and debug addresses, and its stderr when asked
/// for (else discarded).
struct Serving {
    _process: ControlPlane,
    xds: String,
    debug: String,
    stderr: Option<std::process::ChildStderr>,
}

fn serving(config: &Path, extra: &[&str], keep_stderr: bool) -> Serving {
    let mut child = control_plane(config, extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if keep_stderr { Stdio::piped() } else { Stdio::null() })
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take();
    let process = ControlPlane(child);
    // "weft control-plane: xDS on A, debug on B" once it serves.
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read");
    let xds = line.split("xDS on ").nth(1).and_then(|r| r.split(',').next()).unwrap_or_default().trim().to_string();
    let debug = line.rsplit("debug on ").next().map(str::trim).unwrap_or_default().to_string();
    assert!(xds.starts_with("127.0.0.1:") && debug.starts_with("127.0.0.1:"), "control plane did not start: {line}");
    Serving { _process: process, xds, debug, stderr }
}

#[test]
fn the_control_plane_refuses_to_start_with_an_unenforced_policy_unless_told() {
    let dir = TempDir::new("cp-deny").expect("tmp");
    write(dir.path(), "svc.yaml", SERVICE);
    write(dir.path(), "deny.yaml", DENY_ALL);
    let out = control_plane(dir.path(), &[]).stdin(Stdio::null()).output().expect("run");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("refusing to start rather than fail open"), "{t}");
    assert!(t.contains("deny.yaml:1: AuthorizationPolicy default/deny-all"), "{t}");

    // Accepted explicitly: it serves, and proxy-status names the policy as not enforced.
    let mut cp = serving(dir.path(), &["--allow-unenforced-security"], true);
    let out = weft(&["proxy-status", "--control-plane", &cp.debug]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("NOT ENFORCED deny.yaml:1: AuthorizationPolicy default/deny-all"), "{t}");
    let mut stderr = cp.stderr.take().expect("stderr");
    drop(cp);
    let mut log = String::new();
    let _ = stderr.read_to_string(&mut log);
    assert!(log.contains("NOT ENFORCED: deny.yaml:1: AuthorizationPolicy default/deny-all"), "{log}");
}

#[test]
fn a_policy_that_arrives_while_running_is_reported_as_not_enforced() {
    let dir = TempDir::new("cp-late").expect("tmp");
    write(dir.path(), "svc.yaml", SERVICE);
    let cp = serving(dir.path(), &[], false);
    let debug = cp.debug.clone();
    assert_eq!(weft(&["proxy-status", "--control-plane", &debug]).status.code(), Some(0));
    write(dir.path(), "deny.yaml", DENY_ALL);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let out = weft(&["proxy-status", "--control-plane", &debug]);
        if text(&out).contains("NOT ENFORCED deny.yaml:1: AuthorizationPolicy default/deny-all") {
            assert_eq!(out.status.code(), Some(1));
            break;
        }
        assert!(Instant::now() < end, "proxy-status never reported the policy: {}", text(&out));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn version_names_the_commit_and_help_texts_say_what_each_command_does() {
    for args in [&["version"][..], &["--version"][..]] {
        let out = weft(args);
        let t = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{t}");
        let re_ok = t.starts_with(&format!("weft {} (commit ", env!("CARGO_PKG_VERSION")));
        assert!(re_ok, "{t}");
        let commit = t.trim().rsplit("commit ").next().unwrap_or_default().trim_end_matches(')');
        assert!(commit == "unknown" || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())), "{t}");
    }
    let out = weft(&["delete", "--help"]);
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("takes a file `apply` added back out"), "{t}");
}

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A control plane with reviews (a Service, a WorkloadEntry and a VirtualService) and one
/// weft sidecar connected to it over ADS in explicit mode (it binds only loopback ports), that
/// has called reviews once. Returns the control plane's debug address and the proxy's admin
/// address.
fn mesh_with_one_sidecar(dir: &Path) -> (Serving, Proxy, String, SocketAddr) {
    write(dir, "svc.yaml", SERVICE);
    write(
        dir,
        "reviews.yaml",
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: reviews-1}\nspec: {address: 127.0.0.9, labels: {app: reviews}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{uri: {prefix: /api}}]\n    route:\n    - destination: {host: reviews}\n  - route:\n    - destination: {host: reviews}\n",
    );
    // The service's selector is what ties the WorkloadEntry to it.
    write(dir, "svc.yaml", &SERVICE.replace("spec:\n", "spec:\n  selector: {app: reviews}\n"));
    let cp = serving(dir, &[], false);
    let (xds, debug) = (cp.xds.clone(), cp.debug.clone());

    let admin = SocketAddr::from(([127, 0, 0, 1], weft_test_support::free_port()));
    let http_proxy_port = weft_test_support::free_port();
    let admin_yaml = format!("admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}", admin.port());
    let proxy = Proxy(
        Command::new(WEFT)
            .args(["proxy", "--xds-address", &xds, "--config-yaml", &admin_yaml, "-l", "error"])
            .args(["--service-node", "sidecar~127.0.0.1~productpage-1.default~default.svc.cluster.local"])
            .args(["--node-meta", "NAMESPACE=default", "--node-meta", "LABELS={\"app\":\"productpage\"}"])
            .args(["--node-meta", "INTERCEPTION_MODE=NONE", "--node-meta", &format!("HTTP_PROXY_PORT={http_proxy_port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn proxy"),
    );
    // Synced when proxy-status says so for every type.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let out = weft(&["proxy-status", "--control-plane", &debug]);
        let t = text(&out);
        if t.lines().any(|l| l.starts_with("productpage-1.default") && l.matches("SYNCED").count() == 4) {
            break;
        }
        assert!(Instant::now() < end, "the sidecar never synced:\n{t}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The sidecar fetches a service's cluster when it first uses it: one request to reviews
    // (answered 503, nothing listens at its endpoint) makes it hold reviews.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http_proxy_port)).expect("connect to the sidecar's proxy port");
    s.write_all(b"GET /api HTTP/1.1\r\nHost: reviews:9080\r\nConnection: close\r\n\r\n").expect("send");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 503"), "reviews has no listening endpoint: {reply}");
    (cp, proxy, debug, admin)
}

use std::net::SocketAddr;

/// One row of a `proxy-config` table, split on runs of spaces.
fn row<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.starts_with(first))
        .map(|l| l.split("   ").map(str::trim).filter(|c| !c.is_empty()).collect())
        .unwrap_or_default()
}

#[test]
fn proxy_config_shows_the_domains_virtual_service_and_endpoint_health_the_proxy_holds() {
    let dir = TempDir::new("proxy-config").expect("tmp");
    let (_cp, _proxy, debug, admin) = mesh_with_one_sidecar(dir.path());

    let out = weft(&["proxy-config", "routes", "productpage-1.default", "--control-plane", &debug]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.lines()
            .next()
            .is_some_and(|h| h.split_whitespace().collect::<Vec<_>>().join(" ") == "NAME VHOST NAME DOMAINS MATCH VIRTUAL SERVICE"),
        "{t}"
    );
    let rows: Vec<Vec<&str>> = t.lines().filter(|l| l.contains("reviews.default.svc.cluster.local:9080")).map(|l| row(l, "")).collect();
    assert_eq!(rows.len(), 2, "one row per route of the VirtualService:\n{t}");
    for (r, want_match) in rows.iter().zip(["/api*", "/*"]) {
        assert_eq!(r[1], "reviews.default.svc.cluster.local:9080", "{t}");
        assert_eq!(r[2], "reviews.default:9080, reviews:9080", "DOMAINS shows the names the route answers, not `*`: {t}");
        assert_eq!(r[3], want_match, "{t}");
        assert_eq!(r[4], "reviews.default", "{t}");
    }

    // Endpoints come from the proxy's admin, with its health view.
    let out = weft(&["proxy-config", "endpoints", "productpage-1.default", "--control-plane", &debug, "--admin", &admin.to_string()]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert_eq!(row(&t, "ENDPOINT"), ["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"], "{t}");
    assert_eq!(row(&t, "127.0.0.9:9080"), ["127.0.0.9:9080", "HEALTHY", "OK", "outbound|9080||reviews.default.svc.cluster.local"], "{t}");
    // Without a way to reach the proxy, it says how to give one rather than guessing.
    let out = weft(&["proxy-config", "endpoints", "productpage-1.default", "--control-plane", &debug, "--run-dir", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("pass --admin HOST:PORT"), "{}", text(&out));
}

/// The STATUS and OUTLIER CHECK columns are the proxy's, whatever they are: a stand-in admin
/// reports one unhealthy and one ejected host.
#[test]
fn proxy_config_endpoints_prints_unhealthy_and_ejected_hosts_as_the_proxy_reports_them() {
    let dir = TempDir::new("proxy-config-health").expect("tmp");
    let (_cp, _proxy, debug, _) = mesh_with_one_sidecar(dir.path());
    let fake = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let fake_addr = fake.local_addr().expect("addr");
    let body = r#"{"cluster_statuses":[{"name":"outbound|9080||reviews.default.svc.cluster.local","host_statuses":[
        {"address":{"socket_address":{"address":"127.0.0.9","port_value":9080}},"health_status":{"eds_health_status":"UNHEALTHY","failed_outlier_check":false}},
        {"address":{"socket_address":{"address":"127.0.0.10","port_value":9080}},"health_status":{"eds_health_status":"HEALTHY","failed_outlier_check":true}}]}]}"#;
    let server = std::thread::spawn(move || {
        if let Ok((mut s, _)) = fake.accept() {
            // Read the whole request first: closing with unread bytes would reset the connection.
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(format!("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{body}").as_bytes());
        }
    });
    let out = weft(&["proxy-config", "endpoints", "productpage-1.default", "--control-plane", &debug, "--admin", &fake_addr.to_string()]);
    let _ = server.join();
    let t = text(&out);
    assert_eq!(row(&t, "127.0.0.9:9080")[1..3], ["UNHEALTHY", "OK"], "{t}");
    assert_eq!(row(&t, "127.0.0.10:9080")[1..3], ["HEALTHY", "FAILED"], "{t}");
}

#[test]
fn analyze_reads_a_weft_up_file_as_weft_up_does() {
    let bookinfo = format!("{}/../../samples/bookinfo/mesh.yaml", env!("CARGO_MANIFEST_DIR"));
    let out = weft(&["analyze", &bookinfo]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("No validation issues found"), "its Workloads are the subsets' workloads, not unread kinds: {t}");

    let dir = TempDir::new("analyze-up").expect("tmp");
    let f = write(
        dir.path(),
        "mesh.yaml",
        "apiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {name: a}\nspec:\n  command: [\"true\"]\n  ports: [{containerPort: 0}]\n",
    );
    let out = weft(&["analyze", f.to_str().expect("utf-8")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(79), "{t}");
    assert!(t.contains("mesh.yaml:") && t.contains("Workload default/a"), "{t}");

    // In a control plane's config dir a Workload is not read, and analyze says so.
    let cfg = TempDir::new("analyze-up-dir").expect("tmp");
    write(cfg.path(), "w.yaml", "apiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {name: a}\nspec: {command: [\"true\"]}\n");
    let out = weft(&["analyze", "--config-dir", cfg.path().to_str().expect("utf-8")]);
    assert!(text(&out).contains("read by `weft up -f FILE`"), "{}", text(&out));
}

/// A Gateway's `credentialName` must name a Secret in the namespace of the workload it selects.
#[test]
fn analyze_names_a_missing_gateway_secret() {
    let dir = TempDir::new("analyze-cred").expect("tmp");
    write(
        dir.path(),
        "gw.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: edge, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: SIMPLE, credentialName: a-cert}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: gw, namespace: edge}\nspec: {address: 10.0.0.9, labels: {istio: ingressgateway}}\n",
    );
    let out = weft(&["analyze", dir.path().to_str().expect("utf-8")]);
    let t = text(&out);
    assert!(t.contains("spec.servers[0].tls.credentialName") && t.contains("no Secret edge/a-cert"), "{t}");
}
