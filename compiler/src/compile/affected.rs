//! What a pod change reaches beyond the pod itself, and the in-place patch
//! of identity maps when an identity comes or goes.

use super::cluster::block_contains;
use super::incremental::Compiler;
use crate::identity::IdentityKey;
use palisade_common::RuleBits;
use palisade_policy::{Direction, NamedPort, Peer, Pod, PortMatch, Rule};
use std::net::IpAddr;

/// A pod as seen by the change analysis: label set, addresses, ports.
pub(super) struct PodView {
    pub(super) key: IdentityKey,
    pub(super) id: u32,
    pub(super) ips: Vec<IpAddr>,
    pub(super) ports: Vec<NamedPort>,
    pub(super) identity_changed: bool,
}

impl Compiler {
    /// Updates the identity maps of local pod `key` for identities that
    /// were freed or created; returns whether anything changed. Exact
    /// because groups never depend on which identities exist (see
    /// `GroupPeers::pod_peers`) and no group spills.
    pub(super) fn patch_identities(&mut self, key: &str, freed: &[u32], created: &[u32]) -> bool {
        let (Some(index), Some(pod)) = (self.peer_index.get(key), self.out.pods.get_mut(key))
        else {
            return false;
        };
        let mut changed = false;
        for (dir, d) in [
            (Direction::Ingress, &mut pod.ingress),
            (Direction::Egress, &mut pod.egress),
        ] {
            if !d.isolated {
                continue;
            }
            for id in freed {
                changed |= d.identities.remove(id).is_some();
            }
            for &id in created {
                let bits = index.dirs[dir as usize]
                    .peers
                    .iter()
                    .filter(|(peer, _)| self.cluster.peers.contains(peer, id))
                    .fold(0u64, |bits, (_, g)| bits | (1 << g));
                if bits != 0 {
                    d.identities.insert(
                        id,
                        RuleBits {
                            bits,
                            class: 0,
                            _pad: 0,
                        },
                    );
                    changed = true;
                }
            }
        }
        changed
    }

    /// Whether local pod `local` has a rule (of a NetworkPolicy or a
    /// cluster policy selecting it) whose pod peers select one of
    /// `identities`, or an egress named-port rule whose peers cover one of
    /// `named`.
    pub(super) fn affected_by(
        &self,
        local: &Pod,
        identities: &[&PodView],
        named: &[&PodView],
    ) -> bool {
        let ns_labels = self.cluster.ns_labels(&local.namespace);
        let cluster_policies = self
            .cluster
            .tiers
            .iter()
            .filter(|t| t.selects(&ns_labels, &local.labels))
            .map(|t| ("", t.rules(Direction::Ingress), t.rules(Direction::Egress)));
        self.cluster
            .selecting(&local.namespace, &local.labels)
            .map(|p| {
                let ns = p.namespace.as_str();
                (ns, p.rules(Direction::Ingress), p.rules(Direction::Egress))
            })
            .chain(cluster_policies)
            .any(|(ns, ingress, egress)| {
                self.rules_affected(ns, ingress, Direction::Ingress, identities, named)
                    || self.rules_affected(ns, egress, Direction::Egress, identities, named)
            })
    }

    /// `affected_by` for the rules of one policy (in `policy_ns`) and
    /// direction.
    fn rules_affected(
        &self,
        policy_ns: &str,
        rules: &[Rule],
        dir: Direction,
        identities: &[&PodView],
        named: &[&PodView],
    ) -> bool {
        for rule in rules {
            let has_named = dir == Direction::Egress
                && rule
                    .ports
                    .as_ref()
                    .is_some_and(|ps| ps.iter().any(|p| matches!(p.port, PortMatch::Named(_))));
            let Some(peers) = &rule.peers else {
                if has_named && !named.is_empty() {
                    return true;
                }
                continue;
            };
            for peer in peers {
                match peer {
                    Peer::Pods { namespaces, pods } => {
                        let hit = |v: &&PodView| {
                            self.cluster.peer_selects(
                                policy_ns,
                                namespaces.as_ref(),
                                pods.as_ref(),
                                &v.key.namespace,
                                &v.key.labels,
                            )
                        };
                        if identities.iter().any(hit) || (has_named && named.iter().any(hit)) {
                            return true;
                        }
                    }
                    Peer::IpBlock { cidr, except } => {
                        if has_named
                            && named
                                .iter()
                                .any(|v| v.ips.iter().any(|ip| block_contains(cidr, except, *ip)))
                        {
                            return true;
                        }
                    }
                }
            }
        }
        false
    }
}
