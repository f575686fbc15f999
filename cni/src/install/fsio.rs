//! Atomic file replacement for the CNI directories.
//!
//! Runtimes read the configuration directory whenever they set up a pod
//! and exec plugins from the bin directory at any moment, so a file is
//! never written in place: the new content goes to a temporary file in
//! the same directory (whose name no runtime loads) and is renamed over
//! the old one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;

/// Replaces `path` with `bytes`, with permission bits `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    // A leading '.' and a suffix that is not .conf/.conflist/.json keep
    // runtimes from loading the half-written file.
    let tmp = dir.join(format!(".{name}.palisade-tmp.{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

/// The permission bits of `path`.
pub fn mode_of(path: &Path) -> anyhow::Result<u32> {
    Ok(fs::metadata(path)
        .with_context(|| format!("reading the mode of {}", path.display()))?
        .permissions()
        .mode()
        & 0o7777)
}

/// Removes `path`; fine if it is already gone.
pub fn remove_if_exists(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}
