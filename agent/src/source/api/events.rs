//! Kubernetes Events on NetworkPolicies the agent cannot use, so that
//! `kubectl describe networkpolicy` tells the author what is wrong.
//!
//! Each distinct problem (policy, field, message) gets one `Warning` Event
//! with reason [`REASON`] when it first appears, not one per round. A
//! problem that goes away (policy fixed or deleted) is forgotten, so the
//! same mistake made again later is reported again.

use super::convert::PolicyEntry;
use super::store::Key;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use palisade_policy::InputError;
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// The Event's reason.
pub const REASON: &str = "InvalidPolicy";
/// The Event's action: what the agent could not do with the object.
const ACTION: &str = "Enforce";
/// Reporting controller of the Events.
const CONTROLLER: &str = "palisade";
/// Limit of an Event's note set by the API server.
const NOTE_MAX: usize = 1024;

/// One Event to publish.
#[derive(Debug, PartialEq)]
pub struct Publish {
    pub regarding: ObjectReference,
    pub note: String,
}

/// `(namespace, name, field, message)` of a policy's validation error.
type ErrorKey = (String, String, String, String);

/// Decides which validation errors are new; the sending half of the
/// publishing task.
pub struct InvalidPolicyEvents {
    tx: UnboundedSender<Publish>,
    reported: BTreeSet<ErrorKey>,
}

impl InvalidPolicyEvents {
    pub fn new(tx: UnboundedSender<Publish>) -> Self {
        InvalidPolicyEvents {
            tx,
            reported: BTreeSet::new(),
        }
    }

    /// Queues an Event for every policy error of `errors` not reported
    /// while it lasted; `uids` maps `(namespace, name)` to the policy's uid
    /// (what `kubectl describe` matches Events on).
    pub fn report(&mut self, errors: &[InputError], uids: &BTreeMap<(String, String), String>) {
        let current: BTreeSet<ErrorKey> = errors.iter().filter_map(policy_error).collect();
        for key in current.difference(&self.reported) {
            let (namespace, name, field, message) = key;
            let regarding = ObjectReference {
                api_version: Some("networking.k8s.io/v1".into()),
                kind: Some("NetworkPolicy".into()),
                namespace: Some(namespace.clone()),
                name: Some(name.clone()),
                uid: uids.get(&(namespace.clone(), name.clone())).cloned(),
                ..ObjectReference::default()
            };
            let note = truncate(format!(
                "{field}: {message}; the policy's last valid version stays enforced (none if it never had one)"
            ));
            // The receiver lives as long as the watcher runtime; if it is
            // gone the process is ending.
            let _ = self.tx.send(Publish { regarding, note });
        }
        self.reported = current;
    }
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

/// The key of an error about a NetworkPolicy (`NetworkPolicy ns/name`).
fn policy_error(e: &InputError) -> Option<ErrorKey> {
    let rest = e.object.strip_prefix("NetworkPolicy ")?;
    let (ns, name) = rest.split_once('/')?;
    Some((
        ns.to_string(),
        name.to_string(),
        e.field.clone(),
        e.message.clone(),
    ))
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
/// (no RBAC for events, API down) is logged and not retried: the error is
/// in the agent's log and metrics either way.
pub async fn publish(client: Client, mut rx: UnboundedReceiver<Publish>) {
    let reporter = Reporter::from(CONTROLLER);
    while let Some(p) = rx.recv().await {
        // A recorder of its own per Event: kube's recorder turns a second
        // Event with the same reason on the same object into a repeat of the
        // first one, note included, while each of ours says something new.
        let recorder = Recorder::new(client.clone(), reporter.clone());
        let event = Event {
            type_: EventType::Warning,
            reason: REASON.into(),
            note: Some(p.note.clone()),
            action: ACTION.into(),
            secondary: None,
        };
        let object = format!(
            "{}/{}",
            p.regarding.namespace.as_deref().unwrap_or_default(),
            p.regarding.name.as_deref().unwrap_or_default()
        );
        match recorder.publish(&event, &p.regarding).await {
            Ok(()) => tracing::info!(policy = %object, note = %p.note, "event published"),
            Err(e) => {
                tracing::warn!(policy = %object, error = %e, "cannot publish the invalid-policy event")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(object: &str, field: &str) -> InputError {
        InputError {
            source: None,
            object: object.into(),
            field: field.into(),
            message: "bad".into(),
        }
    }

    #[test]
    fn each_distinct_policy_error_is_reported_once_while_it_lasts() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut ev = InvalidPolicyEvents::new(tx);
        let uids = [(("ns".to_string(), "p".to_string()), "u-1".to_string())].into();
        let a = err("NetworkPolicy ns/p", "spec.ingress[0].from[0].ipBlock.cidr");
        let b = err("NetworkPolicy ns/p", "spec.podSelector");
        let pod = err("Pod ns/x", "status.podIP");
        ev.report(&[a.clone(), pod.clone()], &uids);
        let first = rx.try_recv().unwrap();
        assert_eq!(first.regarding.uid.as_deref(), Some("u-1"));
        assert_eq!(first.regarding.kind.as_deref(), Some("NetworkPolicy"));
        assert!(first
            .note
            .starts_with("spec.ingress[0].from[0].ipBlock.cidr: bad"));
        assert!(rx.try_recv().is_err(), "pods get no event");
        // Same error next round: nothing new. A second error: one more.
        ev.report(std::slice::from_ref(&a), &uids);
        assert!(rx.try_recv().is_err());
        ev.report(&[a.clone(), b], &uids);
        assert!(rx.try_recv().unwrap().note.starts_with("spec.podSelector"));
        assert!(rx.try_recv().is_err());
        // Fixed, then broken again: reported again.
        ev.report(&[], &uids);
        ev.report(&[a], &uids);
        assert!(rx.try_recv().is_ok());
    }

    #[test]
    fn long_notes_are_cut_to_the_api_limit() {
        let note = truncate("é".repeat(NOTE_MAX));
        assert!(note.len() <= NOTE_MAX);
        assert!(note.ends_with("..."));
    }
}
