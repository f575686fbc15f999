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

use crate::datapath::telemetry::Telemetry;
use crate::monitor::view::NodeView;
use palisade_common::{RuleCounter, DIR_EGRESS, DIR_INGRESS, RULE_BITS, RULE_COL_SPILLED};
use palisade_policy::Direction;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// (policy `namespace/name`, pod `namespace/name`, direction).
pub type PolicyKey = (String, String, Direction);

#[derive(Debug, Default)]
pub struct RuleTotals {
    /// Pod owning each slot at the last fold.
    owners: HashMap<u32, String>,
    /// Raw column values at the last fold: (slot, direction, column).
    last: HashMap<(u32, u32, u32), RuleCounter>,
    /// (packets, bytes) per policy, pod and direction.
    pub totals: BTreeMap<PolicyKey, (u64, u64)>,
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
        let mut live_slots = BTreeSet::new();
        let mut live_keys = BTreeSet::new();
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
                let mut columns: Vec<(u32, Vec<&str>)> = (0..bits)
                    .map(|c| (c as u32, dv.policies_of_groups(c..c + 1)))
                    .collect();
                if dv.groups.len() > RULE_BITS as usize {
                    columns.push((
                        RULE_COL_SPILLED,
                        dv.policies_of_groups(RULE_BITS as usize..usize::MAX),
                    ));
                }
                for (col, policies) in columns {
                    for p in &policies {
                        live_keys.insert((p.to_string(), key.clone(), dir));
                    }
                    let Ok(now) = tel.rule_counter(pod.slot, d, col) else {
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
}
