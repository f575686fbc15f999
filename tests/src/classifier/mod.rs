//! Test harness for the eBPF classifiers: loads the compiled object with its
//! own (unpinned) maps, programs endpoints, identities and per-pod policy
//! maps directly, and runs crafted frames through BPF_PROG_TEST_RUN. Every
//! harness owns its maps, so tests using separate harnesses never interfere.

pub mod bench;
pub mod compiled;
pub mod netns;
pub mod packet;

use std::{
    net::IpAddr,
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{
        lpm_trie::Key, Array, ArrayOfMaps, HashMap, HashOfMaps, LpmTrie, Map as MapKind, MapData,
        PerCpuArray, RingBuf,
    },
    programs::{SchedClassifier, TcAttachType, TestRun, TestRunOptions},
    Ebpf, EbpfLoader, VerifierLogLevel,
};
use palisade_common::{
    names, Config, Counters, CtKey, CtValue, Endpoint, Event, FragKey, FragValue, IpKey, PolicyKey,
    PortKey, RuleBits, RuleCounter, ServiceKey, SpillKey, SpillValue, CONFIG_EVENTS_DENIED,
    DIR_EGRESS, DIR_INGRESS, EP_ISOLATED_EGRESS, EP_ISOLATED_INGRESS, FAMILY_V4, FAMILY_V6,
    INNER_CIDR_MAX, INNER_IDENTITY_MAX, INNER_PORT_MAX, INNER_SPILL_MAX, RULE_BITS, RULE_COLS,
    SPILL_ALLOW,
};
use palisade_datapath::cells::{cell_of, new_cell, CellMap};

/// The flag every inner map template in the object carries.
pub const BPF_F_NO_PREALLOC: u32 = 1;
/// The classifiers' verdict for an allowed packet: `TCX_NEXT` (-1), on to
/// the next program of the chain.
pub const TCX_NEXT: u32 = u32::MAX;
/// What objects built before allowed packets ended with `TCX_NEXT` returned.
pub const TCX_PASS: u32 = 0;
pub const TCX_DROP: u32 = 2;

/// A verdict with an older object's `TCX_PASS` read as `TCX_NEXT`: both
/// let the packet through, so a benchmark can check an older object's
/// verdicts beside the current one's.
pub fn allow_as_next(verdict: u32) -> u32 {
    if verdict == TCX_PASS {
        TCX_NEXT
    } else {
        verdict
    }
}

/// The object's do-nothing classifier (returns `TCX_NEXT`): the baseline
/// cost of running any TC program, for benchmarks.
pub const NOOP: &str = "noop";

/// Interface index of `lo`: BPF_PROG_TEST_RUN runs TC programs on it
/// when no other device is named, so endpoints in these tests live there.
pub const IFINDEX: u32 = 1;

/// Offset of `ifindex` in `struct __sk_buff` (UAPI, stable).
const SKB_IFINDEX_OFFSET: usize = 40;
/// Offset of `ingress_ifindex` in `struct __sk_buff`.
const SKB_INGRESS_IFINDEX_OFFSET: usize = 36;

/// Which classifier runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// TC egress of the host-side interface: the pod's ingress.
    Ingress,
    /// TC ingress of the host-side interface: the pod's egress.
    Egress,
    /// TC egress of the node's uplink (`node_egress`): egress decisions
    /// deferred past DNAT.
    Uplink,
}

impl Hook {
    pub fn program(self) -> &'static str {
        match self {
            Hook::Ingress => names::PROG_INGRESS,
            Hook::Egress => names::PROG_EGRESS,
            Hook::Uplink => names::PROG_NODE_EGRESS,
        }
    }

    pub fn direction(self) -> u32 {
        match self {
            Hook::Ingress => palisade_common::DIR_INGRESS,
            Hook::Egress | Hook::Uplink => palisade_common::DIR_EGRESS,
        }
    }
}

/// Where the compiled object is: `PALISADE_EBPF_OBJECT`, else the release
/// build inside the workspace.
pub fn object_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PALISADE_EBPF_OBJECT") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ebpf/target/bpfel-unknown-none/release/palisade-ebpf")
}

/// The endpoint record of a pod with `flags` and its addresses `addrs`
/// (at most two), nothing else set.
pub fn pod_endpoint(flags: u32, addrs: &[IpAddr]) -> Endpoint {
    let mut ep = Endpoint {
        flags,
        ..Default::default()
    };
    for (slot, a) in ep.addrs.iter_mut().zip(addrs) {
        *slot = ip_key(*a);
    }
    ep
}

/// An address as the maps store it.
pub fn ip_key(a: IpAddr) -> IpKey {
    let mut k = IpKey::default();
    match a {
        IpAddr::V4(v4) => {
            k.family = FAMILY_V4;
            k.addr[..4].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            k.family = FAMILY_V6;
            k.addr = v6.octets();
        }
    }
    k
}

/// The LPM key of a CIDR: the family byte takes 8 bits of the prefix.
pub fn cidr_key(a: IpAddr, len: u32) -> Key<IpKey> {
    Key::new(8 + len, ip_key(a))
}

pub fn bits(bits: u64) -> RuleBits {
    RuleBits {
        bits,
        class: 0,
        _pad: 0,
    }
}

pub fn class(bits: u64, class: u32) -> RuleBits {
    RuleBits {
        bits,
        class,
        _pad: 0,
    }
}

/// The contents of one pod direction's four inner maps.
#[derive(Default, Clone)]
pub struct DirMaps {
    pub identity: Vec<(u32, RuleBits)>,
    /// (address, CIDR length, value)
    pub cidr: Vec<(IpAddr, u32, RuleBits)>,
    /// (protocol, port, number of leading port bits, value)
    pub port: Vec<(u8, u16, u32, RuleBits)>,
    /// Keys a spilled NetworkPolicy group allows (the first spilled group,
    /// `RULE_BITS`, allowing).
    pub spill: Vec<SpillKey>,
    /// Keys with their values as the compiler writes them.
    pub spill_values: Vec<(SpillKey, SpillValue)>,
}

/// An endpoint record in the layout of version 3, before the
/// ClusterNetworkPolicy masks: flags, generation, each direction's
/// `any_peer`, `any_port`, `any_port_class`, `spill_any_peer`, then the
/// addresses, slot and epoch.
fn endpoint_v3(ep: &Endpoint) -> [u8; 96] {
    let mut out = [0u8; 96];
    out[0..4].copy_from_slice(&ep.flags.to_ne_bytes());
    out[4..8].copy_from_slice(&ep.generation.to_ne_bytes());
    for (at, d) in [(8, &ep.ingress), (32, &ep.egress)] {
        out[at..at + 8].copy_from_slice(&d.any_peer.to_ne_bytes());
        out[at + 8..at + 16].copy_from_slice(&d.any_port.to_ne_bytes());
        out[at + 16..at + 20].copy_from_slice(&d.any_port_class.to_ne_bytes());
        out[at + 20..at + 24].copy_from_slice(&d.spill_any_peer.to_ne_bytes());
    }
    for (i, a) in ep.addrs.iter().enumerate() {
        let at = 56 + 17 * i;
        out[at] = a.family;
        out[at + 1..at + 17].copy_from_slice(&a.addr);
    }
    out[90..92].copy_from_slice(&ep.slot.to_ne_bytes());
    out[92..96].copy_from_slice(&ep.epoch.to_ne_bytes());
    out
}

/// The spill value of a key only the first spilled group, an allowing
/// one, matches.
pub fn spill_allow() -> SpillValue {
    let first = RULE_BITS << 2 | SPILL_ALLOW;
    SpillValue {
        first,
        after_admin: first,
    }
}

pub struct Classifier {
    ebpf: Ebpf,
}

impl Classifier {
    /// Loads both programs. A missing object fails with the command that
    /// builds it.
    pub fn load() -> Result<Self> {
        Self::load_with(VerifierLogLevel::default())
    }

    pub fn load_with(log: VerifierLogLevel) -> Result<Self> {
        Self::load_from(&object_path(), log)
    }

    /// Loads the programs of the object at `path` (the `noop` program only
    /// if the object has one: older builds did not).
    pub fn load_from(path: &Path, log: VerifierLogLevel) -> Result<Self> {
        if !path.exists() {
            bail!(
                "eBPF object {} not found: build it with `cargo xtask build-ebpf` \
                 (or set PALISADE_EBPF_OBJECT)",
                path.display()
            );
        }
        let mut ebpf = EbpfLoader::new()
            .verifier_log_level(log)
            .load_file(path)
            .with_context(|| format!("loading {}", path.display()))?;
        // Older builds (benchmark baselines) lack the no-op and the uplink
        // programs.
        let names = [
            Hook::Ingress.program(),
            Hook::Egress.program(),
            NOOP,
            names::PROG_NODE_EGRESS,
        ];
        let present: Vec<&str> = names
            .into_iter()
            .filter(|n| ebpf.program(n).is_some())
            .collect();
        for name in &present {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing"))?
                .try_into()?;
            palisade_datapath::load::load_program(prog)
                .with_context(|| format!("verifier rejected {name}"))?;
        }
        let mut c = Classifier { ebpf };
        // As the agent does: denied packets are reported (older objects
        // have no CONFIG and always report them).
        if c.ebpf.map(names::CONFIG).is_some() {
            c.set_events(CONFIG_EVENTS_DENIED)?;
        }
        Ok(c)
    }

    /// Sets which events the classifiers emit (`CONFIG_EVENTS_*` bits).
    pub fn set_events(&mut self, events: u32) -> Result<()> {
        let mut m: Array<_, Config> =
            Array::try_from(self.ebpf.map_mut(names::CONFIG).context("CONFIG")?)?;
        m.set(0, Config { events, _pad: 0 }, 0)?;
        Ok(())
    }

    /// The counters of a pod slot and direction, summed over CPUs.
    pub fn counters(&self, slot: u16, dir: u32) -> Result<Counters> {
        let m: PerCpuArray<_, Counters> =
            PerCpuArray::try_from(self.ebpf.map(names::COUNTERS).context("COUNTERS")?)?;
        let mut sum = Counters::default();
        for c in m.get(&(slot as u32 * 2 + dir), 0)?.iter() {
            sum.allowed_packets += c.allowed_packets;
            sum.allowed_bytes += c.allowed_bytes;
            sum.denied_packets += c.denied_packets;
            sum.denied_bytes += c.denied_bytes;
            sum.would_deny_packets += c.would_deny_packets;
            sum.would_deny_bytes += c.would_deny_bytes;
        }
        Ok(sum)
    }

    /// The rule counter of a pod slot, direction and column.
    pub fn rule_counter(&self, slot: u16, dir: u32, column: u32) -> Result<RuleCounter> {
        let m: Array<_, RuleCounter> = Array::try_from(
            self.ebpf
                .map(names::RULE_COUNTERS)
                .context("RULE_COUNTERS")?,
        )?;
        Ok(m.get(&((slot as u32 * 2 + dir) * RULE_COLS + column), 0)?)
    }

    pub fn program(&self, hook: Hook) -> &SchedClassifier {
        self.ebpf
            .program(hook.program())
            .expect("loaded in Classifier::load")
            .try_into()
            .expect("a classifier")
    }

    /// Runs one frame through a classifier, returning its verdict.
    pub fn run(&self, hook: Hook, frame: &[u8]) -> Result<u32> {
        Ok(self.run_repeat(hook, frame, 1)?.0)
    }

    /// Runs one frame `repeat` times; returns the verdict and the kernel's
    /// average time per run in nanoseconds.
    pub fn run_repeat(&self, hook: Hook, frame: &[u8], repeat: u32) -> Result<(u32, u128)> {
        self.run_full(hook, frame, repeat, None)
    }

    /// Runs one frame `repeat` times through the `NOOP` program; returns its
    /// verdict and the average time per run in nanoseconds.
    pub fn run_noop(&self, frame: &[u8], repeat: u32) -> Result<(u32, u128)> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(NOOP)
            .context("program noop missing")?
            .try_into()?;
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::new()
        };
        let r = prog.test_run(opts).context("BPF_PROG_TEST_RUN")?;
        Ok((r.return_value, r.duration.as_nanos()))
    }

    /// Runs one frame on the device `ifindex` (of the calling thread's
    /// network namespace) instead of `lo`.
    pub fn run_on(&self, hook: Hook, frame: &[u8], ifindex: u32) -> Result<u32> {
        Ok(self.run_full(hook, frame, 1, Some(ifindex))?.0)
    }

    /// Runs one frame as if received on device `ingress_ifindex` and
    /// forwarded (`__sk_buff.ingress_ifindex`); `run` leaves it 0, which is
    /// what a packet the host itself sent has.
    pub fn run_forwarded(&self, hook: Hook, frame: &[u8], ingress_ifindex: u32) -> Result<u32> {
        Ok(self
            .run_forwarded_repeat(hook, frame, ingress_ifindex, 1)?
            .0)
    }

    /// `run_forwarded` `repeat` times; returns the verdict and the
    /// kernel's average time per run in nanoseconds.
    pub fn run_forwarded_repeat(
        &self,
        hook: Hook,
        frame: &[u8],
        ingress_ifindex: u32,
        repeat: u32,
    ) -> Result<(u32, u128)> {
        let mut ctx = [0u8; SKB_IFINDEX_OFFSET + 8];
        ctx[SKB_INGRESS_IFINDEX_OFFSET..SKB_INGRESS_IFINDEX_OFFSET + 4]
            .copy_from_slice(&ingress_ifindex.to_ne_bytes());
        self.run_ctx(hook, frame, repeat, Some(&ctx))
    }

    fn run_full(
        &self,
        hook: Hook,
        frame: &[u8],
        repeat: u32,
        ifindex: Option<u32>,
    ) -> Result<(u32, u128)> {
        // The head of a `struct __sk_buff` up to and including `ifindex`;
        // the kernel zero-fills the rest.
        let mut ctx = [0u8; SKB_IFINDEX_OFFSET + 8];
        if let Some(i) = ifindex {
            ctx[SKB_IFINDEX_OFFSET..SKB_IFINDEX_OFFSET + 4].copy_from_slice(&i.to_ne_bytes());
        }
        self.run_ctx(hook, frame, repeat, ifindex.map(|_| &ctx[..]))
    }

    fn run_ctx(
        &self,
        hook: Hook,
        frame: &[u8],
        repeat: u32,
        ctx: Option<&[u8]>,
    ) -> Result<(u32, u128)> {
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: ctx,
            repeat,
            ..TestRunOptions::new()
        };
        let r = self
            .program(hook)
            .test_run(opts)
            .context("BPF_PROG_TEST_RUN")?;
        Ok((r.return_value, r.duration.as_nanos()))
    }

    /// Attaches a classifier to `iface` of the calling thread's network
    /// namespace the way the agent does (TCX on this kernel, first in the
    /// chain): `pod_ingress` at TC egress, `pod_egress` at TC ingress. The link lives as long as
    /// this harness or the interface.
    pub fn attach(&mut self, hook: Hook, iface: &str) -> Result<()> {
        let at = match hook {
            Hook::Ingress | Hook::Uplink => TcAttachType::Egress,
            Hook::Egress => TcAttachType::Ingress,
        };
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(hook.program())
            .context("program missing")?
            .try_into()?;
        palisade::datapath::attach::attach_first(prog, iface, at)
            .with_context(|| format!("attaching {} to {iface}", hook.program()))?;
        Ok(())
    }

    /// Attaches the object's `noop` program at the end of `iface`'s TCX
    /// chain at `at`, where another agent's program would go; returns its
    /// program id.
    pub fn attach_noop(&mut self, at: TcAttachType, iface: &str) -> Result<u32> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(NOOP)
            .context("program missing")?
            .try_into()?;
        prog.attach(iface, at)
            .with_context(|| format!("attaching {NOOP} to {iface}"))?;
        Ok(prog.info()?.id())
    }

    /// Writes the record of `ifindex`, then its cell (`ENDPOINT_CELLS`), in
    /// the writer's order.
    pub fn set_endpoint(&mut self, ifindex: u32, ep: &Endpoint) -> Result<()> {
        let map = self.ebpf.map_mut(names::ENDPOINTS).context("ENDPOINTS")?;
        match HashMap::<_, u32, Endpoint>::try_from(&mut *map) {
            Ok(mut m) => m.insert(ifindex, ep, 0)?,
            // An object of layout version 3 (a benchmark's baseline).
            Err(_) => {
                HashMap::<_, u32, [u8; 96]>::try_from(map)?.insert(ifindex, endpoint_v3(ep), 0)?
            }
        }
        // Objects before layout version 5 have no cells.
        if self.has_map(names::ENDPOINT_CELLS) {
            self.set_cell(ifindex, ep)?;
        }
        Ok(())
    }

    /// Empties the cell of `ifindex`, then removes its record.
    pub fn remove_endpoint(&mut self, ifindex: u32) -> Result<()> {
        self.clear_cell(ifindex)?;
        let mut m: HashMap<_, u32, Endpoint> =
            HashMap::try_from(self.ebpf.map_mut(names::ENDPOINTS).context("ENDPOINTS")?)?;
        m.remove(&ifindex)?;
        Ok(())
    }

    /// Puts a record of interface `ifindex` in its cell alone, leaving
    /// `ENDPOINTS` as it is (a writer stopped between the two, or another
    /// interface sharing the cell).
    pub fn set_cell(&mut self, ifindex: u32, ep: &Endpoint) -> Result<()> {
        let mut cells = self.cells()?.context("the object has no ENDPOINT_CELLS")?;
        cells.set(cell_of(ifindex), &new_cell(ifindex, ep)?.0, 0)?;
        Ok(())
    }

    /// Empties the cell of `ifindex` alone: its record stays in
    /// `ENDPOINTS`, where the classifiers then find it.
    pub fn clear_cell(&mut self, ifindex: u32) -> Result<()> {
        if let Some(map) = self.ebpf.map(names::ENDPOINT_CELLS) {
            let MapKind::ArrayOfMaps(data) = map else {
                bail!("ENDPOINT_CELLS is not an array of maps");
            };
            palisade_datapath::sys::delete_index(data.fd().as_fd().as_raw_fd(), cell_of(ifindex))?;
        }
        Ok(())
    }

    fn cells(&mut self) -> Result<Option<ArrayOfMaps<&mut MapData, CellMap>>> {
        match self.ebpf.map_mut(names::ENDPOINT_CELLS) {
            Some(map) => Ok(Some(ArrayOfMaps::try_from(map)?)),
            None => Ok(None),
        }
    }

    /// Maps a prefix of the node-wide identity trie to an identity.
    pub fn set_identity(&mut self, addr: IpAddr, len: u32, id: u32) -> Result<()> {
        let mut m: LpmTrie<_, IpKey, u32> =
            LpmTrie::try_from(self.ebpf.map_mut(names::IDENTITIES).context("IDENTITIES")?)?;
        m.insert(&cidr_key(addr, len), id, 0)?;
        Ok(())
    }

    /// Marks `addr` as a Service ClusterIP.
    pub fn set_service(&mut self, addr: IpAddr, proto: u8, port: u16) -> Result<()> {
        let mut m: HashMap<_, ServiceKey, u32> =
            HashMap::try_from(self.ebpf.map_mut(names::SERVICES).context("SERVICES")?)?;
        let key = ServiceKey {
            addr: ip_key(addr),
            proto,
            port_be: port.to_be_bytes(),
        };
        m.insert(key, 1, 0)?;
        Ok(())
    }

    /// Records `addr` as an address of the local pod on `ifindex`.
    pub fn set_local_addr(&mut self, addr: IpAddr, ifindex: u32) -> Result<()> {
        let mut m: HashMap<_, IpKey, u32> = HashMap::try_from(
            self.ebpf
                .map_mut(names::LOCAL_ADDRS)
                .context("LOCAL_ADDRS")?,
        )?;
        m.insert(ip_key(addr), ifindex, 0)?;
        Ok(())
    }

    /// Creates the four inner maps of one pod direction and generation and
    /// inserts them into the outer maps, as the agent's writer does.
    pub fn set_policy(&mut self, key: PolicyKey, maps: &DirMaps) -> Result<()> {
        let mut identity: HashMap<MapData, u32, RuleBits> =
            HashMap::create(INNER_IDENTITY_MAX, BPF_F_NO_PREALLOC)?;
        for (id, v) in &maps.identity {
            identity.insert(id, v, 0)?;
        }
        let mut cidr: LpmTrie<MapData, IpKey, RuleBits> =
            LpmTrie::create(INNER_CIDR_MAX, BPF_F_NO_PREALLOC)?;
        for (addr, len, v) in &maps.cidr {
            cidr.insert(&cidr_key(*addr, *len), v, 0)?;
        }
        let mut port: LpmTrie<MapData, PortKey, RuleBits> =
            LpmTrie::create(INNER_PORT_MAX, BPF_F_NO_PREALLOC)?;
        for (proto, p, len, v) in &maps.port {
            let k = Key::new(
                8 + len,
                PortKey {
                    proto: *proto,
                    port_be: p.to_be_bytes(),
                },
            );
            port.insert(&k, v, 0)?;
        }
        let mut spill: HashMap<MapData, SpillKey, SpillValue> =
            HashMap::create(INNER_SPILL_MAX, BPF_F_NO_PREALLOC)?;
        for k in &maps.spill {
            spill.insert(k, spill_allow(), 0)?;
        }
        for (k, v) in &maps.spill_values {
            spill.insert(k, v, 0)?;
        }
        self.outer_insert(names::POLICY_IDENTITY, key, &identity)?;
        self.outer_insert(names::POLICY_CIDR, key, &cidr)?;
        self.outer_insert(names::POLICY_PORT, key, &port)?;
        if self.outer_insert(names::POLICY_SPILL, key, &spill).is_err() {
            self.set_spill_v3(key, maps)?;
        }
        Ok(())
    }

    /// The spill table of an object of layout version 3 (a baseline the
    /// benchmarks measure against): presence only, a `u8` 1.
    fn set_spill_v3(&mut self, key: PolicyKey, maps: &DirMaps) -> Result<()> {
        let mut spill: HashMap<MapData, SpillKey, u8> =
            HashMap::create(INNER_SPILL_MAX, BPF_F_NO_PREALLOC)?;
        for k in maps
            .spill
            .iter()
            .chain(maps.spill_values.iter().map(|(k, _)| k))
        {
            spill.insert(k, 1, 0)?;
        }
        self.outer_insert(names::POLICY_SPILL, key, &spill)
    }

    fn outer_insert<V: aya::maps::InnerMap>(
        &mut self,
        name: &str,
        key: PolicyKey,
        inner: &V,
    ) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(name)
            .with_context(|| format!("{name} missing"))?;
        let mut outer: HashOfMaps<_, PolicyKey, V> = HashOfMaps::try_from(map)?;
        outer
            .insert(key, inner, 0)
            .with_context(|| format!("inserting into {name}"))?;
        Ok(())
    }

    pub fn conntrack(&mut self) -> Result<HashMap<&mut MapData, CtKey, CtValue>> {
        Ok(HashMap::try_from(
            self.ebpf.map_mut(names::CONNTRACK).context("CONNTRACK")?,
        )?)
    }

    /// Whether the loaded object declares map `name` (older objects lack
    /// newer maps).
    pub fn has_map(&self, name: &str) -> bool {
        self.ebpf.map(name).is_some()
    }

    /// Gives the pod in endpoint slot `slot` a conntrack table of its own
    /// (`CONNTRACK_POD`) with room for `entries`; returns a handle on it.
    pub fn own_conntrack(
        &mut self,
        slot: u32,
        entries: u32,
    ) -> Result<HashMap<MapData, CtKey, CtValue>> {
        self.own_table(names::CONNTRACK_POD, slot, entries)
    }

    /// The same for fragment records (`FRAGMENTS_POD`).
    pub fn own_fragments(
        &mut self,
        slot: u32,
        entries: u32,
    ) -> Result<HashMap<MapData, FragKey, FragValue>> {
        self.own_table(names::FRAGMENTS_POD, slot, entries)
    }

    fn own_table<K: aya::Pod, V: aya::Pod>(
        &mut self,
        outer: &str,
        slot: u32,
        entries: u32,
    ) -> Result<HashMap<MapData, K, V>> {
        let shape = palisade_datapath::load::MapShape {
            map_type: palisade_common::layout::TYPE_LRU_HASH,
            key_size: std::mem::size_of::<K>() as u32,
            value_size: std::mem::size_of::<V>() as u32,
            max_entries: entries,
            flags: 0,
        };
        let data = MapData::create(shape.obj(), "test_pod_table", None)?;
        let table = HashMap::try_from(aya::maps::Map::LruHashMap(data))?;
        let outer = self.ebpf.map_mut(outer).context("outer map")?;
        let mut outer: aya::maps::ArrayOfMaps<_, HashMap<MapData, K, V>> =
            aya::maps::ArrayOfMaps::try_from(outer)?;
        outer.set(slot, &table, 0)?;
        Ok(table)
    }

    pub fn fragments(&mut self) -> Result<HashMap<&mut MapData, FragKey, FragValue>> {
        Ok(HashMap::try_from(
            self.ebpf.map_mut(names::FRAGMENTS).context("FRAGMENTS")?,
        )?)
    }

    /// Drains the deny events delivered so far.
    pub fn events(&mut self) -> Result<Vec<Event>> {
        let mut rb = RingBuf::try_from(self.ebpf.map_mut(names::EVENTS).context("EVENTS")?)?;
        let mut out = Vec::new();
        while let Some(item) = rb.next() {
            assert_eq!(
                item.len(),
                std::mem::size_of::<Event>(),
                "event record size"
            );
            // SAFETY: Event is plain old data of exactly this size.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
        }
        Ok(out)
    }

    /// Sum over CPUs of the `EVENTS_LOST` counter at `index`.
    pub fn events_lost(&mut self, index: u32) -> Result<u64> {
        let m: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map_mut(names::EVENTS_LOST)
                .context("EVENTS_LOST")?,
        )?;
        Ok(m.get(&index, 0)?.iter().sum())
    }
}

/// A classifier whose pod (addresses `pod`, on `IFINDEX`) has `flags` and
/// no rule at all, on a node whose addresses `node` are `IDENTITY_HOST`.
pub fn pod_on_node(flags: u32, pod: &[IpAddr], node: &[IpAddr]) -> Result<Classifier> {
    let mut c = Classifier::load()?;
    let mut ep = Endpoint {
        flags,
        ..Default::default()
    };
    for (slot, a) in ep.addrs.iter_mut().zip(pod) {
        *slot = ip_key(*a);
    }
    c.set_endpoint(IFINDEX, &ep)?;
    for a in node {
        let len = if a.is_ipv4() { 32 } else { 128 };
        c.set_identity(*a, len, palisade_common::IDENTITY_HOST)?;
    }
    Ok(c)
}

/// A classifier whose pod (`pod`, on `IFINDEX`) is isolated both ways and
/// allows exactly one thing: `peer` (identity 300), any port and protocol,
/// in direction `allowed` (`DIR_INGRESS` or `DIR_EGRESS`). The other
/// direction lets replies only.
pub fn one_peer(pod: IpAddr, peer: IpAddr, allowed: u32) -> Result<Classifier> {
    const ID_PEER: u32 = 300;
    let mut c = Classifier::load()?;
    c.set_identity(peer, if peer.is_ipv4() { 32 } else { 128 }, ID_PEER)?;
    for direction in [DIR_INGRESS, DIR_EGRESS] {
        let key = PolicyKey {
            ifindex: IFINDEX,
            generation: 0,
            direction,
        };
        let maps = if direction == allowed {
            DirMaps {
                identity: vec![(ID_PEER, bits(1))],
                ..Default::default()
            }
        } else {
            DirMaps::default()
        };
        c.set_policy(key, &maps)?;
    }
    let mut ep = Endpoint {
        flags: EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS,
        ..Default::default()
    };
    ep.addrs[0] = ip_key(pod);
    // Group 1 takes any port: the peer on any protocol, ICMP included.
    if allowed == DIR_INGRESS {
        ep.ingress.any_port = 1;
    } else {
        ep.egress.any_port = 1;
    }
    c.set_endpoint(IFINDEX, &ep)?;
    Ok(c)
}
