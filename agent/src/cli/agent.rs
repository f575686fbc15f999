//! `palisade agent`: run the node agent.

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct AgentArgs {}

pub fn run(_args: AgentArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("agent: not available in this build")
}
