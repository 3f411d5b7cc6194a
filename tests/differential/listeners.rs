//! TCP proxying, filter-chain selection (port, SNI, transport, ALPN via the inspectors) and
//! the original-destination hand-off behind an iptables REDIRECT in a network namespace.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use weft_test_support::netns::Netns;
use weft_test_support::{eventually, ProxyKind, TcpEcho};

use crate::harness::*;

fn tcp_filter(prefix: &str, cluster: &str) -> Value {
    json!([{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": prefix, "cluster": cluster}}])
}

/// Connects, sends `first`, and returns the upstream's greeting line plus what came back.
async fn tcp_exchange(addr: &str, first: &[u8]) -> (String, Vec<u8>) {
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut r = BufReader::new(s);
    r.get_mut().write_all(first).await.expect("write");
    let mut name = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut name)).await;
    let mut echoed = vec![0u8; first.len()];
    let _ = tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read_exact(&mut r, &mut echoed)).await;
    (name.trim().to_string(), echoed)
}

#[tokio::test]
async fn tcp_proxy_bytes_and_counters() {
    let echo = TcpEcho::start("echo").await;
    let port = echo.port();
    let runs = both(|p| {
        json!({"admin": admin(p), "static_resources": {
            "listeners": [listener("tcp", p.listen[0], tcp_filter("raw", "echo"))],
            "clusters": [cluster("echo", &[port], json!({}))]}})
    })
    .await;
    for r in &runs {
        let (name, echoed) = tcp_exchange(&r.addr(), b"hello over tcp").await;
        assert_eq!((name.as_str(), echoed.as_slice()), ("echo", &b"hello over tcp"[..]), "{}", r.kind);
        eventually(Duration::from_secs(5), "tcp counters", || async {
            (r.stat("tcp.raw.downstream_cx_total").await == 1 && r.stat("tcp.raw.downstream_cx_rx_bytes_total").await == 14).then_some(())
        })
        .await;
        assert_eq!(r.stat("cluster.echo.upstream_cx_total").await, 1, "{}", r.kind);
    }
}

/// A minimal TLS 1.3 ClientHello with SNI and ALPN: enough for tls_inspector.
fn client_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
    let mut ext = Vec::new();
    let name = sni.as_bytes();
    let mut sni_ext = Vec::new();
    sni_ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni_ext.push(0);
    sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_ext.extend_from_slice(name);
    ext.extend_from_slice(&0u16.to_be_bytes());
    ext.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sni_ext);
    if !alpn.is_empty() {
        let mut list = Vec::new();
        for p in alpn {
            list.push(p.len() as u8);
            list.extend_from_slice(p.as_bytes());
        }
        ext.extend_from_slice(&16u16.to_be_bytes());
        ext.extend_from_slice(&((list.len() + 2) as u16).to_be_bytes());
        ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
        ext.extend_from_slice(&list);
    }
    // supported_versions: TLS 1.3
    ext.extend_from_slice(&[0, 43, 0, 3, 2, 3, 4]);
    let mut hello = vec![3, 3];
    hello.extend_from_slice(&[7u8; 32]);
    hello.push(0);
    hello.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    hello.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&hello);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[tokio::test]
async fn filter_chain_match_by_sni_transport_alpn_and_port() {
    let names = ["tls-a", "tls-wild", "tls-other", "h2c", "http1", "default", "port"];
    let mut echoes = Vec::new();
    for n in names {
        echoes.push(TcpEcho::start(n).await);
    }
    let ports: Vec<u16> = echoes.iter().map(|e| e.port()).collect();
    let runs = both(|p| {
        let chain = |m: Value, c: &str| json!({"filter_chain_match": m, "filters": tcp_filter(c, c)});
        let sniffing = json!({
            "name": "sniffing", "address": addr(p.listen[0]),
            "listener_filters": [
                {"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}},
                {"name": "envoy.filters.listener.http_inspector", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"}}],
            "filter_chains": [
                chain(json!({"server_names": ["a.example"], "transport_protocol": "tls"}), "tls-a"),
                chain(json!({"server_names": ["*.wild.example"], "transport_protocol": "tls"}), "tls-wild"),
                chain(json!({"transport_protocol": "tls"}), "tls-other"),
                chain(json!({"application_protocols": ["h2c"]}), "h2c"),
                chain(json!({"application_protocols": ["http/1.1"]}), "http1"),
            ],
            "default_filter_chain": {"filters": tcp_filter("default", "default")},
        });
        let by_port = json!({"name": "by_port", "address": addr(p.listen[1]), "filter_chains": [
            chain(json!({"destination_port": p.listen[1]}), "port"),
            chain(json!({"destination_port": 1}), "default"),
        ]});
        let clusters: Vec<Value> = names.iter().zip(&ports).map(|(n, port)| cluster(n, &[*port], json!({}))).collect();
        json!({"admin": admin(p), "static_resources": {"listeners": [sniffing, by_port], "clusters": clusters}})
    })
    .await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (client_hello("a.example", &["h2"]), "tls-a"),
        (client_hello("x.wild.example", &[]), "tls-wild"),
        (client_hello("b.example", &["http/1.1"]), "tls-other"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), "h2c"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "http1"),
        (b"\x00\x01binary protocol\n".to_vec(), "default"),
    ];
    for r in &runs {
        for (bytes, want) in &cases {
            let (name, echoed) = tcp_exchange(&r.addr(), bytes).await;
            assert_eq!(name, *want, "{}: chain for {:?}", r.kind, String::from_utf8_lossy(&bytes[..bytes.len().min(20)]));
            assert_eq!(&echoed, bytes, "{}: bytes must pass through untouched after inspection", r.kind);
        }
        let (name, _) = tcp_exchange(&r.addr_n(1), b"x").await;
        assert_eq!(name, "port", "{}", r.kind);
    }
}

/// An upstream HTTP server inside the namespace (python's http.server), serving `marker`.
struct Served(std::process::Child, std::path::PathBuf);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn serve_in(ns: &Netns, ip: &str, port: u16, marker: &str) -> Served {
    let dir = weft_test_support::proxy::temp_dir("www");
    std::fs::write(dir.join("marker"), marker).expect("write marker");
    let child = ns
        .command("python3")
        .args(["-m", "http.server", &port.to_string(), "--bind", ip, "--directory"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 http.server");
    Served(child, dir)
}

fn curl_in(ns: &Netns, url: &str) -> String {
    let out = ns.command("curl").args(["-s", "-m", "5", "-D", "-", url]).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn original_dst_handoff_behind_iptables_redirect() {
    let ns = match Netns::new("odst") {
        Ok(ns) => ns,
        Err(e) => panic!("{e}"),
    };
    // A service address local to the namespace; no route leads out of it.
    ns.exec("ip", &["addr", "add", "10.99.0.1/32", "dev", "lo"]).expect("addr");
    let _app = serve_in(&ns, "10.99.0.1", 8080, "app-8080");
    let _other = serve_in(&ns, "10.99.0.1", 9090, "other-9090");
    // Python's servers start slower than the proxies; wait for both before capture is on, or
    // the first proxy's request can meet a port nobody listens on yet (seen once in CI).
    for (port, marker) in [(8080, "app-8080"), (9090, "other-9090")] {
        eventually(Duration::from_secs(20), "app server answers in the namespace", || async {
            curl_in(&ns, &format!("http://10.99.0.1:{port}/marker")).contains(marker).then_some(())
        })
        .await;
    }
    // Capture outbound TCP to 10.99.0.0/24, except the proxy's own (GID 1337), as Istio does.
    ns.exec(
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            "10.99.0.0/24",
            "-m",
            "owner",
            "!",
            "--gid-owner",
            "1337",
            "-j",
            "REDIRECT",
            "--to-ports",
            "15001",
        ],
    )
    .expect("iptables");

    let bootstrap = |admin_port: u16| {
        json!({"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}}, "static_resources": {
        "listeners": [
            {"name": "virtualOutbound", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}}, "use_original_dst": true,
             "listener_filters": [{"name": "envoy.filters.listener.original_dst", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}}],
             "filter_chains": [{"filters": tcp_filter("passthrough", "PassthroughCluster")}]},
            {"name": "10.99.0.1_8080", "address": {"socket_address": {"address": "10.99.0.1", "port_value": 8080}}, "bind_to_port": false,
             "filter_chains": [{"filters": [hcm(json!({"name": "app", "virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}, "response_headers_to_add": [{"header": {"key": "x-via", "value": "app-listener"}}]}]}]}), json!({"stat_prefix": "outbound_8080"}))]}]},
        ],
        "clusters": [
            {"name": "PassthroughCluster", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "1s"},
            {"name": "app", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "1s"},
        ]}})
    };
    for kind in [ProxyKind::Envoy, ProxyKind::Weft] {
        let admin_port = 15000;
        let dir = weft_test_support::proxy::temp_dir("odst");
        let cfg = dir.join("bootstrap.yaml");
        std::fs::write(&cfg, serde_json::to_string(&bootstrap(admin_port)).unwrap_or_default()).expect("write bootstrap");
        let bin = match kind {
            ProxyKind::Envoy => weft_test_support::envoy_path().expect("envoy").display().to_string(),
            ProxyKind::Weft => WEFT.to_string(),
        };
        let mut args: Vec<String> =
            vec!["netns".into(), "exec".into(), ns.name.clone(), "setpriv".into(), "--regid=1337".into(), "--clear-groups".into(), bin];
        if kind == ProxyKind::Weft {
            args.push("proxy".into());
        } else {
            args.push("--disable-hot-restart".into());
        }
        args.extend(["-c".into(), cfg.display().to_string(), "--concurrency".into(), "1".into(), "-l".into(), "warning".into()]);
        let log = std::fs::File::create(dir.join("log")).expect("log");
        let mut child = Command::new("ip")
            .args(&args)
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn proxy");
        eventually(Duration::from_secs(20), "proxy ready in the namespace", || async {
            curl_in(&ns, &format!("http://127.0.0.1:{admin_port}/ready")).contains("LIVE").then_some(())
        })
        .await;
        let via_app = curl_in(&ns, "http://10.99.0.1:8080/marker");
        let passthrough = curl_in(&ns, "http://10.99.0.1:9090/marker");
        let stats = curl_in(&ns, &format!("http://127.0.0.1:{admin_port}/stats"));
        let _ = child.kill();
        let _ = child.wait();
        let log_text = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            via_app.contains("app-8080") && via_app.to_ascii_lowercase().contains("x-via: app-listener"),
            "{kind}: 8080 should be handed to its listener:\n{via_app}\n{log_text}"
        );
        assert!(
            passthrough.contains("other-9090") && !passthrough.to_ascii_lowercase().contains("x-via"),
            "{kind}: 9090 should pass through:\n{passthrough}"
        );
        assert!(stats.contains("tcp.passthrough.downstream_cx_total: 1"), "{kind}: passthrough stats:\n{stats}");
        assert!(stats.contains("http.outbound_8080.downstream_rq_total: 1"), "{kind}: hand-off stats");
    }
}

#[tokio::test]
async fn chain_match_by_destination_prefix_and_codec_http2_only() {
    let (a, b) = (TcpEcho::start("loopback-8").await, TcpEcho::start("any").await);
    let (pa, pb) = (a.port(), b.port());
    let up = weft_test_support::Upstream::start("h2only").await;
    let pu = up.port();
    let runs = both(|p| {
        let by_prefix = json!({"name": "by_prefix", "address": {"socket_address": {"address": "0.0.0.0", "port_value": p.listen[0]}}, "filter_chains": [
            {"filter_chain_match": {"prefix_ranges": [{"address_prefix": "127.0.0.0", "prefix_len": 8}]}, "filters": tcp_filter("p8", "loopback-8")},
            {"filter_chain_match": {"prefix_ranges": [{"address_prefix": "127.0.0.2", "prefix_len": 32}]}, "filters": tcp_filter("p32", "any")},
        ]});
        let h2only = listener(
            "h2only",
            p.listen[1],
            json!([hcm(json!({"name": "h2", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "h2only"}}]}]}), json!({"stat_prefix": "h2only", "codec_type": "HTTP2"}))]),
        );
        json!({"admin": admin(p), "static_resources": {"listeners": [by_prefix, h2only], "clusters": [
            cluster("loopback-8", &[pa], json!({})), cluster("any", &[pb], json!({})), cluster("h2only", &[pu], json!({}))]}})
    })
    .await;
    for r in &runs {
        // The longest matching destination prefix wins: 127.0.0.2/32 over 127.0.0.0/8.
        let (name, _) = tcp_exchange(&format!("127.0.0.1:{}", r.ports.listen[0]), b"x").await;
        assert_eq!(name, "loopback-8", "{}", r.kind);
        let (name, _) = tcp_exchange(&format!("127.0.0.2:{}", r.ports.listen[0]), b"x").await;
        assert_eq!(name, "any", "{}", r.kind);
        let h2 = weft_test_support::send(&r.addr_n(1), weft_test_support::Req::get("/").h2()).await.map(|r| r.status).unwrap_or(0);
        assert_eq!(h2, 200, "{}: h2c on an HTTP2-only listener", r.kind);
        let h1 = weft_test_support::send(&r.addr_n(1), weft_test_support::Req::get("/")).await.map(|r| r.status).ok();
        assert_eq!(h1, None, "{}: HTTP/1.1 on an HTTP2-only listener must fail", r.kind);
    }
}
