//! One kind's objects as the watcher reports them, each converted into the
//! model's form on arrival (see `convert.rs`), with the relist rule: after
//! a restart of the watch (410 Gone, reconnect without a usable resource
//! version) the new full list is collected aside and swapped in whole when
//! it is complete, so the model never sees the store empty or half-listed.
//!
//! Entries are behind `Arc`: a snapshot takes them under the lock at the
//! cost of a reference count each and builds the model after releasing it,
//! and a relist reuses the entries it finds unchanged instead of holding a
//! second copy of the cluster while it lists.

use super::convert::{Kind, Lenient};
use kube::runtime::watcher::Event;
use kube::Resource;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `(namespace, name)`; the namespace is empty for cluster-scoped kinds.
/// Ordered, so rounds see objects in a stable order (the first of two
/// objects claiming one address wins, and must win every round).
pub type Key = (String, String);

type Entries<K> = BTreeMap<Key, Arc<<K as Kind>::Entry>>;

/// What a key held at the last [`Store::take_changes`], and what it holds
/// now (`None`: absent).
pub type Changed<E> = (Key, Option<Arc<E>>, Option<Arc<E>>);

pub struct Store<K: Kind> {
    live: Entries<K>,
    /// Keys changed since the last [`Store::take_changes`], with what they
    /// held then: the model is patched key by key from these.
    before: BTreeMap<Key, Option<Arc<K::Entry>>>,
    /// The list being collected since the last `Init`.
    relist: Option<Entries<K>>,
    /// Whether one full list has been swapped in.
    synced: bool,
}

impl<K: Kind> Default for Store<K> {
    fn default() -> Self {
        Store {
            live: BTreeMap::new(),
            before: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

fn key<K: Kind>(obj: &Lenient<K>) -> Key {
    let m = obj.meta();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

impl<K: Kind> Store<K> {
    /// Applies one watcher event; true when the live contents changed.
    /// Entries are compared after conversion, so the frequent updates of
    /// fields the model does not read (pod conditions, annotations) and a
    /// relist that finds nothing new cost no round.
    pub fn apply(&mut self, event: Event<Lenient<K>>) -> bool {
        match event {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(obj) => {
                let k = key(&obj);
                let entry = obj.entry();
                // Share what did not change with the live contents: a
                // relist of an unchanged cluster then costs the keys only.
                let entry = match self.live.get(&k) {
                    Some(live) if **live == entry => Arc::clone(live),
                    _ => Arc::new(entry),
                };
                self.relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(k, entry);
                false
            }
            Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let first = !self.synced;
                self.synced = true;
                let changed = listed != self.live;
                if changed {
                    self.journal_relist(&listed);
                }
                self.live = listed;
                first || changed
            }
            Event::Apply(obj) => {
                let k = key(&obj);
                let entry = obj.entry();
                if self.live.get(&k).is_some_and(|live| **live == entry) {
                    return false;
                }
                let was = self.live.insert(k.clone(), Arc::new(entry));
                self.before.entry(k).or_insert(was);
                true
            }
            Event::Delete(obj) => {
                let k = key(&obj);
                let Some(was) = self.live.remove(&k) else {
                    return false;
                };
                self.before.entry(k).or_insert(Some(was));
                true
            }
        }
    }

    /// Records the keys a relist changes before it is swapped in.
    fn journal_relist(&mut self, listed: &Entries<K>) {
        for (k, was) in &self.live {
            if listed.get(k).is_none_or(|now| !Arc::ptr_eq(now, was)) {
                self.before
                    .entry(k.clone())
                    .or_insert(Some(Arc::clone(was)));
            }
        }
        for k in listed.keys().filter(|k| !self.live.contains_key(*k)) {
            self.before.entry(k.clone()).or_insert(None);
        }
    }

    /// The keys changed since the last call, each with what it held then
    /// and what it holds now; keys that came back to what they held are
    /// left out. Clears the journal.
    pub fn take_changes(&mut self) -> Vec<Changed<K::Entry>> {
        let before = std::mem::take(&mut self.before);
        before
            .into_iter()
            .map(|(k, was)| {
                let now = self.live.get(&k).cloned();
                (k, was, now)
            })
            .filter(|(_, was, now)| match (was, now) {
                (Some(a), Some(b)) => **a != **b,
                (None, None) => false,
                _ => true,
            })
            .collect()
    }

    /// Forgets the journal: the caller read the whole store.
    pub fn clear_changes(&mut self) {
        self.before.clear();
    }

    /// The live entry of `key`.
    pub fn get(&self, key: &Key) -> Option<&Arc<K::Entry>> {
        self.live.get(key)
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The API server does not serve the kind (its CRD is not installed):
    /// a store never listed counts as listed and empty, so that the other
    /// kinds are enforced; one that was listed keeps what it holds (the
    /// CRD removed, or a passing 404) until a list succeeds. True when
    /// this made the store synced.
    pub fn mark_absent(&mut self) -> bool {
        let first = !self.synced;
        self.synced = true;
        first
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The live entries with their keys, in key order, shared.
    pub fn iter_shared(&self) -> impl Iterator<Item = (&Key, &Arc<K::Entry>)> {
        self.live.iter()
    }

    /// The live entries with their keys, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &K::Entry)> {
        self.live.iter().map(|(k, e)| (k, &**e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Namespace;

    fn ns(name: &str) -> Namespace {
        let mut n = Namespace::default();
        n.metadata.name = Some(name.into());
        n
    }

    fn names(s: &Store<Namespace>) -> Vec<String> {
        s.iter()
            .map(|(_, n)| n.as_ref().unwrap().name.clone())
            .collect()
    }

    fn entries(s: &Store<Namespace>) -> Vec<Arc<<Namespace as Kind>::Entry>> {
        s.iter_shared().map(|(_, e)| Arc::clone(e)).collect()
    }

    #[test]
    fn not_synced_until_the_first_list_is_complete() {
        let mut s = Store::default();
        assert!(!s.apply(Event::Init));
        assert!(!s.apply(Event::InitApply(ns("a").into())));
        assert!(!s.synced());
        assert!(s.is_empty());
        assert!(s.apply(Event::InitDone));
        assert!(s.synced());
        assert_eq!(names(&s), ["a"]);
    }

    #[test]
    fn a_relist_keeps_the_old_contents_until_it_is_complete() {
        let mut s = Store::default();
        s.apply(Event::Init);
        s.apply(Event::InitApply(ns("a").into()));
        s.apply(Event::InitApply(ns("b").into()));
        s.apply(Event::InitDone);
        // 410 Gone: the watcher lists again; "a" was deleted meanwhile.
        s.apply(Event::Init);
        assert_eq!(names(&s), ["a", "b"]);
        s.apply(Event::InitApply(ns("b").into()));
        assert_eq!(names(&s), ["a", "b"]);
        s.apply(Event::InitApply(ns("c").into()));
        assert!(s.apply(Event::InitDone));
        assert_eq!(names(&s), ["b", "c"]);
        assert_eq!(s.len(), 2);
        // A relist that finds the same objects changes nothing.
        s.apply(Event::Init);
        s.apply(Event::InitApply(ns("c").into()));
        s.apply(Event::InitApply(ns("b").into()));
        assert!(!s.apply(Event::InitDone));
        assert_eq!(names(&s), ["b", "c"]);
    }

    #[test]
    fn a_relist_shares_the_entries_it_finds_unchanged() {
        let mut s = Store::default();
        s.apply(Event::Init);
        s.apply(Event::InitApply(ns("a").into()));
        s.apply(Event::InitApply(ns("b").into()));
        s.apply(Event::InitDone);
        let before = entries(&s);
        s.apply(Event::Init);
        s.apply(Event::InitApply(ns("a").into()));
        let mut relabelled = ns("b");
        relabelled.metadata.labels = Some([("team".to_string(), "x".to_string())].into());
        s.apply(Event::InitApply(relabelled.into()));
        assert!(s.apply(Event::InitDone));
        let after = entries(&s);
        assert!(Arc::ptr_eq(&before[0], &after[0]), "unchanged: shared");
        assert!(!Arc::ptr_eq(&before[1], &after[1]), "changed: new entry");
        assert_eq!(after[1].as_ref().as_ref().unwrap().labels["team"], "x");
    }

    #[test]
    fn an_empty_first_list_is_a_change() {
        let mut s: Store<Namespace> = Store::default();
        s.apply(Event::Init);
        assert!(
            s.apply(Event::InitDone),
            "the first sync must start a round"
        );
    }

    #[test]
    fn watch_events_change_the_live_contents() {
        let mut s = Store::default();
        s.apply(Event::Init);
        s.apply(Event::InitDone);
        assert!(s.apply(Event::Apply(ns("a").into())));
        assert!(
            !s.apply(Event::Apply(ns("a").into())),
            "an unchanged object"
        );
        let mut annotated = ns("a");
        annotated.metadata.annotations = Some([("note".to_string(), "x".to_string())].into());
        assert!(
            !s.apply(Event::Apply(annotated.into())),
            "a field the model does not read"
        );
        let mut labelled = ns("a");
        labelled.metadata.labels = Some([("team".to_string(), "x".to_string())].into());
        assert!(s.apply(Event::Apply(labelled.into())));
        assert!(s.apply(Event::Delete(ns("a").into())));
        assert!(
            !s.apply(Event::Delete(ns("a").into())),
            "deleting twice changes nothing"
        );
        assert!(s.is_empty());
    }
}
