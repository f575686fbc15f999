//! `cargo xtask lab up|down`: a lab that stays up after the command
//! returns, with its agents running, for trying policies by hand.
//!
//! The lab's pod servers are threads and its agents die with the thread
//! that started them, so someone must keep running: `up` starts a
//! detached supervisor (this binary again, `lab serve`) that builds the
//! lab, writes the state file once the agents are ready, follows changes
//! of the manifests, and tears everything down on SIGTERM. `down` signals
//! it and waits; if it does not finish, kills it and removes what is left.

mod down;
mod serve;
mod state;
mod up;

use crate::options::LabOptions;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum LabCommand {
    /// Bring a lab up with its agents and return, leaving it running.
    Up {
        #[command(flatten)]
        lab: LabOptions,
        /// Where to write the lab's description (JSON); `lab down` takes it.
        #[arg(long)]
        state: PathBuf,
    },
    /// Tear down the lab described by the state file.
    Down {
        #[arg(long)]
        state: PathBuf,
    },
    /// The supervisor `up` starts (not for direct use).
    #[command(hide = true)]
    Serve {
        #[command(flatten)]
        lab: LabOptions,
        #[arg(long)]
        state: PathBuf,
    },
}

/// `up` and `serve` need the agent binary; `down` does not.
pub fn needs_agent(args: &LabArgs) -> bool {
    !matches!(args.command, LabCommand::Down { .. })
}

pub fn run(args: LabArgs, agent_bin: Option<&std::path::Path>) -> anyhow::Result<()> {
    match args.command {
        LabCommand::Up { lab, state } => up::run(&lab, &state, agent_bin.expect("built")),
        LabCommand::Serve { lab, state } => serve::run(&lab, &state, agent_bin.expect("built")),
        LabCommand::Down { state } => down::run(&state),
    }
}
