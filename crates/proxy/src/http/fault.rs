//! The fault filter: injected delays and aborts, by percentage or by request header.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Response, StatusCode};

use super::info::RequestInfo;
use super::routing::{header_matches, RequestView};
use super::{local_reply, Hcm};
use crate::body::Body;
use crate::config::listener::FaultConfig;
use crate::config::route::{Route, VirtualHost};

fn header_u64(parts: &Parts, name: &str) -> Option<u64> {
    parts.headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Rolls a percentage given in parts per million.
fn roll(per_million: u32) -> bool {
    per_million >= 1_000_000 || rand::random::<u32>() % 1_000_000 < per_million
}

/// A header-supplied percentage (0-100) caps the configured one, as Envoy does.
fn effective(parts: &Parts, header: &str, configured: u32) -> u32 {
    match header_u64(parts, header) {
        Some(p) => ((p.min(100) as u32) * 10_000).min(configured),
        None => configured,
    }
}

fn applies(f: &FaultConfig, parts: &Parts, cluster: Option<&str>) -> bool {
    if let Some(c) = &f.upstream_cluster {
        if cluster != Some(c.as_str()) {
            return false;
        }
    }
    if f.headers.is_empty() {
        return true;
    }
    let host = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let path = parts.uri.path();
    let view = RequestView { parts, host, path, query: parts.uri.query(), scheme: "http" };
    f.headers.iter().all(|h| header_matches(h, &view))
}

struct ActiveFault(Arc<Hcm>);

impl Drop for ActiveFault {
    fn drop(&mut self) {
        self.0.stats.active_faults.dec();
    }
}

/// Runs every configured fault filter in order; returns the abort response if one fires.
/// A route's or virtual host's `typed_per_filter_config` replaces the filter's own config.
pub async fn apply(
    hcm: &Arc<Hcm>,
    parts: &Parts,
    cluster: Option<&str>,
    route: &Route,
    vh: &VirtualHost,
    info: &mut RequestInfo,
    grpc: bool,
) -> Option<Response<Body>> {
    for (name, own) in &hcm.cfg.faults {
        let f: &FaultConfig = route.faults.get(name).or_else(|| vh.faults.get(name)).unwrap_or(own);
        if !applies(f, parts, cluster) {
            continue;
        }
        let delay = f.delay.as_ref().and_then(|d| {
            let dur = match d.fixed {
                Some(fixed) => Some(fixed),
                None => header_u64(parts, "x-envoy-fault-delay-request").map(Duration::from_millis),
            }?;
            roll(effective(parts, "x-envoy-fault-delay-request-percentage", d.per_million)).then_some(dur)
        });
        let abort = f.abort.as_ref().and_then(|a| {
            let status = match a.status {
                Some(s) => Some(s),
                None if a.grpc_status.is_some() => Some(StatusCode::OK),
                None => header_u64(parts, "x-envoy-fault-abort-request")
                    .and_then(|s| StatusCode::from_u16(s as u16).ok())
                    .filter(|s| (200..600).contains(&s.as_u16())),
            }?;
            roll(effective(parts, "x-envoy-fault-abort-request-percentage", a.per_million)).then_some((status, a.grpc_status))
        });
        if delay.is_none() && abort.is_none() {
            continue;
        }
        if let Some(max) = f.max_active_faults {
            if hcm.stats.active_faults.get() >= i64::from(max) {
                hcm.stats.faults_overflow.inc();
                continue;
            }
        }
        hcm.stats.active_faults.inc();
        let _active = ActiveFault(hcm.clone());
        if let Some(d) = delay {
            hcm.stats.delays_injected.inc();
            info.flags.push("DI");
            tokio::time::sleep(d).await;
        }
        if let Some((status, grpc_status)) = abort {
            hcm.stats.aborts_injected.inc();
            info.flags.push("FI");
            info.details = "fault_filter_abort";
            if let Some(gs) = grpc_status {
                let mut r = local_reply::build(StatusCode::SERVICE_UNAVAILABLE, "fault filter abort", true);
                r.headers_mut().insert("grpc-status", http::HeaderValue::from(gs));
                return Some(r);
            }
            return Some(local_reply::build(status, Bytes::from_static(b"fault filter abort"), grpc));
        }
    }
    None
}
