//! What `palisade-cni` needs before the lab's pods exist: per node, a
//! mounted bpffs (the plugin pins its hold there while the pod is being
//! created) and a state directory for its attachment records.
//!
//! A lab's record directory (which its teardown unmounts and removes,
//! whoever runs it: drop, a signal, or the next run cleaning a dead run's
//! leftovers) only exists once the lab is up. So each node's bpffs is
//! mounted in a scratch directory first and, once the node is up,
//! `adopt` bind-mounts it into the node's record and detaches the
//! original, leaving a symlink at the configured path (the plugin's DEL
//! at teardown still finds the pins there).

use anyhow::{bail, Context, Result};
use palisade_lab::{mount_bpf, ChainedPlugin, Lab};
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// Scratch directories are named `<PREFIX><pid>-<label>`, so a clean-up
/// after a killed process finds them by its pid.
const PREFIX: &str = "palisade-xtask-";

pub struct CniScratch {
    dir: PathBuf,
    /// Mount points still mounted in the scratch directory.
    mounted: Vec<PathBuf>,
}

impl CniScratch {
    /// Creates the scratch directory and mounts a bpffs for every node.
    pub fn new(label: &str, nodes: &[String]) -> Result<CniScratch> {
        let dir = std::env::temp_dir().join(format!("{PREFIX}{}-{label}", std::process::id()));
        if dir.exists() {
            remove_tree(&dir)?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut s = CniScratch {
            dir,
            mounted: Vec::new(),
        };
        for n in nodes {
            let bpffs = s.bpffs(n);
            std::fs::create_dir_all(&bpffs)
                .with_context(|| format!("creating {}", bpffs.display()))?;
            std::fs::create_dir_all(s.state_dir(n))
                .with_context(|| format!("creating {}", s.state_dir(n).display()))?;
            mount_bpf(&bpffs)?;
            s.mounted.push(bpffs);
        }
        Ok(s)
    }

    /// The node's bpffs as the plugin is configured with it.
    pub fn bpffs(&self, node: &str) -> PathBuf {
        self.dir.join(format!("bpffs-{node}"))
    }

    /// The plugin's record directory of the node (the agent's
    /// `--cni-state-dir`).
    pub fn state_dir(&self, node: &str) -> PathBuf {
        self.dir.join(format!("cni-state-{node}"))
    }

    /// `palisade-cni` configured for `node`.
    pub fn plugin(&self, binary: &Path, node: &str) -> ChainedPlugin {
        let path = |p: PathBuf| serde_json::Value::from(p.to_string_lossy().into_owned());
        ChainedPlugin::new(binary)
            .with("stateDir", path(self.state_dir(node)))
            .with("bpffsRoot", path(self.bpffs(node)))
            .with("nodeName", node.into())
    }

    /// Moves the node's bpffs under the lab's record (see the module
    /// comment); returns its path there, for the agent's `--bpffs-root`.
    pub fn adopt(&mut self, node: &str, lab: &Lab) -> Result<PathBuf> {
        let original = self.bpffs(node);
        let adopted = lab.dir().join("bpffs-cni");
        std::fs::create_dir(&adopted).with_context(|| format!("creating {}", adopted.display()))?;
        let (src, dst) = (cstr(&original)?, cstr(&adopted)?);
        // SAFETY: valid C strings; a bind mount takes no type or data.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| {
                format!(
                    "bind-mounting {} on {}",
                    original.display(),
                    adopted.display()
                )
            });
        }
        unmount(&original)?;
        self.mounted.retain(|m| *m != original);
        std::fs::remove_dir(&original)
            .and_then(|()| std::os::unix::fs::symlink(&adopted, &original))
            .with_context(|| format!("replacing {} by a symlink", original.display()))?;
        Ok(adopted)
    }
}

impl Drop for CniScratch {
    fn drop(&mut self) {
        for m in std::mem::take(&mut self.mounted) {
            if let Err(e) = unmount(&m) {
                eprintln!("xtask: {e:#}");
            }
        }
        if let Err(e) = remove_tree(&self.dir) {
            eprintln!("xtask: {e:#}");
        }
    }
}

/// Removes the scratch directories of process `pid` (gone without
/// cleaning up): unmounts what is still mounted there, then deletes them.
pub fn remove_leftovers_of(pid: u32) -> Result<()> {
    let prefix = format!("{PREFIX}{pid}-");
    let tmp = std::env::temp_dir();
    let Ok(rd) = std::fs::read_dir(&tmp) else {
        return Ok(());
    };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            remove_tree(&e.path())?;
        }
    }
    Ok(())
}

/// Unmounts every mount at or below `dir` (lazily), then deletes it.
fn remove_tree(dir: &Path) -> Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in mounts {
        unmount(&m)?;
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Lazily: a pin still open elsewhere must not keep the path mounted.
fn unmount(path: &Path) -> Result<()> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("unmounting {}", path.display()));
    }
    Ok(())
}

fn cstr(p: &Path) -> Result<CString> {
    match CString::new(p.as_os_str().as_encoded_bytes()) {
        Ok(c) => Ok(c),
        Err(_) => bail!("path {} holds a NUL byte", p.display()),
    }
}
