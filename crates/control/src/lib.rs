//! weft's control plane: reads mesh configuration, builds the service model, translates it
//! per proxy into Envoy v3 resources and serves them over ADS.

pub mod ads;
pub mod analyze;
pub mod ca;
pub mod dashboard;
pub mod debug;
pub mod graph;
mod memory;
pub mod model;
pub mod node;
pub mod protocol;
pub mod push;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod translate;
pub mod webhook;
pub mod wire;
