//! DestinationRule: its host, subsets and traffic policies (load balancing, connection
//! pools, outlier detection, client TLS, retry budget).

use std::collections::BTreeSet;
use std::time::Duration;

use super::{at_least_1ms, duration, export_to, host, labels, percent, port_number, selector, Check};
use crate::networking as net;

pub(super) fn destination_rule(dr: &net::DestinationRule, c: &mut Check) {
    if dr.host.is_empty() {
        c.error("spec.host", "is required");
    } else {
        host(&dr.host, "spec.host", c);
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy(tp, "spec.trafficPolicy", c);
    }
    let mut names = BTreeSet::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        if s.name.is_empty() {
            c.error(format!("spec.subsets[{i}].name"), "is required");
        } else if !names.insert(s.name.as_str()) {
            c.error(format!("spec.subsets[{i}].name"), format!("duplicate subset {:?}", s.name));
        }
        labels(&s.labels, &format!("spec.subsets[{i}].labels"), c);
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(tp, &format!("spec.subsets[{i}].trafficPolicy"), c);
        }
    }
    export_to(&dr.export_to, "spec.exportTo", c);
    if let Some(sel) = &dr.workload_selector {
        selector(&sel.match_labels, "spec.workloadSelector", "matchLabels", c);
        c.unsupported(
            "spec.workloadSelector",
            "weft applies a DestinationRule to every client of its host; ignoring the selector would give its TLS settings and subsets to the wrong proxies",
        );
    }
}

fn traffic_policy(tp: &net::TrafficPolicy, path: &str, c: &mut Check) {
    let empty = tp.load_balancer.is_none()
        && tp.connection_pool.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.retry_budget.is_none();
    if empty {
        c.error(path, "a traffic policy needs at least one field");
    }
    policy(tp.load_balancer.as_ref(), tp.connection_pool.as_ref(), tp.outlier_detection.as_ref(), tp.tls.as_ref(), path, c);
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let p = format!("{path}.portLevelSettings[{i}]");
        match pl.port {
            Some(port) => port_number(port.number, &format!("{p}.port.number"), c),
            None => c.error(format!("{p}.port"), "is required"),
        }
        if pl.load_balancer.is_none() && pl.connection_pool.is_none() && pl.outlier_detection.is_none() && pl.tls.is_none() {
            c.error(p.as_str(), "needs at least one of loadBalancer, connectionPool, outlierDetection or tls");
        }
        policy(pl.load_balancer.as_ref(), pl.connection_pool.as_ref(), pl.outlier_detection.as_ref(), pl.tls.as_ref(), &p, c);
    }
    if let Some(rb) = &tp.retry_budget {
        if let Some(pct) = rb.percent {
            percent(pct, &format!("{path}.retryBudget.percent"), c);
        }
        c.not_acted_on(format!("{path}.retryBudget"), "it only caps how many retries run at once");
    }
}

/// The parts a traffic policy and each of its port-level settings share.
fn policy(
    lb: Option<&net::LoadBalancerSettings>,
    pool: Option<&net::ConnectionPoolSettings>,
    od: Option<&net::OutlierDetection>,
    tls: Option<&net::ClientTlsSettings>,
    path: &str,
    c: &mut Check,
) {
    if let Some(lb) = lb {
        load_balancer(lb, &format!("{path}.loadBalancer"), c);
    }
    if let Some(pool) = pool {
        connection_pool(pool, &format!("{path}.connectionPool"), true, c);
    }
    if let Some(od) = od {
        outlier_detection(od, &format!("{path}.outlierDetection"), c);
    }
    if let Some(tls) = tls {
        let p = format!("{path}.tls");
        if tls.credential_name.is_some() {
            c.unsupported(
                format!("{p}.credentialName"),
                "weft would send no client certificate and check the server against the system roots instead of the secret's CA",
            );
        } else if tls.mode == net::TlsMode::Mutual && (tls.client_certificate.is_none() || tls.private_key.is_none()) {
            c.error(p, "MUTUAL needs clientCertificate and privateKey");
        }
    }
}

fn load_balancer(lb: &net::LoadBalancerSettings, path: &str, c: &mut Check) {
    if [lb.simple.is_some(), lb.consistent_hash.is_some(), lb.backend_utilization.is_some()].iter().filter(|x| **x).count() > 1 {
        c.error(path, "simple, consistentHash and backendUtilization are mutually exclusive");
    }
    if let Some(h) = &lb.consistent_hash {
        let keys =
            [h.http_header_name.is_some(), h.http_cookie.is_some(), h.use_source_ip == Some(true), h.http_query_parameter_name.is_some()]
                .iter()
                .filter(|x| **x)
                .count();
        if keys != 1 {
            c.error(
                format!("{path}.consistentHash"),
                "exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is required",
            );
        }
        if h.ring_hash.is_some() && h.maglev.is_some() {
            c.error(format!("{path}.consistentHash"), "ringHash and maglev are mutually exclusive");
        }
        if h.minimum_ring_size.is_some_and(|n| n != 0) {
            c.warn(format!("{path}.consistentHash.minimumRingSize"), "is deprecated; use ringHash.minimumRingSize");
            if h.ring_hash.is_some() || h.maglev.is_some() {
                c.error(format!("{path}.consistentHash.minimumRingSize"), "cannot be set with ringHash or maglev");
            }
        }
        if let Some(m) = &h.maglev {
            maglev_table_size(m.table_size.unwrap_or(0), &format!("{path}.consistentHash.maglev.tableSize"), c);
        }
    }
    if lb.backend_utilization.is_some() {
        c.not_acted_on(format!("{path}.backendUtilization"), "requests are balanced by the default policy over the same endpoints");
    }
    // Slow start only ramps new endpoints up gradually; without it they get their full share
    // at once.
    if lb.warmup_duration_secs.is_some() && lb.warmup.is_some() {
        c.error(path, "only one of warmupDurationSecs and warmup can be set");
    }
    if let Some(d) = lb.warmup_duration_secs {
        at_least_1ms(d, &format!("{path}.warmupDurationSecs"), c);
        c.not_acted_on(format!("{path}.warmupDurationSecs"), "new endpoints get their full share of requests at once");
    }
    if let Some(w) = &lb.warmup {
        let p = format!("{path}.warmup");
        match w.duration {
            Some(d) => duration(d, &format!("{p}.duration"), c),
            None => c.error(format!("{p}.duration"), "is required"),
        }
        if let Some(m) = w.minimum_percent {
            percent(m, &format!("{p}.minimumPercent"), c);
        }
        if w.aggression.is_some_and(|a| a <= 0.0) {
            c.error(format!("{p}.aggression"), "must be greater than 0");
        }
        c.not_acted_on(p, "new endpoints get their full share of requests at once");
    }
}

/// `connectionPool`. `each_field` warns for each knob weft lacks; a caller that acts on none
/// of the pool (a Sidecar's) warns once for all of it instead.
pub(super) fn connection_pool(pool: &net::ConnectionPoolSettings, path: &str, each_field: bool, c: &mut Check) {
    if pool.tcp.is_none() && pool.http.is_none() {
        c.error(path, "a connection pool needs tcp or http");
    }
    let ignored = |c: &mut Check, p: String, why: &str| {
        if each_field {
            c.not_acted_on(p, why);
        }
    };
    if let Some(h) = &pool.http {
        let p = format!("{path}.http");
        if let Some(d) = h.idle_timeout {
            duration(d, &format!("{p}.idleTimeout"), c);
        }
        if h.h2_upgrade_policy == Some(net::H2UpgradePolicy::Upgrade) && h.use_client_protocol == Some(true) {
            c.error(format!("{p}.useClientProtocol"), "must not be true when h2UpgradePolicy is UPGRADE");
        }
        if let Some(k) = &h.http2_keep_alive {
            for (f, d) in [("interval", k.interval), ("timeout", k.timeout)] {
                match d {
                    Some(d) => duration(d, &format!("{p}.http2KeepAlive.{f}"), c),
                    None => c.error(format!("{p}.http2KeepAlive.{f}"), "is required"),
                }
            }
            ignored(c, format!("{p}.http2KeepAlive"), "idle HTTP/2 connections are not pinged; a dead one is found when it is next used");
        }
        if h.max_concurrent_streams.is_some() {
            ignored(c, format!("{p}.maxConcurrentStreams"), "streams per upstream connection are not capped");
        }
        if h.use_client_protocol.is_some() {
            ignored(c, format!("{p}.useClientProtocol"), "the upstream protocol follows the port's protocol");
        }
    }
    if let Some(t) = &pool.tcp {
        let p = format!("{path}.tcp");
        if let Some(d) = t.connect_timeout {
            duration(d, &format!("{p}.connectTimeout"), c);
        }
        // Istio takes an idle timeout under 1ms (`0s`) as "none", and checks only the others.
        if let Some(d) = t.idle_timeout.filter(|d| d.0 >= Duration::from_millis(1)) {
            duration(d, &format!("{p}.idleTimeout"), c);
        }
        if let Some(k) = &t.tcp_keepalive {
            for (f, d) in [("time", k.time), ("interval", k.interval)] {
                if let Some(d) = d {
                    duration(d, &format!("{p}.tcpKeepalive.{f}"), c);
                }
            }
            ignored(c, format!("{p}.tcpKeepalive"), "upstream sockets keep the system's keep-alive settings");
        }
        if let Some(d) = t.max_connection_duration {
            duration(d, &format!("{p}.maxConnectionDuration"), c);
            ignored(c, format!("{p}.maxConnectionDuration"), "upstream connections are not recycled by age");
        }
    }
}

fn outlier_detection(od: &net::OutlierDetection, path: &str, c: &mut Check) {
    for (f, d) in [("baseEjectionTime", od.base_ejection_time), ("interval", od.interval)] {
        if let Some(d) = d {
            duration(d, &format!("{path}.{f}"), c);
        }
    }
    if od.consecutive_errors.is_some_and(|n| n != 0) {
        c.warn(format!("{path}.consecutiveErrors"), "is deprecated; use consecutive5xxErrors or consecutiveGatewayErrors");
    }
    if od.consecutive_local_origin_failures.is_some_and(|n| n > 0) && od.split_external_local_origin_errors != Some(true) {
        c.error(format!("{path}.consecutiveLocalOriginFailures"), "needs splitExternalLocalOriginErrors: true");
    }
    for (f, v) in [("maxEjectionPercent", od.max_ejection_percent), ("minHealthPercent", od.min_health_percent)] {
        if let Some(v) = v {
            percent(f64::from(v), &format!("{path}.{f}"), c);
        }
    }
    // Which failures count towards ejecting an endpoint: tuning of the same ejection.
    if od.split_external_local_origin_errors.is_some() {
        c.not_acted_on(format!("{path}.splitExternalLocalOriginErrors"), "local and upstream failures are counted together");
    }
    if od.consecutive_local_origin_failures.is_some() {
        c.not_acted_on(format!("{path}.consecutiveLocalOriginFailures"), "local and upstream failures are counted together");
    }
    for (i, code) in od.outlier_detection_http_error_codes.iter().enumerate() {
        if !(100..=599).contains(code) {
            c.error(format!("{path}.outlierDetectionHttpErrorCodes[{i}]"), format!("{code} is not an HTTP status (100-599)"));
        }
    }
    if !od.outlier_detection_http_error_codes.is_empty() {
        c.not_acted_on(format!("{path}.outlierDetectionHttpErrorCodes"), "5xx responses count as errors");
    }
}

/// Istio's rules for a Maglev table: set, under 5000011, and prime (Envoy's `isPrime`, which
/// also counts 1 as prime). Above the limit the size is refused already, so primality is not
/// tried on numbers that would take long to factor.
fn maglev_table_size(n: u64, path: &str, c: &mut Check) {
    const LIMIT: u64 = 5_000_011;
    if n == 0 {
        c.error(path, "is required for maglev");
    } else if n >= LIMIT {
        c.error(path, format!("{n} must be less than {LIMIT}"));
    } else if !prime(n) {
        c.error(path, format!("{n} is not a prime number (Maglev needs a prime table size, such as 65537)"));
    }
}

fn prime(n: u64) -> bool {
    if n < 4 {
        return n != 0;
    }
    !n.is_multiple_of(2) && (3..).step_by(2).take_while(|f| f * f <= n).all(|f| !n.is_multiple_of(f))
}
