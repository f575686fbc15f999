//! A cache of the identities each pod peer selects.
//!
//! Resolving a `namespaceSelector` peer walks every namespace; doing that
//! on every recompile of every pod would make one label change cost
//! milliseconds per affected pod. Instead each peer (of a policy that
//! selected some local pod) is resolved once and then kept current: a
//! created identity is tested against every cached peer, a freed one
//! removed. Policy changes drop their policy's entries; namespace label
//! changes drop everything.

use palisade_policy::{Direction, Labels, Selector};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// A peer: its policy (`namespace`, `name`), direction, rule and peer index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub namespace: String,
    pub policy: String,
    pub direction: Direction,
    pub rule: usize,
    pub peer: usize,
}

#[derive(Debug)]
struct Entry {
    namespaces: Option<Selector>,
    pods: Option<Selector>,
    ids: Arc<BTreeSet<u32>>,
}

#[derive(Debug, Default)]
pub struct PeerCache {
    entries: RefCell<HashMap<PeerKey, Entry>>,
}

/// Whether a pod peer of a policy in `policy_ns` selects a pod of namespace
/// `ns` (labelled `ns_labels`) with `labels`.
pub fn selects(
    policy_ns: &str,
    namespaces: Option<&Selector>,
    pods: Option<&Selector>,
    ns: &str,
    ns_labels: &Labels,
    labels: &Labels,
) -> bool {
    let ns_ok = match namespaces {
        None => policy_ns == ns,
        Some(sel) => sel.matches(ns_labels),
    };
    ns_ok && pods.is_none_or(|sel| sel.matches(labels))
}

impl PeerCache {
    /// The identities of `key`, resolving with `resolve` on a miss.
    pub fn get(
        &self,
        key: &PeerKey,
        namespaces: Option<&Selector>,
        pods: Option<&Selector>,
        resolve: impl FnOnce() -> BTreeSet<u32>,
    ) -> Arc<BTreeSet<u32>> {
        if let Some(e) = self.entries.borrow().get(key) {
            return e.ids.clone();
        }
        let ids = Arc::new(resolve());
        self.entries.borrow_mut().insert(
            key.clone(),
            Entry {
                namespaces: namespaces.cloned(),
                pods: pods.cloned(),
                ids: ids.clone(),
            },
        );
        ids
    }

    /// Whether cached peer `key` selects identity `id` (false when the
    /// peer is not cached).
    pub fn contains(&self, key: &PeerKey, id: u32) -> bool {
        self.entries
            .borrow()
            .get(key)
            .is_some_and(|e| e.ids.contains(&id))
    }

    pub fn identity_created(&mut self, id: u32, ns: &str, ns_labels: &Labels, labels: &Labels) {
        for (key, e) in self.entries.get_mut().iter_mut() {
            if selects(
                &key.namespace,
                e.namespaces.as_ref(),
                e.pods.as_ref(),
                ns,
                ns_labels,
                labels,
            ) {
                Arc::make_mut(&mut e.ids).insert(id);
            }
        }
    }

    pub fn identity_freed(&mut self, id: u32) {
        for e in self.entries.get_mut().values_mut() {
            if e.ids.contains(&id) {
                Arc::make_mut(&mut e.ids).remove(&id);
            }
        }
    }

    pub fn policy_changed(&mut self, namespace: &str, name: &str) {
        self.entries
            .get_mut()
            .retain(|k, _| !(k.namespace == namespace && k.policy == name));
    }

    pub fn clear(&mut self) {
        self.entries.get_mut().clear();
    }
}
