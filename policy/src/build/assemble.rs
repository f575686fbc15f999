//! The checks across objects, on objects already validated one by one
//! (see `check.rs`): duplicates, two running pods or two Services claiming
//! one address, namespaces nobody declared, and the model's order. Both
//! [`super::build`] and watchers that convert each object as it arrives
//! end here, so the two cannot judge a cluster differently.

use super::{FieldError, Sourced};
use crate::cluster::{ClusterPolicy, Node};
use crate::model::{InputError, Model, Namespace, Pod, Policy, Service};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// Remembers where each accepted object came from, to reject duplicates
/// with a message pointing at the first one. Keyed by kind and
/// `namespace/name` (`name` for Namespaces).
#[derive(Default)]
struct Seen(HashMap<(&'static str, String), Option<String>>);

impl Seen {
    /// `Err` with a message when `key` of `kind` was accepted before.
    fn claim(
        &mut self,
        kind: &'static str,
        key: String,
        source: &Option<String>,
    ) -> Result<(), String> {
        let key = (kind, key);
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

/// A per-object error, with the file it came from when there is one.
fn sourced(errors: &mut Vec<InputError>, source: &Option<String>, mut e: InputError) {
    if source.is_some() {
        e.source = source.clone();
    }
    errors.push(e)
}

/// The warnings [`assemble`] reports for a policy it keeps (none for most).
pub fn warnings_of(p: &Policy) -> Vec<InputError> {
    let mut out = Vec::new();
    let key = namespaced(&p.namespace, &p.name);
    policy_warnings(&mut out, &None, &key, p);
    out
}

/// The warnings of a policy the model keeps: not understood (with what
/// it does instead), and problems read past.
fn policy_warnings(out: &mut Vec<InputError>, source: &Option<String>, key: &str, p: &Policy) {
    let unreadable = p.unreadable.iter().map(|issue| {
        let message = format!(
            "{}; policy not understood: {}",
            issue.message,
            p.unreadable_consequence()
        );
        FieldError::new(&issue.field, message)
    });
    let read_past = p
        .warnings
        .iter()
        .map(|w| FieldError::new(&w.field, &w.message));
    for e in unreadable.chain(read_past) {
        report(out, source, format!("NetworkPolicy {key}"), e);
    }
}

/// `namespace/name`, without the formatting machinery: it is built for
/// every pod of the cluster every round.
fn namespaced(namespace: &str, name: &str) -> String {
    let mut key = String::with_capacity(namespace.len() + 1 + name.len());
    key.push_str(namespace);
    key.push('/');
    key.push_str(name);
    key
}

/// Adds to `out` the namespaces of `names` missing from `declared`,
/// looking each run of one namespace up once.
fn undeclared_in<'a>(
    names: impl Iterator<Item = &'a str>,
    declared: &BTreeMap<String, Namespace>,
    out: &mut BTreeSet<&'a str>,
) {
    let mut last = None;
    for name in names {
        if last != Some(name) && !declared.contains_key(name) {
            out.insert(name);
        }
        last = Some(name);
    }
}

/// Builds the model from objects each converted on its own (by
/// [`crate::convert`]), in the order given: the first of two objects with
/// one name, or of two claiming one address, wins. Invalid objects are
/// reported in `Model::errors`, in that order too.
pub fn assemble(
    namespaces: impl IntoIterator<Item = Result<Namespace, InputError>>,
    pods: impl IntoIterator<Item = Result<Option<Pod>, InputError>>,
    policies: impl IntoIterator<Item = Result<Policy, InputError>>,
    services: impl IntoIterator<Item = Result<Service, InputError>>,
) -> Model {
    fn unsourced<T>(object: T) -> Sourced<T> {
        Sourced {
            source: None,
            object,
        }
    }
    assemble_sourced(
        namespaces.into_iter().map(unsourced),
        pods.into_iter().map(unsourced),
        policies.into_iter().map(unsourced),
        services.into_iter().map(unsourced),
        Vec::new(),
    )
}

pub(crate) fn assemble_sourced(
    namespaces: impl IntoIterator<Item = Sourced<Result<Namespace, InputError>>>,
    pods: impl IntoIterator<Item = Sourced<Result<Option<Pod>, InputError>>>,
    policies: impl IntoIterator<Item = Sourced<Result<Policy, InputError>>>,
    services: impl IntoIterator<Item = Sourced<Result<Service, InputError>>>,
    errors: Vec<InputError>,
) -> Model {
    let mut model = Model {
        errors,
        ..Model::default()
    };

    let mut seen = Seen::default();
    for Sourced { source, object } in namespaces {
        let ns = match object {
            Ok(ns) => ns,
            Err(e) => {
                sourced(&mut model.errors, &source, e);
                continue;
            }
        };
        if let Err(m) = seen.claim("Namespace", ns.name.clone(), &source) {
            let what = format!("Namespace {}", ns.name);
            let e = FieldError::new("metadata.name", m);
            report(&mut model.errors, &source, what, e);
            continue;
        }
        model.namespaces.insert(ns.name.clone(), ns);
    }

    // Which pod owns each address (its index in `model.pods`): two running
    // pods can never share one, and the datapath keys identities by address.
    let pods = pods.into_iter();
    let expected = pods.size_hint().0;
    let mut owners: HashMap<IpAddr, usize> = HashMap::with_capacity(expected);
    seen.0.reserve(expected);
    model.pods.reserve(expected);
    for Sourced { source, object } in pods {
        let pod = match object {
            Ok(Some(pod)) => pod,
            Ok(None) => continue, // not taking part in traffic
            Err(e) => {
                sourced(&mut model.errors, &source, e);
                continue;
            }
        };
        let what = || format!("Pod {}/{}", pod.namespace, pod.name);
        if let Err(m) = seen.claim("Pod", namespaced(&pod.namespace, &pod.name), &source) {
            let e = FieldError::new("metadata.name", m);
            report(&mut model.errors, &source, what(), e);
            continue;
        }
        if let Some((ip, &owner)) = pod
            .ips
            .iter()
            .find_map(|ip| owners.get(ip).map(|o| (ip, o)))
        {
            let owner = &model.pods[owner];
            let e = FieldError::new(
                "status.podIPs",
                format!(
                    "address {ip} is already the address of running pod {}/{}",
                    owner.namespace, owner.name
                ),
            );
            report(&mut model.errors, &source, what(), e);
            continue;
        }
        for ip in &pod.ips {
            owners.insert(*ip, model.pods.len());
        }
        model.pods.push(pod);
    }

    for Sourced { source, object } in policies {
        let p = match object {
            Ok(p) => p,
            Err(e) => {
                sourced(&mut model.errors, &source, e);
                continue;
            }
        };
        let key = namespaced(&p.namespace, &p.name);
        if let Err(m) = seen.claim("NetworkPolicy", key.clone(), &source) {
            let e = FieldError::new("metadata.name", m);
            report(
                &mut model.errors,
                &source,
                format!("NetworkPolicy {key}"),
                e,
            );
            continue;
        }
        policy_warnings(&mut model.warnings, &source, &key, &p);
        model.policies.push(p);
    }

    // Which Service owns each ClusterIP: kube-proxy could send a packet
    // to only one of two Services sharing one.
    let mut cluster_ips: HashMap<IpAddr, String> = HashMap::new();
    for Sourced { source, object } in services {
        let svc = match object {
            Ok(s) => s,
            Err(e) => {
                sourced(&mut model.errors, &source, e);
                continue;
            }
        };
        let key = namespaced(&svc.namespace, &svc.name);
        if let Err(m) = seen.claim("Service", key.clone(), &source) {
            let e = FieldError::new("metadata.name", m);
            report(&mut model.errors, &source, format!("Service {key}"), e);
            continue;
        }
        if let Some((ip, owner)) = svc
            .cluster_ips
            .iter()
            .find_map(|ip| cluster_ips.get(ip).map(|o| (ip, o)))
        {
            let e = FieldError::new(
                "spec.clusterIPs",
                format!("address {ip} is already the ClusterIP of Service {owner}"),
            );
            report(&mut model.errors, &source, format!("Service {key}"), e);
            continue;
        }
        for ip in &svc.cluster_ips {
            cluster_ips.insert(*ip, key.clone());
        }
        model.services.push(svc);
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
    // A namespace that pods, policies or Services live in exists in the
    // cluster even when the manifests do not declare it; it then carries
    // only the label the API server always sets. (After sorting: objects of
    // one namespace are then adjacent, and each namespace is looked up once
    // rather than once per pod.)
    let mut undeclared: BTreeSet<&str> = BTreeSet::new();
    let declared = &model.namespaces;
    let pods = model.pods.iter().map(|p| p.namespace.as_str());
    undeclared_in(pods, declared, &mut undeclared);
    let policies = model.policies.iter().map(|p| p.namespace.as_str());
    undeclared_in(policies, declared, &mut undeclared);
    let services = model.services.iter().map(|s| s.namespace.as_str());
    undeclared_in(services, declared, &mut undeclared);
    let undeclared: Vec<String> = undeclared.into_iter().map(str::to_string).collect();
    for name in undeclared {
        let ns = Namespace::undeclared(&name);
        model.namespaces.insert(name, ns);
    }
    model
}

/// Adds ClusterNetworkPolicies and Nodes, each converted on its own (by
/// [`crate::convert`]), to a model [`assemble`] built: the first of two
/// objects with one name wins, the policies end up in evaluation order
/// ([`ClusterPolicy::order_key`]) and the nodes by name. A policy's
/// fail-closed readings are reported in `Model::warnings`.
pub fn assemble_cluster(
    model: &mut Model,
    cluster_policies: impl IntoIterator<Item = Result<ClusterPolicy, InputError>>,
    nodes: impl IntoIterator<Item = Result<Node, InputError>>,
) {
    fn unsourced<T>(object: T) -> Sourced<T> {
        Sourced {
            source: None,
            object,
        }
    }
    cluster_sourced(
        model,
        cluster_policies.into_iter().map(unsourced),
        nodes.into_iter().map(unsourced),
    )
}

pub(crate) fn cluster_sourced(
    model: &mut Model,
    cluster_policies: impl IntoIterator<Item = Sourced<Result<ClusterPolicy, InputError>>>,
    nodes: impl IntoIterator<Item = Sourced<Result<Node, InputError>>>,
) {
    let mut seen = Seen::default();
    for Sourced { source, object } in cluster_policies {
        let p = match object {
            Ok(p) => p,
            Err(e) => {
                sourced(&mut model.errors, &source, e);
                continue;
            }
        };
        let what = format!("ClusterNetworkPolicy {}", p.name);
        if let Err(m) = seen.claim("ClusterNetworkPolicy", p.name.clone(), &source) {
            let e = FieldError::new("metadata.name", m);
            report(&mut model.errors, &source, what, e);
            continue;
        }
        for w in &p.warnings {
            let e = FieldError::new(&w.field, &w.message);
            report(&mut model.warnings, &source, what.clone(), e);
        }
        model.cluster_policies.push(p);
    }
    for Sourced { source, object } in nodes {
        let node = match object {
            Ok(n) => n,
            Err(e) => {
                sourced(&mut model.errors, &source, e);
                continue;
            }
        };
        if let Err(m) = seen.claim("Node", node.name.clone(), &source) {
            let e = FieldError::new("metadata.name", m);
            report(&mut model.errors, &source, format!("Node {}", node.name), e);
            continue;
        }
        model.nodes.push(node);
    }
    model
        .cluster_policies
        .sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    model.nodes.sort_by(|a, b| a.name.cmp(&b.name));
}

#[cfg(test)]
mod tests {
    use crate::{assemble, build, convert};
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::api::networking::v1 as net;
    use serde_json::json;

    fn pod(ns: &str, name: &str, ip: &str) -> core::Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {"containers": []},
            "status": {"phase": "Running", "podIP": ip}
        }))
        .unwrap()
    }

    fn service(name: &str, ip: &str) -> core::Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}
        }))
        .unwrap()
    }

    fn policy(name: &str, cidr: &str) -> net::NetworkPolicy {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}]}
        }))
        .unwrap()
    }

    /// Objects of every kind, with errors of one object and across objects.
    fn cluster() -> (
        Vec<core::Namespace>,
        Vec<core::Pod>,
        Vec<net::NetworkPolicy>,
        Vec<core::Service>,
    ) {
        let ns = |name: &str| -> core::Namespace {
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {"t": "a"}}}))
                .unwrap()
        };
        let mut pending = pod("shop", "pending", "10.0.0.9");
        pending.status.as_mut().unwrap().phase = Some("Pending".into());
        // Shares a's address: a finished pod has released it.
        let mut done = pod("shop", "done", "10.0.0.1");
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        (
            vec![ns("shop"), ns("Bad_Name"), ns("shop")],
            vec![
                pod("shop", "a", "10.0.0.1"),
                pod("shop", "b", "10.0.0.1"), // a's address
                pod("shop", "c", "not-an-ip"),
                pod("other", "d", "10.0.0.4"), // undeclared namespace
                pending,
                done,
            ],
            vec![policy("p", "10.0.0.0/8"), policy("q", "10.0.0.0/99")],
            vec![
                service("web", "10.96.0.1"),
                service("api", "10.96.0.1"), // web's ClusterIP
                service("db", "None"),
            ],
        )
    }

    #[test]
    fn objects_converted_one_by_one_assemble_into_the_model_build_gives() {
        let (namespaces, pods, policies, services) = cluster();
        let built = build(
            namespaces.clone(),
            pods.clone(),
            policies.clone(),
            services.clone(),
        );
        let assembled = assemble(
            namespaces.iter().map(convert::namespace),
            pods.iter().map(convert::pod),
            policies.iter().map(convert::policy),
            services.iter().map(convert::service),
        );
        assert_eq!(assembled.namespaces, built.namespaces);
        assert_eq!(assembled.pods, built.pods);
        assert_eq!(assembled.policies, built.policies);
        assert_eq!(assembled.services, built.services);
        assert_eq!(assembled.errors, built.errors);

        // Every kind of check ran: per object and across objects.
        let fields: Vec<(&str, &str)> = built
            .errors
            .iter()
            .map(|e| (e.object.as_str(), e.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("Namespace Bad_Name", "metadata.name"),
                ("Namespace shop", "metadata.name"),
                ("Pod shop/b", "status.podIPs"),
                ("Pod shop/c", "status.podIP"),
                ("Service shop/api", "spec.clusterIPs"),
            ]
        );
        // A policy not understood is kept (isolating with nothing
        // allowed) and reported as a warning, the same either way.
        assert_eq!(assembled.warnings, built.warnings);
        assert_eq!(built.warnings.len(), 1);
        assert_eq!(built.warnings[0].object, "NetworkPolicy shop/q");
        assert_eq!(
            built.warnings[0].field,
            "spec.ingress[0].from[0].ipBlock.cidr"
        );
        assert_eq!(
            built
                .pods
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["d", "a", "pending"]
        );
        assert!(built.namespaces.contains_key("other"));
        assert_eq!(built.services.len(), 2);
    }
}
