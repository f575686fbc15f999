//! `palisade compile`: the per-pod map contents a node would get.

use super::ManifestArgs;
use palisade_compiler::{compile, render, IdentityAllocator};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub enum Output {
    /// One JSON document: pods, directions, groups, map entries, identities.
    Json,
    /// A readable listing of the same.
    #[default]
    Text,
}

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    #[command(flatten)]
    pub manifests: ManifestArgs,
    /// Node whose pods (spec.nodeName) are compiled.
    #[arg(long)]
    pub node: String,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// The manifest paths, whether `--manifests` takes one path or several.
trait IntoPaths {
    fn into_paths(self) -> Vec<PathBuf>;
}

impl IntoPaths for PathBuf {
    fn into_paths(self) -> Vec<PathBuf> {
        vec![self]
    }
}

impl IntoPaths for Vec<PathBuf> {
    fn into_paths(self) -> Vec<PathBuf> {
        self
    }
}

pub fn run(args: CompileArgs) -> anyhow::Result<ExitCode> {
    let paths = args.manifests.manifests.clone().into_paths();
    let model = palisade_policy::load_paths(&paths);
    for e in &model.errors {
        eprintln!("skipped: {e}");
    }
    let mut alloc = IdentityAllocator::new();
    let node = compile(&model, &args.node, &mut alloc);
    if node.pods.is_empty() {
        eprintln!(
            "note: no running pod with an IP is scheduled on node {:?}",
            args.node
        );
    }
    for p in node.pods.values() {
        if let Some(e) = &p.error {
            eprintln!("error: {e}");
        }
    }
    match args.output {
        Output::Json => {
            let doc = render::to_json(&args.node, &node, &alloc);
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Output::Text => print!("{}", render::to_text(&args.node, &node, &alloc)),
    }
    let failed = (args.manifests.strict && !model.errors.is_empty())
        || node.pods.values().any(|p| p.error.is_some());
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
