//! Upgrading a node from the pins of an older layout version.
//!
//! The new agent loads its maps beside the old ones (`v<N>/`), which keep
//! enforcing through the old links meanwhile. Its rounds program every pod
//! into the new maps without touching the interfaces the old links hold;
//! after the first clean round each old link is moved to the new program
//! with one `BPF_LINK_UPDATE` (a packet is decided by the old program and
//! maps or by the new ones, never by neither nor a mix), pinned under the
//! new layout and unpinned from the old one. Only then are the old pins
//! removed. `CONNTRACK` is carried over when its format did not change
//! (`layout::CONNTRACK_SINCE`); otherwise established flows are decided
//! again by policy. See `docs/maps.md`, "Layout versions".

use super::attach::{self, remove_pin, replace_program};
use super::load::{same_layout, MapShape, PinLayout};
use super::{sys, versions, Datapath, ProgramReport};
use anyhow::{bail, Context, Result};
use aya::maps::MapData;
use aya::programs::links::{FdLink, PinnedLink};
use aya::Ebpf;
use palisade_common::{layout, names};
use std::path::Path;

/// Shares the older layout's `CONNTRACK` with this one when its format is
/// ours: the new classifiers then know every established flow.
pub(crate) fn carry_conntrack(from: &PinLayout, to: &PinLayout, want: MapShape) -> Result<()> {
    let (old, new) = (from.map(names::CONNTRACK), to.map(names::CONNTRACK));
    if new.exists() || !old.exists() {
        return Ok(());
    }
    if from.version < layout::CONNTRACK_SINCE || !same_layout(&old, want) {
        tracing::warn!(
            from = from.version,
            to = to.version,
            lost = count_entries(&old).unwrap_or(0),
            "conntrack format changed: its entries are not carried over, established flows are decided again by policy"
        );
        return Ok(());
    }
    let data =
        MapData::from_pin(&old).with_context(|| format!("open pinned map {}", old.display()))?;
    data.pin(&new)
        .with_context(|| format!("pin {} at {}", old.display(), new.display()))?;
    tracing::info!(
        from = from.version,
        to = to.version,
        entries = count_entries(&new).unwrap_or(0),
        "conntrack carried over"
    );
    Ok(())
}

/// Entries of a pinned conntrack map of any format.
fn count_entries(path: &Path) -> Result<usize> {
    let info = aya::maps::MapInfo::from_pin(path)?;
    sys::count_keys(path, info.key_size() as usize, info.max_entries() as usize)
}

/// Whether an older layout's link holds `ifindex`.
pub(crate) fn held_by(older: &[PinLayout], ifindex: u32) -> bool {
    older.iter().any(|l| {
        attach::HOOKS
            .iter()
            .any(|(prog, _)| attach::is_attached(l, ifindex, prog))
    })
}

impl Datapath {
    /// Moves the links of the `older` layouts to this one and removes
    /// their pins. Call after a clean round only: every pod is programmed
    /// in the new maps. Returns whether the older layouts are gone.
    pub(crate) fn migrate(&mut self, older: &[PinLayout], report: &mut ProgramReport) -> bool {
        for old in older {
            if let Err(e) = self.migrate_one(old, report) {
                let msg = format!("{e:#}");
                tracing::error!(from = old.version, error = %msg, "migration of older pins failed; they keep enforcing, retried next round");
                report.node_errors.push(("migrate", msg));
                return false;
            }
        }
        true
    }

    fn migrate_one(&mut self, old: &PinLayout, report: &mut ProgramReport) -> Result<()> {
        let mut moved = 0;
        // A plugin that chose the old programs just before ours were pinned
        // may pin one more link there: moved too before the directory goes.
        for _ in 0..3 {
            moved += self.move_pod_links(old)?;
            match std::fs::remove_dir(old.links_dir()) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => continue,
                Err(e) => return Err(e).context("remove the old links directory"),
            }
        }
        moved += self.move_uplinks(old)?;
        crate::crash::point(crate::crash::MIGRATE_LINKS_MOVED);
        remove_layout(old)?;
        report.migrated += moved;
        tracing::info!(
            from = old.version,
            to = self.layout.version,
            links = moved,
            "migrated the pins of an older layout; its maps are removed"
        );
        Ok(())
    }

    fn move_pod_links(&mut self, old: &PinLayout) -> Result<usize> {
        let dir = old.links_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
        };
        let mut moved = 0;
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let Some((ifindex, prog)) = attach::parse_pin_name(&name) else {
                remove_pin(&dir.join(&name));
                continue;
            };
            let to = self.layout.link(ifindex, prog);
            if move_link(&mut self.ebpf, prog, ifindex, &dir.join(&name), &to)? {
                moved += 1;
                crate::crash::point(crate::crash::MIGRATE_MOVED);
            }
            if super::hold::held(&self.layout, ifindex) {
                self.attached.insert(ifindex);
            }
        }
        Ok(moved)
    }

    fn move_uplinks(&mut self, old: &PinLayout) -> Result<usize> {
        let dir = old.uplinks_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(0);
        };
        let suffix = format!("-{}", names::PROG_NODE_EGRESS);
        let mut moved = 0;
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let Some(ifindex) = name.strip_suffix(&suffix).and_then(|i| i.parse().ok()) else {
                remove_pin(&dir.join(&name));
                continue;
            };
            let to = self.layout.uplink(ifindex);
            let prog = names::PROG_NODE_EGRESS;
            if move_link(&mut self.ebpf, prog, ifindex, &dir.join(&name), &to)? {
                self.uplinks.insert(ifindex);
                moved += 1;
            }
        }
        Ok(moved)
    }
}

/// Points the live link pinned at `from` to our `prog` in one update, pins
/// it at `to` and unpins `from`. A link of a vanished interface is just
/// unpinned. Returns whether a live link was moved.
fn move_link(ebpf: &mut Ebpf, prog: &str, ifindex: u32, from: &Path, to: &Path) -> Result<bool> {
    match sys::tcx_link_info(from) {
        Ok(info) if info.ifindex == ifindex => {}
        Ok(_) => {
            remove_pin(from);
            return Ok(false);
        }
        // Unpinning a link we cannot read could leave the interface bare.
        Err(e) => return Err(e).with_context(|| format!("read link pin {}", from.display())),
    }
    if matches!(sys::tcx_link_info(to), Ok(info) if info.ifindex == ifindex) {
        // Moved before a restart, or held anew under our layout: ours
        // decides already.
        replace_program(ebpf, prog, to)?;
        remove_pin(from);
        return Ok(true);
    }
    replace_program(ebpf, prog, from)?;
    remove_pin(to);
    let link = PinnedLink::from_pin(from)
        .with_context(|| format!("open pinned link {}", from.display()))?;
    FdLink::from(link)
        .pin(to)
        .with_context(|| format!("pin link {}", to.display()))?;
    remove_pin(from);
    Ok(true)
}

/// Removes an older layout's pins once no link uses its programs.
fn remove_layout(old: &PinLayout) -> Result<()> {
    if old.version != layout::LEGACY {
        return std::fs::remove_dir_all(&old.dir)
            .with_context(|| format!("remove {}", old.dir.display()));
    }
    // Unversioned pins share the node directory with the versions.
    for entry in std::fs::read_dir(&old.dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // `links/` went with its last link (`migrate_one`); one still
        // there holds a link that came late, moved by the next round.
        if versions::parse_dir(&name).is_some() || name == "links" {
            continue;
        }
        let path = entry.path();
        let r = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        r.with_context(|| format!("remove {}", path.display()))?;
    }
    if versions::present(&old.node_dir)?.contains(&old.version) {
        bail!(
            "pins of layout {} remain in {}",
            old.version,
            old.dir.display()
        );
    }
    Ok(())
}
