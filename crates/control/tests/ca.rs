//! The certificate API on the control plane's TLS port, called with tonic as a real gRPC
//! client over TLS: a workload with its bootstrap token gets an SVID for its own identity, and
//! every wrong caller is refused with the right gRPC code and counted.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use weft_control::server::{start, CaOptions, Options, Running};
use weft_test_support::certs::TempDir;
use weft_xds::istio_ca::{create_certificate, CaClientError, CaEndpoint};
use x509_parser::prelude::{FromDer, X509Certificate};

const TOKEN: &str = "reviews-token-0123456789abcdef";

struct Plane {
    running: Running,
    root: TempDir,
}

async fn plane(tag: &str) -> Plane {
    let root = TempDir::new(&format!("ca-it-{tag}")).expect("temp dir");
    let (config, tokens, ca) = (root.path().join("config"), root.path().join("tokens"), root.path().join("cacerts"));
    for d in [&config, &tokens] {
        std::fs::create_dir_all(d).expect("dir");
    }
    std::fs::write(tokens.join("reviews.json"), format!(r#"{{"token": "{TOKEN}", "namespace": "default", "serviceAccount": "reviews"}}"#))
        .expect("token");
    let any = "127.0.0.1:0".parse().expect("addr");
    let running = start(Options {
        mesh_path: None,
        config_dir: Some(config),
        kube: None,
        cluster: Default::default(),
        mesh: Default::default(),
        xds_addr: any,
        debug_addr: any,
        debounce: Duration::from_millis(50),
        ca: Some(CaOptions {
            dir: ca,
            token_dir: Some(tokens),
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(7200),
            secure_addr: any,
            webhook: None,
        }),
        ..Options::default()
    })
    .await
    .expect("control plane starts");
    Plane { running, root }
}

/// A client that trusts `bundle` and expects istiod's name, as a workload would.
fn endpoint(p: &Plane, bundle: &str) -> CaEndpoint {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut tls = tls;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    CaEndpoint {
        address: p.running.secure_addr.expect("secure port").to_string(),
        tls: Arc::new(tls),
        server_name: ServerName::try_from("istiod.istio-system.svc").expect("name"),
    }
}

fn csr(uri: &str) -> String {
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("uri"))];
    let key = KeyPair::generate().expect("key");
    params.serialize_request(&key).expect("csr").pem().expect("pem")
}

#[tokio::test]
async fn a_workload_gets_an_svid_for_its_own_identity_only() {
    let p = plane("svid").await;
    let ca = p.running.ca.clone().expect("ca");
    let ep = endpoint(&p, &ca.bundle());
    let me = "spiffe://cluster.local/ns/default/sa/reviews";

    let chain = create_certificate(&ep, TOKEN, csr(me), Duration::from_secs(600)).await.expect("signed");
    assert_eq!(chain.len(), 2, "leaf then root: {chain:?}");
    let leaf_der = CertificateDer::from_pem_slice(chain[0].as_bytes()).expect("leaf pem");
    let root_der = CertificateDer::from_pem_slice(chain[1].as_bytes()).expect("root pem");
    let (_, leaf) = X509Certificate::from_der(&leaf_der).expect("leaf");
    let (_, root) = X509Certificate::from_der(&root_der).expect("root");
    leaf.verify_signature(Some(root.public_key())).expect("the leaf is signed by the distributed root");
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|e| e.value.general_names.iter().map(|n| n.to_string()).collect())
        .unwrap_or_default();
    assert_eq!(sans, vec![format!("URI({me})")]);
    let life = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert!((600..=660).contains(&life), "asked for 600 s (plus backdating): {life}");
    let eku = leaf.extended_key_usage().ok().flatten().map(|e| (e.value.server_auth, e.value.client_auth));
    assert_eq!(eku, Some((true, true)), "an SVID serves both sides of mTLS");

    // Longer than the maximum is cut to it.
    let chain = create_certificate(&ep, TOKEN, csr(me), Duration::from_secs(999_999)).await.expect("signed");
    let der = CertificateDer::from_pem_slice(chain[0].as_bytes()).expect("pem");
    let (_, leaf) = X509Certificate::from_der(&der).expect("leaf");
    let life = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert!(life <= 7200 + 60, "capped at the maximum TTL: {life}");
    assert_eq!(p.running.shared.ca_stats.success_cert_issuance_count.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn wrong_callers_are_refused_and_counted() {
    let p = plane("refuse").await;
    let ca = p.running.ca.clone().expect("ca");
    let ep = endpoint(&p, &ca.bundle());
    let me = "spiffe://cluster.local/ns/default/sa/reviews";
    let code = |r: Result<Vec<String>, CaClientError>| match r {
        Err(CaClientError::Refused { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let (c, m) = code(create_certificate(&ep, "", csr(me), Duration::ZERO).await);
    assert_eq!(c, tonic::Code::Unauthenticated, "{m}");
    let (c, m) = code(create_certificate(&ep, "not-the-token-0123456789", csr(me), Duration::ZERO).await);
    assert_eq!(c, tonic::Code::Unauthenticated, "{m}");
    let (c, m) = code(create_certificate(&ep, TOKEN, csr("spiffe://cluster.local/ns/default/sa/ratings"), Duration::ZERO).await);
    assert_eq!(c, tonic::Code::PermissionDenied, "{m}");
    assert!(m.contains("asks for spiffe://cluster.local/ns/default/sa/ratings"), "{m}");
    let (c, m) = code(create_certificate(&ep, TOKEN, "not a CSR".into(), Duration::ZERO).await);
    assert_eq!(c, tonic::Code::InvalidArgument, "{m}");
    let s = &p.running.shared.ca_stats;
    assert_eq!(s.authentication_failure_count.load(Ordering::Relaxed), 2);
    assert_eq!(s.id_extraction_err_count.load(Ordering::Relaxed), 1);
    assert_eq!(s.csr_parsing_err_count.load(Ordering::Relaxed), 1);
    assert_eq!(s.success_cert_issuance_count.load(Ordering::Relaxed), 0);
    // The same counters on the debug port's /metrics, under Istio's names.
    let metrics = http_get(p.running.debug_addr, "/metrics").await;
    for line in ["citadel_server_authentication_failure_count 2", "citadel_server_id_extraction_err_count 1", "citadel_server_csr_count 4"]
    {
        assert!(metrics.lines().any(|l| l == line), "{line:?} missing from /metrics:\n{metrics}");
    }

    // A client that trusts another root cannot even talk to this CA.
    let other = rcgen::CertificateParams::default().self_signed(&KeyPair::generate().expect("key")).expect("cert").pem();
    let r = create_certificate(&endpoint(&p, &other), TOKEN, csr(me), Duration::ZERO).await;
    assert!(matches!(r, Err(CaClientError::Connect { .. })), "{r:?}");
    drop(p.root);
}

/// A plain HTTP/1.0 GET; returns the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.expect("write");
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

/// One ADS stream on the TLS port: a CDS request for a proxy in `namespace`, with `token` as
/// the bearer credential. The grpc-status (absent when the stream went well) and whether a
/// response message came.
async fn ads_over_tls(p: &Plane, token: Option<&str>, namespace: &str) -> (Option<String>, bool) {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
    use http_body_util::BodyExt;
    use prost::Message;

    let bundle = p.running.ca.as_ref().expect("ca").bundle();
    let ep = endpoint(p, &bundle);
    let tcp = tokio::net::TcpStream::connect(&ep.address).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(ep.tls.clone()).connect(ep.server_name.clone(), tcp).await.expect("TLS");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls)).await.expect("h2");
    tokio::spawn(conn);
    let s = |v: &str| Value { kind: Some(Kind::StringValue(v.into())) };
    let node = Node {
        id: format!("sidecar~10.0.0.7~reviews-1.{namespace}~{namespace}.svc.cluster.local"),
        metadata: Some(Struct {
            fields: [("NAMESPACE".to_owned(), s(namespace)), ("SERVICE_ACCOUNT".to_owned(), s("reviews"))].into_iter().collect(),
        }),
        ..Node::default()
    };
    let msg =
        DiscoveryRequest { node: Some(node), type_url: weft_xds::proto::CLUSTER.into(), ..DiscoveryRequest::default() }.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(msg.len()).expect("len").to_be_bytes());
    frame.extend_from_slice(&msg);
    let mut req = http::Request::post(
        "https://istiod.istio-system.svc/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
    )
    .header("content-type", "application/grpc")
    .header("te", "trailers");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = send.send_request(req.body(http_body_util::Full::new(bytes::Bytes::from(frame))).expect("request")).await.expect("response");
    let head = resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut body = resp.into_body();
    // The first frame: a response message, or the end with trailers.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("an answer within 5 s");
    match first {
        Some(Ok(f)) if f.is_data() => (head, f.into_data().map(|d| d.len() > 5).unwrap_or(false)),
        Some(Ok(f)) => {
            (f.into_trailers().ok().and_then(|t| t.get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_owned)).or(head), false)
        }
        _ => (head, false),
    }
}

/// xDS on the TLS port takes the same tokens as the CA: no token, or a token that is not
/// known, is UNAUTHENTICATED; a proxy claiming another namespace than its token's is
/// PERMISSION_DENIED; the workload itself gets its config.
#[tokio::test]
async fn xds_on_the_tls_port_serves_only_the_tokens_own_namespace() {
    let p = plane("xds").await;
    assert_eq!(ads_over_tls(&p, None, "default").await, (Some("16".into()), false), "no token");
    assert_eq!(ads_over_tls(&p, Some("not-a-token-0123456789"), "default").await, (Some("16".into()), false), "an unknown token");
    assert_eq!(ads_over_tls(&p, Some(TOKEN), "payments").await.0.as_deref(), Some("7"), "another namespace's config");
    assert_eq!(ads_over_tls(&p, Some(TOKEN), "default").await, (None, true), "the workload's own");
}
