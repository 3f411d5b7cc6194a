//! The resources a mesh is configured with: Istio's networking and security kinds and the
//! Kubernetes core objects the mesh reads, loaded from Kubernetes-style YAML with errors that
//! name the file, the line and the field path.
//!
//! Loading validates both the schema (unknown fields are refused; fields weft knows but does not
//! implement are refused by name) and Istio's semantic rules; a resource with an error never
//! leaves this crate.

pub mod core;
pub mod duration;
pub mod gateway_api;
pub mod ingress;
pub mod legacy;
pub mod load;
pub mod locate;
pub mod mesh;
pub mod meta;
pub mod networking;
pub mod schema;
pub mod security;
pub mod suggest;
pub mod telemetry;
pub mod unread;
pub mod unsupported;
pub mod validate;
pub mod yaml;

pub use load::{codes, drop_duplicates, load_text, Diagnostic, Level, Loaded, Object};
pub use meta::{Origin, Resource};
