//! Compiles the policy model into the per-pod map contents of the datapath
//! (`docs/maps.md`), and the lookup model that answers flows from them.

mod compile;
pub mod gen;
pub mod identity;
pub mod lookup;
pub mod render;
mod types;

pub use compile::{compile, object_key, Applied, Change, Compiler};
pub use identity::{IdentityAllocator, IdentityKey};
pub use lookup::{check, lookup, CheckVerdict, LookupVerdict};
pub use types::*;

/// Prefix helpers, for tests and tools that reason about flattened entries.
pub mod prefixes {
    pub use crate::compile::{cidr_addr_prefix, cidr_prefix, port_prefix, range_prefixes, Prefix};
}
