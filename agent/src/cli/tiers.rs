//! ClusterNetworkPolicy tiers in the CLI's answers: which rules of the
//! Admin and Baseline tiers took part in a direction's verdict, and how to
//! name them. The oracle says which rule decided; a Pass decides nothing
//! and so is not in the verdict, yet it is why NetworkPolicy (or the
//! Baseline tier) had the say: it is asked of the oracle here, tier by
//! tier, exactly as `evaluate_direction` walks them.

use palisade_policy::{
    tier_decision, ClusterRuleRef, DirVerdict, Direction, Flow, Model, Pod, Tier, TierOutcome,
};

/// The Pass rules a direction's verdict went through, in evaluation
/// order: an Admin Pass (then NetworkPolicy or the Baseline tier
/// decided), and a Baseline Pass (then the default allowed it).
pub fn passes(
    model: &Model,
    pod: &Pod,
    dir: Direction,
    flow: &Flow,
    verdict: &DirVerdict,
) -> Vec<ClusterRuleRef> {
    let mut out = Vec::new();
    if let TierOutcome::Passed(r) = tier_decision(model, Tier::Admin, pod, dir, flow) {
        out.push(r);
    }
    // The Baseline tier is consulted only when no NetworkPolicy isolates
    // the pod; its Pass leaves the packet to the default.
    if matches!(verdict, DirVerdict::NotIsolated) {
        if let TierOutcome::Passed(r) = tier_decision(model, Tier::Baseline, pod, dir, flow) {
            out.push(r);
        }
    }
    out
}

/// Whether some ClusterNetworkPolicy's subject holds `pod` (its rules
/// were consulted, whether one matched or not).
pub fn cluster_selected(model: &Model, pod: &Pod) -> bool {
    [Tier::Admin, Tier::Baseline]
        .into_iter()
        .any(|t| model.cluster_policies_selecting(t, pod).next().is_some())
}

/// `ClusterNetworkPolicy NAME (TIER tier, priority P), DIR rule I (NAME):
/// ACTION`.
pub fn describe_cluster_rule(r: &ClusterRuleRef) -> String {
    let dir = r.direction.name();
    let name = r
        .name
        .as_deref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    format!(
        "ClusterNetworkPolicy {} ({} tier, priority {}), {dir} rule {}{name}: {}",
        r.policy,
        r.tier.name(),
        r.priority,
        r.rule,
        r.action.name()
    )
}

/// `Admin tier passed by <rule>, then: ` for each Pass, before the line
/// of what decided.
pub fn pass_prefix(passes: &[ClusterRuleRef]) -> String {
    passes
        .iter()
        .map(|r| {
            format!(
                "{} tier passed by {}, then: ",
                r.tier.name(),
                describe_cluster_rule(r)
            )
        })
        .collect()
}
