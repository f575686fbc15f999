//! Which layout versions have pins on a node (`palisade_common::layout`).
//!
//! Version `N >= 2` lives in `<node_dir>/v<N>/`; the directory name is the
//! version marker. Unversioned pins directly in `<node_dir>` (an
//! `ENDPOINTS` map, a `links/` or `progs/` directory) are
//! [`layout::LEGACY`]. An agent migrates older versions to its own
//! (`migrate.rs`) and refuses newer ones without touching them.

use super::load::PinLayout;
use anyhow::{Context, Result};
use palisade_common::{layout, names};
use std::collections::BTreeSet;
use std::path::Path;

/// Names whose presence in `<node_dir>` means unversioned pins.
const LEGACY_MARKS: [&str; 3] = [names::ENDPOINTS, "links", "progs"];

/// The version a `v<N>` directory name stands for.
pub fn parse_dir(name: &str) -> Option<u32> {
    let digits = name.strip_prefix('v')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|v| *v > layout::LEGACY)
}

/// The layout versions with pins in `node_dir` (empty when it is missing).
pub fn present(node_dir: &Path) -> Result<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    let entries = match std::fs::read_dir(node_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("read {}", node_dir.display())),
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(v) = parse_dir(&name) {
            out.insert(v);
        } else if LEGACY_MARKS.contains(&name.as_str()) {
            out.insert(layout::LEGACY);
        }
    }
    Ok(out)
}

/// Pins of a layout newer than this binary's: a newer release enforces the
/// node, and this one must not touch its pins.
#[derive(Debug)]
pub struct NewerLayout {
    pub found: u32,
    pub node_dir: std::path::PathBuf,
}

impl std::fmt::Display for NewerLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the pins in {dir} have layout version {found}, newer than this palisade's \
             layout version {ours}: a newer release enforces this node, and this one leaves \
             its pins untouched. Run a palisade release of layout version {found} or later \
             (roll the DaemonSet forward); to go back to this release anyway, delete {dir}, \
             which drops enforcement on the node until this agent has programmed it",
            dir = self.node_dir.display(),
            found = self.found,
            ours = layout::VERSION,
        )
    }
}

impl std::error::Error for NewerLayout {}

/// Fails with [`NewerLayout`] when `node_dir` holds pins of a version
/// newer than [`layout::VERSION`]. Reads only.
pub fn refuse_newer(node_dir: &Path) -> Result<()> {
    if let Some(found) = present(node_dir)?.last().copied() {
        if found > layout::VERSION {
            return Err(NewerLayout {
                found,
                node_dir: node_dir.to_path_buf(),
            }
            .into());
        }
    }
    Ok(())
}

/// The layouts older than `ours` present in its node directory, oldest
/// first.
pub fn older(ours: &PinLayout) -> Result<Vec<PinLayout>> {
    Ok(present(&ours.node_dir)?
        .into_iter()
        .filter(|v| *v < ours.version)
        .map(|v| ours.sibling(v))
        .collect())
}

/// The live layout for holding new interfaces: the newest version whose
/// pod programs are pinned (the agent pins them once its maps exist), of
/// whatever release. The directory names inside a version (`progs/`,
/// `links/`) are the same in every version, so a plugin of one release
/// can hold interfaces with another's programs.
pub fn live(bpffs_root: &Path, node: &str) -> Result<Option<PinLayout>> {
    let node_dir = bpffs_root.join(node);
    for v in present(&node_dir)?.into_iter().rev() {
        let l = PinLayout::at(bpffs_root, node, v)?;
        if super::attach::HOOKS
            .iter()
            .all(|(prog, _)| l.prog(prog).exists())
        {
            return Ok(Some(l));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_directory_names() {
        assert_eq!(parse_dir("v2"), Some(2));
        assert_eq!(parse_dir("v17"), Some(17));
        assert_eq!(parse_dir("v1"), None, "version 1 has no directory");
        assert_eq!(parse_dir("v"), None);
        assert_eq!(parse_dir("v+3"), None);
        assert_eq!(parse_dir("links"), None);
    }

    /// The eBPF object's maps must be the ones `layout::RECORDED` names for
    /// this version: a changed map type or size needs a new version.
    #[test]
    fn the_object_has_the_recorded_layout() {
        let object = crate::ebpf_object().expect("tests need the eBPF object");
        let parsed = aya_obj::Object::parse(object).expect("parse the eBPF object");
        let private = ["SCRATCH", "EVENT_BUDGET"];
        let mut have: Vec<(String, u32, u32, u32)> = Vec::new();
        for (name, m) in &parsed.maps {
            if private.contains(&name.as_str()) || name.starts_with('.') {
                continue;
            }
            have.push((name.clone(), m.map_type(), m.key_size(), m.value_size()));
            if let Some(inner) = m.inner() {
                let shape = (inner.map_type(), inner.key_size(), inner.value_size());
                have.push((format!("{name}/inner"), shape.0, shape.1, shape.2));
            }
        }
        have.sort();
        let want: Vec<(String, u32, u32, u32)> = layout::RECORDED
            .iter()
            .map(|(n, t, k, v)| (n.to_string(), *t, *k, *v))
            .collect();
        assert_eq!(
            have, want,
            "the eBPF object's maps differ from palisade_common::layout::RECORDED: \
             bump layout::VERSION and record the new table"
        );
    }

    #[test]
    fn versions_present_and_refusal() {
        let dir = std::env::temp_dir().join(format!("palisade-versions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(present(&dir).unwrap().is_empty());
        std::fs::create_dir_all(dir.join("links")).unwrap();
        std::fs::create_dir_all(dir.join(format!("v{}", layout::VERSION))).unwrap();
        let want: BTreeSet<u32> = [layout::LEGACY, layout::VERSION].into();
        assert_eq!(present(&dir).unwrap(), want);
        refuse_newer(&dir).expect("nothing newer");

        let newer = layout::VERSION + 1;
        std::fs::create_dir_all(dir.join(format!("v{newer}"))).unwrap();
        let err = refuse_newer(&dir).unwrap_err();
        let e = err
            .downcast_ref::<NewerLayout>()
            .expect("a NewerLayout error");
        assert_eq!(e.found, newer);
        let msg = err.to_string();
        assert!(msg.contains(&format!("layout version {newer}")), "{msg}");
        assert!(
            msg.contains(&format!("layout version {}", layout::VERSION)),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
