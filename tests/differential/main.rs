//! The differential suite: every scenario runs the same bootstrap through real Envoy and
//! `weft proxy`, sends the same requests, and compares. See tests/README.md.

mod admin;
mod cli;
mod harness;
mod hostile;
mod hostile_h2;
mod istio;
mod limits;
mod listeners;
mod more;
mod observability;
mod protocols;
mod resilience;
mod rewrites;
mod routing;
mod stats_config;
mod tls;
mod tracing;
mod upstream;
