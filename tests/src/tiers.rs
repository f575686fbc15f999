//! Builders of ClusterNetworkPolicies for the kernel tests and the
//! benchmarks that program them in code.

use palisade_policy::{
    Action, ClusterPeer, ClusterPolicy, ClusterRule, PodSet, PortMatch, PortSpec, Protocol,
    Selector, Tier, NAMESPACE_NAME_LABEL,
};

/// The selector of namespace `name` (by the label every namespace has).
pub fn ns(name: &str) -> Selector {
    let mut s = Selector::default();
    s.match_labels
        .insert(NAMESPACE_NAME_LABEL.into(), name.into());
    s
}

/// One TCP port, as a rule's `protocols`.
pub fn tcp(port: u16) -> Option<Vec<PortSpec>> {
    Some(vec![PortSpec {
        protocol: Protocol::Tcp,
        port: PortMatch::Range { port, end: port },
    }])
}

/// An unnamed rule.
pub fn rule(action: Action, peers: Vec<ClusterPeer>, ports: Option<Vec<PortSpec>>) -> ClusterRule {
    ClusterRule {
        name: None,
        action,
        peers,
        ports,
    }
}

/// A policy with no rules yet whose subject is every pod.
pub fn policy(name: &str, tier: Tier, priority: u32) -> ClusterPolicy {
    ClusterPolicy {
        name: name.into(),
        tier,
        priority,
        subject: PodSet::default(),
        ingress: vec![],
        egress: vec![],
        warnings: vec![],
    }
}
