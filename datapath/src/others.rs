//! Another agent's pins on this node's interfaces.
//!
//! Each agent keeps its pins under `<bpffs-root>/<node>/` and holds that
//! directory's lock: two agents with the same `--node` wait for each other
//! (`sys::DirLock`). Two agents under different names on one node (a wrong
//! `NODE_NAME`, two installations) would not: each takes the other's pods
//! for interfaces of no known pod and holds them pending, its classifiers
//! first on every pod interface, dropping everything; and since its links
//! are pinned, the pods stay cut off after it is gone. So an agent looks,
//! before it creates anything, for classifiers of another node directory
//! of its bpffs root on interfaces of its own network namespace: while that
//! directory's agent runs it refuses to start; pins whose agent is gone
//! (a renamed node) are reported, and left alone.

use super::load::PinLayout;
use super::{sys, versions};
use anyhow::{bail, Result};
use aya::programs::{SchedClassifier, TcAttachType};
use std::collections::BTreeSet;
use std::path::Path;

/// Fails when a running agent of another node directory under
/// `bpffs_root` has classifiers on interfaces of this network namespace.
pub fn refuse_running(bpffs_root: &Path, node: &str) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(bpffs_root) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        if name == node || !dir.is_dir() {
            continue;
        }
        let held = interfaces_held(bpffs_root, &name);
        if held.is_empty() {
            continue;
        }
        let names: Vec<&str> = held.iter().map(|(_, n)| n.as_str()).collect();
        let list = names.join(", ");
        if sys::DirLock::try_acquire(&dir)?.is_none() {
            bail!(
                "another palisade agent runs on this node as --node {name} (pins in {}), and its \
                 classifiers are on {list}: two agents for one node would each hold the other's \
                 pods pending and cut them off. Refusing to start: check the --node (NODE_NAME) \
                 of both",
                dir.display()
            );
        }
        tracing::warn!(
            other_node = %name,
            dir = %dir.display(),
            interfaces = %list,
            "pins of another node name, whose agent is gone, still hold classifiers on this node's \
             interfaces (a renamed node?): they keep enforcing what they last had; delete the \
             directory if that name is gone for good"
        );
    }
    Ok(())
}

/// The interfaces (ifindex) of this network namespace that carry a live
/// link pinned under another node directory of `bpffs_root` than `node`:
/// the pins of an agent under another name, which keep enforcing there. An
/// interface routed to a pod the model places on another node is left to
/// those pins rather than held pending (which would cut the pod off for
/// good, the pending links being pinned); one without them is held.
pub fn held_by_others(bpffs_root: &Path, node: &str) -> BTreeSet<u32> {
    let Ok(entries) = std::fs::read_dir(bpffs_root) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != node)
        .flat_map(|name| interfaces_held(bpffs_root, &name))
        .map(|(ifindex, _)| ifindex)
        .collect()
}

/// The interfaces of this network namespace (ifindex, name) that carry a
/// live link pinned for `node` (any layout version): the interface with
/// the link's index here runs the link's program.
fn interfaces_held(bpffs_root: &Path, node: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let versions = versions::present(&bpffs_root.join(node)).unwrap_or_default();
    let layouts = versions
        .into_iter()
        .filter_map(|v| PinLayout::at(bpffs_root, node, v).ok());
    for links in layouts.map(|l| l.links_dir()) {
        let Ok(entries) = std::fs::read_dir(&links) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(info) = sys::tcx_link_info(&entry.path()) else {
                continue;
            };
            let Some(ifname) = sys::ifname(info.ifindex).filter(|_| info.ifindex != 0) else {
                continue;
            };
            let runs_it = [TcAttachType::Ingress, TcAttachType::Egress]
                .into_iter()
                .filter_map(|hook| SchedClassifier::query_tcx(&ifname, hook).ok())
                .any(|(_, progs)| progs.iter().any(|p| p.id() == info.prog_id));
            let held = (info.ifindex, ifname);
            if runs_it && !out.contains(&held) {
                out.push(held);
            }
        }
    }
    out
}
