//! `palisade check` and `palisade matrix`: verdicts from the spec oracle.

use super::ManifestArgs;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub manifests: ManifestArgs,
}

#[derive(clap::Args, Debug)]
pub struct MatrixArgs {
    #[command(flatten)]
    pub manifests: ManifestArgs,
}

pub fn check(_args: CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("check: not available in this build")
}

pub fn matrix(_args: MatrixArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("matrix: not available in this build")
}
