//! Each pod's own conntrack and fragment tables (`CONNTRACK_POD`,
//! `FRAGMENTS_POD`, by endpoint slot).
//!
//! A node-wide LRU lets one pod that opens flows fast evict every other
//! pod's entries, whose replies are then judged as new flows and dropped
//! (and one that sends first fragments fast, every other pod's fragment
//! records). With tables of its own, a pod that opens more than they hold
//! evicts only its own oldest entries. A slot given to a new interface gets
//! new, empty tables: no pod inherits another's flows. Tables survive an
//! agent restart with the pinned outer maps.
//!
//! A pod whose tables cannot be created (kernel memory) keeps the
//! node-wide `CONNTRACK` and `FRAGMENTS`, as before per-pod tables: its
//! flows are tracked, only not fenced off from other such pods.

use super::load::{Loaded, MapShape};
use super::maps::{create_inner, open_pinned, take};
use super::sys;
use anyhow::{Context, Result};
use aya::maps::{ArrayOfMaps, HashMap, Map, MapData, MapError};
use palisade_common::{names, CtKey, CtValue, FragKey, FragValue, FRAGMENTS_POD_ENTRIES};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, AsRawFd};

/// One pod's conntrack table, as the kernel keeps it.
pub type PodTable = HashMap<MapData, CtKey, CtValue>;
/// One pod's fragment records.
pub type FragTable = HashMap<MapData, FragKey, FragValue>;

pub struct PodTables {
    fragments: PodFragments,
    outer: ArrayOfMaps<MapData, PodTable>,
    /// A second handle on the outer map, for deletes (the typed one hides
    /// its descriptor).
    outer_data: MapData,
    /// The node-wide table, whose entries of a pod move into the pod's
    /// table when it gets one.
    shared: PodTable,
    /// The inner-map template, its capacity the one of each new table.
    shape: MapShape,
    /// Slots known to hold a table (created or found since start).
    have: BTreeSet<u16>,
    /// (slot, ifindex, whether a new interface took the slot) of the pods
    /// programmed since the last `flush`.
    wanted: Vec<(u16, u32, bool)>,
}

/// `BPF_NOEXIST`: an entry the datapath wrote meanwhile is newer.
const NOEXIST: u64 = 1;

impl PodTables {
    pub fn take(loaded: &mut Loaded) -> Result<Self> {
        let outer = take_typed(loaded, names::CONNTRACK_POD)?;
        let shared = take_typed(loaded, names::CONNTRACK)?;
        let outer_data = open_pinned(loaded, names::CONNTRACK_POD)?;
        let shape = MapShape {
            max_entries: palisade_common::CONNTRACK_POD_DEFAULT,
            ..loaded.inner.conntrack
        };
        Ok(PodTables {
            fragments: PodFragments::take(loaded)?,
            outer,
            outer_data,
            shared,
            shape,
            have: BTreeSet::new(),
            wanted: Vec::new(),
        })
    }

    /// Entries of each table created from now on; 0 creates none (every
    /// pod then uses the node-wide table).
    pub fn set_entries(&mut self, entries: u32) {
        self.shape.max_entries = entries;
    }

    /// Asks for a table for the pod of interface `ifindex` in `slot`: a
    /// new, empty one when a new interface took the slot (`fresh`), else
    /// the one it has (a record re-adopted after a restart keeps its table
    /// and its flows). Done by the next `flush`.
    pub fn want(&mut self, slot: u16, ifindex: u32, fresh: bool) {
        let queued = self.wanted.iter().any(|w| w.0 == slot);
        if !fresh && (queued || self.have.contains(&slot)) {
            return;
        }
        self.have.remove(&slot);
        self.wanted.retain(|w| w.0 != slot);
        self.wanted.push((slot, ifindex, fresh));
    }

    /// Creates the tables asked for and links them, with the entries their
    /// pods have in the node-wide table (those an upgrade carried over, or
    /// made while the pod had no table): copied before the table is
    /// linked, then once more for what the datapath added meanwhile, then
    /// deleted there. A table that cannot be created leaves the pod on the
    /// node-wide table, with a warning: its flows stay tracked.
    pub fn flush(&mut self) {
        let wanted = std::mem::take(&mut self.wanted);
        let mut new = BTreeMap::new();
        for (slot, ifindex, fresh) in wanted {
            if self.shape.max_entries == 0 {
                if fresh {
                    self.clear(slot);
                }
                continue;
            }
            self.fragments.ensure(slot, fresh);
            if !fresh && self.outer.get(&(slot as u32), 0).is_ok() {
                self.have.insert(slot);
                continue;
            }
            match self.create() {
                Ok(table) => {
                    new.insert(ifindex, (slot, table));
                }
                Err(e) => {
                    tracing::warn!(slot, ifindex, error = %format!("{e:#}"), "no conntrack table of its own for a pod; it shares the node-wide one");
                    if fresh {
                        // Whatever another pod left in the slot must not
                        // serve this one.
                        self.clear(slot);
                    }
                }
            }
        }
        if new.is_empty() {
            return;
        }
        self.copy_shared(&mut new, 0, false);
        let mut linked = BTreeMap::new();
        for (ifindex, (slot, table)) in new {
            match self.outer.set(slot as u32, &table, 0) {
                Ok(()) => {
                    self.have.insert(slot);
                    linked.insert(ifindex, (slot, table));
                }
                Err(e) => {
                    tracing::warn!(slot, ifindex, error = %e, "cannot link a pod's conntrack table; it shares the node-wide one");
                }
            }
        }
        self.copy_shared(&mut linked, NOEXIST, true);
    }

    /// Moves what the node-wide table still holds of the pods in `slots`
    /// (ifindex -> slot) into their tables: after an upgrade, what the
    /// older layout's classifiers added there until their links moved.
    /// Entries of interfaces no record names any more (pods gone before
    /// or during the upgrade) are deleted: nothing would evict them, and
    /// every new pod's table would walk past them.
    pub fn absorb(&mut self, slots: &BTreeMap<u32, u16>) {
        let mut tables = BTreeMap::new();
        for (ifindex, slot) in slots {
            if !self.have.contains(slot) {
                continue;
            }
            if let Ok(table) = self.outer.get(&(*slot as u32), 0) {
                tables.insert(*ifindex, (*slot, table));
            }
        }
        if !tables.is_empty() {
            self.copy_shared(&mut tables, NOEXIST, true);
        }
        let gone: Vec<CtKey> = self
            .shared
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !slots.contains_key(&k.ifindex))
            .collect();
        for k in &gone {
            let _ = self.shared.remove(k);
        }
        if !gone.is_empty() {
            tracing::info!(
                entries = gone.len(),
                "conntrack entries of interfaces gone deleted from the node-wide table"
            );
        }
    }

    /// Drops `slot`'s table (the kernel frees it once no packet holds it).
    pub fn clear(&mut self, slot: u16) {
        self.fragments.clear(slot);
        self.have.remove(&slot);
        self.wanted.retain(|w| w.0 != slot);
        if let Err(e) = sys::delete_index(self.outer_data.fd().as_fd().as_raw_fd(), slot as u32) {
            tracing::warn!(slot, error = %e, "cannot drop a removed pod's conntrack table");
        }
    }

    fn create(&self) -> Result<PodTable> {
        let (table, _) = create_inner(&self.shape, "palisade_ct_pod", Map::LruHashMap)?;
        Ok(table)
    }

    /// Copies the node-wide entries of the interfaces in `tables` into
    /// their tables (with `flags`), and deletes them there if `remove`.
    fn copy_shared(
        &mut self,
        tables: &mut BTreeMap<u32, (u16, PodTable)>,
        flags: u64,
        remove: bool,
    ) {
        let entries: Vec<(CtKey, CtValue)> = self
            .shared
            .iter()
            .filter_map(|e| e.ok())
            .filter(|(k, _)| tables.contains_key(&k.ifindex))
            .collect();
        let mut moved = 0;
        for (k, v) in entries {
            let Some((_, table)) = tables.get_mut(&k.ifindex) else {
                continue;
            };
            // Best effort: an entry not copied costs its flow one policy
            // decision, as any entry the LRU evicts.
            let _ = table.insert(k, v, flags);
            if remove && self.shared.remove(&k).is_ok() {
                moved += 1;
            }
        }
        if moved > 0 {
            tracing::info!(
                entries = moved,
                "conntrack entries moved from the node-wide table into pod tables"
            );
        }
    }
}

fn take_typed<T: TryFrom<Map, Error = MapError>>(loaded: &mut Loaded, name: &str) -> Result<T> {
    T::try_from(take(loaded, name)?)
        .with_context(|| format!("map {name} does not have the layout of palisade_common"))
}

/// Each pod's own fragment records (`FRAGMENTS_POD`). Records live
/// seconds, so a new table starts empty; nothing moves from the node-wide
/// one.
struct PodFragments {
    outer: ArrayOfMaps<MapData, FragTable>,
    outer_data: MapData,
    shape: MapShape,
}

impl PodFragments {
    fn take(loaded: &mut Loaded) -> Result<Self> {
        let outer = take_typed(loaded, names::FRAGMENTS_POD)?;
        let outer_data = open_pinned(loaded, names::FRAGMENTS_POD)?;
        let shape = MapShape {
            max_entries: FRAGMENTS_POD_ENTRIES,
            ..loaded.inner.fragments
        };
        Ok(PodFragments {
            outer,
            outer_data,
            shape,
        })
    }

    /// A table for `slot`: a new one if `fresh`, else the one it has.
    fn ensure(&mut self, slot: u16, fresh: bool) {
        if !fresh && self.outer.get(&(slot as u32), 0).is_ok() {
            return;
        }
        let made = create_inner(&self.shape, "palisade_frag_pod", Map::LruHashMap)
            .and_then(|(table, _): (FragTable, _)| Ok(self.outer.set(slot as u32, &table, 0)?));
        if let Err(e) = made {
            tracing::warn!(slot, error = %format!("{e:#}"), "no fragment table of its own for a pod; it shares the node-wide one");
            if fresh {
                self.clear(slot);
            }
        }
    }

    fn clear(&mut self, slot: u16) {
        if let Err(e) = sys::delete_index(self.outer_data.fd().as_fd().as_raw_fd(), slot as u32) {
            tracing::warn!(slot, error = %e, "cannot drop a removed pod's fragment table");
        }
    }
}
