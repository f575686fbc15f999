//! The classifiers' telemetry maps, opened at their pins: counters per pod
//! slot and rule column, lost events, the event ring buffer and the node's
//! event switches (`CONFIG`).
//!
//! These maps are opened from their pins rather than taken from the loaded
//! object, so the readers (metrics scrapes, the event reader thread) hold
//! their own descriptors and never borrow the writer's state.

use super::load::PinLayout;
use anyhow::{Context, Result};
use aya::maps::{Array, Map, MapData, MapInfo, PerCpuArray, RingBuf};
use palisade_common::{
    names, Config, Counters, RuleCounter, EVENTS_LOST_FULL, EVENTS_LOST_SAMPLED, RULE_COLS,
};
use std::path::Path;

/// Read handles on the counter maps, and the `CONFIG` switch.
pub struct Telemetry {
    counters: PerCpuArray<MapData, Counters>,
    rule_counters: Array<MapData, RuleCounter>,
    events_lost: PerCpuArray<MapData, u64>,
    config: Array<MapData, Config>,
}

fn open_typed<T>(layout: &PinLayout, name: &str) -> Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let path = layout.map(name);
    let data =
        MapData::from_pin(&path).with_context(|| format!("open pinned map {}", path.display()))?;
    let map = Map::from_map_data(data)
        .with_context(|| format!("pinned map {} has an unknown type", path.display()))?;
    T::try_from(map).with_context(|| {
        format!(
            "pinned map {} does not have the layout of palisade_common",
            path.display()
        )
    })
}

/// Sum of a per-CPU counter struct over the CPUs.
fn add(a: &mut Counters, b: &Counters) {
    a.allowed_packets += b.allowed_packets;
    a.allowed_bytes += b.allowed_bytes;
    a.denied_packets += b.denied_packets;
    a.denied_bytes += b.denied_bytes;
    a.would_deny_packets += b.would_deny_packets;
    a.would_deny_bytes += b.would_deny_bytes;
}

impl Telemetry {
    /// Opens the node's pinned telemetry maps (after `load` pinned them).
    pub fn open(layout: &PinLayout) -> Result<Self> {
        Ok(Telemetry {
            counters: open_typed(layout, names::COUNTERS)?,
            rule_counters: open_typed(layout, names::RULE_COUNTERS)?,
            events_lost: open_typed(layout, names::EVENTS_LOST)?,
            config: open_typed(layout, names::CONFIG)?,
        })
    }

    /// The counters of one slot and direction, summed over CPUs.
    pub fn counters(&self, slot: u32, direction: u32) -> Result<Counters> {
        let index = slot * 2 + direction;
        let per_cpu = self
            .counters
            .get(&index, 0)
            .with_context(|| format!("read {}[{index}]", names::COUNTERS))?;
        let mut sum = Counters::default();
        for c in per_cpu.iter() {
            add(&mut sum, c);
        }
        Ok(sum)
    }

    /// One rule column of one slot and direction.
    pub fn rule_counter(&self, slot: u32, direction: u32, column: u32) -> Result<RuleCounter> {
        let index = (slot * 2 + direction) * RULE_COLS + column;
        self.rule_counters
            .get(&index, 0)
            .with_context(|| format!("read {}[{index}]", names::RULE_COUNTERS))
    }

    /// Events lost so far: (rate-limited, ring buffer full), summed over CPUs.
    pub fn events_lost(&self) -> Result<(u64, u64)> {
        let read = |i: u32| -> Result<u64> {
            Ok(self
                .events_lost
                .get(&i, 0)
                .with_context(|| format!("read {}[{i}]", names::EVENTS_LOST))?
                .iter()
                .sum())
        };
        Ok((read(EVENTS_LOST_SAMPLED)?, read(EVENTS_LOST_FULL)?))
    }

    /// The node's event switches.
    pub fn config(&self) -> Result<Config> {
        self.config
            .get(&0, 0)
            .with_context(|| format!("read {}", names::CONFIG))
    }

    /// Sets or clears `bits` in `Config::events`, keeping the other bits.
    pub fn set_events(&mut self, bits: u32, on: bool) -> Result<()> {
        let mut c = self.config()?;
        if on {
            c.events |= bits;
        } else {
            c.events &= !bits;
        }
        self.config
            .set(0, c, 0)
            .with_context(|| format!("write {}", names::CONFIG))
    }
}

/// The event ring buffer, opened at its pin. One consumer per node: the
/// agent holding the node's lock.
pub fn open_events(layout: &PinLayout) -> Result<RingBuf<MapData>> {
    open_typed(layout, names::EVENTS)
}

/// Size of one pinned map: entries present (`None` when they cannot be
/// counted) and capacity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSize {
    pub map: &'static str,
    pub entries: Option<u64>,
    pub capacity: u64,
}

/// The maps whose fill level matters to operators (the ones a busy node
/// can fill up), with their entry counts. Counting walks the keys, one
/// system call per entry: callers cache the result.
pub fn map_sizes(layout: &PinLayout) -> Vec<MapSize> {
    [
        names::ENDPOINTS,
        names::IDENTITIES,
        names::POLICY_IDENTITY,
        names::POLICY_CIDR,
        names::POLICY_PORT,
        names::POLICY_SPILL,
        names::CONNTRACK,
        names::FRAGMENTS,
    ]
    .into_iter()
    .filter_map(|name| map_size(&layout.map(name), name))
    .chain(
        [names::CONNTRACK_POD, names::FRAGMENTS_POD]
            .into_iter()
            .filter_map(|name| pod_tables_size(&layout.map(name), name)),
    )
    .collect()
}

/// The pods' own tables of an array of maps (`CONNTRACK_POD`,
/// `FRAGMENTS_POD`), summed: entries in all of them against their summed
/// capacity. A pod whose table is full evicts only its own entries; the
/// sum says how close the node's pods are, taken together.
fn pod_tables_size(path: &Path, name: &'static str) -> Option<MapSize> {
    let outer: aya::maps::ArrayOfMaps<MapData, MapData> = aya::maps::ArrayOfMaps::try_from(
        aya::maps::Map::ArrayOfMaps(MapData::from_pin(path).ok()?),
    )
    .ok()?;
    let (mut entries, mut capacity) = (Some(0u64), 0u64);
    for slot in 0..outer.len() {
        let Ok(table) = outer.get(&slot, 0) else {
            continue;
        };
        let room = table.info().map_or(0, |i| u64::from(i.max_entries()));
        capacity += room;
        entries = entries.zip(count_keys(&table, room)).map(|(a, b)| a + b);
    }
    Some(MapSize {
        map: name,
        entries,
        capacity,
    })
}

fn map_size(path: &Path, name: &'static str) -> Option<MapSize> {
    let info = MapInfo::from_pin(path).ok()?;
    let capacity = u64::from(info.max_entries());
    let entries = MapData::from_pin(path)
        .ok()
        .and_then(|data| count_keys(&data, capacity));
    Some(MapSize {
        map: name,
        entries,
        capacity,
    })
}

/// Walks the keys with `BPF_MAP_GET_NEXT_KEY`. An LRU map changes under
/// the walk (a deleted key restarts it from the beginning), so the walk is
/// bounded; a result past the capacity is clamped to it.
fn count_keys(data: &MapData, capacity: u64) -> Option<u64> {
    use std::os::fd::{AsFd, AsRawFd};
    let info = data.info().ok()?;
    let key_size = info.key_size() as usize;
    let fd = data.fd().as_fd().as_raw_fd();
    let mut key = vec![0u8; key_size];
    let mut next = vec![0u8; key_size];
    let mut n: u64 = 0;
    let mut first = true;
    let bound = capacity.saturating_mul(2).max(16);
    while n < bound {
        // SAFETY: a zeroed bpf_attr with the fields of BPF_MAP_GET_NEXT_KEY
        // set; both key buffers hold `key_size` bytes and outlive the call.
        let rc = unsafe {
            let mut attr: libc_bpf::BpfAttrNextKey = std::mem::zeroed();
            attr.map_fd = fd as u32;
            attr.key = if first { 0 } else { key.as_ptr() as u64 };
            attr.next_key = next.as_mut_ptr() as u64;
            libc::syscall(
                libc::SYS_bpf,
                libc_bpf::BPF_MAP_GET_NEXT_KEY,
                &attr as *const _,
                std::mem::size_of::<libc_bpf::BpfAttrNextKey>(),
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return (err.raw_os_error() == Some(libc::ENOENT)).then_some(n.min(capacity));
        }
        first = false;
        std::mem::swap(&mut key, &mut next);
        n += 1;
    }
    Some(n.min(capacity))
}

/// The one `bpf(2)` command this module issues itself: aya's typed key
/// iterators need the key type, and counting needs none.
mod libc_bpf {
    pub const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

    /// The `BPF_MAP_*_ELEM` part of `union bpf_attr`.
    #[repr(C)]
    pub struct BpfAttrNextKey {
        pub map_fd: u32,
        pub _pad: u32,
        pub key: u64,
        pub next_key: u64,
        pub flags: u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_field_by_field() {
        let mut a = Counters {
            allowed_packets: 1,
            allowed_bytes: 2,
            denied_packets: 3,
            denied_bytes: 4,
            would_deny_packets: 5,
            would_deny_bytes: 6,
        };
        let b = a;
        add(&mut a, &b);
        assert_eq!(
            a,
            Counters {
                allowed_packets: 2,
                allowed_bytes: 4,
                denied_packets: 6,
                denied_bytes: 8,
                would_deny_packets: 10,
                would_deny_bytes: 12,
            }
        );
    }
}
