//! Malformed and unsupported bootstraps: `weft proxy` must refuse them at start with a message
//! naming the field path (or the line, for syntax errors), exit non-zero, and bind nothing.

use std::process::Command;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// A valid bootstrap with one listener on `port`; `patch` edits its YAML text.
fn bootstrap(port: u16) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: main
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: in
          route_config:
            virtual_hosts:
            - name: vh
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: backend}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 9}}}}}}
"#
    )
}

/// Runs `weft proxy` on the text; returns (exit code, stderr). Asserts nothing listens on `port`.
fn refuse(text: &str, ext: &str, port: u16) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("weft-bad-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("bootstrap.{ext}"));
    std::fs::write(&path, text).expect("write");
    let out = Command::new(WEFT).args(["proxy", "-c"]).arg(&path).args(["--mode", "serve"]).output().expect("run weft");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "a refused config must not leave a listener bound");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_refused(text: &str, expect: &[&str]) {
    let port = free_port();
    let text = text.replace("PORT", &port.to_string());
    let (code, err) = refuse(&text, "yaml", port);
    assert_ne!(code, 0, "expected a refusal, got exit 0; stderr:\n{err}");
    for e in expect {
        assert!(err.contains(e), "stderr should contain {e:?}:\n{err}");
    }
}

fn with(port_placeholder: bool, f: impl Fn(String) -> String) -> String {
    let base = bootstrap(0).replace("port_value: 0}", if port_placeholder { "port_value: PORT}" } else { "port_value: 0}" });
    f(base)
}

#[test]
fn malformed_yaml_names_the_line() {
    let text = with(true, |b| b.replace("    filter_chains:\n", "    filter_chains: [\n"));
    assert_refused(&text, &["bootstrap.yaml:6:", "static_resources.listeners[0].filter_chains"]);
    let port = free_port();
    let (code, err) = refuse("{\"static_resources\": {\"listeners\": [}", "json", port);
    assert_ne!(code, 0);
    assert!(err.contains("bootstrap.json:1:"), "{err}");
}

#[test]
fn unknown_field_inside_typed_config_is_refused_with_its_path() {
    let text = with(true, |b| b.replace("          stat_prefix: in\n", "          stat_prefix: in\n          foo: 1\n"));
    assert_refused(
        &text,
        &["static_resources.listeners[0].filter_chains[0].filters[0].typed_config.foo: unknown field \"foo\"", "bootstrap.yaml:11:"],
    );
}

#[test]
fn known_but_unimplemented_fields_are_refused() {
    let text = with(true, |b| format!("dynamic_resources: {{ads_config: {{api_type: REST}}}}\n{b}"));
    assert_refused(&text, &["dynamic_resources.ads_config.api_type: REST is not supported"]);
    let text = with(true, |b| format!("dynamic_resources: {{lds_config: {{path: /etc/lds.yaml}}}}\n{b}"));
    assert_refused(&text, &["dynamic_resources.lds_config.path: not supported"]);
    let text = with(true, |b| {
        format!("dynamic_resources: {{ads_config: {{api_type: GRPC, grpc_services: [{{envoy_grpc: {{cluster_name: xds}}}}]}}}}\n{b}")
    });
    assert_refused(&text, &["dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name: \"xds\" is not a cluster"]);
    let text = with(true, |b| {
        b.replace("    filter_chains:\n    - filters:", "    filter_chains:\n    - transport_socket: {name: tls}\n      filters:")
    });
    assert_refused(&text, &["static_resources.listeners[0].filter_chains[0].transport_socket.typed_config: required"]);
    let text = with(true, |b| {
        b.replace(
            "          stat_prefix: in\n",
            "          stat_prefix: in\n          common_http_protocol_options: {max_stream_duration: 10s}\n",
        )
    });
    assert_refused(
        &text,
        &["static_resources.listeners[0].filter_chains[0].filters[0].typed_config.common_http_protocol_options.max_stream_duration: not supported"],
    );
    let text = with(true, |b| b.replacen("    filter_chains:\n", "    per_connection_buffer_limit_bytes: 100\n    filter_chains:\n", 1));
    assert_refused(&text, &["static_resources.listeners[0].per_connection_buffer_limit_bytes: 100 is below 8192"]);
    // A source address for upstream connections would change what the upstream sees.
    let text = with(true, |b| {
        format!("cluster_manager: {{upstream_bind_config: {{source_address: {{address: 127.0.0.2, port_value: 0}}}}}}\n{b}")
    });
    assert_refused(&text, &["cluster_manager.upstream_bind_config: not supported"]);
}

/// A filter chain terminating TLS with the given context (YAML flow mapping).
fn with_tls(ctx: &str) -> String {
    with(true, |b| {
        b.replace(
            "    filter_chains:\n    - filters:",
            &format!(
                "    filter_chains:\n    - transport_socket:\n        name: tls\n        typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, {ctx}}}\n      filters:"
            ),
        )
    })
}

#[test]
fn bad_tls_material_is_refused_with_its_field_and_never_echoed() {
    use weft_test_support::certs::{Leaf, TempDir, TestCa};
    let dir = TempDir::new("bad-tls").expect("temp dir");
    let ca = TestCa::new(dir.path(), "bad").expect("ca");
    let a = ca.issue("a", Leaf { dns: &["a.test"], ..Default::default() }).expect("a");
    let b = ca.issue("b", Leaf { dns: &["b.test"], ..Default::default() }).expect("b");
    let garbage = dir.path().join("garbage-key.pem");
    std::fs::write(&garbage, "-----BEGIN PRIVATE KEY-----\nTOP-SECRET-MATERIAL\n-----END PRIVATE KEY-----\n").expect("write");
    let certs = |cert: &str, key: &str| {
        format!("common_tls_context: {{tls_certificates: [{{certificate_chain: {{filename: {cert}}}, private_key: {{filename: {key}}}}}]}}")
    };
    let ctx = "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config";
    assert_refused(
        &with_tls(&certs("/nonexistent/cert.pem", &a.key_str())),
        &[&format!("{ctx}.common_tls_context.tls_certificates[0].certificate_chain.filename: cannot read \"/nonexistent/cert.pem\"")],
    );
    assert_refused(
        &with_tls(&certs(&a.cert_str(), &b.key_str())),
        &[&format!("{ctx}.common_tls_context.tls_certificates[0]: the private key does not belong to the certificate")],
    );
    let port = free_port();
    let (code, err) =
        refuse(&with_tls(&certs(&a.cert_str(), &garbage.display().to_string())).replace("PORT", &port.to_string()), "yaml", port);
    assert_ne!(code, 0);
    assert!(err.contains("tls_certificates[0].private_key: "), "{err}");
    assert!(err.contains("holds no usable PEM private key"), "{err}");
    assert!(!err.contains("TOP-SECRET-MATERIAL"), "key file contents must never be printed:\n{err}");
    let with_params = |params: &str| {
        with_tls(&format!(
            "common_tls_context: {{tls_params: {{{params}}}, tls_certificates: [{{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}]}}",
            a.cert_str(),
            a.key_str()
        ))
    };
    assert_refused(
        &with_params("cipher_suites: [RC4-MD5]"),
        &[&format!("{ctx}.common_tls_context.tls_params.cipher_suites[0]: unknown cipher suite \"RC4-MD5\"")],
    );
    assert_refused(
        &with_params("tls_maximum_protocol_version: TLSv1_1"),
        &[&format!("{ctx}.common_tls_context.tls_params.tls_maximum_protocol_version: TLS 1.0 and 1.1 are not supported")],
    );
    assert_refused(
        &with_tls(&format!("require_client_certificate: true, {}", certs(&a.cert_str(), &a.key_str()))),
        &[&format!("{ctx}.require_client_certificate: needs common_tls_context.validation_context")],
    );
    assert_refused(
        &with_tls(&format!(
            "common_tls_context: {{validation_context: {{match_typed_subject_alt_names: [{{san_type: URI, matcher: {{exact: x}}}}]}}, tls_certificates: [{{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}]}}",
            a.cert_str(),
            a.key_str()
        )),
        &[&format!("{ctx}.common_tls_context.validation_context.trusted_ca: required with SAN matchers")],
    );
    // An SDS secret the proxy does not hold (Istio's gateway credentials come with Kubernetes).
    assert_refused(
        &with_tls("common_tls_context: {tls_certificate_sds_secret_configs: [{name: \"kubernetes://web-cert\"}]}"),
        &[&format!("{ctx}.common_tls_context.tls_certificate_sds_secret_configs[0].name: unknown SDS secret \"kubernetes://web-cert\"")],
    );
}

#[test]
fn identity_flags_are_checked_before_start() {
    let dir = std::env::temp_dir().join(format!("weft-bad-identity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = dir.join("bootstrap.yaml");
    std::fs::write(&cfg, bootstrap(free_port())).expect("write");
    let run = |extra: &[&str]| {
        let out = Command::new(WEFT).args(["proxy", "-c"]).arg(&cfg).args(extra).output().expect("run");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["--ca-address", "127.0.0.1:15012"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("--ca-address needs --ca-root-cert"), "{err}");
    let (code, err) = run(&["--ca-address", "127.0.0.1:15012", "--ca-root-cert", "/nonexistent/root.pem", "--ca-token-file", "/t"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("NAMESPACE node metadata"), "{err}");
    let meta = ["--node-meta", "NAMESPACE=default", "--node-meta", "SERVICE_ACCOUNT=web"];
    let mut args = vec!["--ca-address", "127.0.0.1:15012", "--ca-root-cert", "/nonexistent/root.pem", "--ca-token-file", "/t"];
    args.extend(meta);
    let (code, err) = run(&args);
    assert_ne!(code, Some(0));
    assert!(err.contains("--ca-root-cert: trust bundle /nonexistent/root.pem"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn agent_flags_are_checked_before_start() {
    let run = |extra: &[&str]| {
        let out = Command::new(WEFT).arg("agent").args(extra).env_remove("CA_ADDR").output().expect("run");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--ca-address (or CA_ADDR) is required"), "{err}");
    let ca = ["--ca-address", "127.0.0.1:15012", "--ca-root-cert", "/nonexistent/root.pem", "--ca-token-file", "/t"];
    let (code, err) = run(&ca);
    assert_eq!(code, Some(2));
    assert!(err.contains("--namespace (or POD_NAMESPACE) is required"), "{err}");
    let mut args = ca.to_vec();
    args.extend(["--namespace", "default", "--service-account", "web"]);
    let (code, err) = run(&args);
    assert_eq!(code, Some(2));
    assert!(err.contains("--ca-root-cert: trust bundle /nonexistent/root.pem"), "{err}");
    args.extend(["--log-level", "loud"]);
    let (code, err) = run(&args);
    assert_eq!(code, Some(2));
    assert!(err.contains("--log-level \"loud\""), "{err}");
}

#[test]
fn unknown_extension_type_is_named() {
    let text = with(true, |b| b.replace("extensions.filters.http.router.v3.Router", "extensions.filters.http.lua.v3.Lua"));
    assert_refused(&text, &["http_filters[0].typed_config", "envoy.extensions.filters.http.lua.v3.Lua", "not supported here"]);
}

#[test]
fn bad_values_name_their_field() {
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            with(true, |b| b.replace("connect_timeout: 1s", "connect_timeout: 1000")),
            vec!["static_resources.clusters[0].connect_timeout", "invalid duration"],
        ),
        (
            with(true, |b| b.replace("route: {cluster: backend}", "route: {cluster: missing}")),
            vec!["virtual_hosts[0].routes[0].route.cluster: unknown cluster \"missing\""],
        ),
        (
            with(true, |b| b.replace("match: {prefix: \"/\"}", "match: {safe_regex: {regex: \"(unclosed\"}}")),
            vec!["routes[0].match.safe_regex.regex: invalid regex"],
        ),
        (
            with(true, |b| {
                b.replace(
                    "route: {cluster: backend}",
                    "route: {weighted_clusters: {clusters: [{name: backend, weight: 60}], total_weight: 100}}",
                )
            }),
            vec!["weighted_clusters.total_weight: sum of weights (60) does not equal total_weight (100)"],
        ),
        (with(true, |b| b.replace("port_value: 9}", "port_value: 70000}")), vec!["socket_address.port_value: port 70000 is out of range"]),
        (
            with(true, |b| b.replace("  - name: backend\n", "  - name: backend\n    type: ORIGINAL_DST\n")),
            vec!["ORIGINAL_DST", "lb_policy"],
        ),
        (
            with(true, |b| {
                b.replace("          http_filters:\n", "          http_filters:\n          - name: envoy.filters.http.router\n            typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}\n")
            }),
            vec!["http_filters[1]: the router filter must be the last HTTP filter"],
        ),
        (with(true, |b| b.replace("domains: [\"*\"]", "domains: [\"a\", \"a\"]")), vec!["domains[1]", "only unique values for domains"]),
        (
            with(true, |b| b.replace("retry_policy_placeholder", ""))
                .replace("route: {cluster: backend}", "route: {cluster: backend, retry_policy: {retry_on: \"sometimes\"}}"),
            vec!["retry_policy.retry_on", "\"sometimes\""],
        ),
        (
            with(true, |b| b.replace("address: 127.0.0.1, port_value: PORT", "address: not-an-ip, port_value: PORT")),
            vec!["listeners[0].address.socket_address.address", "not an IP address"],
        ),
    ];
    for (text, expect) in cases {
        assert_refused(&text, &expect);
    }
}

#[test]
fn a_port_in_use_fails_the_start_and_binds_nothing_else() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = busy.local_addr().expect("addr").port();
    let free = free_port();
    let text = bootstrap(free).replace(
        "  clusters:\n",
        &format!(
            "  - name: second\n    address: {{socket_address: {{address: 127.0.0.1, port_value: {busy_port}}}}}\n    filter_chains:\n    - filters:\n      - name: tcp\n        typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: backend}}\n  clusters:\n"
        ),
    );
    let (code, err) = refuse(&text, "yaml", free);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("listener \"second\": cannot bind 127.0.0.1:{busy_port}")), "{err}");
}

#[test]
fn bad_flags_are_refused() {
    let out = Command::new(WEFT).args(["proxy", "--concurrency", "many", "-c", "x.yaml"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--concurrency"));
    let out = Command::new(WEFT).args(["proxy", "-l", "loud", "-c", "x.yaml"]).output().expect("run");
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid log level \"loud\""));
    let out = Command::new(WEFT).args(["proxy"]).output().expect("run");
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --config-path (-c), --config-yaml or --xds-address"));
    let out = Command::new(WEFT).args(["proxy", "--xds-address", "nowhere"]).output().expect("run");
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--xds-address \"nowhere\": expected HOST:PORT"));
    let out = Command::new(WEFT).args(["proxy", "--xds-address", "127.0.0.1:15010", "--node-meta", "novalue"]).output().expect("run");
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node-meta \"novalue\": expected KEY=VALUE"));
    let out = Command::new(WEFT).args(["proxy", "-c", "/nonexistent/bootstrap.yaml"]).output().expect("run");
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/bootstrap.yaml"));
}

#[test]
fn version_and_validate_mode() {
    let out = Command::new(WEFT).args(["proxy", "--version"]).output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("weft proxy version: "));
    let dir = std::env::temp_dir().join(format!("weft-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("ok.yaml");
    std::fs::write(&path, bootstrap(free_port())).expect("write");
    let out = Command::new(WEFT).args(["proxy", "--mode", "validate", "-c"]).arg(&path).output().expect("run");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}
