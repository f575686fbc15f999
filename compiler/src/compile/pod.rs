//! Compiling one local pod: both directions, grouping then assembly.

use super::assemble::assemble;
use super::cluster::Cluster;
use super::groups::groups;
use super::peers::PeerKey;
use crate::types::{CompiledDirection, CompiledPod};
use palisade_common::RULE_BITS;
use palisade_policy::{Direction, Pod};

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
        let compiled = match groups(cluster, pod, dir) {
            None => Ok(CompiledDirection::default()),
            Some(dg) => {
                let d = &mut index.dirs[dir as usize];
                d.patchable = dg.groups.len() <= RULE_BITS as usize;
                for (g, group) in dg.groups.iter().enumerate() {
                    d.peers
                        .extend(group.peers.pod_peers.iter().map(|k| (k.clone(), g)));
                }
                assemble(dg.groups).map(|compiled| CompiledDirection {
                    audit: dg.audit,
                    isolating: dg.isolating,
                    ..compiled
                })
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
