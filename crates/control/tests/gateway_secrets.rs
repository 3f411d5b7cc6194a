//! A gateway's `credentialName` Secret, read from the API server, goes over SDS only to an
//! authenticated proxy of the Secret's namespace: a gateway on the TLS port with its
//! service-account token gets the certificate; the same gateway on the plaintext port, or an
//! authenticated gateway of another namespace, gets nothing.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value as PbValue};
use http_body_util::BodyExt;
use prost::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use weft_control::server::{start, CaOptions, Options, Running};
use weft_test_support::apiserver::{list, resource_list, ApiServer};
use weft_test_support::certs::{Leaf, TempDir, TestCa};
use weft_xds::proto::SECRET;

const GW_TOKEN: &str = "gateway-token-0123456789abcdef";
const OTHER_TOKEN: &str = "other-gateway-token-0123456789";

fn meta(name: &str, ns: &str) -> serde_json::Value {
    json!({"name": name, "namespace": ns, "uid": format!("uid-{name}"), "resourceVersion": "10"})
}

/// An API server holding a Gateway in istio-system whose HTTPS server names Secret `web-cert`,
/// and that Secret; tokens for the gateway in istio-system and for one in `other`.
async fn cluster(dir: &std::path::Path) -> (Arc<ApiServer>, std::net::SocketAddr) {
    let ca = TestCa::new(dir, "web").expect("ca");
    let leaf = ca.issue("web", Leaf { dns: &["web.example.com"], ..Leaf::default() }).expect("leaf");
    let b64 = |p: &std::path::Path| base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).expect("pem"));
    let api = ApiServer::new();
    api.set("/api/v1", resource_list("v1", &[("services", "Service", true), ("pods", "Pod", true), ("secrets", "Secret", true)]));
    api.set("/apis/networking.istio.io/v1", resource_list("networking.istio.io/v1", &[("gateways", "Gateway", true)]));
    api.set("/api/v1/services", list("Service", "v1", "100", vec![]));
    api.set("/api/v1/pods", list("Pod", "v1", "100", vec![]));
    api.set(
        "/api/v1/secrets",
        list(
            "Secret",
            "v1",
            "100",
            vec![json!({"metadata": meta("web-cert", "istio-system"), "type": "kubernetes.io/tls",
                        "data": {"tls.crt": b64(&leaf.cert), "tls.key": b64(&leaf.key)}})],
        ),
    );
    api.set(
        "/apis/networking.istio.io/v1/gateways",
        list(
            "Gateway",
            "networking.istio.io/v1",
            "100",
            vec![json!({"metadata": meta("edge", "istio-system"), "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
                {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["web.example.com"],
                 "tls": {"mode": "SIMPLE", "credentialName": "web-cert"}}]}})],
        ),
    );
    for (token, ns) in [(GW_TOKEN, "istio-system"), (OTHER_TOKEN, "other")] {
        api.tokens.lock().expect("tokens").insert(token.into(), (format!("system:serviceaccount:{ns}:gw"), vec!["istio-ca".into()]));
    }
    let addr = api.serve().await;
    (api, addr)
}

async fn plane(dir: &std::path::Path, api: std::net::SocketAddr) -> Running {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, ApiServer::kubeconfig(api)).expect("kubeconfig");
    let kube = weft_kube::client(Some(&kubeconfig)).await.expect("client");
    let any = "127.0.0.1:0".parse().expect("addr");
    start(Options {
        kube: Some(kube),
        debounce: Duration::from_millis(20),
        ca: Some(CaOptions {
            dir: dir.join("cacerts"),
            token_dir: None,
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(7200),
            secure_addr: any,
            webhook: None,
        }),
        ..Options::default()
    })
    .await
    .expect("control plane starts")
}

/// The first SDS response to a gateway of `namespace` asking for `kubernetes://web-cert`: over
/// TLS with `token`, or over the plaintext port without one.
async fn ask(running: &Running, namespace: &str, token: Option<&str>) -> DiscoveryResponse {
    let s = |v: &str| PbValue { kind: Some(Kind::StringValue(v.into())) };
    let labels = Struct { fields: [("istio".to_owned(), s("ingressgateway"))].into_iter().collect() };
    let node = Node {
        id: format!("router~10.0.0.9~gw-1.{namespace}~{namespace}.svc.cluster.local"),
        metadata: Some(Struct {
            fields: [
                ("NAMESPACE".to_owned(), s(namespace)),
                ("SERVICE_ACCOUNT".to_owned(), s("gw")),
                ("LABELS".to_owned(), PbValue { kind: Some(Kind::StructValue(labels)) }),
            ]
            .into_iter()
            .collect(),
        }),
        ..Node::default()
    };
    let msg = DiscoveryRequest {
        node: Some(node),
        type_url: SECRET.into(),
        resource_names: vec!["kubernetes://web-cert".into()],
        ..DiscoveryRequest::default()
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(msg.len()).expect("len").to_be_bytes());
    frame.extend_from_slice(&msg);
    match token {
        Some(t) => {
            let bundle = running.ca.as_ref().expect("ca").bundle();
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
                roots.add(c.expect("pem")).expect("root");
            }
            let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            tls.alpn_protocols = vec![b"h2".to_vec()];
            let tcp = tokio::net::TcpStream::connect(running.secure_addr.expect("secure")).await.expect("connect");
            let name = ServerName::try_from("istiod.istio-system.svc").expect("name");
            let io = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await.expect("TLS");
            exchange(hyper_util::rt::TokioIo::new(io), Some(t), frame).await
        }
        None => {
            let tcp = tokio::net::TcpStream::connect(running.xds_addr).await.expect("connect");
            exchange(hyper_util::rt::TokioIo::new(tcp), None, frame).await
        }
    }
}

/// One gRPC request on an HTTP/2 connection over `io`; the first response message.
async fn exchange<IO>(io: IO, token: Option<&str>, frame: Vec<u8>) -> DiscoveryResponse
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.expect("h2");
    tokio::spawn(conn);
    let mut req = http::Request::post("http://istiod/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources")
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = send.send_request(req.body(http_body_util::Full::new(bytes::Bytes::from(frame))).expect("request")).await.expect("response");
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    loop {
        let f = tokio::time::timeout(Duration::from_secs(10), body.frame()).await.expect("an answer within 10 s");
        let data = match f {
            Some(Ok(f)) if f.is_data() => f.into_data().unwrap_or_default(),
            other => panic!("the stream ended without a response: {other:?}"),
        };
        buf.extend_from_slice(&data);
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() >= 5 + len {
                return DiscoveryResponse::decode(&buf[5..5 + len]).expect("a DiscoveryResponse");
            }
        }
    }
}

#[tokio::test]
async fn a_gateway_secret_goes_only_to_an_authenticated_gateway_of_its_namespace() {
    let dir = TempDir::new("gateway-secrets").expect("dir");
    let (_api, addr) = cluster(dir.path()).await;
    let running = plane(dir.path(), addr).await;

    let got = ask(&running, "istio-system", Some(GW_TOKEN)).await;
    assert_eq!(got.resources.len(), 1, "the authenticated gateway gets its certificate");
    let secret = weft_xds::proto::from_any(&got.resources[0]).expect("decodes");
    assert_eq!(secret["name"], "kubernetes://web-cert");
    assert!(secret["tls_certificate"]["private_key"]["inline_bytes"].is_string(), "{}", secret["name"]);

    let plaintext = ask(&running, "istio-system", None).await;
    assert!(plaintext.resources.is_empty(), "the plaintext port never carries a Secret from the API server");
    let other = ask(&running, "other", Some(OTHER_TOKEN)).await;
    assert!(other.resources.is_empty(), "another namespace's gateway does not get istio-system's Secret");
}
