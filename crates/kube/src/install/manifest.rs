//! The objects a cluster needs, per component, built from k8s-openapi's types: the mesh's CRDs
//! and namespace (`base`), the control plane with its RBAC, ConfigMaps, Service (Istio's port
//! names and numbers) and webhook configurations (`pilot`), gateways, and the CNI node agent.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, Namespace, PodSpec, PodTemplateSpec, Probe, Service,
    ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionNames, CustomResourceDefinitionSpec, CustomResourceDefinitionVersion,
    CustomResourceSubresourceStatus, CustomResourceSubresources, CustomResourceValidation, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::operator::{GatewayComponent, Plan};

/// Which part of the install an object belongs to (for progress and readiness).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Base,
    Pilot,
    IngressGateways,
    EgressGateways,
    Cni,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::Base => "Istio core (CRDs, namespace)",
            Part::Pilot => "control plane (istiod)",
            Part::IngressGateways => "ingress gateways",
            Part::EgressGateways => "egress gateways",
            Part::Cni => "CNI node agent",
        }
    }
}

/// One object to apply, as JSON (apiVersion and kind included).
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub part: Part,
    pub object: Value,
}

fn to_json<T: serde::Serialize>(t: &T) -> Value {
    // k8s-openapi's types always serialise.
    serde_json::to_value(t).unwrap_or(Value::Null)
}

fn meta(name: &str, namespace: Option<&str>, labels: &[(&str, &str)]) -> ObjectMeta {
    let mut l: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    l.insert("app.kubernetes.io/managed-by".into(), "weft-install".into());
    ObjectMeta { name: Some(name.into()), namespace: namespace.map(str::to_owned), labels: Some(l), ..ObjectMeta::default() }
}

/// The Istio kinds weft installs CRDs for: (group, kind, plural, versions, storage version).
const CRDS: &[(&str, &str, &str, &[&str], &str)] = &[
    ("networking.istio.io", "VirtualService", "virtualservices", &["v1", "v1beta1", "v1alpha3"], "v1"),
    ("networking.istio.io", "DestinationRule", "destinationrules", &["v1", "v1beta1", "v1alpha3"], "v1"),
    ("networking.istio.io", "Gateway", "gateways", &["v1", "v1beta1", "v1alpha3"], "v1"),
    ("networking.istio.io", "ServiceEntry", "serviceentries", &["v1", "v1beta1", "v1alpha3"], "v1"),
    ("networking.istio.io", "Sidecar", "sidecars", &["v1", "v1beta1", "v1alpha3"], "v1"),
    ("networking.istio.io", "WorkloadEntry", "workloadentries", &["v1", "v1beta1", "v1alpha3"], "v1"),
    ("networking.istio.io", "EnvoyFilter", "envoyfilters", &["v1alpha3"], "v1alpha3"),
    ("security.istio.io", "PeerAuthentication", "peerauthentications", &["v1", "v1beta1"], "v1"),
    ("telemetry.istio.io", "Telemetry", "telemetries", &["v1", "v1alpha1"], "v1"),
    ("security.istio.io", "AuthorizationPolicy", "authorizationpolicies", &["v1", "v1beta1"], "v1"),
    ("security.istio.io", "RequestAuthentication", "requestauthentications", &["v1", "v1beta1"], "v1"),
];

/// A CRD whose `spec` schema is weft's own types (`schema`): the API server refuses a value
/// of the wrong type even while the validating webhook is away, and keeps every field it does
/// not know (none is pruned), so weft's webhook and loader refuse unknown ones by name. The
/// kinds weft reads only to refuse keep an open `spec`.
fn crd(group: &str, kind: &str, plural: &str, versions: &[&str], storage: &str) -> CustomResourceDefinition {
    let open =
        |t: &str| JSONSchemaProps { type_: Some(t.into()), x_kubernetes_preserve_unknown_fields: Some(true), ..JSONSchemaProps::default() };
    // The generated schema always fits JSONSchemaProps (a test checks the round trip).
    let spec =
        super::schema::spec_schema(kind).and_then(|s| serde_json::from_value::<JSONSchemaProps>(s).ok()).unwrap_or_else(|| open("object"));
    let schema = JSONSchemaProps {
        type_: Some("object".into()),
        properties: Some(BTreeMap::from([("spec".into(), spec), ("status".into(), open("object"))])),
        ..JSONSchemaProps::default()
    };
    CustomResourceDefinition {
        metadata: meta(&format!("{plural}.{group}"), None, &[("app", "istio-pilot"), ("chart", "istio")]),
        spec: CustomResourceDefinitionSpec {
            group: group.into(),
            names: CustomResourceDefinitionNames {
                kind: kind.into(),
                list_kind: Some(format!("{kind}List")),
                plural: plural.into(),
                singular: Some(kind.to_lowercase()),
                categories: Some(vec!["istio-io".into(), group.split('.').next().unwrap_or_default().to_owned() + "-istio-io"]),
                // Istio's (`kubectl get vs`).
                short_names: short_name(kind).map(|n| vec![n.to_owned()]),
            },
            scope: "Namespaced".into(),
            versions: versions
                .iter()
                .map(|v| CustomResourceDefinitionVersion {
                    name: (*v).into(),
                    served: true,
                    storage: *v == storage,
                    schema: Some(CustomResourceValidation { open_api_v3_schema: Some(schema.clone()) }),
                    subresources: Some(CustomResourceSubresources {
                        status: Some(CustomResourceSubresourceStatus(json!({}))),
                        scale: None,
                    }),
                    ..CustomResourceDefinitionVersion::default()
                })
                .collect(),
            ..CustomResourceDefinitionSpec::default()
        },
        status: None,
    }
}

/// The short name Istio's CRD gives a kind.
fn short_name(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "VirtualService" => "vs",
        "DestinationRule" => "dr",
        "Gateway" => "gw",
        "ServiceEntry" => "se",
        "WorkloadEntry" => "we",
        "PeerAuthentication" => "pa",
        "AuthorizationPolicy" => "ap",
        "RequestAuthentication" => "ra",
        "Telemetry" => "telemetry",
        _ => return None,
    })
}

/// A `k8s` setting as its Kubernetes type; one that does not fit is an error naming it, not a
/// setting quietly left out.
fn typed<T: serde::de::DeserializeOwned>(v: Option<Value>, at: &str) -> Result<Option<T>, String> {
    match v {
        None => Ok(None),
        Some(v) => serde_json::from_value(v).map(Some).map_err(|e| format!("{at}: {e}")),
    }
}

fn service_port(name: &str, port: i32, target: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(target)),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let s = |v: &[&str]| Some(v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>());
    PolicyRule {
        api_groups: s(groups),
        resources: s(resources),
        verbs: verbs.iter().map(|x| (*x).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

fn control_plane(plan: &Plan, out: &mut Vec<Manifest>) -> Result<(), String> {
    let ns = plan.namespace.as_str();
    let rev = if plan.revision.is_empty() { "default" } else { plan.revision.as_str() };
    let name = if plan.revision.is_empty() { "istiod".to_owned() } else { format!("istiod-{}", plan.revision) };
    let labels = [("app", "istiod"), ("istio", "pilot"), ("istio.io/rev", rev)];
    let push = |out: &mut Vec<Manifest>, v: Value| out.push(Manifest { part: Part::Pilot, object: v });
    push(out, to_json(&ServiceAccount { metadata: meta(&name, Some(ns), &labels), ..ServiceAccount::default() }));
    let read = ["get", "list", "watch"];
    let cluster_role = ClusterRole {
        metadata: meta(&format!("{name}-clusterrole-{ns}"), None, &labels),
        rules: Some(vec![
            rule(&[""], &["services", "endpoints", "pods", "namespaces", "nodes", "configmaps"], &read),
            rule(&["discovery.k8s.io"], &["endpointslices"], &read),
            rule(&["networking.istio.io", "security.istio.io", "telemetry.istio.io", "extensions.istio.io"], &["*"], &read),
            rule(&["networking.istio.io", "security.istio.io"], &["*/status"], &["get", "update", "patch"]),
            rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
            rule(
                &["admissionregistration.k8s.io"],
                &["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
                &["get", "list", "watch", "update", "patch"],
            ),
            rule(&[""], &["configmaps"], &["create", "update", "patch"]),
            rule(&[""], &["events"], &["create", "patch"]),
            rule(&["networking.k8s.io"], &["ingresses", "ingressclasses"], &read),
            // The Kubernetes Gateway API, read as config (its status is not written yet).
            rule(&["gateway.networking.k8s.io"], &["*"], &read),
            // A gateway's credentialName names a Secret in the gateway's namespace.
            rule(&[""], &["secrets"], &read),
        ]),
        ..ClusterRole::default()
    };
    push(out, to_json(&cluster_role));
    let subject = || Subject { kind: "ServiceAccount".into(), name: name.clone(), namespace: Some(ns.into()), ..Subject::default() };
    push(
        out,
        to_json(&ClusterRoleBinding {
            metadata: meta(&format!("{name}-clusterrole-{ns}"), None, &labels),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: format!("{name}-clusterrole-{ns}"),
            },
            subjects: Some(vec![subject()]),
        }),
    );
    push(
        out,
        to_json(&Role {
            metadata: meta(&name, Some(ns), &labels),
            rules: Some(vec![
                rule(&[""], &["secrets"], &["get", "list", "watch", "create", "update"]),
                rule(&["coordination.k8s.io"], &["leases"], &["get", "list", "watch", "create", "update", "patch"]),
            ]),
        }),
    );
    push(
        out,
        to_json(&RoleBinding {
            metadata: meta(&name, Some(ns), &labels),
            role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "Role".into(), name: name.clone() },
            subjects: Some(vec![subject()]),
        }),
    );
    let mesh = serde_yaml::to_string(&Value::Object(plan.mesh_config.clone())).unwrap_or_default();
    let cm = |n: &str, key: &str, text: String| ConfigMap {
        metadata: meta(n, Some(ns), &labels),
        data: Some(BTreeMap::from([(key.into(), text)])),
        ..ConfigMap::default()
    };
    let mesh_name = if plan.revision.is_empty() { "istio".to_owned() } else { format!("istio-{}", plan.revision) };
    push(out, to_json(&cm(&mesh_name, "mesh", mesh)));
    let injector = injector_values(plan);
    let injector_name =
        if plan.revision.is_empty() { "istio-sidecar-injector".to_owned() } else { format!("istio-sidecar-injector-{}", plan.revision) };
    push(out, to_json(&cm(&injector_name, "values", injector)));

    let k8s = plan.pilot.clone().unwrap_or_default();
    let port = |n: &str, p: i32| ContainerPort {
        name: Some(n.into()),
        container_port: p,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    let mount = |n: &str, p: &str| VolumeMount { name: n.into(), mount_path: p.into(), ..VolumeMount::default() };
    let container = Container {
        name: "discovery".into(),
        image: Some(format!("{}/weft:{}", plan.hub.trim_end_matches('/'), plan.tag)),
        args: Some(
            [
                "control-plane",
                "--xds-address",
                // Plaintext xDS authenticates nobody: only the pod itself reaches it. Proxies
                // come in on 15012 with their token.
                "127.0.0.1:15010",
                "--secure-address",
                "0.0.0.0:15012",
                "--webhook-address",
                "0.0.0.0:15017",
                "--debug-address",
                "127.0.0.1:15014",
                "--ca-dir",
                "/var/run/secrets/istiod/ca",
                "--mesh",
                "/etc/istio/config/mesh",
                "--injection-values",
                "/var/lib/istio/inject/values",
                "--revision",
                rev,
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        ),
        ports: Some(vec![port("https-dns", 15012), port("https-webhooks", 15017)]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction { port: IntOrString::Int(15012), host: None }),
            period_seconds: Some(3),
            ..Probe::default()
        }),
        resources: typed(k8s.resources.clone(), "components.pilot.k8s.resources")?,
        env: {
            // `values.pilot.env` (a map) and `components.pilot.k8s.env` (a list) together.
            let mut env: Vec<Value> = vec![
                json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
                json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
            ];
            env.extend(k8s.env.clone().unwrap_or_default());
            if let Some(Value::Object(m)) = value_at(plan, "pilot.env") {
                env.extend(
                    m.iter().map(|(k, v)| json!({"name": k, "value": v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())})),
                );
            }
            if env.is_empty() {
                None
            } else {
                typed(Some(Value::Array(env)), "components.pilot.k8s.env (with values.pilot.env)")?
            }
        },
        volume_mounts: Some(vec![
            mount("ca", "/var/run/secrets/istiod/ca"),
            mount("config-volume", "/etc/istio/config"),
            mount("inject", "/var/lib/istio/inject"),
        ]),
        security_context: Some(k8s_openapi::api::core::v1::SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(1337),
            run_as_group: Some(1337),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(k8s_openapi::api::core::v1::Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            ..Default::default()
        }),
        ..Container::default()
    };
    let select: BTreeMap<String, String> = BTreeMap::from([("app".into(), "istiod".into()), ("istio.io/rev".into(), rev.into())]);
    let mut pod_labels = select.clone();
    pod_labels.insert("istio".into(), "pilot".into());
    pod_labels.insert("sidecar.istio.io/inject".into(), "false".into());
    let deployment = Deployment {
        metadata: meta(&name, Some(ns), &labels),
        spec: Some(DeploymentSpec {
            // Every replica signs with the cluster's root (`ca_store`); one of them, by Lease,
            // publishes it.
            replicas: Some(k8s.replica_count.unwrap_or(1)),
            selector: LabelSelector { match_labels: Some(select.clone()), match_expressions: None },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), annotations: k8s.pod_annotations.clone(), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.clone()),
                    containers: vec![container],
                    node_selector: k8s.node_selector.clone(),
                    tolerations: typed(k8s.tolerations.clone().map(Value::Array), "components.pilot.k8s.tolerations")?,
                    volumes: Some(vec![
                        Volume {
                            name: "ca".into(),
                            empty_dir: Some(EmptyDirVolumeSource { medium: Some("Memory".into()), size_limit: None }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "config-volume".into(),
                            config_map: Some(ConfigMapVolumeSource { name: mesh_name.clone(), ..Default::default() }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "inject".into(),
                            config_map: Some(ConfigMapVolumeSource { name: injector_name.clone(), ..Default::default() }),
                            ..Volume::default()
                        },
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    };
    push(out, to_json(&deployment));
    push(
        out,
        to_json(&Service {
            metadata: meta(&name, Some(ns), &labels),
            spec: Some(ServiceSpec {
                selector: Some(select),
                ports: Some(vec![service_port("https-dns", 15012, 15012), service_port("https-webhook", 443, 15017)]),
                ..ServiceSpec::default()
            }),
            status: None,
        }),
    );

    let client = |path: &str| WebhookClientConfig {
        service: Some(ServiceReference { name: name.clone(), namespace: ns.into(), path: Some(path.into()), port: Some(443) }),
        // The control plane fills in its root once it has made it.
        ca_bundle: None,
        url: None,
    };
    let pods_rule = RuleWithOperations {
        api_groups: Some(vec!["".into()]),
        api_versions: Some(vec!["v1".into()]),
        operations: Some(vec!["CREATE".into()]),
        resources: Some(vec!["pods".into()]),
        scope: None,
    };
    let req = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
    };
    let hook = |hook_name: &str, ns_sel: Vec<LabelSelectorRequirement>, obj_sel: Vec<LabelSelectorRequirement>| MutatingWebhook {
        name: hook_name.into(),
        admission_review_versions: vec!["v1".into(), "v1beta1".into()],
        client_config: client("/inject"),
        failure_policy: Some("Fail".into()),
        namespace_selector: Some(LabelSelector { match_expressions: Some(ns_sel), match_labels: None }),
        object_selector: Some(LabelSelector { match_expressions: Some(obj_sel), match_labels: None }),
        reinvocation_policy: Some("Never".into()),
        rules: Some(vec![pods_rule.clone()]),
        side_effects: "None".into(),
        timeout_seconds: Some(10),
        ..MutatingWebhook::default()
    };
    let by_default = value_at(plan, "sidecarInjectorWebhook.enableNamespacesByDefault").and_then(|v| v.as_bool()).unwrap_or(false);
    let webhooks = if by_default {
        // Every namespace but the system ones and those that opted out.
        vec![hook(
            "namespace.sidecar-injector.istio.io",
            vec![
                // The control plane's own pods opt out by label; its gateways are injected.
                req("istio-injection", "NotIn", &["disabled"]),
                req("istio.io/rev", "DoesNotExist", &[]),
                req("kubernetes.io/metadata.name", "NotIn", &["kube-system", "kube-public"]),
            ],
            vec![req("sidecar.istio.io/inject", "NotIn", &["false"])],
        )]
    } else if plan.revision.is_empty() {
        vec![
            // A namespace labelled istio-injection=enabled, unless the pod says no.
            hook(
                "namespace.sidecar-injector.istio.io",
                vec![req("istio-injection", "In", &["enabled"])],
                vec![req("sidecar.istio.io/inject", "NotIn", &["false"])],
            ),
            // A pod labelled sidecar.istio.io/inject=true in a namespace that did not opt out.
            hook(
                "object.sidecar-injector.istio.io",
                vec![req("istio-injection", "DoesNotExist", &[]), req("istio.io/rev", "DoesNotExist", &[])],
                vec![req("sidecar.istio.io/inject", "In", &["true"]), req("istio.io/rev", "DoesNotExist", &[])],
            ),
        ]
    } else {
        vec![
            hook(
                "rev.namespace.sidecar-injector.istio.io",
                vec![req("istio.io/rev", "In", &[rev]), req("istio-injection", "DoesNotExist", &[])],
                vec![req("sidecar.istio.io/inject", "NotIn", &["false"])],
            ),
            hook(
                "rev.object.sidecar-injector.istio.io",
                vec![req("istio.io/rev", "DoesNotExist", &[]), req("istio-injection", "DoesNotExist", &[])],
                vec![req("istio.io/rev", "In", &[rev]), req("sidecar.istio.io/inject", "NotIn", &["false"])],
            ),
        ]
    };
    push(out, to_json(&MutatingWebhookConfiguration { metadata: meta(&injector_name, None, &labels), webhooks: Some(webhooks) }));
    let istio_rule = RuleWithOperations {
        api_groups: Some(vec!["networking.istio.io".into(), "security.istio.io".into(), "telemetry.istio.io".into()]),
        api_versions: Some(vec!["*".into()]),
        operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
        resources: Some(vec!["*".into()]),
        scope: None,
    };
    push(
        out,
        to_json(&ValidatingWebhookConfiguration {
            metadata: meta(
                &format!("istio-validator-{}{ns}", if plan.revision.is_empty() { String::new() } else { format!("{}-", plan.revision) }),
                None,
                &labels,
            ),
            webhooks: Some(vec![ValidatingWebhook {
                name: "rev.validation.istio.io".into(),
                admission_review_versions: vec!["v1".into(), "v1beta1".into()],
                client_config: client("/validate"),
                // Until the control plane is up, resources are admitted (Istio's default too);
                // the control plane still refuses to act on an invalid one.
                failure_policy: Some("Ignore".into()),
                rules: Some(vec![istio_rule]),
                side_effects: "None".into(),
                timeout_seconds: Some(10),
                ..ValidatingWebhook::default()
            }]),
        }),
    );
    Ok(())
}

/// The value at a dotted path of the plan's `values`.
fn value_at(plan: &Plan, path: &str) -> Option<Value> {
    let mut cur = plan.values.get(path.split('.').next().unwrap_or_default())?;
    for k in path.split('.').skip(1) {
        cur = cur.get(k)?;
    }
    Some(cur.clone())
}

/// The injector's values, from the plan (what `--injection-values` reads).
fn injector_values(plan: &Plan) -> String {
    let mut v = serde_json::Map::new();
    v.insert("hub".into(), json!(plan.hub));
    v.insert("tag".into(), json!(plan.tag));
    if !plan.revision.is_empty() {
        v.insert("revision".into(), json!(plan.revision));
    }
    v.insert("istioNamespace".into(), json!(plan.namespace));
    v.insert("cni".into(), json!(plan.cni));
    let at = |path: &str| value_at(plan, path);
    // Istio's values path → the injector's values key (`proxy.` ones nest under `proxy`).
    let mut proxy = serde_json::Map::new();
    for (from, to) in [
        ("weft.dataPlane", "dataPlane"),
        ("weft.nativeSidecars", "nativeSidecars"),
        ("global.imagePullPolicy", "imagePullPolicy"),
        ("global.imagePullSecrets", "imagePullSecrets"),
        ("global.network", "network"),
        ("global.meshID", "meshId"),
        ("global.multiCluster.clusterName", "clusterId"),
        ("global.proxy.holdApplicationUntilProxyStarts", "holdApplicationUntilProxyStarts"),
        ("sidecarInjectorWebhook.rewriteAppHTTPProbe", "rewriteAppProbes"),
        ("global.proxy.logLevel", "proxy.logLevel"),
        ("global.proxy.componentLogLevel", "proxy.componentLogLevel"),
        ("global.proxy.includeIPRanges", "proxy.includeIpRanges"),
        ("global.proxy.excludeIPRanges", "proxy.excludeIpRanges"),
        ("global.proxy.includeInboundPorts", "proxy.includeInboundPorts"),
        ("global.proxy.excludeInboundPorts", "proxy.excludeInboundPorts"),
        ("global.proxy.excludeOutboundPorts", "proxy.excludeOutboundPorts"),
        ("global.proxy.statusPort", "proxy.statusPort"),
    ] {
        let Some(x) = at(from) else { continue };
        match to.strip_prefix("proxy.") {
            Some(key) => proxy.insert(key.into(), x),
            None => v.insert(to.into(), x),
        };
    }
    if let Some(Value::Object(r)) = at("global.proxy.resources") {
        for key in ["requests", "limits"] {
            if let Some(q) = r.get(key) {
                proxy.insert(key.into(), q.clone());
            }
        }
    }
    if !proxy.is_empty() {
        v.insert("proxy".into(), Value::Object(proxy));
    }
    if let Some(Value::Object(dc)) = plan.mesh_config.get("defaultConfig") {
        v.insert("defaultConfig".into(), Value::Object(dc.clone()));
    }
    serde_yaml::to_string(&Value::Object(v)).unwrap_or_default()
}

fn gateway(plan: &Plan, g: &GatewayComponent, part: Part, out: &mut Vec<Manifest>) -> Result<(), String> {
    let ns = g.namespace.clone().unwrap_or_else(|| plan.namespace.clone());
    let ingress = part == Part::IngressGateways;
    let istio = if ingress { "ingressgateway" } else { "egressgateway" };
    let mut labels: BTreeMap<String, String> = BTreeMap::from([("app".into(), g.name.clone()), ("istio".into(), istio.into())]);
    labels.extend(g.label.clone());
    let label_pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let k8s = g.k8s.clone().unwrap_or_default();
    out.push(Manifest {
        part,
        object: to_json(&ServiceAccount {
            metadata: meta(&format!("{}-service-account", g.name), Some(&ns), &label_pairs),
            ..ServiceAccount::default()
        }),
    });
    let mut pod_labels = labels.clone();
    pod_labels.insert("sidecar.istio.io/inject".into(), "true".into());
    let mut annotations = k8s.pod_annotations.clone().unwrap_or_default();
    let template = value_at(plan, &format!("gateways.{}.injectionTemplate", g.name))
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "gateway".into());
    annotations.insert("inject.istio.io/templates".into(), template);
    if !plan.revision.is_empty() {
        pod_labels.insert("istio.io/rev".into(), plan.revision.clone());
    }
    let ports: Vec<ContainerPort> = [(8080, "http2"), (8443, "https")]
        .iter()
        .map(|(p, n)| ContainerPort { container_port: *p, name: Some((*n).into()), protocol: Some("TCP".into()), ..Default::default() })
        .collect();
    let deployment = Deployment {
        metadata: meta(&g.name, Some(&ns), &label_pairs),
        spec: Some(DeploymentSpec {
            replicas: Some(k8s.replica_count.unwrap_or(1)),
            selector: LabelSelector { match_labels: Some(labels.clone()), match_expressions: None },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), annotations: Some(annotations), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    service_account_name: Some(format!("{}-service-account", g.name)),
                    containers: vec![Container {
                        name: "istio-proxy".into(),
                        // The injector fills in the gateway template.
                        image: Some("auto".into()),
                        ports: Some(ports),
                        resources: typed(k8s.resources.clone(), &format!("components.gateways[{}].k8s.resources", g.name))?,
                        env: typed(k8s.env.clone().map(Value::Array), &format!("components.gateways[{}].k8s.env", g.name))?,
                        ..Container::default()
                    }],
                    node_selector: k8s.node_selector.clone(),
                    tolerations: typed(
                        k8s.tolerations.clone().map(Value::Array),
                        &format!("components.gateways[{}].k8s.tolerations", g.name),
                    )?,
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    };
    out.push(Manifest { part, object: to_json(&deployment) });
    let mut ports = vec![service_port("http2", 80, 8080), service_port("https", 443, 8443)];
    if ingress {
        ports.insert(0, service_port("status-port", 15021, 15021));
    }
    let mut service = Service {
        metadata: meta(&g.name, Some(&ns), &label_pairs),
        spec: Some(ServiceSpec {
            selector: Some(labels),
            ports: Some(ports),
            type_: Some(if ingress { "LoadBalancer" } else { "ClusterIP" }.into()),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    if let Some(custom) = &k8s.service {
        // `k8s.service` replaces the Service's ports and type; anything else in it is refused.
        let at = format!("components.gateways[{}].k8s.service", g.name);
        if let Some(other) = custom.as_object().and_then(|o| o.keys().find(|k| !matches!(k.as_str(), "ports" | "type"))) {
            return Err(format!("{at}.{other}: not supported by weft install (it sets ports and type)"));
        }
        let over: ServiceSpec = typed(Some(custom.clone()), &at)?.unwrap_or_default();
        if let Some(spec) = service.spec.as_mut() {
            if over.ports.is_some() {
                spec.ports = over.ports;
            }
            if over.type_.is_some() {
                spec.type_ = over.type_;
            }
        }
    }
    out.push(Manifest { part, object: to_json(&service) });
    Ok(())
}

/// Everything `plan` asks for, in the order it is applied.
pub fn generate(plan: &Plan) -> Result<Vec<Manifest>, String> {
    let mut out = Vec::new();
    if plan.base {
        out.push(Manifest {
            part: Part::Base,
            object: to_json(&Namespace { metadata: meta(&plan.namespace, None, &[]), ..Namespace::default() }),
        });
        for (group, kind, plural, versions, storage) in CRDS {
            out.push(Manifest { part: Part::Base, object: to_json(&crd(group, kind, plural, versions, storage)) });
        }
    }
    if plan.pilot.is_some() {
        control_plane(plan, &mut out)?;
    }
    for g in &plan.ingress_gateways {
        gateway(plan, g, Part::IngressGateways, &mut out)?;
    }
    for g in &plan.egress_gateways {
        gateway(plan, g, Part::EgressGateways, &mut out)?;
    }
    if plan.cni {
        cni(plan, &mut out);
    }
    Ok(out)
}

/// The CNI node agent: a DaemonSet on every node (taints tolerated: a node without it would
/// start meshed pods uncaptured) running `weft cni-install`, which puts `weft-cni` into the
/// node's `/opt/cni/bin`, chains it into the config in `/etc/cni/net.d`, and takes it out
/// when the pod stops. The plugin reads pods with this service account's token.
fn cni(plan: &Plan, out: &mut Vec<Manifest>) {
    let ns = plan.namespace.as_str();
    let name = "istio-cni";
    let labels = [("k8s-app", "istio-cni-node")];
    let push = |out: &mut Vec<Manifest>, v: Value| out.push(Manifest { part: Part::Cni, object: v });
    push(out, to_json(&ServiceAccount { metadata: meta(name, Some(ns), &labels), ..ServiceAccount::default() }));
    let role = format!("{name}-{ns}");
    push(
        out,
        to_json(&ClusterRole {
            metadata: meta(&role, None, &labels),
            rules: Some(vec![rule(&[""], &["pods"], &["get"])]),
            ..ClusterRole::default()
        }),
    );
    push(
        out,
        to_json(&ClusterRoleBinding {
            metadata: meta(&role, None, &labels),
            role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "ClusterRole".into(), name: role.clone() },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: name.into(),
                namespace: Some(ns.into()),
                ..Subject::default()
            }]),
        }),
    );
    let host = |volume: &str, path: &str| Volume {
        name: volume.into(),
        host_path: Some(k8s_openapi::api::core::v1::HostPathVolumeSource { path: path.into(), type_: Some("DirectoryOrCreate".into()) }),
        ..Volume::default()
    };
    let mount = |n: &str, p: &str| VolumeMount { name: n.into(), mount_path: p.into(), ..VolumeMount::default() };
    let exclude = ["kube-system".to_owned()].join(",");
    let container = Container {
        name: "install-cni".into(),
        image: Some(format!("{}/weft:{}", plan.hub.trim_end_matches('/'), plan.tag)),
        args: Some(
            ["cni-install", "--bin-dir", "/host/opt/cni/bin", "--net-dir", "/host/etc/cni/net.d", "--host-net-dir", "/etc/cni/net.d"]
                .iter()
                .map(|s| (*s).to_owned())
                .chain(["--exclude-namespaces".to_owned(), exclude, "--ready-file".to_owned(), "/tmp/weft-cni-ready".to_owned()])
                .collect(),
        ),
        readiness_probe: Some(Probe {
            exec: Some(k8s_openapi::api::core::v1::ExecAction { command: Some(vec!["cat".into(), "/tmp/weft-cni-ready".into()]) }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        volume_mounts: Some(vec![
            mount("cni-bin-dir", "/host/opt/cni/bin"),
            mount("cni-net-dir", "/host/etc/cni/net.d"),
            mount("tmp", "/tmp"),
        ]),
        // Root, to write the node's root-owned CNI directories; nothing more.
        security_context: Some(k8s_openapi::api::core::v1::SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(k8s_openapi::api::core::v1::Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            ..Default::default()
        }),
        ..Container::default()
    };
    let select: BTreeMap<String, String> = BTreeMap::from([("k8s-app".into(), "istio-cni-node".into())]);
    let mut pod_labels = select.clone();
    pod_labels.insert("sidecar.istio.io/inject".into(), "false".into());
    let daemonset = DaemonSet {
        metadata: meta("istio-cni-node", Some(ns), &labels),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector { match_labels: Some(select), match_expressions: None },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.into()),
                    host_network: Some(true),
                    priority_class_name: Some("system-node-critical".into()),
                    termination_grace_period_seconds: Some(5),
                    tolerations: Some(vec![k8s_openapi::api::core::v1::Toleration {
                        operator: Some("Exists".into()),
                        ..Default::default()
                    }]),
                    containers: vec![container],
                    volumes: Some(vec![
                        host("cni-bin-dir", "/opt/cni/bin"),
                        host("cni-net-dir", "/etc/cni/net.d"),
                        Volume {
                            name: "tmp".into(),
                            empty_dir: Some(EmptyDirVolumeSource { medium: Some("Memory".into()), size_limit: None }),
                            ..Volume::default()
                        },
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..DaemonSetSpec::default()
        }),
        status: None,
    };
    push(out, to_json(&daemonset));
}

/// The manifests as one YAML stream.
pub fn to_yaml(manifests: &[Manifest]) -> String {
    manifests.iter().map(|m| serde_yaml::to_string(&m.object).unwrap_or_default()).collect::<Vec<_>>().join("---\n")
}
