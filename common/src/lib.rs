//! Types shared by the eBPF classifiers and the agent: map keys, map values,
//! constants. Everything is `#[repr(C)]` with explicit padding so that both
//! halves (and `bpftool`, through BTF) agree on every byte.
//!
//! Addresses of both families share one layout, [`IpKey`]: a family byte
//! followed by 16 address bytes (IPv4 in the first four). The family byte is
//! part of every LPM prefix, so an IPv6 `::/0` can never cover an IPv4 address.
#![no_std]

pub mod layout;

/// Directions, as seen from the pod.
pub const DIR_INGRESS: u32 = 0;
pub const DIR_EGRESS: u32 = 1;

/// Address families as stored in [`IpKey::family`].
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// IP protocol numbers the datapath understands.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

/// Reserved identities. Pod identities start at [`IDENTITY_FIRST_POD`].
/// An address missing from the identity trie is WORLD.
pub const IDENTITY_NONE: u32 = 0;
pub const IDENTITY_HOST: u32 = 1;
pub const IDENTITY_WORLD: u32 = 2;
pub const IDENTITY_FIRST_POD: u32 = 256;

/// Number of rule groups that get a bit; the rest spill (see [`SpillKey`]).
pub const RULE_BITS: u32 = 64;

/// [`Endpoint::flags`].
pub const EP_ISOLATED_INGRESS: u32 = 1 << 0;
pub const EP_ISOLATED_EGRESS: u32 = 1 << 1;
/// The interface is known but its policy is not programmed yet: drop all IP.
pub const EP_PENDING: u32 = 1 << 2;
/// The pod's compiled maps could not be written (capacity): deny all IP,
/// as if isolated with no rule, in both directions.
pub const EP_DENY_ALL: u32 = 1 << 3;
/// The direction's isolation comes only from policies in audit mode
/// (`palisade.dev/enforcement: audit`, or the agent's `--audit`): a packet
/// no rule allows passes, counted and reported as "would deny".
pub const EP_AUDIT_INGRESS: u32 = 1 << 4;
pub const EP_AUDIT_EGRESS: u32 = 1 << 5;

/// Capacities of the inner (per-pod, per-direction) maps. All inner maps of
/// one outer map share one template, hence one size; they are created with
/// `BPF_F_NO_PREALLOC`, so the size costs nothing until used.
pub const INNER_IDENTITY_MAX: u32 = 65_536;
pub const INNER_CIDR_MAX: u32 = 65_536;
pub const INNER_PORT_MAX: u32 = 16_384;
pub const INNER_SPILL_MAX: u32 = 262_144;
/// Outer map capacity: local endpoints x 2 directions x 2 generations.
pub const MAX_ENDPOINTS: u32 = 1_024;
pub const OUTER_MAX: u32 = MAX_ENDPOINTS * 4;
pub const IDENTITY_TRIE_MAX: u32 = 1_048_576;
/// Service ClusterIPs of the cluster (`SERVICES`).
pub const SERVICES_MAX: u32 = 65_536;
/// Local pod addresses (`LOCAL_ADDRS`): two per endpoint.
pub const LOCAL_ADDRS_MAX: u32 = MAX_ENDPOINTS * 2;
pub const CONNTRACK_MAX: u32 = 262_144;
pub const FRAG_MAX: u32 = 8_192;
/// Entries of each pod's own conntrack table (`CONNTRACK_POD`) unless the
/// agent is told otherwise: a pod that opens more flows than this evicts
/// only its own oldest entries. An LRU preallocates: 4,096 entries are
/// 0.5 MiB of kernel memory per local pod, charged to the agent's cgroup.
pub const CONNTRACK_POD_DEFAULT: u32 = 4_096;
/// Capacity of the `CONNTRACK_POD` inner-map template. Only the template
/// the loader needs has this size; each pod's table is created with its own.
pub const CONNTRACK_POD_TEMPLATE: u32 = 64;
/// Datagrams in flight (first fragment seen, later ones awaited) each
/// pod's own fragment table (`FRAGMENTS_POD`) holds: what reassembly
/// needs, 26 KiB of kernel memory per pod.
pub const FRAGMENTS_POD_ENTRIES: u32 = 256;
/// Capacity of the `FRAGMENTS_POD` inner-map template (each pod's table is
/// created with `FRAGMENTS_POD_ENTRIES`).
pub const FRAGMENTS_POD_TEMPLATE: u32 = 64;
/// How long a first fragment's verdict waits for the datagram's later
/// fragments: the kernel's own reassembly timeout (`ipfrag_time`, 30 s),
/// after which no receiver would take them anyway. In [`FRAG_TICK_SHIFT`]
/// ticks.
pub const FRAG_TIMEOUT_TICKS: u32 = 28;
/// A fragment record's clock: monotonic nanoseconds shifted right by this
/// (ticks of ~1.07 s).
pub const FRAG_TICK_SHIFT: u32 = 30;
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// Conntrack idle timeouts.
pub const CT_TIMEOUT_TCP_NS: u64 = 6 * 3600 * 1_000_000_000;
pub const CT_TIMEOUT_OTHER_NS: u64 = 60 * 1_000_000_000;
/// Idle timeout of a TCP connection after its FIN or RST: Linux's
/// `nf_conntrack_tcp_timeout_fin_wait` (a half-closed connection may still
/// carry data the other way).
pub const CT_TIMEOUT_CLOSING_NS: u64 = 120 * 1_000_000_000;

/// Data part of every address LPM key (identity trie, per-pod CIDR trie).
/// LPM prefix length = 8 (family) + CIDR prefix length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpKey {
    pub family: u8,
    pub addr: [u8; 16],
}

/// Data part of the per-pod port LPM key: protocol, then the port in network
/// byte order. LPM prefix length = 8 (protocol) + port prefix length (0..=16).
/// Protocols without ports are looked up with port 0 at full length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    pub proto: u8,
    pub port_be: [u8; 2],
}

/// Key of `SERVICES`: one frontend of a Service, a ClusterIP with one of
/// the Service's protocols and ports (network byte order). Only these get
/// a client's egress decision deferred past DNAT: another port of a
/// ClusterIP leads nowhere, so policy decides it like any address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub addr: IpKey,
    pub proto: u8,
    pub port_be: [u8; 2],
}

/// Value of the identity map, the CIDR trie and the port trie of a pod.
/// `bits`: the rule groups (bit i = group i) this peer / port belongs to.
/// `class`: the class of this peer / port for the spilled groups (0 = none).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleBits {
    pub bits: u64,
    pub class: u32,
    pub _pad: u32,
}

/// Kinds of [`SpillKey::kind`].
pub const SPILL_ANY_PEER: u32 = 0;
pub const SPILL_IDENTITY: u32 = 1;
pub const SPILL_CIDR_CLASS: u32 = 2;

/// Key of the per-pod spill table, for rule groups beyond [`RULE_BITS`]:
/// present iff (peer, port class) is matched by a spilled group; the value
/// ([`SpillValue`]) names the first such group and what it does.
/// `peer` is the identity (SPILL_IDENTITY), the CIDR trie's class
/// (SPILL_CIDR_CLASS) or 0 (SPILL_ANY_PEER); `port_class` is the port trie's
/// class, or the direction's `any_port_class` for an any-port group.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpillKey {
    pub kind: u32,
    pub peer: u32,
    pub port_class: u32,
}

/// Value of the per-pod spill table: of the spilled groups matching the
/// key, the first (`first`) and the first past the Admin tier
/// (`after_admin`, what decides after an Admin tier Pass), each
/// `group << 2 | SPILL_ALLOW | SPILL_DENY | SPILL_PASS`, or
/// [`SPILL_NONE`]. Encoded so that the lower value is the earlier group:
/// the first of several matching keys is their minimum.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpillValue {
    pub first: u32,
    pub after_admin: u32,
}

/// What a spilled group does ([`SpillValue`]'s low two bits): allow
/// (NetworkPolicy groups, cluster Accept, a Baseline Pass), drop (cluster
/// Deny), or skip the rest of the Admin tier (an Admin Pass).
pub const SPILL_ALLOW: u32 = 0;
pub const SPILL_DENY: u32 = 1;
pub const SPILL_PASS: u32 = 2;
/// No spilled group.
pub const SPILL_NONE: u32 = u32::MAX;

/// Key of the outer (map-of-maps) policy maps: one inner map per endpoint,
/// direction and generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub ifindex: u32,
    pub generation: u32,
    pub direction: u32,
}

/// The rule groups that hold for every peer / every port of one direction,
/// and what each rule bit does.
///
/// Bits are in evaluation order: the ClusterNetworkPolicy Admin tier's
/// groups first (`admin`), then either the NetworkPolicy groups (the
/// direction is isolated by a NetworkPolicy) or the Baseline tier's
/// groups (it is not: `open`). The lowest set bit of `peer & port` wins:
/// a `deny` bit drops, a `pass` bit of the Admin tier clears the `admin`
/// bits and the lowest remaining bit wins, any other bit allows. No bit
/// left: allowed when `open`, else refused by the isolation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DirPolicy {
    pub any_peer: u64,
    pub any_port: u64,
    /// Bits of the Admin tier's groups (the lowest ones).
    pub admin: u64,
    /// Bits of groups whose rules' action is Deny.
    pub deny: u64,
    /// Bits of groups whose rules' action is Pass.
    pub pass: u64,
    /// Port class that every packet has for spilled any-port groups (0 = none).
    pub any_port_class: u32,
    /// Non-zero when some spilled group allows any peer.
    pub spill_any_peer: u32,
    /// Non-zero when no NetworkPolicy isolates the direction: the check
    /// runs for cluster rules only, and what none matches passes.
    pub open: u32,
    pub _pad: u32,
}

/// Endpoint record, keyed by the ifindex of the pod's host-side interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub flags: u32,
    /// Which generation of the pod's inner maps is live (see [`PolicyKey`]).
    pub generation: u32,
    pub ingress: DirPolicy,
    pub egress: DirPolicy,
    /// The pod's own addresses, for anti-spoofing at pod egress.
    /// Unused slots have family 0.
    pub addrs: [IpKey; 2],
    /// The pod's slot in the counter maps and the event budget
    /// (`0..MAX_ENDPOINTS`); [`SLOT_UNKNOWN`] counts packets of interfaces
    /// without a record.
    pub slot: u16,
    /// The policy epoch: the writer changes it with every change of the
    /// record or of its maps. A conntrack entry keeps the low 16 bits of
    /// the epoch that allowed its flow (`CT_EPOCH_SHIFT`); a packet finding
    /// an entry of another epoch has its flow decided again, so a policy
    /// change reaches established flows at their next packet.
    pub epoch: u32,
}

/// Cells of `ENDPOINT_CELLS`: the fast path finds the record of interface
/// `ifindex` in cell `ifindex & (ENDPOINT_CELLS_MAX - 1)`, two array
/// lookups the verifier inlines, where `ENDPOINTS` costs a hash lookup.
/// Interface indexes grow with every interface a node creates, so the
/// cells are a ring: two live interfaces may share a cell, and the one
/// without it is found in `ENDPOINTS`.
pub const ENDPOINT_CELLS_MAX: u32 = 65_536;

/// The value of a one-entry inner map of `ENDPOINT_CELLS`: a copy of the
/// record of interface `ifindex` in `ENDPOINTS`. Never written after it is
/// linked: the writer links a new inner map for every change, so a
/// classifier never reads a half-written record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointCell {
    pub ifindex: u32,
    pub _pad: u32,
    pub endpoint: Endpoint,
}

/// Counter slot of packets seen on an interface without an endpoint record.
pub const SLOT_UNKNOWN: u32 = MAX_ENDPOINTS;
/// Slots in `COUNTERS` and the event budget: one per endpoint, plus
/// [`SLOT_UNKNOWN`].
pub const SLOTS: u32 = MAX_ENDPOINTS + 1;

/// Per-CPU counters of one pod and direction (`COUNTERS`, index
/// `slot * 2 + direction`). Every IP packet a hook sees lands in exactly one
/// of the three.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counters {
    pub allowed_packets: u64,
    pub allowed_bytes: u64,
    pub denied_packets: u64,
    pub denied_bytes: u64,
    /// Passed only because the isolation is in audit mode.
    pub would_deny_packets: u64,
    pub would_deny_bytes: u64,
}

/// Rule counter columns per pod and direction: one per rule bit, then
/// [`RULE_COL_SPILLED`] (a spilled group allowed) and
/// [`RULE_COL_NOT_ISOLATED`] (the direction was not isolated).
pub const RULE_COLS: u32 = RULE_BITS + 2;
pub const RULE_COL_SPILLED: u32 = RULE_BITS;
pub const RULE_COL_NOT_ISOLATED: u32 = RULE_BITS + 1;

/// Packets and bytes allowed by one rule column of one pod and direction
/// (`RULE_COUNTERS`, index `(slot * 2 + direction) * RULE_COLS + column`).
/// Shared across CPUs, updated with atomic adds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleCounter {
    pub packets: u64,
    pub bytes: u64,
}

/// `Config::events` bits: which events the classifiers emit.
pub const CONFIG_EVENTS_DENIED: u32 = 1 << 0;
/// Allowed new flows (and would-deny ones); off unless someone listens.
pub const CONFIG_EVENTS_ALLOWED: u32 = 1 << 1;

/// Node-wide settings written by the agent (`CONFIG`, one element). All
/// zero (no events) until the agent writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Config {
    pub events: u32,
    pub _pad: u32,
}

/// Conntrack key: the tuple as it was seen at a hook, plus the hook's ifindex
/// (each pod's check keeps its own entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub ifindex: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub src: IpKey,
    pub dst: IpKey,
    pub _pad: [u8; 1],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtValue {
    pub last_seen_ns: u64,
    /// Bit that allowed the flow when it was created (`u32::MAX`: not
    /// isolated; `u32::MAX - 1`: allowed by a spilled group).
    pub rule: u32,
    /// `CT_OPENED_*` (which end opened the connection) and `CT_CLOSING`.
    pub flags: u32,
}

/// [`CtValue::flags`]: the connection was opened by the packet whose ends
/// were already in normalized order (`_FORWARD`) or swapped (`_REVERSE`);
/// 0 for an entry of an older version (no orientation known). A TCP SYN
/// from the other end never rides the entry: it is a new connection,
/// decided by policy.
pub const CT_OPENED_FORWARD: u32 = 1;
pub const CT_OPENED_REVERSE: u32 = 2;
pub const CT_OPENED_MASK: u32 = 3;
/// A FIN or RST was seen: the entry expires after `CT_TIMEOUT_CLOSING_NS`
/// of idleness instead of `CT_TIMEOUT_TCP_NS`.
pub const CT_CLOSING: u32 = 1 << 8;
/// A flow a policy change refused (`CtValue::flags`): every packet of it
/// drops, in both directions, until the entry is left idle past
/// `CT_TIMEOUT_CLOSING_NS` (TCP) or `CT_TIMEOUT_OTHER_NS`, or the policy
/// epoch moves on again. Without it, the end whose other direction is not
/// isolated would open the flow again with its next retransmission.
pub const CT_CUT: u32 = 1 << 9;
/// [`CtValue::flags`] bits 16 to 31: the low 16 bits of the
/// [`Endpoint::epoch`] under which the flow was last allowed.
pub const CT_EPOCH_SHIFT: u32 = 16;

/// Fragment tracking: the first fragment's ports and verdict, keyed by the
/// fragment identity.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub ifindex: u32,
    pub id: u32,
    pub proto: u8,
    pub src: IpKey,
    pub dst: IpKey,
    pub _pad: [u8; 1],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragValue {
    pub sport: u16,
    pub dport: u16,
    /// The tick ([`FRAG_TICK_SHIFT`]) after which the record is void: a
    /// later fragment arriving after it drops, and a datagram id reused
    /// later is decided by its own first fragment.
    pub expires: u32,
}

/// Event reasons.
pub const REASON_POLICY: u32 = 1;
pub const REASON_SPOOF: u32 = 2;
pub const REASON_PENDING: u32 = 3;
pub const REASON_MALFORMED: u32 = 4;
pub const REASON_FRAGMENT: u32 = 5;
/// A tunnel packet (IPIP, GRE, VXLAN, Geneve) to the node that no rule allows.
pub const REASON_ENCAP: u32 = 6;

/// [`Event::verdict`].
pub const VERDICT_DENIED: u8 = 1;
pub const VERDICT_ALLOWED: u8 = 2;
/// Denied by an isolation in audit mode, passed.
pub const VERDICT_WOULD_DENY: u8 = 3;

/// `CtValue::rule` and [`Event::rule`] values beyond the rule bits.
pub const RULE_NOT_ISOLATED: u32 = u32::MAX;
pub const RULE_SPILLED: u32 = u32::MAX - 1;
/// A flow passed in audit mode that no rule allows.
pub const RULE_WOULD_DENY: u32 = u32::MAX - 2;
/// No rule: a denied packet.
pub const RULE_NONE: u32 = u32::MAX - 3;
/// A flow to a Service ClusterIP at the client's egress hook: its egress
/// policy is decided after DNAT, where the backend is known (see
/// `docs/ebpf.md`, "Services"); this entry lets the un-NATed replies in.
pub const RULE_SERVICE: u32 = u32::MAX - 4;
/// Traffic between a pod and its own node (any address of the node, which
/// the identity trie maps to [`IDENTITY_HOST`]): always allowed, whatever
/// the policy (kubelet probes depend on it). At pod ingress only packets the
/// node itself sent count: one forwarded from elsewhere (a masqueraded
/// flow, a packet from off the node) is judged by policy like any other.
pub const RULE_NODE: u32 = u32::MAX - 5;
/// Set in a check's result (never stored in conntrack): the rule bit in
/// the low bits is a ClusterNetworkPolicy Deny that dropped the packet.
pub const RULE_DENY_FLAG: u32 = 1 << 8;

/// Indexes of the `EVENTS_LOST` per-CPU counters: events suppressed by the
/// per-CPU rate limit, and events lost because the ring buffer was full.
pub const EVENTS_LOST_SAMPLED: u32 = 0;
pub const EVENTS_LOST_FULL: u32 = 1;

/// A verdict sent to the ring buffer (rate-limited per pod and CPU): every
/// denied packet, and when [`CONFIG_EVENTS_ALLOWED`] is set, the first
/// packet of every allowed or would-deny flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub ifindex: u32,
    pub direction: u32,
    /// `REASON_*` of a denied or would-deny packet, 0 for an allowed one.
    pub reason: u32,
    /// The rule bit that allowed the flow, or a `RULE_*` value.
    pub rule: u32,
    /// The endpoint's generation when decided: the rule bit is one of that
    /// generation's groups.
    pub generation: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// `VERDICT_*`.
    pub verdict: u8,
    pub src: IpKey,
    pub dst: IpKey,
    pub _pad: [u8; 4],
}

/// Names of the maps and programs, as declared in the eBPF object and pinned
/// under the bpffs root.
pub mod names {
    pub const ENDPOINTS: &str = "ENDPOINTS";
    /// Array of maps by `ifindex & (ENDPOINT_CELLS_MAX - 1)`: one-entry
    /// arrays holding an [`EndpointCell`](super::EndpointCell).
    pub const ENDPOINT_CELLS: &str = "ENDPOINT_CELLS";
    pub const IDENTITIES: &str = "IDENTITIES";
    pub const POLICY_IDENTITY: &str = "POLICY_IDENTITY";
    pub const POLICY_CIDR: &str = "POLICY_CIDR";
    pub const POLICY_PORT: &str = "POLICY_PORT";
    pub const POLICY_SPILL: &str = "POLICY_SPILL";
    pub const CONNTRACK: &str = "CONNTRACK";
    /// Array of maps, by endpoint slot: each pod's own conntrack table.
    pub const CONNTRACK_POD: &str = "CONNTRACK_POD";
    pub const FRAGMENTS: &str = "FRAGMENTS";
    /// Array of maps, by endpoint slot: each pod's own fragment records.
    pub const FRAGMENTS_POD: &str = "FRAGMENTS_POD";
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU `u64` counters of deny events not delivered, indexed by
    /// [`EVENTS_LOST_SAMPLED`](super::EVENTS_LOST_SAMPLED) and
    /// [`EVENTS_LOST_FULL`](super::EVENTS_LOST_FULL).
    pub const EVENTS_LOST: &str = "EVENTS_LOST";
    /// Per-CPU [`Counters`](super::Counters) per pod slot and direction.
    pub const COUNTERS: &str = "COUNTERS";
    /// [`RuleCounter`](super::RuleCounter) per pod slot, direction and rule.
    pub const RULE_COUNTERS: &str = "RULE_COUNTERS";
    /// One [`Config`](super::Config).
    pub const CONFIG: &str = "CONFIG";
    /// Service ClusterIPs: `IpKey` -> `u32` (1).
    pub const SERVICES: &str = "SERVICES";
    /// Local pod addresses: `IpKey` -> ifindex of the pod's host-side
    /// interface.
    pub const LOCAL_ADDRS: &str = "LOCAL_ADDRS";
    /// TC egress of the node's uplink: egress decisions deferred past DNAT
    /// for flows leaving the node.
    pub const PROG_NODE_EGRESS: &str = "node_egress";
    /// TC egress of the host-side veth: the pod's ingress.
    pub const PROG_INGRESS: &str = "pod_ingress";
    /// TC ingress of the host-side veth: the pod's egress.
    pub const PROG_EGRESS: &str = "pod_egress";
}

// Layouts are a contract with the eBPF object and with pinned maps that
// outlive an agent binary: any change here must be deliberate.
const _: () = {
    assert!(core::mem::size_of::<IpKey>() == 17);
    assert!(core::mem::size_of::<PortKey>() == 3);
    assert!(core::mem::size_of::<ServiceKey>() == 20);
    assert!(core::mem::size_of::<RuleBits>() == 16);
    assert!(core::mem::size_of::<SpillKey>() == 12);
    assert!(core::mem::size_of::<SpillValue>() == 8);
    assert!(core::mem::size_of::<PolicyKey>() == 12);
    assert!(core::mem::size_of::<DirPolicy>() == 56);
    assert!(core::mem::size_of::<Endpoint>() == 160);
    assert!(core::mem::size_of::<EndpointCell>() == 168);
    assert!(core::mem::size_of::<CtKey>() == 44);
    assert!(core::mem::size_of::<CtValue>() == 16);
    assert!(core::mem::size_of::<FragKey>() == 44);
    assert!(core::mem::size_of::<FragValue>() == 8);
    assert!(core::mem::size_of::<Event>() == 64);
    assert!(core::mem::size_of::<Counters>() == 48);
    assert!(core::mem::size_of::<RuleCounter>() == 16);
    assert!(core::mem::size_of::<Config>() == 8);
    assert!(core::mem::offset_of!(Endpoint, slot) == 154);
};

#[cfg(feature = "user")]
mod pod_impls {
    use super::*;
    macro_rules! pod {
        ($($t:ty),*) => { $(unsafe impl aya::Pod for $t {})* };
    }
    pod!(
        IpKey,
        PortKey,
        ServiceKey,
        RuleBits,
        SpillKey,
        SpillValue,
        PolicyKey,
        DirPolicy,
        Endpoint,
        EndpointCell,
        CtKey,
        CtValue,
        FragKey,
        FragValue,
        Event,
        Counters,
        RuleCounter,
        Config
    );
}
