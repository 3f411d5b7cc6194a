//! TLS transport sockets: termination (`DownstreamTlsContext`) with and without client
//! certificates, origination (`UpstreamTlsContext`) with SAN verification, and every refusal a
//! user relies on, each counted under Envoy's `ssl.*` stat names. curl is the TLS client.

use serde_json::{json, Value};
use weft_test_support::certs::{Leaf, Pem, TempDir, TestCa};
use weft_test_support::{ProxyKind, Upstream};

use crate::harness::*;

const BACKEND_ID: &str = "spiffe://test.local/ns/default/sa/backend";
const CLIENT_ID: &str = "spiffe://test.local/ns/default/sa/client";

/// Everything one TLS scenario needs on disk.
struct Pki {
    _dir: TempDir,
    ca: TestCa,
    backend: Pem,
    client: Pem,
    intruder: Pem,
    expired: Pem,
    foreign_client: Pem,
    other_ca: TestCa,
}

fn pki() -> Pki {
    let dir = TempDir::new("tls").expect("temp dir");
    let ca = TestCa::new(dir.path(), "mesh").expect("ca");
    let other_ca = TestCa::new(dir.path(), "other").expect("other ca");
    let backend = ca.issue("backend", Leaf { dns: &["backend.test"], uris: &[BACKEND_ID], ..Default::default() }).expect("backend");
    let client = ca.issue("client", Leaf { uris: &[CLIENT_ID], ..Default::default() }).expect("client");
    let intruder =
        ca.issue("intruder", Leaf { uris: &["spiffe://test.local/ns/default/sa/intruder"], ..Default::default() }).expect("intruder");
    let expired = ca.issue("expired", Leaf { uris: &[CLIENT_ID], expired: true, ..Default::default() }).expect("expired");
    let foreign_client = other_ca.issue("foreign", Leaf { uris: &[CLIENT_ID], ..Default::default() }).expect("foreign");
    Pki { _dir: dir, ca, backend, client, intruder, expired, foreign_client, other_ca }
}

fn file(p: &str) -> Value {
    json!({"filename": p})
}

fn cert(p: &Pem) -> Value {
    json!({"certificate_chain": file(&p.cert_str()), "private_key": file(&p.key_str())})
}

fn uri_san(id: &str) -> Value {
    json!([{"san_type": "URI", "matcher": {"exact": id}}])
}

/// A TLS transport socket on a filter chain.
fn downstream(server: &Pem, client_ca: Option<(&str, &str)>) -> Value {
    let mut common = json!({"tls_certificates": [cert(server)], "alpn_protocols": ["h2", "http/1.1"]});
    let mut ctx = json!({"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"});
    if let Some((root, want)) = client_ca {
        common["validation_context"] = json!({"trusted_ca": file(root), "match_typed_subject_alt_names": uri_san(want)});
        ctx["require_client_certificate"] = json!(true);
    }
    ctx["common_tls_context"] = common;
    json!({"name": "envoy.transport_sockets.tls", "typed_config": ctx})
}

/// A cluster's TLS transport socket: our client certificate, the CA to trust, the SAN to expect.
fn upstream(client: &Pem, root: &str, want: &str) -> Value {
    json!({"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": "backend.test",
        "common_tls_context": {
            "tls_certificates": [cert(client)],
            "tls_params": {"tls_maximum_protocol_version": "TLSv1_3"},
            "validation_context": {"trusted_ca": file(root), "match_typed_subject_alt_names": uri_san(want)}}}})
}

fn http_chain(prefix: &str, cluster: &str, tls: Option<Value>) -> Value {
    let vhosts = json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]);
    let mut chain = json!({"filters": [hcm(json!({"name": prefix, "virtual_hosts": vhosts}), json!({"stat_prefix": prefix}))]});
    if let Some(t) = tls {
        chain["transport_socket"] = t;
    }
    chain
}

/// listen[0]: plain HTTP → cluster `mtls` (mTLS to listen[1], expecting the backend's SAN)
/// listen[1]: TLS requiring a client certificate with the client's SAN → the app
/// listen[2]: TLS without client certificates → the app
/// listen[3]: plain HTTP → `wrong_san` (expects another SAN) and, under /foreign, `wrong_ca`
fn bootstrap(p: &Ports, pki: &Pki, app: u16) -> Value {
    let root = pki.ca.root_str();
    let other_root = pki.other_ca.root_str();
    let l = |name: &str, port: u16, chain: Value| json!({"name": name, "address": addr(port), "filter_chains": [chain]});
    let wrong = json!([
        {"match": {"prefix": "/foreign"}, "route": {"cluster": "wrong_ca"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "wrong_san"}}]);
    let mut wrong_chain = http_chain("wrong", "wrong_san", None);
    // The server side of the hop tells the app who called, as Istio's inbound sidecar does.
    let mut mtls_chain = http_chain("mtls_in", "app", Some(downstream(&pki.backend, Some((&root, CLIENT_ID)))));
    mtls_chain["filters"][0]["typed_config"]["forward_client_cert_details"] = json!("SANITIZE_SET");
    mtls_chain["filters"][0]["typed_config"]["set_current_client_cert_details"] = json!({"subject": true, "uri": true, "dns": true});
    wrong_chain["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"] = wrong;
    json!({"admin": admin(p), "static_resources": {
    "listeners": [
        l("plain", p.listen[0], http_chain("plain", "mtls", None)),
        l("mtls", p.listen[1], mtls_chain),
        l("simple", p.listen[2], http_chain("simple", "app", Some(downstream(&pki.backend, None)))),
        l("wrong", p.listen[3], wrong_chain),
    ],
    "clusters": [
        cluster("app", &[app], json!({})),
        cluster("mtls", &[p.listen[1]], json!({"transport_socket": upstream(&pki.client, &root, BACKEND_ID)})),
        cluster("wrong_san", &[p.listen[1]], json!({"transport_socket": upstream(&pki.client, &root, "spiffe://test.local/ns/default/sa/someone-else")})),
        cluster("wrong_ca", &[p.listen[1]], json!({"transport_socket": upstream(&pki.client, &other_root, BACKEND_ID)})),
    ]}})
}

/// What curl saw: its exit code, and on success the status line's code and the body.
#[derive(Debug)]
struct Curl {
    code: i32,
    status: String,
    body: String,
    #[allow(dead_code, reason = "read through Debug in failure messages")]
    stderr: String,
}

/// curl as a child process, awaited so the test's own upstream keeps serving meanwhile.
async fn curl(port: u16, path: &str, args: &[&str]) -> Curl {
    let url = format!("https://backend.test:{port}{path}");
    let resolve = format!("backend.test:{port}:127.0.0.1");
    let out = tokio::process::Command::from(weft_test_support::tool("curl"))
        .args(["-s", "-S", "-m", "5", "--http1.1", "--resolve", &resolve, "-w", "\n%{http_code}"])
        .args(args)
        .arg(&url)
        .output()
        .await
        .expect("curl must be installed (scripts/setup.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').map(|(b, s)| (b.to_string(), s.to_string())).unwrap_or_default();
    Curl { code: out.status.code().unwrap_or(-1), status, body, stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

fn listener_stat(r: &Run, i: usize, stat: &str) -> String {
    format!("listener.127.0.0.1_{}.{stat}", r.ports.listen[i])
}

#[tokio::test]
async fn tls_termination_with_file_certificates() {
    let pki = pki();
    let app = Upstream::start("app").await;
    let runs = both(|p| bootstrap(p, &pki, app.port())).await;
    let root = pki.ca.root_str();
    for r in &runs {
        let c = curl(r.ports.listen[2], "/hello", &["--cacert", &root, "--tlsv1.3"]).await;
        assert_eq!((c.code, c.status.as_str()), (0, "200"), "{}: {c:?}", r.kind);
        let echo: Value = serde_json::from_str(&c.body).unwrap_or_default();
        assert_eq!(
            echo["headers"]["x-forwarded-proto"],
            json!(["https"]),
            "{}: the app must learn the request came over TLS: {echo}",
            r.kind
        );
        assert_eq!(echo["path"], "/hello", "{}: {echo}", r.kind);

        let c = curl(r.ports.listen[2], "/", &["--cacert", &root, "--tls-max", "1.2"]).await;
        assert_eq!((c.code, c.status.as_str()), (0, "200"), "{} over TLS 1.2: {c:?}", r.kind);

        // A client that does not trust the proxy's CA gives up (curl exit 60).
        let c = curl(r.ports.listen[2], "/", &["--cacert", &pki.other_ca.root_str()]).await;
        assert_eq!(c.code, 60, "{}: an untrusted server certificate must fail the client's check: {c:?}", r.kind);

        assert!(r.stat(&listener_stat(r, 2, "ssl.handshake")).await >= 2, "{}: ssl.handshake", r.kind);
        assert!(r.stat(&listener_stat(r, 2, "ssl.versions.TLSv1.3")).await >= 1, "{}: ssl.versions.TLSv1.3", r.kind);
        assert!(r.stat(&listener_stat(r, 2, "ssl.versions.TLSv1.2")).await >= 1, "{}: ssl.versions.TLSv1.2", r.kind);
    }
}

#[tokio::test]
async fn mutual_tls_between_proxy_hops() {
    let pki = pki();
    let app = Upstream::start("app").await;
    let runs = both(|p| bootstrap(p, &pki, app.port())).await;
    // Plain in, mTLS across the hop (both sides verify), plain to the app: identical answers,
    // down to the x-forwarded-client-cert the app gets (a forged one from the caller replaced).
    let forged =
        weft_test_support::Req::get("/through/mtls").header("x-forwarded-client-cert", "URI=spiffe://test.local/ns/default/sa/admin");
    same(&runs, &[weft_test_support::Req::get("/through/mtls"), forged.clone()]).await;
    for r in &runs {
        let got = weft_test_support::send(&r.addr(), forged.clone()).await.expect("send");
        let echo: Value = serde_json::from_slice(&got.body).unwrap_or_default();
        let xfcc = echo["headers"]["x-forwarded-client-cert"][0].as_str().unwrap_or_default().to_string();
        assert!(xfcc.starts_with(&format!("By={BACKEND_ID};Hash=")), "{}: the app learns which identity served: {xfcc}", r.kind);
        assert!(xfcc.ends_with(&format!(";URI={CLIENT_ID}")), "{}: the app learns the caller's identity: {xfcc}", r.kind);
        assert!(!xfcc.contains("admin"), "{}: a caller cannot forge its identity: {xfcc}", r.kind);
        assert!(r.stat("cluster.mtls.ssl.handshake").await >= 1, "{}: the upstream hop must be TLS", r.kind);
        assert!(r.stat(&listener_stat(r, 1, "ssl.versions.TLSv1.3")).await >= 1, "{}: the hop must be TLS 1.3", r.kind);
        // A client with the expected certificate may also call the mTLS port directly.
        let c = curl(
            r.ports.listen[1],
            "/direct",
            &["--cacert", &pki.ca.root_str(), "--cert", &pki.client.cert_str(), "--key", &pki.client.key_str()],
        )
        .await;
        assert_eq!((c.code, c.status.as_str()), (0, "200"), "{}: {c:?}", r.kind);
    }
}

#[tokio::test]
async fn mutual_tls_refusals_are_counted() {
    let pki = pki();
    let app = Upstream::start("app").await;
    let runs = both(|p| bootstrap(p, &pki, app.port())).await;
    let root = pki.ca.root_str();
    for r in &runs {
        let port = r.ports.listen[1];
        let with = |p: &Pem| vec!["--cacert".to_string(), root.clone(), "--cert".into(), p.cert_str(), "--key".into(), p.key_str()];
        let refused = |c: &Curl, what: &str| {
            assert!(c.code != 0 && c.status != "200", "{}: {what} must be refused: {c:?}", r.kind);
        };
        refused(&curl(port, "/", &["--cacert", &root]).await, "no client certificate");
        let args = with(&pki.foreign_client);
        refused(&curl(port, "/", &args.iter().map(String::as_str).collect::<Vec<_>>()).await, "a certificate from another CA");
        let args = with(&pki.intruder);
        refused(&curl(port, "/", &args.iter().map(String::as_str).collect::<Vec<_>>()).await, "a certificate with the wrong SAN");
        let args = with(&pki.expired);
        refused(&curl(port, "/", &args.iter().map(String::as_str).collect::<Vec<_>>()).await, "an expired certificate");
        // Plaintext to a TLS port gets no HTTP answer.
        let plain = weft_test_support::send(&format!("127.0.0.1:{port}"), weft_test_support::Req::get("/")).await;
        assert!(plain.is_err() || plain.as_ref().is_ok_and(|p| p.status == 0), "{}: plaintext must be refused: {plain:?}", r.kind);

        assert!(r.stat(&listener_stat(r, 1, "ssl.fail_verify_no_cert")).await >= 1, "{}: ssl.fail_verify_no_cert", r.kind);
        assert!(r.stat(&listener_stat(r, 1, "ssl.fail_verify_error")).await >= 2, "{}: ssl.fail_verify_error (other CA, expired)", r.kind);
        assert!(r.stat(&listener_stat(r, 1, "ssl.fail_verify_san")).await >= 1, "{}: ssl.fail_verify_san", r.kind);
        assert!(r.stat(&listener_stat(r, 1, "ssl.connection_error")).await >= 1, "{}: ssl.connection_error", r.kind);
        assert_eq!(app.requests(), 0, "{}: nothing refused may reach the app", r.kind);
    }
    // Upstream side: a server with an unexpected SAN or from an untrusted CA is a 503 UF.
    for r in &runs {
        let addr = r.addr_n(3);
        let san = weft_test_support::send(&addr, weft_test_support::Req::get("/")).await.expect("send");
        assert_eq!(san.status, 503, "{}: wrong upstream SAN: {}", r.kind, san.text());
        let ca = weft_test_support::send(&addr, weft_test_support::Req::get("/foreign")).await.expect("send");
        assert_eq!(ca.status, 503, "{}: untrusted upstream CA: {}", r.kind, ca.text());
        assert!(r.stat("cluster.wrong_san.ssl.fail_verify_san").await >= 1, "{}: cluster ssl.fail_verify_san", r.kind);
        assert!(r.stat("cluster.wrong_ca.ssl.fail_verify_error").await >= 1, "{}: cluster ssl.fail_verify_error", r.kind);
    }
    assert_eq!(runs[0].kind, ProxyKind::Envoy);
}
