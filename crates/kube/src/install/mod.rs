//! `weft install` and `weft manifest generate`: what a cluster needs for the mesh, from an
//! IstioOperator, a profile and `--set` paths.

pub mod apply;
pub mod manifest;
pub mod operator;
pub mod schema;
