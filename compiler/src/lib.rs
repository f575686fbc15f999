//! Compiles the policy model into the per-pod map contents of the datapath
//! (`docs/maps.md`), and the lookup model that answers flows from them.

mod types;

pub use types::*;
