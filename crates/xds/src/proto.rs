//! Envoy resources between their two encodings: protobuf `Any` on the xDS wire, proto3 JSON
//! (snake_case field names) everywhere else. Conversion is by reflection over Envoy's own
//! descriptors, so JSON that is not valid Envoy config cannot be put on the wire, and resources
//! arriving over xDS feed the same serde types (and the same "not supported" rule) as a
//! bootstrap file.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

pub use envoy_types::pb::google::protobuf::Any;

pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// SDS over ADS: only the certificates a gateway's `credentialName` names (`kubernetes://…`);
/// a workload's own identity comes from its agent, never from the control plane.
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// VHDS: the virtual hosts of a route configuration that says `vhds`, each fetched when a
/// request first names its host (`<route configuration>/<host>`, Envoy's VHDS naming). weft's
/// control plane sends route configurations so only to weft sidecars that fetch on demand.
pub const VIRTUAL_HOST: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";

pub use crate::name_table::NAME_TABLE;

/// Envoy's resource types weft serves, in the order Envoy warms them (secrets come with the
/// listeners that name them): the ones the descriptor pool holds.
pub const ENVOY_TYPES: [&str; 6] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, VIRTUAL_HOST];

/// Every resource type weft serves: Envoy's, then Istio's NDS name table (asked for only by
/// sidecars that answer their workload's DNS; typed by prost, never reflected).
pub const ALL_TYPES: [&str; 7] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, VIRTUAL_HOST, NAME_TABLE];

/// Whether a subscription to `t` with no names means "everything" (CDS and LDS), rather than
/// nothing (EDS, RDS and SDS name what they want).
pub fn is_wildcard_type(t: &str) -> bool {
    t == CLUSTER || t == LISTENER || t == NAME_TABLE
}

/// Whether every response of `t` carries the whole set the subscription covers (CDS, LDS, and
/// VHDS, whose subscription names hosts while its resources are named by virtual host), rather
/// than only the named resources that changed.
pub fn is_full_state(t: &str) -> bool {
    t == CLUSTER || t == LISTENER || t == VIRTUAL_HOST || t == NAME_TABLE
}

/// `type_url` as one of the types weft serves, or `None` for any other.
pub fn known_type(type_url: &str) -> Option<&'static str> {
    ALL_TYPES.iter().copied().find(|k| *k == type_url)
}

pub fn short_name(type_url: &str) -> &'static str {
    match type_url {
        CLUSTER => "CDS",
        ENDPOINT => "EDS",
        LISTENER => "LDS",
        ROUTE => "RDS",
        SECRET => "SDS",
        VIRTUAL_HOST => "VHDS",
        NAME_TABLE => "NDS",
        _ => "?",
    }
}

/// Envoy's descriptors, trimmed to what [`descriptor_roots`] reaches; written by
/// `scripts/descriptors.sh` from the set `envoy-types` ships, and checked current by CI.
static DESCRIPTORS: &[u8] = include_bytes!("../descriptors/envoy.binpb");

/// The messages the reflection pool must hold: the xDS resources, every `typed_config`
/// type weft decodes, and the ones the control plane writes into `Any` fields. Everything they
/// reach comes with them.
pub fn descriptor_roots() -> Vec<&'static str> {
    use crate::{cluster, filters, tls};
    let mut roots: Vec<&'static str> = ENVOY_TYPES.iter().map(|t| message_name(t)).collect();
    for types in [
        cluster::ProtocolOptionsConfig::TYPES,
        filters::ListenerFilterConfig::TYPES,
        filters::NetworkFilterConfig::TYPES,
        filters::PerFilterConfig::TYPES,
        filters::HttpFilterConfig::TYPES,
        filters::AccessLogConfig::TYPES,
        filters::AccessLogFilterConfig::TYPES,
        filters::TracerConfig::TYPES,
        tls::TransportSocketConfig::TYPES,
    ] {
        roots.extend_from_slice(types);
    }
    // Written by the control plane's retry policy; the proxy reads the field by name only.
    roots.push("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate");
    roots.sort_unstable();
    roots.dedup();
    roots
}

/// The decoded descriptor pool, while anyone holds it. A proxy needs it only while it decodes
/// an xDS response: the ADS client holds a [`PoolHandle`] through a burst of responses and lets
/// it go when the stream is quiet, so an idle sidecar does not carry the decoded pool (several
/// MB) for its whole life. The control plane builds typed messages and needs no pool to encode
/// them; its debug views decode through a pool held only while they run.
static SHARED: Mutex<Weak<DescriptorPool>> = Mutex::new(Weak::new());

/// Keeps the decoded pool alive while held.
pub struct PoolHandle(Arc<DescriptorPool>);

/// The pool, decoded now if nobody holds it.
pub fn hold_pool() -> PoolHandle {
    let mut shared = SHARED.lock();
    if let Some(p) = shared.upgrade() {
        return PoolHandle(p);
    }
    // The descriptor set is compiled in; failing to decode it is a build defect.
    #[allow(clippy::expect_used)]
    let p = Arc::new(DescriptorPool::decode(DESCRIPTORS).expect("Envoy descriptor set compiled into weft decodes"));
    *shared = Arc::downgrade(&p);
    PoolHandle(p)
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("unknown resource type {0}")]
    UnknownType(String),
    #[error("{type_url}: {message}")]
    Invalid { type_url: String, message: String },
}

fn message_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// Encodes a proto3-JSON resource as the `Any` xDS carries.
pub fn to_any(type_url: &str, json: &serde_json::Value) -> Result<Any, ProtoError> {
    Ok(Any { type_url: type_url.into(), value: encode_message(message_name(type_url), json)? })
}

/// Encodes a proto3-JSON message of the named type (`envoy.config.route.v3.VirtualHost`):
/// for tests and tools that write resources as JSON; the control plane builds typed messages.
pub fn encode_message(name: &str, json: &serde_json::Value) -> Result<Vec<u8>, ProtoError> {
    let pool = hold_pool();
    let desc = pool.0.get_message_by_name(name).ok_or_else(|| ProtoError::UnknownType(name.into()))?;
    let msg = DynamicMessage::deserialize(desc, json).map_err(|e| ProtoError::Invalid { type_url: name.into(), message: e.to_string() })?;
    Ok(msg.encode_to_vec())
}

/// Calls `f` with each field numbered `number` of the encoded message `msg` that is itself a
/// message (length-delimited), with its offset in `msg`: a walk over one repeated field
/// without decoding the rest.
pub fn each_message(msg: &[u8], number: u32, mut f: impl FnMut(usize, &[u8]) -> Result<(), String>) -> Result<(), String> {
    use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
    let mut buf = msg;
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).map_err(|e| e.to_string())?;
        if tag == number && wire == WireType::LengthDelimited {
            let len = usize::try_from(decode_varint(&mut buf).map_err(|e| e.to_string())?).unwrap_or(usize::MAX);
            if len > buf.len() {
                return Err(format!("field {number}: {len} bytes announced, {} left", buf.len()));
            }
            f(msg.len() - buf.len(), &buf[..len])?;
            buf = &buf[len..];
        } else {
            skip_field(wire, tag, &mut buf, DecodeContext::default()).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Decodes an `Any` into proto3 JSON with Envoy's snake_case field names, leaving out fields
/// at their defaults (so "set" means "sent").
pub fn from_any(any: &Any) -> Result<serde_json::Value, ProtoError> {
    from_bytes(&any.type_url, &any.value)
}

/// Decodes the protobuf encoding of a message of `type_url` into proto3 JSON.
pub fn from_bytes(type_url: &str, bytes: &[u8]) -> Result<serde_json::Value, ProtoError> {
    let invalid = |message: String| ProtoError::Invalid { type_url: type_url.into(), message };
    let pool = hold_pool();
    let desc = pool.0.get_message_by_name(message_name(type_url)).ok_or_else(|| ProtoError::UnknownType(type_url.into()))?;
    let msg = DynamicMessage::decode(desc, bytes).map_err(|e| invalid(e.to_string()))?;
    let opts = SerializeOptions::new().use_proto_field_name(true).stringify_64_bit_integers(false);
    msg.serialize_with_options(serde_json::value::Serializer, &opts).map_err(|e| {
        // An `Any` inside whose type the trimmed pool lacks: an extension weft does not
        // implement. Say so, as the serde types would for one they know the name of.
        let message = e.to_string();
        let message = match message.strip_prefix("message '").and_then(|r| r.strip_suffix("' not found")) {
            Some(ty) => format!("@type {ty:?} is not supported by weft"),
            None => message,
        };
        invalid(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_protobuf() {
        let j = serde_json::json!({
            "name": "outbound|9080||reviews.default.svc.cluster.local",
            "type": "EDS",
            "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}},
            "connect_timeout": "10s",
            "circuit_breakers": {"thresholds": [{"max_connections": 4294967295u32}]}
        });
        let any = to_any(CLUSTER, &j).expect("encode");
        assert_eq!(from_any(&any).expect("decode"), j);
    }

    #[test]
    fn the_compiled_in_pool_holds_every_root() {
        for root in descriptor_roots() {
            assert!(hold_pool().0.get_message_by_name(root).is_some(), "{root} missing: run scripts/descriptors.sh");
        }
    }

    #[test]
    fn an_extension_weft_does_not_know_is_named_when_decoded() {
        // Encoded by hand: a Listener whose one filter's typed_config is Lua, a type outside
        // the trimmed pool. A control plane other than weft's may send one.
        let inner = Any { type_url: "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua".into(), value: vec![] };
        let filter = envoy_types::pb::envoy::config::listener::v3::Filter {
            name: "lua".into(),
            config_type: Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(inner)),
        };
        let listener = envoy_types::pb::envoy::config::listener::v3::Listener {
            name: "l".into(),
            filter_chains: vec![envoy_types::pb::envoy::config::listener::v3::FilterChain { filters: vec![filter], ..Default::default() }],
            ..Default::default()
        };
        let any = Any { type_url: LISTENER.into(), value: listener.encode_to_vec() };
        let e = from_any(&any).expect_err("unknown extension");
        assert!(e.to_string().contains("envoy.extensions.filters.http.lua.v3.Lua"), "{e}");
        assert!(e.to_string().contains("not supported"), "{e}");
    }

    #[test]
    fn the_pool_lives_while_held_and_is_decoded_again_after() {
        let held = hold_pool();
        assert!(Arc::ptr_eq(&held.0, &hold_pool().0), "one pool while held");
        let weak = Arc::downgrade(&held.0);
        drop(held);
        assert!(weak.upgrade().is_none(), "let go when nobody holds it");
        let any = Any { type_url: CLUSTER.into(), value: vec![] };
        assert!(from_any(&any).is_ok(), "decoded again on demand");
    }

    #[test]
    fn invalid_json_is_refused_with_the_field() {
        let e = to_any(CLUSTER, &serde_json::json!({"name": "c", "conect_timeout": "1s"})).expect_err("typo");
        assert!(e.to_string().contains("conect_timeout"), "{e}");
    }
}
