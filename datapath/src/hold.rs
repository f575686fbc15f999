//! Holding a new pod interface pending from outside the agent: what the CNI
//! plugin does on ADD, agent up or not.
//!
//! An interface with both classifiers attached and no endpoint record drops
//! all IP (`REASON_PENDING`), so holding is just attaching: the plugin pins
//! the two TCX links under `links/` exactly as the agent does, and the
//! agent adopts them when it programs the pod. The programs come from the
//! agent's pins (`progs/`, refreshed at every agent start), so a hold costs
//! two link creations and no verifier run. They are the programs of the
//! live layout version (`versions::live`), whichever release pinned them,
//! so a plugin and an agent of different releases agree during an upgrade.
//! On a node where no agent has run yet there are no program pins: the
//! plugin then loads the object itself (creating the pinned maps the agent
//! will adopt) and pins the programs for the next pods.

use super::attach::{self, HOOKS};
use super::load::{self, PinLayout};
use super::{sys, versions};
use anyhow::{bail, Context, Result};
use aya::programs::links::FdLink;
use aya::programs::SchedClassifier;
use aya::Ebpf;
use std::path::Path;

/// Pins the loaded pod programs at `progs/<name>` for [`hold`]. A new pin
/// goes in under a temporary name and is renamed over the old one, so a
/// concurrent hold always finds one of the two.
pub fn pin_programs(ebpf: &mut Ebpf, layout: &PinLayout) -> Result<()> {
    let dir = layout.progs_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    for (prog, _) in HOOKS {
        let path = layout.prog(prog);
        // bpffs refuses names with dots.
        let tmp = dir.join(format!("{prog}-new"));
        attach::remove_pin(&tmp);
        attach::program(ebpf, prog)?
            .pin(&tmp)
            .with_context(|| format!("pin program {prog} at {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    }
    Ok(())
}

/// Holds `ifname` (which must still have index `ifindex`) pending: both
/// classifiers attached with pinned links. Nothing is done when the links
/// are there already (a repeated ADD, or an agent that attached first).
pub fn hold(
    object: &[u8],
    bpffs_root: &Path,
    node: &str,
    ifname: &str,
    ifindex: u32,
) -> Result<()> {
    same_interface(ifname, ifindex)?;
    load::ensure_bpffs(bpffs_root)?;
    let layout = live_layout(bpffs_root, node)?;
    if held(&layout, ifindex) {
        return Ok(());
    }
    std::fs::create_dir_all(layout.links_dir())
        .with_context(|| format!("create {}", layout.links_dir().display()))?;
    if HOOKS.iter().all(|(prog, _)| layout.prog(prog).exists()) {
        for (prog, hook) in HOOKS {
            if attach::is_attached(&layout, ifindex, prog) {
                continue;
            }
            let path = layout.prog(prog);
            let mut p = SchedClassifier::from_pin(&path)
                .with_context(|| format!("open pinned program {}", path.display()))?;
            match attach::attach_first(&mut p, ifname, hook) {
                Ok(id) => pin_link(p.take_link(id)?, &layout, ifindex, prog)?,
                // The agent found the interface (by its host route) and
                // attached the same program a moment earlier: its link is
                // the hold, once it is pinned.
                Err(e) if already_attached(&e) && agent_pins(&layout, ifindex, prog) => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("attach {prog} to {ifname} ({hook:?})"))
                }
            }
        }
        return Ok(());
    }
    // No agent has run on this node: load the object, as the agent would.
    let mut loaded = load::load(object, bpffs_root, node)?;
    pin_programs(&mut loaded.ebpf, &layout)?;
    attach::attach(&mut loaded.ebpf, &layout, ifindex)
}

/// Whether a TCX attach failed because the program is already attached to
/// that hook (`EEXIST`).
fn already_attached(e: &aya::programs::ProgramError) -> bool {
    matches!(
        e,
        aya::programs::ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EEXIST)
    )
}

/// Waits (up to a second) for the agent to pin the link it just attached.
fn agent_pins(layout: &PinLayout, ifindex: u32, prog: &str) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while std::time::Instant::now() < end {
        if attach::is_attached(layout, ifindex, prog) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

/// The layout whose programs hold new interfaces: the newest version with
/// pinned programs (`versions::live`), else this binary's.
pub fn live_layout(bpffs_root: &Path, node: &str) -> Result<PinLayout> {
    match versions::live(bpffs_root, node)? {
        Some(l) => Ok(l),
        None => PinLayout::new(bpffs_root, node),
    }
}

/// Whether both classifiers of `ifindex` are attached with pinned links.
pub fn held(layout: &PinLayout, ifindex: u32) -> bool {
    HOOKS
        .iter()
        .all(|(prog, _)| attach::is_attached(layout, ifindex, prog))
}

/// Undoes [`hold`]: removes the link pins of `ifindex`, which detaches the
/// classifiers (nothing else holds the links). Nothing to do is fine: DEL
/// repeats, and runs after the interface is gone.
pub fn release(bpffs_root: &Path, node: &str, ifindex: u32) -> Result<()> {
    let ours = PinLayout::new(bpffs_root, node)?;
    // In every layout version: a hold may predate an upgrade.
    for v in versions::present(&ours.node_dir)? {
        attach::detach(&ours.sibling(v), ifindex);
    }
    Ok(())
}

/// The interface index of `ifname` must still be `ifindex`: an index is
/// reused once its interface is deleted.
fn same_interface(ifname: &str, ifindex: u32) -> Result<()> {
    match sys::ifindex(ifname) {
        Some(i) if i == ifindex => Ok(()),
        Some(i) => bail!("interface {ifname} has index {i}, not {ifindex}: it was replaced"),
        None => bail!("interface {ifname} does not exist"),
    }
}

fn pin_link(
    link: aya::programs::tc::SchedClassifierLink,
    layout: &PinLayout,
    ifindex: u32,
    prog: &str,
) -> Result<()> {
    let path = layout.link(ifindex, prog);
    attach::remove_pin(&path);
    let Ok(fd_link) = FdLink::try_from(link) else {
        bail!("attaching {prog} did not create a TCX link (kernel older than 6.6?)");
    };
    fd_link
        .pin(&path)
        .with_context(|| format!("pin link {}", path.display()))?;
    Ok(())
}
