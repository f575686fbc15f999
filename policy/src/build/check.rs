//! Each kind's validation on its own, as an `InputError` naming the object
//! and field: the part of [`super::build`] that depends on one object only,
//! so a watcher can run it once per event instead of once per round.

use super::cluster::BrokenRules;
use super::meta::object_name;
use super::{broken, cluster, namespace, node, pod, policy, service, FieldError};
use crate::cluster::{Action, ClusterPolicy, Node};
use crate::crd::ClusterNetworkPolicy;
use crate::model::{FieldIssue, InputError, Namespace, Pod, Policy, Service};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

pub use broken::{deserialize, rough_meta};

fn error(kind: &str, meta: &ObjectMeta, namespaced: bool, e: FieldError) -> InputError {
    InputError {
        source: None,
        object: object_name(kind, meta, namespaced),
        field: e.field,
        message: e.message,
    }
}

/// A Namespace as the model holds it.
pub fn namespace(ns: &core::Namespace) -> Result<Namespace, InputError> {
    namespace::convert(ns).map_err(|e| error("Namespace", &ns.metadata, false, e))
}

/// A Pod as the model holds it; `Ok(None)` for a pod that takes no part in
/// pod networking (not running, no address yet, host networking).
pub fn pod(p: &core::Pod) -> Result<Option<Pod>, InputError> {
    pod::convert(p).map_err(|e| error("Pod", &p.metadata, true, e))
}

/// A NetworkPolicy as the model holds it: unreadable (isolating with
/// nothing allowed) when it cannot be understood; an error only when its
/// name or namespace cannot be read.
pub fn policy(np: &net::NetworkPolicy) -> Result<Policy, InputError> {
    policy::convert(np).map_err(|e| error("NetworkPolicy", &np.metadata, true, e))
}

/// A NetworkPolicy from its JSON, as the API server or a manifest holds
/// it: as [`policy`] when it has the shape of its type, else unreadable,
/// with what could be read of its pod selector and directions.
pub fn policy_json(value: &Value) -> Result<Policy, InputError> {
    match deserialize::<_, net::NetworkPolicy>(value) {
        Ok(np) => policy(&np),
        Err(issue) => unreadable_policy(value, issue),
    }
}

/// The NetworkPolicy `value`, known not to deserialize (`issue` says
/// where): unreadable, with what could be read of its pod selector and
/// directions; an error only when its name or namespace cannot be read.
pub fn unreadable_policy(value: &Value, issue: FieldIssue) -> Result<Policy, InputError> {
    broken::policy(value, issue)
}

/// The error for an object of `kind` whose JSON does not have the shape of
/// its type (`issue` says where); `meta` is what [`rough_meta`] read of it.
pub fn undeserializable(kind: &str, meta: &ObjectMeta, issue: FieldIssue) -> InputError {
    let namespaced = !matches!(kind, "Namespace" | "Node" | "ClusterNetworkPolicy");
    InputError {
        source: None,
        object: object_name(kind, meta, namespaced),
        field: issue.field,
        message: issue.message,
    }
}

/// A Service as the model holds it.
pub fn service(svc: &core::Service) -> Result<Service, InputError> {
    service::convert(svc).map_err(|e| error("Service", &svc.metadata, true, e))
}

/// A ClusterNetworkPolicy as the model holds it, its rules read fail
/// closed where they cannot be understood (see `build/cluster.rs`); an
/// error when its name, tier, priority or subject cannot be read.
pub fn cluster_policy(cnp: &ClusterNetworkPolicy) -> Result<ClusterPolicy, InputError> {
    cluster::convert(cnp, &BrokenRules::new())
        .map_err(|e| error("ClusterNetworkPolicy", &cnp.metadata, false, e))
}

/// A ClusterNetworkPolicy from its JSON: as [`cluster_policy`] when it has
/// the shape of its type; a rule that does not (an unknown action, a
/// string where a list belongs) is read fail closed on its own, and
/// anything else that does not is an error naming the field.
pub fn cluster_policy_json(value: &Value) -> Result<ClusterPolicy, InputError> {
    let mut value = std::borrow::Cow::Borrowed(value);
    let mut broken = BrokenRules::new();
    // Each pass sets one more rule aside: bounded by the number of rules.
    loop {
        let issue = match deserialize::<_, ClusterNetworkPolicy>(value.as_ref()) {
            Ok(cnp) => {
                return cluster::convert(&cnp, &broken)
                    .map_err(|e| error("ClusterNetworkPolicy", &cnp.metadata, false, e))
            }
            Err(issue) => issue,
        };
        let failed = rule_of(&issue.field).filter(|k| !broken.contains_key(k));
        let Some((dir, i)) = failed else {
            return Err(undeserializable(
                "ClusterNetworkPolicy",
                &rough_meta(&value),
                issue,
            ));
        };
        let rule = &mut value.to_mut()["spec"][dir][i];
        let action = match rule.get("action").and_then(Value::as_str) {
            Some("Accept") => Some(Action::Accept),
            Some("Deny") => Some(Action::Deny),
            Some("Pass") => Some(Action::Pass),
            _ => None,
        };
        let peers = if dir == "ingress" { "from" } else { "to" };
        // A stand-in that deserializes; `broken` decides what it means.
        *rule = serde_json::json!({"action": "Deny", peers: []});
        broken.insert((dir, i), (action, issue));
    }
}

/// The rule a field path is in: `spec.ingress[3].from[0]` is (ingress, 3).
fn rule_of(field: &str) -> Option<(&'static str, usize)> {
    let (dir, rest) = if let Some(r) = field.strip_prefix("spec.ingress[") {
        ("ingress", r)
    } else {
        ("egress", field.strip_prefix("spec.egress[")?)
    };
    let (index, _) = rest.split_once(']')?;
    Some((dir, index.parse().ok()?))
}

/// A Node as the model holds it: name, labels, addresses.
pub fn node(n: &core::Node) -> Result<Node, InputError> {
    node::convert(n).map_err(|e| error("Node", &n.metadata, false, e))
}
