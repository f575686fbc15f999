//! `palisade compile`: the per-pod map contents a node would get.

use super::ManifestArgs;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    #[command(flatten)]
    pub manifests: ManifestArgs,
}

pub fn run(_args: CompileArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("compile: not available in this build")
}
