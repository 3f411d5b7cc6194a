//! A Kubernetes API server stand-in for tests, answering as kube-apiserver does from what a
//! test gives it: discovery documents and lists by path, and watch streams the test pushes
//! events into. Lists can be held back to stand for a slow API server.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the stand-in serves: a document per path (discovery, lists), and the open watches on
/// each collection.
#[derive(Default)]
pub struct ApiServer {
    pub docs: Mutex<HashMap<String, Value>>,
    watches: Mutex<HashMap<String, Vec<tokio::sync::mpsc::UnboundedSender<Bytes>>>>,
    /// Service-account tokens the TokenReview endpoint knows: token → (username, audiences).
    pub tokens: Mutex<HashMap<String, (String, Vec<String>)>>,
    /// Paths that answer 503 this many more times before their document (a flaky API server).
    pub failures: Mutex<HashMap<String, u32>>,
    /// Every write (POST, PUT, PATCH) in order: (method, path with query, body).
    pub writes: Mutex<Vec<(String, String, Value)>>,
    /// Paths whose answer is held back until [`ApiServer::release`].
    pub held: Mutex<Vec<String>>,
    released: tokio::sync::Notify,
}

/// An `APIResourceList` (discovery) for `group_version`: (plural, kind, namespaced).
pub fn resource_list(group_version: &str, resources: &[(&str, &str, bool)]) -> Value {
    let rs: Vec<Value> = resources
        .iter()
        .map(|(name, kind, namespaced)| {
            json!({"name": name, "singularName": kind.to_lowercase(), "namespaced": namespaced, "kind": kind,
                   "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": rs})
}

/// A `<Kind>List` at resource version `rv`.
pub fn list(kind: &str, api_version: &str, rv: &str, items: Vec<Value>) -> Value {
    json!({"kind": format!("{kind}List"), "apiVersion": api_version, "metadata": {"resourceVersion": rv}, "items": items})
}

fn serde_yaml_from(b: &[u8]) -> Result<Value, ()> {
    serde_yaml::from_slice(b).map_err(|_| ())
}

/// One line of a watch stream.
pub fn event(kind: &str, object: Value) -> Bytes {
    Bytes::from(format!("{}\n", json!({"type": kind, "object": object})))
}

impl ApiServer {
    pub fn new() -> Arc<ApiServer> {
        Arc::new(ApiServer::default())
    }

    pub fn set(&self, path: &str, doc: Value) {
        self.docs.lock().expect("docs").insert(path.into(), doc);
    }

    /// Sends `event` to everyone watching `path`.
    pub fn push(&self, path: &str, event: Bytes) {
        let mut watches = self.watches.lock().expect("watches");
        for tx in watches.entry(path.into()).or_default().iter() {
            let _ = tx.send(event.clone());
        }
    }

    /// How many watches of `path` are open.
    pub fn watchers(&self, path: &str) -> usize {
        self.watches.lock().expect("watches").get(path).map(|w| w.iter().filter(|t| !t.is_closed()).count()).unwrap_or(0)
    }

    pub fn release(&self) {
        self.held.lock().expect("held").clear();
        self.released.notify_waiters();
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let reply = |status: StatusCode, v: Value| {
            let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
            *r.status_mut() = status;
            r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            Ok(r)
        };
        if req.method() == http::Method::POST && path == "/apis/authentication.k8s.io/v1/tokenreviews" {
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let token = review.pointer("/spec/token").and_then(Value::as_str).unwrap_or_default();
            let asked: Vec<String> = review
                .pointer("/spec/audiences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            let known = self.tokens.lock().expect("tokens").get(token).cloned();
            // As kube-apiserver answers: authenticated only for a known token meant for one of
            // the audiences asked, with the audiences that matched.
            let status = match known {
                Some((user, auds)) if asked.is_empty() || asked.iter().any(|a| auds.contains(a)) => {
                    let matched: Vec<&String> =
                        if asked.is_empty() { auds.iter().collect() } else { asked.iter().filter(|a| auds.contains(a)).collect() };
                    json!({"authenticated": true, "user": {"username": user, "uid": "u", "groups": ["system:serviceaccounts"]}, "audiences": matched})
                }
                Some(_) => {
                    json!({"user": {}, "error": "[invalid bearer token, token audiences [\"other\"] is invalid for the target audiences]"})
                }
                None => json!({"user": {}, "error": "[invalid bearer token, square/go-jose: error in cryptographic primitive]"}),
            };
            let mut out = review.clone();
            out["status"] = status;
            out["metadata"] = json!({"creationTimestamp": null});
            return reply(StatusCode::CREATED, out);
        }
        let method = req.method().clone();
        if matches!(method, http::Method::POST | http::Method::PUT | http::Method::PATCH) {
            let full = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            // Apply patches come as YAML (JSON is YAML), everything else as JSON.
            let v: Value = serde_json::from_slice(&body).or_else(|_| serde_yaml_from(&body)).unwrap_or(Value::Null);
            self.writes.lock().expect("writes").push((method.to_string(), full, v.clone()));
            let mut docs = self.docs.lock().expect("docs");
            let name = v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
            let (target, status) = match method {
                http::Method::POST => (format!("{path}/{name}"), StatusCode::CREATED),
                _ => (path.clone(), StatusCode::OK),
            };
            let existing = docs.get(&target).cloned();
            let rv_of =
                |o: &Value| o.pointer("/metadata/resourceVersion").and_then(Value::as_str).and_then(|r| r.parse::<u64>().ok()).unwrap_or(0);
            match (&method, &existing) {
                (&http::Method::POST, Some(_)) => {
                    return reply(
                        StatusCode::CONFLICT,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": format!("{name} already exists")}),
                    );
                }
                (&http::Method::PUT, Some(old)) if v.pointer("/metadata/resourceVersion") != old.pointer("/metadata/resourceVersion") => {
                    return reply(
                        StatusCode::CONFLICT,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "the object has been modified; please apply your changes to the latest version and try again"}),
                    );
                }
                _ => {}
            }
            let mut stored = v.clone();
            let rv = existing.as_ref().map(rv_of).unwrap_or(0) + 1;
            if let Some(meta) = stored.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), json!(rv.to_string()));
            }
            docs.insert(target, stored.clone());
            return reply(status, stored);
        }
        if query.contains("watch=true") {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
            self.watches.lock().expect("watches").entry(path).or_default().push(tx);
            let body =
                StreamBody::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b))));
            let mut r = Response::new(BodyExt::boxed(body));
            r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            return Ok(r);
        }
        loop {
            let notified = self.released.notified();
            if !self.held.lock().expect("held").contains(&path) {
                break;
            }
            notified.await;
        }
        if let Some(left) = self.failures.lock().expect("failures").get_mut(&path).filter(|n| **n > 0) {
            *left -= 1;
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "the server is currently unable to handle the request", "reason": "ServiceUnavailable", "code": 503}),
            );
        }
        let found = self.docs.lock().expect("docs").get(&path).cloned();
        match found {
            Some(v) => reply(StatusCode::OK, v),
            None => reply(
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "the server could not find the requested resource", "reason": "NotFound", "code": 404}),
            ),
        }
    }

    /// Serves on a loopback port until the process ends; the address.
    pub async fn serve(self: &Arc<Self>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let api = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let api = api.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| api.clone().handle(req));
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tcp), svc).await;
                });
            }
        });
        addr
    }

    /// A kubeconfig that points at `addr`, without credentials.
    pub fn kubeconfig(addr: SocketAddr) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster: {{server: \"http://{addr}\"}}\ncontexts:\n- name: stand-in\n  context: {{cluster: stand-in, user: nobody}}\ncurrent-context: stand-in\nusers:\n- name: nobody\n  user: {{}}\n"
        )
    }
}
