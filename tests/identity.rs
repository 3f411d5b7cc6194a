//! Workload identity end to end: `weft control-plane` as the mesh CA, two `weft proxy`
//! processes that each make their own key, get an SVID with their bootstrap token, and talk
//! mutual TLS 1.3 through SDS-named secrets (`default`, `ROOTCA`), verifying each other's
//! SPIFFE ID. Short-lived certificates are renewed under load without a failed request.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use weft_test_support::{eventually, free_port, send, ProxyKind, ProxyProcess, Req, Upstream};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const FRONT: &str = "spiffe://cluster.local/ns/default/sa/front";
const BACK: &str = "spiffe://cluster.local/ns/default/sa/back";

/// The control plane as a child process, killed by its PID on drop.
struct ControlPlane {
    child: Child,
    log: PathBuf,
    secure: u16,
    dir: PathBuf,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ControlPlane {
    fn start(tag: &str) -> ControlPlane {
        let dir = std::env::temp_dir().join(format!("weft-identity-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["config", "tokens", "cacerts"] {
            std::fs::create_dir_all(dir.join(d)).expect("dir");
        }
        for sa in ["front", "back"] {
            let token = format!("{sa}-bootstrap-token-{}", std::process::id());
            std::fs::write(
                dir.join("tokens").join(format!("{sa}.json")),
                json!({"token": token, "namespace": "default", "serviceAccount": sa}).to_string(),
            )
            .expect("token file");
            std::fs::write(dir.join(format!("{sa}.token")), token).expect("token");
        }
        let (xds, secure, debug) = (free_port(), free_port(), free_port());
        let log = dir.join("control-plane.log");
        let logf = std::fs::File::create(&log).expect("log");
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
            .stdout(Stdio::from(logf.try_clone().expect("log")))
            .stderr(Stdio::from(logf))
            .stdin(Stdio::null())
            .spawn()
            .expect("start weft control-plane");
        ControlPlane { child, log, secure, dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.join("cacerts").join("root-cert.pem")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&self) {
        let root = self.root();
        eventually(Duration::from_secs(20), "the control plane's CA to be up", || {
            let up = root.exists() && std::net::TcpStream::connect(("127.0.0.1", self.secure)).is_ok();
            async move { up.then_some(()) }
        })
        .await;
    }

    /// `weft proxy` flags that make it get its identity from this CA.
    fn identity_args(&self, sa: &str, ttl: &str) -> Vec<String> {
        vec![
            "--ca-address".into(),
            format!("127.0.0.1:{}", self.secure),
            "--ca-root-cert".into(),
            self.root().display().to_string(),
            "--ca-token-file".into(),
            self.dir.join(format!("{sa}.token")).display().to_string(),
            "--node-meta".into(),
            "NAMESPACE=default".into(),
            "--node-meta".into(),
            format!("SERVICE_ACCOUNT={sa}"),
            "--workload-cert-ttl".into(),
            ttl.into(),
        ]
    }
}

fn sds(name: &str) -> Value {
    json!({"name": name, "sds_config": {"ads": {}, "resource_api_version": "V3"}})
}

/// Istio's shape: the certificate and the bundle by SDS name, the expected peer by URI SAN.
fn common(peer: &str) -> Value {
    json!({
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
        "tls_certificate_sds_secret_configs": [sds("default")],
        "combined_validation_context": {
            "default_validation_context": {"match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": peer}}]},
            "validation_context_sds_secret_config": sds("ROOTCA")},
        "alpn_protocols": ["istio-peer-exchange", "istio", "http/1.1"]})
}

fn http_filter(prefix: &str, cluster: &str) -> Value {
    json!([{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": prefix,
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}])
}

fn addr(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

fn cluster(name: &str, port: u16, tls: Option<Value>) -> Value {
    let mut c = json!({"name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(port)}}]}]}});
    if let Some(t) = tls {
        c["transport_socket"] = t;
    }
    c
}

/// The server side ("back"): mTLS in, requiring the front's identity, to the app.
fn back_bootstrap(admin: u16, listen: u16, app: u16) -> String {
    let tls = json!({"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": true, "common_tls_context": common(FRONT)}});
    json!({"admin": {"address": addr(admin)}, "static_resources": {
        "listeners": [{"name": "inbound", "address": addr(listen), "filter_chains": [{"filters": http_filter("inbound", "app"), "transport_socket": tls}]}],
        "clusters": [cluster("app", app, None)]}})
    .to_string()
}

/// The client side ("front"): plain in, mTLS to the back expecting its identity; a second
/// route to the back expecting someone else.
fn front_bootstrap(admin: u16, listen: u16, wrong: u16, back: u16) -> String {
    let up = |peer: &str| {
        json!({"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": "outbound_.9080_._.back.default.svc.cluster.local", "common_tls_context": common(peer)}})
    };
    // Few requests per upstream connection: new handshakes keep meeting renewed certificates.
    let mut back_cluster = cluster("back", back, Some(up(BACK)));
    back_cluster["max_requests_per_connection"] = json!(3);
    json!({"admin": {"address": addr(admin)}, "static_resources": {
        "listeners": [
            {"name": "outbound", "address": addr(listen), "filter_chains": [{"filters": http_filter("outbound", "back")}]},
            {"name": "wrong", "address": addr(wrong), "filter_chains": [{"filters": http_filter("wrong", "wrong_identity")}]}],
        "clusters": [back_cluster, cluster("wrong_identity", back, Some(up("spiffe://cluster.local/ns/default/sa/someone-else")))]}})
    .to_string()
}

async fn proxy(bootstrap: &str, admin: u16, args: &[String]) -> ProxyProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match ProxyProcess::start_with_args(ProxyKind::Weft, WEFT, bootstrap, admin, &args).await {
        Ok(p) => p,
        Err(e) => panic!("weft proxy failed to start: {e:#}"),
    }
}

fn count(log: &str, what: &str) -> usize {
    log.matches(what).count()
}

/// The control plane as CA, an app, and two proxies with certificates of lifetime `ttl`:
/// "front" (plain in, mTLS out; `wrong_port` expects another identity) and "back".
struct Pair {
    cp: ControlPlane,
    _app: Upstream,
    back: ProxyProcess,
    front: ProxyProcess,
    back_port: u16,
    wrong_port: u16,
    front_addr: String,
}

impl Pair {
    /// Returns once a request crosses the mTLS hop (both proxies hold certificates).
    async fn start(tag: &str, ttl: &str) -> Pair {
        let cp = ControlPlane::start(tag);
        cp.wait_ready().await;
        let app = Upstream::start("app").await;
        let (back_admin, back_port) = (free_port(), free_port());
        let back = proxy(&back_bootstrap(back_admin, back_port, app.port()), back_admin, &cp.identity_args("back", ttl)).await;
        let (front_admin, front_port, wrong_port) = (free_port(), free_port(), free_port());
        let front =
            proxy(&front_bootstrap(front_admin, front_port, wrong_port, back_port), front_admin, &cp.identity_args("front", ttl)).await;
        let front_addr = format!("127.0.0.1:{front_port}");
        eventually(Duration::from_secs(20), "a request through the mTLS hop", || {
            let a = front_addr.clone();
            async move { send(&a, Req::get("/hello")).await.ok().filter(|r| r.status == 200) }
        })
        .await;
        Pair { cp, _app: app, back, front, back_port, wrong_port, front_addr }
    }
}

#[tokio::test]
async fn sidecars_get_svids_and_talk_mutual_tls_with_rotation_under_load() {
    let Pair { cp, back, front, back_port, wrong_port, front_addr, .. } = Pair::start("mtls", "4s").await;
    let back_listener = format!("listener.127.0.0.1_{back_port}.");
    assert!(back.stat(&format!("{back_listener}ssl.versions.TLSv1.3")).await >= 1, "the sidecar hop is TLS 1.3");
    assert!(front.stat("cluster.back.ssl.handshake").await >= 1);

    // A peer whose identity is not the expected one is refused, and counted.
    let wrong = send(&format!("127.0.0.1:{wrong_port}"), Req::get("/")).await.expect("send");
    assert_eq!(wrong.status, 503, "{}", wrong.text());
    assert!(front.stat("cluster.wrong_identity.ssl.fail_verify_san").await >= 1);

    // Rotation under a bounded load: 4 s certificates renewed every ~2 s; no request fails.
    let issued_before = count(&cp.log(), "certificate issued");
    let end = tokio::time::Instant::now() + Duration::from_secs(7);
    let (mut ok, mut failed) = (0u32, Vec::new());
    for i in 0..2000 {
        if tokio::time::Instant::now() >= end {
            break;
        }
        match send(&front_addr, Req::get(&format!("/load/{i}"))).await {
            Ok(r) if r.status == 200 => ok += 1,
            Ok(r) => failed.push(format!("{i}: {} {}", r.status, r.text())),
            Err(e) => failed.push(format!("{i}: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let renewed = count(&cp.log(), "certificate issued") - issued_before;
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during rotation: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(renewed >= 4, "both proxies should have renewed at least twice in 7 s (renewed {renewed}):\n{}", cp.log());
    assert!(ok >= 100, "the load ran ({ok} requests)");
    assert!(!front.log_text().contains("BEGIN PRIVATE KEY") && !back.log_text().contains("BEGIN PRIVATE KEY"), "keys never reach logs");
    assert!(!Path::new(&back.dir).join("key.pem").exists());
}

/// Waits until every proxy's `/certs` shows `n` trusted roots.
async fn wait_roots(proxies: &[&ProxyProcess], n: usize) {
    for p in proxies {
        eventually(Duration::from_secs(10), &format!("{n} roots in the proxy's bundle"), || async move {
            let certs: Value = serde_json::from_slice(&p.admin_get("/certs").await.body).unwrap_or_default();
            (certs["certificates"][0]["ca_cert"].as_array().map(Vec::len) == Some(n)).then_some(())
        })
        .await;
    }
}

/// Root rotation with 2-minute certificates under a bounded load: a second root is added to
/// the bundle, the CA switches to signing with it, every proxy renews from the new root at
/// half of its certificate's validity (about 30 s after issue: the CA backdates a minute), and
/// the old root is removed. No request fails at any step.
#[tokio::test]
async fn root_rotation_with_two_minute_certificates_under_load() {
    use weft_test_support::certs::{replace_file, TempDir, TestCa};
    let Pair { cp, back, front, front_addr, .. } = Pair::start("rotation", "2m").await;

    // The bounded load: one request every 20 ms for at most 3 minutes, until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, addr) = (stop.clone(), front_addr.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let end = tokio::time::Instant::now() + Duration::from_secs(180);
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && tokio::time::Instant::now() < end {
                match send(&addr, Req::get(&format!("/load/{i}"))).await {
                    Ok(r) if r.status == 200 => ok += 1,
                    Ok(r) => failed.push(format!("{i}: {} {}", r.status, r.text())),
                    Err(e) => failed.push(format!("{i}: {e}")),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        })
    };

    let cacerts = cp.dir.join("cacerts");
    let old_root = std::fs::read_to_string(cp.root()).expect("root");
    let scratch = TempDir::new("rotation").expect("temp dir");
    let new_ca = TestCa::new(scratch.path(), "rotated").expect("new root");
    let new_root = new_ca.root_pem().expect("new root pem");

    // 1. Both roots trusted.
    replace_file(&cp.root(), &format!("{old_root}{new_root}")).expect("bundle with both roots");
    wait_roots(&[&front, &back], 2).await;
    // 2. The CA signs with the new root; at half-life both proxies renew from it.
    let issued_before = count(&cp.log(), "certificate issued");
    new_ca.install_as_signer(&cacerts).expect("install the new signer");
    eventually(Duration::from_secs(90), "both proxies to renew from the new root", || {
        let renewed = count(&cp.log(), "certificate issued") - issued_before;
        async move { (renewed >= 2).then_some(()) }
    })
    .await;
    assert!(cp.log().contains("bundle_changed=false"), "the CA reloaded its new signer:\n{}", cp.log());
    // 3. The old root is removed: only certificates from the new root are trusted now.
    replace_file(&cp.root(), &new_root).expect("bundle with the new root only");
    wait_roots(&[&front, &back], 1).await;
    for p in [&front, &back] {
        let certs: Value = serde_json::from_slice(&p.admin_get("/certs").await.body).unwrap_or_default();
        let issuer = certs["certificates"][0]["cert_chain"][0]["issuer"].as_str().unwrap_or_default().to_string();
        assert!(issuer.contains("rotated test root"), "the workload certificate now comes from the new root: {certs}");
    }
    // New handshakes (three requests per connection) keep meeting the new bundle.
    let handshakes = front.stat("cluster.back.ssl.handshake").await;
    eventually(Duration::from_secs(10), "new handshakes under the new root alone", || {
        let f = &front;
        async move { (f.stat("cluster.back.ssl.handshake").await >= handshakes + 5).then_some(()) }
    })
    .await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.expect("load task");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rotation: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok >= 1000, "the load ran through the rotation ({ok} requests)");
}
