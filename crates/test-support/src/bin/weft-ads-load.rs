//! Holds many real ADS streams against a control plane, the way that many sidecars would, and
//! measures how long a config change takes to reach all of them.
//!
//!   weft-ads-load --xds 127.0.0.1:15010 --proxies 1000 --ip-base 127.200 [--namespaces 10]
//!                 [--change FILE --changes 5] [--timeout 120] [--on-demand N]
//!
//! Every stream is its own HTTP/2 connection with its own Istio node id
//! (`sidecar~127.200.X.Y~app-N-1.nsK~nsK.svc.cluster.local`, labels `app: app-N`). Each one
//! subscribes to CDS and LDS, follows EDS and RDS names from what it receives (as Envoy does),
//! and ACKs every response at once. With `--change`, the tool rewrites FILE (a VirtualService
//! whose timeout changes each time), records the moment, and waits until every stream has
//! received and ACKed a push with a new version. With `--on-demand N`, each stream is a weft
//! sidecar that fetches service clusters and virtual hosts on first use (`WEFT_ON_DEMAND`) and
//! has used N of the mesh's services: the one the change rewrites (svc-0, which every proxy
//! calls, so the change must reach them all) and the N-1 after its own, by the HTTP port's
//! cluster and, over VHDS, its virtual host. Prints one JSON object.
//! Every wait is bounded by --timeout.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const VHDS: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";
const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

struct Args {
    xds: String,
    proxies: usize,
    ip_base: String,
    namespaces: usize,
    change: Option<String>,
    changes: usize,
    timeout: Duration,
    /// A process (the control plane) whose RSS is read while every stream is still open.
    rss_of: Option<u32>,
    /// Services each proxy has used, when it fetches clusters on demand.
    on_demand: Option<usize>,
    /// Services in the mesh (for the names `--on-demand` asks for).
    services: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        xds: String::new(),
        proxies: 100,
        // Loopback: a control plane scrapes the proxies' addresses for its service graph.
        ip_base: "127.200".into(),
        namespaces: 1,
        change: None,
        changes: 5,
        timeout: Duration::from_secs(120),
        rss_of: None,
        on_demand: None,
        services: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or_else(|| format!("{k} needs a value"));
        let num = |s: String| s.parse::<usize>().map_err(|_| format!("{k}: {s:?} is not a number"));
        match k.as_str() {
            "--xds" => a.xds = v()?,
            "--proxies" => a.proxies = num(v()?)?,
            "--ip-base" => a.ip_base = v()?,
            "--namespaces" => a.namespaces = num(v()?)?.max(1),
            "--change" => a.change = Some(v()?),
            "--changes" => a.changes = num(v()?)?,
            "--timeout" => a.timeout = Duration::from_secs(num(v()?)? as u64),
            "--rss-of" => a.rss_of = Some(num(v()?)? as u32),
            "--on-demand" => a.on_demand = Some(num(v()?)?),
            "--services" => a.services = num(v()?)?.max(1),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.xds.is_empty() {
        return Err("--xds HOST:PORT is required".into());
    }
    Ok(a)
}

fn s(v: &str) -> Value {
    Value { kind: Some(Kind::StringValue(v.into())) }
}

/// Proxy `i`'s identity: the i-th workload the benchmark's config declares.
pub fn node(i: usize, ip_base: &str, namespaces: usize, on_demand: bool) -> Node {
    let ns = format!("ns{}", i % namespaces);
    let ip = format!("{ip_base}.{}.{}", i / 250, i % 250 + 1);
    let labels = Struct { fields: [("app".to_string(), s(&format!("app-{i}")))].into_iter().collect() };
    let meta = Struct {
        fields: [
            ("NAMESPACE".to_string(), s(&ns)),
            ("LABELS".to_string(), Value { kind: Some(Kind::StructValue(labels)) }),
            ("CLUSTER_ID".to_string(), s("Kubernetes")),
        ]
        .into_iter()
        .chain(on_demand.then(|| ("WEFT_ON_DEMAND".to_string(), s("true"))))
        .collect(),
    };
    Node {
        id: format!("sidecar~{ip}~app-{i}-1.{ns}~{ns}.svc.cluster.local"),
        cluster: format!("app-{i}.{ns}"),
        metadata: Some(meta),
        ..Default::default()
    }
}

#[derive(Default)]
struct Proxy {
    /// Response bytes received during the initial sync (until all four types arrived).
    initial_bytes: AtomicU64,
    total_bytes: AtomicU64,
    types_seen: AtomicUsize,
    synced_at: Mutex<Option<Instant>>,
    /// Set when a change is written: the next response is that change's push.
    armed: std::sync::atomic::AtomicBool,
    /// When the push for the current change was received and ACKed.
    changed_at: Mutex<Option<Instant>>,
}

fn eds_names(resp: &DiscoveryResponse) -> BTreeSet<String> {
    resp.resources
        .iter()
        .filter_map(|a| Cluster::decode(a.value.as_slice()).ok())
        .filter_map(|c| {
            let eds = c.eds_cluster_config?;
            Some(if eds.service_name.is_empty() { c.name } else { eds.service_name })
        })
        .collect()
}

fn rds_names(resp: &DiscoveryResponse) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in resp.resources.iter().filter_map(|a| Listener::decode(a.value.as_slice()).ok()) {
        for fc in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
            for f in &fc.filters {
                let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                    continue;
                };
                if any.type_url != HCM {
                    continue;
                }
                if let Ok(h) = HttpConnectionManager::decode(any.value.as_slice()) {
                    if let Some(RouteSpecifier::Rds(r)) = h.route_specifier {
                        out.insert(r.route_config_name);
                    }
                }
            }
        }
    }
    out
}

async fn run_proxy(i: usize, args: Arc<Args>, p: Arc<Proxy>, connecting: Arc<tokio::sync::Semaphore>) {
    let endpoint = format!("http://{}", args.xds);
    // Proxies of a real fleet do not all dial in the same millisecond; at most 64 at a time.
    let permit = connecting.acquire_owned().await;
    let ch = loop {
        match tonic::transport::Endpoint::from_shared(endpoint.clone()).map(|e| e.connect_timeout(Duration::from_secs(10))) {
            Ok(e) => match e.connect().await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            },
            Err(e) => {
                eprintln!("bad --xds: {e}");
                return;
            }
        }
    };
    drop(permit);
    let mut client = AggregatedDiscoveryServiceClient::new(ch).max_decoding_message_size(256 * 1024 * 1024);
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(8);
    // The clusters an on-demand proxy has used: `*` (what it always gets) and those names.
    let used: Vec<String> = match args.on_demand {
        Some(n) => std::iter::once(0)
            .chain((1..n).map(|k| (i + k) % args.services))
            .map(|j| format!("svc-{j}.ns{}.svc.cluster.local", j % args.namespaces))
            .collect(),
        None => Vec::new(),
    };
    let demand = |names: Vec<String>| if names.is_empty() { names } else { std::iter::once("*".to_string()).chain(names).collect() };
    let cds_names: Vec<String> = demand(used.iter().map(|h| format!("outbound|8080||{h}")).collect());
    // The virtual hosts, asked by host on the port's route configuration, as weft's proxy asks.
    let vhds_names: Vec<String> = demand(used.iter().map(|h| format!("8080/{h}:8080")).collect());
    let first = |t: &str, node: Option<Node>| DiscoveryRequest { node, type_url: t.into(), ..Default::default() };
    let cds = DiscoveryRequest {
        resource_names: cds_names.clone(),
        ..first(CDS, Some(node(i, &args.ip_base, args.namespaces, args.on_demand.is_some())))
    };
    let _ = tx.send(cds).await;
    let _ = tx.send(first(LDS, None)).await;
    if !vhds_names.is_empty() {
        let _ = tx.send(DiscoveryRequest { resource_names: vhds_names.clone(), ..first(VHDS, None) }).await;
    }
    let mut inbound = match client.stream_aggregated_resources(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(e) => {
            eprintln!("proxy {i}: stream refused: {e:?}");
            return;
        }
    };
    let mut eds: BTreeSet<String> = BTreeSet::new();
    let mut rds: BTreeSet<String> = BTreeSet::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut versions: std::collections::HashMap<String, (String, String)> = Default::default();
    while let Ok(Some(resp)) = inbound.message().await {
        let bytes = resp.encoded_len() as u64;
        p.total_bytes.fetch_add(bytes, Ordering::Relaxed);
        if p.synced_at.lock().is_none() {
            p.initial_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        let t = resp.type_url.clone();
        let names = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>();
        let ack = DiscoveryRequest {
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            type_url: t.clone(),
            resource_names: match t.as_str() {
                EDS => names(&eds),
                RDS => names(&rds),
                CDS => cds_names.clone(),
                VHDS => vhds_names.clone(),
                _ => Vec::new(),
            },
            ..Default::default()
        };
        if tx.send(ack).await.is_err() {
            return;
        }
        versions.insert(t.clone(), (resp.version_info.clone(), resp.nonce.clone()));
        let now = Instant::now();
        if p.armed.swap(false, Ordering::AcqRel) {
            *p.changed_at.lock() = Some(now);
        }
        // Follow EDS and RDS names, as Envoy does after CDS and LDS.
        let follow = match t.as_str() {
            CDS => Some((EDS, eds_names(&resp), &mut eds)),
            LDS => Some((RDS, rds_names(&resp), &mut rds)),
            _ => None,
        };
        if let Some((dep, want, held)) = follow {
            if want != *held {
                *held = want;
                let (v, n) = versions.get(dep).cloned().unwrap_or_default();
                let req = DiscoveryRequest {
                    version_info: v,
                    response_nonce: n,
                    type_url: dep.into(),
                    resource_names: held.iter().cloned().collect(),
                    ..Default::default()
                };
                if tx.send(req).await.is_err() {
                    return;
                }
            }
        }
        seen.insert(t);
        let all = seen.contains(CDS)
            && seen.contains(LDS)
            && (eds.is_empty() || seen.contains(EDS))
            && (rds.is_empty() || seen.contains(RDS))
            && (vhds_names.is_empty() || seen.contains(VHDS));
        if all && p.synced_at.lock().is_none() {
            *p.synced_at.lock() = Some(now);
            p.types_seen.store(seen.len(), Ordering::Relaxed);
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn vs(timeout_s: usize) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: bench-change, namespace: ns0}}\nspec:\n  hosts: [svc-0.ns0.svc.cluster.local]\n  http:\n  - timeout: {timeout_s}s\n    route:\n    - destination: {{host: svc-0.ns0.svc.cluster.local}}\n"
    )
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("weft-ads-load: {e}");
            std::process::exit(2);
        }
    };
    // One socket per proxy.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("weft-ads-load: cannot raise the open-file limit: {e}");
    }
    let start = Instant::now();
    let proxies: Vec<Arc<Proxy>> = (0..args.proxies).map(|_| Arc::new(Proxy::default())).collect();
    let connecting = Arc::new(tokio::sync::Semaphore::new(64));
    for (i, p) in proxies.iter().enumerate() {
        tokio::spawn(run_proxy(i, args.clone(), p.clone(), connecting.clone()));
    }
    let deadline = start + args.timeout;
    let synced = |ps: &[Arc<Proxy>]| ps.iter().filter(|p| p.synced_at.lock().is_some()).count();
    while synced(&proxies) < proxies.len() {
        if Instant::now() > deadline {
            eprintln!("weft-ads-load: only {} of {} proxies synced within {:?}", synced(&proxies), proxies.len(), args.timeout);
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sync_s = start.elapsed().as_secs_f64();
    let initial: Vec<u64> = proxies.iter().map(|p| p.initial_bytes.load(Ordering::Relaxed)).collect();
    let mean_initial = initial.iter().sum::<u64>() as f64 / initial.len().max(1) as f64;

    let mut rounds = Vec::new();
    if let Some(file) = &args.change {
        // Let the initial sync settle before the first change.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for k in 0..args.changes {
            for p in &proxies {
                // Any response after this point carries the change (nothing else changes).
                *p.changed_at.lock() = None;
                p.armed.store(true, Ordering::Release);
            }
            let tmp = format!("{file}.tmp");
            if let Err(e) = std::fs::write(&tmp, vs(k + 2)).and_then(|_| std::fs::rename(&tmp, file)) {
                eprintln!("weft-ads-load: cannot write {file}: {e}");
                std::process::exit(1);
            }
            let t0 = Instant::now();
            let round_deadline = t0 + args.timeout;
            loop {
                let done = proxies.iter().filter(|p| p.changed_at.lock().is_some()).count();
                if done == proxies.len() {
                    break;
                }
                if Instant::now() > round_deadline {
                    eprintln!("weft-ads-load: change {k}: only {done} of {} proxies got it", proxies.len());
                    std::process::exit(1);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let mut lat: Vec<f64> = proxies
                .iter()
                .filter_map(|p| p.changed_at.lock().map(|t| t.saturating_duration_since(t0).as_secs_f64() * 1000.0))
                .collect();
            lat.sort_by(|a, b| a.total_cmp(b));
            rounds.push(serde_json::json!({
                "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99), "max_ms": percentile(&lat, 1.0),
            }));
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }
    // Steady state: every stream open and synced, after the control plane's periodic return
    // of freed memory (every 5 s) has had a chance to run.
    let held_rss_mb = match args.rss_of {
        Some(pid) => {
            tokio::time::sleep(Duration::from_secs(6)).await;
            rss_mb(pid)
        }
        None => None,
    };
    let out = serde_json::json!({
        "proxies": proxies.len(),
        "initial_sync_s": sync_s,
        "initial_bytes_per_proxy": mean_initial,
        "changes": rounds,
        "rss_held_mb": held_rss_mb,
    });
    println!("{out}");
    // Streams end with the process.
    std::process::exit(0);
}

/// VmRSS of `pid` in MB, from /proc.
fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}
