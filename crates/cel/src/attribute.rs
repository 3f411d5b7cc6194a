//! Envoy's attributes (its "Attributes" reference) that weft supplies, by name.

use crate::eval::Value;

/// A scalar attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attribute {
    RequestPath,
    RequestUrlPath,
    RequestHost,
    RequestScheme,
    RequestMethod,
    RequestReferer,
    RequestUserAgent,
    RequestId,
    RequestProtocol,
    RequestSize,
    ResponseCode,
    ResponseCodeDetails,
    /// Envoy's response flags as its bitmask (uint): `0x2` is UH, `0x20` UF, … .
    ResponseFlags,
    ResponseGrpcStatus,
    ResponseSize,
    SourceAddress,
    SourcePort,
    DestinationAddress,
    DestinationPort,
    ConnectionId,
    ConnectionRequestedServerName,
    UpstreamAddress,
    UpstreamPort,
    XdsClusterName,
    XdsRouteName,
}

/// An attribute that is a map of strings, read one key at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapAttribute {
    RequestHeaders,
    ResponseHeaders,
    ResponseTrailers,
}

pub(crate) const SCALARS: &[(&str, Attribute)] = &[
    ("request.path", Attribute::RequestPath),
    ("request.url_path", Attribute::RequestUrlPath),
    ("request.host", Attribute::RequestHost),
    ("request.scheme", Attribute::RequestScheme),
    ("request.method", Attribute::RequestMethod),
    ("request.referer", Attribute::RequestReferer),
    ("request.useragent", Attribute::RequestUserAgent),
    ("request.id", Attribute::RequestId),
    ("request.protocol", Attribute::RequestProtocol),
    ("request.size", Attribute::RequestSize),
    ("response.code", Attribute::ResponseCode),
    ("response.code_details", Attribute::ResponseCodeDetails),
    ("response.flags", Attribute::ResponseFlags),
    ("response.grpc_status", Attribute::ResponseGrpcStatus),
    ("response.size", Attribute::ResponseSize),
    ("source.address", Attribute::SourceAddress),
    ("source.port", Attribute::SourcePort),
    ("destination.address", Attribute::DestinationAddress),
    ("destination.port", Attribute::DestinationPort),
    ("connection.id", Attribute::ConnectionId),
    ("connection.requested_server_name", Attribute::ConnectionRequestedServerName),
    ("upstream.address", Attribute::UpstreamAddress),
    ("upstream.port", Attribute::UpstreamPort),
    ("xds.cluster_name", Attribute::XdsClusterName),
    ("xds.route_name", Attribute::XdsRouteName),
];

pub(crate) const MAPS: &[(&str, MapAttribute)] = &[
    ("request.headers", MapAttribute::RequestHeaders),
    ("response.headers", MapAttribute::ResponseHeaders),
    ("response.trailers", MapAttribute::ResponseTrailers),
];

/// The roots of Envoy's attribute names.
pub(crate) const ROOTS: &[&str] = &["request", "response", "source", "destination", "connection", "upstream", "xds"];

impl Attribute {
    pub fn name(self) -> &'static str {
        SCALARS.iter().find(|(_, a)| *a == self).map_or("?", |(n, _)| n)
    }
}

impl MapAttribute {
    pub fn name(self) -> &'static str {
        MAPS.iter().find(|(_, a)| *a == self).map_or("?", |(n, _)| n)
    }
}

/// What one request or connection supplies. `None` is an attribute that has no value here (a
/// TCP connection's `request.path`, a header that is absent): CEL's "no such attribute" or "no
/// such key" error.
pub trait Activation {
    fn get(&self, a: Attribute) -> Option<Value>;
    fn get_key(&self, m: MapAttribute, key: &str) -> Option<String>;
}

/// Envoy's response-flag names and their bits, for `response.flags`.
pub const RESPONSE_FLAG_BITS: &[(&str, u64)] = &[
    ("LH", 0x1),
    ("UH", 0x2),
    ("UT", 0x4),
    ("LR", 0x8),
    ("UR", 0x10),
    ("UF", 0x20),
    ("UC", 0x40),
    ("UO", 0x80),
    ("NR", 0x100),
    ("DI", 0x200),
    ("FI", 0x400),
    ("RL", 0x800),
    ("UAEX", 0x1000),
    ("RLSE", 0x2000),
    ("DC", 0x4000),
    ("URX", 0x8000),
    ("SI", 0x10000),
    ("IH", 0x20000),
    ("DPE", 0x40000),
    ("UMSDR", 0x80000),
    ("RFCF", 0x100000),
    ("NFCF", 0x200000),
    ("DT", 0x400000),
    ("UPE", 0x800000),
    ("NC", 0x1000000),
    ("OM", 0x2000000),
    ("DF", 0x4000000),
    ("DO", 0x8000000),
    ("DR", 0x10000000),
];

/// `response.flags` from the access log's `%RESPONSE_FLAGS%` text (`UH,URX`, or `-`).
pub fn response_flag_bits(text: &str) -> u64 {
    text.split(',').filter_map(|f| RESPONSE_FLAG_BITS.iter().find(|(n, _)| *n == f.trim())).fold(0, |acc, (_, b)| acc | b)
}
