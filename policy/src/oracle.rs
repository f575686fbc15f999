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
/// flow's destination (ingress) or source (egress).
pub fn evaluate_direction(model: &Model, pod: &Pod, dir: Direction, flow: &Flow) -> DirVerdict {
    let Some(deciding) = model.deciding_policies(pod, dir) else {
        return DirVerdict::NotIsolated;
    };
    let policies = deciding.policies;
    let peer_addr = match dir {
        Direction::Ingress => flow.src,
        Direction::Egress => flow.dst,
    };
    let peer_pod = model.pod_by_ip(peer_addr);
    // Named ports resolve on the pod receiving the traffic.
    let receiver = match dir {
        Direction::Ingress => Some(pod),
        Direction::Egress => peer_pod,
    };

    let mut allowed = Vec::new();
    for policy in &policies {
        for (index, rule) in policy.rules(dir).iter().enumerate() {
            let peer_ok = rule_peer_matches(model, &policy.namespace, rule, peer_addr, peer_pod);
            if peer_ok && rule_port_matches(rule, flow, receiver) {
                allowed.push(RuleRef {
                    policy: policy.key(),
                    direction: dir,
                    rule: index,
                });
            }
        }
    }
    if allowed.is_empty() {
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

fn rule_port_matches(rule: &Rule, flow: &Flow, receiver: Option<&Pod>) -> bool {
    let Some(ports) = &rule.ports else {
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
