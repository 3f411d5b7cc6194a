//! What is known about one request as it passes through, for access logs and header formats.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use crate::access_log::AccessLogger;
use crate::config::access_log::{Command, FormatContext};
use crate::listener::ConnInfo;

/// Per-request facts gathered on the way; rendered into access log lines at stream end.
pub struct RequestInfo {
    pub conn: Arc<ConnInfo>,
    /// Whether the request body has ended, or broken off.
    pub request_body: Arc<crate::body::BodyDone>,
    pub start: SystemTime,
    pub started: Instant,
    pub protocol: &'static str,
    pub method: http::Method,
    pub req_headers: HeaderMap,
    pub path: String,
    pub authority: String,
    pub resp_headers: HeaderMap,
    pub resp_trailers: HeaderMap,
    pub status: u16,
    pub flags: Vec<&'static str>,
    pub details: &'static str,
    pub upstream_host: Option<SocketAddr>,
    /// Whether the upstream host is reached over TLS (for telemetry's peer principal).
    pub upstream_tls: bool,
    /// gRPC messages in the response (counted for telemetry on gRPC requests).
    pub resp_messages: u64,
    pub upstream_cluster: Option<String>,
    pub upstream_failure: Option<String>,
    pub route_name: String,
    pub attempts: u32,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub first_byte: Option<Duration>,
    pub last_rx: Option<Duration>,
}

impl RequestInfo {
    pub fn flags_text(&self) -> String {
        if self.flags.is_empty() {
            "-".into()
        } else {
            self.flags.join(",")
        }
    }
}

fn header_cmd(
    h: &HeaderMap,
    main: &str,
    alt: &Option<String>,
    max: &Option<usize>,
    pseudo: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let get = |n: &str| -> Option<String> {
        if n.starts_with(':') {
            return pseudo(n);
        }
        let vals: Vec<_> = h.get_all(n).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        if vals.is_empty() {
            None
        } else {
            Some(vals.join(","))
        }
    };
    let v = get(main).or_else(|| alt.as_deref().and_then(get))?;
    Some(match max {
        Some(m) if v.len() > *m => v.chars().take(*m).collect(),
        _ => v,
    })
}

impl FormatContext for RequestInfo {
    fn value(&self, c: &Command) -> Option<String> {
        let pseudo = |n: &str| match n {
            ":method" => Some(self.method.to_string()),
            ":path" => Some(self.path.clone()),
            ":authority" => Some(self.authority.clone()),
            ":scheme" => Some(self.conn.scheme().into()),
            _ => None,
        };
        let resp_pseudo = |n: &str| match n {
            ":status" => Some(self.status.to_string()),
            _ => None,
        };
        Some(match c {
            Command::StartTime(f) => format_time(self.start, f.as_deref()),
            Command::Req { main, alt, max_len } => return header_cmd(&self.req_headers, main, alt, max_len, &pseudo),
            Command::Resp { main, alt, max_len } => return header_cmd(&self.resp_headers, main, alt, max_len, &resp_pseudo),
            Command::Trailer { main, alt, max_len } => return header_cmd(&self.resp_trailers, main, alt, max_len, &|_| None),
            Command::ResponseCode => self.status.to_string(),
            Command::ResponseCodeDetails => self.details.to_string(),
            Command::ResponseFlags => self.flags_text(),
            Command::BytesReceived => self.bytes_received.to_string(),
            Command::BytesSent => self.bytes_sent.to_string(),
            Command::Duration => self.started.elapsed().as_millis().to_string(),
            Command::RequestDuration => return self.last_rx.map(|d| d.as_millis().to_string()),
            Command::ResponseDuration => return self.first_byte.map(|d| d.as_millis().to_string()),
            Command::Protocol => self.protocol.to_string(),
            Command::UpstreamHost => return self.upstream_host.map(|a| a.to_string()),
            Command::UpstreamCluster => return self.upstream_cluster.clone(),
            Command::UpstreamLocalAddress => return None,
            Command::UpstreamTransportFailureReason => return self.upstream_failure.clone(),
            Command::UpstreamRequestAttemptCount => self.attempts.to_string(),
            Command::RouteName => return Some(self.route_name.clone()).filter(|s| !s.is_empty()),
            other => return conn_value(&self.conn, other),
        })
    }
}

/// Connection-level commands, shared by HTTP and TCP contexts.
pub fn conn_value(conn: &ConnInfo, c: &Command) -> Option<String> {
    Some(match c {
        Command::DownstreamRemoteAddress => conn.remote.to_string(),
        Command::DownstreamRemoteAddressWithoutPort => conn.remote.ip().to_string(),
        Command::DownstreamLocalAddress => conn.local.to_string(),
        Command::DownstreamLocalAddressWithoutPort => conn.local.ip().to_string(),
        Command::DownstreamLocalPort => conn.local.port().to_string(),
        Command::RequestedServerName => return conn.sni.clone(),
        Command::Hostname => hostname(),
        Command::ConnectionId => conn.id.to_string(),
        _ => return None,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Civil date from days since the Unix epoch (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `%START_TIME%` in Envoy's default form, or a strftime subset (%Y %m %d %H %M %S %E3S %s).
pub fn format_time(t: SystemTime, fmt: Option<&str>) -> String {
    let dur = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = dur.as_secs() as i64;
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (h, mi, s) = (sod / 3600, (sod % 3600) / 60, sod % 60);
    let ms = dur.subsec_millis();
    let fmt = fmt.unwrap_or("%Y-%m-%dT%H:%M:%E3SZ");
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('Y') => out.push_str(&format!("{y:04}")),
            Some('m') => out.push_str(&format!("{mo:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('M') => out.push_str(&format!("{mi:02}")),
            Some('S') => out.push_str(&format!("{s:02}")),
            Some('s') => out.push_str(&secs.to_string()),
            Some('E') => {
                // %E3S: seconds with milliseconds.
                let digits: String = std::iter::from_fn(|| it.next_if(|c| c.is_ascii_digit())).collect();
                if it.next_if_eq(&'S').is_some() {
                    let n = digits.parse::<usize>().unwrap_or(3).min(9);
                    let frac = format!("{:09}", dur.subsec_nanos());
                    out.push_str(&format!("{s:02}.{}", &frac[..n]));
                } else {
                    out.push_str(&format!("{ms:03}"));
                }
            }
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Writes the request's access log lines when the response stream ends (or is reset).
pub struct LogOnDrop {
    pub info: RequestInfo,
    pub loggers: Arc<Vec<Arc<AccessLogger>>>,
    /// Boxed: only sampled requests have one, and every request's future carries the slot.
    pub report: Option<Box<SpanReport>>,
    /// Istio's metrics, counted when the response has been sent.
    pub istio: Option<(Arc<crate::istio_metrics::Mesh>, crate::istio_metrics::Reporter)>,
}

impl Drop for LogOnDrop {
    fn drop(&mut self) {
        if let Some((mesh, reporter)) = &self.istio {
            mesh.record_http(*reporter, &self.info, self.info.started.elapsed().as_secs_f64() * 1000.0);
        }
        for l in self.loggers.iter() {
            l.log(&self.info);
        }
        if let Some(r) = self.report.take() {
            r.finish(&self.info);
        }
    }
}

/// A sampled request's span, reported when the response has been sent.
pub struct SpanReport {
    pub span: crate::trace::Span,
    pub kind: crate::trace::SpanKind,
    pub reporter: crate::trace::Reporter,
    pub tracer: Arc<crate::trace::Tracer>,
}

impl SpanReport {
    fn finish(mut self, info: &RequestInfo) {
        let t = &mut self.span.tags;
        t.insert("http.status_code", info.status.to_string());
        t.insert("response_flags", info.flags_text());
        t.insert("request_size", info.bytes_received.to_string());
        t.insert("response_size", info.bytes_sent.to_string());
        if let Some(c) = &info.upstream_cluster {
            t.insert("upstream_cluster", c.clone());
            t.insert("upstream_cluster.name", c.clone());
        }
        if info.status >= 500 {
            t.insert("error", "true".into());
        }
        // Envoy's span endpoint is the node's address (`--local-address-ip-version`), not the
        // connection's.
        match &self.reporter {
            crate::trace::Reporter::Zipkin(r) => {
                let shared = self.span.shared;
                r.report(crate::trace::zipkin::encode(
                    &self.span,
                    self.kind,
                    shared,
                    &self.tracer.node_cluster,
                    crate::server::node_address(),
                ))
            }
            crate::trace::Reporter::Otlp(r) => {
                self.span.tags.insert("zone", self.tracer.node_zone.clone());
                r.report(crate::trace::otlp::encode(&self.span, self.kind))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_defaults_to_envoy_format() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(format_time(t, None), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_time(t, Some("%s")), "1700000000");
    }
}
