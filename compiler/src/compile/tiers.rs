//! ClusterNetworkPolicy tiers in the compiler. Each cluster rule is read
//! as a NetworkPolicy-shaped [`Rule`] (pods peers as namespace AND pod
//! selectors, `networks` and the addresses of the selected Nodes as IP
//! blocks, an all-peers rule without peers), so grouping, named ports and
//! identity patching are the NetworkPolicy ones. What differs is order:
//! groups follow evaluation order, and only rules of one action that
//! follow each other share a group (by port set, as NetworkPolicy rules do),
//! so the lowest set bit is still the first matching rule.

use super::cluster::Cluster;
use super::groups::{merge, rule_parts, Group};
use super::peers::PeerKey;
use super::ports::PortRange;
use ipnetwork::IpNetwork;
use palisade_policy::{
    Action, ClusterPeer, ClusterPolicy, ClusterRule, ClusterRuleRef, Direction, Node, Peer, Pod,
    Rule, Tier,
};
use std::collections::{BTreeMap, HashMap};

/// A cluster policy with its rules read as NetworkPolicy rules.
#[derive(Clone, Debug)]
pub struct TierPolicy {
    pub policy: ClusterPolicy,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

impl TierPolicy {
    /// Reads `policy` against the Nodes known now (a `nodes` peer is the
    /// addresses of the Nodes it selects).
    pub fn new(policy: ClusterPolicy, nodes: &BTreeMap<String, Node>) -> TierPolicy {
        let read = |rules: &[ClusterRule]| rules.iter().map(|r| as_rule(r, nodes)).collect();
        TierPolicy {
            ingress: read(&policy.ingress),
            egress: read(&policy.egress),
            policy,
        }
    }

    pub fn rules(&self, dir: Direction) -> &[Rule] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// Whether the policy's subject holds a pod of `ns` (labelled
    /// `ns_labels`) with `labels`.
    pub fn selects(
        &self,
        ns_labels: &palisade_policy::Labels,
        labels: &palisade_policy::Labels,
    ) -> bool {
        self.policy.subject.namespaces.matches(ns_labels)
            && self.policy.subject.pods.matches(labels)
    }
}

fn as_rule(rule: &ClusterRule, nodes: &BTreeMap<String, Node>) -> Rule {
    if rule.peers.iter().any(|p| matches!(p, ClusterPeer::All)) {
        return Rule {
            peers: None,
            ports: rule.ports.clone(),
        };
    }
    let block = |net: IpNetwork| Peer::IpBlock {
        cidr: net,
        except: vec![],
    };
    let mut peers = Vec::new();
    for peer in &rule.peers {
        match peer {
            ClusterPeer::Pods(set) => peers.push(Peer::Pods {
                namespaces: Some(set.namespaces.clone()),
                pods: Some(set.pods.clone()),
            }),
            ClusterPeer::Networks(nets) => peers.extend(nets.iter().copied().map(block)),
            ClusterPeer::Nodes(sel) => peers.extend(
                nodes
                    .values()
                    .filter(|n| sel.matches(&n.labels))
                    .flat_map(|n| n.addresses.iter())
                    .map(|ip| block(IpNetwork::from(*ip))),
            ),
            ClusterPeer::All => unreachable!("handled above"),
        }
    }
    Rule {
        peers: Some(peers),
        ports: rule.ports.clone(),
    }
}

/// The groups of tier `tier` for `pod`'s direction `dir`, in evaluation
/// order.
pub fn tier_groups(cluster: &Cluster, pod: &Pod, dir: Direction, tier: Tier) -> Vec<Group> {
    let ns_labels = cluster.ns_labels(&pod.namespace);
    let mut out: Vec<Group> = Vec::new();
    // Groups of the current run of one action, by port set.
    let mut run: (Option<Action>, HashMap<Option<Vec<PortRange>>, usize>) = (None, HashMap::new());
    let selecting = cluster
        .tiers
        .iter()
        .filter(|t| t.policy.tier == tier && t.selects(&ns_labels, &pod.labels));
    for tp in selecting {
        let policy = &tp.policy;
        for (index, rule) in tp.rules(dir).iter().enumerate() {
            let action = policy.rules(dir)[index].action;
            if run.0 != Some(action) {
                run = (Some(action), HashMap::new());
            }
            let rref = ClusterRuleRef {
                tier,
                priority: policy.priority,
                policy: policy.name.clone(),
                direction: dir,
                rule: index,
                name: policy.rules(dir)[index].name.clone(),
                action,
            };
            let peer_key = |peer: usize| PeerKey {
                namespace: String::new(),
                policy: policy.name.clone(),
                direction: dir,
                rule: index,
                peer,
            };
            for (ports, peers) in rule_parts(cluster, "", &peer_key, rule, pod, dir) {
                if peers.is_empty() {
                    continue;
                }
                let g = *run.1.entry(ports.clone()).or_insert_with(|| {
                    out.push(Group {
                        rules: Vec::new(),
                        cluster: Vec::new(),
                        ports,
                        peers: Default::default(),
                    });
                    out.len() - 1
                });
                let group = &mut out[g];
                if group.cluster.last() != Some(&rref) {
                    group.cluster.push(rref.clone());
                }
                merge(&mut group.peers, peers);
            }
        }
    }
    out
}
