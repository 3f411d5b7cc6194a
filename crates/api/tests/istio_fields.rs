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
            let (_, name, _) = o.meta();
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
        (NET, "VirtualService", "  hosts: [a]\n  http:\n  - redirect: {prefixRewrite: /new}\n".into(), "spec.http[0].redirect.prefixRewrite"),
        (NET, "VirtualService", "  hosts: [a]\n  tcp:\n  - match: [{sourceSubnet: 10.0.0.0/8}]\n    route: [{destination: {host: a}}]\n".into(), "spec.tcp[0].match[0].sourceSubnet"),
        (NET, "VirtualService", "  hosts: [a]\n  tcp:\n  - match: [{destinationSubnets: [10.0.0.0/8]}]\n    route: [{destination: {host: a}}]\n".into(), "spec.tcp[0].match[0].destinationSubnets"),
        (NET, "VirtualService", "  hosts: [a]\n  tls:\n  - match: [{sniHosts: [a], destinationSubnets: [10.0.0.1]}]\n    route: [{destination: {host: a}}]\n".into(), "spec.tls[0].match[0].destinationSubnets"),
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
fn export_to_takes_istios_forms_and_refuses_anything_else() {
    for ok in ["[\".\"]", "[\"*\"]", "[\"~\"]", "[other, \".\"]"] {
        let l = load_text(&doc(NET, "ServiceEntry", &format!("  hosts: [a.example.org]\n  exportTo: {ok}\n")), "se.yaml");
        assert!(l.diagnostics.is_empty(), "{ok}: {:#?}", shown(&l));
    }
    let l = load_text(&doc(NET, "DestinationRule", "  host: a\n  exportTo: [\"Not A Namespace\"]\n"), "dr.yaml");
    assert!(
        shown(&l).iter().any(|d| d.contains("spec.exportTo[0]") && d.contains("not `.`, `*`, `~` or a namespace name")),
        "{:#?}",
        shown(&l)
    );
    let l = load_text(
        &doc(NET, "VirtualService", "  hosts: [a]\n  exportTo: [\"~\", other]\n  http: [{route: [{destination: {host: a}}]}]\n"),
        "vs.yaml",
    );
    assert!(shown(&l).iter().any(|d| d.contains("cannot be combined")), "{:#?}", shown(&l));
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

/// Every diagnostic as `(level, "file:line: Kind ns/name: path: message")`, for exact checks.
fn exact(l: &Loaded) -> Vec<(Level, String)> {
    l.diagnostics.iter().map(|d| (d.level, d.to_string())).collect()
}

const E: Level = Level::Error;
const W: Level = Level::Warning;

#[test]
fn istios_duration_rules_apply_wherever_istio_checks_a_duration() {
    let dr = |policy: &str| load_text(&doc(NET, "DestinationRule", &format!("  host: a\n  trafficPolicy:\n{policy}")), "dr.yaml");
    let tp = "dr.yaml:{}: DestinationRule default/probe: spec.trafficPolicy";
    let at = |line: u32, rest: &str| tp.replace("{}", &line.to_string()) + rest;
    let l = dr(concat!(
        "    connectionPool:\n",
        "      http: {idleTimeout: 0.5ms}\n",
        "      tcp:\n",
        "        connectTimeout: 1.0005s\n",
        "        idleTimeout: 0s\n",
        "    outlierDetection:\n",
        "      baseEjectionTime: 0s\n",
        "      interval: 10.5ms\n",
    ));
    assert_eq!(
        exact(&l),
        [
            (E, at(8, ".connectionPool.http.idleTimeout: must be at least 1ms")),
            (E, at(10, ".connectionPool.tcp.connectTimeout: only millisecond precision is supported")),
            (E, at(13, ".outlierDetection.baseEjectionTime: must be at least 1ms")),
            (E, at(14, ".outlierDetection.interval: only millisecond precision is supported")),
        ],
        "tcp.idleTimeout 0s is Istio's way of saying none"
    );
    let l = dr("    connectionPool: {tcp: {idleTimeout: 1.5005s}}\n");
    assert_eq!(exact(&l), [(E, at(7, ".connectionPool.tcp.idleTimeout: only millisecond precision is supported"))]);
    // warmupDurationSecs has only the CRD's 1ms minimum, no precision rule.
    let l = dr("    loadBalancer: {warmupDurationSecs: 1.0005s}\n");
    assert_eq!(exact(&l).len(), 1, "{:#?}", shown(&l));
    assert!(shown(&l)[0].contains("weft does not act on it yet"), "{:#?}", shown(&l));

    let vs = concat!(
        "  hosts: [a]\n",
        "  http:\n",
        "  - route: [{destination: {host: a}}]\n",
        "    timeout: 0s\n",
        "    retries: {attempts: 2, perTryTimeout: 0.5ms}\n",
        "    fault: {delay: {fixedDelay: 1.0001s, percentage: {value: 10}}}\n",
    );
    let l = load_text(&doc(NET, "VirtualService", vs), "vs.yaml");
    let vs = "VirtualService default/probe: spec.http[0]";
    assert_eq!(
        exact(&l),
        [
            (E, format!("vs.yaml:8: {vs}.timeout: must be at least 1ms")),
            (E, format!("vs.yaml:9: {vs}.retries.perTryTimeout: must be at least 1ms")),
            (E, format!("vs.yaml:10: {vs}.fault.delay.fixedDelay: only millisecond precision is supported")),
        ]
    );

    let sc = "  egress: [{hosts: [\"./*\"]}]\n  inboundConnectionPool:\n    tcp: {connectTimeout: 0s}\n";
    let l = load_text(&doc(NET, "Sidecar", sc), "s.yaml");
    assert_eq!(errors(&l), ["s.yaml:7: Sidecar default/probe: spec.inboundConnectionPool.tcp.connectTimeout: must be at least 1ms"]);
}

#[test]
fn a_service_entry_tcp_port_without_addresses_is_warned_about() {
    let ports = concat!(
        "  ports:\n",
        "  - {number: 5432, name: pg}\n",
        "  - {number: 80, name: http, protocol: HTTP}\n",
        "  - {number: 3306, name: mysql, protocol: tcp}\n",
    );
    let se = |extra: &str| load_text(&doc(NET, "ServiceEntry", &format!("  hosts: [db.example.com]\n{ports}{extra}")), "se.yaml");
    const WHY: &str = "addresses are required for ports serving TCP (or unset) protocol when IP autoallocation is not enabled \
                       (weft allocates one only for sidecars with ISTIO_META_DNS_CAPTURE and ISTIO_META_DNS_AUTO_ALLOCATE, \
                       and never for resolution NONE)";
    let want = [
        (W, format!("se.yaml:7: ServiceEntry default/probe: spec.ports[0]: {WHY}")),
        (W, format!("se.yaml:9: ServiceEntry default/probe: spec.ports[2]: {WHY}")),
    ];
    for resolution in ["DNS", "NONE", "STATIC"] {
        let l = se(&format!("  resolution: {resolution}\n  location: MESH_EXTERNAL\n"));
        let got: Vec<_> = exact(&l).into_iter().filter(|(_, d)| d.contains(WHY)).collect();
        assert_eq!(got, want, "{resolution}");
        assert_eq!(l.objects.len(), 1, "a warning only");
    }
    let l = se("  addresses: [10.0.0.1]\n  resolution: STATIC\n  endpoints: [{address: 10.1.0.1}]\n");
    assert!(l.diagnostics.is_empty(), "{:#?}", shown(&l));
}

#[test]
fn a_sidecar_with_nothing_to_configure_is_refused() {
    let l = load_text(&doc(NET, "Sidecar", "  workloadSelector: {labels: {app: a}}\n"), "s.yaml");
    assert_eq!(
        exact(&l),
        [(
            E,
            "s.yaml:4: Sidecar default/probe: spec: a Sidecar needs at least one of egress, ingress, outboundTrafficPolicy \
             or inboundConnectionPool"
                .to_string()
        )]
    );
    assert!(l.objects.is_empty());
    let l = load_text(&doc(NET, "Sidecar", "  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"), "s.yaml");
    assert!(l.diagnostics.is_empty() && l.objects.len() == 1, "{:#?}", shown(&l));
}

#[test]
fn a_sidecar_ingress_target_port_is_refused_as_istio_does() {
    let ingress = |port: &str| {
        let spec =
            format!("  ingress:\n  - port: {{number: 9080, protocol: HTTP, name: http{port}}}\n    defaultEndpoint: 127.0.0.1:8080\n");
        load_text(&doc(NET, "Sidecar", &spec), "s.yaml")
    };
    let l = ingress(", targetPort: 8080");
    assert_eq!(
        exact(&l),
        [(
            E,
            "s.yaml:6: Sidecar default/probe: spec.ingress[0].port.targetPort: has no effect on a Sidecar \
             (defaultEndpoint says where traffic goes)"
                .to_string()
        )]
    );
    assert!(l.objects.is_empty());
    let l = ingress(", targetPort: 0");
    assert!(l.diagnostics.is_empty() && l.objects.len() == 1, "0 is unset to Istio: {:#?}", shown(&l));
}

#[test]
fn a_maglev_table_size_must_be_a_prime_below_istios_limit() {
    let dr = |maglev: &str| {
        let spec = format!("  host: a\n  trafficPolicy:\n    loadBalancer:\n      consistentHash: {{useSourceIp: true, {maglev}}}\n");
        load_text(&doc(NET, "DestinationRule", &spec), "dr.yaml")
    };
    let at = |rest: &str| format!("dr.yaml:8: DestinationRule default/probe: spec.trafficPolicy.loadBalancer.consistentHash.{rest}");
    assert_eq!(
        exact(&dr("maglev: {tableSize: 65536}")),
        [(E, at("maglev.tableSize: 65536 is not a prime number (Maglev needs a prime table size, such as 65537)"))]
    );
    assert_eq!(exact(&dr("maglev: {tableSize: 5000011}")), [(E, at("maglev.tableSize: 5000011 must be less than 5000011"))]);
    assert_eq!(exact(&dr("maglev: {}")), [(E, at("maglev.tableSize: is required for maglev"))]);
    for ok in ["maglev: {tableSize: 65537}", "maglev: {tableSize: 1}", "maglev: {tableSize: 4999999}"] {
        let l = dr(ok);
        assert!(l.diagnostics.is_empty() && l.objects.len() == 1, "{ok}: {:#?}", shown(&l));
    }
    assert_eq!(
        exact(&dr("minimumRingSize: 1024, maglev: {tableSize: 65537}")),
        [
            (W, at("minimumRingSize: is deprecated; use ringHash.minimumRingSize")),
            (E, at("minimumRingSize: cannot be set with ringHash or maglev")),
        ]
    );
}

#[test]
fn labels_follow_kubernetes_syntax_where_istio_checks_it() {
    const KEY: &str = "is not a valid label key: an optional DNS prefix and '/', then alphanumerics, '-', '_' and '.', \
                       starting and ending with an alphanumeric";
    const VALUE: &str = "is not a valid label value (alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric)";
    let long = "n".repeat(64);
    let spec = format!(
        concat!(
            "  host: a\n",
            "  subsets:\n",
            "  - name: v1\n",
            "    labels:\n",
            "      \"-bad\": x\n",
            "      a/b/c: d\n",
            "      example.com/app: ok\n",
            "      {long}: x\n",
            "      version: \"v1 beta\"\n",
            "      empty: \"\"\n",
        ),
        long = long
    );
    let l = load_text(&doc(NET, "DestinationRule", &spec), "dr.yaml");
    let at =
        |line: u32, key: &str, rest: &str| format!("dr.yaml:{line}: DestinationRule default/probe: spec.subsets[0].labels.{key}: {rest}");
    assert_eq!(
        exact(&l),
        [
            (E, at(9, "-bad", &format!("\"-bad\" {KEY}"))),
            (E, at(10, "a/b/c", &format!("\"a/b/c\" {KEY}"))),
            (E, at(12, &long, &format!("{long:?} is not a valid label key: its name is longer than 63 characters"))),
            (E, at(13, "version", &format!("\"v1 beta\" {VALUE}"))),
        ]
    );

    let vs = concat!(
        "  hosts: [a]\n",
        "  http:\n",
        "  - match: [{sourceLabels: {app: \"a b\"}}]\n",
        "    route: [{destination: {host: a}}]\n",
        "  tcp:\n",
        "  - match: [{sourceLabels: {_app: x}}]\n",
        "    route: [{destination: {host: a}}]\n",
    );
    let l = load_text(&doc(NET, "VirtualService", vs), "vs.yaml");
    assert_eq!(
        exact(&l),
        [
            (E, format!("vs.yaml:7: VirtualService default/probe: spec.http[0].match[0].sourceLabels.app: \"a b\" {VALUE}")),
            (E, format!("vs.yaml:10: VirtualService default/probe: spec.tcp[0].match[0].sourceLabels._app: \"_app\" {KEY}")),
        ]
    );

    let we = "  address: 10.0.0.1\n  labels: {\"app.kubernetes.io/\": x}\n";
    let l = load_text(&doc(NET, "WorkloadEntry", we), "we.yaml");
    assert_eq!(
        exact(&l),
        [(E, format!("we.yaml:6: WorkloadEntry default/probe: spec.labels.app.kubernetes.io/: \"app.kubernetes.io/\" {KEY}"))]
    );

    // Selectors: Istio checks only empty keys, wildcards and (its CRDs) values up to 63.
    let l = load_text(
        &doc(NET, "Sidecar", &format!("  workloadSelector: {{labels: {{app: {long}}}}}\n  egress: [{{hosts: [\"./*\"]}}]\n")),
        "s.yaml",
    );
    assert_eq!(
        exact(&l),
        [(
            E,
            "s.yaml:5: Sidecar default/probe: spec.workloadSelector.labels.app: the value of \"app\" is longer than 63 characters"
                .to_string()
        )]
    );
}

#[test]
fn a_host_may_end_in_a_dot_as_in_istio() {
    for h in ["reviews.default.svc.cluster.local.", "example.com.", "\"*.example.com.\"", "a."] {
        let l = load_text(&doc(NET, "DestinationRule", &format!("  host: {h}\n")), "dr.yaml");
        assert!(l.diagnostics.is_empty() && l.objects.len() == 1, "{h}: {:#?}", shown(&l));
    }
    let se = "  hosts: [api.example.com.]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: DNS\n";
    let l = load_text(&doc(NET, "ServiceEntry", se), "se.yaml");
    assert!(l.diagnostics.is_empty() && l.objects.len() == 1, "resolved as a DNS name: {:#?}", shown(&l));
    for h in ["a..", "example.com..", "\".\""] {
        let l = load_text(&doc(NET, "DestinationRule", &format!("  host: {h}\n")), "dr.yaml");
        let name = h.trim_matches('"');
        assert_eq!(
            exact(&l),
            [(
                E,
                format!(
                    "dr.yaml:5: DestinationRule default/probe: spec.host: {name:?} is not a valid host \
                     (a DNS name whose first label may be `*` or `*suffix`, or `*`)"
                )
            )],
            "{h}"
        );
    }
}
