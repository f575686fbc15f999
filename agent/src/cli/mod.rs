//! Command-line interface: one module per subcommand family.

mod agent;
mod compile;
mod inspect;
mod monitor;
mod offline;
mod tiers;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "palisade",
    version,
    about = "Kubernetes NetworkPolicy enforcement with eBPF"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the node agent: compile policies and program the kernel.
    Agent(agent::AgentArgs),
    /// Offline verdict for one flow, with the policies and rules that decide it.
    Check(offline::CheckArgs),
    /// Offline reachability matrix of every ordered pair of pods.
    Matrix(offline::MatrixArgs),
    /// Show the compiled per-pod map contents for a node.
    Compile(compile::CompileArgs),
    /// Show a pod's policy as pinned in the kernel, and its drift from the
    /// manifests (exit 1 when they differ).
    Inspect(inspect::InspectArgs),
    /// Answer a flow from the pinned maps, beside the offline oracle (exit 1
    /// when they disagree).
    Explain(inspect::ExplainArgs),
    /// Stream the agent's verdicts (denied, would-deny, allowed flows) with
    /// pod and policy names.
    Monitor(monitor::MonitorArgs),
}

/// Logs go to stderr (stdout is for results); `RUST_LOG` filters them.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Agent(a) => agent::run(a),
        Command::Check(a) => offline::check(a),
        Command::Matrix(a) => offline::matrix(a),
        Command::Compile(a) => compile::run(a),
        Command::Inspect(a) => inspect::inspect(a),
        Command::Explain(a) => inspect::explain(a),
        Command::Monitor(a) => monitor::run(a),
    }
}

/// `--manifests PATH` shared by the offline commands.
#[derive(clap::Args, Debug, Clone)]
pub struct ManifestArgs {
    /// Manifest file or directory (read recursively: *.yaml, *.yml, *.json;
    /// multi-document, `kind: List`). Repeat to load several.
    #[arg(long = "manifests", value_name = "PATH", required = true)]
    pub manifests: Vec<PathBuf>,
    /// Exit non-zero when any object was skipped as invalid, or read with
    /// a warning (a NetworkPolicy not understood, an unknown enforcement
    /// value).
    #[arg(long)]
    pub strict: bool,
}
