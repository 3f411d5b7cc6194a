//! The API server as a config source: reflectors (kube-rs) over the kinds the mesh reads —
//! Services, EndpointSlices, Pods, TLS Secrets, Ingresses, and the Istio kinds whose CRDs are
//! installed — turned into
//! the same objects and diagnostics the file source gives, through the same loader, so
//! translation and validation are one code path.
//!
//! A view is sent only once every watched kind has been listed, and a re-list (a dropped watch,
//! a `410 Gone`) replaces a kind's objects only when it completes (kube-runtime's store swaps at
//! `InitDone`), so a half-built view is never pushed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::Value;
use weft_api::core::PodInfo;
use weft_api::{Diagnostic, Level, Object};

/// What the API server holds, as the mesh reads it.
#[derive(Debug, Default, Clone)]
pub struct View {
    pub objects: Vec<Object>,
    pub diagnostics: Vec<Diagnostic>,
    pub pods: Vec<PodInfo>,
    /// Every namespace's labels (injection reads `weft.io/data-plane` from them), when the API
    /// server serves namespaces to this client.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// What the Gateway API objects' `status` would say (not written back yet).
    pub gateway_api: Vec<weft_api::gateway_api::ObjectStatus>,
}

/// The file name diagnostics from the API server carry.
pub const ORIGIN: &str = "api-server";

/// Every kind read from the API server: (group, version, kind, plural). The Istio kinds are
/// read at their storage version; the API server converts objects written in older ones.
const KINDS: &[(&str, &str, &str, &str)] = &[
    ("", "v1", "Service", "services"),
    ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    ("networking.istio.io", "v1", "VirtualService", "virtualservices"),
    ("networking.istio.io", "v1", "DestinationRule", "destinationrules"),
    ("networking.istio.io", "v1", "Gateway", "gateways"),
    ("networking.istio.io", "v1", "ServiceEntry", "serviceentries"),
    ("networking.istio.io", "v1", "Sidecar", "sidecars"),
    ("networking.istio.io", "v1", "WorkloadEntry", "workloadentries"),
    ("security.istio.io", "v1", "PeerAuthentication", "peerauthentications"),
    ("telemetry.istio.io", "v1", "Telemetry", "telemetries"),
    // Read to be refused: weft does not enforce them, and must not run as if they were not there.
    ("security.istio.io", "v1", "AuthorizationPolicy", "authorizationpolicies"),
    ("security.istio.io", "v1", "RequestAuthentication", "requestauthentications"),
    ("networking.istio.io", "v1alpha3", "EnvoyFilter", "envoyfilters"),
    ("extensions.istio.io", "v1alpha1", "WasmPlugin", "wasmplugins"),
    // Ingresses of class istio become a Gateway and VirtualServices (`ingress`).
    ("networking.k8s.io", "v1", "Ingress", "ingresses"),
    ("networking.k8s.io", "v1", "IngressClass", "ingressclasses"),
    // The Kubernetes Gateway API (`weft_api::gateway_api`), at the versions its CRDs serve.
    ("gateway.networking.k8s.io", "v1", "GatewayClass", "gatewayclasses"),
    ("gateway.networking.k8s.io", "v1", "Gateway", "gateways"),
    ("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
    ("gateway.networking.k8s.io", "v1", "GRPCRoute", "grpcroutes"),
    ("gateway.networking.k8s.io", "v1alpha2", "TLSRoute", "tlsroutes"),
    ("gateway.networking.k8s.io", "v1alpha2", "TCPRoute", "tcproutes"),
    ("gateway.networking.k8s.io", "v1beta1", "ReferenceGrant", "referencegrants"),
    // TLS credentials a Gateway's credentialName (or an Ingress's secretName) names.
    ("", "v1", "Secret", "secrets"),
    // Their labels, for injection (not mesh objects).
    ("", "v1", "Namespace", "namespaces"),
];

/// Secrets that can never be a TLS credential are not listed (and not held): service-account
/// tokens and Helm's releases, most of a cluster's Secrets (what istiod leaves out too).
const SECRET_FIELDS: &str = "type!=kubernetes.io/service-account-token,type!=helm.sh/release.v1";

/// The apiVersion the source reads `kind` at (for an Event about one of its objects).
pub fn api_version_of(kind: &str) -> Option<String> {
    KINDS
        .iter()
        .find(|k| k.2 == kind)
        .map(|(group, version, _, _)| if group.is_empty() { (*version).to_owned() } else { format!("{group}/{version}") })
}

/// The namespace the Gateways made from Ingresses live in (Istio's root namespace).
const INGRESS_GATEWAY_NAMESPACE: &str = "istio-system";

struct Watched {
    resource: ApiResource,
    store: Store<DynamicObject>,
    listed: Arc<AtomicBool>,
}

/// Which of `KINDS` the API server serves (a CRD that is not installed is not watched, and said
/// so once).
async fn served(client: &Client) -> Vec<ApiResource> {
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut out = Vec::new();
    for (group, version, kind, plural) in KINDS {
        let api_version = if group.is_empty() { (*version).to_owned() } else { format!("{group}/{version}") };
        let names = match by_group.get(&api_version) {
            Some(n) => n.clone(),
            None => {
                // Only "not found" means not served: any other failure is retried, or a
                // passing error would leave (security) kinds unwatched for the process's life.
                let mut wait = Duration::from_millis(200);
                let names: Vec<String> = loop {
                    let listed = if group.is_empty() {
                        client.list_core_api_resources(version).await
                    } else {
                        client.list_api_group_resources(&api_version).await
                    };
                    match listed {
                        Ok(l) => break l.resources.into_iter().map(|r| r.name).collect(),
                        Err(kube::Error::Api(e)) if e.code == 404 => {
                            tracing::info!(%api_version, "not served by the API server: its kinds are not watched");
                            break Vec::new();
                        }
                        Err(e) => {
                            tracing::warn!(%api_version, "asking the API server what it serves failed, retrying: {e}");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(10));
                        }
                    }
                };
                by_group.insert(api_version.clone(), names.clone());
                names
            }
        };
        if names.iter().any(|n| n == plural) {
            out.push(ApiResource {
                group: (*group).into(),
                version: (*version).into(),
                api_version,
                kind: (*kind).into(),
                plural: (*plural).into(),
            });
        }
    }
    out
}

/// Watches the API server and sends a complete view after every change (changes within
/// `debounce` of each other become one view). Runs until `tx` is closed.
pub async fn run(client: Client, debounce: Duration, tx: tokio::sync::mpsc::Sender<View>) {
    let changed = Arc::new(tokio::sync::Notify::new());
    let mut watched = Vec::new();
    for resource in served(&client).await {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
        let store = writer.as_reader();
        let listed = Arc::new(AtomicBool::new(false));
        let config = if resource.kind == "Secret" { watcher::Config::default().fields(SECRET_FIELDS) } else { watcher::Config::default() };
        let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
        tokio::spawn(follow(stream, resource.kind.clone(), listed.clone(), changed.clone()));
        watched.push(Watched { resource, store, listed });
    }
    let pods_api: Api<Pod> = Api::all(client.clone());
    let (pods, pod_writer) = reflector::store::<Pod>();
    let pods_listed = Arc::new(AtomicBool::new(false));
    let pod_stream = reflector::reflector(pod_writer, watcher(pods_api, watcher::Config::default()).default_backoff());
    tokio::spawn(follow(pod_stream, "Pod".into(), pods_listed.clone(), changed.clone()));

    loop {
        changed.notified().await;
        if !pods_listed.load(Ordering::Acquire) || watched.iter().any(|w| !w.listed.load(Ordering::Acquire)) {
            continue;
        }
        // Let a burst of changes settle into one view.
        tokio::time::sleep(debounce).await;
        let view = snapshot(&watched, &pods);
        if tx.send(view).await.is_err() {
            return;
        }
    }
}

/// Drives one reflector, noting when its list has completed and every change after.
async fn follow<K, S>(stream: S, kind: String, listed: Arc<AtomicBool>, changed: Arc<tokio::sync::Notify>)
where
    S: futures::Stream<Item = watcher::Result<watcher::Event<K>>>,
{
    let mut stream = std::pin::pin!(stream);
    let mut failing = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitDone) => {
                listed.store(true, Ordering::Release);
                failing = false;
                changed.notify_one();
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Ok(_) => changed.notify_one(),
            Err(e) => {
                // The last good view stands; the watcher retries with backoff.
                if !failing {
                    tracing::warn!(%kind, "watching the API server failed, retrying: {e}");
                }
                failing = true;
            }
        }
    }
}

/// The view the stores hold now.
fn snapshot(watched: &[Watched], pods: &Store<Pod>) -> View {
    let mut view = View::default();
    let (mut ingresses, mut classes, mut services) = (Vec::new(), Vec::new(), Vec::new());
    let mut gateway_api = Vec::new();
    for w in watched {
        let mut objects = w.store.state();
        objects.sort_by(|a, b| (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name)));
        for o in objects {
            let Some(manifest) = as_manifest(&o, &w.resource) else { continue };
            match w.resource.kind.as_str() {
                "Namespace" => {
                    let labels = o.metadata.labels.clone().unwrap_or_default().into_iter().collect();
                    view.namespaces.insert(o.metadata.name.clone().unwrap_or_default(), labels);
                    // Its labels, for Gateway API `allowedRoutes` selectors.
                    let origin = weft_api::Origin { file: ORIGIN.into(), line: 0 };
                    gateway_api.push(weft_api::gateway_api::GatewayApiDoc { kind: "Namespace".into(), doc: manifest, origin });
                }
                "Ingress" => ingresses.push(manifest),
                "IngressClass" => classes.push(manifest),
                kind => {
                    if kind == "Service" {
                        services.push(manifest.clone());
                    }
                    gateway_api.extend(load(&manifest, &mut view));
                }
            }
        }
    }
    let (derived, warnings) = weft_api::ingress::convert(&ingresses, &classes, &services, INGRESS_GATEWAY_NAMESPACE);
    for m in derived {
        load(&m, &mut view);
    }
    for w in warnings {
        view.diagnostics.push(Diagnostic {
            level: Level::Warning,
            file: ORIGIN.into(),
            line: None,
            resource: None,
            field_path: String::new(),
            message: w.to_string(),
            code: None,
        });
    }
    // Gateway API objects, once every Service, Secret and ReferenceGrant is in the view.
    view.gateway_api = weft_api::gateway_api::expand(&mut view.objects, &mut view.diagnostics, &gateway_api);
    let mut infos: Vec<PodInfo> = pods.state().iter().filter_map(|p| pod_info(p)).collect();
    infos.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    view.pods = infos;
    weft_api::drop_duplicates(&mut view.objects, &mut view.diagnostics);
    view
}

/// Loads one manifest into the view, through the loader files go through; a Gateway API
/// document is returned, to be expanded once the view is whole.
fn load(manifest: &Value, view: &mut View) -> Vec<weft_api::gateway_api::GatewayApiDoc> {
    let loaded = weft_api::load_text(&manifest.to_string(), ORIGIN);
    view.objects.extend(loaded.objects);
    view.diagnostics.extend(loaded.diagnostics);
    loaded.gateway_api_docs
}

/// The object as a manifest the loader reads: list items come without `apiVersion` and
/// `kind`, and `managedFields` are the API server's bookkeeping.
fn as_manifest(o: &DynamicObject, resource: &ApiResource) -> Option<Value> {
    let mut v = serde_json::to_value(o).ok()?;
    v["apiVersion"] = Value::String(resource.api_version.clone());
    v["kind"] = Value::String(resource.kind.clone());
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    Some(v)
}

/// A running pod's address, labels and service account; none before it has an address.
pub fn pod_info(p: &Pod) -> Option<PodInfo> {
    let status = p.status.as_ref()?;
    // A finished pod keeps its address in status, which a new pod may already hold.
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    if p.metadata.deletion_timestamp.is_some() {
        return None;
    }
    Some(PodInfo {
        name: p.metadata.name.clone().unwrap_or_default(),
        namespace: p.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        ip,
        labels: p.metadata.labels.clone().unwrap_or_default(),
        service_account: p.spec.as_ref().and_then(|s| s.service_account_name.clone()),
    })
}

/// Diagnostics of a view that are errors.
pub fn errors(view: &View) -> impl Iterator<Item = &Diagnostic> {
    view.diagnostics.iter().filter(|d| d.level == Level::Error)
}

/// The API server's view once, for a one-shot reader (`weft analyze --kubeconfig`).
pub async fn once(client: Client, timeout: Duration) -> Result<View, String> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(run(client, Duration::from_millis(10), tx));
    let view = tokio::time::timeout(timeout, rx.recv()).await;
    task.abort();
    match view {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err("the API server source ended".into()),
        Err(_) => {
            Err(format!("the API server was not listed within {}s (is it reachable, and may you list its resources?)", timeout.as_secs()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_pods_with_an_address_give_endpoints_their_identity() {
        let pod = |phase: &str, ip: &str| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p", "namespace": "shop", "labels": {"app": "a"}},
                "spec": {"serviceAccountName": "sa", "containers": []}, "status": {"phase": phase, "podIP": ip}}))
            .expect("pod")
        };
        assert_eq!(pod_info(&pod("Running", "10.1.0.5")).map(|p| (p.ip, p.service_account)), Some(("10.1.0.5".into(), Some("sa".into()))));
        assert!(pod_info(&pod("Succeeded", "10.1.0.5")).is_none(), "a finished pod's address may be someone else's now");
        assert!(pod_info(&pod("Failed", "10.1.0.5")).is_none());
        assert!(pod_info(&pod("Pending", "")).is_none(), "no address yet");
    }
}
