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
    // The compiler's criterion benchmarks (only the criterion target:
    // the libtest harness of the unit tests rejects `--quick`).
    let mut cmd = cargo_with_env();
    cmd.args([
        "bench",
        "--package",
        "palisade-compiler",
        "--bench",
        "compile",
    ]);
    if args.quick {
        cmd.args(["--", "--quick"]);
    }
    status(&mut cmd, "cargo bench")?;

    // The datapath benchmark in the lab: an optimized load tool (a debug
    // client would measure itself), against the agent `build::all` made.
    // Besides the datapath figures it measures the classifier per packet,
    // the programs' run statistics and memory, and draws the plot.
    require_root("the datapath benchmark creates network namespaces and loads eBPF programs")?;
    let mut build = cargo_with_env();
    build.args(["build", "--release", "--package", "palisade-bench"]);
    status(&mut build, "palisade-bench build")?;
    let root = workspace_root();
    let mut run = Command::new(root.join("target/release/palisade-bench"));
    run.current_dir(&root)
        .arg("--palisade-bin")
        .arg(root.join("target/debug/palisade"))
        .arg("--ebpf-object")
        .arg(ebpf_object())
        .arg("--out")
        .arg(root.join("target/bench/report.json"));
    if args.quick {
        run.arg("--quick");
    }
    status(&mut run, "datapath benchmark")?;
    println!(
        "bench: report {} and plot {}",
        root.join("target/bench/report.json").display(),
        root.join("target/bench/report.png").display()
    );
    Ok(())
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
