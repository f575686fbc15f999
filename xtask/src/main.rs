//! `cargo xtask`: bootstrap the toolchain, build the classifiers, run the
//! demo, a lab that stays up, the tests and the benchmarks.

mod bootstrap;
mod build;
mod cni_scratch;
mod demo;
mod demo_cluster;
mod demo_tiers;
mod lab_cmd;
mod objects;
mod one_node;
mod options;
mod placement;
mod run;
mod running;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Palisade build and test tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need (idempotent).
    Bootstrap,
    /// Build the eBPF classifiers (with BTF) for bpfel-unknown-none.
    BuildEbpf,
    /// Build everything: the classifiers, then the agent that embeds them.
    Build,
    /// Bring up the lab, enforce the example policies, print the matrices.
    Demo(demo::DemoArgs),
    /// A lab that stays up with its agents (`lab up`, `lab down`).
    Lab(lab_cmd::LabArgs),
    /// Run the whole test suite (needs root).
    Test(run::TestArgs),
    /// Run the benchmarks.
    Bench(run::BenchArgs),
    /// Write the ClusterNetworkPolicy CRD, generated from its Rust types,
    /// to deploy/crd/ (a test checks the committed file is current).
    Crd,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bootstrap => bootstrap::run(),
        Command::BuildEbpf => {
            bootstrap::run()?;
            build::ebpf()
        }
        Command::Build => {
            bootstrap::run()?;
            build::all().map(|_| ())
        }
        Command::Demo(args) => demo::run(args, &agent_bin()?),
        Command::Lab(args) => {
            let agent = match lab_cmd::needs_agent(&args) {
                true => Some(agent_bin()?),
                false => None,
            };
            lab_cmd::run(args, agent.as_deref())
        }
        Command::Test(args) => {
            bootstrap::run()?;
            build::all()?;
            run::test(args)
        }
        Command::Crd => {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let path = root.join(palisade_policy::crd::DEFINITION_PATH);
            std::fs::create_dir_all(path.parent().expect("a directory"))?;
            std::fs::write(&path, palisade_policy::crd::definition_yaml())?;
            println!("wrote {}", palisade_policy::crd::DEFINITION_PATH);
            Ok(())
        }
        Command::Bench(args) => {
            bootstrap::run()?;
            build::all()?;
            run::bench(args)
        }
    }
}

/// The agent binary: a given one is used as is (as the tests do); else
/// everything is built.
fn agent_bin() -> anyhow::Result<std::path::PathBuf> {
    match std::env::var_os(palisade_lab::BIN_ENV) {
        Some(_) => palisade_lab::palisade_bin(),
        None => {
            bootstrap::run()?;
            build::all()
        }
    }
}
