//! Label-set identities: pods with the same namespace and label set share one
//! number, which is what the node-wide identity trie maps their IPs to and
//! what the per-pod identity maps are keyed by.
//!
//! The allocator outlives compiles (the agent keeps one) so that numbers stay
//! stable while their label set exists: a recompile then rewrites only the
//! maps whose contents really changed.

use palisade_common::IDENTITY_FIRST_POD;
use palisade_policy::Labels;
use std::collections::{HashMap, VecDeque};

/// What an identity stands for: a namespace and a pod label set.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityKey {
    pub namespace: String,
    pub labels: Labels,
}

/// A freed number is reused only after this many other numbers were freed
/// after it. Maps are rewritten pod by pod, so for a short while some inner
/// map may still name an identity that was just freed; reusing the number at
/// once would hand that stale entry to an unrelated label set.
const REUSE_AFTER: usize = 1024;

/// Hands out identity numbers (>= [`IDENTITY_FIRST_POD`]) with reference
/// counts; a number whose count drops to zero is freed.
#[derive(Clone, Debug)]
pub struct IdentityAllocator {
    /// Namespace -> label set -> identity: two levels so that a lookup
    /// borrows the pod's own namespace and labels instead of cloning them.
    ids: HashMap<String, HashMap<Labels, u32>>,
    keys: HashMap<u32, IdentityKey>,
    refs: HashMap<u32, u32>,
    free: VecDeque<u32>,
    next: u32,
}

impl Default for IdentityAllocator {
    fn default() -> Self {
        IdentityAllocator {
            ids: HashMap::new(),
            keys: HashMap::new(),
            refs: HashMap::new(),
            free: VecDeque::new(),
            next: IDENTITY_FIRST_POD,
        }
    }
}

impl IdentityAllocator {
    pub fn new() -> Self {
        Self::default()
    }

    /// The identity of `key`, allocating it if needed; takes one reference.
    pub fn acquire(&mut self, key: &IdentityKey) -> u32 {
        self.acquire_parts(&key.namespace, &key.labels)
    }

    /// [`IdentityAllocator::acquire`] without building the key first.
    pub fn acquire_parts(&mut self, namespace: &str, labels: &Labels) -> u32 {
        let id = match self.get_parts(namespace, labels) {
            Some(id) => id,
            None => {
                let id = self.fresh();
                self.ids
                    .entry(namespace.to_string())
                    .or_default()
                    .insert(labels.clone(), id);
                let key = IdentityKey {
                    namespace: namespace.to_string(),
                    labels: labels.clone(),
                };
                self.keys.insert(id, key);
                id
            }
        };
        *self.refs.entry(id).or_insert(0) += 1;
        id
    }

    /// Drops one reference; the identity is freed when none is left.
    /// Unknown numbers are ignored.
    pub fn release(&mut self, id: u32) {
        let Some(count) = self.refs.get_mut(&id) else {
            return;
        };
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.refs.remove(&id);
            if let Some(key) = self.keys.remove(&id) {
                if let Some(by_labels) = self.ids.get_mut(&key.namespace) {
                    by_labels.remove(&key.labels);
                    if by_labels.is_empty() {
                        self.ids.remove(&key.namespace);
                    }
                }
            }
            self.free.push_back(id);
        }
    }

    /// Sets every reference count to zero without freeing anything: the
    /// start of a full recompile, which re-acquires what still exists and
    /// then calls [`IdentityAllocator::free_unreferenced`].
    pub fn reset_refs(&mut self) {
        for count in self.refs.values_mut() {
            *count = 0;
        }
        for id in self.keys.keys() {
            self.refs.entry(*id).or_insert(0);
        }
    }

    /// Frees every identity with no reference.
    pub fn free_unreferenced(&mut self) {
        let dead: Vec<u32> = self
            .refs
            .iter()
            .filter(|(_, &c)| c == 0)
            .map(|(&id, _)| id)
            .collect();
        let mut dead = dead;
        dead.sort_unstable();
        for id in dead {
            self.refs.insert(id, 1);
            self.release(id);
        }
    }

    /// The identity of `key`, if allocated.
    pub fn get(&self, key: &IdentityKey) -> Option<u32> {
        self.get_parts(&key.namespace, &key.labels)
    }

    pub fn get_parts(&self, namespace: &str, labels: &Labels) -> Option<u32> {
        self.ids.get(namespace)?.get(labels).copied()
    }

    /// The label set an identity stands for, if allocated.
    pub fn key(&self, id: u32) -> Option<&IdentityKey> {
        self.keys.get(&id)
    }

    /// Number of live identities.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Reserves `id` for `key` with no reference yet: a restarted agent
    /// takes over the numbers its pinned maps already use, so that its first
    /// compile rewrites nothing that did not change. Returns false (and
    /// changes nothing) when the key or the number is taken, or the number
    /// is below [`IDENTITY_FIRST_POD`].
    pub fn seed(&mut self, key: &IdentityKey, id: u32) -> bool {
        if id < IDENTITY_FIRST_POD
            || id == u32::MAX
            || self.get(key).is_some()
            || self.keys.contains_key(&id)
        {
            return false;
        }
        self.free.retain(|f| *f != id);
        self.ids
            .entry(key.namespace.clone())
            .or_default()
            .insert(key.labels.clone(), id);
        self.keys.insert(id, key.clone());
        self.refs.insert(id, 0);
        self.next = self.next.max(id + 1);
        true
    }

    /// Seeds the numbers a pinned identity trie (pod IP -> identity) gives
    /// the model's pods, so a restarted agent (or a reader of its pins)
    /// numbers identities as the kernel already does. Returns how many
    /// were seeded.
    pub fn seed_from_pinned(
        &mut self,
        model: &palisade_policy::Model,
        pinned: &std::collections::BTreeMap<std::net::IpAddr, u32>,
    ) -> usize {
        let mut n = 0;
        for pod in &model.pods {
            let Some(id) = pod.ips.iter().find_map(|ip| pinned.get(ip)) else {
                continue;
            };
            let key = IdentityKey {
                namespace: pod.namespace.clone(),
                labels: pod.labels.clone(),
            };
            if self.seed(&key, *id) {
                n += 1;
            }
        }
        n
    }

    fn fresh(&mut self) -> u32 {
        if self.free.len() > REUSE_AFTER || self.next == u32::MAX {
            if let Some(id) = self.free.pop_front() {
                return id;
            }
        }
        let id = self.next;
        self.next = self.next.checked_add(1).expect("identity space exhausted");
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, app: &str) -> IdentityKey {
        IdentityKey {
            namespace: ns.into(),
            labels: [("app".to_string(), app.to_string())].into(),
        }
    }

    #[test]
    fn same_key_same_id_and_ids_start_at_first_pod() {
        let mut a = IdentityAllocator::new();
        let x = a.acquire(&key("ns", "x"));
        assert_eq!(x, IDENTITY_FIRST_POD);
        assert_eq!(a.acquire(&key("ns", "x")), x);
        let y = a.acquire(&key("other", "x"));
        assert_ne!(x, y);
        assert_eq!(a.key(y), Some(&key("other", "x")));
    }

    #[test]
    fn freed_when_last_reference_goes() {
        let mut a = IdentityAllocator::new();
        let x = a.acquire(&key("ns", "x"));
        a.acquire(&key("ns", "x"));
        a.release(x);
        assert_eq!(a.get(&key("ns", "x")), Some(x));
        a.release(x);
        assert_eq!(a.get(&key("ns", "x")), None);
        assert!(a.is_empty());
        // Not reused immediately.
        assert_ne!(a.acquire(&key("ns", "y")), x);
    }

    #[test]
    fn full_recompile_keeps_live_ids_and_frees_dead_ones() {
        let mut a = IdentityAllocator::new();
        let x = a.acquire(&key("ns", "x"));
        let y = a.acquire(&key("ns", "y"));
        a.reset_refs();
        assert_eq!(a.acquire(&key("ns", "y")), y);
        a.free_unreferenced();
        assert_eq!(a.get(&key("ns", "x")), None);
        assert_eq!(a.get(&key("ns", "y")), Some(y));
        assert_eq!(a.key(x), None);
    }

    #[test]
    fn freed_ids_are_reused_after_quarantine() {
        let mut a = IdentityAllocator::new();
        let first = a.acquire(&key("ns", "0"));
        a.release(first);
        let mut seen_reuse = false;
        for i in 1..=(REUSE_AFTER as u32 + 2) {
            let id = a.acquire(&key("ns", &i.to_string()));
            a.release(id);
            if id == first {
                seen_reuse = true;
            }
        }
        assert!(
            seen_reuse,
            "the oldest freed id is reused once enough ids were freed"
        );
    }
}
