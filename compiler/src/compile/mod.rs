//! The compiler: model -> per-pod map contents of one node.
//!
//! [`Compiler`] keeps indexes of the cluster and the compiled state of the
//! node's pods, so that one change (a pod, a policy, a namespace) recompiles
//! only the local pods it can affect (a Service changes only the node's
//! ClusterIP set). [`compile`] is the one-shot form.

mod affected;
mod assemble;
mod cidr;
mod cluster;
mod groups;
mod groupset;
mod incremental;
mod peers;
mod pod;
mod ports;
mod prefix;
mod services;
mod tiers;

pub use cidr::{addr_prefix as cidr_addr_prefix, to_prefix as cidr_prefix};
pub use cluster::object_key;
pub use incremental::{Applied, Change, Compiler};
pub use ports::{range_prefixes, to_prefix as port_prefix};
pub use prefix::Prefix;

use crate::identity::IdentityAllocator;
use crate::types::CompiledNode;
use palisade_policy::Model;

/// Compiles `model` for the pods whose `node` is `node`. Identities come
/// from `alloc`: numbers of label sets still present stay as they were, the
/// others are freed.
pub fn compile(model: &Model, node: &str, alloc: &mut IdentityAllocator) -> CompiledNode {
    let compiler = Compiler::from_model(model, node, std::mem::take(alloc));
    let (out, back) = compiler.into_parts();
    *alloc = back;
    out
}
