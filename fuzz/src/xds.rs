//! xDS resources as the proxy takes them from the ADS stream (protobuf `Any`, decoded by
//! reflection) and as the control plane writes them (proto3 JSON, encoded by reflection), each
//! then read into its wire type and validated as `dynamic` validates an update.
//!
//! Input: one selector byte, then the resource. The selector's low two bits pick the type
//! (cluster, endpoints, listener, route); bit 2 says the resource is JSON text rather than
//! protobuf bytes.

use weft_proxy::config::cluster::{endpoints_from_wire, Discovery};
use weft_proxy::config::listener::ClusterNames;
use weft_proxy::config::route::RouteTable;
use weft_proxy::config::{ClusterConfig, ListenerConfig};
use weft_xds as wire;
use weft_xds::load::from_value;
use weft_xds::proto::{self, Any, ALL_TYPES, CLUSTER, ENDPOINT, LISTENER, ROUTE};

pub fn xds(data: &[u8]) {
    let Some((&selector, payload)) = data.split_first() else { return };
    let type_url = ALL_TYPES[usize::from(selector & 3)];
    if selector & 4 == 0 {
        let any = Any { type_url: type_url.into(), value: payload.to_vec() };
        let Ok(json) = proto::from_any(&any) else { return };
        round_trip(type_url, &json);
        resource(type_url, &json);
    } else {
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(payload) else { return };
        if let Ok(any) = proto::to_any(type_url, &json) {
            // What the control plane puts on the wire, the proxy must read back.
            match proto::from_any(&any) {
                Ok(decoded) => resource(type_url, &decoded),
                Err(e) => panic!("{type_url}: encoded from JSON, but the encoding does not decode: {e}"),
            }
        }
        // The wire types also read JSON directly (a bootstrap's static resources).
        resource(type_url, &json);
    }
}

/// Decoding and encoding are one mapping: a resource decoded from the wire is JSON the encoder
/// takes, and it decodes to the same JSON again (what `/config_dump` shows is what came).
fn round_trip(type_url: &str, json: &serde_json::Value) {
    let any = match proto::to_any(type_url, json) {
        Ok(a) => a,
        Err(e) => panic!("{type_url}: decoded from protobuf to {json}, which does not encode again: {e}"),
    };
    match proto::from_any(&any) {
        Ok(again) => assert_eq!(&again, json, "{type_url}: a decoded resource changed when encoded and decoded again"),
        Err(e) => panic!("{type_url}: {json} encoded again does not decode: {e}"),
    }
}

/// One resource as `dynamic` validates it: into the wire type, then into the proxy's config.
fn resource(type_url: &str, json: &serde_json::Value) {
    if crate::names_a_device(json) {
        return;
    }
    let path = "fuzz";
    match type_url {
        CLUSTER => {
            if let Ok(c) = from_value::<wire::cluster::Cluster>(json.clone(), path) {
                let _ = ClusterConfig::from_wire(&c, path);
            }
        }
        ENDPOINT => {
            if let Ok(la) = from_value::<wire::cluster::ClusterLoadAssignment>(json.clone(), path) {
                let _ = endpoints_from_wire(&la, path, &Discovery::Eds { service_name: "fuzz".into() });
            }
        }
        LISTENER => {
            if let Ok(l) = from_value::<wire::listener::Listener>(json.clone(), path) {
                let _ = ListenerConfig::from_wire(&l, path, &ClusterNames::Dynamic, 0);
            }
        }
        ROUTE => {
            if let Ok(rc) = from_value::<wire::route::RouteConfiguration>(json.clone(), path) {
                let _ = RouteTable::from_wire(&rc, path, &ClusterNames::Dynamic);
            }
        }
        _ => {}
    }
}
