//! The ClusterNetworkPolicy tiers, read straight from the policy text: in
//! one tier, the policies selecting the pod in evaluation order (priority,
//! then name), their rules of the direction in order; the first rule whose
//! peer and protocol entries match decides.

use super::{ports_match, Ends};
use crate::cluster::{Action, ClusterPeer, ClusterPolicy, ClusterRule, ClusterRuleRef, Tier};
use crate::model::{Direction, Flow, Model, Pod};

/// What one tier made of a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TierOutcome {
    /// An Accept or Deny rule matched first: final.
    Decided(ClusterRuleRef),
    /// A Pass rule matched first: the next tier decides.
    Passed(ClusterRuleRef),
    /// No rule of the tier matched.
    NoMatch,
}

/// The first matching rule of tier `tier` for `pod`'s `dir` check of `flow`.
pub fn tier_decision(
    model: &Model,
    tier: Tier,
    pod: &Pod,
    dir: Direction,
    flow: &Flow,
) -> TierOutcome {
    let ends = Ends::of(model, pod, dir, flow);
    for policy in model.cluster_policies_selecting(tier, pod) {
        for (index, rule) in policy.rules(dir).iter().enumerate() {
            if !cluster_rule_matches(model, rule, &ends, flow) {
                continue;
            }
            let r = rule_ref(policy, dir, index, rule);
            return match rule.action {
                Action::Pass => TierOutcome::Passed(r),
                Action::Accept | Action::Deny => TierOutcome::Decided(r),
            };
        }
    }
    TierOutcome::NoMatch
}

/// Whether `rule` matches: one of its peers is the other end, and one of
/// its protocol entries (or all, when it has none) matches.
pub fn cluster_rule_matches(model: &Model, rule: &ClusterRule, ends: &Ends, flow: &Flow) -> bool {
    let peer_ok = rule.peers.iter().any(|peer| match peer {
        ClusterPeer::All => true,
        ClusterPeer::Pods(set) => ends.peer_pod.is_some_and(|p| set.selects(model, p)),
        ClusterPeer::Networks(nets) => nets.iter().any(|n| n.contains(ends.peer_addr)),
        ClusterPeer::Nodes(sel) => model
            .nodes
            .iter()
            .any(|n| sel.matches(&n.labels) && n.addresses.contains(&ends.peer_addr)),
    });
    peer_ok && ports_match(&rule.ports, flow, ends.receiver)
}

fn rule_ref(
    policy: &ClusterPolicy,
    dir: Direction,
    index: usize,
    rule: &ClusterRule,
) -> ClusterRuleRef {
    ClusterRuleRef {
        tier: policy.tier,
        priority: policy.priority,
        policy: policy.name.clone(),
        direction: dir,
        rule: index,
        name: rule.name.clone(),
        action: rule.action,
    }
}
