use super::*;

fn meta(json: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    json.as_object().cloned().unwrap_or_default()
}

fn mesh() -> Arc<Mesh> {
    let m = Mesh::from_node(&meta(serde_json::json!({
        "NAMESPACE": "default", "WORKLOAD_NAME": "productpage-v1", "SERVICE_ACCOUNT": "bookinfo-productpage",
        "LABELS": {"app": "productpage", "version": "v1"}, "CLUSTER_ID": "Kubernetes"})))
    .expect("a mesh proxy");
    let cla = serde_json::json!({"cluster_name": "outbound|9080||reviews.default.svc.cluster.local", "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "10.1.0.7", "port_value": 9080}}},
         "metadata": {"filter_metadata": {"istio": {"workload": "reviews-v2;default;reviews;v2;Kubernetes"}}}}]}]});
    m.set_peers(std::iter::once(&cla));
    m
}

fn info(upstream: Option<&str>, cluster: Option<&str>, authority: &str) -> RequestInfo {
    let conn = Arc::new(crate::listener::ConnInfo {
        id: 1,
        remote: "10.1.0.7:41000".parse().expect("addr"),
        local: "10.1.0.9:9080".parse().expect("addr"),
        original_dst: None,
        sni: None,
        alpn: Vec::new(),
        transport: "raw_buffer",
        tls: None,
    });
    RequestInfo {
        conn,
        request_body: Arc::default(),
        start: std::time::SystemTime::now(),
        started: std::time::Instant::now(),
        protocol: "HTTP/1.1",
        method: http::Method::GET,
        req_headers: http::HeaderMap::new(),
        path: "/".into(),
        authority: authority.into(),
        resp_headers: http::HeaderMap::new(),
        resp_trailers: http::HeaderMap::new(),
        status: 200,
        flags: Vec::new(),
        details: "via_upstream",
        upstream_host: upstream.map(|a| a.parse().expect("addr")),
        upstream_tls: false,
        resp_messages: 0,
        upstream_cluster: cluster.map(str::to_owned),
        upstream_failure: None,
        route_name: String::new(),
        attempts: 1,
        bytes_received: 0,
        bytes_sent: 1200,
        first_byte: None,
        last_rx: None,
    }
}

#[test]
fn the_client_side_names_both_workloads_in_istios_label_order() {
    let m = mesh();
    m.record_http(
        Reporter::Source,
        &info(Some("10.1.0.7:9080"), Some("outbound|9080||reviews.default.svc.cluster.local"), "reviews:9080"),
        7.0,
    );
    let text = m.render();
    let want = "istio_requests_total{reporter=\"source\",source_workload=\"productpage-v1\",source_canonical_service=\"productpage\",source_canonical_revision=\"v1\",source_workload_namespace=\"default\",source_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-productpage\",source_app=\"productpage\",source_version=\"v1\",source_cluster=\"Kubernetes\",destination_workload=\"reviews-v2\",destination_workload_namespace=\"default\",destination_principal=\"unknown\",destination_app=\"reviews\",destination_version=\"v2\",destination_service=\"reviews.default.svc.cluster.local\",destination_canonical_service=\"reviews\",destination_canonical_revision=\"v2\",destination_service_name=\"reviews\",destination_service_namespace=\"default\",destination_cluster=\"Kubernetes\",request_protocol=\"http\",response_code=\"200\",grpc_response_status=\"\",response_flags=\"-\",connection_security_policy=\"unknown\"} 1";
    assert!(text.contains(want), "{text}");
    assert!(text.contains("le=\"10\"} 1") && text.contains("le=\"5\"} 0"), "7 ms falls in the 10 ms bucket:\n{text}");
    assert!(text.contains("istio_response_bytes_bucket{") && text.contains("le=\"1000000000\"}"), "{text}");
    assert!(text.contains("istio_request_duration_milliseconds_sum{") && text.contains("} 7\n"), "{text}");
}

#[test]
fn the_server_side_names_the_caller_from_its_address_and_unknown_callers_are_unknown() {
    let m = mesh();
    m.record_http(Reporter::Destination, &info(Some("127.0.0.1:9080"), Some("inbound|9080||"), "productpage:9080"), 1.0);
    let text = m.render();
    assert!(text.contains("reporter=\"destination\",source_workload=\"reviews-v2\""), "{text}");
    assert!(text.contains("destination_workload=\"productpage-v1\""), "{text}");
    assert!(text.contains("destination_service=\"productpage.default.svc.cluster.local\""), "a short authority is completed:\n{text}");
    assert!(text.contains("connection_security_policy=\"none\""), "plaintext: {text}");
    let mut stranger = info(None, None, "productpage");
    Arc::get_mut(&mut stranger.conn).expect("own").remote = "10.9.9.9:1".parse().expect("addr");
    m.record_http(Reporter::Destination, &stranger, 1.0);
    assert!(m.render().contains("source_workload=\"unknown\",source_canonical_service=\"unknown\""), "a caller the mesh does not know");
}

#[test]
fn a_flood_of_hosts_cannot_grow_the_series_past_the_cap() {
    let m = mesh();
    for i in 0..(MAX_SERIES + 500) {
        m.record_http(Reporter::Destination, &info(None, None, &format!("host-{i}.example.com")), 1.0);
    }
    assert_eq!(m.series_count(), MAX_SERIES);
    assert!(m.render().contains("istio_metrics_series_dropped_total 500"));
    let long = "a".repeat(300) + ".example.com";
    assert_eq!(inbound_service(&long, "default"), None, "an authority past 256 bytes is not a service");
}

#[test]
fn only_mesh_proxies_report() {
    assert!(Mesh::from_node(&meta(serde_json::json!({"LABELS": {"app": "x"}}))).is_none(), "no namespace: not a mesh proxy");
    assert_eq!(outbound_service("outbound|9080|v1|reviews.default.svc.cluster.local"), Some("reviews.default.svc.cluster.local"));
    assert_eq!(outbound_service("inbound|9080||"), None);
    assert!(Workload::from_istio("only;two").is_none());
}

#[test]
fn tcp_connections_are_counted_with_istios_tcp_labels() {
    let m = mesh();
    let i = info(None, None, "");
    let key = m
        .tcp_opened(
            Reporter::Source,
            &i.conn,
            Some("10.1.0.7:9080".parse().expect("addr")),
            false,
            Some("outbound|9080||reviews.default.svc.cluster.local"),
        )
        .expect("a series");
    let labels = "reporter=\"source\",source_workload=\"productpage-v1\",source_canonical_service=\"productpage\",source_canonical_revision=\"v1\",source_workload_namespace=\"default\",source_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-productpage\",source_app=\"productpage\",source_version=\"v1\",source_cluster=\"Kubernetes\",destination_workload=\"reviews-v2\",destination_workload_namespace=\"default\",destination_principal=\"unknown\",destination_app=\"reviews\",destination_version=\"v2\",destination_service=\"reviews.default.svc.cluster.local\",destination_canonical_service=\"reviews\",destination_canonical_revision=\"v2\",destination_service_name=\"reviews\",destination_service_namespace=\"default\",destination_cluster=\"Kubernetes\",request_protocol=\"tcp\",response_flags=\"-\",connection_security_policy=\"unknown\"";
    // A periodic report while open, then the rest at close.
    m.tcp_bytes(&key, 100, 1000);
    let open = m.render();
    for (name, v) in [("istio_tcp_connections_closed_total", 0), ("istio_tcp_received_bytes_total", 100)] {
        assert!(open.contains(&format!("{name}{{{labels}}} {v}\n")), "{name} while open:\n{open}");
    }
    m.tcp_closed(&key, 200, 3000);
    let text = m.render();
    for (name, v) in [
        ("istio_tcp_connections_opened_total", 1),
        ("istio_tcp_connections_closed_total", 1),
        ("istio_tcp_received_bytes_total", 300),
        ("istio_tcp_sent_bytes_total", 4000),
    ] {
        assert!(text.contains(&format!("{name}{{{labels}}} {v}\n")), "{name}:\n{text}");
    }
}

#[test]
fn grpc_requests_count_their_messages_and_status() {
    let m = mesh();
    let mut i = info(Some("10.1.0.7:9080"), Some("outbound|9080||reviews.default.svc.cluster.local"), "reviews:9080");
    i.req_headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    i.resp_trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
    i.request_body.messages.store(3, std::sync::atomic::Ordering::Relaxed);
    i.request_body.received.store(120, std::sync::atomic::Ordering::Relaxed);
    i.resp_messages = 5;
    m.record_http(Reporter::Source, &i, 2.0);
    let text = m.render();
    let line = |name: &str| text.lines().find(|l| l.starts_with(&format!("{name}{{"))).unwrap_or_default().to_owned();
    assert!(line("istio_requests_total").contains("request_protocol=\"grpc\",response_code=\"200\",grpc_response_status=\"14\""), "{text}");
    assert!(line("istio_request_messages_total").ends_with("} 3"), "{text}");
    assert!(line("istio_response_messages_total").ends_with("} 5"), "{text}");
    assert!(text.contains("istio_request_bytes_bucket{") && text.contains("le=\"1000\"} 1"), "the 120 bytes that came:\n{text}");
}

#[test]
fn a_telemetry_plan_removes_upserts_and_disables_per_metric_and_side() {
    let m = mesh();
    let plan = serde_json::json!({
        "server": {"metrics": {
            "REQUEST_COUNT": {"tags": {"response_code": null, "request_method": "request.method", "destination_service": "'svc-' + request.host"}},
            "REQUEST_DURATION": {"disabled": true},
        }},
        "client": {"disabled": true},
        "reporting_interval": "2.5s",
    });
    m.set_plan(Plan::from_metadata(&plan, "metadata").expect("a valid plan"));
    assert_eq!(m.reporting_interval(), std::time::Duration::from_millis(2500));
    let mut a = info(None, None, "productpage:9080");
    let mut b = info(None, None, "productpage:9080");
    b.status = 503;
    a.method = http::Method::POST;
    b.method = http::Method::POST;
    m.record_http(Reporter::Destination, &a, 1.0);
    m.record_http(Reporter::Destination, &b, 1.0);
    m.record_http(Reporter::Source, &info(Some("10.1.0.7:9080"), Some("outbound|9080||reviews.default.svc.cluster.local"), "reviews"), 1.0);
    let text = m.render();
    let requests: Vec<&str> = text.lines().filter(|l| l.starts_with("istio_requests_total{")).collect();
    assert_eq!(requests.len(), 1, "the 200 and the 503 are one series without response_code; no client series:\n{text}");
    let r = requests[0];
    assert!(r.ends_with("} 2") && !r.contains("response_code="), "{r}");
    assert!(r.contains("request_method=\"POST\""), "an upserted label is added: {r}");
    assert!(r.contains("destination_service=\"svc-productpage:9080\""), "an upserted standard label is overwritten: {r}");
    assert!(!text.contains("istio_request_duration_milliseconds_bucket{"), "a disabled metric is not rendered:\n{text}");
    let sizes = text.lines().filter(|l| l.starts_with("istio_response_bytes_count{")).count();
    assert_eq!(sizes, 2, "other metrics keep the standard labels (two response codes):\n{text}");
    // The same plan again changes nothing; another one starts the series over.
    m.set_plan(Plan::from_metadata(&plan, "metadata").expect("valid"));
    assert!(m.render().contains("request_method=\"POST\""));
    m.set_plan(Plan::default());
    assert!(!m.render().contains("istio_requests_total{"), "a changed plan starts over");
    for (bad, says) in [
        (serde_json::json!({"server": {"metrics": {"REQUESTS": {}}}}), "not one of Istio's standard metrics"),
        (serde_json::json!({"server": {"metrics": {"REQUEST_COUNT": {"tags": {"x": "request.nope"}}}}}), "request.nope"),
        (serde_json::json!({"reporting_interval": "soon"}), "reporting_interval"),
    ] {
        let e = Plan::from_metadata(&bad, "metadata").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn the_workloads_table_is_read_by_address_and_wins_over_the_endpoint_sets() {
    let m = mesh();
    let table = serde_json::json!({"cluster_name": WORKLOADS, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "10.1.0.8", "port_value": 0}}},
         "metadata": {"filter_metadata": {"istio": {"workload": "ratings-v1;default;ratings;v1;Kubernetes", "service_account": "ratings",
                                                    "service": "ratings.default.svc.cluster.local"}}}},
        {"endpoint": {"address": {"socket_address": {"address": "10.96.0.20", "port_value": 0}}},
         "metadata": {"filter_metadata": {"istio": {"service": "ratings.default.svc.cluster.local"}}}}]}]});
    let bytes: Arc<[u8]> = weft_xds::proto::to_any(weft_xds::proto::ENDPOINT, &table).expect("encodes").value.into();
    let table = Arc::new(m.workloads_table(bytes).expect("indexes"));
    // An endpoint set naming the same address differently, and one the table lacks.
    let cla = serde_json::json!({"cluster_name": "x", "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "10.1.0.8", "port_value": 9080}}},
         "metadata": {"filter_metadata": {"istio": {"workload": "impostor;default;impostor;v9;Kubernetes"}}}},
        {"endpoint": {"address": {"socket_address": {"address": "10.1.0.7", "port_value": 9080}}},
         "metadata": {"filter_metadata": {"istio": {"workload": "reviews-v2;default;reviews;v2;Kubernetes"}}}}]}]});
    let set = m.peers_of(&cla);
    m.set_peer_sets(Some(&table), std::iter::once(&set));
    let ratings = m.peer(Some("10.1.0.8".parse().expect("ip"))).expect("in the table");
    assert_eq!((ratings.name.as_str(), ratings.version.as_str()), ("ratings-v1", "v1"), "the table wins");
    assert_eq!(ratings.principal, "spiffe://cluster.local/ns/default/sa/ratings");
    assert_eq!(
        m.peer(Some("10.1.0.7".parse().expect("ip"))).map(|w| w.name.clone()).as_deref(),
        Some("reviews-v2"),
        "an address only the set has"
    );
    assert_eq!(m.service_at("10.96.0.20").as_deref(), Some("ratings.default.svc.cluster.local"), "a VIP");
    assert!(m.peer(Some("10.96.0.20".parse().expect("ip"))).is_none(), "a VIP is no workload");
    assert!(m.peer(Some("10.9.9.9".parse().expect("ip"))).is_none());
}
