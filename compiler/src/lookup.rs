//! The lookup model: answers a flow from the compiled maps by doing exactly
//! the lookups the classifiers do (`docs/maps.md`, "The lookup"), longest
//! prefix matches included. Property tests hold it equal to the spec oracle;
//! tools use it to explain what the kernel will decide.

use crate::types::{CompiledDirection, CompiledNode, PortPrefix};
use ipnetwork::IpNetwork;
use palisade_common::{
    RuleBits, SpillKey, IDENTITY_WORLD, PROTO_SCTP, PROTO_TCP, PROTO_UDP, SPILL_ANY_PEER,
    SPILL_CIDR_CLASS, SPILL_IDENTITY, SPILL_NONE, SPILL_PASS,
};
use palisade_policy::{Action, ClusterRuleRef, Direction, Flow, RuleRef};
use std::net::IpAddr;

/// The datapath's answer for one direction of one pod.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum LookupVerdict {
    /// Not isolated in this direction (or not a local pod: nothing checked).
    NotIsolated,
    /// Allowed by rule group `group` (the lowest set bit, or for a spilled
    /// group the one that put the spill key there), whose rules are `rules`.
    Allowed {
        group: usize,
        rules: Vec<RuleRef>,
    },
    /// Decided by a ClusterNetworkPolicy group (`rules`, of one tier and
    /// action): Accept allows, Deny denies, a Baseline Pass leaves the
    /// packet to the default (allowed).
    Cluster {
        group: usize,
        rules: Vec<ClusterRuleRef>,
        action: Action,
    },
    Denied,
    /// No rule allows it, but the direction is isolated by audit policies
    /// only: the packet passes and is reported as "would deny".
    WouldDeny,
}

impl LookupVerdict {
    /// Whether the packet passes this check (a would-deny passes).
    pub fn allows(&self) -> bool {
        match self {
            LookupVerdict::Denied => false,
            LookupVerdict::Cluster { action, .. } => *action != Action::Deny,
            _ => true,
        }
    }

    pub fn would_deny(&self) -> bool {
        matches!(self, LookupVerdict::WouldDeny)
    }
}

/// Both checks of a flow: the source pod's egress and the destination pod's
/// ingress, each `NotIsolated` when that pod is not local.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CheckVerdict {
    pub egress: LookupVerdict,
    pub ingress: LookupVerdict,
}

impl CheckVerdict {
    pub fn allowed(&self) -> bool {
        self.egress.allows() && self.ingress.allows()
    }

    /// Passes only because audit-mode isolation does not drop.
    pub fn would_deny(&self) -> bool {
        self.allowed() && (self.egress.would_deny() || self.ingress.would_deny())
    }
}

/// One direction's check for local pod `pod` (`namespace/name`).
pub fn lookup(node: &CompiledNode, pod: &str, dir: Direction, flow: &Flow) -> LookupVerdict {
    let Some(cp) = node.pods.get(pod) else {
        return LookupVerdict::NotIsolated;
    };
    // A pod whose maps could not be built is programmed deny-all.
    if cp.error.is_some() {
        return LookupVerdict::Denied;
    }
    let d = cp.direction(dir);
    if !d.isolated {
        return LookupVerdict::NotIsolated;
    }
    let peer = match dir {
        Direction::Ingress => flow.src,
        Direction::Egress => flow.dst,
    };
    let id = node
        .identities
        .get(&peer)
        .copied()
        .unwrap_or(IDENTITY_WORLD);
    let zero = RuleBits::default();
    let rid = d.identities.get(&id).copied().unwrap_or(zero);
    let rc = cidr_lpm(d, peer).unwrap_or(zero);
    let rp = port_lpm(d, flow).unwrap_or(zero);
    let mut hit = (d.any_peer | rid.bits | rc.bits) & (d.any_port | rp.bits);
    // An Admin tier Pass as the lowest bit skips the rest of the tier.
    let mut passed = false;
    if hit & hit.wrapping_neg() & d.pass & d.admin != 0 {
        hit &= !d.admin;
        passed = true;
    }
    if hit != 0 {
        return allowed(d, hit.trailing_zeros() as usize);
    }
    // Spilled groups: the first of those matching any key decides.
    let (mut first, mut after_admin) = (SPILL_NONE, SPILL_NONE);
    for k in [rp.class, d.any_port_class] {
        if k == 0 {
            continue;
        }
        let mut keys = Vec::with_capacity(3);
        if d.spill_any_peer {
            keys.push((SPILL_ANY_PEER, 0));
        }
        keys.push((SPILL_IDENTITY, id));
        if rc.class != 0 {
            keys.push((SPILL_CIDR_CLASS, rc.class));
        }
        for (kind, peer) in keys {
            let key = SpillKey {
                kind,
                peer,
                port_class: k,
            };
            if let Some(v) = d.spill.get(&key) {
                first = first.min(v.first);
                after_admin = after_admin.min(v.after_admin);
            }
        }
    }
    // After a Pass (in the bits or spilled) only groups past the Admin
    // tier count.
    let mut spilled = if passed { after_admin } else { first };
    if spilled != SPILL_NONE && spilled & 3 == SPILL_PASS {
        spilled = after_admin;
    }
    if spilled != SPILL_NONE {
        return allowed(d, (spilled >> 2) as usize);
    }
    // No rule decided: a direction no NetworkPolicy isolates passes; else
    // the endpoint's audit flag turns the drop into a reported pass.
    if d.open {
        LookupVerdict::NotIsolated
    } else if d.audit {
        LookupVerdict::WouldDeny
    } else {
        LookupVerdict::Denied
    }
}

/// The verdict of rule group `group`: a cluster group's action, or a
/// NetworkPolicy group's allow.
fn allowed(d: &CompiledDirection, group: usize) -> LookupVerdict {
    let g = d.groups.get(group).cloned().unwrap_or_default();
    match g.cluster_action() {
        Some((_, action)) => LookupVerdict::Cluster {
            group,
            rules: g.cluster,
            action,
        },
        None => LookupVerdict::Allowed {
            group,
            rules: g.rules,
        },
    }
}

/// Longest-prefix match in the pod's CIDR trie (the family byte is part of
/// the key, so only prefixes of the address's own family can match).
fn cidr_lpm(d: &CompiledDirection, addr: IpAddr) -> Option<RuleBits> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (0..=max).rev().find_map(|len| {
        let net = IpNetwork::new(addr, len).ok()?;
        let key = IpNetwork::new(net.network(), len).ok()?;
        d.cidrs.get(&key).copied()
    })
}

/// Longest-prefix match in the pod's port trie: protocol, then the
/// destination port (0 for protocols without ports).
fn port_lpm(d: &CompiledDirection, flow: &Flow) -> Option<RuleBits> {
    let port = match flow.proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => flow.dport,
        _ => 0,
    };
    (0..=16u8).rev().find_map(|len| {
        let mask = if len == 0 { 0 } else { u16::MAX << (16 - len) };
        d.ports
            .get(&PortPrefix {
                proto: flow.proto,
                port: port & mask,
                len,
            })
            .copied()
    })
}

/// The full check of a flow on this node: the source pod's egress when it
/// is local, and the destination pod's ingress when it is local.
pub fn check(node: &CompiledNode, flow: &Flow) -> CheckVerdict {
    let local = |addr: IpAddr| {
        node.pods
            .iter()
            .find(|(_, p)| p.ips.contains(&addr))
            .map(|(k, _)| k.as_str())
    };
    let egress = local(flow.src).map_or(LookupVerdict::NotIsolated, |k| {
        lookup(node, k, Direction::Egress, flow)
    });
    let ingress = local(flow.dst).map_or(LookupVerdict::NotIsolated, |k| {
        lookup(node, k, Direction::Ingress, flow)
    });
    CheckVerdict { egress, ingress }
}
