//! Namespace objects.

use super::meta::{checked_labels, checked_name};
use super::FieldResult;
use crate::model::Namespace;
use k8s_openapi::api::core::v1 as core;

/// The label the API server puts on every namespace (immutable, equal to
/// the name), so selectors can pick namespaces by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

impl Namespace {
    /// A namespace that objects live in but nobody declared: it exists in
    /// the cluster with only the label the API server always sets.
    pub fn undeclared(name: &str) -> Namespace {
        Namespace {
            name: name.to_string(),
            labels: [(NAMESPACE_NAME_LABEL.to_string(), name.to_string())].into(),
        }
    }
}

pub fn convert(ns: &core::Namespace) -> FieldResult<Namespace> {
    let (_, name) = checked_name(&ns.metadata, false)?;
    let mut labels = checked_labels(&ns.metadata)?;
    // The API server overwrites whatever a manifest says here.
    labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
    Ok(Namespace { name, labels })
}
