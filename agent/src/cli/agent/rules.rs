//! Per-policy packet and byte totals from the rule counter columns.
//!
//! The kernel counts allowed packets per pod, direction and rule column
//! (rule bit, spilled, not isolated), cumulatively for the pod's counter
//! slot. What a bit means changes when the pod's policy is recompiled, so
//! the columns are folded into per-policy totals in userspace: before each
//! programming round (with the groups the kernel ran with until then) and
//! at every scrape. A column's delta is added to every policy with a rule
//! in its group; the spilled column to every policy with a rule in a
//! spilled group (the datapath does not say which spilled group allowed).
//!
//! A ClusterNetworkPolicy group's column counts what the group decided
//! (allowed for Accept, denied for Deny): it is folded per cluster rule
//! instead, with the rule's tier, index and action, into `cluster`.

use crate::datapath::telemetry::Telemetry;
use crate::monitor::view::NodeView;
use palisade_common::{RuleCounter, DIR_EGRESS, DIR_INGRESS, RULE_BITS, RULE_COL_SPILLED};
use palisade_policy::{ClusterRuleRef, Direction};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// (policy `namespace/name`, pod `namespace/name`, direction).
pub type PolicyKey = (String, String, Direction);

/// A cluster rule for one pod and direction: (rule, pod `namespace/name`,
/// direction). The rule carries its policy, tier, priority, index, name
/// and action.
pub type ClusterKey = (ClusterRuleRef, String, Direction);

#[derive(Debug, Default)]
pub struct RuleTotals {
    /// Pod owning each slot at the last fold.
    owners: HashMap<u32, String>,
    /// Raw column values at the last fold: (slot, direction, column).
    last: HashMap<(u32, u32, u32), RuleCounter>,
    /// (packets, bytes) per policy, pod and direction.
    pub totals: BTreeMap<PolicyKey, (u64, u64)>,
    /// (packets, bytes) per ClusterNetworkPolicy rule, pod and direction:
    /// what the rule decided (allowed or denied by its action).
    pub cluster: BTreeMap<ClusterKey, (u64, u64)>,
}

/// The growth of a cumulative column since `last`. A value below `last`
/// means the slot was zeroed (given to a new pod) in between.
fn delta(now: RuleCounter, last: Option<RuleCounter>) -> (u64, u64) {
    match last {
        Some(l) if now.packets >= l.packets && now.bytes >= l.bytes => {
            (now.packets - l.packets, now.bytes - l.bytes)
        }
        _ => (now.packets, now.bytes),
    }
}

impl RuleTotals {
    /// Adds what the columns counted since the last fold, attributed with
    /// the groups of `view` (the ones the kernel ran with meanwhile).
    pub fn fold(&mut self, view: &NodeView, tel: &Telemetry) {
        self.fold_with(view, |slot, dir, col| tel.rule_counter(slot, dir, col).ok());
    }

    /// [`RuleTotals::fold`] with the column reader `read(slot, direction,
    /// column)`.
    fn fold_with(&mut self, view: &NodeView, read: impl Fn(u32, u32, u32) -> Option<RuleCounter>) {
        let mut live_slots = BTreeSet::new();
        let mut live_keys = BTreeSet::new();
        let mut live_cluster = BTreeSet::new();
        for pod in view.pods.values() {
            let key = pod.key();
            live_slots.insert(pod.slot);
            if self.owners.get(&pod.slot) != Some(&key) {
                // A slot given to another pod starts from zero (the writer
                // clears its counters before handing it out).
                self.last.retain(|(s, _, _), _| *s != pod.slot);
                self.owners.insert(pod.slot, key.clone());
            }
            for (dir, d) in [
                (Direction::Ingress, DIR_INGRESS),
                (Direction::Egress, DIR_EGRESS),
            ] {
                let dv = pod.dir(dir);
                if !dv.isolated {
                    continue;
                }
                let bits = dv.groups.len().min(RULE_BITS as usize);
                let mut columns: Vec<(u32, Vec<&str>, &[ClusterRuleRef])> = (0..bits)
                    .map(|c| {
                        let cluster = dv.cluster_group(c).unwrap_or_default();
                        (c as u32, dv.policies_of_groups(c..c + 1), cluster)
                    })
                    .collect();
                if dv.groups.len() > RULE_BITS as usize {
                    columns.push((
                        RULE_COL_SPILLED,
                        dv.policies_of_groups(RULE_BITS as usize..usize::MAX),
                        &[],
                    ));
                }
                for (col, policies, cluster) in columns {
                    for p in &policies {
                        live_keys.insert((p.to_string(), key.clone(), dir));
                    }
                    for r in cluster {
                        live_cluster.insert((r.clone(), key.clone(), dir));
                    }
                    let Some(now) = read(pod.slot, d, col) else {
                        continue;
                    };
                    let (packets, bytes) = delta(now, self.last.insert((pod.slot, d, col), now));
                    if packets == 0 && bytes == 0 {
                        continue;
                    }
                    for p in policies {
                        let t = self
                            .totals
                            .entry((p.to_string(), key.clone(), dir))
                            .or_default();
                        t.0 += packets;
                        t.1 += bytes;
                    }
                    for r in cluster {
                        let t = self
                            .cluster
                            .entry((r.clone(), key.clone(), dir))
                            .or_default();
                        t.0 += packets;
                        t.1 += bytes;
                    }
                }
            }
        }
        self.owners.retain(|s, _| live_slots.contains(s));
        self.last.retain(|(s, _, _), _| live_slots.contains(s));
        // A policy that no longer applies to a pod (or a pod that went)
        // ends its series.
        self.totals.retain(|k, _| live_keys.contains(k));
        for k in live_keys {
            self.totals.entry(k).or_default();
        }
        self.cluster.retain(|k, _| live_cluster.contains(k));
        for k in live_cluster {
            self.cluster.entry(k).or_default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(packets: u64, bytes: u64) -> RuleCounter {
        RuleCounter { packets, bytes }
    }

    #[test]
    fn deltas_grow_from_the_last_value_and_restart_after_a_reset() {
        assert_eq!(delta(rc(10, 1000), None), (10, 1000));
        assert_eq!(delta(rc(10, 1000), Some(rc(4, 400))), (6, 600));
        assert_eq!(delta(rc(3, 300), Some(rc(4, 400))), (3, 300));
    }

    #[test]
    fn cluster_columns_fold_per_cluster_rule() {
        use crate::monitor::view::{DirView, PodView};
        use palisade_policy::{Action, RuleRef, Tier};
        let cluster = |policy: &str, rule, action| ClusterRuleRef {
            tier: Tier::Admin,
            priority: 10,
            policy: policy.into(),
            direction: Direction::Egress,
            rule,
            name: None,
            action,
        };
        let deny = cluster("guard", 0, Action::Deny);
        let accept = cluster("guard", 1, Action::Accept);
        let np = RuleRef {
            policy: "x/web".into(),
            direction: Direction::Egress,
            rule: 0,
        };
        let mut view = NodeView::default();
        view.pods.insert(
            4,
            PodView {
                namespace: "x".into(),
                name: "a".into(),
                slot: 2,
                generation: 0,
                ingress: DirView::default(),
                egress: DirView {
                    isolated: true,
                    audit: false,
                    groups: vec![vec![], vec![np], vec![]],
                    isolating: vec!["x/web".into()],
                    cluster: vec![vec![deny.clone()], vec![], vec![accept.clone()]],
                },
            },
        );
        let counts = std::cell::RefCell::new(HashMap::from([
            ((2, DIR_EGRESS, 0), rc(3, 300)),
            ((2, DIR_EGRESS, 1), rc(5, 500)),
            ((2, DIR_EGRESS, 2), rc(7, 700)),
        ]));
        let mut totals = RuleTotals::default();
        let read = |s, d, c| counts.borrow().get(&(s, d, c)).copied();
        totals.fold_with(&view, read);
        let pod = "x/a".to_string();
        let dir = Direction::Egress;
        assert_eq!(totals.cluster[&(deny.clone(), pod.clone(), dir)], (3, 300));
        assert_eq!(
            totals.cluster[&(accept.clone(), pod.clone(), dir)],
            (7, 700)
        );
        assert_eq!(totals.totals[&("x/web".into(), pod.clone(), dir)], (5, 500));
        assert_eq!(totals.cluster.len(), 2, "{:?}", totals.cluster);
        // Only the growth is added at the next fold.
        counts.borrow_mut().insert((2, DIR_EGRESS, 0), rc(4, 400));
        totals.fold_with(&view, read);
        assert_eq!(totals.cluster[&(deny, pod.clone(), dir)], (4, 400));
        // A rule that no longer applies ends its series.
        view.pods.get_mut(&4).unwrap().egress.cluster = vec![];
        totals.fold_with(&view, read);
        assert!(totals.cluster.is_empty());
    }
}
