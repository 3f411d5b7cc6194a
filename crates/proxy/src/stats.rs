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

pub mod tags;

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
    /// `/reset_counters`.
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
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
            /// Zeroes every counter; gauges keep their values.
            #[allow(dead_code, reason = "not every scope is reset through its own struct")]
            fn reset_counters(&self) {
                $(self.$c.reset();)*
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
        upstream_cx_protocol_error,
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
        listener_stopped = "listener_manager.listener_stopped",
        lds_update_success = "listener_manager.lds.update_success",
        lds_update_rejected = "listener_manager.lds.update_rejected",
        cluster_added = "cluster_manager.cluster_added",
        cluster_modified = "cluster_manager.cluster_modified",
        cluster_removed = "cluster_manager.cluster_removed",
        cds_update_success = "cluster_manager.cds.update_success",
        cds_update_rejected = "cluster_manager.cds.update_rejected",
        on_demand_requested = "cluster_manager.on_demand.requested",
        on_demand_failed = "cluster_manager.on_demand.failed",
        vhds_requested = "vhds.on_demand.requested",
        vhds_failed = "vhds.on_demand.failed",
        vhds_update_success = "vhds.update_success",
        vhds_update_rejected = "vhds.update_rejected",
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

stat_struct!(OtelStats {
    counters: [
        spans_sent = "tracing.opentelemetry.spans_sent",
        timer_flushed = "tracing.opentelemetry.timer_flushed",
        reports_sent = "tracing.opentelemetry.http_reports_sent",
        reports_dropped = "tracing.opentelemetry.http_reports_dropped",
        reports_failed = "tracing.opentelemetry.http_reports_failed",
    ],
    gauges: []
});

// The HTTP/1 codec's own counters (`http1.`, shared by every connection manager), which Envoy
// creates with the first connection of that codec.
stat_struct!(Http1CodecStats { counters: [dropped_headers_with_underscores, requests_rejected_with_underscores_in_headers,], gauges: [] });

// And the HTTP/2 codec's (`http2.`).
stat_struct!(Http2CodecStats {
    counters: [
        dropped_headers_with_underscores,
        requests_rejected_with_underscores_in_headers,
        inbound_empty_frames_flood,
        inbound_priority_frames_flood,
        inbound_window_update_frames_flood,
        outbound_control_flood,
    ],
    gauges: []
});

/// Per-status-code counters (`upstream_rq_200`) plus class counters (`upstream_rq_2xx`).
#[derive(Debug)]
pub struct CodeCounters {
    codes: Box<[AtomicU64]>,
    /// Codes counted at least once: they stay listed (at 0) after `/reset_counters`, as in Envoy.
    seen: Box<[std::sync::atomic::AtomicBool]>,
}

impl Default for CodeCounters {
    fn default() -> Self {
        CodeCounters {
            codes: (0..500).map(|_| AtomicU64::new(0)).collect(),
            seen: (0..500).map(|_| std::sync::atomic::AtomicBool::new(false)).collect(),
        }
    }
}

impl CodeCounters {
    #[inline]
    pub fn inc(&self, code: u16) {
        if let Some(i) = code.checked_sub(100).map(usize::from) {
            if let Some(c) = self.codes.get(i) {
                if c.fetch_add(1, Ordering::Relaxed) == 0 {
                    if let Some(s) = self.seen.get(i) {
                        s.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    fn reset(&self) {
        self.codes.iter().for_each(|c| c.store(0, Ordering::Relaxed));
    }

    /// A cluster's stats (`all_classes` false): per-code and class counters once a code of them
    /// was seen. An HTTP connection manager's (`all_classes` true): the five class counters
    /// always and no per-code ones, as in Envoy.
    fn visit(&self, stem: &str, all_classes: bool, f: &mut dyn FnMut(&str, i64, Kind)) {
        let mut classes = [0u64; 5];
        let mut class_seen = [all_classes; 5];
        for (i, c) in self.codes.iter().enumerate() {
            let v = c.load(Ordering::Relaxed);
            classes[i / 100] += v;
            if !all_classes && (v > 0 || self.seen[i].load(Ordering::Relaxed)) {
                class_seen[i / 100] = true;
                f(&format!("{stem}_{}", i + 100), v as i64, Kind::Counter);
            }
        }
        for (i, v) in classes.iter().enumerate() {
            if class_seen[i] {
                f(&format!("{stem}_{}xx", i + 1), *v as i64, Kind::Counter);
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct ClusterStats {
    pub base: ClusterStatsBase,
    pub codes: CodeCounters,
    pub ssl: SslStats,
    /// Some traffic stat has been non-zero (Envoy creates deferred traffic stats on first use).
    traffic_used: std::sync::atomic::AtomicBool,
}

impl ClusterStats {
    fn traffic_used(&self) -> bool {
        if self.traffic_used.load(Ordering::Relaxed) {
            return true;
        }
        let mut used = false;
        self.base.visit_fields(&mut |n, v, _| used |= n.starts_with("upstream_") && v != 0);
        if used {
            self.traffic_used.store(true, Ordering::Relaxed);
        }
        used
    }
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
        downstream_cx_max_duration_reached,
        downstream_cx_max_requests_reached,
        downstream_rq_header_timeout,
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
        downstream_global_cx_overflow,
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

/// Which stats exist (`stats_config.stats_matcher`), on full stat names.
#[derive(Debug, Default)]
pub enum StatsMatcher {
    #[default]
    All,
    RejectAll,
    /// Only stats some pattern matches.
    Inclusion(Vec<crate::config::route::StringMatchCase>),
    /// Every stat no pattern matches.
    Exclusion(Vec<crate::config::route::StringMatchCase>),
}

impl StatsMatcher {
    pub fn accepts(&self, name: &str) -> bool {
        let any = |ps: &[crate::config::route::StringMatchCase]| ps.iter().any(|p| crate::http::routing::string_matches(p, name));
        match self {
            StatsMatcher::All => true,
            StatsMatcher::RejectAll => false,
            StatsMatcher::Inclusion(ps) => any(ps),
            StatsMatcher::Exclusion(ps) => !any(ps),
        }
    }
}

/// The bootstrap's `stats_config`: how stats are tagged and which exist.
#[derive(Debug, Default)]
pub struct StatsSettings {
    pub tags: tags::TagProducer,
    pub matcher: StatsMatcher,
    /// `deferred_stat_options.enable_deferred_creation_stats`: a cluster's traffic stats
    /// (`upstream_*`) are listed only once the cluster has carried traffic.
    pub deferred: bool,
}

/// All stat scopes of one proxy process.
pub struct Store {
    settings: Arc<StatsSettings>,
    started: Instant,
    concurrency: usize,
    draining: std::sync::atomic::AtomicBool,
    failing_health_checks: std::sync::atomic::AtomicBool,
    clusters: Mutex<BTreeMap<String, Arc<ClusterStats>>>,
    listeners: Mutex<BTreeMap<String, Arc<ListenerStats>>>,
    http: Mutex<BTreeMap<String, Arc<HttpStats>>>,
    tcp: Mutex<BTreeMap<String, Arc<TcpStats>>>,
    /// Listener and cluster manager and control-plane stats, with Envoy's names.
    pub manager: ManagerStats,
    /// Present once a Zipkin tracer is configured, as in Envoy.
    zipkin: Mutex<Option<Arc<ZipkinStats>>>,
    /// Present once an OpenTelemetry tracer is configured.
    otel: Mutex<Option<Arc<OtelStats>>>,
    http1_codec: std::sync::OnceLock<Http1CodecStats>,
    http2_codec: std::sync::OnceLock<Http2CodecStats>,
    /// `server.static_unknown_fields`: bootstrap fields `--allow-unknown-static-fields` ignored.
    pub static_unknown_fields: Counter,
}

impl Store {
    /// A store with Envoy's default tags and every stat.
    pub fn new(concurrency: usize) -> Arc<Self> {
        Self::with_settings(concurrency, Arc::new(StatsSettings::default()))
    }

    pub fn with_settings(concurrency: usize, settings: Arc<StatsSettings>) -> Arc<Self> {
        Arc::new(Store {
            settings,
            started: Instant::now(),
            concurrency,
            draining: Default::default(),
            failing_health_checks: Default::default(),
            clusters: Default::default(),
            listeners: Default::default(),
            http: Default::default(),
            tcp: Default::default(),
            manager: Default::default(),
            zipkin: Default::default(),
            otel: Default::default(),
            http1_codec: Default::default(),
            http2_codec: Default::default(),
            static_unknown_fields: Default::default(),
        })
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// While the server fails health checks `server.live` is 0 (`server.state` stays LIVE), as
    /// in Envoy.
    pub fn set_failing_health_checks(&self, failing: bool) {
        self.failing_health_checks.store(failing, Ordering::Relaxed);
    }

    /// `/reset_counters`: every counter to zero; gauges keep their values.
    pub fn reset_counters(&self) {
        for s in self.clusters.lock().values() {
            s.base.reset_counters();
            s.codes.reset();
            s.ssl.reset_counters();
        }
        for s in self.listeners.lock().values() {
            s.base.reset_counters();
            s.ssl.reset_counters();
        }
        for s in self.http.lock().values() {
            s.base.reset_counters();
            s.codes.reset();
        }
        for s in self.tcp.lock().values() {
            s.reset_counters();
        }
        self.manager.reset_counters();
        if let Some(z) = self.zipkin.lock().as_ref() {
            z.reset_counters();
        }
        if let Some(o) = self.otel.lock().as_ref() {
            o.reset_counters();
        }
        if let Some(c) = self.http1_codec.get() {
            c.reset_counters();
        }
        if let Some(c) = self.http2_codec.get() {
            c.reset_counters();
        }
        self.static_unknown_fields.reset();
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
    /// The `http1.` codec counters, created on first use.
    pub fn http1_codec(&self) -> &Http1CodecStats {
        self.http1_codec.get_or_init(Default::default)
    }
    /// The `http2.` codec counters, created on first use.
    pub fn http2_codec(&self) -> &Http2CodecStats {
        self.http2_codec.get_or_init(Default::default)
    }
    pub fn zipkin(&self) -> Arc<ZipkinStats> {
        self.zipkin.lock().get_or_insert_with(Default::default).clone()
    }
    pub fn otel(&self) -> Arc<OtelStats> {
        self.otel.lock().get_or_insert_with(Default::default).clone()
    }
    pub fn tcp(&self, prefix: &str) -> Arc<TcpStats> {
        self.tcp.lock().entry(prefix.to_string()).or_default().clone()
    }

    /// Every stat as (full name, value, kind), sorted by name.
    pub fn snapshot(&self) -> Vec<(String, i64, Kind)> {
        let mut out = Vec::new();
        for (name, s) in self.clusters.lock().iter() {
            let p = format!("cluster.{name}.");
            let hide_traffic = self.settings.deferred && !s.traffic_used();
            s.base.visit_fields(&mut |n, v, k| {
                if !(hide_traffic && n.starts_with("upstream_")) {
                    out.push((format!("{p}{n}"), v, k))
                }
            });
            if !hide_traffic {
                s.codes.visit("upstream_rq", false, &mut |n, v, k| out.push((format!("{p}{n}"), v, k)));
            }
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
            s.codes.visit("downstream_rq", true, &mut |n, v, k| out.push((format!("{p}{n}"), v, k)));
        }
        for (name, s) in self.tcp.lock().iter() {
            let p = format!("tcp.{name}.");
            s.visit_fields(&mut |n, v, k| out.push((format!("{p}{n}"), v, k)));
        }
        self.manager.visit_fields(&mut |n, v, k| out.push((n.to_string(), v, k)));
        if let Some(z) = self.zipkin.lock().as_ref() {
            z.visit_fields(&mut |n, v, k| out.push((n.to_string(), v, k)));
        }
        if let Some(o) = self.otel.lock().as_ref() {
            o.visit_fields(&mut |n, v, k| out.push((n.to_string(), v, k)));
        }
        if let Some(c) = self.http1_codec.get() {
            c.visit_fields(&mut |n, v, k| out.push((format!("http1.{n}"), v, k)));
        }
        if let Some(c) = self.http2_codec.get() {
            c.visit_fields(&mut |n, v, k| out.push((format!("http2.{n}"), v, k)));
        }
        let state = if self.draining.load(Ordering::Relaxed) { 1 } else { 0 };
        let live = if state == 1 || self.failing_health_checks.load(Ordering::Relaxed) { 0 } else { 1 };
        out.push(("server.live".into(), live, Kind::Gauge));
        out.push(("server.state".into(), state, Kind::Gauge));
        out.push(("server.uptime".into(), self.started.elapsed().as_secs() as i64, Kind::Gauge));
        out.push(("server.concurrency".into(), self.concurrency as i64, Kind::Gauge));
        out.push(("server.static_unknown_fields".into(), self.static_unknown_fields.get() as i64, Kind::Counter));
        // Stats the matcher rejects do not exist, as in Envoy: in no output, at any value.
        out.retain(|(n, _, _)| self.settings.matcher.accepts(n));
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

    /// `/stats/prometheus`: metrics named by tag extraction (Envoy's default tags and the
    /// bootstrap's `stats_tags`), the tags as labels. `filter` and `used_only` as for `/stats`.
    pub fn render_prometheus(&self, filter: Option<&regex::Regex>, used_only: bool) -> String {
        let mut families: BTreeMap<String, (Kind, Vec<(String, i64)>)> = BTreeMap::new();
        for (n, v, k) in self.snapshot() {
            if filter.is_some_and(|f| !f.is_match(&n)) || (used_only && k == Kind::Counter && v == 0) {
                continue;
            }
            let (metric, labels) = self.prometheus_name(&n);
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
                // Envoy writes the braces for a metric without labels too.
                let _ = writeln!(s, "{name}{{{labels}}} {v}");
            }
        }
        s
    }
}

/// Envoy's Prometheus name rule: anything but `[a-zA-Z0-9_]` becomes `_`, and a leading digit
/// gets a `_` before it.
fn sanitize(s: &str) -> String {
    let out: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{out}")
    } else {
        out
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Store {
    /// A stat's Prometheus metric name and label text, by tag extraction.
    pub fn prometheus_name(&self, full: &str) -> (String, String) {
        let (extracted, tags) = self.settings.tags.produce(full);
        let labels: Vec<String> = tags.iter().map(|(k, v)| format!("{}=\"{}\"", sanitize(k), escape_label(v))).collect();
        (sanitize(&format!("envoy_{extracted}")), labels.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_names_follow_envoy_tag_extraction() {
        let s = Store::new(1);
        // Envoy's default cluster tag is the first dot-separated token of the name.
        assert_eq!(
            s.prometheus_name("cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_2xx"),
            (
                "envoy_cluster_default_svc_cluster_local_upstream_rq_xx".into(),
                "envoy_response_code_class=\"2\",envoy_cluster_name=\"outbound|9080||reviews\"".into()
            )
        );
        assert_eq!(
            s.prometheus_name("cluster.a.upstream_rq_503"),
            ("envoy_cluster_upstream_rq".into(), "envoy_response_code=\"503\",envoy_cluster_name=\"a\"".into())
        );
        assert_eq!(
            s.prometheus_name("cluster.a.outlier_detection.ejections_active"),
            ("envoy_cluster_outlier_detection_ejections_active".into(), "envoy_cluster_name=\"a\"".into())
        );
        assert_eq!(
            s.prometheus_name("listener.127.0.0.1_10000.downstream_cx_total"),
            ("envoy_listener_downstream_cx_total".into(), "envoy_listener_address=\"127.0.0.1_10000\"".into())
        );
        assert_eq!(s.prometheus_name("server.live"), ("envoy_server_live".into(), String::new()));
    }

    #[test]
    fn a_stats_matcher_hides_stats_everywhere() {
        let m = StatsMatcher::Exclusion(vec![crate::config::route::StringMatchCase {
            kind: crate::config::route::StringMatch::Prefix("cluster.".into()),
            ignore_case: false,
        }]);
        let s = Store::with_settings(1, Arc::new(StatsSettings { matcher: m, ..Default::default() }));
        s.cluster("c").upstream_rq_total.inc();
        s.http("h").downstream_rq_total.inc();
        let text = s.render_text(None, false);
        assert!(!text.contains("cluster.c."), "{text}");
        assert!(text.contains("http.h.downstream_rq_total: 1\n"), "{text}");
        assert!(!s.render_prometheus(None, false).contains("envoy_cluster_upstream"));
    }

    #[test]
    fn reset_counters_keeps_gauges() {
        let s = Store::new(1);
        let c = s.cluster("c");
        c.upstream_rq_total.add(3);
        c.codes.inc(200);
        c.upstream_cx_active.set(2);
        s.http("h").downstream_rq_total.inc();
        s.manager.total_listeners_active.set(1);
        s.reset_counters();
        let text = s.render_text(None, false);
        assert!(text.contains("cluster.c.upstream_rq_total: 0\n"), "{text}");
        assert!(text.contains("cluster.c.upstream_rq_2xx: 0\n"), "{text}");
        assert!(text.contains("http.h.downstream_rq_total: 0\n"), "{text}");
        assert!(text.contains("cluster.c.upstream_cx_active: 2\n"), "{text}");
        assert!(text.contains("listener_manager.total_listeners_active: 1\n"), "{text}");
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
