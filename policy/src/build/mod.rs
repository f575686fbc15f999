//! Validation of Kubernetes objects into the model.
//!
//! Each object is converted on its own; the first problem found becomes an
//! `InputError` naming the object and field, and that object is skipped
//! while everything else goes on. Checks across objects (duplicates, two
//! pods claiming one IP, namespaces nobody declared) happen here.

mod meta;
mod namespace;
mod pod;
mod policy;
mod selector;
mod service;

use crate::model::{InputError, Labels, Model, Namespace};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as net;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

pub(crate) use meta::object_name;
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
    build_sourced(
        unsourced(namespaces),
        unsourced(pods),
        unsourced(policies),
        unsourced(services),
        Vec::new(),
    )
}

/// Remembers where each accepted object came from, to reject duplicates
/// with a message pointing at the first one.
#[derive(Default)]
struct Seen(HashMap<String, Option<String>>);

impl Seen {
    /// `Err` with a message when `key` was accepted before.
    fn claim(&mut self, key: String, source: &Option<String>) -> Result<(), String> {
        match self.0.get(&key) {
            Some(first) => Err(match first {
                Some(f) => format!("duplicate object: already defined in {f}"),
                None => "duplicate object: already defined".to_string(),
            }),
            None => {
                self.0.insert(key, source.clone());
                Ok(())
            }
        }
    }
}

fn report(errors: &mut Vec<InputError>, source: &Option<String>, object: String, e: FieldError) {
    errors.push(InputError {
        source: source.clone(),
        object,
        field: e.field,
        message: e.message,
    })
}

pub(crate) fn build_sourced(
    namespaces: Vec<Sourced<core::Namespace>>,
    pods: Vec<Sourced<core::Pod>>,
    policies: Vec<Sourced<net::NetworkPolicy>>,
    services: Vec<Sourced<core::Service>>,
    errors: Vec<InputError>,
) -> Model {
    let mut model = Model {
        errors,
        ..Model::default()
    };

    let mut seen = Seen::default();
    for Sourced { source, object } in &namespaces {
        let what = object_name("Namespace", &object.metadata, false);
        let ns = namespace::convert(object).and_then(|ns| {
            seen.claim(format!("Namespace {}", ns.name), source)
                .map(|_| ns)
                .map_err(|m| FieldError::new("metadata.name", m))
        });
        match ns {
            Ok(ns) => {
                model.namespaces.insert(ns.name.clone(), ns);
            }
            Err(e) => report(&mut model.errors, source, what, e),
        }
    }

    // Which pod owns each address: two running pods can never share one,
    // and the datapath keys identities by address.
    let mut owners: HashMap<IpAddr, String> = HashMap::new();
    for Sourced { source, object } in &pods {
        let what = object_name("Pod", &object.metadata, true);
        let pod = match pod::convert(object) {
            Ok(Some(pod)) => pod,
            Ok(None) => continue, // not taking part in traffic
            Err(e) => {
                report(&mut model.errors, source, what, e);
                continue;
            }
        };
        let key = format!("{}/{}", pod.namespace, pod.name);
        if let Err(m) = seen.claim(format!("Pod {key}"), source) {
            report(
                &mut model.errors,
                source,
                what,
                FieldError::new("metadata.name", m),
            );
            continue;
        }
        if let Some((ip, owner)) = pod
            .ips
            .iter()
            .find_map(|ip| owners.get(ip).map(|o| (ip, o)))
        {
            let e = FieldError::new(
                "status.podIPs",
                format!("address {ip} is already the address of running pod {owner}"),
            );
            report(&mut model.errors, source, what, e);
            continue;
        }
        for ip in &pod.ips {
            owners.insert(*ip, key.clone());
        }
        model.pods.push(pod);
    }

    for Sourced { source, object } in &policies {
        let what = object_name("NetworkPolicy", &object.metadata, true);
        let policy = policy::convert(object).and_then(|p| {
            seen.claim(format!("NetworkPolicy {}/{}", p.namespace, p.name), source)
                .map(|_| p)
                .map_err(|m| FieldError::new("metadata.name", m))
        });
        match policy {
            Ok(p) => model.policies.push(p),
            Err(e) => report(&mut model.errors, source, what, e),
        }
    }

    // Which Service owns each ClusterIP: kube-proxy could send a packet
    // to only one of two Services sharing one.
    let mut cluster_ips: HashMap<IpAddr, String> = HashMap::new();
    for Sourced { source, object } in &services {
        let what = object_name("Service", &object.metadata, true);
        let svc = service::convert(object).and_then(|s| {
            seen.claim(format!("Service {}/{}", s.namespace, s.name), source)
                .map(|_| s)
                .map_err(|m| FieldError::new("metadata.name", m))
        });
        let svc = match svc {
            Ok(s) => s,
            Err(e) => {
                report(&mut model.errors, source, what, e);
                continue;
            }
        };
        if let Some((ip, owner)) = svc
            .cluster_ips
            .iter()
            .find_map(|ip| cluster_ips.get(ip).map(|o| (ip, o)))
        {
            let e = FieldError::new(
                "spec.clusterIPs",
                format!("address {ip} is already the ClusterIP of Service {owner}"),
            );
            report(&mut model.errors, source, what, e);
            continue;
        }
        let key = format!("{}/{}", svc.namespace, svc.name);
        for ip in &svc.cluster_ips {
            cluster_ips.insert(*ip, key.clone());
        }
        model.services.push(svc);
    }

    // A namespace that pods, policies or Services live in exists in the cluster even
    // when the manifests do not declare it; it then carries only the label
    // the API server always sets.
    let referenced: BTreeSet<String> = model
        .pods
        .iter()
        .map(|p| p.namespace.clone())
        .chain(model.policies.iter().map(|p| p.namespace.clone()))
        .chain(model.services.iter().map(|s| s.namespace.clone()))
        .collect();
    for name in referenced {
        model
            .namespaces
            .entry(name.clone())
            .or_insert_with(|| Namespace {
                labels: Labels::from([(NAMESPACE_NAME_LABEL.to_string(), name.clone())]),
                name,
            });
    }

    model
        .pods
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    model
        .policies
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    model
        .services
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
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
