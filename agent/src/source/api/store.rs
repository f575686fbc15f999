//! One kind's objects as the watcher reports them, with the relist rule:
//! after a restart of the watch (410 Gone, reconnect without a usable
//! resource version) the new full list is collected aside and swapped in
//! whole when it is complete, so the model never sees the store empty or
//! half-listed.

use kube::runtime::watcher::Event;
use kube::Resource;
use std::collections::HashMap;

/// `(namespace, name)`; the namespace is empty for cluster-scoped kinds.
type Key = (String, String);

pub struct Store<K> {
    live: HashMap<Key, K>,
    /// The list being collected since the last `Init`.
    relist: Option<HashMap<Key, K>>,
    /// Whether one full list has been swapped in.
    synced: bool,
}

impl<K> Default for Store<K> {
    fn default() -> Self {
        Store {
            live: HashMap::new(),
            relist: None,
            synced: false,
        }
    }
}

fn key<K: Resource>(obj: &K) -> Key {
    let m = obj.meta();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

impl<K: Resource + Clone + PartialEq> Store<K> {
    /// Applies one watcher event; true when the live contents changed.
    /// Objects are compared after stripping, so the frequent updates of
    /// fields the model does not read (pod conditions, annotations) and a
    /// relist that finds nothing new cost no round.
    pub fn apply(&mut self, event: Event<K>) -> bool {
        match event {
            Event::Init => {
                self.relist = Some(HashMap::new());
                false
            }
            Event::InitApply(obj) => {
                self.relist
                    .get_or_insert_with(HashMap::new)
                    .insert(key(&obj), obj);
                false
            }
            Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let first = !self.synced;
                self.synced = true;
                let changed = listed != self.live;
                self.live = listed;
                first || changed
            }
            Event::Apply(obj) => {
                let k = key(&obj);
                if self.live.get(&k) == Some(&obj) {
                    return false;
                }
                self.live.insert(k, obj);
                true
            }
            Event::Delete(obj) => self.live.remove(&key(&obj)).is_some(),
        }
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The live objects, in a stable order (so rounds are reproducible).
    pub fn objects(&self) -> Vec<K> {
        let mut keys: Vec<&Key> = self.live.keys().collect();
        keys.sort();
        keys.into_iter().map(|k| self.live[k].clone()).collect()
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
        s.objects()
            .into_iter()
            .map(|n| n.metadata.name.unwrap())
            .collect()
    }

    #[test]
    fn not_synced_until_the_first_list_is_complete() {
        let mut s = Store::default();
        assert!(!s.apply(Event::Init));
        assert!(!s.apply(Event::InitApply(ns("a"))));
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
        s.apply(Event::InitApply(ns("a")));
        s.apply(Event::InitApply(ns("b")));
        s.apply(Event::InitDone);
        // 410 Gone: the watcher lists again; "a" was deleted meanwhile.
        s.apply(Event::Init);
        assert_eq!(names(&s), ["a", "b"]);
        s.apply(Event::InitApply(ns("b")));
        assert_eq!(names(&s), ["a", "b"]);
        s.apply(Event::InitApply(ns("c")));
        assert!(s.apply(Event::InitDone));
        assert_eq!(names(&s), ["b", "c"]);
        assert_eq!(s.len(), 2);
        // A relist that finds the same objects changes nothing.
        s.apply(Event::Init);
        s.apply(Event::InitApply(ns("c")));
        s.apply(Event::InitApply(ns("b")));
        assert!(!s.apply(Event::InitDone));
        assert_eq!(names(&s), ["b", "c"]);
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
        assert!(s.apply(Event::Apply(ns("a"))));
        assert!(!s.apply(Event::Apply(ns("a"))), "an unchanged object");
        let mut labelled = ns("a");
        labelled.metadata.labels = Some([("team".to_string(), "x".to_string())].into());
        assert!(s.apply(Event::Apply(labelled)));
        assert!(s.apply(Event::Delete(ns("a"))));
        assert!(
            !s.apply(Event::Delete(ns("a"))),
            "deleting twice changes nothing"
        );
        assert!(s.is_empty());
    }
}
