//! Validation of Kubernetes objects into the model.
//!
//! Each object is converted on its own (`check.rs`); the first problem
//! found becomes an `InputError` naming the object and field, and that
//! object is skipped while everything else goes on. Checks across objects
//! (duplicates, two pods claiming one IP, namespaces nobody declared)
//! happen afterwards, in `assemble.rs`.

mod assemble;
mod broken;
pub mod check;
mod cluster;
mod meta;
mod namespace;
mod node;
mod pod;
mod policy;
mod selector;
mod service;

use crate::cluster::ClusterPolicy;
use crate::model::{InputError, Model, Policy};
use assemble::{assemble_sourced, cluster_sourced};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as net;

pub use assemble::{assemble, assemble_cluster, warnings_of};
pub use namespace::NAMESPACE_NAME_LABEL;
pub use policy::ENFORCEMENT_ANNOTATION;

/// A problem in one field of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub(crate) type FieldResult<T> = Result<T, FieldError>;

impl From<FieldError> for crate::model::FieldIssue {
    fn from(e: FieldError) -> Self {
        crate::model::FieldIssue {
            field: e.field,
            message: e.message,
        }
    }
}

/// An object and the file it came from (none when it came from the API).
pub(crate) struct Sourced<T> {
    pub source: Option<String>,
    pub object: T,
}

/// Builds the model from objects as the API server returns them (the
/// watcher's entry point). Invalid objects are reported in `Model::errors`.
pub fn build(
    namespaces: Vec<core::Namespace>,
    pods: Vec<core::Pod>,
    policies: Vec<net::NetworkPolicy>,
    services: Vec<core::Service>,
) -> Model {
    fn unsourced<T>(v: Vec<T>) -> Vec<Sourced<T>> {
        v.into_iter()
            .map(|object| Sourced {
                source: None,
                object,
            })
            .collect()
    }
    let policies = policies.iter().map(check::policy).collect();
    build_sourced(
        unsourced(namespaces),
        unsourced(pods),
        unsourced(policies),
        unsourced(services),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    )
}

/// `policies` come converted: a manifest's NetworkPolicy that does not
/// deserialize is still a policy ([`check::policy_json`]).
pub(crate) fn build_sourced(
    namespaces: Vec<Sourced<core::Namespace>>,
    pods: Vec<Sourced<core::Pod>>,
    policies: Vec<Sourced<Result<Policy, InputError>>>,
    services: Vec<Sourced<core::Service>>,
    cluster_policies: Vec<Sourced<Result<ClusterPolicy, InputError>>>,
    nodes: Vec<Sourced<core::Node>>,
    errors: Vec<InputError>,
) -> Model {
    fn each<'a, K, T>(
        objects: &'a [Sourced<K>],
        check: fn(&K) -> Result<T, InputError>,
    ) -> impl Iterator<Item = Sourced<Result<T, InputError>>> + 'a
    where
        T: 'a,
    {
        objects.iter().map(move |o| Sourced {
            source: o.source.clone(),
            object: check(&o.object),
        })
    }
    let mut model = assemble_sourced(
        each(&namespaces, check::namespace),
        each(&pods, check::pod),
        policies,
        each(&services, check::service),
        errors,
    );
    cluster_sourced(&mut model, cluster_policies, each(&nodes, check::node));
    model
}

/// A `protocol` field: TCP when absent; otherwise exactly `TCP`, `UDP` or
/// `SCTP` (the API server is case-sensitive here too).
pub(crate) fn parse_protocol(value: Option<&str>) -> Result<crate::model::Protocol, String> {
    use crate::model::Protocol;
    match value {
        None | Some("TCP") => Ok(Protocol::Tcp),
        Some("UDP") => Ok(Protocol::Udp),
        Some("SCTP") => Ok(Protocol::Sctp),
        Some(other) => Err(format!(
            "unsupported protocol {other:?}: must be TCP, UDP or SCTP"
        )),
    }
}
