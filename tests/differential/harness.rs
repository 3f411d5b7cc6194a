//! Shared pieces of the differential suite: build one bootstrap, run it through real Envoy and
//! through `weft proxy`, send the same requests to both, and compare what a caller sees.

use serde_json::{json, Value};
use weft_test_support::{free_port, send, ProxyKind, ProxyProcess, Reply, Req, Upstream};

pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// Ports one proxy run uses: its admin port and up to four listener ports.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub admin: u16,
    pub listen: [u16; 4],
}

pub struct Run {
    pub kind: ProxyKind,
    pub proxy: ProxyProcess,
    pub ports: Ports,
}

impl Run {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.listen[0])
    }
    pub fn addr_n(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports.listen[i])
    }
    /// Sends to the first listener; without an explicit host the request says `test.local`,
    /// so both proxies see the same Host whatever port they listen on.
    pub async fn send(&self, mut req: Req) -> Reply {
        if req.authority.is_none() {
            req.authority = Some("test.local".into());
        }
        match send(&self.addr(), req.clone()).await {
            Ok(r) => r,
            Err(e) => panic!("{}: request {} {} failed: {e}", self.kind, req.method, req.path),
        }
    }
    pub async fn stat(&self, name: &str) -> i64 {
        self.proxy.stat(name).await
    }
}

pub async fn start(kind: ProxyKind, build: &dyn Fn(&Ports) -> Value) -> Run {
    let ports = Ports { admin: free_port(), listen: [free_port(), free_port(), free_port(), free_port()] };
    let cfg = build(&ports);
    let text = serde_json::to_string_pretty(&cfg).unwrap_or_default();
    match ProxyProcess::start(kind, WEFT, &text, ports.admin).await {
        Ok(proxy) => Run { kind, proxy, ports },
        Err(e) => panic!("{kind} failed to start: {e:#}\nbootstrap:\n{text}"),
    }
}

/// Starts Envoy, then weft, from the same bootstrap builder.
pub async fn both(build: impl Fn(&Ports) -> Value) -> [Run; 2] {
    let envoy = start(ProxyKind::Envoy, &build).await;
    let weft = start(ProxyKind::Weft, &build).await;
    [envoy, weft]
}

pub fn admin(p: &Ports) -> Value {
    json!({"address": {"socket_address": {"address": "127.0.0.1", "port_value": p.admin}}})
}

pub fn addr(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

pub fn router() -> Value {
    json!({"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
}

/// An HTTP connection manager filter; `extra` fields are merged into its typed_config.
pub fn hcm(route_config: Value, extra: Value) -> Value {
    let mut tc = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "route_config": route_config,
        "http_filters": [router()],
    });
    merge(&mut tc, extra);
    json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": tc})
}

pub fn listener(name: &str, port: u16, filters: Value) -> Value {
    json!({"name": name, "address": addr(port), "filter_chains": [{"filters": filters}]})
}

/// A STATIC cluster over loopback ports; `extra` fields are merged in.
pub fn cluster(name: &str, ports: &[u16], extra: Value) -> Value {
    let eps: Vec<Value> = ports.iter().map(|p| json!({"endpoint": {"address": addr(*p)}})).collect();
    let mut c = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": eps}]},
    });
    merge(&mut c, extra);
    c
}

/// The usual shape: one HTTP listener on `listen[0]` with these virtual hosts.
pub fn http_bootstrap(p: &Ports, vhosts: Value, clusters: Vec<Value>, hcm_extra: Value) -> Value {
    json!({
        "admin": admin(p),
        "static_resources": {
            "listeners": [listener("http", p.listen[0], json!([hcm(json!({"name": "local", "virtual_hosts": vhosts}), hcm_extra)]))],
            "clusters": clusters,
        }
    })
}

/// Adds a second HTTP listener on `listen[1]` with `vhosts`; `hcm_extra` merges into its manager,
/// whose stat prefix is `name`.
pub fn with_second_listener(mut b: Value, p: &Ports, name: &str, vhosts: Value, hcm_extra: Value) -> Value {
    let mut extra = json!({"stat_prefix": name});
    merge(&mut extra, hcm_extra);
    let l = listener(name, p.listen[1], json!([hcm(json!({"name": name, "virtual_hosts": vhosts}), extra)]));
    if let Some(list) = b["static_resources"]["listeners"].as_array_mut() {
        list.push(l);
    }
    b
}

/// Objects merge recursively; anything else is replaced.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(e) => merge(e, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

const VOLATILE_RESPONSE: &[&str] = &["date", "x-envoy-upstream-service-time", "content-length", "x-request-id"];
const VOLATILE_UPSTREAM: &[&str] = &["x-request-id"];

/// What a caller sees, minus values that legitimately differ between runs (dates, timings,
/// generated ids — their presence is kept).
pub fn view(r: &Reply) -> Value {
    let mut headers = serde_json::Map::new();
    for (k, v) in r.headers.iter() {
        let val =
            if VOLATILE_RESPONSE.contains(&k.as_str()) { "<set>".to_string() } else { String::from_utf8_lossy(v.as_bytes()).into_owned() };
        headers.insert(k.to_string(), Value::String(val));
    }
    let body = match r.echo() {
        Value::Object(mut o) => {
            if let Some(Value::Object(h)) = o.get_mut("headers") {
                for k in VOLATILE_UPSTREAM {
                    if h.contains_key(*k) {
                        h.insert(k.to_string(), json!("<set>"));
                    }
                }
            }
            Value::Object(o)
        }
        _ => Value::String(r.text()),
    };
    json!({"status": r.status, "headers": headers, "body": body})
}

/// Sends each request to both proxies and asserts the views are equal; returns Envoy's views.
pub async fn same(runs: &[Run; 2], reqs: &[Req]) -> Vec<Value> {
    let mut out = Vec::new();
    for req in reqs {
        let e = view(&runs[0].send(req.clone()).await);
        let w = view(&runs[1].send(req.clone()).await);
        assert_eq!(
            w,
            e,
            "weft and Envoy differ for {} {} {:?}\n--- weft ---\n{}\n--- envoy ---\n{}",
            req.method,
            req.path,
            req.headers,
            serde_json::to_string_pretty(&w).unwrap_or_default(),
            serde_json::to_string_pretty(&e).unwrap_or_default()
        );
        out.push(e);
    }
    out
}

/// A route answering with a fixed body, to see which route a request took.
pub fn direct(path_match: Value, body: &str) -> Value {
    json!({"match": path_match, "direct_response": {"status": 200, "body": {"inline_string": body}}})
}

/// Envoy and weft on the same one-route bootstrap (`hcm_extra` merged into the connection
/// manager), each with its own recording upstream: `[envoy's, weft's]`.
pub async fn pair(hcm_extra: Value) -> ([Upstream; 2], Run, Run) {
    let ups = [Upstream::start("envoy-up").await, Upstream::start("weft-up").await];
    let build = |port: u16, extra: Value| {
        move |p: &Ports| {
            let vh = json!([{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}]}]);
            http_bootstrap(p, vh, vec![cluster("up", &[port], json!({}))], extra.clone())
        }
    };
    let envoy = start(ProxyKind::Envoy, &build(ups[0].port(), hcm_extra.clone())).await;
    let weft = start(ProxyKind::Weft, &build(ups[1].port(), hcm_extra)).await;
    (ups, envoy, weft)
}

/// A cluster of one loopback port that speaks HTTP/2 (gRPC).
pub fn h2_cluster(name: &str, port: u16) -> Value {
    cluster(
        name,
        &[port],
        json!({"typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}}),
    )
}
