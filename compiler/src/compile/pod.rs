//! Compiling one local pod: both directions, grouping then assembly.

use super::assemble::assemble;
use super::cluster::Cluster;
use super::groups::Group;
use super::peers::PeerKey;
use super::tiers::tier_groups;
use crate::types::{CompiledDirection, CompiledPod};
use palisade_common::RULE_BITS;
use palisade_policy::{Direction, Pod, Tier};

/// Both directions of one local pod; a capacity error empties the pod and
/// records why (the writer then programs it deny-all).
pub(super) fn compile_pod(cluster: &Cluster, pod: &Pod) -> (CompiledPod, PeerIndex) {
    let mut index = PeerIndex::default();
    let mut out = CompiledPod {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        ips: pod.ips.clone(),
        ..CompiledPod::default()
    };
    for dir in [Direction::Ingress, Direction::Egress] {
        let compiled = match direction_groups(cluster, pod, dir) {
            None => Ok(CompiledDirection::default()),
            Some(dg) => {
                let d = &mut index.dirs[dir as usize];
                d.patchable = dg.groups.len() <= RULE_BITS as usize;
                for (g, group) in dg.groups.iter().enumerate() {
                    d.peers
                        .extend(group.peers.pod_peers.iter().map(|k| (k.clone(), g)));
                }
                dg.assemble()
            }
        };
        match compiled {
            Ok(d) => match dir {
                Direction::Ingress => out.ingress = d,
                Direction::Egress => out.egress = d,
            },
            Err(e) => {
                let dname = match dir {
                    Direction::Ingress => "ingress",
                    Direction::Egress => "egress",
                };
                out.error = Some(format!(
                    "pod {}/{} {dname}: {e}; the pod is denied all traffic",
                    pod.namespace, pod.name
                ));
                out.ingress = CompiledDirection::default();
                out.egress = CompiledDirection::default();
                return (out, PeerIndex::default());
            }
        }
    }
    (out, index)
}

/// All groups of one pod direction in bit order: the Admin tier's, then
/// the NetworkPolicy groups when a NetworkPolicy isolates the direction,
/// else the Baseline tier's.
struct Ordered {
    groups: Vec<Group>,
    /// Number of Admin tier groups (the first ones).
    admin: usize,
    /// No NetworkPolicy isolates the direction.
    open: bool,
    audit: bool,
    isolating: Vec<String>,
}

/// The direction's groups, `None` when nothing applies to it (no
/// NetworkPolicy isolates it and no cluster rule selects the pod).
fn direction_groups(cluster: &Cluster, pod: &Pod, dir: Direction) -> Option<Ordered> {
    let mut groups = tier_groups(cluster, pod, dir, Tier::Admin);
    let admin = groups.len();
    let (open, audit, isolating) = match super::groups::groups(cluster, pod, dir) {
        Some(dg) => {
            groups.extend(dg.groups);
            (false, dg.audit, dg.isolating)
        }
        None => {
            groups.extend(tier_groups(cluster, pod, dir, Tier::Baseline));
            if groups.is_empty() {
                return None;
            }
            (true, false, Vec::new())
        }
    };
    Some(Ordered {
        groups,
        admin,
        open,
        audit,
        isolating,
    })
}

impl Ordered {
    /// The map contents: the first `RULE_BITS` groups get bits, the rest
    /// spill (cluster groups too: spill values keep their order).
    fn assemble(self) -> Result<CompiledDirection, String> {
        let admin = match self.admin {
            0 => 0,
            n if n >= RULE_BITS as usize => u64::MAX,
            n => u64::MAX >> (RULE_BITS as usize - n),
        };
        assemble(self.groups).map(|compiled| CompiledDirection {
            open: self.open,
            admin,
            audit: self.audit,
            isolating: self.isolating,
            ..compiled
        })
    }
}

/// Which groups of a local pod's direction each pod peer feeds, so that an
/// identity coming or going can be patched into the identity map without
/// a recompile. Not patchable when groups spill (spill keys name
/// identities too) or the pod failed to compile.
#[derive(Debug, Default)]
pub(super) struct PeerIndex {
    pub(super) dirs: [DirIndex; 2],
}

#[derive(Debug, Default)]
pub(super) struct DirIndex {
    pub(super) patchable: bool,
    pub(super) peers: Vec<(PeerKey, usize)>,
}
