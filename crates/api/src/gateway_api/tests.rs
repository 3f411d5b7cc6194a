use super::*;
use crate::networking::{StringMatch, VirtualService};
use crate::{load_text, Resource};

/// Loads `text` with its Gateway API documents expanded: the objects, diagnostics, statuses.
fn expanded(text: &str) -> (Vec<Object>, Vec<Diagnostic>, Vec<ObjectStatus>) {
    let loaded = load_text(text, "gw.yaml");
    let (mut objects, mut diagnostics) = (loaded.objects, loaded.diagnostics);
    let statuses = expand(&mut objects, &mut diagnostics, &loaded.gateway_api_docs);
    (objects, diagnostics, statuses)
}

fn virtual_services(objects: &[Object]) -> Vec<&Resource<VirtualService>> {
    objects.iter().filter_map(|o| if let Object::VirtualService(r) = o { Some(r) } else { None }).collect()
}

fn status_of<'a>(statuses: &'a [ObjectStatus], kind: &str, name: &str) -> &'a ObjectStatus {
    statuses.iter().find(|s| s.kind == kind && s.name == name).unwrap_or_else(|| panic!("no status for {kind} {name}: {statuses:#?}"))
}

const BASE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{name: http, port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: default}
spec: {ports: [{name: http, port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: other}
spec: {ports: [{name: http, port: 9090}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: \"*.example.com\"}
  - {name: other, port: 8000, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
";

#[test]
fn a_gateway_listener_becomes_an_istio_gateway_its_proxies_are_selected_by_label() {
    let (objects, diagnostics, statuses) = expanded(BASE);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let gws: Vec<_> = objects.iter().filter_map(|o| if let Object::Gateway(g) = o { Some(g) } else { None }).collect();
    assert_eq!(gws.len(), 2);
    let http = gws.iter().find(|g| g.name == "edge-http-k8s-gateway").expect("listener http");
    assert_eq!(http.spec.selector.get(GATEWAY_NAME_LABEL).map(String::as_str), Some("edge"));
    assert_eq!(http.spec.servers[0].hosts, vec!["default/*.example.com"], "only the Gateway's namespace binds (allowedRoutes: Same)");
    assert_eq!(http.spec.servers[0].port.number, 80);
    let st = status_of(&statuses, "Gateway", "edge");
    assert!(st.conditions.iter().all(|c| c.ok), "{st}");
    assert_eq!(st.listeners.len(), 2);
}

#[test]
fn an_http_route_attaches_by_hostname_and_keeps_gateway_api_precedence() {
    let route = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: default}\nspec:\n  parentRefs: [{name: edge, sectionName: http}]\n  hostnames: [shop.example.com, shop.other.org]\n  rules:\n  - backendRefs: [{name: web, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /api/}}]\n    filters:\n    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Via, value: gw}], remove: [x-internal]}}\n    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}\n    backendRefs: [{name: web, port: 8080, weight: 90}, {name: web-v2, port: 8080, weight: 10}]\n  - matches: [{path: {type: Exact, value: /login}, method: POST}]\n    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]\n";
    let (objects, diagnostics, statuses) = expanded(&format!("{BASE}{route}"));
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let vss = virtual_services(&objects);
    assert_eq!(vss.len(), 1, "one host in common with the listener: {vss:#?}");
    let vs = vss[0];
    assert_eq!(vs.spec.hosts, vec!["shop.example.com"]);
    assert_eq!(vs.spec.gateways, vec!["default/edge-http-k8s-gateway"]);
    let uris: Vec<Option<StringMatch>> = vs.spec.http.iter().map(|r| r.matches.first().and_then(|m| m.uri.clone())).collect();
    // Exact /login first, then the prefix /api (as /api exactly and /api/…), then everything.
    assert_eq!(uris[0], Some(StringMatch::Exact("/login".into())), "{uris:?}");
    assert_eq!(uris[1], Some(StringMatch::Exact("/api".into())), "{uris:?}");
    assert_eq!(uris[2], Some(StringMatch::Prefix("/api/".into())), "a prefix matches whole segments: {uris:?}");
    assert_eq!(uris[3], None);
    assert_eq!(vs.spec.http[0].redirect.as_ref().and_then(|r| r.redirect_code), Some(301));
    assert_eq!(vs.spec.http[1].rewrite.as_ref().and_then(|r| r.uri.clone()).as_deref(), Some("/v2"));
    assert_eq!(vs.spec.http[2].rewrite.as_ref().and_then(|r| r.uri.clone()).as_deref(), Some("/v2/"));
    let weights: Vec<Option<i64>> = vs.spec.http[2].route.iter().map(|d| d.weight).collect();
    assert_eq!(weights, vec![Some(90), Some(10)]);
    let set = vs.spec.http[2].headers.as_ref().and_then(|h| h.request.as_ref()).map(|r| r.set.clone()).unwrap_or_default();
    assert_eq!(set.get("x-via").map(String::as_str), Some("gw"));
    let st = status_of(&statuses, "HTTPRoute", "web");
    assert_eq!(st.parents.len(), 1);
    assert!(st.parents[0].conditions.iter().all(|c| c.ok), "{st}");
    let gw = status_of(&statuses, "Gateway", "edge");
    assert_eq!(gw.listeners.iter().find(|l| l.0 == "http").map(|l| l.1), Some(1), "attachedRoutes");
}

#[test]
fn routes_that_cannot_attach_or_resolve_say_why_with_gateway_api_reasons() {
    let routes = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: nohost, namespace: default}\nspec:\n  parentRefs: [{name: edge, sectionName: http}]\n  hostnames: [shop.other.org]\n  rules: [{backendRefs: [{name: web, port: 8080}]}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: foreign, namespace: other}\nspec:\n  parentRefs: [{name: edge, namespace: default, sectionName: http}]\n  hostnames: [a.example.com]\n  rules: [{backendRefs: [{name: api, port: 9090}]}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: crossref, namespace: default}\nspec:\n  parentRefs: [{name: edge, sectionName: other}]\n  rules: [{backendRefs: [{name: api, namespace: other, port: 9090}, {name: missing, port: 1}]}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: ghost, namespace: default}\nspec:\n  parentRefs: [{name: nowhere}]\n";
    let (objects, _diagnostics, statuses) = expanded(&format!("{BASE}{routes}"));
    let reason = |name: &str, kind: &str| {
        let st = status_of(&statuses, "HTTPRoute", name);
        st.parents[0].conditions.iter().find(|c| c.kind == kind).map(|c| (c.ok, c.reason.clone())).unwrap_or_else(|| panic!("{st}"))
    };
    assert_eq!(reason("nohost", "Accepted"), (false, "NoMatchingListenerHostname".into()));
    assert_eq!(reason("foreign", "Accepted"), (false, "NotAllowedByListeners".into()), "listener http allows its own namespace only");
    assert_eq!(reason("crossref", "Accepted"), (true, "Accepted".into()));
    assert_eq!(reason("crossref", "ResolvedRefs"), (false, "RefNotPermitted".into()), "another namespace's Service needs a ReferenceGrant");
    assert_eq!(reason("ghost", "Accepted"), (false, "NoMatchingParent".into()));
    // Every backend of crossref is unusable: its rule answers 500, as Gateway API says.
    let vs =
        virtual_services(&objects).into_iter().find(|v| v.spec.gateways == vec!["default/edge-other-k8s-gateway"]).expect("crossref vs");
    assert_eq!(vs.spec.http[0].direct_response.as_ref().map(|d| d.status), Some(500));

    // A ReferenceGrant in the Service's namespace lets it through.
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: let-default-in, namespace: other}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]\n  to: [{group: \"\", kind: Service}]\n";
    let (objects, _, statuses) = expanded(&format!("{BASE}{routes}{grant}"));
    let st = status_of(&statuses, "HTTPRoute", "crossref");
    assert_eq!(
        st.parents[0].conditions.iter().find(|c| c.kind == "ResolvedRefs").map(|c| c.reason.as_str()),
        Some("BackendNotFound"),
        "the grant resolves api; `missing` is still not found: {st}"
    );
    let vs =
        virtual_services(&objects).into_iter().find(|v| v.spec.gateways == vec!["default/edge-other-k8s-gateway"]).expect("crossref vs");
    assert_eq!(vs.spec.http[0].route[0].destination.host, "api.other.svc.cluster.local");
}

#[test]
fn an_http_route_with_a_service_parent_routes_mesh_traffic() {
    let route = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: split, namespace: default}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: web, port: 8080}]\n  rules:\n  - matches: [{headers: [{name: x-canary, value: \"yes\"}]}]\n    backendRefs: [{name: web-v2, port: 8080}]\n  - backendRefs: [{name: web, port: 8080}]\n";
    let (objects, diagnostics, statuses) = expanded(&format!("{BASE}{route}"));
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let vs = virtual_services(&objects).into_iter().next().expect("a mesh VirtualService");
    assert_eq!(vs.spec.hosts, vec!["web.default.svc.cluster.local"]);
    assert!(vs.spec.gateways.is_empty(), "bound to the mesh");
    assert_eq!(vs.spec.http[0].matches[0].port, Some(8080));
    assert!(vs.spec.http[0].matches[0].headers.contains_key("x-canary"));
    assert_eq!(vs.spec.http[1].route[0].destination.host, "web.default.svc.cluster.local");
    assert!(status_of(&statuses, "HTTPRoute", "split").parents[0].conditions.iter().all(|c| c.ok));
}

#[test]
fn listener_conflicts_unsupported_protocols_and_unsupported_fields_are_named() {
    let gw = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: bad, namespace: default}\nspec:\n  gatewayClassName: istio\n  listeners:\n  - {name: a, port: 80, protocol: HTTP}\n  - {name: b, port: 80, protocol: HTTP}\n  - {name: c, port: 81, protocol: http}\n  - {name: d, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: nope}]}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: addressed, namespace: default}\nspec:\n  gatewayClassName: istio\n  addresses: [{value: 10.0.0.1}]\n  listeners: [{name: a, port: 80, protocol: HTTP}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: theirs, namespace: default}\nspec:\n  gatewayClassName: nginx\n  listeners: [{name: a, port: 80, protocol: HTTP}]\n";
    let (objects, diagnostics, statuses) = expanded(gw);
    let st = status_of(&statuses, "Gateway", "bad");
    let listener = |n: &str| st.listeners.iter().find(|l| l.0 == n).map(|l| l.2.clone()).unwrap_or_default();
    let has = |cs: &[Condition], kind: &str, ok: bool, reason: &str| cs.iter().any(|c| c.kind == kind && c.ok == ok && c.reason == reason);
    assert!(has(&listener("b"), "Conflicted", true, "HostnameConflict"), "{st}");
    assert!(has(&listener("c"), "Accepted", false, "UnsupportedProtocol"), "{st}");
    assert!(listener("c").iter().any(|c| c.message.contains("uppercase")), "{st}");
    assert!(has(&listener("d"), "ResolvedRefs", false, "InvalidCertificateRef"), "{st}");
    assert!(has(&st.conditions, "Accepted", true, "ListenersNotValid"), "{st}");
    let served: Vec<String> = objects.iter().filter_map(|o| if let Object::Gateway(g) = o { Some(g.name.clone()) } else { None }).collect();
    assert_eq!(served, vec!["bad-a-k8s-gateway"], "only the listener that works is served");
    assert!(diagnostics.iter().any(|d| d.level == Level::Error && d.field_path == "spec.addresses"), "{diagnostics:#?}");
    assert!(diagnostics
        .iter()
        .any(|d| d.level == Level::Warning && d.field_path == "spec.gatewayClassName" && d.message.contains("nginx")));
    assert!(diagnostics.iter().any(|d| d.message.contains("Conflicted=True (HostnameConflict)")), "unwell conditions are warnings");
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    let bad = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: typo, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n  rules: [{backendRefs: [{name: web, port: 8080, wieght: 3}]}]\n";
    let (_, diagnostics, _) = expanded(bad);
    let d = diagnostics.iter().find(|d| d.level == Level::Error).unwrap_or_else(|| panic!("{diagnostics:#?}"));
    assert!(d.field_path.contains("rules[0].backendRefs[0]") && d.message.contains("wieght"), "{d}");
}

#[test]
fn grpc_tls_and_tcp_routes_become_istio_routes_on_their_listeners() {
    let text = format!(
        "{BASE}---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: l4, namespace: default}}\nspec:\n  gatewayClassName: istio\n  listeners:\n  - {{name: tls, port: 443, protocol: TLS, hostname: \"*.example.com\", tls: {{mode: Passthrough}}}}\n  - {{name: db, port: 5432, protocol: TCP}}\n  - {{name: grpc, port: 8443, protocol: HTTP}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata: {{name: secure, namespace: default}}\nspec:\n  parentRefs: [{{name: l4, sectionName: tls}}]\n  hostnames: [secure.example.com]\n  rules: [{{backendRefs: [{{name: web, port: 8443}}]}}]\n---\n\
         apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {{name: db, namespace: default}}\nspec:\n  parentRefs: [{{name: l4, sectionName: db}}]\n  rules: [{{backendRefs: [{{name: web, port: 5432, weight: 3}}, {{name: web-v2, port: 5432, weight: 1}}]}}]\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: rpc, namespace: default}}\nspec:\n  parentRefs: [{{name: l4, sectionName: grpc}}]\n  rules:\n  - matches: [{{method: {{service: shop.Cart, method: Add}}}}]\n    backendRefs: [{{name: web-v2, port: 8080}}]\n  - matches: [{{method: {{service: shop.Cart}}}}]\n    backendRefs: [{{name: web, port: 8080}}]\n---\n\
         apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {{name: wrong-listener, namespace: default}}\nspec:\n  parentRefs: [{{name: l4, sectionName: tls}}]\n  rules: [{{backendRefs: [{{name: web, port: 1}}]}}]\n"
    );
    let (objects, diagnostics, statuses) = expanded(&text);
    assert!(diagnostics.iter().all(|d| d.level != Level::Error), "{diagnostics:#?}");
    let vss = virtual_services(&objects);
    let tls = vss.iter().find(|v| !v.spec.tls.is_empty()).expect("a tls VirtualService");
    assert_eq!(tls.spec.hosts, vec!["secure.example.com"]);
    assert_eq!(tls.spec.tls[0].matches[0].sni_hosts, vec!["secure.example.com"]);
    assert_eq!(tls.spec.tls[0].route[0].destination.host, "web.default.svc.cluster.local");
    let tcp = vss.iter().find(|v| !v.spec.tcp.is_empty()).expect("a tcp VirtualService");
    assert_eq!(tcp.spec.gateways, vec!["default/l4-db-k8s-gateway"]);
    let weights: Vec<Option<i64>> = tcp.spec.tcp[0].route.iter().map(|d| d.weight).collect();
    assert_eq!(weights, vec![Some(75), Some(25)], "Gateway API's relative weights as Istio's percentages");
    let grpc = vss.iter().find(|v| v.spec.gateways == vec!["default/l4-grpc-k8s-gateway"]).expect("a gRPC VirtualService");
    assert_eq!(grpc.spec.http[0].matches[0].uri, Some(StringMatch::Exact("/shop.Cart/Add".into())), "a method before a service");
    assert_eq!(grpc.spec.http[1].matches[0].uri, Some(StringMatch::Prefix("/shop.Cart/".into())));
    let wrong = status_of(&statuses, "TCPRoute", "wrong-listener");
    assert_eq!(wrong.parents[0].conditions[0].reason, "NotAllowedByListeners", "{wrong}");
}

/// The shape of Istio's httpbin Gateway API sample (a Gateway with an HTTP listener from
/// all namespaces and an HTTPRoute with two path prefixes and a header set), written here.
#[test]
fn an_httpbin_style_sample_loads_and_is_accepted() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: httpbin, namespace: default}\nspec: {ports: [{name: http, port: 8000}]}\n---\n\
                apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gateway, namespace: istio-ingress}\nspec:\n  gatewayClassName: istio\n  listeners:\n  - name: default\n    hostname: \"*.example.com\"\n    port: 80\n    protocol: HTTP\n    allowedRoutes:\n      namespaces:\n        from: All\n---\n\
                apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: http, namespace: default}\nspec:\n  parentRefs:\n  - name: gateway\n    namespace: istio-ingress\n  hostnames: [\"httpbin.example.com\"]\n  rules:\n  - matches:\n    - path:\n        type: PathPrefix\n        value: /get\n    - path:\n        type: PathPrefix\n        value: /headers\n    filters:\n    - type: RequestHeaderModifier\n      requestHeaderModifier:\n        add:\n        - name: my-added-header\n          value: added-value\n    backendRefs:\n    - name: httpbin\n      port: 8000\n";
    let (objects, diagnostics, statuses) = expanded(text);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let vs = virtual_services(&objects).into_iter().next().expect("a VirtualService");
    assert_eq!(vs.namespace, "istio-ingress");
    assert_eq!(vs.spec.hosts, vec!["httpbin.example.com"]);
    assert_eq!(vs.spec.http.len(), 4, "two prefixes, each as a whole segment and below it");
    for s in &statuses {
        assert!(s.unwell().is_empty(), "{s}");
    }
}

#[test]
fn a_rule_that_cannot_be_served_is_left_out_and_the_rest_served() {
    let route = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: mixed, namespace: default}\nspec:\n  parentRefs: [{name: edge, sectionName: http}]\n  hostnames: [shop.example.com]\n  rules:\n  - matches: [{path: {value: /ext}}]\n    filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Thing, name: t}}]\n    backendRefs: [{name: web, port: 8080}]\n  - matches: [{headers: [{name: x-a, value: first}, {name: X-A, value: second}]}]\n    backendRefs: [{name: web, port: 8080}]\n";
    let (objects, _, statuses) = expanded(&format!("{BASE}{route}"));
    let st = status_of(&statuses, "HTTPRoute", "mixed");
    let has =
        |kind: &str, ok: bool, reason: &str| st.parents[0].conditions.iter().any(|c| c.kind == kind && c.ok == ok && c.reason == reason);
    assert!(has("Accepted", true, "Accepted") && has("PartiallyInvalid", true, "UnsupportedValue"), "{st}");
    assert!(st.unwell().iter().any(|(_, c)| c.message.contains("ExtensionRef")), "{st}");
    let vs = virtual_services(&objects).into_iter().next().expect("the good rule is served");
    assert_eq!(vs.spec.http.len(), 1);
    let header = vs.spec.http[0].matches[0].headers.get("x-a").cloned();
    assert_eq!(header, Some(StringMatch::Exact("first".into())), "a header named twice: the first counts");
}
