use super::*;

#[test]
fn tracing_sampling_is_a_percentage() {
    let ok = load_mesh("defaultConfig:\n  tracing:\n    sampling: 2.5\n", "mesh.yaml").expect("valid");
    assert_eq!(ok.default_config.tracing.and_then(|t| t.sampling), Some(2.5));
    let err = load_mesh("defaultConfig:\n  tracing:\n    sampling: 250\n", "mesh.yaml").expect_err("out of range");
    assert_eq!(err.field_path, "defaultConfig.tracing.sampling");
    assert_eq!(err.line, Some(3));
}

#[test]
fn zipkin_address_is_host_and_port() {
    let ok = load_mesh("defaultConfig:\n  tracing:\n    zipkin: {address: zipkin.istio-system:9411}\n", "mesh.yaml").expect("valid");
    let z = ok.default_config.tracing.and_then(|t| t.zipkin).expect("zipkin");
    assert_eq!(z.host_port(), Some(("zipkin.istio-system", 9411)));
    for bad in ["zipkin", "zipkin:0", ":9411", "zipkin:port"] {
        let err = load_mesh(&format!("defaultConfig:\n  tracing:\n    zipkin: {{address: \"{bad}\"}}\n"), "mesh.yaml").expect_err(bad);
        assert_eq!(err.field_path, "defaultConfig.tracing.zipkin.address", "{bad}");
    }
}

#[test]
fn proxy_http_port_is_a_port() {
    assert_eq!(load_mesh("proxyHttpPort: 15080\n", "mesh.yaml").expect("valid").proxy_http_port, Some(15080));
    assert_eq!(load_mesh("proxyHttpPort: 0\n", "mesh.yaml").expect_err("zero").field_path, "proxyHttpPort");
    assert!(load_mesh("proxyHttpPort: 70000\n", "mesh.yaml").is_err());
}

const EVERY_FIELD: &str = include_str!("../../tests/fixtures/mesh-every-field.yaml");

fn errors(text: &str) -> Vec<Diagnostic> {
    let errors = load_mesh_checked(text, "mesh.yaml").expect_err("should fail");
    assert!(errors.iter().all(|d| d.level == Level::Error), "{errors:#?}");
    errors
}

fn json_names(msg: &fields::Message) -> Vec<String> {
    msg.fields.iter().map(|f| f.json_name()).collect()
}

#[test]
fn mesh_config_with_every_field_loads() {
    // The tables list every field of Istio's messages (counted in config.proto and proxy.proto).
    assert_eq!(fields::MESH_CONFIG.fields.len(), 50);
    assert_eq!(fields::PROXY_CONFIG.fields.len(), 40);
    // The fixture sets every one of them.
    let doc: serde_yaml::Value = serde_yaml::from_str(EVERY_FIELD).expect("fixture is YAML");
    for name in json_names(&fields::MESH_CONFIG) {
        assert!(doc.get(&name).is_some(), "fixture lacks {name}");
    }
    for name in json_names(&fields::PROXY_CONFIG) {
        assert!(doc["defaultConfig"].get(&name).is_some(), "fixture lacks defaultConfig.{name}");
    }

    let (mesh, warnings) = load_mesh_checked(EVERY_FIELD, "mesh-every-field.yaml").expect("every Istio field loads");
    assert!(warnings.iter().all(|w| w.level == Level::Warning), "{warnings:#?}");
    // One warning per field weft does not act on: 39 of MeshConfig, 37 of ProxyConfig, 8 of
    // tracing and outboundTrafficPolicy.tls; and one for the external authorization provider.
    assert_eq!(warnings.len(), 39 + 37 + 8 + 1 + 1, "{warnings:#?}");
    let mut paths: Vec<_> = warnings.iter().map(|w| w.field_path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), warnings.len(), "one warning per field");
    for acted in [
        "enableTracing",
        "proxyHttpPort",
        "defaultConfig.concurrency",
        "defaultConfig.tracing.sampling",
        "defaultConfig.proxyMetadata",
        "trustDomain",
        "rootNamespace",
    ] {
        assert!(!paths.contains(&acted), "{acted} is acted on, not warned");
    }

    let find = |path: &str| warnings.iter().find(|w| w.field_path == path).unwrap_or_else(|| panic!("no warning for {path}"));
    let drain = find("defaultConfig.drainDuration");
    assert!(drain.message.contains("weft does not act on this field yet"), "{}", drain.message);
    assert!(!drain.message.contains("security"), "{}", drain.message);
    assert_eq!(drain.line, Some(EVERY_FIELD.lines().position(|l| l.starts_with("  drainDuration:")).map(|i| i + 1).expect("line")));
    assert_eq!(drain.file, "mesh-every-field.yaml");
    assert_eq!(mesh.default_config.proxy_metadata.get("ISTIO_META_DNS_CAPTURE").map(String::as_str), Some("true"));
    assert!(find("extensionProviders[0].envoyExtAuthzHttp").message.contains("does not call external authorization providers"));
    assert_eq!(mesh.default_providers.metrics, vec!["prometheus".to_owned()]);
    assert!(find("meshMTLS").message.contains("weaken security"));
    assert!(find("defaultConfig.tracing.tlsSettings").message.contains("weaken security"));
    find("defaultConfig.tracing.lightstep");
    find("outboundTrafficPolicy.tls");
    assert!(mesh.enable_tracing, "enableTracing is acted on");

    // The acted-on fields are read as before.
    assert_eq!(mesh.proxy_http_port, Some(15080));
    assert_eq!(mesh.trust_domain, "example.org");
    assert!(!mesh.enable_auto_mtls);
    assert_eq!(mesh.root_namespace, "mesh-root");
    assert_eq!(mesh.access_log_file.as_deref(), Some("/dev/stdout"));
    assert_eq!(mesh.outbound_traffic_policy.mode, crate::networking::OutboundMode::RegistryOnly);
    assert_eq!(mesh.default_config.concurrency, Some(2));
    let tracing = mesh.default_config.tracing.expect("tracing");
    assert_eq!(tracing.sampling, Some(1.0));
    assert_eq!(tracing.zipkin.map(|z| z.address).as_deref(), Some("zipkin.istio-system:9411"));
}

#[test]
fn acted_on_fields_parse_as_before() {
    let text = "\
outboundTrafficPolicy: {mode: REGISTRY_ONLY}
defaultConfig:
  concurrency: 4
  tracing: {sampling: 10, zipkin: {address: zipkin:9411}}
trustDomain: td.example
enableAutoMtls: false
rootNamespace: root
accessLogFile: /dev/stdout
accessLogFormat: \"%START_TIME%\\n\"
proxyHttpPort: 15007
enableTracing: false
";
    let (mesh, warnings) = load_mesh_checked(text, "mesh.yaml").expect("valid");
    assert!(warnings.is_empty(), "{warnings:#?}");
    let expected = MeshConfig {
        outbound_traffic_policy: OutboundTrafficPolicy { mode: crate::networking::OutboundMode::RegistryOnly, egress_proxy: None },
        default_config: ProxyConfig {
            concurrency: Some(4),
            tracing: Some(Tracing { sampling: Some(10.0), zipkin: Some(ZipkinTracing { address: "zipkin:9411".into() }) }),
            proxy_metadata: Default::default(),
        },
        trust_domain: "td.example".into(),
        enable_auto_mtls: false,
        root_namespace: "root".into(),
        access_log_file: Some("/dev/stdout".into()),
        access_log_format: Some("%START_TIME%\n".into()),
        proxy_http_port: Some(15007),
        enable_tracing: false,
        ..MeshConfig::default()
    };
    assert_eq!(mesh, expected);
    assert_eq!(load_mesh(text, "mesh.yaml").expect("valid"), expected);
    // Direct deserialization (tests elsewhere use it) still works on the acted-on fields.
    assert_eq!(serde_yaml::from_str::<MeshConfig>(text).expect("serde"), expected);
    // Istio's proto names are accepted too.
    let snake = text
        .replace("outboundTrafficPolicy", "outbound_traffic_policy")
        .replace("defaultConfig", "default_config")
        .replace("trustDomain", "trust_domain")
        .replace("proxyHttpPort", "proxy_http_port");
    assert_eq!(load_mesh_checked(&snake, "mesh.yaml").expect("snake_case").0, expected);
    // An empty file is Istio's defaults.
    assert_eq!(load_mesh_checked("", "mesh.yaml").expect("empty"), (MeshConfig::default(), Vec::new()));
}

#[test]
fn unknown_field_suggests_the_nearest_name() {
    let e = errors("trustDomain: a\nenableTracng: true\n");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].field_path, "enableTracng");
    assert_eq!(e[0].line, Some(2));
    assert!(e[0].message.starts_with("unknown field"), "{}", e[0].message);
    assert!(e[0].message.ends_with("did you mean enableTracing?"), "{}", e[0].message);

    let e = errors("defaultConfig:\n  proxyMetdata: {A: b}\n");
    assert_eq!(e[0].field_path, "defaultConfig.proxyMetdata");
    assert!(e[0].message.ends_with("did you mean proxyMetadata?"), "{}", e[0].message);

    let e = errors("defaultConfig:\n  tracing:\n    samplng: 1\n");
    assert_eq!((e[0].field_path.as_str(), e[0].line), ("defaultConfig.tracing.samplng", Some(3)));
    assert!(e[0].message.ends_with("did you mean sampling?"), "{}", e[0].message);

    // A ProxyConfig field at the top level, a removed field, and one nothing is near.
    assert!(errors("image: {imageType: distroless}\n")[0].message.ends_with("did you mean defaultConfig.image?"));
    assert!(errors("authPolicy: MUTUAL_TLS\n")[0].message.contains("Istio removed it"));
    let e = errors("frobnicate: 1\n");
    assert!(!e[0].message.contains("did you mean"), "{}", e[0].message);
    // Not a field of MeshConfig's outboundTrafficPolicy (it is one of the Sidecar's).
    assert_eq!(errors("outboundTrafficPolicy: {egressProxy: {host: x}}\n")[0].field_path, "outboundTrafficPolicy.egressProxy");
}

#[test]
fn every_error_is_reported() {
    let text = "\
enableTracng: true
defaultConfig:
  concurency: 2
  tracing:
    sampling: 250
enableEnvoyAccessLogService: {yes: 1}
connectTimeout: soon
trustDomain: a
trust_domain: b
";
    let e = errors(text);
    let got: Vec<_> = e.iter().map(|d| (d.field_path.as_str(), d.line)).collect();
    assert_eq!(
        got,
        [
            ("enableTracng", Some(1)),
            ("defaultConfig.concurency", Some(3)),
            ("defaultConfig.tracing.sampling", Some(5)),
            ("enableEnvoyAccessLogService", Some(6)),
            ("connectTimeout", Some(7)),
            ("trust_domain", Some(9)),
        ],
        "{e:#?}"
    );
    assert!(e[1].message.ends_with("did you mean concurrency?"), "{}", e[1].message);
    assert!(e[2].message.contains("not a percentage"), "{}", e[2].message);
    assert!(e[3].message.contains("expected true or false, found a mapping"), "{}", e[3].message);
    assert!(e[4].message.contains("invalid duration"), "{}", e[4].message);
    assert!(e[5].message.contains("set twice"), "{}", e[5].message);
    // load_mesh stops at the first.
    assert_eq!(*load_mesh(text, "mesh.yaml").expect_err("bad"), e[0]);
}

#[test]
fn zipkin_provider_fields_weft_applies_load_without_a_warning_and_a_bad_option_is_refused() {
    let text = "extensionProviders:\n- name: z\n  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411, path: /api/v2/spans, traceContextOption: USE_B3, maxTagLength: 64}\n";
    let (mesh, warnings) = load_mesh_checked(text, "mesh.yaml").expect("valid");
    let paths: Vec<&str> = warnings.iter().map(|w| w.field_path.as_str()).collect();
    assert_eq!(paths, vec!["extensionProviders[0].zipkin.maxTagLength"], "only the field weft ignores is warned about");
    assert_eq!(mesh.extension_providers.len(), 1);
    let errs = errors(&text.replace("USE_B3", "USE_W3C"));
    assert_eq!(errs[0].field_path, "extensionProviders[0].zipkin.traceContextOption", "{errs:#?}");
}
