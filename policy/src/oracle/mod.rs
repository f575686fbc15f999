//! The spec oracle: answers "is this packet allowed" straight from the
//! NetworkPolicy semantics, with no precomputation. It is the reference
//! the compiler and the datapath are tested against, so it stays simple
//! and slow on purpose.
//!
//! A flow is allowed when the source pod's egress and the destination
//! pod's ingress both allow it. For one pod and direction: not isolated
//! (no selecting policy has that policyType) allows everything; isolated
//! allows exactly what some rule of some isolating policy allows. A rule
//! allows a flow when one of its peers matches the other end (or it has
//! none) and one of its ports matches (or it has none).
//!
//! Audit mode: a direction any enforced policy isolates is decided by the
//! enforced policies alone; one isolated only by audit policies is decided
//! by them, but what none of their rules allows is "would deny" (the
//! packet passes) instead of denied.
//!
//! ClusterNetworkPolicy tiers surround that (`cluster`): the Admin tier
//! first, then NetworkPolicy, then the Baseline tier, then allowed.

mod cluster;

pub use cluster::{cluster_rule_matches, tier_decision, TierOutcome};

use crate::cluster::Tier;
use crate::model::{
    DirVerdict, Direction, Flow, Model, Peer, Pod, PortMatch, PortSpec, Rule, RuleRef, Verdict,
};
use std::net::IpAddr;

pub fn evaluate(model: &Model, flow: &Flow) -> Verdict {
    // An address that is no pod's has no policy of its own: that side is
    // not checked.
    let side = |addr: IpAddr, dir: Direction| match model.pod_by_ip(addr) {
        Some(pod) => evaluate_direction(model, pod, dir, flow),
        None => DirVerdict::NotIsolated,
    };
    Verdict {
        egress: side(flow.src, Direction::Egress),
        ingress: side(flow.dst, Direction::Ingress),
    }
}

/// The verdict of `pod`'s policies in `dir` for `flow`, where `pod` is the
/// flow's destination (ingress) or source (egress): the Admin tier, then
/// NetworkPolicy when one isolates the pod, then the Baseline tier.
pub fn evaluate_direction(model: &Model, pod: &Pod, dir: Direction, flow: &Flow) -> DirVerdict {
    let tier = |t| tier_decision(model, t, pod, dir, flow);
    if let TierOutcome::Decided(r) = tier(Tier::Admin) {
        return DirVerdict::Cluster(r);
    }
    if let Some(v) = network_policy_verdict(model, pod, dir, flow) {
        return v;
    }
    match tier(Tier::Baseline) {
        TierOutcome::Decided(r) => DirVerdict::Cluster(r),
        _ => DirVerdict::NotIsolated,
    }
}

/// The NetworkPolicy tier's verdict, `None` when no NetworkPolicy isolates
/// `pod` in `dir` (the tier has no say).
fn network_policy_verdict(
    model: &Model,
    pod: &Pod,
    dir: Direction,
    flow: &Flow,
) -> Option<DirVerdict> {
    let deciding = model.deciding_policies(pod, dir)?;
    let policies = deciding.policies;
    let Ends {
        peer_addr,
        peer_pod,
        receiver,
    } = Ends::of(model, pod, dir, flow);

    let mut allowed = Vec::new();
    for policy in &policies {
        for (index, rule) in policy.rules(dir).iter().enumerate() {
            let peer_ok = rule_peer_matches(model, &policy.namespace, rule, peer_addr, peer_pod);
            if peer_ok && ports_match(&rule.ports, flow, receiver) {
                allowed.push(RuleRef {
                    policy: policy.key(),
                    direction: dir,
                    rule: index,
                });
            }
        }
    }
    Some(if allowed.is_empty() {
        let mut isolating: Vec<String> = policies.iter().map(|p| p.key()).collect();
        isolating.sort();
        if deciding.audit {
            DirVerdict::WouldDeny(isolating)
        } else {
            DirVerdict::Denied(isolating)
        }
    } else {
        allowed.sort();
        DirVerdict::Allowed(allowed)
    })
}

/// The other end of a direction check, as the rules see it.
pub struct Ends<'a> {
    /// The peer's address: the source for ingress, the destination for
    /// egress.
    pub peer_addr: IpAddr,
    /// The pod owning that address, if any.
    pub peer_pod: Option<&'a Pod>,
    /// The pod receiving the traffic, on which named ports resolve.
    pub receiver: Option<&'a Pod>,
}

impl<'a> Ends<'a> {
    pub fn of(model: &'a Model, pod: &'a Pod, dir: Direction, flow: &Flow) -> Ends<'a> {
        let peer_addr = match dir {
            Direction::Ingress => flow.src,
            Direction::Egress => flow.dst,
        };
        let peer_pod = model.pod_by_ip(peer_addr);
        let receiver = match dir {
            Direction::Ingress => Some(pod),
            Direction::Egress => peer_pod,
        };
        Ends {
            peer_addr,
            peer_pod,
            receiver,
        }
    }
}

fn rule_peer_matches(
    model: &Model,
    policy_namespace: &str,
    rule: &Rule,
    addr: IpAddr,
    peer_pod: Option<&Pod>,
) -> bool {
    let Some(peers) = &rule.peers else {
        return true;
    };
    peers.iter().any(|peer| match peer {
        Peer::IpBlock { .. } => peer.block_contains(addr),
        Peer::Pods { .. } => {
            peer_pod.is_some_and(|p| model.peer_selects_pod(peer, policy_namespace, p))
        }
    })
}

/// Whether a rule's port list matches: `None` matches every protocol and
/// port, else one entry must.
fn ports_match(ports: &Option<Vec<PortSpec>>, flow: &Flow, receiver: Option<&Pod>) -> bool {
    let Some(ports) = ports else {
        return true;
    };
    ports.iter().any(|spec| port_matches(spec, flow, receiver))
}

fn port_matches(spec: &PortSpec, flow: &Flow, receiver: Option<&Pod>) -> bool {
    if spec.protocol.number() != flow.proto {
        return false;
    }
    match &spec.port {
        PortMatch::Any => true,
        PortMatch::Range { port, end } => (*port..=*end).contains(&flow.dport),
        // An address that is not a pod has no named ports.
        PortMatch::Named(name) => {
            receiver.is_some_and(|pod| pod.has_named_port(name, spec.protocol, flow.dport))
        }
    }
}
