//! End-to-end tests live in `tests/`; this library only hosts shared helpers.
pub mod apiserver;
pub mod classifier;
pub mod kernel;
pub mod lab;
