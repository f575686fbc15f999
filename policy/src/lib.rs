//! The NetworkPolicy model: validated types, loading from manifests, label
//! selectors, and the spec oracle that answers flows straight from the
//! policy text.
//!
//! Entry points: [`load_paths`] (manifest files and directories) and
//! [`build`] (objects from the API server) give a [`Model`]; a watcher
//! that keeps objects converted one by one ([`convert`]) gets the same
//! model from [`assemble`]; [`evaluate`]
//! answers one flow; [`matrix`] answers every pod pair for a set of ports.
//!
//! Choices made where Kubernetes leaves room, in one place:
//! - A pod takes part when it has an address, whatever its phase (Pending
//!   pods run init containers that need the network; a manifest without
//!   `status.phase` counts too), except Succeeded and Failed (their address
//!   is released); `hostNetwork` pods are left out without error (they are
//!   the node).
//! - CIDRs with host bits set (`10.0.0.1/24`) are accepted and read as the
//!   network (`10.0.0.0/24`), as older API servers stored them unchanged.
//!   `except` entries must be strictly inside `cidr`, same family.
//! - Rules of a direction missing from the effective policyTypes are
//!   dropped from the model (Kubernetes ignores them).
//! - Only named container ports are kept on pods; a named policy port
//!   matches when any declaration of that name and protocol has the
//!   packet's port.
//! - A namespace that pods or policies use but no manifest declares exists
//!   with just the `kubernetes.io/metadata.name` label. Objects without a
//!   namespace are in `default`.
//! - The first of two objects with the same kind, namespace and name wins;
//!   so does the first of two running pods claiming one address.
//! - Services enter the model with their ClusterIPs, ports and selector;
//!   policies never name them. A connection to a ClusterIP is judged as
//!   client -> backend after kube-proxy's DNAT ([`Model::backends`]).
//!   Headless and ExternalName Services have no ClusterIP; a Service
//!   without (or with an empty) selector has no backends computed here.
//! - A policy annotated `palisade.dev/enforcement: audit` is audit-only: a
//!   direction isolated by audit policies alone lets through what they
//!   would deny, as a "would deny" verdict; a direction any enforced
//!   policy isolates is decided by the enforced policies alone. Any other
//!   value of the annotation is enforced, with a warning.
//! - What the API server accepted is enforced: a NetworkPolicy Palisade
//!   cannot understand (fails validation, or does not deserialize) stays
//!   in the model as [`Policy::unreadable`], isolating its pods (its
//!   namespace when its selector does not read) in its directions (both
//!   when they do not read) with nothing allowed, and is reported in
//!   [`Model::warnings`].

mod build;
mod cluster;
pub mod crd;
mod labels;
mod load;
mod matrix;
mod model;
mod names;
mod oracle;
mod query;
mod selector;

/// Per-object validation: what [`build`] does to each object before
/// [`assemble`] checks them together.
pub use build::check as convert;
pub use build::{
    assemble, assemble_cluster, build, warnings_of, ENFORCEMENT_ANNOTATION, NAMESPACE_NAME_LABEL,
};
pub use cluster::*;
pub use load::{load_paths, load_str};
pub use matrix::{
    matrix, matrix_cells, render_cells, render_legend, render_table, MatrixCell, MatrixEntry,
    ProbePort, MARKS,
};
pub use model::*;
pub use oracle::{
    cluster_rule_matches, evaluate, evaluate_direction, tier_decision, Ends, TierOutcome,
};
pub use query::{deciding, Deciding, Family};
