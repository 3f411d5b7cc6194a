//! The differential suite: every scenario runs the same bootstrap through real Envoy and
//! `weft proxy`, sends the same requests, and compares. See tests/README.md.

mod harness;
mod listeners;
mod more;
mod observability;
mod protocols;
mod resilience;
mod rewrites;
mod routing;
mod tls;
mod tracing;
mod upstream;
