//! Rule grouping: the rules of every policy selecting a pod, for one
//! direction, become groups of rules that share one port set (their peers
//! united). Named ports are resolved here: ingress ones on the pod itself,
//! egress ones per peer pod (splitting the rule per resolved port number,
//! its peers then being the addresses of the pods naming that port).

use super::cluster::{object_key, Cluster};
use super::peers::PeerKey;
use super::ports::{normalize, PortRange};
use ipnetwork::IpNetwork;
use palisade_policy::{deciding, ClusterRuleRef, Direction, Peer, Pod, PortMatch, Rule, RuleRef};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// The peers of one group.
#[derive(Clone, Debug, Default)]
pub struct GroupPeers {
    pub any: bool,
    pub identities: BTreeSet<u32>,
    pub blocks: Vec<(IpNetwork, Vec<IpNetwork>)>,
    pub addrs: BTreeSet<IpAddr>,
    /// The pod peers behind `identities`. A group with pod peers exists
    /// even while they select no identity, so that identities coming and
    /// going never renumber groups: the identity map can then be patched
    /// in place.
    pub pod_peers: Vec<PeerKey>,
}

impl GroupPeers {
    pub(super) fn is_empty(&self) -> bool {
        !self.any
            && self.identities.is_empty()
            && self.blocks.is_empty()
            && self.addrs.is_empty()
            && self.pod_peers.is_empty()
    }
}

/// One group: its port set (`None` = every port) and peers.
#[derive(Clone, Debug)]
pub struct Group {
    pub rules: Vec<RuleRef>,
    /// The ClusterNetworkPolicy rules of a cluster group (one tier and
    /// action); empty for a NetworkPolicy group.
    pub cluster: Vec<ClusterRuleRef>,
    pub ports: Option<Vec<PortRange>>,
    pub peers: GroupPeers,
}

/// The groups of an isolated pod direction, and which policies they come
/// from.
#[derive(Debug)]
pub struct DirGroups {
    pub groups: Vec<Group>,
    /// Isolated by audit policies only (their rules are the groups).
    pub audit: bool,
    /// `namespace/name` of the policies whose rules are the groups, sorted.
    pub isolating: Vec<String>,
}

/// The groups of a pod's direction in their stable order, or `None` when
/// no policy isolates the pod in that direction. Only the policies that
/// decide the direction count (`palisade_policy::deciding`): the enforced
/// ones when there are any, else the audit ones.
pub fn groups(cluster: &Cluster, pod: &Pod, dir: Direction) -> Option<DirGroups> {
    let deciding = deciding(cluster.selecting(&pod.namespace, &pod.labels), dir)?;
    let mut out: Vec<Group> = Vec::new();
    let mut by_ports: HashMap<Option<Vec<PortRange>>, usize> = HashMap::new();
    let mut isolating = Vec::with_capacity(deciding.policies.len());
    for policy in deciding.policies {
        let rules = policy.rules(dir);
        let pref = object_key(&policy.namespace, &policy.name);
        isolating.push(pref.clone());
        for (index, rule) in rules.iter().enumerate() {
            let rref = RuleRef {
                policy: pref.clone(),
                direction: dir,
                rule: index,
            };
            let peer_key = |peer: usize| PeerKey {
                namespace: policy.namespace.clone(),
                policy: policy.name.clone(),
                direction: dir,
                rule: index,
                peer,
            };
            for (ports, peers) in rule_parts(cluster, &policy.namespace, &peer_key, rule, pod, dir)
            {
                if peers.is_empty() {
                    continue;
                }
                let g = *by_ports.entry(ports.clone()).or_insert_with(|| {
                    out.push(Group {
                        rules: Vec::new(),
                        cluster: Vec::new(),
                        ports,
                        peers: GroupPeers::default(),
                    });
                    out.len() - 1
                });
                let group = &mut out[g];
                if group.rules.last() != Some(&rref) {
                    group.rules.push(rref.clone());
                }
                merge(&mut group.peers, peers);
            }
        }
    }
    // `selecting` yields one namespace's policies in name order; sorting
    // keeps the promise whatever that order becomes.
    isolating.sort();
    Some(DirGroups {
        groups: out,
        audit: deciding.audit,
        isolating,
    })
}

pub(super) fn merge(into: &mut GroupPeers, from: GroupPeers) {
    into.any |= from.any;
    into.identities.extend(from.identities);
    into.blocks.extend(from.blocks);
    into.addrs.extend(from.addrs);
    into.pod_peers.extend(from.pod_peers);
}

/// A rule's (port set, peers) parts.
pub(super) fn rule_parts(
    cluster: &Cluster,
    policy_ns: &str,
    peer_key: &dyn Fn(usize) -> PeerKey,
    rule: &Rule,
    pod: &Pod,
    dir: Direction,
) -> Vec<(Option<Vec<PortRange>>, GroupPeers)> {
    let Some(specs) = &rule.ports else {
        return vec![(None, rule_peers(cluster, policy_ns, peer_key, rule))];
    };
    let mut numeric = Vec::new();
    let mut named = Vec::new();
    for spec in specs {
        let proto = spec.protocol.number();
        match &spec.port {
            PortMatch::Any => numeric.push(PortRange {
                proto,
                lo: 0,
                hi: u16::MAX,
            }),
            // `end < port` is rejected by validation; an empty range if not.
            PortMatch::Range { port, end } if end >= port => numeric.push(PortRange {
                proto,
                lo: *port,
                hi: *end,
            }),
            PortMatch::Range { .. } => {}
            PortMatch::Named(name) => match dir {
                // Ingress: the receiving pod is the selected pod itself; a
                // name it does not declare matches nothing.
                Direction::Ingress => {
                    for p in &pod.ports {
                        if &p.name == name && p.protocol == spec.protocol {
                            numeric.push(PortRange {
                                proto,
                                lo: p.port,
                                hi: p.port,
                            });
                        }
                    }
                }
                Direction::Egress => named.push((name.as_str(), spec.protocol)),
            },
        }
    }
    let mut parts = Vec::new();
    if !numeric.is_empty() {
        parts.push((
            Some(normalize(numeric)),
            rule_peers(cluster, policy_ns, peer_key, rule),
        ));
    }
    if !named.is_empty() {
        // Egress: resolve on each pod the rule's peers cover.
        let mut by_port: BTreeMap<PortRange, BTreeSet<IpAddr>> = BTreeMap::new();
        for (name, protocol) in named {
            for key in cluster.named_candidates(name, policy_ns, rule.peers.as_deref()) {
                let Some(entry) = cluster.pods.get(key) else {
                    continue;
                };
                for p in &entry.ports {
                    if p.name != name || p.protocol != protocol {
                        continue;
                    }
                    let labels = cluster.labels_of(entry);
                    let addrs = cluster.covered_addrs(
                        policy_ns,
                        rule.peers.as_deref(),
                        &entry.namespace,
                        labels,
                        &entry.ips,
                    );
                    if addrs.is_empty() {
                        continue;
                    }
                    let range = PortRange {
                        proto: protocol.number(),
                        lo: p.port,
                        hi: p.port,
                    };
                    by_port.entry(range).or_default().extend(addrs);
                }
            }
        }
        for (range, addrs) in by_port {
            parts.push((
                Some(vec![range]),
                GroupPeers {
                    addrs,
                    ..GroupPeers::default()
                },
            ));
        }
    }
    parts
}

fn rule_peers(
    cluster: &Cluster,
    policy_ns: &str,
    peer_key: &dyn Fn(usize) -> PeerKey,
    rule: &Rule,
) -> GroupPeers {
    let mut out = GroupPeers::default();
    let Some(peers) = &rule.peers else {
        out.any = true;
        return out;
    };
    for (i, peer) in peers.iter().enumerate() {
        match peer {
            Peer::Pods { namespaces, pods } => {
                let (namespaces, pods) = (namespaces.as_ref(), pods.as_ref());
                let key = peer_key(i);
                let ids = cluster.peers.get(&key, namespaces, pods, || {
                    cluster.resolve_peer(policy_ns, namespaces, pods)
                });
                out.identities.extend(ids.iter().copied());
                out.pod_peers.push(key);
            }
            Peer::IpBlock { cidr, except } => out.blocks.push((*cidr, except.clone())),
        }
    }
    out
}
