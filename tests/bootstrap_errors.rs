//! The exact message `weft proxy` gives for common bootstrap mistakes: a misspelt field is
//! "unknown" with the nearest known name suggested, a reference to a cluster that does not
//! exist and other errors found after parsing carry `file:line:column` as syntax errors do, and
//! a tab in YAML indentation is called a tab. (Refusals in general: `bad_input.rs`.)

use std::process::Command;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A valid bootstrap: an HTTP listener routing to `backend`, a TCP listener to `backend`.
const BASE: &str = r#"static_resources:
  listeners:
  - name: main
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
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
              - match: {prefix: "/"}
                route: {cluster: backend}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: backend
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9}}}
"#;

/// Writes `text` as `name` in a fresh directory, runs `weft proxy --mode validate -c` on it with
/// `args`, and returns stderr with the directory replaced by `DIR`.
fn stderr_of(name: &str, text: &str, args: &[&str]) -> String {
    let dir = std::env::temp_dir().join(format!(
        "weft-bootstrap-errors-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    let out = Command::new(WEFT).args(["proxy", "--mode", "validate", "-c"]).arg(&path).args(args).output().expect("run weft");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1), "expected a refusal:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).replace(&dir.to_string_lossy().into_owned(), "DIR")
}

fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} is not in the base bootstrap");
    BASE.replacen(from, to, 1)
}

#[test]
fn the_base_bootstrap_is_valid() {
    let dir = std::env::temp_dir().join(format!("weft-bootstrap-ok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("ok.yaml");
    std::fs::write(&path, BASE).expect("write");
    let out = Command::new(WEFT).args(["proxy", "--mode", "validate", "-c"]).arg(&path).output().expect("run");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_misspelt_field_is_unknown_and_the_nearest_name_is_suggested() {
    assert_eq!(
        stderr_of("b.yaml", &edit("stat_prefix: in", "stat_prefx: in"), &[]),
        "weft proxy: invalid configuration: DIR/b.yaml:10:11: \
         static_resources.listeners[0].filter_chains[0].filters[0].typed_config.stat_prefx: \
         unknown field \"stat_prefx\"; did you mean \"stat_prefix\"?\n"
    );
    assert_eq!(
        stderr_of("b.yaml", &edit("    connect_timeout: 1s", "    conect_timeout: 1s"), &[]),
        "weft proxy: invalid configuration: DIR/b.yaml:32:5: static_resources.clusters[0].conect_timeout: \
         unknown field \"conect_timeout\"; did you mean \"connect_timeout\"?\n"
    );
    assert_eq!(
        stderr_of("b.yaml", &edit("static_resources:", "static_resource:"), &[]),
        "weft proxy: invalid configuration: DIR/b.yaml:1:1: static_resource: \
         unknown field \"static_resource\"; did you mean \"static_resources\"?\n"
    );
    // JSON too, with its line.
    let json = "{\"static_resources\": {\"clusters\": [\n  {\"name\": \"c\", \"connect_timeout\": \"1s\",\n   \"lb_polcy\": \"RANDOM\"}]}}";
    assert_eq!(
        stderr_of("b.json", json, &[]),
        "weft proxy: invalid configuration: DIR/b.json:3:13: static_resources.clusters[0].lb_polcy: \
         unknown field \"lb_polcy\"; did you mean \"lb_policy\"?\n"
    );
}

#[test]
fn a_field_far_from_every_known_name_lists_them() {
    let err = stderr_of("b.yaml", &edit("          stat_prefix: t\n", "          stat_prefix: t\n          zzzzzz: 1\n"), &[]);
    assert!(
        err.starts_with(
            "weft proxy: invalid configuration: DIR/b.yaml:29:11: \
             static_resources.listeners[1].filter_chains[0].filters[0].typed_config.zzzzzz: \
             unknown field \"zzzzzz\" (fields here: "
        ),
        "{err}"
    );
    assert!(err.contains("stat_prefix") && err.contains("idle_timeout"), "{err}");
}

#[test]
fn a_known_field_weft_does_not_implement_still_says_so() {
    assert_eq!(
        stderr_of("b.yaml", &edit("static_resources:", "default_socket_interface: x\nstatic_resources:"), &[]),
        "weft proxy: invalid configuration: DIR/b.yaml:1:1: default_socket_interface: not supported\n"
    );
}

#[test]
fn an_unknown_cluster_names_its_line_and_field() {
    assert_eq!(
        stderr_of("b.yaml", &edit("route: {cluster: backend}", "route: {cluster: backnd}"), &[]),
        "weft proxy: invalid configuration: DIR/b.yaml:17:34: \
         static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].route.cluster: \
         unknown cluster \"backnd\"\n"
    );
    assert_eq!(
        stderr_of("b.yaml", &edit("          cluster: backend", "          cluster: nowhere"), &[]),
        "weft proxy: invalid configuration: DIR/b.yaml:29:20: \
         static_resources.listeners[1].filter_chains[0].filters[0].typed_config.cluster: unknown cluster \"nowhere\"\n"
    );
    // A duplicate name, found after parsing too.
    assert_eq!(
        stderr_of("b.yaml", &edit("  - name: tcp\n", "  - name: main\n"), &[]),
        "weft proxy: invalid configuration: DIR/b.yaml:21:11: static_resources.listeners[1].name: duplicate listener name \"main\"\n"
    );
}

#[test]
fn an_error_in_config_yaml_names_that_source() {
    let err = stderr_of("b.yaml", BASE, &["--config-yaml", "admin:\n  address: {socket_address: {address: not-an-ip, port_value: 1}}"]);
    assert_eq!(
        err,
        "weft proxy: invalid configuration: --config-yaml:2:39: admin.address.socket_address.address: \"not-an-ip\" is not an IP address\n"
    );
}

#[test]
fn a_tab_in_yaml_indentation_is_called_a_tab() {
    assert_eq!(
        stderr_of("b.yaml", &edit("    connect_timeout: 1s", "\tconnect_timeout: 1s"), &[]),
        "weft proxy: invalid configuration: DIR/b.yaml:32:1: line 32 is indented with a tab; YAML indentation must use spaces\n"
    );
    assert_eq!(
        stderr_of("b.yaml", &edit("  clusters:", "\tclusters:"), &[]),
        "weft proxy: invalid configuration: DIR/b.yaml:30:1: line 30 is indented with a tab; YAML indentation must use spaces\n"
    );
}
