//! What only one control-plane replica may do, behind a Lease: publishing the mesh's root where
//! pods and the API server need it — the `istio-ca-root-cert` ConfigMap in every namespace
//! (injected pods mount it) and the `caBundle` of this revision's webhook configurations (so
//! the API server can call them) — again whenever the root changes or a namespace appears.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;
use weft_api::{Diagnostic, Level};

/// The ConfigMap Istio's injected pods mount the root from.
pub const ROOT_CONFIGMAP: &str = "istio-ca-root-cert";
/// How long a Lease holds without renewal, as Istio's elections.
pub const LEASE_SECONDS: i32 = 15;
const TICK: Duration = Duration::from_secs(2);

/// Who publishes, and where.
pub struct Publisher {
    pub client: Client,
    /// The control plane's namespace (the Lease lives there).
    pub namespace: String,
    /// This replica's name in the Lease (the pod's name).
    pub identity: String,
    /// The revision whose webhook configurations get the root (`istio.io/rev`).
    pub revision: String,
    /// How long a Lease holds without renewal (15 s by default).
    pub lease_seconds: i32,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Publisher {
    /// Takes or keeps the Lease; whether this replica leads now.
    async fn lead(&self) -> Result<bool, kube::Error> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = format!("weft-control-plane-{}", self.revision);
        let mine = |rv: Option<String>, acquired: Option<MicroTime>, transitions: i32| Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version: rv,
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.lease_seconds),
                acquire_time: Some(acquired.unwrap_or_else(now)),
                renew_time: Some(now()),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        };
        let current = match leases.get_opt(&name).await? {
            None => return leases.create(&PostParams::default(), &mine(None, None, 0)).await.map(|_| true).or_else(conflict_is_false),
            Some(l) => l,
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(t), Some(d)) => t.0.as_second() + i64::from(d) < now().0.as_second(),
            _ => true,
        };
        let rv = current.metadata.resource_version.clone();
        if holder == self.identity {
            // Renew, keeping the acquisition time; another writer in between makes this fail.
            return leases
                .replace(&name, &PostParams::default(), &mine(rv, spec.acquire_time, spec.lease_transitions.unwrap_or(0)))
                .await
                .map(|_| true)
                .or_else(conflict_is_false);
        }
        if expired {
            let transitions = spec.lease_transitions.unwrap_or(0) + 1;
            return leases
                .replace(&name, &PostParams::default(), &mine(rv, None, transitions))
                .await
                .map(|_| true)
                .or_else(conflict_is_false);
        }
        Ok(false)
    }

    /// Writes the root everywhere it must be.
    async fn publish(&self, root: &str, done: &mut BTreeSet<String>) -> Result<(), String> {
        let apply = PatchParams::apply("weft-control-plane").force();
        // The webhooks first: without their caBundle the API server cannot call them at all.
        let mut failed = Vec::new();
        let bundle = base64_encode(root.as_bytes());
        let selector = format!("istio.io/rev={}", self.revision);
        for (group_kind, plural) in [
            ("MutatingWebhookConfiguration", "mutatingwebhookconfigurations"),
            ("ValidatingWebhookConfiguration", "validatingwebhookconfigurations"),
        ] {
            let ar = kube::api::ApiResource {
                group: "admissionregistration.k8s.io".into(),
                version: "v1".into(),
                api_version: "admissionregistration.k8s.io/v1".into(),
                kind: group_kind.into(),
                plural: plural.into(),
            };
            let api: Api<kube::api::DynamicObject> = Api::all_with(self.client.clone(), &ar);
            let configs = api.list(&ListParams::default().labels(&selector)).await.map_err(|e| format!("listing {plural}: {e}"))?;
            for c in configs.items {
                let name = c.metadata.name.clone().unwrap_or_default();
                let names: Vec<String> = c
                    .data
                    .get("webhooks")
                    .and_then(|w| w.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|h| h.get("name")?.as_str().map(str::to_owned))
                    .collect();
                if names.is_empty() {
                    continue;
                }
                // Server-side apply of caBundle alone (webhooks merge by name): the rest stays
                // the installer's.
                let hooks: Vec<serde_json::Value> =
                    names.iter().map(|n| json!({"name": n, "clientConfig": {"caBundle": bundle}})).collect();
                let body = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": group_kind, "metadata": {"name": name}, "webhooks": hooks});
                if let Err(e) = api.patch(&name, &apply, &Patch::Apply(&body)).await {
                    failed.push(format!("{group_kind} {name}: {e}"));
                }
            }
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let list = namespaces.list(&ListParams::default()).await.map_err(|e| format!("listing namespaces: {e}"))?;
        for ns in list.items {
            let Some(name) = ns.metadata.name else { continue };
            if done.contains(&name) || ns.status.and_then(|s| s.phase).as_deref() == Some("Terminating") {
                continue;
            }
            let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), &name);
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": ROOT_CONFIGMAP, "namespace": name, "labels": {"istio.io/config": "true"}}, "data": {"root-cert.pem": root}});
            // One namespace that refuses (a quota, a policy) does not keep the others waiting.
            match cms.patch(ROOT_CONFIGMAP, &apply, &Patch::Apply(&cm)).await {
                Ok(_) => {
                    done.insert(name);
                }
                Err(e) => failed.push(format!("ConfigMap {name}/{ROOT_CONFIGMAP}: {e}")),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }

    /// Runs until the process ends: leads when it can, and while leading keeps the root
    /// published (`bundle` says when it changes).
    pub async fn run(self, bundle: tokio::sync::watch::Receiver<String>) {
        let (_keep, problems) = tokio::sync::watch::channel(Vec::new());
        self.run_with_events(bundle, problems).await
    }

    /// [`Publisher::run`], also reporting each invalid resource from the API server as a
    /// Warning Event on it (what `kubectl describe` shows), once per resource and reason.
    pub async fn run_with_events(
        self,
        mut bundle: tokio::sync::watch::Receiver<String>,
        mut problems: tokio::sync::watch::Receiver<Vec<Diagnostic>>,
    ) {
        let mut reported: BTreeSet<(String, String)> = BTreeSet::new();
        let mut leading = false;
        let mut done: BTreeSet<String> = BTreeSet::new();
        let mut published_root = String::new();
        loop {
            match self.lead().await {
                Ok(now_leading) => {
                    if now_leading != leading {
                        tracing::info!(identity = %self.identity, leading = now_leading, "control-plane leadership changed");
                        done.clear();
                        published_root.clear();
                    }
                    leading = now_leading;
                }
                Err(e) => {
                    // Not knowing is not leading: another replica may have taken over.
                    if leading {
                        tracing::warn!(identity = %self.identity, "the leader Lease could not be renewed, stopping writes: {e}");
                    } else {
                        tracing::warn!("the leader Lease: {e}");
                    }
                    leading = false;
                }
            }
            if leading {
                let root = bundle.borrow_and_update().clone();
                if root != published_root {
                    done.clear();
                }
                match self.publish(&root, &mut done).await {
                    Ok(()) => published_root = root,
                    Err(e) => tracing::warn!("publishing the mesh root: {e}"),
                }
                let current = problems.borrow_and_update().clone();
                self.report(&current, &mut reported).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                r = bundle.changed() => if r.is_err() { return },
                r = problems.changed() => if r.is_err() { return },
            }
        }
    }
}

impl Publisher {
    /// A Warning Event on each resource an error names (once per resource and message).
    async fn report(&self, problems: &[Diagnostic], reported: &mut BTreeSet<(String, String)>) {
        for d in problems.iter().filter(|d| d.level == Level::Error && d.file == crate::source::ORIGIN) {
            let Some(resource) = &d.resource else { continue };
            let Some((kind, rest)) = resource.split_once(' ') else { continue };
            let Some((ns, name)) = rest.split_once('/') else { continue };
            let Some(api_version) = crate::source::api_version_of(kind) else { continue };
            let message = if d.field_path.is_empty() { d.message.clone() } else { format!("{}: {}", d.field_path, d.message) };
            let key = (resource.clone(), message.clone());
            if reported.contains(&key) {
                continue;
            }
            let code = d.code.unwrap_or("WFT");
            let event = json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": format!("{name}."), "namespace": ns},
                "involvedObject": {"apiVersion": api_version, "kind": kind, "namespace": ns, "name": name},
                "type": "Warning", "reason": "InvalidConfig",
                "message": format!("{code} {message}; weft does not push this resource"),
                "source": {"component": "weft-control-plane"},
                "reportingComponent": "weft-control-plane", "reportingInstance": self.identity,
                "firstTimestamp": now_rfc3339(), "lastTimestamp": now_rfc3339(), "count": 1,
            });
            let events: Api<kube::api::DynamicObject> = Api::namespaced_with(
                self.client.clone(),
                ns,
                &kube::api::ApiResource {
                    group: String::new(),
                    version: "v1".into(),
                    api_version: "v1".into(),
                    kind: "Event".into(),
                    plural: "events".into(),
                },
            );
            let obj: kube::api::DynamicObject = match serde_json::from_value(event) {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!("an Event for {resource}: {e}");
                    continue;
                }
            };
            match events.create(&PostParams::default(), &obj).await {
                Ok(_) => {
                    reported.insert(key);
                }
                Err(e) => tracing::warn!("an Event for {resource}: {e}"),
            }
        }
    }
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Someone else wrote the Lease first: not leading this round.
fn conflict_is_false(e: kube::Error) -> Result<bool, kube::Error> {
    match e {
        kube::Error::Api(ref s) if s.code == 409 => Ok(false),
        other => Err(other),
    }
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}
