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
    let (text, failed) = render(&args)?;
    print!("{text}");
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The command's output, and whether it should exit non-zero: skipped
/// objects or warnings under `--strict`, or a pod over a map capacity (programmed
/// deny-all). Diagnostics go to stderr.
fn render(args: &CompileArgs) -> anyhow::Result<(String, bool)> {
    let paths = args.manifests.manifests.clone().into_paths();
    let model = palisade_policy::load_paths(&paths);
    let flawed = super::offline::report_input(&model);
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
    let text = match args.output {
        Output::Json => {
            let doc = render::to_json(&args.node, &node, &alloc);
            serde_json::to_string_pretty(&doc)? + "\n"
        }
        Output::Text => render::to_text(&args.node, &node, &alloc),
    };
    let failed = (args.manifests.strict && flawed) || node.pods.values().any(|p| p.error.is_some());
    Ok((text, failed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A manifest directory removed when the test ends, pass or fail.
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const MANIFESTS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  nodeName: n1
  containers: [{name: c, image: x, ports: [{name: http, containerPort: 8080}]}]
status: {phase: Running, podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {nodeName: n2, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.0.0.2, podIPs: [{ip: 10.0.0.2}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: http}]
"#;

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: CompileArgs,
    }

    fn args(dir: &std::path::Path, output: &str) -> CompileArgs {
        let dir = dir.to_str().expect("utf-8 temp path");
        Wrapper::try_parse_from([
            "palisade",
            "--manifests",
            dir,
            "--node",
            "n1",
            "--output",
            output,
        ])
        .expect("arguments parse")
        .args
    }

    #[test]
    fn json_and_text_show_the_compiled_node() {
        let dir = TempDir(
            std::env::temp_dir().join(format!("palisade-compile-cli-{}", std::process::id())),
        );
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(dir.0.join("all.yaml"), MANIFESTS).unwrap();

        let (json, failed) = render(&args(&dir.0, "json")).unwrap();
        assert!(!failed);
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(doc["node"], "n1");
        let pods = doc["pods"].as_array().unwrap();
        assert_eq!(pods.len(), 1, "only the pod on n1 is compiled");
        let ingress = &pods[0]["ingress"];
        assert_eq!(ingress["isolated"], true);
        assert_eq!(ingress["groups"][0]["rules"][0]["policy"], "shop/web");
        // The named port resolved on the pod itself.
        assert_eq!(ingress["ports"][0]["port"], 8080);
        assert_eq!(ingress["ports"][0]["len"], 16);
        assert_eq!(ingress["identities"][0]["labels"]["app"], "db");
        assert_eq!(doc["identities"].as_array().unwrap().len(), 2);

        let (text, _) = render(&args(&dir.0, "text")).unwrap();
        assert!(text.contains("pod shop/web (10.0.0.1)"), "{text}");
        assert!(text.contains("port TCP 8080/16"), "{text}");
    }
}
