//! networking.istio.io kinds (v1, v1beta1 and v1alpha3 share one schema).

pub mod common;
pub mod destination_rule;
pub mod gateway;
pub mod service_entry;
pub mod virtual_service;

pub use common::*;
pub use destination_rule::*;
pub use gateway::*;
pub use service_entry::*;
pub use virtual_service::*;
