//! The map writer: brings the pinned maps to a desired state with the least
//! writes, and updates each pod atomically.
//!
//! The writer keeps a cache of what the kernel holds (endpoint records and
//! inner map contents), built by reading the pinned maps when it starts, so
//! an agent restart rewrites nothing that did not change. Per pod:
//!
//! - same endpoint record and same inner maps: nothing is written;
//! - same inner maps, different record (addresses, any-peer bits): one
//!   endpoint write;
//! - otherwise: new inner maps under `generation ^ 1`, then the endpoint
//!   record pointing at them in ONE map update, then the old generation's
//!   outer entries are deleted. A packet sees the old policy or the new one.
//!   The inner maps of every pod of a round are linked in one batch per
//!   outer map, and the old ones unlinked likewise (`commit`): each outer
//!   map update waits for an RCU grace period, so a round costs a few of
//!   them however many pods it rewrites.
//!
//! A pod whose maps cannot be written (capacity, kernel error) is switched to
//! `EP_DENY_ALL`: it fails closed, never open.

use super::encode::{self, DirMaps, Lpm, PodMaps};
use super::maps::{dir_keys, NodeMaps, StagedDir};
use super::pod_tables::PodTables;
use anyhow::Result;
use palisade_common::{
    Endpoint, IpKey, PolicyKey, EP_DENY_ALL, EP_ISOLATED_EGRESS, EP_ISOLATED_INGRESS, EP_PENDING,
    IDENTITY_HOST, MAX_ENDPOINTS,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// What one interface should hold. (One value per interface and round:
/// the size difference of the variants does not matter.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Desired {
    /// A local pod's compiled policy (`label` names it in logs).
    Pod {
        label: String,
        endpoint: Endpoint,
        maps: PodMaps,
    },
    /// An interface whose pod policy is not known yet: drop.
    Pending { label: String },
}

impl Desired {
    fn label(&self) -> &str {
        match self {
            Desired::Pod { label, .. } | Desired::Pending { label } => label,
        }
    }

    fn parts(&self) -> (Endpoint, PodMaps) {
        match self {
            Desired::Pod { endpoint, maps, .. } => (*endpoint, maps.clone()),
            Desired::Pending { .. } => (encode::pending_endpoint(), PodMaps::default()),
        }
    }
}

/// What the kernel holds for one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Programmed {
    endpoint: Endpoint,
    maps: PodMaps,
}

/// Outcome of one interface's update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    /// Only the endpoint record was rewritten (same generation).
    Record,
    /// New inner maps and a generation flip (finished by `commit`).
    Flipped,
    /// The maps could not be written: the pod is now denied everything.
    FailedClosed,
}

/// Counts of one sync, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteReport {
    pub unchanged: usize,
    pub records: usize,
    pub flipped: usize,
    pub pending: usize,
    pub removed: usize,
    /// Pods denied everything because their maps could not be written:
    /// (label, error).
    pub failed: Vec<(String, String)>,
    pub identities_set: usize,
    pub identities_removed: usize,
}

/// Keys whose maps the classifier may read for this record.
pub fn live_keys(ifindex: u32, ep: &Endpoint) -> Vec<PolicyKey> {
    if ep.flags & (EP_PENDING | EP_DENY_ALL) != 0 {
        return Vec::new();
    }
    let [ing, eg] = dir_keys(ifindex, ep.generation);
    let mut out = Vec::new();
    if ep.flags & EP_ISOLATED_INGRESS != 0 {
        out.push(ing);
    }
    if ep.flags & EP_ISOLATED_EGRESS != 0 {
        out.push(eg);
    }
    out
}

pub struct Writer {
    maps: NodeMaps,
    conntrack: PodTables,
    cache: BTreeMap<u32, Programmed>,
    identities: BTreeMap<Lpm<IpKey>, u32>,
    /// The node's own addresses as the trie last held them.
    host: BTreeSet<IpAddr>,
    /// Counter slot of each interface with a record (`Endpoint::slot`).
    slots: BTreeMap<u32, u16>,
    /// Generation flips staged by `program`, finished by `commit`.
    pending: Vec<Flip>,
    /// An address changed or lost its identity since the last `commit`:
    /// a peer's labels changed, or a pod went away (its address may come
    /// back as another pod's). Every pod's epoch then moves on, so that
    /// established flows are decided again against what the address is
    /// now, not what it was when they were allowed.
    identities_moved: bool,
}

/// The epoch of a record replacing `current` (`Endpoint::epoch`): the
/// next one, so that conntrack entries of the old policy are decided
/// again. A new record starts from the clock, not 0, so that entries left
/// under its ifindex by an earlier interface do not match it.
fn next_epoch(current: Option<&Endpoint>) -> u32 {
    match current {
        Some(c) => c.epoch.wrapping_add(1),
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos() ^ d.as_secs() as u32),
    }
}

/// A pod whose new generation is built but not linked yet.
struct Flip {
    ifindex: u32,
    label: String,
    /// The record pointing at the new generation.
    endpoint: Endpoint,
    maps: PodMaps,
    old_gen: Option<u32>,
    staged: Vec<StagedDir>,
}

/// Marks a re-adopted record whose slot must be reassigned (taken twice, or
/// out of range, as in records of versions without counters): the record
/// then differs from any desired one and is rewritten.
const SLOT_REASSIGN: u16 = u16::MAX;

/// The slots of re-adopted records, first come first served; duplicates and
/// out-of-range slots are marked in `cache` for reassignment.
fn adopt_slots(cache: &mut BTreeMap<u32, Programmed>) -> BTreeMap<u32, u16> {
    let mut taken = BTreeSet::new();
    let mut slots = BTreeMap::new();
    for (ifindex, p) in cache.iter_mut() {
        let slot = p.endpoint.slot;
        if (slot as u32) < MAX_ENDPOINTS && taken.insert(slot) {
            slots.insert(*ifindex, slot);
        } else {
            p.endpoint.slot = SLOT_REASSIGN;
        }
    }
    slots
}

impl Writer {
    /// Builds the cache from what is pinned.
    pub fn new(maps: NodeMaps, conntrack: PodTables) -> Result<Self> {
        let mut cache = BTreeMap::new();
        for (ifindex, endpoint) in maps.read_endpoints()? {
            let [ing_key, eg_key] = dir_keys(ifindex, endpoint.generation);
            let live = live_keys(ifindex, &endpoint);
            let read = |k: PolicyKey| -> Result<Option<DirMaps>> {
                if live.contains(&k) {
                    maps.read_dir(k)
                } else {
                    Ok(None)
                }
            };
            let pod_maps = PodMaps {
                ingress: read(ing_key)?,
                egress: read(eg_key)?,
            };
            cache.insert(
                ifindex,
                Programmed {
                    endpoint,
                    maps: pod_maps,
                },
            );
        }
        let identities = maps.read_identities()?;
        let slots = adopt_slots(&mut cache);
        Ok(Writer {
            slots,
            pending: Vec::new(),
            maps,
            conntrack,
            cache,
            identities,
            host: BTreeSet::new(),
            identities_moved: false,
        })
    }

    /// The identity trie's host entries, as pinned.
    pub fn identities(&self) -> BTreeMap<IpAddr, u32> {
        self.identities
            .iter()
            .filter_map(|(k, id)| encode::host_ip(*k).map(|ip| (ip, *id)))
            .collect()
    }

    /// Interfaces that have an endpoint record.
    pub fn interfaces(&self) -> BTreeSet<u32> {
        self.cache.keys().copied().collect()
    }

    /// The live endpoint record of an interface, as cached.
    pub fn endpoint(&self, ifindex: u32) -> Option<Endpoint> {
        self.cache.get(&ifindex).map(|p| p.endpoint)
    }

    /// Adds and updates identities (before pods, so that a new pod's peers
    /// resolve as soon as its policy is live). The node's own addresses
    /// (`node`) are `IDENTITY_HOST`, over any pod identity claiming them.
    ///
    /// `scope`: the only addresses whose identity may have changed since
    /// the last round that wrote the trie (the compiler's journal); `None`
    /// compares every address. The node's own addresses, and those that
    /// were, are always compared.
    pub fn add_identities(
        &mut self,
        desired: &BTreeMap<IpAddr, u32>,
        node: &BTreeSet<IpAddr>,
        scope: Option<&BTreeSet<IpAddr>>,
        report: &mut WriteReport,
    ) -> Result<()> {
        let host = node.iter().map(|ip| (*ip, IDENTITY_HOST));
        let pod = |ip: &IpAddr| desired.get(ip).map(|id| (*ip, *id));
        let pods: Vec<(IpAddr, u32)> = match scope {
            None => desired.iter().map(|(ip, id)| (*ip, *id)).collect(),
            Some(s) => s.iter().chain(&self.host).filter_map(pod).collect(),
        };
        let pods = pods.into_iter().filter(|(ip, _)| !node.contains(ip));
        for (ip, id) in pods.chain(host) {
            let key = encode::host_key(ip);
            let was = self.identities.get(&key).copied();
            if was != Some(id) {
                self.identities_moved |= was.is_some();
                self.maps.set_identity(key, id)?;
                self.identities.insert(key, id);
                report.identities_set += 1;
            }
        }
        Ok(())
    }

    /// Removes identities of addresses no longer in the cluster (after pods,
    /// so a policy never points at an identity that just vanished); `scope`
    /// as for [`Writer::add_identities`]. The trie then holds the node's
    /// addresses as they are now.
    pub fn remove_stale_identities(
        &mut self,
        desired: &BTreeMap<IpAddr, u32>,
        node: &BTreeSet<IpAddr>,
        scope: Option<&BTreeSet<IpAddr>>,
        report: &mut WriteReport,
    ) -> Result<()> {
        let wanted = |k: &Lpm<IpKey>| {
            encode::host_ip(*k).is_some_and(|ip| desired.contains_key(&ip) || node.contains(&ip))
        };
        let stale: Vec<Lpm<IpKey>> = match scope {
            None => self
                .identities
                .keys()
                .filter(|k| !wanted(k))
                .copied()
                .collect(),
            Some(s) => s
                .iter()
                .chain(&self.host)
                .map(|ip| encode::host_key(*ip))
                .filter(|k| self.identities.contains_key(k) && !wanted(k))
                .collect(),
        };
        for key in stale {
            self.identities_moved = true;
            self.maps.remove_identity(key)?;
            self.identities.remove(&key);
            report.identities_removed += 1;
        }
        self.host = node.clone();
        Ok(())
    }

    /// Brings one interface to `desired`.
    pub fn program(
        &mut self,
        ifindex: u32,
        desired: &Desired,
        report: &mut WriteReport,
    ) -> Result<Change> {
        let (mut endpoint, maps) = desired.parts();
        endpoint.slot = self.slot(ifindex)?;
        self.conntrack.want(endpoint.slot, ifindex, false);
        if matches!(desired, Desired::Pending { .. }) {
            report.pending += 1;
        }
        let current = self.cache.get(&ifindex).cloned();
        if let Some(cur) = &current {
            if cur.maps == maps {
                if encode::same_policy(&cur.endpoint, &endpoint) && !self.identities_moved {
                    report.unchanged += 1;
                    return Ok(Change::Unchanged);
                }
                endpoint.generation = cur.endpoint.generation;
                endpoint.epoch = next_epoch(Some(&cur.endpoint));
                self.maps.set_endpoint(ifindex, &endpoint)?;
                self.cache.insert(ifindex, Programmed { endpoint, maps });
                report.records += 1;
                return Ok(Change::Record);
            }
        }
        let old_gen = current.as_ref().map(|c| c.endpoint.generation);
        let new_gen = old_gen.map_or(0, |g| g ^ 1);
        endpoint.generation = new_gen;
        endpoint.epoch = next_epoch(current.as_ref().map(|c| &c.endpoint));
        let new_keys = dir_keys(ifindex, new_gen);
        match self.stage(&new_keys, &maps) {
            Ok(staged) => {
                // Linked and flipped by `commit`, with every other pod of
                // the round.
                self.pending.push(Flip {
                    ifindex,
                    label: desired.label().to_string(),
                    endpoint,
                    maps,
                    old_gen,
                    staged,
                });
                report.flipped += 1;
                Ok(Change::Flipped)
            }
            Err(e) => {
                self.failed(ifindex, desired.label(), endpoint, old_gen, e, report)?;
                Ok(Change::FailedClosed)
            }
        }
    }

    /// Builds (but does not link) the inner maps of both directions under
    /// `keys`; a direction that is not isolated gets none.
    fn stage(&self, keys: &[PolicyKey; 2], maps: &PodMaps) -> Result<Vec<StagedDir>> {
        let mut out = Vec::new();
        for (key, dir) in keys.iter().zip([&maps.ingress, &maps.egress]) {
            if let Some(d) = dir {
                out.push(self.maps.stage_dir(*key, d)?);
            }
        }
        Ok(out)
    }

    /// Finishes the round's generation flips: links every staged inner map
    /// (one batch per outer map), then writes each pod's record (its flip),
    /// then unlinks the old generations (one batch per outer map). Each
    /// outer-map batch costs one RCU grace period, whatever the number of
    /// pods. Should the kernel refuse a batch, the pods are linked one by
    /// one, and only those it refuses fail closed.
    pub fn commit(&mut self, report: &mut WriteReport) -> Result<()> {
        self.conntrack.flush();
        // Every pod of the round has its new epoch by now.
        self.identities_moved = false;
        let pending = std::mem::take(&mut self.pending);
        let old = self.flip(pending, report)?;
        // The classifiers read the records from their cells: those follow
        // before the old generations go.
        self.maps.flush_cells()?;
        self.maps.delete_dirs(&old)
    }

    /// Links the staged inner maps of `pending` and writes each pod's
    /// record; returns the keys of the generations they left.
    fn flip(&mut self, pending: Vec<Flip>, report: &mut WriteReport) -> Result<Vec<PolicyKey>> {
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let all: Vec<&StagedDir> = pending.iter().flat_map(|f| &f.staged).collect();
        let linked_all = self.maps.link(&all).is_ok();
        crate::crash::point(crate::crash::FLIP_LINKED);
        let mut old = Vec::new();
        for flip in pending {
            if !linked_all {
                let one: Vec<&StagedDir> = flip.staged.iter().collect();
                if let Err(e) = self.maps.link(&one) {
                    report.flipped -= 1;
                    let Flip {
                        ifindex,
                        label,
                        endpoint,
                        old_gen,
                        ..
                    } = flip;
                    self.failed(ifindex, &label, endpoint, old_gen, e, report)?;
                    continue;
                }
            }
            // The flip: from this write on, packets read the new maps.
            if let Err(e) = self.maps.set_endpoint(flip.ifindex, &flip.endpoint) {
                // A new record in a full ENDPOINTS: this interface stays
                // without one (its classifiers drop everything) and is
                // retried; the pods after it must still flip, or a change
                // taking away what their old policy allowed would wait.
                report.flipped -= 1;
                let msg = format!("{e:#}");
                tracing::error!(pod = flip.label, ifindex = flip.ifindex, error = %msg, "cannot write the endpoint record; the interface drops everything until it is written");
                report.failed.push((flip.label, msg));
                old.extend(flip.staged.iter().map(|d| d.key));
                continue;
            }
            if let Some(g) = flip.old_gen {
                old.extend(dir_keys(flip.ifindex, g));
            }
            self.cache.insert(
                flip.ifindex,
                Programmed {
                    endpoint: flip.endpoint,
                    maps: flip.maps,
                },
            );
        }
        // Records written, cells not yet: a restart finds them behind.
        crate::crash::point(crate::crash::FLIP_FLIPPED);
        Ok(old)
    }

    /// Logs and reports a pod whose maps could not be written, and denies
    /// it everything.
    fn failed(
        &mut self,
        ifindex: u32,
        label: &str,
        endpoint: Endpoint,
        old_gen: Option<u32>,
        e: anyhow::Error,
        report: &mut WriteReport,
    ) -> Result<()> {
        let msg = format!("{e:#}");
        tracing::error!(pod = label, ifindex, error = %msg, "cannot write policy maps; denying all traffic of the pod");
        report.failed.push((label.to_string(), msg));
        self.fail_closed(ifindex, endpoint, old_gen)
    }

    /// The interface's counter slot: its own, or the lowest free one (its
    /// counters zeroed first).
    fn slot(&mut self, ifindex: u32) -> Result<u16> {
        if let Some(s) = self.slots.get(&ifindex) {
            return Ok(*s);
        }
        let used: BTreeSet<u16> = self.slots.values().copied().collect();
        let slot = (0..MAX_ENDPOINTS as u16)
            .find(|s| !used.contains(s))
            .ok_or_else(|| anyhow::anyhow!("all {MAX_ENDPOINTS} endpoint slots are in use"))?;
        self.maps.reset_counters(slot)?;
        self.conntrack.want(slot, ifindex, true);
        self.slots.insert(ifindex, slot);
        Ok(slot)
    }

    /// Sets which events the classifiers emit (`CONFIG_EVENTS_*` bits).
    pub fn set_events(&mut self, events: u32) -> Result<()> {
        self.maps
            .set_config(palisade_common::Config { events, _pad: 0 })
    }

    /// Moves the node-wide conntrack entries of pods with tables of their
    /// own into those (`PodTables::absorb`).
    pub fn absorb_conntrack(&mut self) {
        self.conntrack.absorb(&self.slots);
    }

    /// Entries of each pod conntrack table created from now on.
    pub fn set_conntrack_per_pod(&mut self, entries: u32) {
        self.conntrack.set_entries(entries);
    }

    /// The counter slots of the interfaces with a record.
    pub fn slots(&self) -> &BTreeMap<u32, u16> {
        &self.slots
    }

    fn fail_closed(&mut self, ifindex: u32, desired: Endpoint, old_gen: Option<u32>) -> Result<()> {
        let endpoint = Endpoint {
            flags: EP_DENY_ALL,
            generation: old_gen.unwrap_or(0),
            addrs: desired.addrs,
            slot: desired.slot,
            ..Endpoint::default()
        };
        self.maps.set_endpoint(ifindex, &endpoint)?;
        self.maps.flush_cells()?;
        self.maps
            .delete_dirs(&[dir_keys(ifindex, 0), dir_keys(ifindex, 1)].concat())?;
        self.cache.insert(
            ifindex,
            Programmed {
                endpoint,
                maps: PodMaps::default(),
            },
        );
        Ok(())
    }

    /// Deletes an interface's endpoint record and inner maps (after its
    /// classifiers were detached).
    pub fn remove(&mut self, ifindex: u32, report: &mut WriteReport) -> Result<()> {
        self.maps.remove_endpoint(ifindex)?;
        self.maps
            .delete_dirs(&[dir_keys(ifindex, 0), dir_keys(ifindex, 1)].concat())?;
        if self.cache.remove(&ifindex).is_some() {
            report.removed += 1;
        }
        if let Some(slot) = self.slots.remove(&ifindex) {
            self.conntrack.clear(slot);
        }
        Ok(())
    }

    /// Deletes outer entries no endpoint's live generation uses (left by an
    /// interrupted update or a removed interface).
    pub fn collect_garbage(&mut self) -> Result<usize> {
        let live: BTreeSet<PolicyKey> = self
            .cache
            .iter()
            .flat_map(|(i, p)| live_keys(*i, &p.endpoint))
            .collect();
        let stale: Vec<PolicyKey> = self
            .maps
            .outer_keys()?
            .into_iter()
            .filter(|k| !live.contains(k))
            .collect();
        self.maps.delete_dirs(&stale)?;
        Ok(stale.len())
    }
}
