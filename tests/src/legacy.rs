//! The agent of the last release with unversioned pins (layout version 1,
//! `palisade_common::layout::LEGACY`), for upgrade tests: built once from
//! that commit's sources (`git archive`, so no worktree is added) and
//! cached at `target/legacy-v1/palisade`. `$PALISADE_LEGACY_BIN` names a
//! binary to use instead. The first build takes minutes.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The last commit whose agent pins without a layout version.
pub const LEGACY_COMMIT: &str = "e402293f56e436c58bb9e913b6974b49f13c7f23";

pub const LEGACY_BIN_ENV: &str = "PALISADE_LEGACY_BIN";

static BUILD: Mutex<()> = Mutex::new(());

/// The legacy agent binary, built if it is not cached yet.
pub fn legacy_agent() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(LEGACY_BIN_ENV) {
        return Ok(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf();
    let dir = root.join("target/legacy-v1");
    let bin = dir.join("palisade");
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if bin.is_file() {
        return Ok(bin);
    }
    build(&root, &dir, &bin)?;
    Ok(bin)
}

fn build(root: &Path, dir: &Path, bin: &Path) -> Result<()> {
    let src = dir.join("src");
    let target = dir.join("target");
    std::fs::create_dir_all(&src).with_context(|| format!("create {}", src.display()))?;
    let unpack = format!(
        "git -C '{}' archive {LEGACY_COMMIT} | tar -x -C '{}'",
        root.display(),
        src.display()
    );
    run(
        Command::new("sh").args(["-c", &unpack]),
        "unpack the legacy sources",
    )?;
    let object = std::env::var_os("PALISADE_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("ebpf/target/bpfel-unknown-none/release/palisade-ebpf"));
    run(
        Command::new("cargo")
            .args(["build", "-p", "palisade-agent", "--bin", "palisade"])
            .current_dir(&src)
            .env("CARGO_TARGET_DIR", &target)
            // Its debug info is never read and would only cost disk.
            .env("CARGO_PROFILE_DEV_DEBUG", "false")
            .env("PALISADE_EBPF_OBJECT", object),
        "build the legacy agent",
    )?;
    std::fs::copy(target.join("debug/palisade"), bin)
        .with_context(|| format!("cache the legacy agent at {}", bin.display()))?;
    // Only the binary is kept.
    let _ = std::fs::remove_dir_all(&target);
    let _ = std::fs::remove_dir_all(&src);
    Ok(())
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{what}: {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
