//! A per-test directory with a private bpf filesystem.

use super::{run, unique};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch directory under the temp dir with a private bpffs at `bpf/`,
/// a `manifests/` directory for `palisade agent --manifests`, and room for
/// the agent's ready file and logs; unmounted and removed on drop.
///
/// The private bpffs keeps the pins of concurrent tests (and of an agent
/// running on the host) apart, and unmounting it drops every pin at once:
/// the maps and TCX links nothing else holds go with them.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// Creates the directory (named after `tag`) and mounts its bpffs.
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(dir.join("bpf")).unwrap();
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        let s = Scratch { dir };
        run("mount", &["-t", "bpf", "bpf", s.bpffs().to_str().unwrap()]);
        s
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The private bpffs (`--bpffs-root`).
    pub fn bpffs(&self) -> PathBuf {
        self.dir.join("bpf")
    }

    /// Manifest files for the agent (`--manifests`).
    pub fn manifests(&self) -> PathBuf {
        self.dir.join("manifests")
    }

    /// The agent's `--ready-file`.
    pub fn ready(&self) -> PathBuf {
        self.dir.join("ready")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Lazily: a pinned map still open elsewhere must not keep the
        // directory from going.
        let _ = Command::new("umount").arg("-l").arg(self.bpffs()).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
