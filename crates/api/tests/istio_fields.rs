//! Istio's own resources load as Istio loads them: every field of its API is known; fields
//! that only tune traffic load with a warning naming them; fields weft cannot honour are refused
//! by name; and Istio's validation rules for them apply (warn where Istio warns, refuse where it
//! refuses), with file, line and field path.

use std::time::Duration;

use weft_api::networking::OutboundMode;
use weft_api::{load_text, Level, Loaded, Object};

fn fixture(name: &str) -> Loaded {
    let path = format!("{}/tests/fixtures/istio/{name}", env!("CARGO_MANIFEST_DIR"));
    load_text(&std::fs::read_to_string(&path).expect("fixture"), name)
}

/// Every diagnostic as `file:line: Kind ns/name: path: message`.
fn shown(l: &Loaded) -> Vec<String> {
    l.diagnostics.iter().map(|d| d.to_string()).collect()
}

/// `got` has exactly as many diagnostics as `want`, each starting with its `want`.
fn assert_starts(got: &[String], want: &[&str]) {
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (g, w) in got.iter().zip(want) {
        assert!(g.starts_with(w), "got  {g}\nwant {w}…");
    }
}

fn errors(l: &Loaded) -> Vec<String> {
    l.diagnostics.iter().filter(|d| d.level == Level::Error).map(|d| d.to_string()).collect()
}

/// `Kind name` of every object that loaded.
fn names(l: &Loaded) -> Vec<String> {
    l.objects
        .iter()
        .map(|o| {
            let name = match o {
                Object::VirtualService(r) => &r.name,
                Object::DestinationRule(r) => &r.name,
                Object::ServiceEntry(r) => &r.name,
                Object::Gateway(r) => &r.name,
                Object::Sidecar(r) => &r.name,
                Object::WorkloadEntry(r) => &r.name,
                Object::PeerAuthentication(r) => &r.name,
                Object::Service(r) => &r.name,
                Object::Endpoints(r) => &r.name,
                Object::EndpointSlice(r) => &r.name,
            };
            format!("{} {name}", o.kind())
        })
        .collect()
}

/// A one-document file: `kind` with `spec` (YAML, indented two spaces).
fn doc(api: &str, kind: &str, spec: &str) -> String {
    format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: probe}}\nspec:\n{spec}")
}

const NET: &str = "networking.istio.io/v1";

#[test]
fn tuning_fields_load_with_a_warning_naming_each() {
    let l = fixture("tuning.yaml");
    const NOT_ACTED_ON: &str = "is accepted, but weft does not act on it yet";
    let dr = "DestinationRule default/ratings-slow-start: spec.trafficPolicy";
    let want = [
        format!("tuning.yaml:11: {dr}.loadBalancer.warmup: warmup {NOT_ACTED_ON}"),
        format!("tuning.yaml:25: {dr}.connectionPool.http.http2KeepAlive: http2KeepAlive {NOT_ACTED_ON}"),
        format!("tuning.yaml:18: {dr}.connectionPool.tcp.tcpKeepalive: tcpKeepalive {NOT_ACTED_ON}"),
        format!("tuning.yaml:22: {dr}.connectionPool.tcp.maxConnectionDuration: maxConnectionDuration {NOT_ACTED_ON}"),
        format!("tuning.yaml:30: {dr}.outlierDetection.outlierDetectionHttpErrorCodes: outlierDetectionHttpErrorCodes {NOT_ACTED_ON}"),
        format!("tuning.yaml:31: {dr}.retryBudget: retryBudget {NOT_ACTED_ON}"),
        format!(
            "tuning.yaml:51: DestinationRule default/reviews-warmup-secs: \
             spec.trafficPolicy.portLevelSettings[0].loadBalancer.backendUtilization: backendUtilization {NOT_ACTED_ON}"
        ),
        format!(
            "tuning.yaml:46: DestinationRule default/reviews-warmup-secs: \
             spec.subsets[0].trafficPolicy.loadBalancer.warmupDurationSecs: warmupDurationSecs {NOT_ACTED_ON}"
        ),
        format!(
            "tuning.yaml:67: VirtualService default/ratings-retries: spec.http[0].retries.retryIgnorePreviousHosts: \
             retryIgnorePreviousHosts {NOT_ACTED_ON}"
        ),
        format!("tuning.yaml:66: VirtualService default/ratings-retries: spec.http[0].retries.backoff: backoff {NOT_ACTED_ON}"),
        format!("tuning.yaml:76: Sidecar default/ratings-limits: spec.inboundConnectionPool: inboundConnectionPool {NOT_ACTED_ON}"),
        format!("tuning.yaml:82: Sidecar default/ratings-limits: spec.ingress[0].connectionPool: connectionPool {NOT_ACTED_ON}"),
        "tuning.yaml:89: WorkloadEntry default/vm-on-another-network: spec.address: is unset with network \"vm-net\": \
         Istio reaches such a workload through that network's gateway; weft does not route between networks, so it gets no traffic"
            .to_string(),
        format!("tuning.yaml:100: WorkloadEntry default/vm-with-address: spec.network: network {NOT_ACTED_ON}"),
        format!("tuning.yaml:101: WorkloadEntry default/vm-with-address: spec.locality: locality {NOT_ACTED_ON}"),
    ];
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    assert_starts(&shown(&l), &want);
    assert!(l.diagnostics.iter().all(|d| d.level == Level::Warning));
    assert_eq!(l.objects.len(), 6, "every resource loads: {:?}", names(&l));

    // The values are kept, typed, for when weft acts on them.
    let Object::DestinationRule(dr) = &l.objects[0] else { panic!("not a DestinationRule") };
    let tp = dr.spec.traffic_policy.as_ref().expect("trafficPolicy");
    let warmup = tp.load_balancer.as_ref().and_then(|lb| lb.warmup.as_ref()).expect("warmup");
    assert_eq!(warmup.duration.map(|d| d.0), Some(Duration::from_secs(120)));
    assert_eq!((warmup.minimum_percent, warmup.aggression), (Some(10.0), Some(1.5)));
    let http = tp.connection_pool.as_ref().and_then(|p| p.http.as_ref()).expect("http pool");
    let ka = http.http2_keep_alive.as_ref().expect("http2KeepAlive");
    assert_eq!((ka.interval.map(|d| d.0), ka.timeout.map(|d| d.0)), (Some(Duration::from_secs(15)), Some(Duration::from_secs(5))));
    let Object::WorkloadEntry(we) = &l.objects[4] else { panic!("not a WorkloadEntry") };
    assert_eq!((we.spec.address.as_str(), we.spec.network.as_deref()), ("", Some("vm-net")));
}

#[test]
fn every_field_of_istios_api_is_known() {
    let l = fixture("every-field.yaml");
    assert!(errors(&l).is_empty(), "{:#?}", errors(&l));
    assert_eq!(
        names(&l),
        [
            "VirtualService every-http-field",
            "VirtualService every-l4-field",
            "DestinationRule every-policy-field",
            "Gateway every-gateway-field",
            "Sidecar every-sidecar-field",
            "ServiceEntry every-service-entry-field",
            "ServiceEntry selected-workloads",
            "WorkloadEntry every-workload-entry-field",
            "PeerAuthentication every-peer-authentication-field",
        ]
    );
    // The only warnings: fields weft does not act on, and what Istio calls deprecated.
    for d in &l.diagnostics {
        assert!(d.message.contains("weft does not act on it yet") || d.message.contains("deprecated"), "{d}");
    }
    let Object::VirtualService(vs) = &l.objects[0] else { panic!("not a VirtualService") };
    assert_eq!(vs.spec.http[0].mirror_percent, Some(5), "Istio's CRD also spells it mirror_percent");
}

#[test]
fn refused_fields_are_named() {
    let gw = |tls: &str| {
        format!("  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [a.example.com]\n    tls: {{mode: SIMPLE, credentialName: c, {tls}}}\n")
    };
    let cases: Vec<(&str, &str, String, &str)> = vec![
        (NET, "DestinationRule", "  host: a\n  trafficPolicy: {loadBalancer: {zoneAwareLbSetting: {enabled: true}}}\n".into(), "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting"),
        (NET, "DestinationRule", "  host: a\n  trafficPolicy: {loadBalancer: {localityLbSetting: {enabled: true}}}\n".into(), "spec.trafficPolicy.loadBalancer.localityLbSetting"),
        (NET, "DestinationRule", "  host: a\n  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpCookie: {name: s, attributes: [{name: SameSite, value: Strict}]}}\n".into(), "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes"),
        (NET, "DestinationRule", "  host: a\n  trafficPolicy: {tls: {mode: SIMPLE, caCrl: /etc/crl.pem}}\n".into(), "spec.trafficPolicy.tls.caCrl"),
        (NET, "DestinationRule", "  host: a\n  trafficPolicy: {tls: {mode: MUTUAL, credentialName: client}}\n".into(), "spec.trafficPolicy.tls.credentialName"),
        (NET, "DestinationRule", "  host: a\n  workloadSelector: {matchLabels: {app: client}}\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n".into(), "spec.workloadSelector"),
        (NET, "DestinationRule", "  host: a\n  exportTo: [\".\"]\n".into(), "spec.exportTo[0]"),
        (NET, "VirtualService", "  hosts: [a]\n  http:\n  - redirect: {prefixRewrite: /new}\n".into(), "spec.http[0].redirect.prefixRewrite"),
        (NET, "VirtualService", "  hosts: [a]\n  tcp:\n  - match: [{sourceSubnet: 10.0.0.0/8}]\n    route: [{destination: {host: a}}]\n".into(), "spec.tcp[0].match[0].sourceSubnet"),
        (NET, "VirtualService", "  hosts: [a]\n  tcp:\n  - match: [{destinationSubnets: [10.0.0.0/8]}]\n    route: [{destination: {host: a}}]\n".into(), "spec.tcp[0].match[0].destinationSubnets"),
        (NET, "VirtualService", "  hosts: [a]\n  tls:\n  - match: [{sniHosts: [a], destinationSubnets: [10.0.0.1]}]\n    route: [{destination: {host: a}}]\n".into(), "spec.tls[0].match[0].destinationSubnets"),
        (NET, "VirtualService", "  hosts: [a]\n  exportTo: [other]\n  http: [{route: [{destination: {host: a}}]}]\n".into(), "spec.exportTo[0]"),
        (NET, "Gateway", "  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n    bind: 10.0.0.1\n".into(), "spec.servers[0].bind"),
        (NET, "Gateway", gw("caCrl: /etc/crl.pem"), "spec.servers[0].tls.caCrl"),
        (NET, "Gateway", gw("caCertCredentialName: ca"), "spec.servers[0].tls.caCertCredentialName"),
        (NET, "Gateway", gw("credentialNames: [rsa, ecdsa]"), "spec.servers[0].tls.credentialNames"),
        (NET, "Gateway", gw("tlsCertificates: [{serverCertificate: /c.pem, privateKey: /k.pem}]"), "spec.servers[0].tls.tlsCertificates"),
        (NET, "Gateway", gw("verifyCertificateSpki: [abc]"), "spec.servers[0].tls.verifyCertificateSpki"),
        (NET, "Gateway", gw("verifyCertificateHash: [abc]"), "spec.servers[0].tls.verifyCertificateHash"),
        (NET, "Gateway", gw("insecureSkipVerify: true"), "spec.servers[0].tls.insecureSkipVerify"),
        (NET, "Gateway", gw("ecdhCurves: [P-256]"), "spec.servers[0].tls.ecdhCurves"),
        (NET, "Sidecar", "  egress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n    hosts: [\"./*\"]\n".into(), "spec.egress[0].port"),
        (NET, "Sidecar", "  egress:\n  - bind: 127.0.0.2\n    hosts: [\"./*\"]\n".into(), "spec.egress[0].bind"),
        (NET, "Sidecar", "  egress:\n  - captureMode: NONE\n    hosts: [\"./*\"]\n".into(), "spec.egress[0].captureMode"),
        (NET, "ServiceEntry", "  hosts: [\"*.example.org\"]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: DYNAMIC_DNS\n".into(), "spec.resolution"),
        (NET, "ServiceEntry", "  hosts: [a.example.org]\n  subjectAltNames: [spiffe://td/ns/a/sa/b]\n".into(), "spec.subjectAltNames"),
        (NET, "ServiceEntry", "  hosts: [a.example.org]\n  exportTo: [\"~\"]\n".into(), "spec.exportTo[0]"),
        (NET, "WorkloadEntry", "  address: unix:///var/run/app.sock\n".into(), "spec.address"),
    ];
    for (api, kind, spec, path) in cases {
        let l = load_text(&doc(api, kind, &spec), "refused.yaml");
        assert!(l.objects.is_empty(), "{kind} with {path} must not load");
        let d = l.diagnostics.iter().find(|d| d.level == Level::Error && d.field_path == path);
        let d = d.unwrap_or_else(|| panic!("no error at {path}: {:#?}", shown(&l)));
        assert!(d.message.contains("not supported by weft yet"), "{d}");
        assert!(d.line.is_some_and(|n| n >= 5), "the line of {path}: {d}");
    }
}

#[test]
fn port_level_mtls_keys_may_be_quoted_as_kubectl_prints_them() {
    let spec = "  selector: {matchLabels: {app: reviews}}\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    \"80\": {mode: PERMISSIVE}\n    9080:\n      mode: DISABLE\n";
    let l = load_text(&doc("security.istio.io/v1", "PeerAuthentication", spec), "pa.yaml");
    assert!(l.diagnostics.is_empty(), "{:#?}", shown(&l));
    let Object::PeerAuthentication(pa) = &l.objects[0] else { panic!("not a PeerAuthentication") };
    let ports: Vec<u32> = pa.spec.port_level_mtls.keys().copied().collect();
    assert_eq!(ports, [80, 9080]);
}

#[test]
fn a_bad_port_level_mtls_key_is_named_with_its_line() {
    let with = |keys: &str| {
        let spec = format!("  selector: {{matchLabels: {{app: reviews}}}}\n  portLevelMtls:\n    9080: {{mode: STRICT}}\n{keys}");
        shown(&load_text(&doc("security.istio.io/v1beta1", "PeerAuthentication", &spec), "pa.yaml"))
    };
    assert_starts(
        &with("    \"http\": {mode: STRICT}\n"),
        &["pa.yaml:8: PeerAuthentication default/probe: spec.portLevelMtls.http: \"http\" is not a port number (1-65535)"],
    );
    assert_starts(
        &with("    \"70000\": {mode: STRICT}\n"),
        &["pa.yaml:8: PeerAuthentication default/probe: spec.portLevelMtls.70000: port 70000 is out of range 1-65535"],
    );
    assert_starts(
        &with("    0: {mode: STRICT}\n"),
        &["pa.yaml:8: PeerAuthentication default/probe: spec.portLevelMtls.0: port 0 is out of range"],
    );
    let empty = doc("security.istio.io/v1", "PeerAuthentication", "  selector: {matchLabels: {app: a}}\n  portLevelMtls: {}\n");
    assert_starts(
        &shown(&load_text(&empty, "pa.yaml")),
        &["pa.yaml:6: PeerAuthentication default/probe: spec.portLevelMtls: must list at least one port when set"],
    );
}

#[test]
fn service_and_workload_entries_follow_istios_rules() {
    let l = fixture("service-entries.yaml");
    let se = "service-entries.yaml";
    assert_starts(
        &shown(&l),
        &[
            &format!("{se}:16: ServiceEntry default/partial-wildcard: spec.hosts[0]: partial wildcard \"*example.com\""),
            &format!("{se}:31: ServiceEntry default/unix-socket: spec.endpoints[0].address: unix:// addresses are not supported by weft yet"),
            &format!("{se}:44: ServiceEntry default/bad-unix-socket: spec.endpoints[0].address: \"var/run/agent/\" is not an absolute path"),
            &format!("{se}:45: ServiceEntry default/bad-unix-socket: spec.endpoints[0].ports: a unix:// address takes no ports"),
            &format!("{se}:39: ServiceEntry default/bad-unix-socket: spec.ports: a ServiceEntry with unix:// endpoints needs exactly one port"),
            &format!("{se}:55: ServiceEntry default/dynamic: spec.resolution: DYNAMIC_DNS is not supported by weft yet"),
            &format!("{se}:68: ServiceEntry default/dns-endpoints: spec.endpoints[0].ports.grpc: \"grpc\" is not the name of one of the ServiceEntry's ports"),
            &format!("{se}:74: WorkloadEntry default/nowhere: spec.address: is required"),
            &format!("{se}:82: WorkloadEntry default/abstract-socket: spec.address: unix:// addresses are not supported by weft yet"),
        ],
    );
    assert_eq!(names(&l), ["ServiceEntry no-ports", "ServiceEntry partial-wildcard"], "a ServiceEntry needs no ports");
}

#[test]
fn istios_rules_for_the_tuning_fields_apply() {
    let dr = |policy: &str| errors(&load_text(&doc(NET, "DestinationRule", &format!("  host: a\n  trafficPolicy:\n{policy}")), "dr.yaml"));
    let lb = "spec.trafficPolicy.loadBalancer";
    assert_starts(
        &dr("    loadBalancer: {warmup: {minimumPercent: 5}}\n"),
        &[&format!("dr.yaml:7: DestinationRule default/probe: {lb}.warmup.duration: is required")],
    );
    assert_starts(
        &dr("    loadBalancer: {warmup: {duration: 10s}, warmupDurationSecs: 10s}\n"),
        &[&format!("dr.yaml:7: DestinationRule default/probe: {lb}: only one of warmupDurationSecs and warmup can be set")],
    );
    assert_starts(
        &dr("    loadBalancer:\n      warmup: {duration: 10s, minimumPercent: 150, aggression: 0}\n"),
        &[
            &format!("dr.yaml:8: DestinationRule default/probe: {lb}.warmup.minimumPercent: percentage 150 is outside 0-100"),
            &format!("dr.yaml:8: DestinationRule default/probe: {lb}.warmup.aggression: must be greater than 0"),
        ],
    );
    assert_starts(
        &dr("    loadBalancer: {warmupDurationSecs: 500us}\n"),
        &[&format!("dr.yaml:7: DestinationRule default/probe: {lb}.warmupDurationSecs: must be at least 1ms")],
    );
    let pool = "spec.trafficPolicy.connectionPool";
    assert_starts(
        &dr("    connectionPool:\n      http:\n        http2KeepAlive: {interval: 1.5005s}\n"),
        &[
            &format!(
                "dr.yaml:9: DestinationRule default/probe: {pool}.http.http2KeepAlive.interval: only millisecond precision is supported"
            ),
            &format!("dr.yaml:9: DestinationRule default/probe: {pool}.http.http2KeepAlive.timeout: is required"),
        ],
    );
    assert_starts(
        &dr("    connectionPool:\n      http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}\n"),
        &[&format!(
            "dr.yaml:8: DestinationRule default/probe: {pool}.http.useClientProtocol: must not be true when h2UpgradePolicy is UPGRADE"
        )],
    );
    let od = "spec.trafficPolicy.outlierDetection";
    assert_starts(
        &dr("    outlierDetection:\n      consecutiveLocalOriginFailures: 3\n      outlierDetectionHttpErrorCodes: [503, 99]\n"),
        &[
            &format!(
                "dr.yaml:8: DestinationRule default/probe: {od}.consecutiveLocalOriginFailures: needs splitExternalLocalOriginErrors: true"
            ),
            &format!(
                "dr.yaml:9: DestinationRule default/probe: {od}.outlierDetectionHttpErrorCodes[1]: 99 is not an HTTP status (100-599)"
            ),
        ],
    );
    let vs = doc(
        NET,
        "VirtualService",
        "  hosts: [a]\n  http:\n  - route: [{destination: {host: a}}]\n    retries: {attempts: 2, backoff: 0s}\n",
    );
    let got = errors(&load_text(&vs, "vs.yaml"));
    assert!(got[0].starts_with("vs.yaml:8: VirtualService default/probe: spec.http[0].retries.backoff: must be at least 1ms"), "{got:#?}");
}

#[test]
fn a_sidecar_outbound_policy_without_mode_is_registry_only() {
    let l = load_text(&doc(NET, "Sidecar", "  egress: [{hosts: [\"./*\"]}]\n  outboundTrafficPolicy: {}\n"), "s.yaml");
    let Object::Sidecar(s) = &l.objects[0] else { panic!("not a Sidecar: {:#?}", shown(&l)) };
    assert_eq!(
        s.spec.outbound_traffic_policy.as_ref().map(|p| p.mode),
        Some(OutboundMode::RegistryOnly),
        "the proto's zero value, as Istio reads it"
    );
}

#[test]
fn a_virtual_service_without_hosts_is_an_inert_delegate() {
    let l = load_text(&doc(NET, "VirtualService", "  http: [{route: [{destination: {host: reviews, subset: v1}}]}]\n"), "vs.yaml");
    assert_starts(&shown(&l), &["vs.yaml:4: VirtualService default/probe: spec.hosts: no hosts: Istio uses this as a delegate"]);
    assert_eq!(l.objects.len(), 1);
    let l = load_text(&doc(NET, "VirtualService", "  gateways: [gw]\n  http: [{route: [{destination: {host: a}}]}]\n"), "vs.yaml");
    assert!(l.objects.is_empty());
    assert!(
        shown(&l)[0].starts_with("vs.yaml:5: VirtualService default/probe: spec.gateways: a VirtualService without hosts is a delegate")
    );
}

#[test]
fn istio_wildcard_labels_are_hosts() {
    for h in ["\"*-api.example.com\"", "\"*api.example.com\"", "\"*.example.com\"", "Reviews.Example.COM"] {
        let l = load_text(&doc(NET, "DestinationRule", &format!("  host: {h}\n")), "dr.yaml");
        assert!(l.diagnostics.is_empty() && l.objects.len() == 1, "{h}: {:#?}", shown(&l));
    }
    for h in ["\"a.*.example.com\"", "example.123", "\"-a.example.com\""] {
        let l = load_text(&doc(NET, "DestinationRule", &format!("  host: {h}\n")), "dr.yaml");
        assert!(l.objects.is_empty() && shown(&l)[0].contains("spec.host: "), "{h}: {:#?}", shown(&l));
    }
}
