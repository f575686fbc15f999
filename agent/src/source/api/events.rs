//! Kubernetes Events on objects the agent cannot take as written, so that
//! `kubectl describe` tells their author what is wrong and what the agent
//! does instead:
//!
//! | reason | about | what the agent does |
//! | --- | --- | --- |
//! | [`NOT_UNDERSTOOD`] | a NetworkPolicy it cannot understand | isolates its pods, nothing allowed |
//! | [`POLICY_WARNING`] | a NetworkPolicy with a value read past (unknown enforcement mode) | enforces it |
//! | [`INVALID_OBJECT`] | a Pod, Namespace or Service that fails validation or does not deserialize | leaves it out (its last valid version stays in use, if any) |
//!
//! Each distinct problem (object, reason, note) gets one `Warning` Event
//! when it first appears, not one per round. A problem that goes away
//! (object fixed or deleted) is forgotten, so the same mistake made again
//! later is reported again.

use super::convert::{PolicyEntry, Rejected};
use super::store::Key;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use palisade_policy::Model;
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Reason of the Event on a NetworkPolicy not understood.
pub const NOT_UNDERSTOOD: &str = "PolicyNotUnderstood";
/// Reason of the Event on a NetworkPolicy enforced despite a value read
/// past.
pub const POLICY_WARNING: &str = "PolicyWarning";
/// Reason of the Event on any other object left out as invalid.
pub const INVALID_OBJECT: &str = "InvalidObject";
/// The Event's action: what the agent could not do with the object as
/// written.
const ACTION: &str = "Enforce";
/// Reporting controller of the Events.
const CONTROLLER: &str = "palisade";
/// Limit of an Event's note set by the API server.
const NOTE_MAX: usize = 1024;

/// One Event to publish.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Publish {
    /// `(kind, namespace, name, uid)` of the object; `apiVersion` follows
    /// from the kind.
    pub regarding: (String, String, String, Option<String>),
    pub reason: &'static str,
    pub note: String,
}

impl Publish {
    fn reference(&self) -> ObjectReference {
        let (kind, namespace, name, uid) = &self.regarding;
        let api_version = match kind.as_str() {
            "NetworkPolicy" => "networking.k8s.io/v1",
            "ClusterNetworkPolicy" => "policy.networking.k8s.io/v1alpha2",
            _ => "v1",
        };
        ObjectReference {
            api_version: Some(api_version.into()),
            kind: Some(kind.clone()),
            namespace: (!namespace.is_empty()).then(|| namespace.clone()),
            name: Some(name.clone()),
            uid: uid.clone(),
            ..ObjectReference::default()
        }
    }
}

/// Decides which problems are new; the sending half of the publishing
/// task.
pub struct InputEvents {
    tx: UnboundedSender<Publish>,
    reported: BTreeSet<Publish>,
}

impl InputEvents {
    pub fn new(tx: UnboundedSender<Publish>) -> Self {
        InputEvents {
            tx,
            reported: BTreeSet::new(),
        }
    }

    /// Queues an Event for every problem of this round not reported while
    /// it lasted.
    pub fn report(&mut self, problems: BTreeSet<Publish>) {
        for p in problems.difference(&self.reported) {
            // The receiver lives as long as the watcher runtime; if it is
            // gone the process is ending.
            let _ = self.tx.send(p.clone());
        }
        self.reported = problems;
    }
}

/// The problems of one round: the model's policies not understood or read
/// with a warning (`uids`: their uids by `(namespace, name)`), and the
/// objects left out (`rejected`).
pub fn problems<'a>(
    model: &Model,
    uids: &BTreeMap<(String, String), String>,
    rejected: impl Iterator<Item = &'a Rejected>,
) -> BTreeSet<Publish> {
    let mut out = BTreeSet::new();
    for p in &model.policies {
        let uid = uids.get(&(p.namespace.clone(), p.name.clone())).cloned();
        let regarding = (
            "NetworkPolicy".to_string(),
            p.namespace.clone(),
            p.name.clone(),
            uid,
        );
        let notes = p.unreadable_note().map(|n| (NOT_UNDERSTOOD, n));
        let warnings = p.warnings.iter().map(|w| (POLICY_WARNING, w.to_string()));
        for (reason, note) in notes.into_iter().chain(warnings) {
            out.insert(Publish {
                regarding: regarding.clone(),
                reason,
                note: truncate(note),
            });
        }
    }
    for r in rejected {
        let o = &r.regarding;
        let text = |s: &Option<String>| s.clone().unwrap_or_default();
        let note = format!(
            "{}: {}; the object is left out (its last valid version stays in use, if it had one)",
            r.error.field, r.error.message
        );
        out.insert(Publish {
            regarding: (
                text(&o.kind),
                text(&o.namespace),
                text(&o.name),
                o.uid.clone(),
            ),
            reason: INVALID_OBJECT,
            note: truncate(note),
        });
    }
    out
}

/// `(namespace, name)` -> uid of the listed policies.
pub fn uids<'a>(
    policies: impl Iterator<Item = (&'a Key, &'a PolicyEntry)>,
) -> BTreeMap<(String, String), String> {
    policies
        .filter(|((ns, name), _)| !ns.is_empty() && !name.is_empty())
        .filter_map(|(key, entry)| Some((key.clone(), entry.uid.clone()?)))
        .collect()
}

fn truncate(mut note: String) -> String {
    if note.len() > NOTE_MAX {
        let mut end = NOTE_MAX - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    note
}

/// Publishes the queued Events until the sender is dropped. A failure
/// (no RBAC for events, API down) is logged and not retried: the problem
/// is in the agent's log and metrics either way.
pub async fn publish(client: Client, mut rx: UnboundedReceiver<Publish>) {
    let reporter = Reporter::from(CONTROLLER);
    while let Some(p) = rx.recv().await {
        // A recorder of its own per Event: kube's recorder turns a second
        // Event with the same reason on the same object into a repeat of the
        // first one, note included, while each of ours says something new.
        let recorder = Recorder::new(client.clone(), reporter.clone());
        let event = Event {
            type_: EventType::Warning,
            reason: p.reason.into(),
            note: Some(p.note.clone()),
            action: ACTION.into(),
            secondary: None,
        };
        let (kind, namespace, name, _) = &p.regarding;
        let object = format!("{kind} {namespace}/{name}");
        match recorder.publish(&event, &p.reference()).await {
            Ok(()) => tracing::info!(%object, reason = p.reason, note = %p.note, "event published"),
            Err(e) => {
                tracing::warn!(%object, reason = p.reason, error = %e, "cannot publish the event")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::{FieldIssue, InputError, Policy};

    fn policy(name: &str, unreadable: Option<&str>, warning: Option<&str>) -> Policy {
        let issue = |field: &str| FieldIssue {
            field: field.into(),
            message: "bad".into(),
        };
        Policy {
            namespace: "ns".into(),
            name: name.into(),
            enforcement: Default::default(),
            pod_selector: Default::default(),
            isolates_ingress: true,
            isolates_egress: false,
            ingress: vec![],
            egress: vec![],
            unreadable: unreadable.map(issue),
            warnings: warning.map(issue).into_iter().collect(),
        }
    }

    fn model(policies: Vec<Policy>) -> Model {
        Model {
            policies,
            ..Model::default()
        }
    }

    fn rejected_pod(name: &str) -> Rejected {
        Rejected {
            error: InputError {
                source: None,
                object: format!("Pod ns/{name}"),
                field: "spec.containers".into(),
                message: "invalid type: integer `5`, expected a sequence".into(),
            },
            regarding: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some("ns".into()),
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                ..ObjectReference::default()
            },
        }
    }

    #[test]
    fn each_distinct_problem_is_reported_once_while_it_lasts() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut ev = InputEvents::new(tx);
        let uids = [(("ns".to_string(), "p".to_string()), "u-1".to_string())].into();
        let a = policy("p", Some("spec.ingress[0].from[0].ipBlock.cidr"), None);
        let b = policy("p", Some("spec.podSelector"), None);
        let pod = rejected_pod("x");
        ev.report(problems(&model(vec![a.clone()]), &uids, [&pod].into_iter()));
        let mut first = [rx.try_recv().unwrap(), rx.try_recv().unwrap()];
        assert!(rx.try_recv().is_err());
        first.sort_by_key(|p| p.reason);
        assert_eq!(first[0].reason, INVALID_OBJECT);
        assert_eq!(first[0].reference().kind.as_deref(), Some("Pod"));
        assert_eq!(first[0].reference().uid.as_deref(), Some("uid-x"));
        assert!(first[0].note.starts_with("spec.containers: invalid type"));
        assert_eq!(first[1].reason, NOT_UNDERSTOOD);
        let reference = first[1].reference();
        assert_eq!(reference.uid.as_deref(), Some("u-1"));
        assert_eq!(reference.kind.as_deref(), Some("NetworkPolicy"));
        assert_eq!(
            reference.api_version.as_deref(),
            Some("networking.k8s.io/v1")
        );
        assert_eq!(
            first[1].note,
            "spec.ingress[0].from[0].ipBlock.cidr: bad; \
             its pods are isolated for ingress with nothing allowed"
        );
        // Same problems next round: nothing new. Another problem of the
        // policy: one more.
        ev.report(problems(&model(vec![a.clone()]), &uids, [&pod].into_iter()));
        assert!(rx.try_recv().is_err());
        ev.report(problems(&model(vec![b]), &uids, [&pod].into_iter()));
        assert!(rx.try_recv().unwrap().note.starts_with("spec.podSelector"));
        assert!(rx.try_recv().is_err());
        // Fixed, then broken again: reported again.
        ev.report(problems(&model(vec![]), &uids, [&pod].into_iter()));
        ev.report(problems(&model(vec![a]), &uids, [&pod].into_iter()));
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_value_read_past_is_a_policy_warning() {
        let p = policy("q", None, Some("metadata.annotations"));
        let found = problems(&model(vec![p]), &BTreeMap::new(), std::iter::empty());
        let found: Vec<_> = found.into_iter().collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].reason, POLICY_WARNING);
        assert_eq!(found[0].note, "metadata.annotations: bad");
        assert_eq!(found[0].reference().uid, None);
    }

    #[test]
    fn long_notes_are_cut_to_the_api_limit() {
        let note = truncate("é".repeat(NOTE_MAX));
        assert!(note.len() <= NOTE_MAX);
        assert!(note.ends_with("..."));
    }
}
