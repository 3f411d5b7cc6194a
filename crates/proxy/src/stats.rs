//! Counters and gauges under Envoy's stat names, and their text and Prometheus renderings.
//!
//! Each scope (cluster, listener, HTTP connection manager, TCP proxy) is a struct of atomics
//! created when config is applied, so the data path only does relaxed atomic adds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    #[inline]
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge that decrements when dropped, for "active" counts that must not leak on early return.
pub struct GaugeGuard(Arc<dyn AsGauge>);

pub trait AsGauge: Send + Sync {
    fn gauge(&self) -> &Gauge;
}

impl GaugeGuard {
    pub fn new(g: Arc<dyn AsGauge>) -> Self {
        g.gauge().inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.gauge().dec();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

macro_rules! stat_struct {
    ($name:ident { counters: [$($c:ident $(= $cn:literal)?),* $(,)?], gauges: [$($g:ident $(= $gn:literal)?),* $(,)?] }) => {
        #[derive(Debug, Default)]
        pub struct $name {
            $(pub $c: Counter,)*
            $(pub $g: Gauge,)*
        }
        impl $name {
            fn visit_fields(&self, f: &mut dyn FnMut(&str, i64, Kind)) {
                $(f(stat_struct!(@name $c $($cn)?), self.$c.get() as i64, Kind::Counter);)*
                $(f(stat_struct!(@name $g $($gn)?), self.$g.get(), Kind::Gauge);)*
            }
        }
    };
    (@name $f:ident $n:literal) => { $n };
    (@name $f:ident) => { stringify!($f) };
}

stat_struct!(ClusterStatsBase {
    counters: [
        upstream_rq_total,
        upstream_rq_completed,
        upstream_cx_total,
        upstream_cx_connect_fail,
        upstream_cx_connect_timeout,
        upstream_cx_overflow,
        upstream_cx_destroy,
        upstream_rq_pending_total,
        upstream_rq_pending_overflow,
        upstream_rq_timeout,
        upstream_rq_per_try_timeout,
        upstream_rq_retry,
        upstream_rq_retry_success,
        upstream_rq_retry_overflow,
        upstream_cx_rx_bytes_total,
        upstream_cx_tx_bytes_total,
        upstream_rq_rx_reset,
        upstream_rq_tx_reset,
        upstream_cx_http1_total,
        upstream_cx_http2_total,
        upstream_cx_idle_timeout,
        upstream_rq_maintenance_mode,
        upstream_cx_none_healthy,
        ejections_enforced_total = "outlier_detection.ejections_enforced_total",
        ejections_enforced_consecutive_5xx = "outlier_detection.ejections_enforced_consecutive_5xx",
        ejections_enforced_consecutive_gateway_failure = "outlier_detection.ejections_enforced_consecutive_gateway_failure",
        ejections_overflow = "outlier_detection.ejections_overflow",
        hc_attempt = "health_check.attempt",
        hc_success = "health_check.success",
        hc_failure = "health_check.failure",
        hc_network_failure = "health_check.network_failure",
        lb_healthy_panic,
        update_attempt,
        update_success,
        update_failure,
    ],
    gauges: [
        upstream_cx_active,
        upstream_rq_active,
        upstream_rq_pending_active,
        membership_healthy,
        membership_total,
        membership_degraded,
        ejections_active = "outlier_detection.ejections_active",
        hc_healthy = "health_check.healthy",
        cx_open = "circuit_breakers.default.cx_open",
        rq_pending_open = "circuit_breakers.default.rq_pending_open",
        rq_open = "circuit_breakers.default.rq_open",
        rq_retry_open = "circuit_breakers.default.rq_retry_open",
    ]
});

stat_struct!(ManagerStats {
    counters: [
        listener_added = "listener_manager.listener_added",
        listener_modified = "listener_manager.listener_modified",
        listener_removed = "listener_manager.listener_removed",
        lds_update_success = "listener_manager.lds.update_success",
        lds_update_rejected = "listener_manager.lds.update_rejected",
        cluster_added = "cluster_manager.cluster_added",
        cluster_modified = "cluster_manager.cluster_modified",
        cluster_removed = "cluster_manager.cluster_removed",
        cds_update_success = "cluster_manager.cds.update_success",
        cds_update_rejected = "cluster_manager.cds.update_rejected",
    ],
    gauges: [
        total_listeners_active = "listener_manager.total_listeners_active",
        active_clusters = "cluster_manager.active_clusters",
        connected_state = "control_plane.connected_state",
    ]
});

stat_struct!(ZipkinStats {
    counters: [
        spans_sent = "tracing.zipkin.spans_sent",
        reports_sent = "tracing.zipkin.reports_sent",
        reports_dropped = "tracing.zipkin.reports_dropped",
        reports_failed = "tracing.zipkin.reports_failed",
        reports_skipped_no_cluster = "tracing.zipkin.reports_skipped_no_cluster",
        timer_flushed = "tracing.zipkin.timer_flushed",
    ],
    gauges: []
});

/// Per-status-code counters (`upstream_rq_200`) plus class counters (`upstream_rq_2xx`).
#[derive(Debug)]
pub struct CodeCounters {
    codes: Box<[AtomicU64]>,
}

impl Default for CodeCounters {
    fn default() -> Self {
        CodeCounters { codes: (0..500).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl CodeCounters {
    #[inline]
    pub fn inc(&self, code: u16) {
        if let Some(c) = code.checked_sub(100).and_then(|i| self.codes.get(usize::from(i))) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn visit(&self, stem: &str, f: &mut dyn FnMut(&str, i64, Kind)) {
        let mut classes = [0u64; 5];
        for (i, c) in self.codes.iter().enumerate() {
            let v = c.load(Ordering::Relaxed);
            classes[i / 100] += v;
            if v > 0 {
                f(&format!("{stem}_{}", i + 100), v as i64, Kind::Counter);
            }
        }
        for (i, v) in classes.iter().enumerate() {
            f(&format!("{stem}_{}xx", i + 1), *v as i64, Kind::Counter);
        }
    }
}

#[derive(Debug, Default)]
pub struct ClusterStats {
    pub base: ClusterStatsBase,
    pub codes: CodeCounters,
    pub ssl: SslStats,
}

impl std::ops::Deref for ClusterStats {
    type Target = ClusterStatsBase;
    fn deref(&self) -> &ClusterStatsBase {
        &self.base
    }
}

stat_struct!(HttpStatsBase {
    counters: [
        downstream_rq_total,
        downstream_rq_http1_total,
        downstream_rq_http2_total,
        downstream_rq_completed,
        downstream_cx_total,
        downstream_cx_http1_total,
        downstream_cx_http2_total,
        downstream_cx_destroy,
        downstream_rq_timeout,
        downstream_rq_idle_timeout,
        downstream_cx_idle_timeout,
        downstream_cx_upgrades_total,
        downstream_rq_rx_reset,
        downstream_rq_tx_reset,
        downstream_cx_rx_bytes_total,
        downstream_cx_tx_bytes_total,
        rq_total,
        rq_direct_response,
        rq_redirect,
        no_route,
        no_cluster,
        downstream_rq_ws_on_non_ws_route,
        aborts_injected = "fault.aborts_injected",
        delays_injected = "fault.delays_injected",
        faults_overflow = "fault.faults_overflow",
    ],
    gauges: [
        downstream_rq_active,
        downstream_cx_active,
        downstream_cx_http1_active,
        downstream_cx_http2_active,
        downstream_cx_upgrades_active,
        active_faults = "fault.active_faults",
    ]
});

#[derive(Debug, Default)]
pub struct HttpStats {
    pub base: HttpStatsBase,
    pub codes: CodeCounters,
}

impl std::ops::Deref for HttpStats {
    type Target = HttpStatsBase;
    fn deref(&self) -> &HttpStatsBase {
        &self.base
    }
}

// TLS handshakes of one listener or cluster, under Envoy's `ssl.` names.
stat_struct!(SslStats {
    counters: [
        handshake = "ssl.handshake",
        connection_error = "ssl.connection_error",
        fail_verify_error = "ssl.fail_verify_error",
        fail_verify_san = "ssl.fail_verify_san",
        fail_verify_no_cert = "ssl.fail_verify_no_cert",
        tls12 = "ssl.versions.TLSv1.2",
        tls13 = "ssl.versions.TLSv1.3",
    ],
    gauges: []
});

stat_struct!(ListenerStatsBase {
    counters: [
        downstream_cx_total,
        downstream_cx_destroy,
        no_filter_chain_match,
        downstream_pre_cx_timeout,
        downstream_listener_filter_error,
        downstream_cx_overflow,
    ],
    gauges: [downstream_cx_active, downstream_pre_cx_active]
});

stat_struct!(TcpStats {
    counters: [
        downstream_cx_total,
        downstream_cx_no_route,
        downstream_cx_tx_bytes_total,
        downstream_cx_rx_bytes_total,
        idle_timeout,
        upstream_flush_total,
    ],
    gauges: [downstream_cx_tx_bytes_buffered, downstream_cx_rx_bytes_buffered, upstream_flush_active]
});

#[derive(Debug, Default)]
pub struct ListenerStats {
    pub base: ListenerStatsBase,
    pub ssl: SslStats,
}

impl std::ops::Deref for ListenerStats {
    type Target = ListenerStatsBase;
    fn deref(&self) -> &ListenerStatsBase {
        &self.base
    }
}

impl AsGauge for ListenerStats {
    fn gauge(&self) -> &Gauge {
        &self.downstream_cx_active
    }
}

/// All stat scopes of one proxy process.
pub struct Store {
    started: Instant,
    concurrency: usize,
    draining: std::sync::atomic::AtomicBool,
    clusters: Mutex<BTreeMap<String, Arc<ClusterStats>>>,
    listeners: Mutex<BTreeMap<String, Arc<ListenerStats>>>,
    http: Mutex<BTreeMap<String, Arc<HttpStats>>>,
    tcp: Mutex<BTreeMap<String, Arc<TcpStats>>>,
    /// Listener and cluster manager and control-plane stats, with Envoy's names.
    pub manager: ManagerStats,
    /// Present once a Zipkin tracer is configured, as in Envoy.
    zipkin: Mutex<Option<Arc<ZipkinStats>>>,
}

impl Store {
    pub fn new(concurrency: usize) -> Arc<Self> {
        Arc::new(Store {
            started: Instant::now(),
            concurrency,
            draining: Default::default(),
            clusters: Default::default(),
            listeners: Default::default(),
            http: Default::default(),
            tcp: Default::default(),
            manager: Default::default(),
            zipkin: Default::default(),
        })
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn cluster(&self, name: &str) -> Arc<ClusterStats> {
        self.clusters.lock().entry(name.to_string()).or_default().clone()
    }
    pub fn listener(&self, prefix: &str) -> Arc<ListenerStats> {
        self.listeners.lock().entry(prefix.to_string()).or_default().clone()
    }
    pub fn http(&self, prefix: &str) -> Arc<HttpStats> {
        self.http.lock().entry(prefix.to_string()).or_default().clone()
    }
    pub fn zipkin(&self) -> Arc<ZipkinStats> {
        self.zipkin.lock().get_or_insert_with(Default::default).clone()
    }
    pub fn tcp(&self, prefix: &str) -> Arc<TcpStats> {
        self.tcp.lock().entry(prefix.to_string()).or_default().clone()
    }

    /// Every stat as (full name, value, kind), sorted by name.
    pub fn snapshot(&self) -> Vec<(String, i64, Kind)> {
        let mut out = Vec::new();
        for (name, s) in self.clusters.lock().iter() {
            let p = format!("cluster.{name}.");
            s.base.visit_fields(&mut |n, v, k| out.push((format!("{p}{n}"), v, k)));
            s.codes.visit("upstream_rq", &mut |n, v, k| out.push((format!("{p}{n}"), v, k)));
            s.ssl.visit_fields(&mut |n, v, k| out.push((format!("{p}{n}"), v, k)));
        }
        for (name, s) in self.listeners.lock().iter() {
            let p = format!("listener.{name}.");
            s.base.visit_fields(&mut |n, v, k| out.push((format!("{p}{n}"), v, k)));
            s.ssl.visit_fields(&mut |n, v, k| out.push((format!("{p}{n}"), v, k)));
        }
        for (name, s) in self.http.lock().iter() {
            let p = format!("http.{name}.");
            s.base.visit_fields(&mut |n, v, k| out.push((format!("{p}{n}"), v, k)));
            s.codes.visit("downstream_rq", &mut |n, v, k| out.push((format!("{p}{n}"), v, k)));
        }
        for (name, s) in self.tcp.lock().iter() {
            let p = format!("tcp.{name}.");
            s.visit_fields(&mut |n, v, k| out.push((format!("{p}{n}"), v, k)));
        }
        self.manager.visit_fields(&mut |n, v, k| out.push((n.to_string(), v, k)));
        if let Some(z) = self.zipkin.lock().as_ref() {
            z.visit_fields(&mut |n, v, k| out.push((n.to_string(), v, k)));
        }
        let state = if self.draining.load(Ordering::Relaxed) { 1 } else { 0 };
        out.push(("server.live".into(), 1 - state, Kind::Gauge));
        out.push(("server.state".into(), state, Kind::Gauge));
        out.push(("server.uptime".into(), self.started.elapsed().as_secs() as i64, Kind::Gauge));
        out.push(("server.concurrency".into(), self.concurrency as i64, Kind::Gauge));
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// `/stats` text: `name: value` per line.
    pub fn render_text(&self, filter: Option<&regex::Regex>, used_only: bool) -> String {
        let mut s = String::new();
        for (n, v, k) in self.snapshot() {
            if filter.is_some_and(|f| !f.is_match(&n)) || (used_only && k == Kind::Counter && v == 0) {
                continue;
            }
            let _ = writeln!(s, "{n}: {v}");
        }
        s
    }

    /// `/stats/prometheus`, with Envoy's tag extraction for the scopes weft has.
    pub fn render_prometheus(&self) -> String {
        let mut families: BTreeMap<String, (Kind, Vec<(String, i64)>)> = BTreeMap::new();
        for (n, v, k) in self.snapshot() {
            let (metric, labels) = prometheus_name(&n);
            let fam = families.entry(metric).or_insert_with(|| (k, Vec::new()));
            fam.1.push((labels, v));
        }
        let mut s = String::new();
        for (name, (kind, samples)) in families {
            let t = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(s, "# TYPE {name} {t}");
            for (labels, v) in samples {
                if labels.is_empty() {
                    let _ = writeln!(s, "{name} {v}");
                } else {
                    let _ = writeln!(s, "{name}{{{labels}}} {v}");
                }
            }
        }
        s
    }
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == ':' { c } else { '_' }).collect()
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Splits a code-class or code suffix (`upstream_rq_2xx`, `downstream_rq_503`) into a tag.
fn code_tag(stat: &str) -> (String, Option<String>) {
    if let Some((stem, last)) = stat.rsplit_once('_') {
        if last.len() == 3 && last.ends_with("xx") && last.as_bytes()[0].is_ascii_digit() {
            return (format!("{stem}_xx"), Some(format!("envoy_response_code_class=\"{}\"", &last[..1])));
        }
        if last.len() == 3 && last.bytes().all(|b| b.is_ascii_digit()) && (stem.ends_with("_rq")) {
            return (stem.to_string(), Some(format!("envoy_response_code=\"{last}\"")));
        }
    }
    (stat.to_string(), None)
}

/// Envoy's default tag extraction for the scopes weft emits.
pub fn prometheus_name(full: &str) -> (String, String) {
    let scoped = |scope: &str, tag: &str| -> Option<(String, String)> {
        let rest = full.strip_prefix(&format!("{scope}."))?;
        // The scope name may contain dots (cluster names often do): the stat is the known tail.
        let (name, stat) = split_scope(rest)?;
        let (stat, code) = code_tag(stat);
        let mut labels = Vec::new();
        if let Some(c) = code {
            labels.push(c);
        }
        labels.push(format!("{tag}=\"{}\"", escape_label(name)));
        Some((format!("envoy_{scope}_{}", sanitize(&stat)), labels.join(",")))
    };
    scoped("cluster", "envoy_cluster_name")
        .or_else(|| scoped("http", "envoy_http_conn_manager_prefix"))
        .or_else(|| scoped("listener", "envoy_listener_address"))
        .or_else(|| scoped("tcp", "envoy_tcp_prefix"))
        .unwrap_or_else(|| (format!("envoy_{}", sanitize(full)), String::new()))
}

/// Known stat tails that themselves contain dots.
const DOTTED_TAILS: &[&str] = &["outlier_detection.", "health_check.", "circuit_breakers.default.", "fault.", "ssl."];

fn split_scope(rest: &str) -> Option<(&str, &str)> {
    for t in DOTTED_TAILS {
        if let Some(i) = rest.find(&format!(".{t}")) {
            return Some((&rest[..i], &rest[i + 1..]));
        }
    }
    rest.rsplit_once('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_names_follow_envoy_tag_extraction() {
        assert_eq!(
            prometheus_name("cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_2xx"),
            (
                "envoy_cluster_upstream_rq_xx".into(),
                "envoy_response_code_class=\"2\",envoy_cluster_name=\"outbound|9080||reviews.default.svc.cluster.local\"".into()
            )
        );
        assert_eq!(
            prometheus_name("cluster.a.upstream_rq_503"),
            ("envoy_cluster_upstream_rq".into(), "envoy_response_code=\"503\",envoy_cluster_name=\"a\"".into())
        );
        assert_eq!(
            prometheus_name("cluster.a.outlier_detection.ejections_active"),
            ("envoy_cluster_outlier_detection_ejections_active".into(), "envoy_cluster_name=\"a\"".into())
        );
        assert_eq!(
            prometheus_name("listener.127.0.0.1_10000.downstream_cx_total"),
            ("envoy_listener_downstream_cx_total".into(), "envoy_listener_address=\"127.0.0.1_10000\"".into())
        );
        assert_eq!(prometheus_name("server.live"), ("envoy_server_live".into(), String::new()));
    }

    #[test]
    fn code_counters_roll_up_into_classes() {
        let s = Store::new(1);
        let c = s.cluster("c");
        c.codes.inc(200);
        c.codes.inc(503);
        c.codes.inc(503);
        let text = s.render_text(None, false);
        assert!(text.contains("cluster.c.upstream_rq_2xx: 1\n"), "{text}");
        assert!(text.contains("cluster.c.upstream_rq_503: 2\n"), "{text}");
        assert!(text.contains("cluster.c.upstream_rq_5xx: 2\n"), "{text}");
    }
}
