//! Attaching the classifiers to pod interfaces with pinned TCX links.
//!
//! `pod_egress` goes on TC ingress of the host-side interface (packets the
//! pod sends), `pod_ingress` on TC egress (packets sent to the pod). Each
//! link is pinned at `links/<ifindex>-<program>`, so enforcement survives the
//! agent exiting, even by `kill -9`. A restarted agent finds the pins, moves
//! each live link to its freshly loaded program in one atomic
//! `BPF_LINK_UPDATE` (a new binary's classifiers take over with no gap), and
//! never attaches twice. Links whose interface is gone are unpinned.

use super::load::PinLayout;
use super::sys;
use anyhow::{bail, Context, Result};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions};
use aya::programs::{LinkOrder, ProgramError, SchedClassifier, TcAttachType};
use aya::Ebpf;
use palisade_common::names;
use std::collections::BTreeSet;
use std::path::Path;

/// The two hooks of a pod interface.
pub const HOOKS: [(&str, TcAttachType); 2] = [
    (names::PROG_EGRESS, TcAttachType::Ingress),
    (names::PROG_INGRESS, TcAttachType::Egress),
];

/// Attaches `p` at the head of the interface's TCX chain. Palisade must
/// see every packet: a program placed before it could pass packets around
/// it (`TCX_PASS` ends the chain), while the classifiers end an allowed
/// packet with `TCX_NEXT`, so programs after them still see it.
pub fn attach_first(
    p: &mut SchedClassifier,
    ifname: &str,
    hook: TcAttachType,
) -> Result<SchedClassifierLinkId, ProgramError> {
    p.attach_with_options(ifname, hook, TcAttachOptions::TcxOrder(LinkOrder::first()))
}

pub(super) fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier> {
    ebpf.program_mut(name)
        .with_context(|| format!("the eBPF object has no program {name}"))?
        .try_into()
        .with_context(|| format!("program {name} is not a TC classifier"))
}

/// Parses `<ifindex>-<program>` link pin names.
pub(crate) fn parse_pin_name(name: &str) -> Option<(u32, &str)> {
    let (idx, prog) = name.split_once('-')?;
    let idx = idx.parse().ok()?;
    HOOKS.iter().any(|(p, _)| *p == prog).then_some((idx, prog))
}

/// Re-adopts the pinned links: live ones are switched to the loaded
/// programs, defunct ones (interface gone) and stray files are unpinned.
/// Returns the interfaces that have both hooks attached.
pub fn adopt(ebpf: &mut Ebpf, layout: &PinLayout) -> Result<BTreeSet<u32>> {
    let dir = layout.links_dir();
    let mut seen: std::collections::BTreeMap<u32, usize> = Default::default();
    let entries = std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let fname = entry.file_name().to_string_lossy().into_owned();
        let Some((ifindex, prog)) = parse_pin_name(&fname) else {
            tracing::warn!(pin = %path.display(), "unexpected file among link pins; removing");
            remove_pin(&path);
            continue;
        };
        let info = match sys::tcx_link_info(&path) {
            Ok(info) => info,
            Err(e) => {
                // Left alone: removing a pin we cannot read could detach a
                // live classifier. `program` re-attaches or removes it
                // depending on whether the interface is still a pod's.
                tracing::warn!(pin = %path.display(), error = %format!("{e:#}"), "unreadable link pin");
                continue;
            }
        };
        if info.ifindex != ifindex {
            // 0 when the interface was deleted while nobody watched.
            tracing::info!(pin = %path.display(), "link of a vanished interface; unpinning");
            remove_pin(&path);
            continue;
        }
        replace_program(ebpf, prog, &path)?;
        *seen.entry(ifindex).or_default() += 1;
    }
    Ok(seen
        .into_iter()
        .filter(|(_, n)| *n == HOOKS.len())
        .map(|(i, _)| i)
        .collect())
}

/// Atomically points a pinned TCX link at the loaded program of this agent.
pub(super) fn replace_program(ebpf: &mut Ebpf, prog: &str, path: &Path) -> Result<()> {
    let pinned = PinnedLink::from_pin(path)
        .with_context(|| format!("open pinned link {}", path.display()))?;
    let link = SchedClassifierLink::try_from(FdLink::from(pinned))
        .with_context(|| format!("pinned link {} is not a TCX link", path.display()))?;
    let p = program(ebpf, prog)?;
    let id = p
        .attach_to_link(link)
        .with_context(|| format!("update pinned link {} to the new {prog}", path.display()))?;
    // Closing our descriptor leaves the link attached: the pin holds it.
    let _ = p.take_link(id)?;
    Ok(())
}

pub(crate) fn remove_pin(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(pin = %path.display(), error = %e, "cannot remove pin");
        }
    }
}

/// Whether the pinned link of `prog` on `ifindex` is live.
pub(crate) fn is_attached(layout: &PinLayout, ifindex: u32, prog: &str) -> bool {
    let path = layout.link(ifindex, prog);
    matches!(sys::tcx_link_info(&path), Ok(info) if info.ifindex == ifindex)
}

/// Attaches both classifiers to `ifindex` unless their pinned links are
/// already there.
pub fn attach(ebpf: &mut Ebpf, layout: &PinLayout, ifindex: u32) -> Result<()> {
    for (prog, hook) in HOOKS {
        if is_attached(layout, ifindex, prog) {
            continue;
        }
        let path = layout.link(ifindex, prog);
        remove_pin(&path);
        let ifname =
            sys::ifname(ifindex).with_context(|| format!("interface {ifindex} does not exist"))?;
        let p = program(ebpf, prog)?;
        let id = attach_first(p, &ifname, hook)
            .with_context(|| format!("attach {prog} to {ifname} ({hook:?})"))?;
        let link = p.take_link(id)?;
        let fd_link = match FdLink::try_from(link) {
            Ok(l) => l,
            Err(_) => bail!(
                "attaching {prog} to {ifname} did not create a TCX link (kernel older than 6.6?); \
                 palisade needs TCX links to keep enforcement across agent restarts"
            ),
        };
        fd_link
            .pin(&path)
            .with_context(|| format!("pin link {}", path.display()))?;
        tracing::debug!(ifname, ifindex, prog, "attached");
    }
    Ok(())
}

/// Detaches both classifiers from `ifindex` by removing their pins (the
/// agent holds no other reference to the links).
pub fn detach(layout: &PinLayout, ifindex: u32) {
    for (prog, _) in HOOKS {
        remove_pin(&layout.link(ifindex, prog));
    }
}

/// Interfaces with at least one pinned link.
pub fn pinned_ifindexes(layout: &PinLayout) -> Result<BTreeSet<u32>> {
    let dir = layout.links_dir();
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        if let Some((i, _)) = parse_pin_name(&entry?.file_name().to_string_lossy()) {
            out.insert(i);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_round_trip() {
        assert_eq!(parse_pin_name("12-pod_ingress"), Some((12, "pod_ingress")));
        assert_eq!(parse_pin_name("7-pod_egress"), Some((7, "pod_egress")));
        assert_eq!(parse_pin_name("x-pod_egress"), None);
        assert_eq!(parse_pin_name("7-other"), None);
    }
}
