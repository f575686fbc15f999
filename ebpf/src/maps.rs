//! Every map of the object, declared BTF-style so that `bpftool` shows field
//! names. Names, key and value types are the contract of `docs/maps.md`.
//!
//! All hash maps and the outer map-of-maps use `BPF_F_NO_PREALLOC`: the
//! kernel then frees replaced or deleted elements only after an RCU grace
//! period, so a classifier that holds a pointer to an endpoint record or to an
//! inner map never reads an element that userspace is rewriting.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::{
        Array, ArrayOfMaps, HashMap, HashOfMaps, LpmTrie, LruHashMap, PerCpuArray, RingBuf,
    },
    macros::btf_map,
};
use palisade_common::{
    Config, Counters, CtKey, CtValue, Endpoint, EndpointCell, Event, FragKey, FragValue, IpKey,
    PolicyKey, PortKey, RuleBits, RuleCounter, ServiceKey, SpillKey, SpillValue, CONNTRACK_MAX,
    CONNTRACK_POD_TEMPLATE, ENDPOINT_CELLS_MAX, EVENTS_BYTES, FRAGMENTS_POD_TEMPLATE, FRAG_MAX,
    IDENTITY_TRIE_MAX, INNER_CIDR_MAX, INNER_IDENTITY_MAX, INNER_PORT_MAX, INNER_SPILL_MAX,
    LOCAL_ADDRS_MAX, MAX_ENDPOINTS, OUTER_MAX, RULE_COLS, SERVICES_MAX, SLOTS,
};

const NO_PREALLOC: usize = BPF_F_NO_PREALLOC as usize;

/// Inner map templates. Userspace must create every inner map with exactly
/// these type, key size, value size and flags (`BPF_F_NO_PREALLOC`), or the
/// kernel refuses to insert it into the outer map.
pub type IdentityInner = HashMap<u32, RuleBits, { INNER_IDENTITY_MAX as usize }, NO_PREALLOC>;
pub type CidrInner = LpmTrie<IpKey, RuleBits, { INNER_CIDR_MAX as usize }, NO_PREALLOC>;
pub type PortInner = LpmTrie<PortKey, RuleBits, { INNER_PORT_MAX as usize }, NO_PREALLOC>;
pub type SpillInner = HashMap<SpillKey, SpillValue, { INNER_SPILL_MAX as usize }, NO_PREALLOC>;

#[btf_map]
pub static ENDPOINTS: HashMap<u32, Endpoint, { MAX_ENDPOINTS as usize }, NO_PREALLOC> =
    HashMap::new();

/// One cell of `ENDPOINT_CELLS`: a one-entry array, written before it is
/// linked and never after.
pub type CellInner = Array<EndpointCell, 1>;

/// Copies of the `ENDPOINTS` records by `ifindex & (ENDPOINT_CELLS_MAX -
/// 1)` (`endpoint`).
#[btf_map]
pub static ENDPOINT_CELLS: ArrayOfMaps<CellInner, { ENDPOINT_CELLS_MAX as usize }> =
    ArrayOfMaps::new();

/// The endpoint record of interface `ifindex` as the fast path reads it:
/// from its cell when the cell names it (two array lookups, both inlined
/// by the verifier), else from `ENDPOINTS` (no cell yet or at all: a
/// pending interface, a cell being linked, one another interface holds or
/// the writer could not make). The general path reads `ENDPOINTS` alone
/// (`record`): a path that can get its record from either map is walked
/// by the verifier once per map, and the general path is the long one.
///
/// A cell may lag its record within a round: the writer keeps the inner
/// maps of the record a cell holds until the cell follows, so either
/// record is one the writer made, with its maps.
#[inline(always)]
pub fn endpoint(ifindex: u32) -> Option<&'static Endpoint> {
    if let Some(cell) = ENDPOINT_CELLS.get_value(ifindex & (ENDPOINT_CELLS_MAX - 1), &ZERO) {
        if cell.ifindex == ifindex {
            return Some(&cell.endpoint);
        }
    }
    record(ifindex)
}

/// The endpoint record of interface `ifindex` in `ENDPOINTS`, the record
/// of truth (see `endpoint`). No interface has index 0: a packet the host
/// sent (`ingress_ifindex` 0) has no sender pod, and costs no lookup.
#[inline(always)]
pub fn record(ifindex: u32) -> Option<&'static Endpoint> {
    if ifindex == 0 {
        return None;
    }
    // SAFETY: `BPF_F_NO_PREALLOC` (above): the record stays valid for the
    // rest of the run even if userspace replaces it.
    ENDPOINTS.get_ptr(ifindex).map(|p| unsafe { &*p })
}

#[btf_map]
pub static IDENTITIES: LpmTrie<IpKey, u32, { IDENTITY_TRIE_MAX as usize }, NO_PREALLOC> =
    LpmTrie::new();

/// Service frontends (ClusterIP, protocol, port), whose flows' egress is
/// decided after DNAT.
#[btf_map]
pub static SERVICES: HashMap<ServiceKey, u32, { SERVICES_MAX as usize }, NO_PREALLOC> =
    HashMap::new();

/// Local pod addresses -> the ifindex of the pod's host-side interface.
#[btf_map]
pub static LOCAL_ADDRS: HashMap<IpKey, u32, { LOCAL_ADDRS_MAX as usize }, NO_PREALLOC> =
    HashMap::new();

#[btf_map]
pub static POLICY_IDENTITY: HashOfMaps<
    PolicyKey,
    IdentityInner,
    { OUTER_MAX as usize },
    NO_PREALLOC,
> = HashOfMaps::new();

#[btf_map]
pub static POLICY_CIDR: HashOfMaps<PolicyKey, CidrInner, { OUTER_MAX as usize }, NO_PREALLOC> =
    HashOfMaps::new();

#[btf_map]
pub static POLICY_PORT: HashOfMaps<PolicyKey, PortInner, { OUTER_MAX as usize }, NO_PREALLOC> =
    HashOfMaps::new();

#[btf_map]
pub static POLICY_SPILL: HashOfMaps<PolicyKey, SpillInner, { OUTER_MAX as usize }, NO_PREALLOC> =
    HashOfMaps::new();

/// The node-wide conntrack table: entries of pods without a table of their
/// own (`CONNTRACK_POD`), and those an upgrade carried over from a layout
/// that had only this one. Looked up when a pod's own table misses.
#[btf_map]
pub static CONNTRACK: LruHashMap<CtKey, CtValue, { CONNTRACK_MAX as usize }> = LruHashMap::new();

/// A pod's own conntrack table, by endpoint slot. Each is an LRU of its
/// own, created by the agent with its own size: a pod that opens more flows
/// than its table holds evicts its own oldest entries, never another pod's.
pub type PodConntrack = LruHashMap<CtKey, CtValue, { CONNTRACK_POD_TEMPLATE as usize }>;

#[btf_map]
pub static CONNTRACK_POD: ArrayOfMaps<PodConntrack, { MAX_ENDPOINTS as usize }> =
    ArrayOfMaps::new();

/// The node-wide fragment records: pods without a table of their own.
#[btf_map]
pub static FRAGMENTS: LruHashMap<FragKey, FragValue, { FRAG_MAX as usize }> = LruHashMap::new();

/// A pod's own fragment records, by endpoint slot, as `CONNTRACK_POD`: a
/// pod sending first fragments fast evicts only its own records.
pub type PodFragments = LruHashMap<FragKey, FragValue, { FRAGMENTS_POD_TEMPLATE as usize }>;

#[btf_map]
pub static FRAGMENTS_POD: ArrayOfMaps<PodFragments, { MAX_ENDPOINTS as usize }> =
    ArrayOfMaps::new();

#[btf_map]
pub static EVENTS: RingBuf<Event, { EVENTS_BYTES as usize }> = RingBuf::new();

/// Events not delivered: [sampled out, ring buffer full], per CPU.
#[btf_map]
pub static EVENTS_LOST: PerCpuArray<u64, 2> = PerCpuArray::new();

/// Per-CPU token bucket of one pod slot that rate-limits its events
/// (internal).
#[repr(C)]
pub struct EventBudget {
    pub tokens: u64,
    pub last_ns: u64,
}

#[btf_map]
pub static EVENT_BUDGET: PerCpuArray<EventBudget, { SLOTS as usize }> = PerCpuArray::new();

/// Packets and bytes per pod slot, direction and verdict, per CPU. Array
/// lookups are inlined by the verifier: counting costs no helper call.
#[btf_map]
pub static COUNTERS: PerCpuArray<Counters, { SLOTS as usize * 2 }> = PerCpuArray::new();

/// Allowed packets and bytes per pod slot, direction and rule column;
/// shared across CPUs and updated with atomic adds (per-CPU copies of
/// 135,168 entries would cost 2 MiB per CPU).
#[btf_map]
pub static RULE_COUNTERS: Array<RuleCounter, { MAX_ENDPOINTS as usize * 2 * RULE_COLS as usize }> =
    Array::new();

/// Node-wide settings written by the agent.
#[btf_map]
pub static CONFIG: Array<Config, 1> = Array::new();

/// Per-CPU working memory of one packet (internal): the 512-byte BPF stack
/// cannot hold the parsed packet and every lookup key at once.
#[btf_map]
pub static SCRATCH: PerCpuArray<crate::scratch::Scratch, 1> = PerCpuArray::new();

/// The key of `SCRATCH`'s one slot, in read-only data rather than on the
/// stack.
pub(crate) static ZERO: u32 = 0;

/// The inner map at endpoint slot `slot` of `outer` (an array of maps),
/// or null. Both keys live in maps, the scratch's in `.rodata` and the
/// slot in `Scratch::table_slot`, so the callers (out-of-line functions
/// without a frame) add nothing to a call chain's stack.
#[inline(always)]
pub fn in_slot(outer: *mut core::ffi::c_void, slot: u16) -> *mut core::ffi::c_void {
    use aya_ebpf::helpers::bpf_map_lookup_elem;
    let scratch = core::ptr::from_ref(&SCRATCH).cast_mut().cast();
    // SAFETY: the helper reads the 4-byte key and returns the slot or null.
    let s = unsafe { bpf_map_lookup_elem(scratch, core::ptr::from_ref(&ZERO).cast()) };
    let Some(s) = (unsafe { s.cast::<crate::scratch::Scratch>().as_mut() }) else {
        return core::ptr::null_mut();
    };
    s.table_slot = slot as u32;
    // SAFETY: as above; the key is the scratch's field.
    unsafe { bpf_map_lookup_elem(outer, core::ptr::from_ref(&s.table_slot).cast()) }
}
