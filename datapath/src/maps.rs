//! Typed handles on the pinned node maps: reading their contents back in the
//! wire form of `encode`, creating and filling inner maps, and the single
//! writes the writer sequences.

use super::batch;
use super::cells::EndpointCells;
use super::encode::{DirMaps, Lpm};
use super::load::{InnerShapes, Loaded, MapShape};
use anyhow::{Context, Result};
use aya::maps::lpm_trie::Key;
use aya::maps::{
    Array, HashMap, HashOfMaps, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuValues,
};
use palisade_common::{
    names, Config, Counters, Endpoint, IpKey, PolicyKey, PortKey, RuleBits, RuleCounter, SpillKey,
    SpillValue, DIR_EGRESS, DIR_INGRESS, RULE_COLS,
};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

pub type IdentityInner = HashMap<MapData, u32, RuleBits>;
pub type CidrInner = LpmTrie<MapData, IpKey, RuleBits>;
pub type PortInner = LpmTrie<MapData, PortKey, RuleBits>;
pub type SpillInner = HashMap<MapData, SpillKey, SpillValue>;

/// The node's pinned maps the writer programs.
pub struct NodeMaps {
    endpoints: HashMap<MapData, u32, Endpoint>,
    /// The classifiers' copies of `endpoints` (`cells.rs`).
    cells: EndpointCells,
    identities: LpmTrie<MapData, IpKey, u32>,
    policy_identity: HashOfMaps<MapData, PolicyKey, IdentityInner>,
    policy_cidr: HashOfMaps<MapData, PolicyKey, CidrInner>,
    policy_port: HashOfMaps<MapData, PolicyKey, PortInner>,
    policy_spill: HashOfMaps<MapData, PolicyKey, SpillInner>,
    counters: PerCpuArray<MapData, Counters>,
    rule_counters: Array<MapData, RuleCounter>,
    config: Array<MapData, Config>,
    /// Second handles on the four outer maps, in `OUTER` order, for the
    /// batch calls (`batch.rs`).
    outer: [MapData; 4],
    inner: InnerShapes,
}

/// The outer maps, in the order of `StagedDir::fds` and `NodeMaps::outer`.
const OUTER: [&str; 4] = [
    names::POLICY_IDENTITY,
    names::POLICY_CIDR,
    names::POLICY_PORT,
    names::POLICY_SPILL,
];

/// One pod direction's four inner maps, created and filled but not yet
/// linked into the outer maps: descriptors in `OUTER` order.
pub struct StagedDir {
    pub key: PolicyKey,
    fds: [OwnedFd; 4],
}

/// A second handle on the pinned map `name` (a typed handle hides its
/// descriptor).
pub(crate) fn open_pinned(loaded: &Loaded, name: &str) -> Result<MapData> {
    let pin = loaded.layout.map(name);
    MapData::from_pin(&pin).with_context(|| format!("open pinned map {}", pin.display()))
}

/// Second handles on the pinned outer maps (the typed ones in `NodeMaps`
/// hide their descriptors).
fn open_outer(loaded: &Loaded) -> Result<[MapData; 4]> {
    let open = |name: &str| open_pinned(loaded, name);
    Ok([
        open(OUTER[0])?,
        open(OUTER[1])?,
        open(OUTER[2])?,
        open(OUTER[3])?,
    ])
}

/// The template `shape` with room for exactly `entries` entries (at least
/// one, at most the template's). The kernel checks an inner map's type,
/// key and value sizes and flags against the outer map's template, not its
/// capacity; and a hash map's bucket array is allocated for its capacity
/// even without preallocation: a template-sized spill map alone costs
/// 4 MiB. Inner maps are never added to in place (a change is a new
/// generation), so exact sizes suffice.
fn sized(shape: &MapShape, entries: usize) -> MapShape {
    let n = u32::try_from(entries).unwrap_or(u32::MAX);
    MapShape {
        max_entries: n.clamp(1, shape.max_entries),
        ..*shape
    }
}

/// Waits for every batch thread; the first error, if any.
fn join_all(jobs: Vec<std::thread::ScopedJoinHandle<'_, Result<()>>>) -> Result<()> {
    jobs.into_iter()
        .try_for_each(|j| j.join().expect("a batch thread panicked"))
}

/// The keys an outer map holds.
fn key_set(keys: impl Iterator<Item = Result<PolicyKey, MapError>>) -> Result<BTreeSet<PolicyKey>> {
    keys.map(|k| k.context("list policy outer map keys"))
        .collect()
}

/// A descriptor of our own on a map, kept past the typed handle.
fn own_fd(data: &MapData) -> Result<OwnedFd> {
    Ok(data.fd().as_fd().try_clone_to_owned()?)
}

pub(crate) fn take(loaded: &mut Loaded, name: &str) -> Result<Map> {
    loaded
        .ebpf
        .take_map(name)
        .with_context(|| format!("the eBPF object has no map {name}"))
}

/// A missing key is not an error when deleting or reading optional state.
fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => {
            Ok(())
        }
        other => other,
    }
}

fn is_missing(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// Creates an inner map with the outer map's template shape, typed as `T`
/// (which checks the key and value sizes against our types).
pub(crate) fn create_inner<T>(
    shape: &MapShape,
    name: &str,
    wrap: fn(MapData) -> Map,
) -> Result<(T, OwnedFd)>
where
    T: TryFrom<Map, Error = MapError>,
{
    let data = MapData::create(shape.obj(), name, None)
        .with_context(|| format!("create inner map ({shape})"))?;
    let fd = own_fd(&data)?;
    let typed = T::try_from(wrap(data)).with_context(|| {
        format!("inner map template ({shape}) does not fit palisade_common's types")
    })?;
    Ok((typed, fd))
}

impl NodeMaps {
    /// Takes the writer's maps out of the loaded object.
    pub fn take(loaded: &mut Loaded) -> Result<Self> {
        macro_rules! typed {
            ($name:expr) => {
                take(loaded, $name)?.try_into().with_context(|| {
                    format!("map {} does not have the layout of palisade_common", $name)
                })?
            };
        }
        let cells = EndpointCells::new(open_pinned(loaded, names::ENDPOINT_CELLS)?);
        let mut maps = NodeMaps {
            endpoints: typed!(names::ENDPOINTS),
            cells,
            identities: typed!(names::IDENTITIES),
            policy_identity: typed!(names::POLICY_IDENTITY),
            policy_cidr: typed!(names::POLICY_CIDR),
            policy_port: typed!(names::POLICY_PORT),
            policy_spill: typed!(names::POLICY_SPILL),
            counters: typed!(names::COUNTERS),
            rule_counters: typed!(names::RULE_COUNTERS),
            config: typed!(names::CONFIG),
            outer: open_outer(loaded)?,
            inner: loaded.inner.clone(),
        };
        // Before any write: the cells must hold the records pinned now.
        let records = maps.read_endpoints()?;
        maps.cells.sync(&records)?;
        Ok(maps)
    }

    /// Zeroes the counters of a pod slot before it is given to a new
    /// interface, so that no pod inherits another's counts.
    pub fn reset_counters(&mut self, slot: u16) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        for dir in [DIR_INGRESS, DIR_EGRESS] {
            let row = slot as u32 * 2 + dir;
            let zero = PerCpuValues::try_from(vec![Counters::default(); cpus])?;
            self.counters
                .set(row, zero, 0)
                .with_context(|| format!("reset COUNTERS[{row}]"))?;
            for col in 0..RULE_COLS {
                let i = row * RULE_COLS + col;
                self.rule_counters
                    .set(i, RuleCounter::default(), 0)
                    .with_context(|| format!("reset RULE_COUNTERS[{i}]"))?;
            }
        }
        Ok(())
    }

    pub fn config(&self) -> Result<Config> {
        self.config.get(&0, 0).context("read CONFIG")
    }

    pub fn set_config(&mut self, config: Config) -> Result<()> {
        self.config.set(0, config, 0).context("write CONFIG")
    }

    pub fn read_endpoints(&self) -> Result<BTreeMap<u32, Endpoint>> {
        let mut out = BTreeMap::new();
        for item in self.endpoints.iter() {
            let (k, v) = item.context("read ENDPOINTS")?;
            out.insert(k, v);
        }
        Ok(out)
    }

    /// Writes the record of `ifindex` and queues its cell: until
    /// `flush_cells`, the classifiers read the record the cell held before
    /// (whose inner maps must live until then).
    pub fn set_endpoint(&mut self, ifindex: u32, ep: &Endpoint) -> Result<()> {
        self.endpoints
            .insert(ifindex, ep, 0)
            .with_context(|| format!("write ENDPOINTS[{ifindex}]"))?;
        self.cells.set(ifindex, ep)
    }

    /// Links the cells of the records written since the last call: one
    /// batch, one RCU grace period (`cells.rs`).
    pub fn flush_cells(&mut self) -> Result<()> {
        self.cells.flush()
    }

    /// Empties the cell of `ifindex`, then removes its record.
    pub fn remove_endpoint(&mut self, ifindex: u32) -> Result<()> {
        self.cells.remove(ifindex)?;
        ignore_missing(self.endpoints.remove(&ifindex))
            .with_context(|| format!("delete ENDPOINTS[{ifindex}]"))
    }

    pub fn read_identities(&self) -> Result<BTreeMap<Lpm<IpKey>, u32>> {
        let mut out = BTreeMap::new();
        for item in self.identities.iter() {
            let (k, v) = item.context("read IDENTITIES")?;
            out.insert((k.prefix_len(), k.data()), v);
        }
        Ok(out)
    }

    pub fn set_identity(&mut self, key: Lpm<IpKey>, id: u32) -> Result<()> {
        self.identities
            .insert(&Key::new(key.0, key.1), id, 0)
            .context("write IDENTITIES")
    }

    pub fn remove_identity(&mut self, key: Lpm<IpKey>) -> Result<()> {
        ignore_missing(self.identities.remove(&Key::new(key.0, key.1)))
            .context("delete IDENTITIES entry")
    }

    /// Reads one pod direction's inner maps; `None` when its identity map
    /// is absent (never written, or a write was interrupted).
    pub fn read_dir(&self, key: PolicyKey) -> Result<Option<DirMaps>> {
        read_dir(
            &self.policy_identity,
            &self.policy_cidr,
            &self.policy_port,
            &self.policy_spill,
            key,
        )
    }

    /// Builds and fills the four inner maps of one pod direction, to be
    /// linked under `key` by `link`.
    pub fn stage_dir(&self, key: PolicyKey, d: &DirMaps) -> Result<StagedDir> {
        let ctx = |what: &str| format!("write {what} of {key:?}");
        let suffix = if key.direction == DIR_INGRESS {
            "i"
        } else {
            "e"
        };
        let (mut identity, f0): (IdentityInner, _) = create_inner(
            &sized(&self.inner.identity, d.identities.len()),
            &format!("pal_id_{suffix}"),
            Map::HashMap,
        )?;
        for (id, bits) in &d.identities {
            identity
                .insert(id, bits, 0)
                .with_context(|| ctx("identity entries"))?;
        }
        let (mut cidr, f1): (CidrInner, _) = create_inner(
            &sized(&self.inner.cidr, d.cidrs.len()),
            &format!("pal_cidr_{suffix}"),
            Map::LpmTrie,
        )?;
        for ((len, k), bits) in &d.cidrs {
            cidr.insert(&Key::new(*len, *k), bits, 0)
                .with_context(|| ctx("CIDR entries"))?;
        }
        let (mut port, f2): (PortInner, _) = create_inner(
            &sized(&self.inner.port, d.ports.len()),
            &format!("pal_port_{suffix}"),
            Map::LpmTrie,
        )?;
        for ((len, k), bits) in &d.ports {
            port.insert(&Key::new(*len, *k), bits, 0)
                .with_context(|| ctx("port entries"))?;
        }
        let (mut spill, f3): (SpillInner, _) = create_inner(
            &sized(&self.inner.spill, d.spill.len()),
            &format!("pal_spill_{suffix}"),
            Map::HashMap,
        )?;
        for (k, v) in &d.spill {
            spill
                .insert(k, v, 0)
                .with_context(|| ctx("spill entries"))?;
        }
        Ok(StagedDir {
            key,
            fds: [f0, f1, f2, f3],
        })
    }

    /// Links staged inner maps into the outer maps: one batch per outer
    /// map (one RCU grace period each, however many pods), the four on
    /// threads of their own so that their grace periods overlap. An
    /// existing entry under a staged key is replaced.
    pub fn link(&mut self, staged: &[&StagedDir]) -> Result<()> {
        let keys: Vec<PolicyKey> = staged.iter().map(|s| s.key).collect();
        let keys = &keys;
        std::thread::scope(|scope| {
            let jobs: Vec<_> = self
                .outer
                .iter()
                .enumerate()
                .map(|(i, outer)| {
                    let fds: Vec<BorrowedFd<'_>> =
                        staged.iter().map(|s| s.fds[i].as_fd()).collect();
                    scope.spawn(move || {
                        batch::update_inner(outer.fd(), keys, &fds)
                            .with_context(|| format!("link inner maps into {}", OUTER[i]))
                    })
                })
                .collect();
            join_all(jobs)
        })
    }

    /// Unlinks pod directions' inner maps (the kernel frees them once no
    /// program run still uses them): one batch per outer map, of the keys
    /// it holds (listing keys costs no grace period; a batch that meets an
    /// absent key stops there and costs one more).
    pub fn delete_dirs(&mut self, keys: &[PolicyKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let held = [
            key_set(self.policy_identity.keys())?,
            key_set(self.policy_cidr.keys())?,
            key_set(self.policy_port.keys())?,
            key_set(self.policy_spill.keys())?,
        ];
        // As in `link`: the four outer maps' grace periods overlap.
        std::thread::scope(|scope| {
            let jobs: Vec<_> = self
                .outer
                .iter()
                .zip(&held)
                .enumerate()
                .map(|(i, (outer, held))| {
                    let present: Vec<PolicyKey> =
                        keys.iter().filter(|k| held.contains(k)).copied().collect();
                    scope.spawn(move || {
                        if present.is_empty() {
                            return Ok(());
                        }
                        batch::delete(outer.fd(), &present).with_context(|| {
                            format!("delete {} entries of {}", present.len(), OUTER[i])
                        })
                    })
                })
                .collect();
            join_all(jobs)
        })
    }

    /// Every key present in any of the four outer maps.
    pub fn outer_keys(&self) -> Result<BTreeSet<PolicyKey>> {
        let mut out = BTreeSet::new();
        let ctx = "list policy outer map keys";
        for k in self.policy_identity.keys() {
            out.insert(k.context(ctx)?);
        }
        for k in self.policy_cidr.keys() {
            out.insert(k.context(ctx)?);
        }
        for k in self.policy_port.keys() {
            out.insert(k.context(ctx)?);
        }
        for k in self.policy_spill.keys() {
            out.insert(k.context(ctx)?);
        }
        Ok(out)
    }
}

/// The policy keys of one endpoint generation, both directions.
pub fn dir_keys(ifindex: u32, generation: u32) -> [PolicyKey; 2] {
    [
        PolicyKey {
            ifindex,
            generation,
            direction: DIR_INGRESS,
        },
        PolicyKey {
            ifindex,
            generation,
            direction: DIR_EGRESS,
        },
    ]
}

/// Reads one pod direction's inner maps; `None` when its identity map
/// is absent (never written, or a write was interrupted).
pub fn read_dir(
    identity: &HashOfMaps<MapData, PolicyKey, IdentityInner>,
    cidr: &HashOfMaps<MapData, PolicyKey, CidrInner>,
    port: &HashOfMaps<MapData, PolicyKey, PortInner>,
    spill: &HashOfMaps<MapData, PolicyKey, SpillInner>,
    key: PolicyKey,
) -> Result<Option<DirMaps>> {
    let ctx = || format!("read policy maps of {key:?}");
    let identity = match identity.get(&key, 0) {
        Ok(m) => m,
        Err(e) if is_missing(&e) => return Ok(None),
        Err(e) => return Err(e).with_context(ctx),
    };
    let (cidr, port, spill) = match (cidr.get(&key, 0), port.get(&key, 0), spill.get(&key, 0)) {
        (Ok(c), Ok(p), Ok(s)) => (c, p, s),
        (c, p, s) => {
            for e in [c.err(), p.err(), s.err()].into_iter().flatten() {
                if !is_missing(&e) {
                    return Err(e).with_context(ctx);
                }
            }
            return Ok(None);
        }
    };
    let mut out = DirMaps::default();
    for item in identity.iter() {
        let (k, v) = item.with_context(ctx)?;
        out.identities.insert(k, v);
    }
    for item in cidr.iter() {
        let (k, v) = item.with_context(ctx)?;
        out.cidrs.insert((k.prefix_len(), k.data()), v);
    }
    for item in port.iter() {
        let (k, v) = item.with_context(ctx)?;
        out.ports.insert((k.prefix_len(), k.data()), v);
    }
    for item in spill.iter() {
        let (k, v) = item.with_context(ctx)?;
        out.spill.insert(k, v);
    }
    Ok(Some(out))
}
