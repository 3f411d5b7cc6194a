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
    let run = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = Request::builder().method(method).uri(path).header(http::header::HOST, addr.to_string());
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, run).await.map_err(|_| format!("no answer from {addr} within {timeout:?}"))?
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
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let path = req.uri().path().to_owned();
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
            if http.get("scheme").and_then(Value::as_str) == Some("HTTPS") {
                return reply(StatusCode::NOT_IMPLEMENTED, "HTTPS app probes are not supported by weft's sidecar yet; probe over HTTP\n");
            }
            let host: IpAddr = http.get("host").and_then(Value::as_str).and_then(|h| h.parse().ok()).unwrap_or(self.pod_ip);
            let target = http.get("path").and_then(Value::as_str).unwrap_or("/");
            let headers: Vec<(String, String)> = http
                .get("httpHeaders")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|h| Some((h.get("name")?.as_str()?.to_owned(), h.get("value")?.as_str()?.to_owned())))
                .collect();
            return match http1(SocketAddr::new(host, port), Method::GET, target, &headers, timeout).await {
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
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let status = status.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| status.clone().handle(req));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tcp), service).await;
        });
    }
}
