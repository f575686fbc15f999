//! Builds the classifiers (nightly, bpfel-unknown-none, BTF) and the agent
//! that embeds them.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// The classifiers' object, where the agent's build script looks for it.
pub fn ebpf_object() -> PathBuf {
    workspace_root().join("ebpf/target/bpfel-unknown-none/release/palisade-ebpf")
}

pub fn ebpf() -> Result<()> {
    eprintln!("build: eBPF classifiers");
    let path = format!(
        "{}:{}",
        crate::bootstrap::cargo_bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root().join("ebpf"))
        .args([
            "+nightly",
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        // BTF makes `bpftool map dump` print field names, and lets the
        // kernel check map-of-maps inner templates.
        .env("RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf")
        .env("PATH", path)
        // Settings of the outer (stable, host) build must not leak in.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_TARGET_DIR");
    status(&mut cmd, "eBPF build")?;
    if !ebpf_object().exists() {
        bail!(
            "eBPF build finished but {} is missing",
            ebpf_object().display()
        );
    }
    Ok(())
}

/// Builds the classifiers, then the `palisade` and `palisade-cni` binaries;
/// returns the path of `palisade`.
pub fn all() -> Result<PathBuf> {
    ebpf()?;
    eprintln!("build: palisade agent");
    let mut cmd = Command::new("cargo");
    // The CNI plugin embeds the same classifiers; the tests run both.
    cmd.current_dir(workspace_root()).args([
        "build",
        "--package",
        "palisade-agent",
        "--bin",
        "palisade",
        "--package",
        "palisade-cni",
        "--bin",
        "palisade-cni",
    ]);
    status(&mut cmd, "agent build")?;
    Ok(workspace_root().join("target/debug/palisade"))
}

pub fn status(cmd: &mut Command, what: &str) -> Result<()> {
    let st = cmd
        .status()
        .with_context(|| format!("{what}: could not start"))?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}
