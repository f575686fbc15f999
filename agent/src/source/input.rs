//! The "last good object" rule that keeps bad input (a manifest or an API
//! object that fails validation) from unprogramming what is enforced.
//!
//! NetworkPolicies are not under it: one that cannot be understood is in
//! the model as it is now (isolating its pods with nothing allowed), so
//! what is enforced never depends on what this agent happened to see
//! before (a restarted agent enforces the same).

use palisade_policy::{ClusterPolicy, InputError, Model, Node, Pod, Service};
use std::collections::BTreeSet;

/// The object an error is about, when it names one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorObject {
    Namespace(String),
    Pod(String, String),
    Policy(String, String),
    Service(String, String),
    ClusterPolicy(String),
    Node(String),
}

/// Parses `InputError::object` (`Kind namespace/name` or `Namespace name`).
pub fn error_object(e: &InputError) -> Option<ErrorObject> {
    let (kind, rest) = e.object.split_once(' ')?;
    let namespaced = |rest: &str| {
        let (ns, name) = rest.split_once('/')?;
        Some((ns.to_string(), name.to_string()))
    };
    match kind {
        "Namespace" => Some(ErrorObject::Namespace(rest.to_string())),
        "Pod" => namespaced(rest).map(|(ns, n)| ErrorObject::Pod(ns, n)),
        "NetworkPolicy" => namespaced(rest).map(|(ns, n)| ErrorObject::Policy(ns, n)),
        "Service" => namespaced(rest).map(|(ns, n)| ErrorObject::Service(ns, n)),
        "ClusterNetworkPolicy" => Some(ErrorObject::ClusterPolicy(rest.to_string())),
        "Node" => Some(ErrorObject::Node(rest.to_string())),
        _ => None,
    }
}

/// Whether an error may stand for objects that vanished from the model: an
/// unreadable file or an unparsable document might have held any object.
/// A document that parsed but is not an object (or a list without items)
/// cannot hold one, so it does not hold the enforced state back.
fn may_hide_objects(e: &InputError) -> bool {
    error_object(e).is_none() && e.message != "not an object" && e.field != "items"
}

/// What to do with a freshly loaded model.
#[derive(Debug)]
pub enum Verdict {
    /// Program it (invalid objects were replaced by their last good version).
    Use(Model),
    /// Some input could not be attributed to an object (unreadable file or
    /// document): which objects vanished is unknown, so the enforced state
    /// must be kept until the input is fixed. The model is what could be read.
    Hold(Vec<InputError>, Model),
}

/// Logs each warning of the input (a policy not understood, an unknown
/// enforcement value) once while it lasts, not every round; one that goes
/// away and comes back is logged again.
#[derive(Default)]
pub struct WarningLog(BTreeSet<String>);

impl WarningLog {
    pub fn log(&mut self, warnings: &[InputError]) {
        let now: BTreeSet<String> = warnings.iter().map(ToString::to_string).collect();
        for w in now.difference(&self.0) {
            tracing::warn!(warning = %w, "input read with a warning");
        }
        self.0 = now;
    }
}

/// Applies the last-good rule: an object that fails validation keeps its
/// previous valid version (`prev`), so fixing a typo never opens a hole.
pub fn reconcile(mut model: Model, prev: Option<&Model>) -> Verdict {
    let unattributed: Vec<InputError> = model
        .errors
        .iter()
        .filter(|e| may_hide_objects(e))
        .cloned()
        .collect();
    if !unattributed.is_empty() {
        return Verdict::Hold(unattributed, model);
    }
    let Some(prev) = prev else {
        return Verdict::Use(model);
    };
    let errors = model.errors.clone();
    for e in &errors {
        match error_object(e) {
            Some(ErrorObject::Namespace(name)) => {
                if let (std::collections::btree_map::Entry::Vacant(slot), Some(ns)) = (
                    model.namespaces.entry(name.clone()),
                    prev.namespaces.get(&name),
                ) {
                    slot.insert(ns.clone());
                }
            }
            Some(ErrorObject::Pod(ns, name)) => {
                let is = |p: &Pod| p.namespace == ns && p.name == name;
                keep_last(&mut model.pods, &prev.pods, is);
            }
            // A policy error is a name the API server would not accept or
            // a duplicate: never an earlier version of a listed policy.
            Some(ErrorObject::Policy(..)) => {}
            Some(ErrorObject::Service(ns, name)) => {
                let is = |s: &Service| s.namespace == ns && s.name == name;
                keep_last(&mut model.services, &prev.services, is);
            }
            // Dropping an Admin Deny would open what it closes.
            Some(ErrorObject::ClusterPolicy(name)) => {
                let is = |p: &ClusterPolicy| p.name == name;
                let back = keep_last(&mut model.cluster_policies, &prev.cluster_policies, is);
                if back {
                    model
                        .cluster_policies
                        .sort_by(|a, b| a.order_key().cmp(&b.order_key()));
                }
            }
            Some(ErrorObject::Node(name)) => {
                let back = keep_last(&mut model.nodes, &prev.nodes, |n: &Node| n.name == name);
                if back {
                    model.nodes.sort_by(|a, b| a.name.cmp(&b.name));
                }
            }
            None => {}
        }
    }
    Verdict::Use(model)
}

/// Puts back the previous version of the object `is` picks when `now`
/// lacks it; true when it did.
fn keep_last<T: Clone>(now: &mut Vec<T>, prev: &[T], is: impl Fn(&T) -> bool) -> bool {
    if now.iter().any(&is) {
        return false;
    }
    let Some(last) = prev.iter().find(|o| is(o)) else {
        return false;
    };
    now.push(last.clone());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::{Policy, Selector};

    fn err(object: &str) -> InputError {
        InputError {
            source: Some("x.yaml".into()),
            object: object.into(),
            field: "spec".into(),
            message: "bad".into(),
        }
    }

    fn policy(name: &str) -> Policy {
        Policy {
            namespace: "ns".into(),
            name: name.into(),
            enforcement: Default::default(),
            pod_selector: Selector::default(),
            isolates_ingress: true,
            isolates_egress: false,
            ingress: vec![],
            egress: vec![],
            unreadable: None,
            warnings: vec![],
        }
    }

    #[test]
    fn error_objects_are_parsed() {
        assert_eq!(
            error_object(&err("NetworkPolicy ns/p")),
            Some(ErrorObject::Policy("ns".into(), "p".into()))
        );
        assert_eq!(
            error_object(&err("Pod ns/a")),
            Some(ErrorObject::Pod("ns".into(), "a".into()))
        );
        assert_eq!(
            error_object(&err("Namespace ns")),
            Some(ErrorObject::Namespace("ns".into()))
        );
        assert_eq!(error_object(&err("document 3")), None);
        assert_eq!(error_object(&err("file")), None);
    }

    #[test]
    fn a_policy_not_understood_is_enforced_as_it_is_now() {
        let np = |port: &str| {
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                 metadata: {{name: p, namespace: ns}}\n\
                 spec: {{podSelector: {{}}, ingress: [{{ports: [{{port: {port}}}]}}]}}\n"
            )
        };
        let prev = palisade_policy::load_str(&np("80"), "np.yaml");
        let now = palisade_policy::load_str(&np("0"), "np.yaml");
        assert_eq!(now.warnings.len(), 1, "{:?}", now.warnings);
        let Verdict::Use(m) = reconcile(now, Some(&prev)) else {
            panic!("expected a model")
        };
        // Not the last good version (which allowed port 80): the policy
        // as it is, with nothing allowed, as a restarted agent would see it.
        assert_eq!(m.policies.len(), 1);
        assert!(m.policies[0].unreadable.is_some());
        assert!(m.policies[0]
            .rules(palisade_policy::Direction::Ingress)
            .is_empty());
    }

    #[test]
    fn a_policy_error_brings_back_no_other_policy() {
        let prev = Model {
            policies: vec![policy("p"), policy("q")],
            ..Model::default()
        };
        let now = Model {
            policies: vec![policy("q")],
            errors: vec![err("NetworkPolicy ns/p")],
            ..Model::default()
        };
        let Verdict::Use(m) = reconcile(now, Some(&prev)) else {
            panic!("expected a model")
        };
        let names: Vec<&str> = m.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["q"]);
    }

    #[test]
    fn an_invalid_service_keeps_its_last_good_version_without_holding_back() {
        let svc = |ip: &str| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: ns}}\n\
                 spec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n"
            )
        };
        let prev = palisade_policy::load_str(&svc("10.96.0.1"), "svc.yaml");
        let now = palisade_policy::load_str(&svc("10.96.0.bad"), "svc.yaml");
        assert_eq!(
            error_object(&now.errors[0]),
            Some(ErrorObject::Service("ns".into(), "web".into()))
        );
        let Verdict::Use(m) = reconcile(now, Some(&prev)) else {
            panic!("an invalid Service must not hold the enforced state back")
        };
        assert_eq!(m.services, prev.services);
    }

    #[test]
    fn an_invalid_cluster_policy_keeps_its_last_good_version_in_order() {
        let cnp = |name: &str, priority: &str| {
            format!(
                "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
                 metadata: {{name: {name}}}\nspec: {{tier: Admin, priority: {priority}, \
                 subject: {{namespaces: {{}}}}, ingress: [{{action: Deny, from: [{{networks: [10.0.0.0/8]}}]}}]}}\n"
            )
        };
        let prev = palisade_policy::load_str(
            &format!("{}---\n{}", cnp("a", "5"), cnp("b", "1")),
            "c.yaml",
        );
        assert!(prev.errors.is_empty(), "{:?}", prev.errors);
        let now = palisade_policy::load_str(
            &format!("{}---\n{}", cnp("a", "5"), cnp("b", "-1")),
            "c.yaml",
        );
        assert_eq!(
            error_object(&now.errors[0]),
            Some(ErrorObject::ClusterPolicy("b".into()))
        );
        let Verdict::Use(m) = reconcile(now, Some(&prev)) else {
            panic!("an invalid cluster policy must not hold the enforced state back")
        };
        // b (priority 1) is back, ahead of a (priority 5).
        let names: Vec<&str> = m.cluster_policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
    }

    #[test]
    fn a_deleted_policy_is_not_resurrected() {
        let prev = Model {
            policies: vec![policy("p")],
            ..Model::default()
        };
        let Verdict::Use(m) = reconcile(Model::default(), Some(&prev)) else {
            panic!("expected a model")
        };
        assert!(m.policies.is_empty());
    }

    #[test]
    fn unreadable_documents_hold_the_enforced_state() {
        let now = Model {
            errors: vec![err("document 2")],
            ..Model::default()
        };
        assert!(matches!(reconcile(now, None), Verdict::Hold(e, _) if e.len() == 1));
    }

    #[test]
    fn only_input_that_may_have_held_objects_holds_back() {
        let stray = palisade_policy::load_str("- just\n- a list\n", "notes.yaml");
        assert_eq!(stray.errors.len(), 1, "{:?}", stray.errors);
        assert!(matches!(reconcile(stray, None), Verdict::Use(_)));
        let broken = palisade_policy::load_str("kind: NetworkPolicy\nspec: [\n", "np.yaml");
        assert_eq!(broken.errors.len(), 1, "{:?}", broken.errors);
        assert!(matches!(reconcile(broken, None), Verdict::Hold(..)));
    }
}
