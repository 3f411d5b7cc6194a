//! Request tracing as Envoy's HTTP connection manager does it with the Zipkin tracer: the
//! sampling decision (kept in `x-request-id` so every proxy on the path agrees), B3 context
//! in and out, and one span per request reported to a Zipkin collector.

pub mod otlp;
pub mod zipkin;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue};
use weft_xds::filters::{HcmTracing, TracerConfig, ZipkinEndpointVersion};
use weft_xds::listener::TrafficDirection;

use crate::config::ConfigError;

static X_B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
static X_B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
static X_B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
static X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static B3: HeaderName = HeaderName::from_static("b3");
pub static X_CLIENT_TRACE_ID: HeaderName = HeaderName::from_static("x-client-trace-id");

/// One HTTP connection manager's tracing settings.
#[derive(Debug)]
pub struct TraceConfig {
    /// Sampling thresholds out of 10000, as Envoy compares them with the request id.
    client: u64,
    random: u64,
    overall: u64,
    /// The span's kind: SERVER on inbound listeners, CLIENT otherwise.
    pub kind: SpanKind,
    pub max_path_tag_length: usize,
    pub custom_tags: Vec<(String, TagSource)>,
    /// Where sampled spans go; `None`: decide and propagate, report nothing.
    pub exporter: Option<Exporter>,
}

/// A tracer's collector.
#[derive(Debug, Clone)]
pub enum Exporter {
    Zipkin(zipkin::Collector),
    /// Envoy's OpenTelemetry tracer: OTLP out, W3C trace context only.
    Otlp(otlp::Collector),
}

impl Exporter {
    fn zipkin(&self) -> Option<&zipkin::Collector> {
        match self {
            Exporter::Zipkin(z) => Some(z),
            Exporter::Otlp(_) => None,
        }
    }
}

/// The reporter of a tracer's collector, shared by the connection managers that report there.
#[derive(Clone)]
pub enum Reporter {
    Zipkin(Arc<zipkin::Reporter>),
    Otlp(Arc<otlp::Reporter>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Client,
    Server,
}

#[derive(Debug, Clone)]
pub enum TagSource {
    Literal(String),
    /// Read once, when the config is built, like Envoy.
    Environment(String),
    Header {
        name: HeaderName,
        default: String,
    },
}

fn threshold(p: Option<&weft_xds::core::Percent>, path: &str) -> Result<u64, ConfigError> {
    match p {
        None => Ok(10_000),
        Some(p) if (0.0..=100.0).contains(&p.value) => Ok((p.value * 100.0).round() as u64),
        Some(p) => Err(ConfigError::new(path, format!("{} is not a percentage (0 to 100)", p.value))),
    }
}

impl TraceConfig {
    pub fn from_wire(t: &HcmTracing, direction: TrafficDirection, path: &str) -> Result<TraceConfig, ConfigError> {
        let mut custom_tags = Vec::new();
        for (i, c) in t.custom_tags.iter().enumerate() {
            let p = format!("{path}.custom_tags[{i}]");
            let source = match (&c.literal, &c.environment, &c.request_header, &c.metadata) {
                (Some(l), None, None, None) => TagSource::Literal(l.value.clone()),
                (None, Some(e), None, None) => {
                    TagSource::Environment(std::env::var(&e.name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| e.default_value.clone()))
                }
                (None, None, Some(h), None) => TagSource::Header {
                    name: HeaderName::from_bytes(h.name.as_bytes())
                        .map_err(|_| ConfigError::new(format!("{p}.request_header.name"), "not a valid header name"))?,
                    default: h.default_value.clone(),
                },
                (None, None, None, Some(m)) => TagSource::Literal(m.default_value.clone()),
                _ => return Err(ConfigError::new(&p, "exactly one of literal, environment, request_header or metadata is required")),
            };
            custom_tags.push((c.tag.clone(), source));
        }
        let exporter = match t.provider.as_ref().and_then(|p| p.typed_config.as_ref()) {
            None => None,
            Some(TracerConfig::Zipkin(z)) => {
                let zpath = format!("{path}.provider.typed_config");
                if z.collector_cluster.is_empty() {
                    return Err(ConfigError::new(format!("{zpath}.collector_cluster"), "required"));
                }
                if !z.collector_endpoint.starts_with('/') {
                    return Err(ConfigError::new(format!("{zpath}.collector_endpoint"), "must be a path starting with /"));
                }
                if z.collector_endpoint_version != ZipkinEndpointVersion::HttpJson {
                    return Err(ConfigError::new(format!("{zpath}.collector_endpoint_version"), "only HTTP_JSON is supported"));
                }
                if z.split_spans_for_request {
                    return Err(ConfigError::new(format!("{zpath}.split_spans_for_request"), "not supported"));
                }
                Some(Exporter::Zipkin(zipkin::Collector {
                    cluster: z.collector_cluster.clone(),
                    endpoint: z.collector_endpoint.clone(),
                    hostname: if z.collector_hostname.is_empty() { z.collector_cluster.clone() } else { z.collector_hostname.clone() },
                    trace_id_128bit: z.trace_id_128bit,
                    shared_span_context: z.shared_span_context.unwrap_or(true),
                    w3c: z.trace_context_option == weft_xds::filters::TraceContextOption::UseB3WithW3cPropagation,
                }))
            }
            Some(TracerConfig::OpenTelemetry(o)) => Some(Exporter::Otlp(otel_collector(o, &format!("{path}.provider.typed_config"))?)),
        };
        if t.provider.as_ref().is_some_and(|p| p.typed_config.is_none()) {
            return Err(ConfigError::new(format!("{path}.provider.typed_config"), "required"));
        }
        Ok(TraceConfig {
            client: threshold(t.client_sampling.as_ref(), &format!("{path}.client_sampling"))?,
            random: threshold(t.random_sampling.as_ref(), &format!("{path}.random_sampling"))?,
            overall: threshold(t.overall_sampling.as_ref(), &format!("{path}.overall_sampling"))?,
            kind: if direction == TrafficDirection::Inbound { SpanKind::Server } else { SpanKind::Client },
            max_path_tag_length: t.max_path_tag_length.unwrap_or(256) as usize,
            custom_tags,
            exporter,
        })
    }

    /// Envoy's `mutateTracingRequestHeader`: a request id that carries no decision yet gets one
    /// (client-forced by `x-client-trace-id`, else random sampling), both gated by overall
    /// sampling. The decision is written into the id's version nibble, so the next proxy on the
    /// path reads it instead of rolling again. Returns whether the request is traced.
    pub fn decide(&self, headers: &mut HeaderMap) -> bool {
        let Some(id) = headers.get(&crate::http::X_REQUEST_ID).and_then(|v| v.to_str().ok()) else { return false };
        let mut id = id.as_bytes().to_vec();
        let Some(roll) = request_id_roll(&id) else { return false };
        let mut reason = id[REASON_AT];
        if !matches!(reason, SAMPLED | FORCED | CLIENT) {
            if headers.contains_key(&X_CLIENT_TRACE_ID) && roll < self.client {
                reason = CLIENT;
            } else if roll < self.random {
                reason = SAMPLED;
            }
        }
        if roll >= self.overall {
            reason = NOT_TRACED;
        }
        if reason != id[REASON_AT] {
            id[REASON_AT] = reason;
            if let Ok(v) = HeaderValue::from_bytes(&id) {
                headers.insert(crate::http::X_REQUEST_ID.clone(), v);
            }
        }
        matches!(reason, SAMPLED | FORCED | CLIENT)
    }

    /// Starts the request's span: the decision, the B3 context it continues, and the context
    /// written into `headers` for the upstream.
    pub fn start(&self, headers: &mut HeaderMap) -> Span {
        let traced = self.decide(headers);
        let zipkin = self.exporter.as_ref().and_then(Exporter::zipkin);
        // The OpenTelemetry tracer speaks W3C only, 128-bit ids, a span of its own per hop.
        let otlp = matches!(self.exporter, Some(Exporter::Otlp(_)));
        let w3c = otlp || zipkin.is_some_and(|z| z.w3c);
        let incoming = if otlp {
            B3Context::read_w3c(headers)
        } else {
            B3Context::read(headers).or_else(|| w3c.then(|| B3Context::read_w3c(headers)).flatten())
        };
        let trace_id_128 = otlp || zipkin.is_some_and(|z| z.trace_id_128bit);
        let shared = !otlp && zipkin.is_none_or(|z| z.shared_span_context);
        let sampled = incoming.as_ref().and_then(|c| c.sampled).unwrap_or(traced);
        let ids = incoming.as_ref().and_then(|c| c.ids);
        let shared = shared && self.kind == SpanKind::Server && ids.is_some();
        let (trace_id, id, parent) = match ids {
            // A server span shares the caller's span when the tracer is told to (Envoy's default).
            Some(ids) if shared => (ids.trace, ids.span, ids.parent),
            Some(ids) => (ids.trace, rand::random::<u64>(), Some(ids.span)),
            None => {
                let high = if trace_id_128 { rand::random::<u64>() } else { 0 };
                let low = rand::random::<u64>();
                (TraceId { high, low }, low, None)
            }
        };
        let span = Span {
            trace_id,
            id,
            parent,
            sampled,
            start: SystemTime::now(),
            tags: BTreeMap::new(),
            name: String::new(),
            custom: Vec::new(),
            shared,
        };
        span.inject(headers, !otlp, w3c);
        if otlp && !headers.contains_key(&TRACESTATE) {
            // Envoy's OpenTelemetry tracer always writes the (possibly empty) trace state.
            headers.insert(TRACESTATE.clone(), HeaderValue::from_static(""));
        }
        span
    }
}

/// Where in a UUID request id Envoy keeps the trace decision (the version nibble).
const REASON_AT: usize = 14;
const NOT_TRACED: u8 = b'4';
const SAMPLED: u8 = b'9';
const FORCED: u8 = b'a';
const CLIENT: u8 = b'b';

/// The request id's roll out of 10000 (its first 32 bits), or `None` when it is not a UUID.
fn request_id_roll(id: &[u8]) -> Option<u64> {
    if id.len() != 36 {
        return None;
    }
    let head = std::str::from_utf8(id.get(..8)?).ok()?;
    u64::from_str_radix(head, 16).ok().map(|v| v % 10_000)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId {
    pub high: u64,
    pub low: u64,
}

impl TraceId {
    fn parse(s: &str) -> Option<TraceId> {
        match s.len() {
            16 => Some(TraceId { high: 0, low: u64::from_str_radix(s, 16).ok()? }),
            32 => Some(TraceId { high: u64::from_str_radix(&s[..16], 16).ok()?, low: u64::from_str_radix(&s[16..], 16).ok()? }),
            _ => None,
        }
    }
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.high == 0 {
            write!(f, "{:016x}", self.low)
        } else {
            write!(f, "{:016x}{:016x}", self.high, self.low)
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Ids {
    trace: TraceId,
    span: u64,
    parent: Option<u64>,
}

/// B3 propagation as it arrived: multi-header (`x-b3-*`) or the single `b3` header.
#[derive(Debug, Clone, Copy)]
struct B3Context {
    ids: Option<Ids>,
    sampled: Option<bool>,
}

fn sampled_flag(s: &str) -> Option<bool> {
    match s {
        "1" | "true" | "d" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

impl B3Context {
    /// W3C `traceparent` (`00-<32 hex trace>-<16 hex parent>-<2 hex flags>`); a malformed one
    /// is no context, as the spec says.
    fn read_w3c(h: &HeaderMap) -> Option<B3Context> {
        let tp = h.get(&TRACEPARENT)?.to_str().ok()?;
        let mut parts = tp.split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex(version, 2)
            || version == "ff"
            || (version == "00" && parts.next().is_some())
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        let trace = TraceId::parse(trace)?;
        let span = u64::from_str_radix(span, 16).ok()?;
        if (trace.high == 0 && trace.low == 0) || span == 0 {
            return None;
        }
        let sampled = u8::from_str_radix(flags, 16).ok()? & 1 == 1;
        Some(B3Context { ids: Some(Ids { trace, span, parent: None }), sampled: Some(sampled) })
    }

    fn read(h: &HeaderMap) -> Option<B3Context> {
        let get = |n: &HeaderName| h.get(n).and_then(|v| v.to_str().ok());
        if let Some(single) = get(&B3) {
            let parts: Vec<&str> = single.split('-').collect();
            return match parts.as_slice() {
                [flag] => Some(B3Context { ids: None, sampled: sampled_flag(flag) }),
                [t, s, rest @ ..] => {
                    let ids = Ids {
                        trace: TraceId::parse(t)?,
                        span: u64::from_str_radix(s, 16).ok()?,
                        parent: rest.get(1).and_then(|p| u64::from_str_radix(p, 16).ok()),
                    };
                    Some(B3Context { ids: Some(ids), sampled: rest.first().and_then(|f| sampled_flag(f)) })
                }
                [] => None,
            };
        }
        let sampled = get(&X_B3_SAMPLED).and_then(sampled_flag);
        let ids = match (get(&X_B3_TRACE_ID), get(&X_B3_SPAN_ID)) {
            (Some(t), Some(s)) => Some(Ids {
                trace: TraceId::parse(t)?,
                span: u64::from_str_radix(s, 16).ok()?,
                parent: get(&X_B3_PARENT_SPAN_ID).and_then(|p| u64::from_str_radix(p, 16).ok()),
            }),
            _ => None,
        };
        (ids.is_some() || sampled.is_some()).then_some(B3Context { ids, sampled })
    }
}

/// One request's span, from the decision to the report.
#[derive(Debug)]
pub struct Span {
    pub trace_id: TraceId,
    pub id: u64,
    pub parent: Option<u64>,
    pub sampled: bool,
    pub start: SystemTime,
    /// Operation name; set when the route is known.
    pub name: String,
    pub tags: BTreeMap<&'static str, String>,
    /// `custom_tags`, by their configured names.
    pub custom: Vec<(String, String)>,
    /// A server span that took the caller's span id (`shared_span_context`).
    pub shared: bool,
}

impl Span {
    /// The context the upstream continues (Envoy's B3 multi-header form, and W3C's
    /// `traceparent` when asked).
    fn inject(&self, h: &mut HeaderMap, b3: bool, w3c: bool) {
        let mut set = |n: &HeaderName, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(n.clone(), v);
            }
        };
        if b3 {
            set(&X_B3_TRACE_ID, self.trace_id.to_string());
            set(&X_B3_SPAN_ID, format!("{:016x}", self.id));
            set(&X_B3_SAMPLED, if self.sampled { "1" } else { "0" }.to_string());
        }
        h.remove(&B3);
        h.remove(&X_B3_PARENT_SPAN_ID);
        if let (true, Some(p)) = (b3, self.parent) {
            if let Ok(v) = HeaderValue::from_str(&format!("{p:016x}")) {
                h.insert(X_B3_PARENT_SPAN_ID.clone(), v);
            }
        }
        let mut set = |n: &HeaderName, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(n.clone(), v);
            }
        };
        if w3c {
            let flags = if self.sampled { "01" } else { "00" };
            set(&TRACEPARENT, format!("00-{:016x}{:016x}-{:016x}-{flags}", self.trace_id.high, self.trace_id.low, self.id));
        }
    }
}

/// What a finished request tells its span (Envoy's standard tags).
pub struct Outcome<'a> {
    pub status: u16,
    pub flags: String,
    pub upstream_cluster: Option<&'a str>,
    pub upstream_address: Option<std::net::SocketAddr>,
    pub request_size: u64,
    pub response_size: u64,
}

/// The per-proxy part of tracing: who is reporting, and the reporters by collector.
pub struct Tracer {
    pub node_id: String,
    pub node_cluster: String,
    /// `node.locality.zone` (the OpenTelemetry tracer's `zone` attribute).
    pub node_zone: String,
    reporters: parking_lot::Mutex<BTreeMap<(String, String, String), Arc<zipkin::Reporter>>>,
    otlp_reporters: parking_lot::Mutex<Vec<(otlp::Collector, Arc<otlp::Reporter>)>>,
    clusters: Arc<crate::upstream::ClusterManager>,
    stats: Arc<crate::stats::Store>,
}

impl Tracer {
    pub fn new(
        node_id: String,
        node_cluster: String,
        clusters: Arc<crate::upstream::ClusterManager>,
        stats: Arc<crate::stats::Store>,
    ) -> Tracer {
        Tracer {
            node_id,
            node_cluster,
            node_zone: String::new(),
            reporters: Default::default(),
            otlp_reporters: Default::default(),
            clusters,
            stats,
        }
    }

    /// The reporter for `e`, shared by every connection manager that reports there.
    pub fn reporter(&self, e: &Exporter) -> Reporter {
        match e {
            Exporter::Zipkin(c) => {
                let key = (c.cluster.clone(), c.endpoint.clone(), c.hostname.clone());
                Reporter::Zipkin(
                    self.reporters
                        .lock()
                        .entry(key)
                        .or_insert_with(|| zipkin::Reporter::start(c.clone(), self.clusters.clone(), self.stats.zipkin()))
                        .clone(),
                )
            }
            Exporter::Otlp(c) => {
                let mut list = self.otlp_reporters.lock();
                if let Some((_, r)) = list.iter().find(|(k, _)| k == c) {
                    return Reporter::Otlp(r.clone());
                }
                let mut c = c.clone();
                if c.service_name.is_empty() {
                    // Envoy's default when the config names no service.
                    c.service_name = "unknown_service:envoy".into();
                }
                let r = otlp::Reporter::start(c.clone(), self.clusters.clone(), self.stats.otel());
                list.push((c, r.clone()));
                Reporter::Otlp(r)
            }
        }
    }
}

/// Envoy's `OpenTelemetryConfig` as a collector: by gRPC (`grpc_service.envoy_grpc`) or HTTP
/// (`http_service.http_uri`).
fn otel_collector(o: &weft_xds::filters::OpenTelemetryConfig, path: &str) -> Result<otlp::Collector, ConfigError> {
    let (cluster, authority, transport, timeout) = match (&o.grpc_service, &o.http_service) {
        (Some(g), None) => {
            let e = g.envoy_grpc.as_ref().ok_or_else(|| ConfigError::new(format!("{path}.grpc_service.envoy_grpc"), "required"))?;
            if e.cluster_name.is_empty() {
                return Err(ConfigError::new(format!("{path}.grpc_service.envoy_grpc.cluster_name"), "required"));
            }
            let authority = if e.authority.is_empty() { e.cluster_name.clone() } else { e.authority.clone() };
            (e.cluster_name.clone(), authority, otlp::Transport::Grpc, g.timeout.map(|t| t.0))
        }
        (None, Some(h)) => {
            let u = &h.http_uri;
            if u.cluster.is_empty() {
                return Err(ConfigError::new(format!("{path}.http_service.http_uri.cluster"), "required"));
            }
            let uri: http::Uri = u.uri.parse().map_err(|_| ConfigError::new(format!("{path}.http_service.http_uri.uri"), "not a URI"))?;
            let authority = uri.authority().map(|a| a.to_string()).unwrap_or_else(|| u.cluster.clone());
            let path_q = uri.path_and_query().map(|p| p.to_string()).filter(|p| p.starts_with('/')).unwrap_or_else(|| "/v1/traces".into());
            (u.cluster.clone(), authority, otlp::Transport::Http { path: path_q }, u.timeout.map(|t| t.0))
        }
        (Some(_), Some(_)) => return Err(ConfigError::new(path, "only one of grpc_service or http_service may be set")),
        (None, None) => return Err(ConfigError::new(path, "one of grpc_service or http_service is required")),
    };
    Ok(otlp::Collector {
        cluster,
        authority,
        transport,
        timeout: timeout.filter(|t| !t.is_zero()).unwrap_or(std::time::Duration::from_secs(5)),
        service_name: o.service_name.clone(),
    })
}

#[cfg(test)]
mod tests;
