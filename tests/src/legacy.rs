//! The agent of the last release with unversioned pins (layout version 1,
//! `palisade_common::layout::LEGACY`), for upgrade tests: built once from
//! that commit's sources, classifiers included (`git archive`, so no
//! worktree is added) and cached at `target/legacy-v1/palisade`. `$PALISADE_LEGACY_BIN` names a
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
    // The legacy agent embeds the classifiers of its own commit: today's
    // have another layout (version 4 grew the endpoint record), which
    // the legacy agent rightly refuses to pin.
    let object = build_ebpf(&src.join("ebpf"), &target)?;
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

/// Builds the legacy classifiers (nightly, `bpfel-unknown-none`, BTF, as
/// `cargo xtask build-ebpf` does) into `target`; returns the object.
fn build_ebpf(ebpf: &Path, target: &Path) -> Result<PathBuf> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default()
        .join("bin");
    let path = format!(
        "{}:{}",
        cargo_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let target = target.join("ebpf");
    run(
        Command::new("cargo")
            .args([
                "+nightly",
                "build",
                "--release",
                "--target",
                "bpfel-unknown-none",
            ])
            .args(["-Z", "build-std=core"])
            .current_dir(ebpf)
            .env("CARGO_TARGET_DIR", &target)
            .env("RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf")
            .env("PATH", path)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTC")
            .env_remove("RUSTC_WRAPPER"),
        "build the legacy classifiers",
    )?;
    Ok(target.join("bpfel-unknown-none/release/palisade-ebpf"))
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
