//! Envoy v3 configuration as it arrives on the wire, for the subset weft implements.
//!
//! This crate owns the *shape* of Envoy's resources (bootstrap, listeners, routes, clusters and
//! the filters weft supports) in proto3 JSON mapping, and the loading of a bootstrap file with
//! errors that name the line and the field path, and the ADS client that brings resources in
//! at run time (`ads_client`). It must not know what the fields mean: turning
//! wire types into the validated model the data path runs on is `weft-proxy`'s `config` module.
//!
//! Every struct denies unknown fields, so a field weft does not implement is refused with its
//! path rather than silently ignored.

pub mod ads_client;
pub mod bootstrap;
pub mod cluster;
pub mod core;
pub mod filters;
pub mod istio_ca;
pub mod listener;
pub mod load;
pub mod name_table;
pub mod proto;
pub mod route;
pub mod sds_server;
pub mod tls;
pub mod typed;

pub use bootstrap::Bootstrap;
pub use load::{load_bootstrap, LoadError, SourceFormat};
