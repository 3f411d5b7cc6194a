use super::*;

fn run(text: &str) -> Conversion {
    convert(&[(text.to_string(), "old.yaml".to_string())])
}

/// The converted resources load into weft without errors.
fn loads(c: &Conversion) -> crate::load::Loaded {
    let loaded = crate::load_text(&c.to_yaml(), "converted.yaml");
    let errors: Vec<_> = loaded.diagnostics.iter().filter(|d| d.level == Level::Error).collect();
    assert!(errors.is_empty(), "{errors:#?}\n{}", c.to_yaml());
    loaded
}

#[test]
fn route_rules_for_one_host_become_one_virtual_service_in_precedence_order() {
    let c = run(r#"
apiVersion: config.istio.io/v1alpha2
kind: RouteRule
metadata: {name: reviews-default}
spec:
  destination: {name: reviews}
  precedence: 1
  route: [{labels: {version: v1}}]
---
apiVersion: config.istio.io/v1alpha2
kind: RouteRule
metadata: {name: reviews-test-v2}
spec:
  destination: {name: reviews}
  precedence: 2
  match: {request: {headers: {cookie: {regex: "^(.*?;)?(user=jason)(;.*)?$"}, uri: {prefix: /api}}}}
  route: [{labels: {version: v2}, weight: 50}, {labels: {version: v3}, weight: 50}]
  httpReqTimeout: {simpleTimeout: {timeout: 1m}}
"#);
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
    assert_eq!(c.converted, 2);
    let loaded = loads(&c);
    let vs = loaded.objects.iter().find_map(|o| match o {
        crate::Object::VirtualService(v) => Some(v),
        _ => None,
    });
    let vs = vs.expect("a VirtualService");
    assert_eq!(vs.spec.hosts, ["reviews"]);
    let names: Vec<_> = vs.spec.http.iter().map(|h| h.name.clone().unwrap_or_default()).collect();
    assert_eq!(names, ["reviews-test-v2", "reviews-default"], "higher precedence first");
    assert_eq!(vs.spec.http[0].timeout.map(|t| t.0), Some(std::time::Duration::from_secs(60)));
    let m = &vs.spec.http[0].matches[0];
    assert!(m.uri.is_some() && m.headers.contains_key("cookie"), "uri is its own field, cookie a header");
    let dr = loaded.objects.iter().find_map(|o| match o {
        crate::Object::DestinationRule(d) => Some(d),
        _ => None,
    });
    let subsets: Vec<_> = dr.expect("a DestinationRule").spec.subsets.iter().map(|s| s.name.clone()).collect();
    assert_eq!(subsets, ["v1", "v2", "v3"]);
}

#[test]
fn a_whole_service_policy_is_the_rules_top_level_policy_and_a_labelled_one_its_subsets() {
    let c = run(r#"
kind: DestinationPolicy
metadata: {name: reviews-lb, namespace: shop}
spec:
  destination: {name: reviews}
  loadBalancing: {name: LEAST_CONN}
---
apiVersion: config.istio.io/v1beta1
kind: DestinationPolicy
metadata: {name: reviews-cb, namespace: shop}
spec:
  destination: {name: reviews, labels: {version: v1}}
  source: {name: productpage}
  circuitBreaker:
    simpleCb: {maxConnections: 1, httpMaxPendingRequests: 1, sleepWindow: 3m, httpDetectionInterval: 1s, httpMaxEjectionPercent: 100, httpConsecutiveErrors: 1}
"#);
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
    let yaml = c.to_yaml();
    loads(&c);
    let dr: serde_yaml::Value = serde_yaml::from_str(yaml.split("---").last().unwrap_or_default()).expect("yaml");
    assert_eq!(dr["metadata"]["namespace"], "shop");
    assert_eq!(dr["spec"]["trafficPolicy"]["loadBalancer"]["simple"], "LEAST_REQUEST");
    let v1 = &dr["spec"]["subsets"][0];
    assert_eq!(v1["name"], "v1");
    assert_eq!(v1["trafficPolicy"]["outlierDetection"]["baseEjectionTime"], "180s");
    assert_eq!(v1["trafficPolicy"]["connectionPool"]["tcp"]["maxConnections"], 1);
    assert!(yaml.contains("note: DestinationPolicy shop/reviews-cb: spec.source: "), "{yaml}");
}

#[test]
fn egress_by_address_and_https_origination() {
    let c = run(r#"
apiVersion: config.istio.io/v1alpha2
kind: EgressRule
metadata: {name: mysql, namespace: default}
spec:
  destination: {service: 10.20.30.40}
  ports: [{port: 3306, protocol: tcp}]
---
apiVersion: config.istio.io/v1alpha2
kind: EgressRule
metadata: {name: googleapis}
spec:
  destination: {service: "*.googleapis.com"}
  ports: [{port: 443, protocol: https}]
"#);
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
    let yaml = c.to_yaml();
    loads(&c);
    assert!(yaml.contains("- 10.20.30.40"), "{yaml}");
    assert!(yaml.contains("mysql.default.external"), "{yaml}");
    assert!(yaml.contains("mode: SIMPLE"), "https origination: {yaml}");
    assert!(yaml.contains("sends no SNI"), "{yaml}");
}

#[test]
fn fields_without_an_equivalent_are_noted_and_bad_input_is_refused_with_its_line() {
    let c = run(r#"
apiVersion: config.istio.io/v1alpha2
kind: RouteRule
metadata: {name: r}
spec:
  destination: {name: ratings}
  match: {source: {name: reviews, labels: {version: v2}}}
  websocketUpgrade: true
  httpFault: {delay: {percent: 10.5, fixedDelay: 5s}, abort: {percent: 10, httpStatus: 400}}
"#);
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
    let yaml = c.to_yaml();
    loads(&c);
    assert!(yaml.contains("sourceLabels"), "{yaml}");
    assert!(yaml.contains("not only reviews"), "{yaml}");
    assert!(yaml.contains("spec.websocketUpgrade"), "{yaml}");
    assert!(yaml.contains("value: 10.5"), "fractions kept: {yaml}");
    assert_eq!(c.notes, 2);

    let bad = run(
        "apiVersion: config.istio.io/v1alpha2\nkind: RouteRule\nmetadata: {name: r}\nspec:\n  destination: {name: a}\n  precednce: 2\n",
    );
    assert_eq!(bad.diagnostics.len(), 1, "{:#?}", bad.diagnostics);
    let d = &bad.diagnostics[0];
    assert_eq!((d.line, d.field_path.as_str()), (Some(6), "spec.precednce"), "{d:?}");
    assert!(d.message.contains("did you mean precedence?"), "{d:?}");
    let weights = run("kind: RouteRule\nmetadata: {name: r}\nspec:\n  destination: {name: a}\n  route:\n  - {labels: {version: v1}, weight: 60}\n  - {labels: {version: v2}, weight: 30}\n");
    assert!(weights.diagnostics[0].message.contains("sum to 90"), "{:#?}", weights.diagnostics);
}

#[test]
fn other_documents_pass_through_unchanged() {
    let c = run("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{name: http, port: 80}]}\n");
    assert_eq!(c.converted, 0);
    assert!(matches!(&c.documents[..], [Document::Unchanged(_)]));
}
