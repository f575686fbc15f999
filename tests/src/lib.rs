//! End-to-end tests live in `tests/`; this library only hosts shared helpers.
pub mod attack;
pub mod classifier;
pub mod cluster;
pub mod cnp_conformance;
pub mod echo_flow;
pub mod fault;
pub mod fixtures;
pub mod flood;
pub mod kernel;
pub mod kubectl;
pub mod lab;
pub mod legacy;
pub mod memcg;
pub mod rbac;
pub mod revocation;
pub mod services;
pub mod sweep;
