//! The node's address tables: `SERVICES` (every Service ClusterIP of the
//! cluster -> 1) and `LOCAL_ADDRS` (each local pod address -> the ifindex
//! of its host-side interface). The classifiers use them to leave a flow to
//! a ClusterIP undecided at the client's hook and to find the client again
//! after DNAT (`docs/ebpf.md`, "Services").
//!
//! Each table is brought to its desired content in two steps: `add` before
//! the pods' records are written and `remove_stale` after, so a client whose
//! record is live is always found.

use super::encode::ip_key;
use super::load::Loaded;
use anyhow::{Context, Result};
use aya::maps::{HashMap, MapData, MapError};
use palisade_common::IpKey;
use std::collections::BTreeMap;
use std::net::IpAddr;

pub struct AddrTable {
    name: &'static str,
    map: HashMap<MapData, IpKey, u32>,
    /// What the kernel holds, read back at start.
    cache: BTreeMap<IpKey, u32>,
}

impl AddrTable {
    /// Takes the map `name` out of the loaded object and reads what it holds.
    pub fn take(loaded: &mut Loaded, name: &'static str) -> Result<Self> {
        let map: HashMap<MapData, IpKey, u32> = loaded
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
    pub fn add(&mut self, desired: &BTreeMap<IpAddr, u32>) -> Result<usize> {
        let mut n = 0;
        for (ip, v) in desired {
            let key = ip_key(*ip);
            if self.cache.get(&key) == Some(v) {
                continue;
            }
            self.map
                .insert(key, *v, 0)
                .with_context(|| format!("write {}[{ip}]", self.name))?;
            self.cache.insert(key, *v);
            n += 1;
        }
        Ok(n)
    }

    /// Deletes the entries `desired` does not have.
    pub fn remove_stale(&mut self, desired: &BTreeMap<IpAddr, u32>) -> Result<usize> {
        let want: std::collections::BTreeSet<IpKey> =
            desired.keys().map(|ip| ip_key(*ip)).collect();
        let stale: Vec<IpKey> = self
            .cache
            .keys()
            .filter(|k| !want.contains(k))
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
