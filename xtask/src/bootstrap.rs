//! Installs what building and testing need, from the package registries only:
//! Debian packages (LLVM 22 for bpf-linker, bpftool, iproute2, netfilter
//! tools), rust-src for the nightly toolchain, and bpf-linker (`cargo install`).
//! Every step checks first, so a second run takes about a second.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// bpf-linker must link against the LLVM major version of nightly rustc.
const LLVM: &str = "22";
const BPF_LINKER_VERSION: &str = "0.13";

/// Debian packages and a file each one installs (checked instead of dpkg).
const APT: &[(&str, &str)] = &[
    ("llvm-22-dev", "/usr/lib/llvm-22/bin/llvm-config"),
    ("libpolly-22-dev", "/usr/lib/llvm-22/lib/libPolly.a"),
    ("zlib1g-dev", "/usr/include/zlib.h"),
    ("libzstd-dev", "/usr/include/zstd.h"),
    ("bpftool", "/usr/sbin/bpftool"),
    ("iproute2", "/usr/sbin/ip"),
    ("nftables", "/usr/sbin/nft"),
    ("iptables", "/usr/sbin/iptables"),
    ("ipset", "/usr/sbin/ipset"),
    ("containernetworking-plugins", "/usr/lib/cni/bridge"),
];

pub fn run() -> Result<()> {
    apt_packages()?;
    rust_src()?;
    bpf_linker()?;
    Ok(())
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "bootstrap: installing Debian packages: {}",
        missing.join(" ")
    );
    run_quiet(
        Command::new("apt-get").arg("update").arg("-qq"),
        "apt-get update",
    )?;
    run_quiet(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
    )
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("running rustup (is rustup installed?)")?;
    if !out.status.success() {
        bail!("the nightly toolchain is missing: `rustup toolchain install nightly`");
    }
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    eprintln!("bootstrap: adding rust-src to the nightly toolchain");
    run_quiet(
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        "rustup component add rust-src",
    )
}

fn bpf_linker() -> Result<()> {
    if let Ok(out) = Command::new(bpf_linker_path()).arg("--version").output() {
        let version = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && version.contains(&format!("bpf-linker {BPF_LINKER_VERSION}")) {
            return Ok(());
        }
    }
    eprintln!(
        "bootstrap: building bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM} (about a minute)"
    );
    let path = format!(
        "/usr/lib/llvm-{LLVM}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    run_quiet(
        Command::new("cargo")
            // --locked: the dependency versions bpf-linker was released
            // with, not whatever is newest today.
            .args(["+stable", "install", "--locked", "bpf-linker", "--version"])
            .arg(format!("~{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{LLVM}"))
            .env("PATH", path)
            .env_remove("RUSTUP_TOOLCHAIN"),
        "cargo install bpf-linker",
    )
}

/// Where `cargo install` puts bpf-linker; the eBPF build finds it there too.
pub fn bpf_linker_path() -> PathBuf {
    cargo_bin_dir().join("bpf-linker")
}

pub fn cargo_bin_dir() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        });
    home.join("bin")
}

/// Runs a command with its output captured; shows the output only on failure.
fn run_quiet(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: could not start"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
