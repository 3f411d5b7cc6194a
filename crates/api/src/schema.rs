//! The JSON Schema of each spec weft reads, derived with schemars from the types the loader
//! deserializes it as (see `load`). The derive reads the same `#[serde]` attributes serde does
//! (renames, defaults, `try_from`), so a schema cannot drift from what loads, as a hand-kept
//! schema, or a schema trait implemented type by type, would.
//!
//! The schemas are plain JSON Schema (OpenAPI 3 flavour, every subschema inlined); making one a
//! Kubernetes structural schema is weft-kube's business (`install::schema`). A type with a
//! hand-written `Deserialize` has a hand-written `JsonSchema` beside it that admits at least
//! what it accepts (a duration is any string, a field weft refuses by name any value), so the
//! loader still checks the value and refuses it with its own, better, message. serde's `alias`
//! is invisible to schemars and is added by hand (`mirror_percent`).

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::Value;

use crate::{networking as net, security};

/// The schema of `kind`'s `spec`; `None` for a kind weft does not read.
pub fn spec(kind: &str) -> Option<Value> {
    match kind {
        "VirtualService" => Some(of::<net::VirtualService>()),
        "DestinationRule" => Some(of::<net::DestinationRule>()),
        "Gateway" => Some(of::<net::Gateway>()),
        "ServiceEntry" => Some(of::<net::ServiceEntry>()),
        "Sidecar" => Some(of::<net::Sidecar>()),
        "WorkloadEntry" => Some(of::<net::WorkloadEntry>()),
        "PeerAuthentication" => Some(of::<security::PeerAuthentication>()),
        "Telemetry" => Some(of::<crate::telemetry::Telemetry>()),
        _ => None,
    }
}

fn of<T: JsonSchema>() -> Value {
    let settings = SchemaSettings::openapi3().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
    });
    settings.into_generator().into_root_schema_for::<T>().to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_follow_serde_names_and_hand_written_impls() {
        let vs = spec("VirtualService").unwrap();
        let route = &vs["properties"]["http"]["items"]["properties"];
        assert_eq!(route["match"]["type"], "array", "serde's rename, not the Rust name");
        assert_eq!(route["timeout"]["type"], "string", "GoDuration is written as a string");
        assert_eq!(route["corsPolicy"], serde_json::json!({}), "a refused field takes any value");
        assert_eq!(route["mirror_percent"], route["mirrorPercent"], "the alias is typed too");
        let uri = &route["match"]["items"]["properties"]["uri"];
        assert!(uri["properties"]["prefix"].is_object(), "StringMatch is read as RawStringMatch: {uri}");
        let se = spec("ServiceEntry").unwrap();
        assert_eq!(se["properties"]["resolution"]["type"], "string");
        assert!(se["properties"]["resolution"].get("enum").is_none(), "DYNAMIC_DNS reaches the loader");
        let pa = spec("PeerAuthentication").unwrap();
        assert_eq!(pa["properties"]["portLevelMtls"]["additionalProperties"]["type"], "object");
        assert_eq!(spec("AuthorizationPolicy"), None);
    }
}
