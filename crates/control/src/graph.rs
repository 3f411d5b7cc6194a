//! The service graph (what Istio's servicegraph add-on served, and what Kiali draws): the control
//! plane scrapes every connected proxy's Istio metrics itself (`<proxy address>:15090
//! /stats/prometheus`, so nothing else needs to run), keeps a bounded window of samples, and
//! answers `/graph` (JSON: workloads as nodes, calls as edges with request rate, error rate,
//! p50/p99 latency and whether they were mTLS), `/dotgraph` (DOT) and `/dotviz` (an SVG page),
//! each over `time_horizon` (`5m` by default) and, with `filter_empty=true`, only what carried
//! traffic in it. With `--prometheus-url` it asks a real Prometheus instead, with the PromQL
//! Kiali uses.
//!
//! An edge is counted from the server's side (`reporter="destination"`, which knows the policy
//! the connection had) and from the client's only when no server reported it (a destination
//! without a weft sidecar), so no request is counted twice.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::state::Shared;

/// How often the proxies are scraped.
pub const SCRAPE_EVERY: Duration = Duration::from_secs(5);
/// The oldest sample kept (the longest `time_horizon` answered).
const KEEP: Duration = Duration::from_secs(3600);
/// Edges one sample holds at most (the proxies cap their own series too).
const MAX_EDGES: usize = 10_000;
/// The port Istio's sidecars serve `/stats/prometheus` on.
const STATS_PORT: u16 = 15090;

/// One call edge: from a workload to a workload through a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Edge {
    pub source: String,
    pub destination: String,
    pub service: String,
}

/// An edge's counters at one moment (cumulative, as the proxies report them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub requests: f64,
    pub errors: f64,
    pub mtls: f64,
    /// Duration histogram: bucket bound (ms) → cumulative count.
    pub buckets: BTreeMap<u64, f64>,
}

/// Every edge's counters from one scrape of every proxy.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub edges: HashMap<Edge, Counters>,
}

/// The window of samples.
#[derive(Default)]
pub struct Graph {
    samples: Mutex<VecDeque<(Instant, Arc<Sample>)>>,
}

/// A workload's name in the graph: `name.namespace`, `unknown` for a caller the mesh does not know.
fn node(workload: &str, namespace: &str) -> String {
    if workload == "unknown" {
        "unknown".into()
    } else {
        format!("{workload}.{namespace}")
    }
}

/// The labels of a Prometheus sample line, and its value.
fn parse_line(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    let (name, rest) = line.split_once('{')?;
    let (labels, value) = rest.rsplit_once("} ")?;
    let mut map = BTreeMap::new();
    for pair in split_labels(labels) {
        let (k, v) = pair.split_once('=')?;
        map.insert(k, v.trim_matches('"'));
    }
    Some((name, map, value.trim().parse().ok()?))
}

/// `a="x",b="y,z"` into its pairs (commas inside quotes kept).
fn split_labels(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            '\\' if quoted => escaped = !escaped,
            '"' if !escaped => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => escaped = false,
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// One proxy's Istio metrics, per reporter and edge.
pub fn parse(text: &str) -> [HashMap<Edge, Counters>; 2] {
    let mut by_reporter: [HashMap<Edge, Counters>; 2] = Default::default();
    for line in text.lines() {
        let requests = line.starts_with("istio_requests_total{");
        let bucket = line.starts_with("istio_request_duration_milliseconds_bucket{");
        if !requests && !bucket {
            continue;
        }
        let Some((_, l, v)) = parse_line(line) else { continue };
        let get = |k: &str| l.get(k).copied().unwrap_or("unknown");
        let edge = Edge {
            source: node(get("source_workload"), get("source_workload_namespace")),
            destination: node(get("destination_workload"), get("destination_workload_namespace")),
            service: get("destination_service").to_owned(),
        };
        let i = usize::from(get("reporter") == "destination");
        let c = by_reporter[i].entry(edge).or_default();
        if requests {
            c.requests += v;
            if get("response_code").starts_with('5') {
                c.errors += v;
            }
            if get("connection_security_policy") == "mutual_tls" {
                c.mtls += v;
            }
        } else if let Some(le) = l.get("le").and_then(|le| le.parse::<f64>().ok()) {
            // Bounds are whole milliseconds from 1 up (0.5 is kept as 0, +Inf left out).
            *c.buckets.entry(le as u64).or_default() += v;
        }
    }
    by_reporter
}

/// The proxies' reports merged into one sample: each edge from its server's side, else from
/// its client's.
pub fn merge(reports: impl IntoIterator<Item = [HashMap<Edge, Counters>; 2]>) -> Sample {
    let (mut source, mut destination): (HashMap<Edge, Counters>, HashMap<Edge, Counters>) = Default::default();
    let add = |into: &mut HashMap<Edge, Counters>, from: HashMap<Edge, Counters>| {
        for (e, c) in from {
            if into.len() >= MAX_EDGES && !into.contains_key(&e) {
                continue;
            }
            let t = into.entry(e).or_default();
            t.requests += c.requests;
            t.errors += c.errors;
            t.mtls += c.mtls;
            for (le, n) in c.buckets {
                *t.buckets.entry(le).or_default() += n;
            }
        }
    };
    for [s, d] in reports {
        add(&mut source, s);
        add(&mut destination, d);
    }
    let reported: BTreeSet<(String, String)> = destination.keys().map(|e| (e.source.clone(), e.destination.clone())).collect();
    for (e, c) in source {
        if !reported.contains(&(e.source.clone(), e.destination.clone())) {
            destination.entry(e).or_insert(c);
        }
    }
    Sample { edges: destination }
}

impl Graph {
    pub fn push(&self, at: Instant, sample: Sample) {
        let mut s = self.samples.lock();
        s.push_back((at, Arc::new(sample)));
        while s.front().is_some_and(|(t, _)| at.duration_since(*t) > KEEP) {
            s.pop_front();
        }
    }

    /// The graph over the last `horizon`: rates from the newest sample and the oldest one in
    /// the window (a counter that went down — a restarted proxy — counts from zero).
    pub fn view(&self, horizon: Duration, filter_empty: bool) -> Value {
        let samples = self.samples.lock();
        let Some((newest_at, newest)) = samples.back().cloned() else {
            return json!({"nodes": [], "edges": [], "time_horizon_seconds": horizon.as_secs()});
        };
        let oldest = samples.iter().find(|(t, _)| newest_at.duration_since(*t) <= horizon).cloned().unwrap_or((newest_at, newest.clone()));
        drop(samples);
        let seconds = newest_at.duration_since(oldest.0).as_secs_f64();
        let mut keys: Vec<&Edge> = newest.edges.keys().collect();
        keys.sort();
        let mut edges = Vec::new();
        for e in keys {
            let now = &newest.edges[e];
            let before = oldest.1.edges.get(e).cloned().unwrap_or_default();
            let delta = |a: f64, b: f64| if a >= b { a - b } else { a };
            let requests = delta(now.requests, before.requests);
            let buckets: Vec<(u64, f64)> =
                now.buckets.iter().map(|(le, n)| (*le, delta(*n, before.buckets.get(le).copied().unwrap_or(0.0)))).collect();
            edges.push(EdgeView {
                edge: e.clone(),
                requests,
                rate: if seconds > 0.0 { requests / seconds } else { 0.0 },
                errors: delta(now.errors, before.errors),
                p50: quantile(&buckets, 0.5),
                p99: quantile(&buckets, 0.99),
                mtls: requests > 0.0 && delta(now.mtls, before.mtls) >= requests,
            });
        }
        render(edges, horizon, filter_empty)
    }
}

/// One edge over a horizon.
struct EdgeView {
    edge: Edge,
    requests: f64,
    rate: f64,
    errors: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    mtls: bool,
}

/// The graph's JSON: the edges (those that carried traffic, with `filter_empty`) and the nodes
/// they join.
fn render(edges: Vec<EdgeView>, horizon: Duration, filter_empty: bool) -> Value {
    let mut nodes = BTreeSet::new();
    let mut out = Vec::new();
    for v in edges.into_iter().filter(|v| !filter_empty || v.requests > 0.0) {
        nodes.insert(v.edge.source.clone());
        nodes.insert(v.edge.destination.clone());
        out.push(json!({
            "source": v.edge.source,
            "target": v.edge.destination,
            "service": v.edge.service,
            "requests": v.requests,
            "request_rate": v.rate,
            "error_rate": if v.requests > 0.0 { v.errors / v.requests } else { 0.0 },
            "p50_ms": v.p50,
            "p99_ms": v.p99,
            "mtls": v.mtls,
        }));
    }
    let nodes: Vec<Value> = nodes.into_iter().map(|n| json!({"id": n})).collect();
    json!({"nodes": nodes, "edges": out, "time_horizon_seconds": horizon.as_secs()})
}

/// The `q` quantile of cumulative buckets, interpolated within its bucket as Prometheus'
/// `histogram_quantile` does; `None` without observations.
fn quantile(buckets: &[(u64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0u64, 0.0);
    for (le, n) in buckets {
        if *n >= rank {
            let in_bucket = n - prev.1;
            let frac = if in_bucket > 0.0 { (rank - prev.1) / in_bucket } else { 0.0 };
            return Some(prev.0 as f64 + (*le as f64 - prev.0 as f64) * frac);
        }
        prev = (*le, *n);
    }
    Some(prev.0 as f64)
}

/// `5m`, `30s`, `1h` as a horizon (at most an hour); `None` for anything else.
pub fn horizon(text: &str) -> Option<Duration> {
    let (n, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    let d = match unit {
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    };
    (d > Duration::ZERO && d <= KEEP).then_some(d)
}

/// The graph as DOT.
pub fn dot(graph: &Value) -> String {
    let mut s = String::from("digraph mesh {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
    for n in graph["nodes"].as_array().into_iter().flatten() {
        let _ = writeln!(s, "  \"{}\";", n["id"].as_str().unwrap_or_default());
    }
    for e in graph["edges"].as_array().into_iter().flatten() {
        let label = format!(
            "{:.2} rps, {:.0}% errors{}",
            e["request_rate"].as_f64().unwrap_or(0.0),
            e["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
            if e["mtls"] == true { ", mTLS" } else { "" }
        );
        let _ = writeln!(
            s,
            "  \"{}\" -> \"{}\" [label=\"{label}\"];",
            e["source"].as_str().unwrap_or_default(),
            e["target"].as_str().unwrap_or_default()
        );
    }
    s.push_str("}\n");
    s
}

/// The graph drawn as an SVG page: nodes on a circle, edges as labelled arrows.
pub fn svg_page(graph: &Value) -> String {
    let nodes: Vec<&str> = graph["nodes"].as_array().into_iter().flatten().filter_map(|n| n["id"].as_str()).collect();
    let (w, h, r) = (900.0_f64, 700.0_f64, 260.0_f64);
    let at = |i: usize| {
        let a = std::f64::consts::TAU * i as f64 / nodes.len().max(1) as f64;
        (w / 2.0 + r * a.cos(), h / 2.0 + r * a.sin())
    };
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut s = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>weft service graph</title></head><body style=\"font-family:sans-serif\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\"><defs><marker id=\"a\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\"><path d=\"M0,0L10,5L0,10z\"/></marker></defs>"
    );
    for e in graph["edges"].as_array().into_iter().flatten() {
        let (Some(a), Some(b)) = (index.get(e["source"].as_str().unwrap_or_default()), index.get(e["target"].as_str().unwrap_or_default()))
        else {
            continue;
        };
        let ((x1, y1), (x2, y2)) = (at(*a), at(*b));
        let lock = if e["mtls"] == true { " 🔒" } else { "" };
        let _ = write!(
            s,
            "<line x1=\"{x1:.0}\" y1=\"{y1:.0}\" x2=\"{x2:.0}\" y2=\"{y2:.0}\" stroke=\"#2a6\" stroke-width=\"2\" marker-end=\"url(#a)\"/><text x=\"{:.0}\" y=\"{:.0}\" font-size=\"12\">{:.2} rps{lock}</text>",
            (x1 + x2) / 2.0,
            (y1 + y2) / 2.0,
            e["request_rate"].as_f64().unwrap_or(0.0)
        );
    }
    for (i, n) in nodes.iter().enumerate() {
        let (x, y) = at(i);
        let _ = write!(
            s,
            "<circle cx=\"{x:.0}\" cy=\"{y:.0}\" r=\"28\" fill=\"#eef\" stroke=\"#336\"/><text x=\"{x:.0}\" y=\"{:.0}\" font-size=\"13\" text-anchor=\"middle\">{}</text>",
            y + 45.0,
            esc(n)
        );
    }
    s.push_str("</svg></body></html>\n");
    s
}

/// Scrapes every connected proxy every `SCRAPE_EVERY`, until the process ends.
pub async fn scrape(shared: Arc<Shared>, graph: Arc<Graph>) {
    loop {
        tokio::time::sleep(SCRAPE_EVERY).await;
        let addresses: BTreeSet<std::net::IpAddr> =
            shared.proxies.lock().values().filter_map(|p| p.node_id.split('~').nth(1).and_then(|ip| ip.parse().ok())).collect();
        let mut reports = Vec::new();
        for ip in addresses {
            if let Some(text) = fetch(SocketAddr::new(ip, STATS_PORT)).await {
                reports.push(parse(&text));
            }
        }
        graph.push(Instant::now(), merge(reports));
    }
}

/// `GET /stats/prometheus` from one proxy, within two seconds and 8 MiB.
async fn fetch(addr: SocketAddr) -> Option<String> {
    get(addr, "/stats/prometheus").await
}

/// One plain-HTTP GET, within two seconds and 8 MiB; the body when the answer is 200.
async fn get(addr: SocketAddr, path_and_query: &str) -> Option<String> {
    use http_body_util::BodyExt as _;
    let work = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.ok()?;
        tokio::spawn(conn);
        let req =
            http::Request::get(path_and_query).header("host", addr.to_string()).body(http_body_util::Empty::<bytes::Bytes>::new()).ok()?;
        let resp = send.send_request(req).await.ok()?;
        if resp.status() != http::StatusCode::OK {
            return None;
        }
        let body = http_body_util::Limited::new(resp.into_body(), 8 << 20).collect().await.ok()?.to_bytes();
        String::from_utf8(body.to_vec()).ok()
    };
    tokio::time::timeout(Duration::from_secs(2), work).await.ok().flatten()
}

/// A Prometheus the graph asks instead of scraping (`--prometheus-url http://host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prometheus {
    pub addr: SocketAddr,
}

impl Prometheus {
    /// `http://<ip>:<port>` (plain HTTP to an address; a name or TLS is refused, not guessed).
    pub fn parse(url: &str) -> Result<Prometheus, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?}: give http://<address>:<port>"))?;
        let addr =
            rest.trim_end_matches('/').parse().map_err(|_| format!("{url:?}: give http://<address>:<port> (an IP address and a port)"))?;
        Ok(Prometheus { addr })
    }

    /// One instant query's result vector.
    async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let mut q = String::new();
        for b in promql.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                q.push(char::from(b));
            } else {
                let _ = write!(q, "%{b:02X}");
            }
        }
        let text = get(self.addr, &format!("/api/v1/query?query={q}"))
            .await
            .ok_or_else(|| format!("Prometheus at {} did not answer", self.addr))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("Prometheus' answer is not JSON: {e}"))?;
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The graph over `horizon` with the PromQL Kiali uses (the server's side reporting).
    pub async fn view(&self, horizon: Duration, filter_empty: bool) -> Result<Value, String> {
        let h = format!("{}s", horizon.as_secs());
        let by = "source_workload,source_workload_namespace,destination_workload,destination_workload_namespace,destination_service";
        let increase = |extra: &str| format!("sum(increase(istio_requests_total{{reporter=\"destination\"{extra}}}[{h}])) by ({by})");
        let quantile = |q: f64| {
            format!("histogram_quantile({q}, sum(rate(istio_request_duration_milliseconds_bucket{{reporter=\"destination\"}}[{h}])) by (le,{by}))")
        };
        let key = |m: &Value| -> Edge {
            let g = |k: &str| m[k].as_str().unwrap_or("unknown").to_owned();
            Edge {
                source: node(&g("source_workload"), &g("source_workload_namespace")),
                destination: node(&g("destination_workload"), &g("destination_workload_namespace")),
                service: g("destination_service"),
            }
        };
        let value = |r: &Value| r["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite());
        let collect =
            |rows: Vec<Value>| -> BTreeMap<Edge, f64> { rows.iter().filter_map(|r| Some((key(&r["metric"]), value(r)?))).collect() };
        let requests = collect(self.query(&increase("")).await?);
        let errors = collect(self.query(&increase(",response_code=~\"5.*\"")).await?);
        let mtls = collect(self.query(&increase(",connection_security_policy=\"mutual_tls\"")).await?);
        let p50 = collect(self.query(&quantile(0.5)).await?);
        let p99 = collect(self.query(&quantile(0.99)).await?);
        let edges = requests
            .iter()
            .map(|(e, n)| EdgeView {
                edge: e.clone(),
                requests: *n,
                rate: n / horizon.as_secs_f64(),
                errors: errors.get(e).copied().unwrap_or(0.0),
                p50: p50.get(e).copied(),
                p99: p99.get(e).copied(),
                // `increase` extrapolates, so the shares are compared with a little slack.
                mtls: *n > 0.0 && mtls.get(e).copied().unwrap_or(0.0) >= n * 0.999,
            })
            .collect();
        let mut g = render(edges, horizon, filter_empty);
        g["source"] = json!(format!("prometheus {}", self.addr));
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(reporter: &str, requests: u64, errors: u64, mtls: bool) -> String {
        let labels = |code: &str| {
            format!(
                "reporter=\"{reporter}\",source_workload=\"productpage-v1\",source_workload_namespace=\"default\",destination_workload=\"reviews-v1\",destination_workload_namespace=\"default\",destination_service=\"reviews.default.svc.cluster.local\",response_code=\"{code}\",connection_security_policy=\"{}\"",
                if mtls { "mutual_tls" } else { "none" }
            )
        };
        format!(
            "istio_requests_total{{{}}} {}\nistio_requests_total{{{}}} {errors}\nistio_request_duration_milliseconds_bucket{{{},le=\"10\"}} {}\nistio_request_duration_milliseconds_bucket{{{},le=\"100\"}} {}\n",
            labels("200"),
            requests - errors,
            labels("503"),
            labels("200"),
            requests / 2,
            labels("200"),
            requests
        )
    }

    #[test]
    fn rates_come_from_the_window_and_idle_edges_can_be_left_out() {
        let g = Graph::default();
        let t0 = Instant::now();
        g.push(t0, merge([parse(&metrics("destination", 100, 10, true))]));
        g.push(t0 + Duration::from_secs(10), merge([parse(&metrics("destination", 200, 20, true))]));
        let v = g.view(Duration::from_secs(300), true);
        let e = &v["edges"][0];
        assert_eq!((e["source"].as_str(), e["target"].as_str()), (Some("productpage-v1.default"), Some("reviews-v1.default")));
        assert_eq!(e["request_rate"], 10.0, "100 requests in 10 s");
        assert!((e["error_rate"].as_f64().unwrap_or(0.0) - 0.1).abs() < 1e-9, "{e}");
        assert_eq!(e["mtls"], true);
        assert!(e["p99_ms"].as_f64().is_some_and(|p| p > 10.0 && p <= 100.0), "{e}");
        // Nothing new in the last 5 s: with filter_empty the edge is gone.
        g.push(t0 + Duration::from_secs(20), merge([parse(&metrics("destination", 200, 20, true))]));
        let v = g.view(Duration::from_secs(5), true);
        assert_eq!(v["edges"].as_array().map(Vec::len), Some(0), "{v}");
        assert_eq!(g.view(Duration::from_secs(5), false)["edges"].as_array().map(Vec::len), Some(1));
        assert!(dot(&g.view(Duration::from_secs(300), true)).contains("\"productpage-v1.default\" -> \"reviews-v1.default\""));
        assert!(svg_page(&g.view(Duration::from_secs(300), true)).contains("<svg"));
    }

    #[test]
    fn the_servers_report_wins_and_the_clients_fills_in() {
        let both = merge([parse(&metrics("source", 50, 0, false)), parse(&metrics("destination", 50, 0, true))]);
        assert_eq!(both.edges.len(), 1);
        assert_eq!(both.edges.values().next().map(|c| (c.requests, c.mtls)), Some((50.0, 50.0)), "counted once, from the server");
        let only_client = merge([parse(&metrics("source", 50, 0, false))]);
        assert_eq!(only_client.edges.values().next().map(|c| c.requests), Some(50.0), "a server without weft: the client's count");
        assert_eq!(horizon("5m"), Some(Duration::from_secs(300)));
        assert_eq!(horizon("2h"), None, "past the window kept");
        assert_eq!(horizon("five"), None);
    }
}
