//! Envoy's request attributes (what CEL expressions read: `response.code`, `request.headers`,
//! `xds.cluster_name`, …) over what a finished request or connection can tell its access log,
//! so the access-log filter and metric label expressions see the same values the log line
//! prints.

use weft_cel::{response_flag_bits, Activation, Attribute, MapAttribute, Value};

use crate::config::access_log::{Command, FormatContext};

pub struct Attributes<'a>(pub &'a dyn FormatContext);

fn req(name: &str) -> Command {
    Command::Req { main: name.into(), alt: None, max_len: None }
}

fn port_of(addr: Option<String>) -> Option<Value> {
    addr?.rsplit_once(':')?.1.parse::<i64>().ok().map(Value::Int)
}

impl Activation for Attributes<'_> {
    fn get(&self, a: Attribute) -> Option<Value> {
        let v = |c: Command| self.0.value(&c);
        let text = |c: Command| v(c).map(Value::String);
        let int = |c: Command| v(c).and_then(|s| s.parse::<i64>().ok()).map(Value::Int);
        match a {
            Attribute::RequestPath => text(req(":path")),
            Attribute::RequestUrlPath => v(req(":path")).map(|p| Value::String(p.split('?').next().unwrap_or_default().to_owned())),
            Attribute::RequestHost => text(req(":authority")),
            Attribute::RequestScheme => text(req(":scheme")),
            Attribute::RequestMethod => text(req(":method")),
            Attribute::RequestReferer => text(req("referer")),
            Attribute::RequestUserAgent => text(req("user-agent")),
            Attribute::RequestId => text(req("x-request-id")),
            Attribute::RequestProtocol => text(Command::Protocol),
            // A TCP connection has no request: only HTTP says what its method was.
            Attribute::RequestSize => v(req(":method")).and_then(|_| int(Command::BytesReceived)),
            // A TCP connection has no response code (Envoy's attribute is absent there too).
            Attribute::ResponseCode => int(Command::ResponseCode).filter(|c| *c != Value::Int(0)),
            Attribute::ResponseCodeDetails => text(Command::ResponseCodeDetails),
            // An int, as Envoy types it.
            Attribute::ResponseFlags => {
                v(Command::ResponseFlags).map(|f| Value::Int(i64::try_from(response_flag_bits(&f)).unwrap_or(i64::MAX)))
            }
            Attribute::ResponseGrpcStatus => v(Command::Trailer { main: "grpc-status".into(), alt: None, max_len: None })
                .or_else(|| v(Command::Resp { main: "grpc-status".into(), alt: None, max_len: None }))
                .and_then(|s| s.parse::<i64>().ok())
                .map(Value::Int),
            Attribute::ResponseSize => v(req(":method")).and_then(|_| int(Command::BytesSent)),
            // Envoy's addresses are `ip:port`.
            Attribute::SourceAddress => text(Command::DownstreamRemoteAddress),
            Attribute::SourcePort => port_of(v(Command::DownstreamRemoteAddress)),
            Attribute::DestinationAddress => text(Command::DownstreamLocalAddress),
            Attribute::DestinationPort => port_of(v(Command::DownstreamLocalAddress)),
            Attribute::ConnectionId => v(Command::ConnectionId).and_then(|s| s.parse::<u64>().ok()).map(Value::Uint),
            Attribute::ConnectionRequestedServerName => Some(Value::String(v(Command::RequestedServerName).unwrap_or_default())),
            Attribute::UpstreamAddress => text(Command::UpstreamHost),
            Attribute::UpstreamPort => port_of(v(Command::UpstreamHost)),
            Attribute::XdsClusterName => text(Command::UpstreamCluster),
            Attribute::XdsRouteName => text(Command::RouteName),
        }
    }

    fn get_key(&self, m: MapAttribute, key: &str) -> Option<String> {
        let name = key.to_ascii_lowercase();
        match m {
            MapAttribute::RequestHeaders => self.0.value(&req(&name)),
            MapAttribute::ResponseHeaders => self.0.value(&Command::Resp { main: name, alt: None, max_len: None }),
            MapAttribute::ResponseTrailers => self.0.value(&Command::Trailer { main: name, alt: None, max_len: None }),
        }
    }
}
