//! Mutual TLS between sidecars, in Istio's model.
//!
//! - Inbound: `PeerAuthentication` decides per workload port whether a connection must be
//!   mTLS (STRICT), may be either (PERMISSIVE, the default: TLS or plaintext told apart by the
//!   first bytes), or is plaintext (DISABLE).
//! - Outbound: a DestinationRule's `tls` decides how a cluster reaches its endpoints; with none,
//!   auto mTLS uses the mesh certificate for exactly the endpoints that have a sidecar
//!   (`security.istio.io/tlsMode: istio`) and accept mTLS, plaintext for the rest.
//!
//! Certificates are named here, never carried: the SDS secrets `default` (the workload's own
//! SVID) and `ROOTCA` (the mesh trust bundle) over the `sds-grpc` cluster, as pilot-agent
//! serves them to Envoy; `weft proxy` resolves the same names from its own identity.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use weft_api::networking::{self as net, TlsMode};
use weft_api::security::MtlsMode;

use super::Scope;
use crate::model::{labels_match, Endpoint, Model, Service};

/// The bootstrap cluster Envoy fetches `default` and `ROOTCA` from (its local agent).
pub const SDS_CLUSTER: &str = "sds-grpc";
/// The label the injector (or `weft up`) puts on workloads that have a sidecar.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// The metadata key transport socket matches read (`envoy.transport_socket_match`).
const SOCKET_MATCH: &str = "envoy.transport_socket_match";
/// ALPN an in-mesh client offers: Istio's, so Envoy and weft sidecars tell mesh mTLS from an
/// application's own TLS.
const MESH_ALPN: [&str; 2] = ["istio-peer-exchange", "istio"];
/// ALPN Istio's clients offer for HTTP on a port whose protocol is sniffed.
const MESH_HTTP_ALPN: [&str; 3] = ["istio-http/1.0", "istio-http/1.1", "istio-h2"];
/// Where a SIMPLE or MUTUAL DestinationRule without `caCertificates` finds the roots to verify
/// the server against (Istio verifies at the client by default).
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What an inbound port accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    Disable,
    Permissive,
    Strict,
}

fn apply(mode: MtlsMode, current: Inbound) -> Inbound {
    match mode {
        MtlsMode::Unset => current,
        MtlsMode::Disable => Inbound::Disable,
        MtlsMode::Permissive => Inbound::Permissive,
        MtlsMode::Strict => Inbound::Strict,
    }
}

/// What `scope`'s proxy actually serves on a port whose policy is `mode`: a proxy without a
/// workload identity cannot terminate mTLS, so PERMISSIVE is plaintext for it, and a STRICT
/// port gets no chain at all (refused) rather than one that would wait for a certificate.
pub fn servable(scope: &Scope<'_>, mode: Inbound) -> Option<Inbound> {
    match (scope.node.identity, mode) {
        (true, m) => Some(m),
        (false, Inbound::Strict) => None,
        (false, _) => Some(Inbound::Disable),
    }
}

/// The mode of a workload (`namespace`, `labels`) on `port` (its own port, as Istio keys
/// `portLevelMtls`), or of the workload as a whole with `None`. Istio's precedence: the mesh
/// policy (root namespace, no selector), then the namespace's, then the workload's selector
/// policy and its port-level setting, each overriding the one before unless it is UNSET.
/// Several policies at one level: the first by name wins (`weft analyze` reports the conflict).
pub fn inbound_mode(model: &Model, namespace: &str, labels: &BTreeMap<String, String>, port: Option<u16>) -> Inbound {
    let pas = &model.peer_authentications;
    let wide = |p: &&weft_api::Resource<weft_api::security::PeerAuthentication>| {
        p.spec.selector.as_ref().is_none_or(|s| s.match_labels.is_empty())
    };
    let mut mode = Inbound::Permissive;
    let mesh = pas.iter().find(|p| p.namespace == model.mesh.root_namespace && wide(p));
    if let Some(m) = mesh.and_then(|p| p.spec.mtls) {
        mode = apply(m.mode, mode);
    }
    let ns = pas.iter().find(|p| p.namespace == namespace && wide(p));
    if let Some(m) = ns.and_then(|p| p.spec.mtls) {
        mode = apply(m.mode, mode);
    }
    let workload = pas.iter().find(|p| {
        p.namespace == namespace
            && p.spec.selector.as_ref().is_some_and(|s| !s.match_labels.is_empty() && labels_match(&s.match_labels, labels))
    });
    if let Some(w) = workload {
        if let Some(m) = w.spec.mtls {
            mode = apply(m.mode, mode);
        }
        if let Some(m) = port.and_then(|p| w.spec.port_level_mtls.get(&u32::from(p))) {
            mode = apply(m.mode, mode);
        }
    }
    mode
}

pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// Whether `ep` of `svc` has a sidecar that takes mTLS on the endpoint port for `svc_port`.
pub fn endpoint_takes_mtls(model: &Model, svc: &Service, ep: &Endpoint, svc_port: u16) -> bool {
    if ep.labels.get(TLS_MODE_LABEL).map(String::as_str) != Some("istio") {
        return false;
    }
    let target = ep.ports.get(&svc_port).copied();
    inbound_mode(model, &svc.namespace, &ep.labels, target) != Inbound::Disable
}

/// The `envoy.transport_socket_match` metadata that marks an endpoint with a sidecar.
pub fn mesh_endpoint_metadata() -> Value {
    json!({"filter_metadata": {SOCKET_MATCH: {"tlsMode": "istio"}}})
}

/// An SDS reference to `name` over the local agent.
fn sds(name: &str) -> Value {
    json!({"name": name, "sds_config": {
        "api_config_source": {"api_type": "GRPC", "transport_api_version": "V3", "set_node_on_first_message_only": true,
                              "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}]},
        "initial_fetch_timeout": "0s", "resource_api_version": "V3"}})
}

fn mesh_params() -> Value {
    json!({"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"})
}

/// SAN matchers: a SPIFFE ID is a URI; anything else may be a DNS name or a URI, as Istio's
/// untyped `subjectAltNames` are.
fn san_matchers(sans: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for s in sans {
        if !s.starts_with("spiffe://") {
            out.push(json!({"san_type": "DNS", "matcher": {"exact": s}}));
        }
        out.push(json!({"san_type": "URI", "matcher": {"exact": s}}));
    }
    out
}

fn transport_socket(type_name: &str, ctx: Value) -> Value {
    let mut ctx = ctx;
    ctx["@type"] = json!(format!("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{type_name}"));
    json!({"name": "envoy.transport_sockets.tls", "typed_config": ctx})
}

fn raw_buffer() -> Value {
    json!({"name": "envoy.transport_sockets.raw_buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}})
}

/// The sidecar's side of inbound mTLS: its SVID, client certificates required and verified
/// against the mesh bundle. HTTP chains also negotiate `h2`/`http/1.1`.
pub fn inbound_transport_socket(http: bool) -> Value {
    let mut common = json!({
        "tls_params": mesh_params(),
        "tls_certificate_sds_secret_configs": [sds("default")],
        "combined_validation_context": {"default_validation_context": {}, "validation_context_sds_secret_config": sds("ROOTCA")},
    });
    if http {
        common["alpn_protocols"] = json!(["h2", "http/1.1"]);
    }
    transport_socket("DownstreamTlsContext", json!({"common_tls_context": common, "require_client_certificate": true}))
}

/// `filter_chain_match` pieces for inbound chains.
pub fn mesh_alpn() -> Value {
    json!(MESH_ALPN)
}

pub fn mesh_http_alpn() -> Value {
    json!(MESH_HTTP_ALPN)
}

/// Every ALPN a mesh client may offer, for a PERMISSIVE port's mTLS chain.
pub fn mesh_alpn_all() -> Value {
    json!(MESH_ALPN.iter().chain(MESH_HTTP_ALPN.iter()).collect::<Vec<_>>())
}

/// ISTIO_MUTUAL towards a server expected to be one of `sans`.
fn istio_mutual(sans: &[String], sni: &str, h2: bool) -> Value {
    let mut alpn: Vec<&str> = MESH_ALPN.to_vec();
    if h2 {
        alpn.push("h2");
    }
    let mut validation = json!({});
    if !sans.is_empty() {
        validation["match_typed_subject_alt_names"] = json!(san_matchers(sans));
    }
    transport_socket(
        "UpstreamTlsContext",
        json!({"sni": sni, "common_tls_context": {
            "tls_params": mesh_params(),
            "alpn_protocols": alpn,
            "tls_certificate_sds_secret_configs": [sds("default")],
            "combined_validation_context": {"default_validation_context": validation, "validation_context_sds_secret_config": sds("ROOTCA")},
        }}),
    )
}

/// SIMPLE or MUTUAL with the files a DestinationRule names.
fn file_tls(t: &net::ClientTlsSettings, sni: &str, h2: bool) -> Value {
    let mut common = json!({});
    if t.mode == TlsMode::Mutual {
        if let (Some(cert), Some(key)) = (&t.client_certificate, &t.private_key) {
            common["tls_certificates"] = json!([{"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}]);
        }
    }
    if t.insecure_skip_verify != Some(true) {
        let ca = t.ca_certificates.as_deref().unwrap_or(SYSTEM_ROOTS);
        let mut v = json!({"trusted_ca": {"filename": ca}});
        if !t.subject_alt_names.is_empty() {
            v["match_typed_subject_alt_names"] = json!(san_matchers(&t.subject_alt_names));
        }
        common["validation_context"] = v;
    }
    if h2 {
        common["alpn_protocols"] = json!(["h2"]);
    }
    let mut ctx = json!({"common_tls_context": common});
    if !sni.is_empty() {
        ctx["sni"] = json!(sni);
    }
    transport_socket("UpstreamTlsContext", ctx)
}

/// How one outbound cluster reaches its endpoints.
pub enum ClusterTls {
    Plain,
    /// One transport socket for every endpoint.
    All(Value),
    /// `transport_socket_matches`: mTLS for endpoints marked as in the mesh, plaintext else.
    Auto(Value),
}

/// The cluster's TLS: the DestinationRule's `tls` (port-level first) when it has one, else
/// auto mTLS for in-mesh services when MeshConfig enables it.
pub fn cluster_tls(
    scope: &Scope<'_>,
    svc: &Service,
    port: u16,
    subset: &str,
    tls: Option<&net::ClientTlsSettings>,
    h2: bool,
) -> ClusterTls {
    let model = scope.model;
    let istio_sni = format!("outbound_.{port}_.{subset}_.{}", svc.hostname);
    match tls {
        Some(t) => match t.mode {
            TlsMode::Disable => ClusterTls::Plain,
            TlsMode::IstioMutual => {
                let sans = if t.subject_alt_names.is_empty() { service_identities(model, svc) } else { t.subject_alt_names.clone() };
                ClusterTls::All(istio_mutual(&sans, t.sni.as_deref().unwrap_or(&istio_sni), h2))
            }
            TlsMode::Simple | TlsMode::Mutual => {
                let default_sni = if svc.hostname.contains('*') { "" } else { svc.hostname.as_str() };
                ClusterTls::All(file_tls(t, t.sni.as_deref().unwrap_or(default_sni), h2))
            }
        },
        // Auto mTLS needs a certificate to present: a proxy without one calls in plaintext.
        None if scope.node.identity
            && model.mesh.enable_auto_mtls
            && !svc.external
            && svc.discovery != crate::model::Discovery::Passthrough =>
        {
            let mtls = istio_mutual(&service_identities(model, svc), &istio_sni, h2);
            ClusterTls::Auto(json!([
                {"name": "tlsMode-istio", "match": {"tlsMode": "istio"}, "transport_socket": mtls},
                {"name": "tlsMode-disabled", "match": {}, "transport_socket": raw_buffer()},
            ]))
        }
        None => ClusterTls::Plain,
    }
}

/// The SPIFFE IDs of the service's workloads that have sidecars: the identities a client
/// accepts from the server. A workload with no service account runs as `default`.
fn service_identities(model: &Model, svc: &Service) -> Vec<String> {
    let mut ids: Vec<String> = svc
        .endpoints
        .iter()
        .filter(|e| e.labels.get(TLS_MODE_LABEL).map(String::as_str) == Some("istio"))
        .map(|e| spiffe_id(&model.mesh.trust_domain, &svc.namespace, e.service_account.as_deref().unwrap_or("default")))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}
