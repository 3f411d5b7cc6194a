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

use weft_api::networking::{self as net, TlsMode};
use weft_api::security::MtlsMode;

use super::pb::{self, tls};
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

/// The `envoy.transport_socket_match` metadata that marks an endpoint with a sidecar: the
/// `filter_metadata` entry.
pub fn mesh_endpoint_metadata() -> (&'static str, pb::Struct) {
    (SOCKET_MATCH, pb::fields([("tlsMode", pb::string("istio"))]))
}

/// An SDS reference to `name` over the local agent.
fn sds(name: &str) -> tls::SdsSecretConfig {
    use pb::core::config_source::ConfigSourceSpecifier;
    use pb::core::grpc_service::{EnvoyGrpc, TargetSpecifier};
    let agent = pb::core::GrpcService {
        target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc { cluster_name: SDS_CLUSTER.into(), ..Default::default() })),
        ..Default::default()
    };
    let api = pb::core::ApiConfigSource {
        api_type: pb::core::api_config_source::ApiType::Grpc as i32,
        transport_api_version: pb::core::ApiVersion::V3 as i32,
        set_node_on_first_message_only: true,
        grpc_services: vec![agent],
        ..Default::default()
    };
    let source = pb::core::ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(api)),
        initial_fetch_timeout: pb::duration(std::time::Duration::ZERO),
        resource_api_version: pb::core::ApiVersion::V3 as i32,
        ..Default::default()
    };
    tls::SdsSecretConfig { name: name.into(), sds_config: Some(source) }
}

fn mesh_params() -> Option<tls::TlsParameters> {
    use tls::tls_parameters::TlsProtocol;
    Some(tls::TlsParameters {
        tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
        tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
        ..Default::default()
    })
}

/// SAN matchers: a SPIFFE ID is a URI; anything else may be a DNS name or a URI, as Istio's
/// untyped `subjectAltNames` are.
fn san_matchers(sans: &[String]) -> Vec<tls::SubjectAltNameMatcher> {
    use tls::subject_alt_name_matcher::SanType;
    let one = |t: SanType, s: &str| tls::SubjectAltNameMatcher { san_type: t as i32, matcher: Some(pb::exact(s)), ..Default::default() };
    let mut out = Vec::new();
    for s in sans {
        if !s.starts_with("spiffe://") {
            out.push(one(SanType::Dns, s));
        }
        out.push(one(SanType::Uri, s));
    }
    out
}

pub(super) fn transport_socket<M: prost::Message + prost::Name>(ctx: &M) -> pb::core::TransportSocket {
    pb::core::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(pb::core::transport_socket::ConfigType::TypedConfig(pb::any(ctx))),
    }
}

fn raw_buffer() -> pb::core::TransportSocket {
    use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
    pb::core::TransportSocket {
        name: "envoy.transport_sockets.raw_buffer".into(),
        config_type: Some(pb::core::transport_socket::ConfigType::TypedConfig(pb::any(&RawBuffer {}))),
    }
}

/// The workload's SVID and the mesh bundle, with `validation` as the default context.
fn mesh_common(validation: tls::CertificateValidationContext, alpn: Vec<String>) -> tls::CommonTlsContext {
    let combined = tls::common_tls_context::CombinedCertificateValidationContext {
        default_validation_context: Some(validation),
        validation_context_sds_secret_config: Some(sds("ROOTCA")),
        ..Default::default()
    };
    tls::CommonTlsContext {
        tls_params: mesh_params(),
        tls_certificate_sds_secret_configs: vec![sds("default")],
        validation_context_type: Some(tls::common_tls_context::ValidationContextType::CombinedValidationContext(combined)),
        alpn_protocols: alpn,
        ..Default::default()
    }
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// The sidecar's side of inbound mTLS: its SVID, client certificates required and verified
/// against the mesh bundle. HTTP chains also negotiate `h2`/`http/1.1`.
pub fn inbound_transport_socket(http: bool) -> pb::core::TransportSocket {
    let alpn = if http { strings(&["h2", "http/1.1"]) } else { Vec::new() };
    transport_socket(&tls::DownstreamTlsContext {
        common_tls_context: Some(mesh_common(Default::default(), alpn)),
        require_client_certificate: pb::boolv(true),
        ..Default::default()
    })
}

/// `filter_chain_match` pieces for inbound chains.
pub fn mesh_alpn() -> Vec<String> {
    strings(&MESH_ALPN)
}

pub fn mesh_http_alpn() -> Vec<String> {
    strings(&MESH_HTTP_ALPN)
}

/// Every ALPN a mesh client may offer, for a PERMISSIVE port's mTLS chain.
pub fn mesh_alpn_all() -> Vec<String> {
    MESH_ALPN.iter().chain(MESH_HTTP_ALPN.iter()).map(|s| s.to_string()).collect()
}

/// ISTIO_MUTUAL towards a server expected to be one of `sans`.
fn istio_mutual(sans: &[String], sni: &str, h2: bool) -> pb::core::TransportSocket {
    let mut alpn = mesh_alpn();
    if h2 {
        alpn.push("h2".into());
    }
    let validation = tls::CertificateValidationContext { match_typed_subject_alt_names: san_matchers(sans), ..Default::default() };
    transport_socket(&tls::UpstreamTlsContext {
        sni: sni.into(),
        common_tls_context: Some(mesh_common(validation, alpn)),
        ..Default::default()
    })
}

/// SIMPLE or MUTUAL with the files a DestinationRule names.
fn file_tls(t: &net::ClientTlsSettings, sni: &str, h2: bool) -> pb::core::TransportSocket {
    let mut common = tls::CommonTlsContext::default();
    if t.mode == TlsMode::Mutual {
        if let (Some(cert), Some(key)) = (&t.client_certificate, &t.private_key) {
            common.tls_certificates =
                vec![tls::TlsCertificate { certificate_chain: pb::file(cert), private_key: pb::file(key), ..Default::default() }];
        }
    }
    if t.insecure_skip_verify != Some(true) {
        let ca = t.ca_certificates.as_deref().unwrap_or(SYSTEM_ROOTS);
        let v = tls::CertificateValidationContext {
            trusted_ca: pb::file(ca),
            match_typed_subject_alt_names: san_matchers(&t.subject_alt_names),
            ..Default::default()
        };
        common.validation_context_type = Some(tls::common_tls_context::ValidationContextType::ValidationContext(v));
    }
    if h2 {
        common.alpn_protocols = strings(&["h2"]);
    }
    transport_socket(&tls::UpstreamTlsContext { sni: sni.into(), common_tls_context: Some(common), ..Default::default() })
}

/// How one outbound cluster reaches its endpoints.
pub enum ClusterTls {
    Plain,
    /// One transport socket for every endpoint.
    All(pb::core::TransportSocket),
    /// `transport_socket_matches`: mTLS for endpoints marked as in the mesh, plaintext else.
    Auto(Vec<pb::cluster::cluster::TransportSocketMatch>),
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
            use pb::cluster::cluster::TransportSocketMatch;
            let mtls = istio_mutual(&service_identities(model, svc), &istio_sni, h2);
            ClusterTls::Auto(vec![
                TransportSocketMatch {
                    name: "tlsMode-istio".into(),
                    r#match: Some(pb::fields([("tlsMode", pb::string("istio"))])),
                    transport_socket: Some(mtls),
                },
                TransportSocketMatch {
                    name: "tlsMode-disabled".into(),
                    r#match: Some(pb::Struct::default()),
                    transport_socket: Some(raw_buffer()),
                },
            ])
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
        .chain(svc.subject_alt_names.iter().cloned())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}
