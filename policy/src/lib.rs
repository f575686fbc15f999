//! The NetworkPolicy model: validated types, loading from manifests, label
//! selectors, and the spec oracle that answers flows straight from the
//! policy text.

mod model;

pub use model::*;
