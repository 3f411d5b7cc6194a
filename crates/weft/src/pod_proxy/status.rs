//! The pod's status port (Istio: 15020), which the kubelet and Prometheus reach directly
//! (capture leaves it alone):
//! - `/healthz/ready`: the proxy's readiness (its 15021 listener);
//! - `/app-health/<container>/<readyz|livez|startupz|prestopz|poststartz>`: the app's own
//!   probe, run from inside the pod, so it works under STRICT mTLS (the injector rewrote the
//!   kubelet's probes to these paths);
//! - `/stats/prometheus`: the proxy's metrics followed by the app's (metrics merging);
//! - `POST /quitquitquit` ends the pod's proxy, `POST /drain` starts draining it.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use serde_json::{Map, Value};
use tokio::net::{TcpListener, TcpStream};

pub struct Status {
    pub pod_ip: IpAddr,
    pub health_port: u16,
    pub stats_port: u16,
    pub admin_port: u16,
    pub probers: Map<String, Value>,
    pub app_metrics: Option<(u16, String)>,
    /// Told when `/quitquitquit` asks the sidecar to end.
    pub quit: tokio::sync::mpsc::Sender<()>,
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

/// A GET (or POST) over HTTP/1.1 to `addr`, bounded by `timeout`: the status and body.
pub async fn http1(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    request(addr, false, method, path, headers, timeout).await
}

/// An HTTP/1.1 request to `addr`, over TLS when `tls` — without checking the certificate, as the
/// kubelet's HTTPS probes do not (the app's probe is what it always was, run from the pod).
async fn request(
    addr: SocketAddr,
    tls: bool,
    method: Method,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    let run = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let mut req = Request::builder().method(method).uri(path).header(http::header::HOST, addr.to_string());
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let resp = if tls {
            let connector = tokio_rustls::TlsConnector::from(probe_tls()?);
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let stream = connector.connect(name, tcp).await.map_err(|e| format!("TLS to {addr}: {e}"))?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            send.send_request(req).await.map_err(|e| e.to_string())?
        } else {
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            send.send_request(req).await.map_err(|e| e.to_string())?
        };
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, run).await.map_err(|_| format!("no answer from {addr} within {timeout:?}"))?
}

/// The kubelet's HTTPS probes skip certificate verification; so does the agent running them.
#[derive(Debug)]
struct ProbeVerifier(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for ProbeVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn probe_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    Ok(Arc::new(cfg.dangerous().with_custom_certificate_verifier(Arc::new(ProbeVerifier(provider))).with_no_client_auth()))
}

/// `grpc.health.v1.Health/Check` over h2c, as the kubelet's gRPC probe asks it: Ok when the
/// app answers SERVING.
async fn grpc_health(addr: SocketAddr, service: &str, timeout: Duration) -> Result<(), String> {
    let run = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| format!("{addr}: not HTTP/2: {e}"))?;
        tokio::spawn(conn);
        // HealthCheckRequest { service = 1 }, in one uncompressed gRPC message.
        let mut msg = Vec::new();
        if !service.is_empty() {
            msg.push(0x0a);
            msg.push(u8::try_from(service.len()).map_err(|_| "the probe's service name is too long")?);
            msg.extend_from_slice(service.as_bytes());
        }
        let mut frame = vec![0u8];
        frame.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(0).to_be_bytes());
        frame.extend_from_slice(&msg);
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from(frame)))
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| format!("{addr}: {e}"))?;
        let head_status = resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let collected = resp.into_body().collect().await.map_err(|e| format!("{addr}: {e}"))?;
        let trailer_status = collected.trailers().and_then(|t| t.get("grpc-status")).and_then(|v| v.to_str().ok()).map(str::to_owned);
        match trailer_status.or(head_status).as_deref() {
            Some("0") => {}
            Some(code) => return Err(format!("{addr}: the health check failed with grpc-status {code}")),
            None => return Err(format!("{addr}: no grpc-status in the answer")),
        }
        let body = collected.to_bytes();
        // HealthCheckResponse { status = 1 }: SERVING is 1.
        match body.get(5..) {
            Some([0x08, 1, ..]) => Ok(()),
            Some([0x08, n, ..]) => Err(format!("{addr}: the app is not serving (status {n})")),
            _ => Err(format!("{addr}: the app is not serving")),
        }
    };
    tokio::time::timeout(timeout, run).await.map_err(|_| format!("no answer from {addr} within {timeout:?}"))?
}

impl Status {
    async fn handle(self: Arc<Self>, peer: SocketAddr, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let path = req.uri().path().to_owned();
        // Capture leaves this port alone, so anyone who reaches the pod reaches it: ending or
        // draining the proxy is for the pod's own containers only (as pilot-agent answers).
        if req.method() == Method::POST && !peer.ip().is_loopback() {
            return Ok(reply(StatusCode::FORBIDDEN, format!("{path} is only answered to the pod itself (from localhost)\n")));
        }
        let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let answer = match (req.method().clone(), path.as_str()) {
            (Method::GET, "/healthz/ready") => match http1(local(self.health_port), Method::GET, "/healthz/ready", &[], Duration::from_secs(3)).await {
                Ok((200, _)) => reply(StatusCode::OK, "ready\n"),
                Ok((code, body)) => reply(StatusCode::SERVICE_UNAVAILABLE, format!("the proxy is not ready ({code}): {}\n", String::from_utf8_lossy(&body).trim())),
                Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, format!("the proxy is not ready: {e}\n")),
            },
            (Method::GET, p) if p.starts_with("/app-health/") => self.app_probe(p).await,
            (Method::GET, "/stats/prometheus") => self.metrics().await,
            (Method::POST, "/quitquitquit") => {
                let _ = self.quit.try_send(());
                reply(StatusCode::OK, "ending the sidecar\n")
            }
            (Method::POST, "/drain") => match http1(local(self.admin_port), Method::POST, "/drain_listeners?graceful&inboundonly", &[], Duration::from_secs(5)).await {
                Ok((code, body)) => reply(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY), body),
                Err(e) => reply(StatusCode::BAD_GATEWAY, format!("the proxy's admin: {e}\n")),
            },
            (_, p) => reply(StatusCode::NOT_FOUND, format!("no {p} here; the status port serves /healthz/ready, /app-health/…, /stats/prometheus, POST /quitquitquit, POST /drain\n")),
        };
        Ok(answer)
    }

    /// Runs the app's original probe for this path, as the kubelet would have.
    async fn app_probe(&self, path: &str) -> Response<Full<Bytes>> {
        let Some(prober) = self.probers.get(path) else {
            return reply(StatusCode::NOT_FOUND, format!("no app probe is registered for {path}\n"));
        };
        let timeout = Duration::from_secs(prober.get("timeoutSeconds").and_then(Value::as_u64).unwrap_or(1).max(1));
        let port_of = |action: &Value| action.get("port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok());
        if let Some(http) = prober.get("httpGet") {
            let Some(port) = port_of(http) else { return reply(StatusCode::INTERNAL_SERVER_ERROR, "the probe has no numeric port\n") };
            let https = http.get("scheme").and_then(Value::as_str) == Some("HTTPS");
            let host: IpAddr = http.get("host").and_then(Value::as_str).and_then(|h| h.parse().ok()).unwrap_or(self.pod_ip);
            let target = http.get("path").and_then(Value::as_str).unwrap_or("/");
            let headers: Vec<(String, String)> = http
                .get("httpHeaders")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|h| Some((h.get("name")?.as_str()?.to_owned(), h.get("value")?.as_str()?.to_owned())))
                .collect();
            return match request(SocketAddr::new(host, port), https, Method::GET, target, &headers, timeout).await {
                // The kubelet counts 200–399 as success; the app's own code goes back to it.
                Ok((code, body)) => reply(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY), body),
                Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
            };
        }
        if let Some(tcp) = prober.get("tcpSocket") {
            let Some(port) = port_of(tcp) else { return reply(StatusCode::INTERNAL_SERVER_ERROR, "the probe has no numeric port\n") };
            let host: IpAddr = tcp.get("host").and_then(Value::as_str).and_then(|h| h.parse().ok()).unwrap_or(self.pod_ip);
            return match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
                Ok(Ok(_)) => reply(StatusCode::OK, "connected\n"),
                Ok(Err(e)) => reply(StatusCode::SERVICE_UNAVAILABLE, format!("connect {host}:{port}: {e}\n")),
                Err(_) => reply(StatusCode::SERVICE_UNAVAILABLE, format!("connect {host}:{port}: no answer within {timeout:?}\n")),
            };
        }
        if let Some(grpc) = prober.get("grpc") {
            let Some(port) = port_of(grpc) else { return reply(StatusCode::INTERNAL_SERVER_ERROR, "the probe has no numeric port\n") };
            let service = grpc.get("service").and_then(Value::as_str).unwrap_or_default();
            return match grpc_health(SocketAddr::new(self.pod_ip, port), service, timeout).await {
                Ok(()) => reply(StatusCode::OK, "SERVING\n"),
                Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
            };
        }
        reply(StatusCode::INTERNAL_SERVER_ERROR, "the probe is neither httpGet, tcpSocket nor grpc\n")
    }

    /// The proxy's metrics, then the app's; an app whose metrics cannot be fetched costs only
    /// its own part.
    async fn metrics(&self) -> Response<Full<Bytes>> {
        let proxy =
            http1(SocketAddr::from(([127, 0, 0, 1], self.stats_port)), Method::GET, "/stats/prometheus", &[], Duration::from_secs(5)).await;
        let mut body = match proxy {
            Ok((200, b)) => b.to_vec(),
            Ok((code, _)) => return reply(StatusCode::SERVICE_UNAVAILABLE, format!("the proxy's metrics answered {code}\n")),
            Err(e) => return reply(StatusCode::SERVICE_UNAVAILABLE, format!("the proxy's metrics: {e}\n")),
        };
        if let Some((port, path)) = &self.app_metrics {
            match http1(SocketAddr::new(self.pod_ip, *port), Method::GET, path, &[], Duration::from_secs(5)).await {
                Ok((200, app)) => {
                    if !body.ends_with(b"\n") {
                        body.push(b'\n');
                    }
                    body.extend_from_slice(&app);
                }
                Ok((code, _)) => tracing::warn!("the app's metrics at :{port}{path} answered {code}; serving the proxy's alone"),
                Err(e) => tracing::warn!("the app's metrics at :{port}{path}: {e}; serving the proxy's alone"),
            }
        }
        let mut r = reply(StatusCode::OK, body);
        r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4"));
        r
    }
}

/// Serves the status port until the process ends.
pub async fn serve(listener: TcpListener, status: Arc<Status>) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let status = status.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| status.clone().handle(peer, req));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tcp), service).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use serde_json::json;
    use weft_test_support::certs::{Leaf, TempDir, TestCa};

    /// An HTTPS app that answers `code` to everything, with a certificate nobody trusts.
    async fn https_app(code: u16) -> u16 {
        let dir = TempDir::new("probe-tls").expect("dir");
        let pem =
            TestCa::new(dir.path(), "probe").expect("ca").issue("app", Leaf { dns: &["app.local"], ..Leaf::default() }).expect("leaf");
        let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&pem.cert).expect("cert").map(|c| c.expect("cert")).collect();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&pem.key).expect("key");
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let _dir = dir;
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                        let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
                        *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
                        Ok::<_, Infallible>(r)
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tls), svc).await;
                });
            }
        });
        port
    }

    fn status(probers: Map<String, Value>) -> Status {
        let (quit, _) = tokio::sync::mpsc::channel(1);
        Status { pod_ip: "127.0.0.1".parse().expect("ip"), health_port: 1, stats_port: 1, admin_port: 1, probers, app_metrics: None, quit }
    }

    /// As the kubelet does, an HTTPS probe does not check the app's certificate, and the app's
    /// own status code is what the kubelet sees.
    #[tokio::test]
    async fn https_probes_reach_the_app_without_checking_its_certificate() {
        for code in [200, 503] {
            let port = https_app(code).await;
            let probers =
                json!({"/app-health/app/readyz": {"httpGet": {"path": "/ready", "port": port, "scheme": "HTTPS"}, "timeoutSeconds": 2}});
            let s = status(probers.as_object().cloned().expect("object"));
            let r = s.app_probe("/app-health/app/readyz").await;
            assert_eq!(r.status().as_u16(), code);
        }
        let s = status(Map::new());
        assert_eq!(s.app_probe("/app-health/app/livez").await.status(), StatusCode::NOT_FOUND);
    }
}
