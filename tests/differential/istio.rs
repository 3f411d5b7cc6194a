//! The bootstrap Istio's pilot-agent writes for a sidecar, written here by hand with the same
//! fields (node with locality and metadata, `layered_runtime` with Istio's default flags,
//! the internal-listener bootstrap extension, Istio's `stats_config` tags and inclusion list,
//! the admin access log, ADS through the `xds-grpc` cluster on a Unix socket, the
//! `prometheus_stats`/`agent`/`sds-grpc`/`xds-grpc` clusters with `alt_stat_name`, the stats and
//! health listeners with `ignore_global_conn_limit`, the overload manager's global connection
//! limit, deferred stats, `application_log_config`). Envoy and weft each start from it with
//! pilot-agent's command line, get their config from `weft control-plane` through the socket,
//! and serve the stats and health listeners alike.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};
use weft_test_support::{free_port, send, ProxyKind, ProxyProcess, Req, Upstream};

use crate::harness::WEFT;

/// pilot-agent's flags for Envoy (pkg/envoy/proxy.go), minus `-c` and `--concurrency`, which
/// the harness gives.
const PILOT_AGENT_ARGS: &[&str] = &[
    "--drain-time-s",
    "45",
    "--drain-strategy",
    "immediate",
    "--local-address-ip-version",
    "v4",
    "--file-flush-interval-msec",
    "1000",
    "--allow-unknown-static-fields",
    "--component-log-level",
    "misc:error",
];

struct Ports {
    admin: u16,
    stats: u16,
    health: u16,
    agent: u16,
}

/// A rendered sidecar bootstrap's shape, with this test's ports and socket.
fn sidecar_bootstrap(p: &Ports, xds_socket: &Path, sds_socket: &Path) -> Value {
    let router = json!([{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]);
    let hcm = |prefix: &str, path: &str, cluster: &str| {
        json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "codec_type": "AUTO",
            "stat_prefix": prefix,
            "route_config": {"virtual_hosts": [{"name": "backend", "domains": ["*"], "routes": [{"match": {"prefix": path}, "route": {"cluster": cluster}}]}]},
            "http_filters": router,
        }})
    };
    let listener = |port: u16, prefix: &str, path: &str, cluster: &str| {
        json!({
            "name": format!("0.0.0.0_{port}"),
            "address": {"socket_address": {"protocol": "TCP", "address": "127.0.0.1", "port_value": port}},
            "ignore_global_conn_limit": true,
            "bypass_overload_manager": true,
            "filter_chains": [{"filters": [hcm(prefix, path, cluster)]}],
        })
    };
    let h2 = json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}}}});
    let endpoint = |address: Value| json!([{"lb_endpoints": [{"endpoint": {"address": address}}]}]);
    let tcp = |port: u16| json!({"socket_address": {"protocol": "TCP", "address": "127.0.0.1", "port_value": port}});
    json!({
        "application_log_config": {"log_format": {"text_format": "%Y-%m-%dT%T.%fZ\t%l\tenvoy %n %g:%#\t%v\tthread=%t"}},
        "node": {
            "id": "sidecar~127.0.0.1~ratings-v1-5d7c8b9f4-x2k9q.default~default.svc.cluster.local",
            "cluster": "ratings.default",
            "locality": {"region": "us-central1", "zone": "us-central1-a"},
            "metadata": {
                "NAMESPACE": "default",
                "INTERCEPTION_MODE": "NONE",
                "LABELS": {"app": "ratings", "version": "v1"},
                "SERVICE_ACCOUNT": "bookinfo-ratings",
                "ISTIO_VERSION": "1.24.0",
                "CLUSTER_ID": "Kubernetes",
                "MESH_ID": "cluster.local",
                "WORKLOAD_NAME": "ratings-v1",
                "PROXY_CONFIG": {"binaryPath": "/usr/local/bin/envoy", "concurrency": 2, "statusPort": 15020},
            },
        },
        "layered_runtime": {"layers": [
            {"name": "global config", "static_layer": {
                "re2.max_program_size.error_level": "32768",
                "envoy.deprecated_features:envoy.config.listener.v3.Listener.hidden_envoy_deprecated_use_original_dst": true,
                "envoy.reloadable_features.http_reject_path_with_fragment": false,
                "envoy.reloadable_features.fixed_heap_use_allocated": true,
                "envoy.reloadable_features.coalesce_lb_rebuilds_on_batch_update": false,
            }},
            {"name": "admin", "admin_layer": {}},
        ]},
        "bootstrap_extensions": [{"name": "envoy.bootstrap.internal_listener", "typed_config": {
            "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
            "type_url": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener",
            "value": {"buffer_size_kb": 64}}}],
        "stats_config": {
            "use_all_default_tags": false,
            "stats_tags": [
                {"tag_name": "cluster_name", "regex": "^cluster(\\.(.+);)"},
                {"tag_name": "http_conn_manager_prefix", "regex": "^http\\.(((?:[_.[:digit:]\\w]*|[_\\[\\]aAbBcCdDeEfF[:digit:]\\w\\:]*));\\.)"},
                {"tag_name": "thread_name", "regex": "^server(\\.(.+))\\.watchdog"},
                {"tag_name": "tcp_prefix", "regex": "^tcp\\.((.*?)\\.)\\w+?$"},
                {"regex": "_rq(_(\\d{3}))$", "tag_name": "response_code"},
                {"tag_name": "response_code_class", "regex": "_rq(_(\\dxx))$"},
                {"tag_name": "http_conn_manager_listener_prefix", "regex": "^listener(?=\\.).*?\\.http\\.(((?:[_.[:digit:]]*|[_\\[\\]aAbBcCdDeEfF[:digit:]]*))\\.)"},
                {"tag_name": "listener_address", "regex": "^listener\\.(((?:[_.[:digit:]]*|[_\\[\\]aAbBcCdDeEfF[:digit:]]*))\\.)"},
                {"tag_name": "mongo_prefix", "regex": "^mongo\\.(.+?)\\.(collection|cmd|cx_|op_|delays_|decoding_)(.*?)$"},
                {"regex": "(cache\\.(.+?)\\.)", "tag_name": "cache"},
                {"regex": "(component\\.(.+?)\\.)", "tag_name": "component"},
                {"regex": "(tag\\.(.+?);\\.)", "tag_name": "tag"},
                {"regex": "(wasm_filter\\.(.+?)\\.)", "tag_name": "wasm_filter"},
                {"tag_name": "authz_enforce_result", "regex": "rbac(\\.(allowed|denied))"},
                {"tag_name": "authz_dry_run_action", "regex": "(\\.istio_dry_run_(allow|deny)_)"},
                {"tag_name": "authz_dry_run_result", "regex": "(\\.shadow_(allowed|denied))"},
            ],
            "stats_matcher": {"inclusion_list": {"patterns": [
                {"prefix": "reporter="},
                {"prefix": "cluster_manager"},
                {"prefix": "listener_manager"},
                {"prefix": "server"},
                {"prefix": "cluster.prometheus_stats"},
                {"prefix": "cluster.agent"},
                {"suffix": "ssl_context_update_by_sds"},
                {"prefix": "component"},
                {"prefix": "istio"},
            ]}},
        },
        "admin": {
            "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog", "path": "/dev/null"}}],
            "profile_path": "/var/lib/istio/data/envoy.prof",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": p.admin}},
        },
        "dynamic_resources": {
            "lds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
            "ads_config": {"api_type": "GRPC", "set_node_on_first_message_only": true, "transport_api_version": "V3",
                           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]},
        },
        "static_resources": {
            "clusters": [
                {"name": "prometheus_stats", "alt_stat_name": "prometheus_stats;", "type": "STATIC", "connect_timeout": "0.250s",
                 "lb_policy": "ROUND_ROBIN", "load_assignment": {"cluster_name": "prometheus_stats", "endpoints": endpoint(tcp(p.admin))}},
                {"name": "agent", "alt_stat_name": "agent;", "type": "STATIC", "connect_timeout": "0.250s",
                 "lb_policy": "ROUND_ROBIN", "load_assignment": {"cluster_name": "agent", "endpoints": endpoint(tcp(p.agent))}},
                {"name": "sds-grpc", "alt_stat_name": "sds-grpc;", "type": "STATIC", "typed_extension_protocol_options": h2,
                 "connect_timeout": "1s", "lb_policy": "ROUND_ROBIN",
                 "load_assignment": {"cluster_name": "sds-grpc", "endpoints": endpoint(json!({"pipe": {"path": sds_socket}}))}},
                {"name": "xds-grpc", "alt_stat_name": "xds-grpc;", "type": "STATIC", "connect_timeout": "1s", "lb_policy": "ROUND_ROBIN",
                 "load_assignment": {"cluster_name": "xds-grpc", "endpoints": endpoint(json!({"pipe": {"path": xds_socket}}))},
                 "circuit_breakers": {"thresholds": [
                     {"priority": "DEFAULT", "max_connections": 100000, "max_pending_requests": 100000, "max_requests": 100000},
                     {"priority": "HIGH", "max_connections": 100000, "max_pending_requests": 100000, "max_requests": 100000}]},
                 "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 300}},
                 "max_requests_per_connection": 1,
                 "typed_extension_protocol_options": h2},
            ],
            "listeners": [
                listener(p.stats, "stats", "/stats/prometheus", "prometheus_stats"),
                listener(p.health, "agent", "/healthz/ready", "agent"),
            ],
        },
        "overload_manager": {"resource_monitors": [{"name": "envoy.resource_monitors.global_downstream_max_connections", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
            "max_active_downstream_connections": 2147483647}}]},
        "deferred_stat_options": {"enable_deferred_creation_stats": true},
    })
}

/// `weft control-plane` on an empty config directory, its xDS reachable through a Unix socket
/// (as pilot-agent's xDS proxy is); stopped by its own PID on drop.
struct ControlPlane {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    forwarder: tokio::task::JoinHandle<()>,
}

impl ControlPlane {
    async fn start() -> ControlPlane {
        let dir = weft_test_support::proxy::temp_dir("istio-cp");
        let config = dir.join("config");
        std::fs::create_dir_all(&config).expect("config dir");
        let mut child = Command::new(WEFT)
            .args(["control-plane", "--config-dir"])
            .arg(&config)
            .args(["--xds-address", "127.0.0.1:0", "--debug-address", "127.0.0.1:0", "--secure-address", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the control plane");
        let stdout = child.stdout.take().expect("stdout");
        // "weft control-plane: xDS on A, debug on B" once it serves.
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
            line
        })
        .await
        .unwrap_or_default();
        let xds = line.split("xDS on ").nth(1).and_then(|r| r.split(',').next()).unwrap_or_default().trim().to_string();
        assert!(xds.starts_with("127.0.0.1:"), "control plane did not start: {line:?}");
        let socket = dir.join("XDS");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind the xDS socket");
        let forwarder = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let xds = xds.clone();
                tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(&xds).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        });
        ControlPlane { child, dir, socket, forwarder }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.forwarder.abort();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What one proxy shows after starting from the bootstrap and serving two scrapes.
async fn observe(kind: ProxyKind, cp: &ControlPlane, agent: u16) -> Value {
    let p = Ports { admin: free_port(), stats: free_port(), health: free_port(), agent };
    let cfg = sidecar_bootstrap(&p, &cp.socket, &cp.dir.join("sds-socket"));
    let text = serde_json::to_string_pretty(&cfg).unwrap_or_default();
    // Ready (200 on /ready) means the first clusters and listeners came over the socket.
    let proxy = match ProxyProcess::start_with_args(kind, WEFT, &text, p.admin, PILOT_AGENT_ARGS).await {
        Ok(proxy) => proxy,
        Err(e) => panic!("{kind} did not start from the Istio-shaped bootstrap: {e:#}"),
    };
    let health = send(&format!("127.0.0.1:{}", p.health), Req::get("/healthz/ready")).await.map(|r| r.status).unwrap_or(0);
    let mut scrapes = Vec::new();
    for _ in 0..2 {
        let r = send(&format!("127.0.0.1:{}", p.stats), Req::get("/stats/prometheus")).await.expect("scrape");
        scrapes.push(r.status);
    }
    let prom = proxy.admin_get("/stats/prometheus").await.text();
    let pick = |name: &str| -> Vec<String> {
        prom.lines()
            .filter(|l| {
                l.split(['{', ' ']).next() == Some(name) || l.strip_prefix("# TYPE ").is_some_and(|r| r.starts_with(&format!("{name} ")))
            })
            .map(str::to_string)
            .collect()
    };
    let stats = proxy.admin_get("/stats").await.text();
    let names: Vec<&str> = stats.lines().filter_map(|l| l.split_once(": ").map(|(n, _)| n)).collect();
    let info = proxy.admin_get("/server_info").await.echo();
    json!({
        "health": health,
        "scrapes": scrapes,
        "upstream_rq": pick("envoy_cluster_upstream_rq"),
        "upstream_rq_total": pick("envoy_cluster_upstream_rq_total"),
        "server_live": pick("envoy_server_live"),
        "outside_the_inclusion_list": names.iter().filter(|n| n.starts_with("http.") || n.starts_with("listener.")).count(),
        "agent_traffic_stats": names.iter().filter(|n| n.starts_with("cluster.agent;.upstream_rq_total")).count(),
        "locality": info["node"]["locality"]["zone"],
    })
}

#[tokio::test]
async fn an_istio_sidecar_bootstrap_starts_envoy_and_weft_alike() {
    let agent = Upstream::start("agent").await;
    let cp = ControlPlane::start().await;
    let envoy = observe(ProxyKind::Envoy, &cp, agent.port()).await;
    let weft = observe(ProxyKind::Weft, &cp, agent.port()).await;
    assert_eq!(weft, envoy, "weft and Envoy differ\n--- weft ---\n{weft:#}\n--- envoy ---\n{envoy:#}");
    assert_eq!(envoy["health"], 200);
    assert_eq!(envoy["scrapes"], json!([200, 200]));
    assert_eq!(
        envoy["upstream_rq_total"],
        json!([
            "# TYPE envoy_cluster_upstream_rq_total counter",
            "envoy_cluster_upstream_rq_total{cluster_name=\"agent\"} 1",
            "envoy_cluster_upstream_rq_total{cluster_name=\"prometheus_stats\"} 2"
        ])
    );
    assert_eq!(envoy["outside_the_inclusion_list"], 0);
}

/// `upstream_connection_options.tcp_keepalive` (Istio writes it for `xds-grpc` and for a
/// DestinationRule's `tcpKeepalive`): the proxy's pooled upstream connection carries a
/// keepalive timer of at most `keepalive_time`, in Envoy and in weft (seen with `ss -o`).
#[tokio::test]
async fn upstream_tcp_keepalive_is_set_on_upstream_connections() {
    let up = Upstream::start("up").await;
    for kind in [ProxyKind::Envoy, ProxyKind::Weft] {
        let ports = crate::harness::Ports { admin: free_port(), listen: [free_port(), free_port(), free_port(), free_port()] };
        let cfg = crate::harness::http_bootstrap(
            &ports,
            json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}]}]),
            vec![crate::harness::cluster(
                "up",
                &[up.port()],
                json!({"upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 77, "keepalive_interval": 9, "keepalive_probes": 3}}}),
            )],
            json!({}),
        );
        let text = serde_json::to_string_pretty(&cfg).unwrap_or_default();
        let proxy = match ProxyProcess::start(kind, WEFT, &text, ports.admin).await {
            Ok(p) => p,
            Err(e) => panic!("{kind}: {e:#}"),
        };
        let r = send(&format!("127.0.0.1:{}", ports.listen[0]), Req::get("/")).await.expect("request");
        assert_eq!(r.status, 200, "{kind}");
        let pid = proxy.pid().unwrap_or_default();
        let out = weft_test_support::tool("ss")
            .args(["-tnopH", "state", "established", "dport", "=", &format!(":{}", up.port())])
            .output()
            .expect("ss");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text.lines().find(|l| l.contains(&format!("pid={pid},"))).unwrap_or_default().to_string();
        assert!(
            line.contains("timer:(keepalive,1min1") || line.contains("timer:(keepalive,1min"),
            "{kind}: no keepalive timer on its upstream connection:\n{text}"
        );
        drop(proxy);
    }
}
