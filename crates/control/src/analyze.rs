//! `weft analyze`: validation errors plus analyzers for the mistakes Istio users make most —
//! ports whose names select no protocol, routes to hosts or subsets that do not exist, subsets
//! that select nothing, and several VirtualServices claiming one host.

use std::collections::BTreeMap;

use weft_api::{codes, Diagnostic, Level, Object, Resource};

use crate::model::{labels_match, Model};
use crate::protocol::Protocol;
use crate::store::Snapshot;

fn at<S>(r: &Resource<S>, kind: &str, path: &str, level: Level, code: &'static str, message: String) -> Diagnostic {
    Diagnostic {
        level,
        file: r.origin.file.clone(),
        line: Some(r.origin.line),
        resource: Some(format!("{kind} {}/{}", r.namespace, r.name)),
        field_path: path.into(),
        message,
        code: Some(code),
    }
}

/// Every diagnostic for a snapshot: the loader's, then the analyzers'.
pub fn analyze(snapshot: &Snapshot, model: &Model) -> Vec<Diagnostic> {
    let mut out = snapshot.diagnostics.clone();
    for o in &snapshot.objects {
        if let Object::Service(r) = o {
            for (i, p) in r.spec.ports.iter().enumerate() {
                let proto = Protocol::for_service_port(p.name.as_deref(), p.app_protocol.as_deref(), p.protocol.as_deref(), p.port);
                if proto == Protocol::Auto {
                    let name = p.name.clone().unwrap_or_default();
                    out.push(at(
                        r,
                        "Service",
                        &format!("spec.ports[{i}].name"),
                        Level::Warning,
                        codes::PORT_NAME_CONVENTION,
                        format!("port name {name:?} selects no protocol (names are <protocol>[-<suffix>], e.g. \"http\", \"http2-api\", \"grpc\"); traffic on port {} will be sniffed", p.port),
                    ));
                }
            }
        }
    }
    let mut claims: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for vs in &model.virtual_services {
        let mesh_bound = vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh");
        for (i, h) in vs.spec.hosts.iter().enumerate() {
            let host = model.resolve_host(h, &vs.namespace);
            if mesh_bound {
                // A VirtualService naming one host twice (`reviews` and its FQDN) claims it once.
                let owners = claims.entry(host.clone()).or_default();
                if !owners.contains(&vs.key()) {
                    owners.push(vs.key());
                }
            }
            // A gateway's hosts are the names clients outside call, not services.
            if mesh_bound && !host.contains('*') && model.service(&host).is_none() {
                out.push(at(
                    vs,
                    "VirtualService",
                    &format!("spec.hosts[{i}]"),
                    Level::Warning,
                    codes::REFERENCE_NOT_FOUND,
                    format!("host {h:?} ({host}) matches no Service or ServiceEntry"),
                ));
            }
        }
        let dests = vs.spec.http.iter().enumerate().flat_map(|(i, r)| {
            r.route.iter().enumerate().map(move |(j, d)| (format!("spec.http[{i}].route[{j}].destination"), &d.destination))
        });
        let tcp = vs.spec.tcp.iter().enumerate().flat_map(|(i, r)| {
            r.route.iter().enumerate().map(move |(j, d)| (format!("spec.tcp[{i}].route[{j}].destination"), &d.destination))
        });
        for (path, d) in dests.chain(tcp) {
            let host = model.resolve_host(&d.host, &vs.namespace);
            if model.service(&host).is_none() {
                out.push(at(
                    vs,
                    "VirtualService",
                    &format!("{path}.host"),
                    Level::Error,
                    codes::REFERENCE_NOT_FOUND,
                    format!("destination host {:?} ({host}) matches no Service or ServiceEntry", d.host),
                ));
                continue;
            }
            if let Some(subset) = &d.subset {
                let known =
                    model.destination_rule(&host, &vs.namespace).is_some_and(|dr| dr.spec.subsets.iter().any(|s| &s.name == subset));
                if !known {
                    out.push(at(
                        vs,
                        "VirtualService",
                        &format!("{path}.subset"),
                        Level::Error,
                        codes::REFERENCE_NOT_FOUND,
                        format!("subset {subset:?} of {host} is defined by no DestinationRule"),
                    ));
                }
            }
        }
    }
    for (host, owners) in claims {
        if owners.len() > 1 {
            let first = owners[0].clone();
            for o in &owners[1..] {
                if let Some(vs) = model.virtual_services.iter().find(|v| &v.key() == o) {
                    out.push(at(
                        vs,
                        "VirtualService",
                        "spec.hosts",
                        Level::Warning,
                        codes::CONFLICTING_MESH_HOSTS,
                        format!("host {host} is also routed by VirtualService {first}; only {first} takes effect"),
                    ));
                }
            }
        }
    }
    gateway_credentials(model, &mut out);
    telemetry(model, &mut out);
    for dr in &model.destination_rules {
        let host = model.resolve_host(&dr.spec.host, &dr.namespace);
        let Some(svc) = model.service(&host) else {
            if !host.contains('*') {
                out.push(at(
                    dr,
                    "DestinationRule",
                    "spec.host",
                    Level::Warning,
                    codes::UNKNOWN_DESTINATION_RULE_HOST,
                    format!("host {host} matches no Service or ServiceEntry"),
                ));
            }
            continue;
        };
        for (i, s) in dr.spec.subsets.iter().enumerate() {
            if !svc.endpoints.iter().any(|e| labels_match(&s.labels, &e.labels)) {
                out.push(at(
                    dr,
                    "DestinationRule",
                    &format!("spec.subsets[{i}]"),
                    Level::Warning,
                    codes::SUBSET_SELECTS_NOTHING,
                    format!("subset {:?} selects no workload of {host}", s.name),
                ));
            }
        }
    }
    out
}

/// A `credentialName` whose Secret is not in the namespace of a workload the Gateway selects
/// (Istio's IST0101): that server is left out of the gateway.
fn gateway_credentials(model: &Model, out: &mut Vec<Diagnostic>) {
    for g in &model.gateways {
        let selected = |labels: &BTreeMap<String, String>| !g.spec.selector.is_empty() && labels_match(&g.spec.selector, labels);
        let mut namespaces: Vec<&str> = model.workloads.iter().filter(|w| selected(&w.labels)).map(|w| w.namespace.as_str()).collect();
        namespaces.extend(model.pods.iter().filter(|p| selected(&p.labels)).map(|p| p.namespace.as_str()));
        namespaces.sort_unstable();
        namespaces.dedup();
        for (i, server) in g.spec.servers.iter().enumerate() {
            let Some(cred) = server.tls.as_ref().and_then(|t| t.credential_name.as_deref()) else { continue };
            let Ok(name) = weft_api::validate::credential_secret(cred) else { continue };
            for ns in namespaces.iter().filter(|ns| !model.secrets.contains_key(&(ns.to_string(), name.to_owned()))) {
                out.push(at(
                    g,
                    "Gateway",
                    &format!("spec.servers[{i}].tls.credentialName"),
                    Level::Warning,
                    codes::REFERENCE_NOT_FOUND,
                    format!(
                        "no Secret {ns}/{name} with a certificate and key: the gateway workload in {ns} reads it from its own \
                         namespace, and serves nothing for this server until it exists"
                    ),
                ));
            }
        }
    }
}

/// Telemetry resources that would not do what they say: a provider MeshConfig does not define
/// or that cannot serve the purpose (a `prometheus` provider for tracing, a kind weft does not
/// implement), and namespaces where two Telemetries claim the same proxies.
fn telemetry(model: &Model, out: &mut Vec<Diagnostic>) {
    use weft_api::mesh::{providers, Provider};
    let providers = &model.mesh.extension_providers;
    for t in &model.telemetries {
        let mut check = |list: &[weft_api::telemetry::ProviderRef], path: String, purpose: &str, fits: fn(&Provider) -> bool| {
            for (i, p) in list.iter().enumerate() {
                let message = match providers::find(providers, &p.name) {
                    None => format!("no MeshConfig extension provider is named {:?}; this {purpose} setting has no effect", p.name),
                    Some(found) if !fits(&found.provider) => format!(
                        "provider {:?} is of kind {}, which does not do {purpose}{}; this setting has no effect",
                        p.name,
                        found.provider.kind(),
                        if matches!(found.provider, Provider::Other(_)) { " in weft" } else { "" }
                    ),
                    Some(_) => continue,
                };
                out.push(at(
                    t,
                    "Telemetry",
                    &format!("{path}.providers[{i}].name"),
                    Level::Warning,
                    codes::INVALID_TELEMETRY_PROVIDER,
                    message,
                ));
            }
        };
        for (i, r) in t.spec.tracing.iter().enumerate() {
            check(&r.providers, format!("spec.tracing[{i}]"), "tracing", |p| matches!(p, Provider::Zipkin(_) | Provider::OpenTelemetry(_)));
        }
        for (i, r) in t.spec.metrics.iter().enumerate() {
            check(&r.providers, format!("spec.metrics[{i}]"), "metrics", |p| matches!(p, Provider::Prometheus));
        }
        for (i, r) in t.spec.access_logging.iter().enumerate() {
            check(&r.providers, format!("spec.accessLogging[{i}]"), "access logging", |p| {
                matches!(p, Provider::EnvoyFileAccessLog(_) | Provider::EnvoyOtelAls(_))
            });
        }
    }
    let mut wide: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for t in model.telemetries.iter().filter(|t| t.spec.namespace_wide()) {
        wide.entry(t.namespace.as_str()).or_default().push(t.name.clone());
    }
    for (ns, names) in wide.into_iter().filter(|(_, n)| n.len() > 1) {
        for t in model.telemetries.iter().filter(|t| t.namespace == ns && t.spec.namespace_wide()).skip(1) {
            out.push(at(
                t,
                "Telemetry",
                "spec",
                Level::Error,
                codes::MULTIPLE_TELEMETRIES_WITHOUT_SELECTORS,
                format!("the Telemetries {names:?} in namespace {ns:?} have no workload selector; only {:?} applies", names[0]),
            ));
        }
    }
    let mut labels: Vec<(&str, &BTreeMap<String, String>, String)> = model
        .workloads
        .iter()
        .map(|w| (w.namespace.as_str(), &w.labels, w.name.clone()))
        .chain(model.pods.iter().map(|p| (p.namespace.as_str(), &p.labels, p.name.clone())))
        .collect();
    labels.sort_by(|a, b| a.2.cmp(&b.2));
    for (ns, l, name) in labels {
        let selecting: Vec<&str> = model
            .telemetries
            .iter()
            .filter(|t| {
                t.namespace == ns
                    && t.spec.selector.as_ref().is_some_and(|s| !s.match_labels.is_empty() && labels_match(&s.match_labels, l))
            })
            .map(|t| t.name.as_str())
            .collect();
        if selecting.len() > 1 {
            if let Some(t) = model.telemetries.iter().find(|t| t.namespace == ns && t.name == selecting[1]) {
                out.push(at(
                    t,
                    "Telemetry",
                    "spec.selector",
                    Level::Error,
                    codes::CONFLICTING_TELEMETRY_SELECTORS,
                    format!("the Telemetries {selecting:?} in namespace {ns:?} select the same workload {name:?}; their settings are merged in name order"),
                ));
            }
        }
    }
}
