//! What the compiler produces: per local pod and direction, exactly the
//! contents of the BPF maps (see `docs/maps.md`). The map writer copies
//! these into the kernel; the lookup model answers flows from them by doing
//! the datapath's lookups.

use ipnetwork::IpNetwork;
use palisade_common::{RuleBits, SpillKey, SpillValue};
use palisade_policy::{Action, ClusterRuleRef, Direction, RuleRef, Tier};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// A port trie prefix: protocol number, then `port` with `len` leading
/// bits significant (0..=16). `len == 16` is one port. A protocol-wide
/// entry (`len == 0`) covers protocols without ports too (looked up as port 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct PortPrefix {
    pub proto: u8,
    pub port: u16,
    pub len: u8,
}

/// One rule group (one bit, or one spilled group): NetworkPolicy rules
/// that share a port set, in a stable order; or ClusterNetworkPolicy rules
/// of one tier and action that follow each other in evaluation order and
/// share a port set (`cluster`, then `rules` is empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RuleGroup {
    pub rules: Vec<RuleRef>,
    pub cluster: Vec<ClusterRuleRef>,
}

impl RuleGroup {
    /// The tier and action of a cluster group.
    pub fn cluster_action(&self) -> Option<(Tier, Action)> {
        self.cluster.first().map(|r| (r.tier, r.action))
    }
}

/// One direction of one pod, ready to be written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledDirection {
    /// The classifier checks the direction: a NetworkPolicy isolates it,
    /// or ClusterNetworkPolicy rules apply to it (then `open` unless a
    /// NetworkPolicy isolates it too).
    pub isolated: bool,
    /// No NetworkPolicy isolates the direction: what no rule decides
    /// passes (only cluster rules are compiled here).
    pub open: bool,
    /// Bits of the Admin tier's groups, and of Deny and Pass groups
    /// (`DirPolicy`).
    pub admin: u64,
    pub deny: u64,
    pub pass: u64,
    /// Isolated by audit policies only: the compiled rules are theirs, and
    /// a packet none of them allows passes as "would deny" (the writer sets
    /// the endpoint's audit flag for the direction).
    pub audit: bool,
    /// The policies (`namespace/name`, sorted) whose rules are compiled
    /// here: those isolating the direction, enforced ones when there are
    /// any, else the audit ones. Policies without rules (default deny)
    /// included; empty when not isolated. For explanations, not written to
    /// the kernel.
    pub isolating: Vec<String>,
    pub any_peer: u64,
    pub any_port: u64,
    /// Port class every packet has for spilled any-port groups (0 = none).
    pub any_port_class: u32,
    /// Some spilled group allows any peer.
    pub spill_any_peer: bool,
    /// Peer identity -> groups.
    pub identities: BTreeMap<u32, RuleBits>,
    /// Disjoint-by-longest-match CIDR prefixes -> groups (flattened: each
    /// entry carries the union of every group covering it).
    pub cidrs: BTreeMap<IpNetwork, RuleBits>,
    /// Port prefixes -> groups, flattened the same way.
    pub ports: BTreeMap<PortPrefix, RuleBits>,
    /// (peer, port class) pairs of the spilled groups, with the first
    /// group matching each and what it does (`SpillValue`).
    pub spill: BTreeMap<SpillKey, SpillValue>,
    /// For explanations and metrics only (not written to the kernel): the
    /// lowest spilled group that puts each `spill` key there.
    pub spill_groups: BTreeMap<SpillKey, u32>,
    /// For explanations only: class number -> the spilled groups (indices
    /// into `groups`) it stands for.
    pub classes: BTreeMap<u32, Vec<u32>>,
    /// Group i (bit i for i < RULE_BITS, then the spilled ones).
    pub groups: Vec<RuleGroup>,
}

/// A local pod's compiled state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledPod {
    pub namespace: String,
    pub name: String,
    pub ips: Vec<IpAddr>,
    pub ingress: CompiledDirection,
    pub egress: CompiledDirection,
    /// Set when the pod's state exceeds a hard map capacity: the writer then
    /// programs the pod as deny-all, never open.
    pub error: Option<String>,
}

impl CompiledPod {
    pub fn direction(&self, dir: Direction) -> &CompiledDirection {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// Everything one node needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledNode {
    /// Node-wide identity trie: every pod IP in the cluster (/32, /128) ->
    /// its identity. Missing addresses are WORLD.
    pub identities: BTreeMap<IpAddr, u32>,
    /// Local pods by `namespace/name`.
    pub pods: BTreeMap<String, CompiledPod>,
    /// Every Service frontend of the cluster (ClusterIP, protocol, port):
    /// flows to them are decided after DNAT (`SERVICES`).
    pub services: BTreeSet<Frontend>,
}

/// One frontend of a Service: a ClusterIP with one of the Service's ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Frontend {
    pub ip: IpAddr,
    pub protocol: palisade_policy::Protocol,
    pub port: u16,
}

impl Frontend {
    /// Every frontend of `service`: each ClusterIP with each port.
    pub fn of(service: &palisade_policy::Service) -> Vec<Frontend> {
        service
            .cluster_ips
            .iter()
            .flat_map(|ip| {
                service.ports.iter().map(|p| Frontend {
                    ip: *ip,
                    protocol: p.protocol,
                    port: p.port,
                })
            })
            .collect()
    }
}

impl std::fmt::Display for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}/{}", self.port, self.protocol.name()),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}/{}", self.port, self.protocol.name()),
        }
    }
}
