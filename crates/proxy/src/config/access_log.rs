//! Access log and header-value formats: Envoy's `%COMMAND(arg)%` substitution strings.

use std::fmt::Write as _;

use weft_xds::filters::{AccessLog, AccessLogConfig as WireConfig, SubstitutionFormatString};

use super::{ConfigError, Result};

/// Envoy's default access log format.
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" \
%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \
\"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// One piece of a format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Text(String),
    Command(Command),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    StartTime(Option<String>),
    Req { main: String, alt: Option<String>, max_len: Option<usize> },
    Resp { main: String, alt: Option<String>, max_len: Option<usize> },
    Trailer { main: String, alt: Option<String>, max_len: Option<usize> },
    ResponseCode,
    ResponseCodeDetails,
    ResponseFlags,
    BytesReceived,
    BytesSent,
    Duration,
    RequestDuration,
    ResponseDuration,
    Protocol,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    UpstreamTransportFailureReason,
    UpstreamRequestAttemptCount,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamLocalAddress,
    DownstreamLocalAddressWithoutPort,
    DownstreamLocalPort,
    RequestedServerName,
    RouteName,
    Hostname,
    ConnectionId,
}

/// A parsed substitution format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub tokens: Vec<Token>,
}

/// Supplies the values a format's commands name; `None` renders as `-`.
pub trait FormatContext {
    fn value(&self, c: &Command) -> Option<String>;
}

impl Format {
    pub fn parse(s: &str) -> std::result::Result<Format, String> {
        let mut tokens = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('%') {
            text.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(stripped) = after.strip_prefix('%') {
                text.push('%');
                rest = stripped;
                continue;
            }
            let end = after.find('%').ok_or_else(|| format!("unterminated command in {s:?}: a '%' has no closing '%'"))?;
            let cmd = &after[..end];
            rest = &after[end + 1..];
            let parsed = parse_command(cmd)?;
            if !text.is_empty() {
                tokens.push(Token::Text(std::mem::take(&mut text)));
            }
            tokens.push(Token::Command(parsed));
        }
        text.push_str(rest);
        if !text.is_empty() {
            tokens.push(Token::Text(text));
        }
        Ok(Format { tokens })
    }

    /// A format with no commands renders to this constant.
    pub fn literal(&self) -> Option<&str> {
        match self.tokens.as_slice() {
            [] => Some(""),
            [Token::Text(t)] => Some(t),
            _ => None,
        }
    }

    pub fn render(&self, ctx: &dyn FormatContext) -> String {
        let mut out = String::new();
        for t in &self.tokens {
            match t {
                Token::Text(s) => out.push_str(s),
                Token::Command(c) => match ctx.value(c) {
                    Some(v) => out.push_str(&v),
                    None => out.push('-'),
                },
            }
        }
        out
    }

    /// Renders for a header value: a missing value renders empty, as Envoy does.
    pub fn render_header(&self, ctx: &dyn FormatContext) -> String {
        if let Some(l) = self.literal() {
            return l.to_string();
        }
        let mut out = String::new();
        for t in &self.tokens {
            match t {
                Token::Text(s) => out.push_str(s),
                Token::Command(c) => {
                    if let Some(v) = ctx.value(c) {
                        let _ = write!(out, "{v}");
                    }
                }
            }
        }
        out
    }
}

fn header_args(arg: &str) -> std::result::Result<(String, Option<String>, Option<usize>), String> {
    // REQ(X?Y):Z
    let (inner, max) = match arg.rsplit_once("):") {
        Some((i, m)) => (i, Some(m.parse::<usize>().map_err(|_| format!("invalid length {m:?}"))?)),
        None => (arg.strip_suffix(')').ok_or_else(|| format!("missing ')' in {arg:?}"))?, None),
    };
    let (main, alt) = match inner.split_once('?') {
        Some((a, b)) => (a.to_ascii_lowercase(), Some(b.to_ascii_lowercase())),
        None => (inner.to_ascii_lowercase(), None),
    };
    Ok((main, alt, max))
}

fn parse_command(cmd: &str) -> std::result::Result<Command, String> {
    if let Some(arg) = cmd.strip_prefix("REQ(") {
        let (main, alt, max_len) = header_args(arg)?;
        return Ok(Command::Req { main, alt, max_len });
    }
    if let Some(arg) = cmd.strip_prefix("RESP(") {
        let (main, alt, max_len) = header_args(arg)?;
        return Ok(Command::Resp { main, alt, max_len });
    }
    if let Some(arg) = cmd.strip_prefix("TRAILER(") {
        let (main, alt, max_len) = header_args(arg)?;
        return Ok(Command::Trailer { main, alt, max_len });
    }
    if let Some(arg) = cmd.strip_prefix("START_TIME(") {
        let f = arg.strip_suffix(')').ok_or_else(|| format!("missing ')' in %{cmd}%"))?;
        return Ok(Command::StartTime(Some(f.to_string())));
    }
    Ok(match cmd {
        "START_TIME" => Command::StartTime(None),
        "RESPONSE_CODE" => Command::ResponseCode,
        "RESPONSE_CODE_DETAILS" => Command::ResponseCodeDetails,
        "RESPONSE_FLAGS" => Command::ResponseFlags,
        "BYTES_RECEIVED" => Command::BytesReceived,
        "BYTES_SENT" => Command::BytesSent,
        "DURATION" => Command::Duration,
        "REQUEST_DURATION" => Command::RequestDuration,
        "RESPONSE_DURATION" => Command::ResponseDuration,
        "PROTOCOL" => Command::Protocol,
        "UPSTREAM_HOST" => Command::UpstreamHost,
        "UPSTREAM_CLUSTER" => Command::UpstreamCluster,
        "UPSTREAM_LOCAL_ADDRESS" => Command::UpstreamLocalAddress,
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => Command::UpstreamTransportFailureReason,
        "UPSTREAM_REQUEST_ATTEMPT_COUNT" => Command::UpstreamRequestAttemptCount,
        "DOWNSTREAM_REMOTE_ADDRESS" => Command::DownstreamRemoteAddress,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Command::DownstreamRemoteAddressWithoutPort,
        "DOWNSTREAM_LOCAL_ADDRESS" => Command::DownstreamLocalAddress,
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Command::DownstreamLocalAddressWithoutPort,
        "DOWNSTREAM_LOCAL_PORT" => Command::DownstreamLocalPort,
        "REQUESTED_SERVER_NAME" => Command::RequestedServerName,
        "ROUTE_NAME" => Command::RouteName,
        "HOSTNAME" => Command::Hostname,
        "CONNECTION_ID" => Command::ConnectionId,
        other => return Err(format!("format command %{other}% is not supported")),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    Stderr,
    File(String),
    /// Envoy's OpenTelemetry access logger: each line a log record, over OTLP/gRPC.
    Otlp(OtlpSink),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSink {
    pub cluster: String,
    pub authority: String,
    pub log_name: String,
    /// Each record's attributes, by key, formatted per request.
    pub attributes: Vec<(String, Format)>,
    /// Resource attributes, literal.
    pub resource: Vec<(String, String)>,
    /// Envoy's `log_name`, `zone_name`, `cluster_name`, `node_name` resource attributes.
    pub builtin_labels: bool,
    pub flush: std::time::Duration,
    pub buffer_bytes: usize,
    /// Each report's deadline (`grpc_service.timeout`, 5 s when unset).
    pub timeout: std::time::Duration,
}

#[derive(Debug, Clone)]
pub enum LineFormat {
    Text(Format),
    Json(Vec<(String, Format)>),
}

#[derive(Debug, Clone)]
pub struct AccessLogConfig {
    pub sink: Sink,
    pub format: LineFormat,
    /// Only what this CEL expression is true for is logged (Envoy's CEL access-log filter).
    pub filter: Option<std::sync::Arc<weft_cel::Program>>,
}

/// The access log's filter: the CEL extension filter, compiled now so a bad expression is a
/// rejected config rather than a log that silently writes nothing.
fn filter(a: &AccessLog, path: &str) -> Result<Option<std::sync::Arc<weft_cel::Program>>> {
    let Some(f) = &a.filter else { return Ok(None) };
    let fpath = format!("{path}.filter");
    let Some(ext) = &f.extension_filter else {
        return Err(ConfigError::new(fpath, "only extension_filter (envoy.access_loggers.extension_filters.cel) is supported"));
    };
    let epath = format!("{fpath}.extension_filter.typed_config");
    match &ext.typed_config {
        Some(weft_xds::filters::AccessLogFilterConfig::Cel(c)) => weft_cel::Program::compile(&c.expression)
            .map(|p| Some(std::sync::Arc::new(p)))
            .map_err(|e| ConfigError::new(format!("{epath}.expression"), e.to_string())),
        None => Err(ConfigError::new(epath, "required")),
    }
}

fn line_format(f: Option<&SubstitutionFormatString>, legacy_text: Option<&String>, path: &str) -> Result<LineFormat> {
    if let Some(t) = legacy_text {
        return Ok(LineFormat::Text(Format::parse(t).map_err(|m| ConfigError::new(format!("{path}.format"), m))?));
    }
    let Some(f) = f else {
        return Ok(LineFormat::Text(Format::parse(DEFAULT_FORMAT).map_err(|m| ConfigError::new(path, m))?));
    };
    let lpath = format!("{path}.log_format");
    if let Some(j) = &f.json_format {
        let mut fields = Vec::new();
        for (k, v) in j {
            let s = v.as_str().ok_or_else(|| ConfigError::new(format!("{lpath}.json_format.{k}"), "only string values are supported"))?;
            fields.push((k.clone(), Format::parse(s).map_err(|m| ConfigError::new(format!("{lpath}.json_format.{k}"), m))?));
        }
        return Ok(LineFormat::Json(fields));
    }
    let text = match (&f.text_format, &f.text_format_source) {
        (Some(t), None) => t.clone(),
        (None, Some(ds)) => ds
            .inline_string
            .clone()
            .ok_or_else(|| ConfigError::new(format!("{lpath}.text_format_source"), "only inline_string is supported"))?,
        (None, None) => DEFAULT_FORMAT.to_string(),
        _ => return Err(ConfigError::new(lpath, "text_format and text_format_source are mutually exclusive")),
    };
    Ok(LineFormat::Text(Format::parse(&text).map_err(|m| ConfigError::new(format!("{lpath}.text_format"), m))?))
}

/// Envoy's OpenTelemetry access logger as a sink: the body is the line's format.
fn otlp(o: &weft_xds::filters::OtelAccessLogConfig, tpath: &str) -> Result<(Sink, LineFormat)> {
    let cpath = format!("{tpath}.common_config");
    let common = o.common_config.as_ref().ok_or_else(|| ConfigError::new(&cpath, "required"))?;
    let grpc = common.grpc_service.as_ref().ok_or_else(|| ConfigError::new(format!("{cpath}.grpc_service"), "required"))?;
    let e = grpc
        .envoy_grpc
        .as_ref()
        .filter(|e| !e.cluster_name.is_empty())
        .ok_or_else(|| ConfigError::new(format!("{cpath}.grpc_service.envoy_grpc.cluster_name"), "required"))?;
    let text = |v: &Option<weft_xds::filters::OtelAnyValue>, p: &str| -> Result<String> {
        match v {
            None => Ok(String::new()),
            Some(a) => a.string_value.clone().ok_or_else(|| ConfigError::new(p, "only string_value is supported")),
        }
    };
    let body = text(&o.body, &format!("{tpath}.body"))?;
    let format = Format::parse(&body).map_err(|m| ConfigError::new(format!("{tpath}.body.string_value"), m))?;
    let mut attributes = Vec::new();
    for (i, kv) in o.attributes.iter().flat_map(|a| a.values.iter()).enumerate() {
        let p = format!("{tpath}.attributes.values[{i}].value");
        let v = text(&kv.value, &p)?;
        attributes.push((kv.key.clone(), Format::parse(&v).map_err(|m| ConfigError::new(format!("{p}.string_value"), m))?));
    }
    let mut resource = Vec::new();
    for (i, kv) in o.resource_attributes.iter().flat_map(|a| a.values.iter()).enumerate() {
        resource.push((kv.key.clone(), text(&kv.value, &format!("{tpath}.resource_attributes.values[{i}].value"))?));
    }
    let sink = Sink::Otlp(OtlpSink {
        cluster: e.cluster_name.clone(),
        authority: if e.authority.is_empty() { e.cluster_name.clone() } else { e.authority.clone() },
        log_name: common.log_name.clone(),
        attributes,
        resource,
        builtin_labels: !o.disable_builtin_labels,
        flush: common.buffer_flush_interval.map(|d| d.0).filter(|d| !d.is_zero()).unwrap_or(std::time::Duration::from_secs(1)),
        buffer_bytes: common.buffer_size_bytes.map(|b| b as usize).filter(|b| *b > 0).unwrap_or(16_384),
        timeout: grpc.timeout.map(|t| t.0).filter(|t| !t.is_zero()).unwrap_or(std::time::Duration::from_secs(5)),
    });
    Ok((sink, LineFormat::Text(format)))
}

impl AccessLogConfig {
    pub fn from_wire(a: &AccessLog, path: &str) -> Result<Self> {
        let tpath = format!("{path}.typed_config");
        match &a.typed_config {
            Some(WireConfig::File(f)) => {
                let format = if let Some(j) = &f.json_format {
                    let sfs = SubstitutionFormatString { json_format: Some(j.clone()), ..Default::default() };
                    line_format(Some(&sfs), None, &tpath)?
                } else {
                    line_format(f.log_format.as_ref(), f.format.as_ref(), &tpath)?
                };
                let sink = match f.path.as_str() {
                    "/dev/stdout" => Sink::Stdout,
                    "/dev/stderr" => Sink::Stderr,
                    p => Sink::File(p.to_string()),
                };
                Ok(AccessLogConfig { sink, format, filter: filter(a, path)? })
            }
            Some(WireConfig::Stdout(s)) => Ok(AccessLogConfig {
                sink: Sink::Stdout,
                format: line_format(s.log_format.as_ref(), None, &tpath)?,
                filter: filter(a, path)?,
            }),
            Some(WireConfig::OpenTelemetry(o)) => {
                otlp(o, &tpath).map(|(sink, format)| AccessLogConfig { sink, format, filter: None }).and_then(|mut c| {
                    c.filter = filter(a, path)?;
                    Ok(c)
                })
            }
            Some(WireConfig::Stderr(s)) => Ok(AccessLogConfig {
                sink: Sink::Stderr,
                format: line_format(s.log_format.as_ref(), None, &tpath)?,
                filter: filter(a, path)?,
            }),
            None => Err(ConfigError::new(tpath, "required")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_format_parses() {
        let f = Format::parse(DEFAULT_FORMAT).expect("default format");
        assert!(f.tokens.contains(&Token::Command(Command::Req {
            main: "x-envoy-original-path".into(),
            alt: Some(":path".into()),
            max_len: None
        })));
    }

    #[test]
    fn unknown_command_is_an_error() {
        assert!(Format::parse("%NOPE%").unwrap_err().contains("NOPE"));
        assert!(Format::parse("100%").is_err());
        assert_eq!(Format::parse("a%%b").map(|f| f.literal().map(String::from)), Ok(Some("a%b".into())));
    }
}
