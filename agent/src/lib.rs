//! The Palisade node agent and the `palisade` CLI.
//!
//! Data flows one way: a source (manifests or the Kubernetes API) gives
//! the model (`palisade_policy`), the compiler (`palisade_compiler`) turns it
//! into per-pod map contents, the writer (`datapath`) puts them in the kernel.

pub mod cli;
/// The kernel half's userspace side, a crate of its own so that the CNI
/// plugin uses it without the Kubernetes client.
pub use palisade_datapath as datapath;
pub mod monitor;
pub mod source;
