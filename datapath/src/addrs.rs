//! The node's address tables: `SERVICES` (every Service frontend of the
//! cluster, ClusterIP with protocol and port -> 1) and `LOCAL_ADDRS` (each
//! local pod address -> the ifindex of its host-side interface). The classifiers use them to leave a flow to
//! a ClusterIP undecided at the client's hook and to find the client again
//! after DNAT (`docs/ebpf.md`, "Services").
//!
//! Each table is brought to its desired content in two steps: `add` before
//! the pods' records are written and `remove_stale` after, so a client whose
//! record is live is always found.

use super::load::Loaded;
use anyhow::{Context, Result};
use aya::maps::{HashMap, MapData, MapError};
use std::collections::BTreeMap;

/// A node-wide hash map kept equal to a desired content, keyed by `K` (an
/// `IpKey` or a `ServiceKey`).
pub struct AddrTable<K> {
    name: &'static str,
    map: HashMap<MapData, K, u32>,
    /// What the kernel holds, read back at start.
    cache: BTreeMap<K, u32>,
}

impl<K: aya::Pod + Ord + std::fmt::Debug> AddrTable<K> {
    /// Takes the map `name` out of the loaded object and reads what it holds.
    pub fn take(loaded: &mut Loaded, name: &'static str) -> Result<Self> {
        let map: HashMap<MapData, K, u32> = loaded
            .ebpf
            .take_map(name)
            .with_context(|| format!("the eBPF object has no map {name}"))?
            .try_into()
            .with_context(|| format!("map {name} does not have the layout of palisade_common"))?;
        let mut cache = BTreeMap::new();
        for item in map.iter() {
            let (k, v) = item.with_context(|| format!("read {name}"))?;
            cache.insert(k, v);
        }
        Ok(AddrTable { name, map, cache })
    }

    /// Writes the entries of `desired` that differ from what is held.
    pub fn add(&mut self, desired: &BTreeMap<K, u32>) -> Result<usize> {
        let mut n = 0;
        for (key, v) in desired {
            if self.cache.get(key) == Some(v) {
                continue;
            }
            self.map
                .insert(*key, *v, 0)
                .with_context(|| format!("write {}[{key:?}]", self.name))?;
            self.cache.insert(*key, *v);
            n += 1;
        }
        Ok(n)
    }

    /// Deletes the entries `desired` does not have.
    pub fn remove_stale(&mut self, desired: &BTreeMap<K, u32>) -> Result<usize> {
        let stale: Vec<K> = self
            .cache
            .keys()
            .filter(|k| !desired.contains_key(k))
            .copied()
            .collect();
        for key in &stale {
            match self.map.remove(key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e).with_context(|| format!("delete from {}", self.name)),
            }
            self.cache.remove(key);
        }
        Ok(stale.len())
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}
