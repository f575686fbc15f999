//! `cargo xtask test` and `cargo xtask bench`.

use crate::build::{ebpf_object, status, workspace_root};
use anyhow::{bail, Result};
use std::process::Command;

#[derive(clap::Args)]
pub struct TestArgs {
    /// Extra arguments for `cargo test` (after `--`: a test name filter).
    #[arg(trailing_var_arg = true)]
    pub rest: Vec<String>,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// A reduced set that finishes in a few minutes.
    #[arg(long)]
    pub quick: bool,
}

pub fn test(args: TestArgs) -> Result<()> {
    require_root("the tests load eBPF programs and create network namespaces")?;
    let mut cmd = cargo_with_env();
    cmd.args(["test", "--workspace", "--no-fail-fast"])
        .args(&args.rest);
    status(&mut cmd, "cargo test")
}

pub fn bench(args: BenchArgs) -> Result<()> {
    let mut cmd = cargo_with_env();
    cmd.args(["bench", "--package", "palisade-compiler"]);
    if args.quick {
        cmd.args(["--", "--quick"]);
    }
    status(&mut cmd, "cargo bench")
}

/// cargo in the workspace, with the paths the tests look for.
fn cargo_with_env() -> Command {
    let root = workspace_root();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&root)
        .env("PALISADE_EBPF_OBJECT", ebpf_object())
        .env("PALISADE_BIN", root.join("target/debug/palisade"));
    cmd
}

fn require_root(why: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run as root: {why}");
    }
    Ok(())
}
