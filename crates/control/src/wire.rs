//! The ADS gRPC service on the wire, without tonic's generated server.
//!
//! Why not tonic's: its encoder writes each response whole into one per-stream buffer and keeps
//! that allocation for the life of the stream. A proxy's first push is its whole config (1.45 MB
//! for 1000 services), so a thousand idle streams held 1.2 GB. Here a response is a list of
//! shared, already-encoded resources; its protobuf bytes are produced in small chunks only as
//! HTTP/2 flow control asks for them, and the resources themselves are never copied per proxy.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse};
use http_body::Frame;
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;

use crate::push::Res;

pub const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
const MAX_REQUEST: usize = 64 << 20;
/// Small pieces are gathered into chunks of about this size before they go to HTTP/2.
const CHUNK: usize = 32 * 1024;

/// One response, as the connection decided it: its small fields and the shared resources.
pub enum Outgoing {
    Sotw { version: String, type_url: String, nonce: String, resources: Vec<Arc<Res>> },
    Delta { version: String, type_url: String, nonce: String, resources: Vec<Arc<Res>>, removed: Vec<String> },
}

pub type Sender = mpsc::Sender<Result<Outgoing, Status>>;

/// Who opened an ADS stream, when the port authenticates its callers (the TLS port does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub crate::ca::Identity);

/// Starts the handler for one ADS stream; the handler owns the request stream and the sender.
/// `caller`: the authenticated identity behind the stream, on a port that requires one.
pub trait Handler: Clone + Send + Sync + 'static {
    fn sotw(&self, requests: Requests<DiscoveryRequest>, out: Sender, caller: Option<Caller>);
    fn delta(&self, requests: Requests<DeltaDiscoveryRequest>, out: Sender, caller: Option<Caller>);
}

/// The tower service tonic's router serves under [`SERVICE`].
#[derive(Clone)]
pub struct AdsService<H> {
    handler: H,
}

impl<H> AdsService<H> {
    pub fn new(handler: H) -> AdsService<H> {
        AdsService { handler }
    }
}

impl<H> tonic::server::NamedService for AdsService<H> {
    const NAME: &'static str = SERVICE;
}

type HttpResponse = http::Response<tonic::body::Body>;

impl<H: Handler> tower_service::Service<http::Request<tonic::body::Body>> for AdsService<H> {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = std::future::Ready<Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        std::future::ready(Ok(self.dispatch(req)))
    }
}

impl<H: Handler> AdsService<H> {
    fn dispatch(&self, req: http::Request<tonic::body::Body>) -> HttpResponse {
        // Proxies do not compress ADS requests unless told to; weft does not offer it.
        if req.headers().get("grpc-encoding").is_some_and(|e| e != "identity") {
            return status_only(Status::unimplemented("weft does not accept compressed ADS requests (grpc-encoding)"));
        }
        let path = req.uri().path().to_string();
        let caller = req.extensions().get::<Caller>().cloned();
        let body = req.into_body();
        let (tx, rx) = mpsc::channel(16);
        match path.as_str() {
            SOTW_PATH => self.handler.sotw(Requests::new(body), tx, caller),
            DELTA_PATH => self.handler.delta(Requests::new(body), tx, caller),
            other => return status_only(Status::unimplemented(format!("unknown method {other}"))),
        }
        grpc_response(tonic::body::Body::new(PushBody { rx, current: None, finished: false }))
    }
}

/// ADS that only authenticated callers reach (the TLS port): the bearer token of each stream
/// is checked as the CA checks it, and the identity goes with the stream, which then only
/// serves a proxy of that identity's namespace (istiod's xDS identity check).
#[derive(Clone)]
pub struct AuthenticatedAds<H> {
    inner: AdsService<H>,
    authn: Arc<crate::ca::Authenticator>,
}

impl<H> AuthenticatedAds<H> {
    pub fn new(inner: AdsService<H>, authn: Arc<crate::ca::Authenticator>) -> AuthenticatedAds<H> {
        AuthenticatedAds { inner, authn }
    }
}

impl<H> tonic::server::NamedService for AuthenticatedAds<H> {
    const NAME: &'static str = SERVICE;
}

impl<H: Handler> tower_service::Service<http::Request<tonic::body::Body>> for AuthenticatedAds<H> {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<HttpResponse, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        let (inner, authn) = (self.inner.clone(), self.authn.clone());
        Box::pin(async move {
            let token = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_owned());
            match authn.authenticate(token.as_deref()).await {
                Ok(id) => {
                    req.extensions_mut().insert(Caller(id));
                    Ok(inner.dispatch(req))
                }
                Err(e) => {
                    tracing::warn!("xDS stream refused on the TLS port: {e}");
                    Ok(status_only(Status::unauthenticated(e.to_string())))
                }
            }
        })
    }
}

/// The request messages of a stream. Each message is gathered into a buffer of its own size and
/// dropped once decoded: an idle stream holds no buffer sized by its largest request (an EDS
/// request names every cluster, about 100 KB for 2000 of them).
pub struct Requests<T> {
    body: tonic::body::Body,
    buf: BytesMut,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T: Message + Default> Requests<T> {
    fn new(body: tonic::body::Body) -> Requests<T> {
        Requests { body, buf: BytesMut::new(), _t: std::marker::PhantomData }
    }

    /// The next request; `Ok(None)` when the proxy closed its side.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        use http_body_util::BodyExt;
        loop {
            if let Some(msg) = self.take()? {
                return Ok(Some(msg));
            }
            match self.body.frame().await {
                None if self.buf.is_empty() => return Ok(None),
                None => return Err(Status::invalid_argument("request stream ended inside a message")),
                Some(Err(e)) => return Err(Status::cancelled(format!("request stream failed: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// A whole message from the front of the buffer, if one has arrived.
    fn take(&mut self) -> Result<Option<T>, Status> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err(Status::unimplemented("weft does not accept compressed ADS requests"));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_REQUEST {
            return Err(Status::resource_exhausted(format!("request of {len} bytes is over the {MAX_REQUEST}-byte limit")));
        }
        if self.buf.len() < 5 + len {
            self.buf.reserve(5 + len - self.buf.len());
            return Ok(None);
        }
        let msg = T::decode(&self.buf[5..5 + len]).map_err(|e| Status::invalid_argument(format!("malformed request: {e}")));
        let rest = self.buf.split_off(5 + len);
        // A fresh buffer for what follows, so this message's allocation is freed now.
        self.buf = BytesMut::from(&rest[..]);
        msg.map(Some)
    }
}

/// A response with no messages, only the status (in headers: a "trailers-only" response).
fn status_only(status: Status) -> HttpResponse {
    let mut resp = grpc_response(tonic::body::Body::empty());
    resp.headers_mut().extend(trailers(&status));
    resp
}

fn grpc_response(body: tonic::body::Body) -> HttpResponse {
    let mut resp = http::Response::new(body);
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    resp
}

/// The response body: each `Outgoing` becomes one gRPC message, produced chunk by chunk.
struct PushBody {
    rx: mpsc::Receiver<Result<Outgoing, Status>>,
    current: Option<Chunks>,
    finished: bool,
}

impl http_body::Body for PushBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            if let Some(c) = this.current.as_mut() {
                match c.next_chunk() {
                    Some(b) => return Poll::Ready(Some(Ok(Frame::data(b)))),
                    None => this.current = None,
                }
            }
            match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(out))) => this.current = Some(Chunks::new(out)),
                Poll::Ready(Some(Err(status))) => {
                    this.finished = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))));
                }
                Poll::Ready(None) => {
                    this.finished = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers(&Status::ok(""))))));
                }
            }
        }
    }
}

fn trailers(status: &Status) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    if status.add_header(&mut h).is_err() {
        h.insert("grpc-status", http::HeaderValue::from_static("13"));
    }
    h
}

/// The field number of `resources` in both response types, and of `Resource.resource`.
const RESOURCES_FIELD: u32 = 2;

/// Appends the key and length of a length-delimited `resources` entry of `len` bytes.
fn resources_entry(len: usize, buf: &mut BytesMut) {
    prost::encoding::encode_key(RESOURCES_FIELD, prost::encoding::WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(len as u64, buf);
}

/// Lays out one gRPC message: the 5-byte frame header, the response's small fields (encoded by
/// prost with no resources; protobuf allows fields in any order), then each resource as a
/// `resources` entry around the shared encoded bytes.
struct Chunks {
    head: Option<Bytes>,
    items: std::vec::IntoIter<Item>,
    /// A large resource's bytes, next out as they are.
    ready: Option<Bytes>,
}

struct Item {
    /// Field key and lengths (and for delta, the resource's name and version).
    prefix: Bytes,
    body: Bytes,
}

impl Chunks {
    fn new(out: Outgoing) -> Chunks {
        let (fields, items): (Vec<u8>, Vec<Item>) = match out {
            Outgoing::Sotw { version, type_url, nonce, resources } => {
                let fields = DiscoveryResponse { version_info: version, type_url, nonce, ..Default::default() }.encode_to_vec();
                let items = resources
                    .into_iter()
                    .map(|r| {
                        let mut p = BytesMut::with_capacity(12);
                        resources_entry(r.encoded.len(), &mut p);
                        Item { prefix: p.freeze(), body: r.encoded.clone() }
                    })
                    .collect();
                (fields, items)
            }
            Outgoing::Delta { version, type_url, nonce, resources, removed } => {
                let fields = DeltaDiscoveryResponse {
                    system_version_info: version,
                    type_url,
                    nonce,
                    removed_resources: removed,
                    ..Default::default()
                }
                .encode_to_vec();
                let items = resources
                    .into_iter()
                    .map(|r| {
                        // envoy.service.discovery.v3.Resource: name = 3, version = 1, resource = 2.
                        let meta = envoy_types::pb::envoy::service::discovery::v3::Resource {
                            name: r.name.to_string(),
                            version: r.hash.to_string(),
                            ..Default::default()
                        }
                        .encode_to_vec();
                        let mut inner_head = BytesMut::with_capacity(12);
                        resources_entry(r.encoded.len(), &mut inner_head);
                        let inner_len = meta.len() + inner_head.len() + r.encoded.len();
                        let mut p = BytesMut::with_capacity(meta.len() + 24);
                        resources_entry(inner_len, &mut p);
                        p.put_slice(&meta);
                        p.put_slice(&inner_head);
                        Item { prefix: p.freeze(), body: r.encoded.clone() }
                    })
                    .collect();
                (fields, items)
            }
        };
        let len = fields.len() + items.iter().map(|i| i.prefix.len() + i.body.len()).sum::<usize>();
        let mut head = BytesMut::with_capacity(5 + fields.len());
        head.put_u8(0); // not compressed
        head.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        head.put_slice(&fields);
        Chunks { head: Some(head.freeze()), items: items.into_iter(), ready: None }
    }

    /// The next piece of the message: small pieces gathered into one chunk, a large resource
    /// passed on as the shared bytes it already is. `None` when the message is complete.
    fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(b) = self.ready.take() {
            return Some(b);
        }
        let mut buf = BytesMut::new();
        if let Some(h) = self.head.take() {
            buf.put_slice(&h);
        }
        while let Some(item) = self.items.as_slice().first() {
            if item.body.len() > CHUNK {
                // Large: its prefix ends this chunk, its bytes go out next, uncopied.
                let item = self.items.next()?;
                buf.put_slice(&item.prefix);
                self.ready = Some(item.body);
                break;
            }
            if !buf.is_empty() && buf.len() + item.prefix.len() + item.body.len() > CHUNK {
                break;
            }
            let item = self.items.next()?;
            buf.put_slice(&item.prefix);
            buf.put_slice(&item.body);
        }
        (!buf.is_empty()).then(|| buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str, size: usize) -> Arc<Res> {
        let any = envoy_types::pb::google::protobuf::Any { type_url: "t".into(), value: vec![7u8; size] };
        Arc::new(Res { name: Arc::from(name), hash: 42, encoded: any.encode_to_vec().into() })
    }

    fn assemble(out: Outgoing) -> Vec<u8> {
        let mut c = Chunks::new(out);
        let mut all = Vec::new();
        while let Some(b) = c.next_chunk() {
            assert!(!b.is_empty());
            all.extend_from_slice(&b);
        }
        assert_eq!(all[0], 0);
        let len = u32::from_be_bytes([all[1], all[2], all[3], all[4]]) as usize;
        assert_eq!(len, all.len() - 5, "frame header length matches the message");
        all.split_off(5)
    }

    #[test]
    fn a_chunked_sotw_response_decodes_to_the_same_message_prost_would_send() {
        let resources = vec![res("a", 10), res("big", 3 * CHUNK), res("c", 100)];
        let msg = assemble(Outgoing::Sotw { version: "7".into(), type_url: "T".into(), nonce: "n".into(), resources });
        let r = DiscoveryResponse::decode(msg.as_slice()).expect("decodes");
        assert_eq!((r.version_info.as_str(), r.type_url.as_str(), r.nonce.as_str()), ("7", "T", "n"));
        assert_eq!(r.resources.len(), 3);
        assert_eq!(r.resources[1].value.len(), 3 * CHUNK);
        assert_eq!(r.resources[2].value, vec![7u8; 100]);
    }

    #[test]
    fn a_chunked_delta_response_carries_names_versions_and_removals() {
        let resources = (0..2000).map(|i| res(&format!("r{i}"), 50)).collect();
        let msg = assemble(Outgoing::Delta {
            version: "3".into(),
            type_url: "T".into(),
            nonce: "n".into(),
            resources,
            removed: vec!["gone".into()],
        });
        let r = DeltaDiscoveryResponse::decode(msg.as_slice()).expect("decodes");
        assert_eq!(r.resources.len(), 2000);
        assert_eq!(r.resources[1999].name, "r1999");
        assert_eq!(r.resources[0].version, "42");
        assert_eq!(r.resources[0].resource.as_ref().map(|a| a.value.len()), Some(50));
        assert_eq!(r.removed_resources, vec!["gone".to_string()]);
    }
}
