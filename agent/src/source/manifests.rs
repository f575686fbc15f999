//! The manifest source: files and directories of YAML or JSON objects,
//! re-read whenever their fingerprint changes.

use super::Source;
use palisade_policy::Model;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct ManifestSource {
    paths: Vec<PathBuf>,
    /// Fingerprint of the files as of the last snapshot.
    fingerprint: Option<u64>,
    /// When a change not yet read was first noticed.
    noticed: Option<Instant>,
    /// When the change in the last snapshot was first noticed.
    learned: Option<Instant>,
}

impl ManifestSource {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        ManifestSource {
            paths,
            fingerprint: None,
            noticed: None,
            learned: None,
        }
    }
}

impl Source for ManifestSource {
    fn changed(&mut self) -> bool {
        let changed = self.fingerprint != Some(fingerprint(&self.paths));
        if changed {
            self.noticed.get_or_insert_with(Instant::now);
        }
        changed
    }

    fn snapshot(&mut self) -> Option<Model> {
        // Fingerprint first: an edit made while we read is seen next poll.
        self.fingerprint = Some(fingerprint(&self.paths));
        self.learned = self.noticed.take();
        Some(palisade_policy::load_paths(&self.paths))
    }

    fn learned(&self) -> Option<Instant> {
        self.learned
    }

    fn synced(&self) -> bool {
        true
    }
}

/// A cheap fingerprint of the manifest paths: every file's path, size,
/// mtime and inode. Any edit, rename, addition or removal changes it.
pub fn fingerprint(paths: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for p in paths {
        walk(p, &mut h);
    }
    h.finish()
}

fn walk(path: &Path, h: &mut DefaultHasher) {
    path.hash(h);
    let Ok(meta) = std::fs::metadata(path) else {
        "missing".hash(h);
        return;
    };
    (
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino(),
        meta.is_dir(),
    )
        .hash(h);
    if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for e in entries {
            walk(&e, h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_changes_with_content() {
        let dir = std::env::temp_dir().join(format!("palisade-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.yaml");
        std::fs::write(&f, "a: 1\n").unwrap();
        let one = fingerprint(std::slice::from_ref(&dir));
        assert_eq!(one, fingerprint(std::slice::from_ref(&dir)));
        std::fs::write(&f, "a: 12\n").unwrap();
        let two = fingerprint(std::slice::from_ref(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_ne!(one, two);
    }

    #[test]
    fn a_source_reports_changes_once() {
        let dir = std::env::temp_dir().join(format!("palisade-ms-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("ns.yaml"),
            "kind: Namespace\napiVersion: v1\nmetadata: {name: a}\n",
        )
        .unwrap();
        let mut src = ManifestSource::new(vec![dir.clone()]);
        assert!(src.changed());
        let m = src.snapshot().unwrap();
        assert!(m.namespaces.contains_key("a"));
        assert!(!src.changed());
        std::fs::write(
            dir.join("ns2.yaml"),
            "kind: Namespace\napiVersion: v1\nmetadata: {name: b}\n",
        )
        .unwrap();
        assert!(src.changed());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
