//! Metrics read from the classifiers' maps at scrape time: packets and
//! bytes per pod and verdict, per policy, lost events, and how full the
//! node's maps are.

use super::rules::{ClusterKey, RuleTotals};
use crate::datapath::load::PinLayout;
use crate::datapath::telemetry::{self, MapSize, Telemetry};
use crate::monitor::view::{NodeView, SharedView};
use palisade_common::{DIR_EGRESS, DIR_INGRESS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Map entry counts walk every key: refreshed at most this often.
const SIZES_TTL: Duration = Duration::from_secs(10);

pub struct DatapathMetrics {
    layout: PinLayout,
    telemetry: Mutex<Telemetry>,
    view: SharedView,
    rules: Mutex<RuleTotals>,
    sizes: Mutex<Option<(Instant, Vec<MapSize>)>>,
}

impl std::fmt::Debug for DatapathMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatapathMetrics")
            .field("node_dir", &self.layout.node_dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DatapathMetrics {
    pub fn new(layout: &PinLayout, view: SharedView) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(DatapathMetrics {
            layout: layout.clone(),
            telemetry: Mutex::new(Telemetry::open(layout)?),
            view,
            rules: Mutex::new(RuleTotals::default()),
            sizes: Mutex::new(None),
        }))
    }

    /// Folds the rule columns with `view` (call before a round changes what
    /// the bits mean, and after it publishes the new view).
    pub fn fold(&self, view: &NodeView) {
        let tel = lock(&self.telemetry);
        lock(&self.rules).fold(view, &tel);
    }

    fn sizes(&self) -> Vec<MapSize> {
        let mut cached = lock(&self.sizes);
        if let Some((at, sizes)) = cached.as_ref() {
            if at.elapsed() < SIZES_TTL {
                return sizes.clone();
            }
        }
        let sizes = telemetry::map_sizes(&self.layout);
        *cached = Some((Instant::now(), sizes.clone()));
        sizes
    }
}

/// The collector registered with the agent's registry.
#[derive(Debug)]
pub struct Scrape(pub Arc<DatapathMetrics>);

fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

type Labels = Vec<(&'static str, String)>;
/// One labelled value of a family.
type Rows = Vec<(Labels, u64)>;

fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        m.encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(v, None)?;
    }
    Ok(())
}

fn gauge_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        m.encode_family(labels)?.encode_gauge(v)?;
    }
    Ok(())
}

fn dir_label(dir: palisade_policy::Direction) -> String {
    dir.name().into()
}

/// The per-rule series of the ClusterNetworkPolicy groups: (packets,
/// bytes) rows labelled with the policy, its tier and priority, the rule's
/// index, name (empty when it has none) and action, the pod and the
/// direction.
fn cluster_rows(totals: &BTreeMap<ClusterKey, (u64, u64)>) -> (Rows, Rows) {
    let (mut packets, mut bytes) = (Vec::new(), Vec::new());
    for ((r, pod, dir), (p, b)) in totals {
        let (pod_ns, pod_name) = split(pod);
        let labels: Labels = vec![
            ("policy", r.policy.clone()),
            ("tier", r.tier.name().into()),
            ("priority", r.priority.to_string()),
            ("rule", r.rule.to_string()),
            ("rule_name", r.name.clone().unwrap_or_default()),
            ("action", r.action.name().into()),
            ("pod_namespace", pod_ns.into()),
            ("pod", pod_name.into()),
            ("direction", dir_label(*dir)),
        ];
        packets.push((labels.clone(), *p));
        bytes.push((labels, *b));
    }
    (packets, bytes)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let dm = &self.0;
        let view = dm.view.get();
        dm.fold(&view);

        let (mut packets, mut bytes) = (Vec::new(), Vec::new());
        {
            let tel = lock(&dm.telemetry);
            for pod in view.pods.values() {
                for (dir, d) in [("ingress", DIR_INGRESS), ("egress", DIR_EGRESS)] {
                    let Ok(c) = tel.counters(pod.slot, d) else {
                        continue;
                    };
                    for (verdict, p, b) in [
                        ("allowed", c.allowed_packets, c.allowed_bytes),
                        ("denied", c.denied_packets, c.denied_bytes),
                        ("would_deny", c.would_deny_packets, c.would_deny_bytes),
                    ] {
                        let labels: Labels = vec![
                            ("namespace", pod.namespace.clone()),
                            ("pod", pod.name.clone()),
                            ("direction", dir.into()),
                            ("verdict", verdict.into()),
                        ];
                        packets.push((labels.clone(), p));
                        bytes.push((labels, b));
                    }
                }
            }
        }
        counter_family(
            &mut encoder,
            "pod_packets",
            "IP packets seen at a local pod's hook, by direction (as seen from the pod) and verdict",
            &packets,
        )?;
        counter_family(
            &mut encoder,
            "pod_bytes",
            "Bytes of the IP packets counted by palisade_pod_packets_total",
            &bytes,
        )?;

        let (mut ppackets, mut pbytes) = (Vec::new(), Vec::new());
        for ((policy, pod, dir), (p, b)) in &lock(&dm.rules).totals {
            let (ns, name) = split(policy);
            let (pod_ns, pod_name) = split(pod);
            let labels: Labels = vec![
                ("namespace", ns.into()),
                ("policy", name.into()),
                ("pod_namespace", pod_ns.into()),
                ("pod", pod_name.into()),
                ("direction", dir_label(*dir)),
            ];
            ppackets.push((labels.clone(), *p));
            pbytes.push((labels, *b));
        }
        counter_family(
            &mut encoder,
            "policy_packets",
            "Packets of the flows a policy's rules allowed for a pod (every packet of the flow, from its first); a rule group shared by several policies counts for each of them",
            &ppackets,
        )?;
        counter_family(
            &mut encoder,
            "policy_bytes",
            "Bytes of the packets counted by palisade_policy_packets_total",
            &pbytes,
        )?;

        let (cpackets, cbytes) = cluster_rows(&lock(&dm.rules).cluster);
        counter_family(
            &mut encoder,
            "cluster_rule_packets",
            "Packets a ClusterNetworkPolicy rule decided for a pod (every packet of an accepted flow; each denied packet), by the rule's action; a rule group of several rules counts for each of them",
            &cpackets,
        )?;
        counter_family(
            &mut encoder,
            "cluster_rule_bytes",
            "Bytes of the packets counted by palisade_cluster_rule_packets_total",
            &cbytes,
        )?;

        let lost = lock(&dm.telemetry).events_lost().ok();
        if let Some((sampled, full)) = lost {
            counter_family(
                &mut encoder,
                "events_lost",
                "Verdict events not delivered: rate-limited per pod and CPU (sampled) or ring buffer full (ring_full)",
                &[
                    (vec![("reason", "sampled".into())], sampled),
                    (vec![("reason", "ring_full".into())], full),
                ],
            )?;
        }

        let sizes = dm.sizes();
        let entries: Vec<(Labels, u64)> = sizes
            .iter()
            .filter_map(|s| Some((vec![("map", s.map.to_string())], s.entries?)))
            .collect();
        let capacity: Vec<(Labels, u64)> = sizes
            .iter()
            .map(|s| (vec![("map", s.map.to_string())], s.capacity))
            .collect();
        gauge_family(
            &mut encoder,
            "map_entries",
            "Entries in a pinned node map (refreshed at most every 10 s)",
            &entries,
        )?;
        gauge_family(
            &mut encoder,
            "map_capacity",
            "Maximum entries of a pinned node map",
            &capacity,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::{Action, ClusterRuleRef, Direction, Tier};

    #[test]
    fn cluster_rule_series_carry_policy_tier_rule_and_action() {
        let rule = ClusterRuleRef {
            tier: Tier::Admin,
            priority: 10,
            policy: "cluster-guard".into(),
            direction: Direction::Egress,
            rule: 0,
            name: Some("deny-cloud-metadata".into()),
            action: Action::Deny,
        };
        let totals = BTreeMap::from([(
            (rule, "shop/api-0".to_string(), Direction::Egress),
            (3, 222),
        )]);
        let (packets, bytes) = cluster_rows(&totals);
        let expected: Labels = vec![
            ("policy", "cluster-guard".into()),
            ("tier", "Admin".into()),
            ("priority", "10".into()),
            ("rule", "0".into()),
            ("rule_name", "deny-cloud-metadata".into()),
            ("action", "Deny".into()),
            ("pod_namespace", "shop".into()),
            ("pod", "api-0".into()),
            ("direction", "egress".into()),
        ];
        assert_eq!(packets, [(expected.clone(), 3)]);
        assert_eq!(bytes, [(expected, 222)]);
    }
}
