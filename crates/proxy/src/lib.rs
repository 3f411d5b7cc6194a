//! weft's data plane: the sidecar and gateway proxy.
//!
//! Owns everything between a downstream socket and an upstream socket: listeners and their
//! filters, filter-chain selection, the HTTP connection manager (routing, faults, retries,
//! timeouts, header rewrites), the TCP proxy, upstream clusters (load balancing, pools,
//! circuit breakers, health and outlier detection), access logs, stats and the admin
//! interface. Configuration is a validated [`config::Config`] built from Envoy wire types,
//! plus, when the bootstrap names a control plane, what the ADS client delivers at run time
//! (`dynamic`).
#![deny(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod agent;
pub mod applog;
pub mod attributes;
pub mod blocked;
pub mod body;
pub mod config;
pub mod dns;
pub mod drain;
pub mod dynamic;
#[doc(hidden)]
pub mod fuzzing;
mod heartbeat;
pub mod http;
pub mod identity;
pub mod istio_metrics;
pub mod listener;
mod memory;
mod report;
pub mod server;
mod sniff;
mod sockopt;
pub mod stats;
pub mod tcp;
pub mod tls;
pub mod trace;
pub mod transport;
pub mod upstream;

pub use config::{Config, ConfigError};
pub use server::{start, Options, Running, StartError};
