//! The ADS server's bookkeeping, seen by a client speaking the protocol directly: what is
//! resent, what is announced removed, and what proxy-status shows, across config changes,
//! subscriptions, NACKs and reconnects.

use std::path::Path;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use weft_control::server::{self, Options, Running};
use weft_control::store;
use weft_test_support::certs::TempDir;
use weft_xds::proto::{CLUSTER, ENDPOINT};

const WAIT: Duration = Duration::from_secs(10);

fn service(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 80}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: default}}\nspec: {{address: {ip}, labels: {{app: {name}}}}}\n"
    )
}

fn cluster(name: &str) -> String {
    format!("outbound|80||{name}.default.svc.cluster.local")
}

struct Plane {
    running: Running,
    dir: TempDir,
}

impl Plane {
    async fn start(services: &[(&str, &str)]) -> Plane {
        let dir = TempDir::new("ads").expect("temp dir");
        write_mesh(dir.path(), services);
        let running = server::start(Options {
            config_dir: Some(dir.path().to_path_buf()),
            debounce: Duration::from_millis(10),
            ..Options::default()
        })
        .await
        .expect("control plane starts");
        Plane { running, dir }
    }

    /// Rewrites the mesh and publishes it at once (not waiting for the file watcher).
    fn change(&self, services: &[(&str, &str)]) {
        write_mesh(self.dir.path(), services);
        self.running.shared.publish(store::load_dir(self.dir.path()).expect("config dir loads"));
    }

    async fn client(&self) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
        AggregatedDiscoveryServiceClient::connect(format!("http://{}", self.running.xds_addr)).await.expect("connect to ADS")
    }

    /// Polls until proxy-status shows `want` for type `short`.
    async fn wait_status(&self, short: &str, want: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.status(short).0 != want {
            assert!(tokio::time::Instant::now() < deadline, "{short} never shown {want}: {:?}", self.status(short));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// proxy-status's word for one type of the only connected proxy.
    fn status(&self, short: &str) -> (String, Option<String>) {
        let proxies = self.running.shared.proxies.lock();
        let p = proxies.values().next().expect("one proxy connected");
        let t = p.types.get(short).cloned().unwrap_or_default();
        (t.state().to_string(), t.nack)
    }
}

fn write_mesh(dir: &Path, services: &[(&str, &str)]) {
    let text: Vec<String> = services.iter().map(|(n, ip)| service(n, ip)).collect();
    std::fs::write(dir.join("mesh.yaml"), text.join("---\n")).expect("write mesh");
}

fn node() -> Node {
    Node { id: "sidecar~10.9.0.1~client-1.default~default.svc.cluster.local".into(), ..Default::default() }
}

struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl Delta {
    async fn open(plane: &Plane, first: DeltaDiscoveryRequest) -> Delta {
        let (tx, reqs) = mpsc::channel(8);
        tx.send(first).await.expect("queue first request");
        let rx = plane.client().await.delta_aggregated_resources(ReceiverStream::new(reqs)).await.expect("delta stream").into_inner();
        Delta { tx, rx }
    }

    async fn send(&self, req: DeltaDiscoveryRequest) {
        self.tx.send(req).await.expect("request stream open");
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message()).await.expect("a response in time").expect("stream ok").expect("stream open")
    }

    /// Asserts nothing arrives for a while (used only after an ACKed exchange, where anything
    /// that arrives is an unwanted push).
    async fn quiet(&mut self) {
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(300), self.rx.message()).await {
            panic!("expected no push, got {m:?}");
        }
    }

    async fn ack(&self, r: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest { type_url: r.type_url.clone(), response_nonce: r.nonce.clone(), ..Default::default() }).await;
    }
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<String> {
    let mut n: Vec<String> = r.resources.iter().map(|r| r.name.clone()).collect();
    n.sort();
    n
}

fn subscribe(name: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest { type_url: ENDPOINT.into(), resource_names_subscribe: vec![cluster(name)], ..Default::default() }
}

fn unsubscribe_b_subscribe(name: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest { resource_names_unsubscribe: vec![cluster("b")], ..subscribe(name) }
}

#[tokio::test]
async fn delta_sends_changes_removals_and_resubscriptions_once() {
    let plane = Plane::start(&[("a", "10.9.0.2"), ("b", "10.9.0.3"), ("c", "10.9.0.5"), ("d", "10.9.0.7")]).await;
    let mut d = Delta::open(&plane, DeltaDiscoveryRequest { node: Some(node()), type_url: CLUSTER.into(), ..Default::default() }).await;
    let cds = d.recv().await;
    assert!(names(&cds).contains(&cluster("a")) && names(&cds).contains(&cluster("b")), "{:?}", names(&cds));
    d.ack(&cds).await;

    d.send(DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_subscribe: vec![cluster("a"), cluster("b")],
        ..Default::default()
    })
    .await;
    let eds = d.recv().await;
    assert_eq!(names(&eds), vec![cluster("a"), cluster("b")]);
    d.ack(&eds).await;
    d.quiet().await;

    // Unsubscribed from b: b's endpoints changing is none of this proxy's business. (c's
    // subscription, in the same request, is answered: the server has read the request.)
    d.send(unsubscribe_b_subscribe("c")).await;
    let eds = d.recv().await;
    assert_eq!(names(&eds), vec![cluster("c")]);
    d.ack(&eds).await;
    plane.change(&[("a", "10.9.0.2"), ("b", "10.9.0.4"), ("c", "10.9.0.6"), ("d", "10.9.0.7")]);
    let eds = d.recv().await;
    assert_eq!(names(&eds), vec![cluster("c")], "b's change is not pushed to a proxy that dropped it");
    d.ack(&eds).await;

    // Subscribed again: b comes back, a and c are not resent.
    d.send(subscribe("b")).await;
    let eds = d.recv().await;
    assert_eq!(names(&eds), vec![cluster("b")]);
    let any = eds.resources[0].resource.as_ref().expect("resource body");
    assert!(String::from_utf8_lossy(&any.value).contains("10.9.0.4"), "b's current endpoint");
    d.ack(&eds).await;

    // Dropped and wanted back with nothing pushed in between: still sent, the proxy has no
    // copy. (Requests are read in order, so the second one meets the first's effect.)
    d.send(DeltaDiscoveryRequest { type_url: ENDPOINT.into(), resource_names_unsubscribe: vec![cluster("b")], ..Default::default() }).await;
    d.send(subscribe("b")).await;
    let eds = d.recv().await;
    assert_eq!(names(&eds), vec![cluster("b")]);
    d.ack(&eds).await;

    // b goes away: CDS and EDS both say it is removed, and only that.
    plane.change(&[("a", "10.9.0.2"), ("c", "10.9.0.6"), ("d", "10.9.0.7")]);
    let mut removed = Vec::new();
    for _ in 0..2 {
        let r = d.recv().await;
        assert!(r.resources.is_empty(), "nothing changed for a: {:?}", names(&r));
        removed.push((r.type_url.clone(), r.removed_resources.clone()));
        d.ack(&r).await;
    }
    removed.sort();
    assert_eq!(removed, vec![(CLUSTER.to_string(), vec![cluster("b")]), (ENDPOINT.to_string(), vec![cluster("b")])]);
    plane.wait_status("CDS", "SYNCED").await;
    plane.wait_status("EDS", "SYNCED").await;
    d.quiet().await;
}

#[tokio::test]
async fn delta_reconnect_is_not_sent_what_it_already_has() {
    let plane = Plane::start(&[("a", "10.9.0.2"), ("b", "10.9.0.3")]).await;
    let mut d = Delta::open(&plane, DeltaDiscoveryRequest { node: Some(node()), type_url: CLUSTER.into(), ..Default::default() }).await;
    let cds = d.recv().await;
    let versions = cds.resources.iter().map(|r| (r.name.clone(), r.version.clone())).collect();
    drop(d);

    // The reconnecting proxy has everything but a stale b.
    let mut have: std::collections::HashMap<String, String> = versions;
    have.insert(cluster("b"), "stale".into());
    let mut d = Delta::open(
        &plane,
        DeltaDiscoveryRequest { node: Some(node()), type_url: CLUSTER.into(), initial_resource_versions: have, ..Default::default() },
    )
    .await;
    let cds = d.recv().await;
    assert_eq!(names(&cds), vec![cluster("b")]);
    assert!(cds.removed_resources.is_empty());
}

struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Sotw {
    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message()).await.expect("a response in time").expect("stream ok").expect("stream open")
    }

    async fn reply(&self, r: &DiscoveryResponse, names: &[String], error: Option<&str>) {
        let req = DiscoveryRequest {
            type_url: r.type_url.clone(),
            version_info: if error.is_some() { String::new() } else { r.version_info.clone() },
            response_nonce: r.nonce.clone(),
            resource_names: names.to_vec(),
            error_detail: error.map(|e| RpcStatus { code: 3, message: e.into(), ..Default::default() }),
            ..Default::default()
        };
        self.tx.send(req).await.expect("request stream open");
    }
}

#[tokio::test]
async fn state_of_the_world_resends_only_changed_endpoints_and_shows_a_nack() {
    let plane = Plane::start(&[("a", "10.9.0.2"), ("b", "10.9.0.3")]).await;
    let (tx, reqs) = mpsc::channel(8);
    tx.send(DiscoveryRequest { node: Some(node()), type_url: CLUSTER.into(), ..Default::default() }).await.expect("queue");
    let rx = plane.client().await.stream_aggregated_resources(ReceiverStream::new(reqs)).await.expect("sotw stream").into_inner();
    let mut s = Sotw { tx, rx };
    let cds = s.recv().await;
    s.reply(&cds, &[], None).await;
    let eds_names = vec![cluster("a"), cluster("b")];
    s.tx.send(DiscoveryRequest { type_url: ENDPOINT.into(), resource_names: eds_names.clone(), ..Default::default() })
        .await
        .expect("eds request");
    let eds = s.recv().await;
    assert_eq!(eds.resources.len(), 2);
    s.reply(&eds, &eds_names, None).await;

    // Only b's endpoints change: EDS carries b alone, CDS is not resent.
    plane.change(&[("a", "10.9.0.2"), ("b", "10.9.0.4")]);
    let eds = s.recv().await;
    assert_eq!(eds.type_url, ENDPOINT);
    assert_eq!(eds.resources.len(), 1, "only the changed cluster's endpoints");
    assert!(String::from_utf8_lossy(&eds.resources[0].value).contains(&cluster("b")));

    // The proxy rejects it: proxy-status says NACKED with its words, until a later ACK.
    s.reply(&eds, &eds_names, Some("endpoint refused for the test")).await;
    plane.wait_status("EDS", "NACKED").await;
    assert_eq!(plane.status("EDS").1.as_deref(), Some("endpoint refused for the test"));
    assert_eq!(plane.status("CDS").0, "SYNCED");
}

/// A weft sidecar that fetches service clusters on first use, of workload `app`.
fn on_demand_node(pod: &str, app: &str) -> Node {
    let meta = serde_json::json!({"WEFT_ON_DEMAND": "true", "NAMESPACE": "default", "LABELS": {"app": app}});
    let fields = match meta {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("an object literal"),
    };
    weft_xds::ads_client::node(&format!("sidecar~10.9.0.1~{pod}.default~default.svc.cluster.local"), "", &fields)
}

fn cds_subscribe(names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: CLUSTER.into(),
        resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

fn service_clusters(r: &DeltaDiscoveryResponse) -> Vec<String> {
    names(r).into_iter().filter(|n| n.starts_with("outbound|")).collect()
}

#[tokio::test]
async fn on_demand_cds_sends_what_a_workload_asked_for_and_a_new_replica_gets_it_at_once() {
    let plane = Plane::start(&[("a", "10.9.0.2"), ("b", "10.9.0.3"), ("c", "10.9.0.5")]).await;
    let first = DeltaDiscoveryRequest { node: Some(on_demand_node("client-1", "client")), type_url: CLUSTER.into(), ..Default::default() };
    let mut d = Delta::open(&plane, first).await;
    let cds = d.recv().await;
    assert!(service_clusters(&cds).is_empty(), "no service cluster before one is used: {:?}", names(&cds));
    assert!(names(&cds).contains(&"PassthroughCluster".to_string()), "the built-in clusters come with the wildcard: {:?}", names(&cds));
    d.ack(&cds).await;

    // b is asked for (next to the wildcard, as Envoy's on-demand CDS does): b alone arrives.
    d.send(cds_subscribe(&["*", &cluster("b")])).await;
    let cds = d.recv().await;
    assert_eq!(names(&cds), vec![cluster("b")]);
    d.ack(&cds).await;

    // A name the mesh does not have is answered as removed: "no such cluster", at once.
    d.send(cds_subscribe(&["outbound|80||nowhere.default.svc.cluster.local"])).await;
    let cds = d.recv().await;
    assert!(cds.resources.is_empty(), "{:?}", names(&cds));
    assert_eq!(cds.removed_resources, vec!["outbound|80||nowhere.default.svc.cluster.local".to_string()]);
    d.ack(&cds).await;

    // A change to a service this proxy never used reaches it not at all.
    plane.change(&[("a", "10.9.0.2"), ("b", "10.9.0.3"), ("c", "10.9.0.5"), ("d", "10.9.0.7")]);
    d.quiet().await;

    // Another replica of the workload (or this one restarted) gets b with its first response.
    let first = DeltaDiscoveryRequest { node: Some(on_demand_node("client-2", "client")), type_url: CLUSTER.into(), ..Default::default() };
    let mut other = Delta::open(&plane, first).await;
    let cds = other.recv().await;
    assert_eq!(service_clusters(&cds), vec![cluster("b")], "the workload's working set");
    other.ack(&cds).await;
    // A proxy of another workload does not.
    let first =
        DeltaDiscoveryRequest { node: Some(on_demand_node("stranger-1", "stranger")), type_url: CLUSTER.into(), ..Default::default() };
    let mut stranger = Delta::open(&plane, first).await;
    assert!(service_clusters(&stranger.recv().await).is_empty());

    // b leaves the mesh: both proxies that hold it are told, and a proxy of the workload that
    // starts now is not sent it.
    plane.change(&[("a", "10.9.0.2"), ("c", "10.9.0.5"), ("d", "10.9.0.7")]);
    for p in [&mut d, &mut other] {
        let r = p.recv().await;
        assert_eq!((r.type_url.as_str(), r.removed_resources.clone()), (CLUSTER, vec![cluster("b")]));
        p.ack(&r).await;
    }
    stranger.quiet().await;
    let first = DeltaDiscoveryRequest { node: Some(on_demand_node("client-3", "client")), type_url: CLUSTER.into(), ..Default::default() };
    let mut third = Delta::open(&plane, first).await;
    assert!(service_clusters(&third.recv().await).is_empty());

    // A state-of-the-world client asks with `*` and the names: the same scoping.
    let (tx, reqs) = mpsc::channel(8);
    let ask = DiscoveryRequest {
        node: Some(on_demand_node("client-4", "sotw")),
        type_url: CLUSTER.into(),
        resource_names: vec!["*".into(), cluster("c")],
        ..Default::default()
    };
    tx.send(ask).await.expect("queue");
    let rx = plane.client().await.stream_aggregated_resources(ReceiverStream::new(reqs)).await.expect("sotw stream").into_inner();
    let mut s = Sotw { tx, rx };
    let cds = s.recv().await;
    let got: Vec<String> = cds
        .resources
        .iter()
        .filter_map(|a| weft_xds::proto::from_any(a).ok())
        .filter_map(|j| j["name"].as_str().map(str::to_string))
        .filter(|n| n.starts_with("outbound|"))
        .collect();
    assert_eq!(got, vec![cluster("c")]);
}

#[tokio::test]
async fn a_sidecar_resource_bounds_what_an_on_demand_proxy_may_fetch() {
    let plane = Plane::start(&[("a", "10.9.0.2"), ("b", "10.9.0.3")]).await;
    let sidecar = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: default}\nspec:\n  egress: [{hosts: [\"./a.default.svc.cluster.local\"]}]\n";
    std::fs::write(plane.dir.path().join("sidecar.yaml"), sidecar).expect("write sidecar");
    plane.running.shared.publish(store::load_dir(plane.dir.path()).expect("config dir loads"));
    let first = DeltaDiscoveryRequest { node: Some(on_demand_node("client-1", "client")), type_url: CLUSTER.into(), ..Default::default() };
    let mut d = Delta::open(&plane, first).await;
    let cds = d.recv().await;
    d.ack(&cds).await;
    d.send(cds_subscribe(&["*", &cluster("a"), &cluster("b")])).await;
    let cds = d.recv().await;
    assert_eq!(names(&cds), vec![cluster("a")], "b is outside the Sidecar's egress hosts");
    assert_eq!(cds.removed_resources, vec![cluster("b")]);
}
