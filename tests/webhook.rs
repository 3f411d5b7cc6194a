//! The admission webhooks of `weft control-plane` over real HTTPS, as the API server calls them:
//! curl (HTTP/1.1 and HTTP/2) trusting only the mesh's root, as a webhook configuration's
//! `caBundle` makes the API server trust it, and the name the `istiod` Service gives it. Real
//! AdmissionReview documents come back patched, skipped or denied; malformed ones get a 400,
//! and the control plane keeps serving.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use weft_test_support::free_port;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

struct Plane {
    child: Child,
    dir: PathBuf,
    webhook: u16,
}

impl Drop for Plane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Plane {
    fn start(tag: &str, values: &str) -> Plane {
        let dir = std::env::temp_dir().join(format!("weft-webhook-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["config", "tokens", "cacerts"] {
            std::fs::create_dir_all(dir.join(d)).expect("dir");
        }
        std::fs::write(dir.join("values.yaml"), values).expect("values");
        let (xds, secure, debug, webhook) = (free_port(), free_port(), free_port(), free_port());
        let log = std::fs::File::create(dir.join("control-plane.log")).expect("log");
        let child = Command::new(WEFT)
            .args(["control-plane", "--config-dir"])
            .arg(dir.join("config"))
            .arg("--ca-dir")
            .arg(dir.join("cacerts"))
            .arg("--ca-token-dir")
            .arg(dir.join("tokens"))
            .args(["--xds-address", &format!("127.0.0.1:{xds}")])
            .args(["--secure-address", &format!("127.0.0.1:{secure}")])
            .args(["--debug-address", &format!("127.0.0.1:{debug}")])
            .args(["--webhook-address", &format!("127.0.0.1:{webhook}")])
            .arg("--injection-values")
            .arg(dir.join("values.yaml"))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .stdin(Stdio::null())
            .spawn()
            .expect("start weft control-plane");
        let plane = Plane { child, dir, webhook };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(plane.root().exists() && std::net::TcpStream::connect(("127.0.0.1", webhook)).is_ok()) {
            assert!(Instant::now() < deadline, "the webhook port never opened:\n{}", plane.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        plane
    }

    fn root(&self) -> PathBuf {
        self.dir.join("cacerts").join("root-cert.pem")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("control-plane.log")).unwrap_or_default()
    }

    /// POSTs `body` to `path` as the API server would, through the `istiod` Service's name.
    fn post(&self, path: &str, body: &[u8], extra: &[&str]) -> (u16, String) {
        let file = self.dir.join("body.json");
        std::fs::write(&file, body).expect("body");
        let out = curl(&self.root(), self.webhook, path, &file, extra);
        assert!(out.status.success(), "curl failed: {}\n{}", String::from_utf8_lossy(&out.stderr), self.log());
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').expect("status line");
        (code.trim().parse().expect("status"), body.to_owned())
    }
}

fn curl(root: &Path, port: u16, path: &str, body: &Path, extra: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(root)
        .args(["--resolve", &format!("istiod.istio-system.svc:{port}:127.0.0.1")])
        .args(if extra.iter().any(|a| a.starts_with("Content-Type")) { &[][..] } else { &["-H", "Content-Type: application/json"][..] })
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .args(["-w", "\n%{http_code}"])
        .args(extra)
        .arg(format!("https://istiod.istio-system.svc:{port}{path}"))
        .output()
        .expect("curl (Debian package curl; scripts/setup.sh installs it)")
}

fn pod_review() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../kube/tests/fixtures/pod-review.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn patch_ops(response: &Value) -> Vec<Value> {
    let b64 = response["response"]["patch"].as_str().expect("a patch");
    let out = Command::new("base64").arg("-d").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().and_then(|mut c| {
        use std::io::Write as _;
        c.stdin.take().expect("stdin").write_all(b64.as_bytes())?;
        c.wait_with_output()
    });
    serde_json::from_slice(&out.expect("base64 -d").stdout).expect("JSONPatch")
}

#[test]
fn pods_are_injected_over_https_on_http1_and_http2() {
    let plane = Plane::start("inject", "hub: registry.example.com/mesh\ntag: \"9.9\"\n");
    let review = pod_review().to_string();
    for proto in ["--http1.1", "--http2"] {
        let (status, body) = plane.post("/inject", review.as_bytes(), &[proto]);
        assert_eq!(status, 200, "{proto}: {body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["response"]["allowed"], true, "{body}");
        assert_eq!(v["response"]["uid"], "0a6c2a6b-7d55-4b3e-9c8e-3f1f8f2a9d10");
        let ops = patch_ops(&v);
        let adds_proxy = ops
            .iter()
            .any(|op| op["path"].as_str().is_some_and(|p| p.starts_with("/spec/initContainers")) && op.to_string().contains("istio-proxy"));
        assert!(adds_proxy, "{proto}: the patch adds the proxy: {ops:?}");
        assert!(op_values(&ops).contains("registry.example.com/mesh/weft:9.9"), "the injection values are used");
    }
    // Istio's longer paths reach the same webhook.
    let (status, _) = plane.post("/inject/cluster/Kubernetes/net/network1", review.as_bytes(), &[]);
    assert_eq!(status, 200);
}

fn op_values(ops: &[Value]) -> String {
    ops.iter().map(|o| o["value"].to_string()).collect()
}

#[test]
fn bad_requests_get_clear_answers_and_the_webhook_keeps_serving() {
    let plane = Plane::start("bad", "{}\n");
    let (status, body) = plane.post("/inject", b"{\"apiVersion\": \"v1\"", &[]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not JSON"), "{body}");
    let (status, body) = plane.post("/mutate", b"{}", &[]);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("/inject and /validate"), "{body}");
    let (status, _) = plane.post("/inject", b"{}", &["-H", "Content-Type: text/plain"]);
    assert_eq!(status, 415);
    let (status, _) = plane.post("/inject", b"", &["-X", "GET"]);
    assert_eq!(status, 405);

    // A body announced over 8 MiB is refused before it is read.
    let (status, _) = plane.post("/inject", b"{}", &["--http1.1", "-H", "Content-Length: 9437184"]);
    assert_eq!(status, 413);

    // A pod the injector refuses is denied with the annotation at fault.
    let mut review = pod_review();
    review["request"]["object"]["metadata"]["annotations"]["sidecar.istio.io/interceptionMode"] = json!("TPROXY");
    let (status, body) = plane.post("/inject", review.to_string().as_bytes(), &[]);
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["response"]["allowed"], false);
    assert!(v["response"]["status"]["message"].as_str().unwrap_or_default().contains("sidecar.istio.io/interceptionMode"), "{body}");

    // After all that, a good review is still patched.
    let (status, body) = plane.post("/inject", pod_review().to_string().as_bytes(), &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"patch\""), "{body}");

    // Only the mesh's root is trusted: without it the handshake fails.
    let file = plane.dir.join("body.json");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--resolve", &format!("istiod.istio-system.svc:{}:127.0.0.1", plane.webhook), "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!("https://istiod.istio-system.svc:{}/inject", plane.webhook))
        .output()
        .expect("curl");
    assert!(!out.status.success(), "a client that does not trust the mesh root is refused");
}

#[test]
fn invalid_istio_resources_are_refused_at_admission() {
    let plane = Plane::start("validate", "{}\n");
    let vs = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 50}, {"destination": {"host": "reviews", "subset": "v2"}, "weight": 40}]}]}});
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u1", "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"}, "operation": "CREATE", "namespace": "shop", "object": vs}});
    let (status, body) = plane.post("/validate", review.to_string().as_bytes(), &[]);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["response"]["allowed"], false, "{body}");
    assert!(v["response"]["status"]["message"].as_str().unwrap_or_default().contains("spec.http[0].route"), "{body}");
}

/// Slow clients (a body announced and never sent) neither block the API server's calls nor
/// hold memory: 40 of them at once, and a review still gets its answer at once; each stalled
/// request is answered 408 once its 10 s are up.
#[test]
fn stalled_clients_do_not_block_admission_and_are_timed_out() {
    use rustls::pki_types::pem::PemObject as _;
    use std::io::{Read as _, Write as _};
    let plane = Plane::start("slow", "{}\n");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(plane.root()).expect("root") {
        roots.add(c.expect("pem")).expect("add root");
    }
    let config = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let name = rustls::pki_types::ServerName::try_from("istiod.istio-system.svc").expect("name");
        let conn = rustls::ClientConnection::new(config.clone(), name).expect("client");
        let tcp = std::net::TcpStream::connect(("127.0.0.1", plane.webhook)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let head = "POST /inject HTTP/1.1\r\nHost: istiod.istio-system.svc\r\nContent-Type: application/json\r\nContent-Length: 4000000\r\n\r\n{\"apiVersion\"";
        tls.write_all(head.as_bytes()).expect("send the start of a request");
        tls.flush().expect("flush");
        stalled.push(tls);
    }
    let asked = Instant::now();
    let (status, body) = plane.post("/inject", pod_review().to_string().as_bytes(), &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"patch\""), "{body}");
    assert!(asked.elapsed() < Duration::from_secs(5), "the review waited {:?} behind stalled clients", asked.elapsed());
    for (i, mut tls) in stalled.into_iter().enumerate() {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match tls.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "stalled client {i} got {text:?} after {:?}", started.elapsed());
    }
    assert!(started.elapsed() < Duration::from_secs(20), "the stalled requests were answered only after {:?}", started.elapsed());
}

/// Injection follows its values file (the mounted `istio-sidecar-injector` ConfigMap, which the
/// kubelet rewrites): new values reach the next review; values that do not read are logged and
/// the last good ones kept.
#[test]
fn changed_injection_values_reach_the_next_review() {
    let plane = Plane::start("values", "hub: registry.example.com/mesh\ntag: \"1.0\"\n");
    let review = pod_review().to_string();
    let image_of = |plane: &Plane| {
        let (status, body) = plane.post("/inject", review.as_bytes(), &[]);
        assert_eq!(status, 200, "{body}");
        op_values(&patch_ops(&serde_json::from_str(&body).expect("json")))
    };
    assert!(image_of(&plane).contains("registry.example.com/mesh/weft:1.0"));
    std::fs::write(plane.dir.join("values.yaml"), "hub: registry.example.com/mesh\ntag: \"2.0\"\n").expect("values");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !image_of(&plane).contains("registry.example.com/mesh/weft:2.0") {
        assert!(Instant::now() < deadline, "the new values never reached injection:\n{}", plane.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(plane.dir.join("values.yaml"), "hub: [not, a, hub\n").expect("values");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !plane.log().contains("do not read") {
        assert!(Instant::now() < deadline, "bad values were not reported:\n{}", plane.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(image_of(&plane).contains("registry.example.com/mesh/weft:2.0"), "the last good values stay in force");
}
