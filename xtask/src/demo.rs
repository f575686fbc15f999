//! `cargo xtask demo`: the example policies enforced on a lab node.
//!
//! Brings up a lab with every pod of the manifests (all on the one lab
//! node whatever their `nodeName`), measures the reachability matrix with
//! no agent, starts one `palisade agent` per node name in the lab's node
//! namespace, measures again, and compares with the oracle's matrix
//! (`palisade_policy::matrix`). Exits non-zero, listing the differences,
//! when the measured matrix is not the expected one. With `--nodes N`
//! (N > 1) the pods are spread over N lab nodes fed by a fake API server
//! instead (`demo_cluster`).

use anyhow::{bail, Context, Result};
use palisade_lab::{AgentOptions, Family, Lab, LabSpec, MatrixEntry, ProbePort};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Truth tables and progress.
    Table,
    /// Only the measured matrix after enforcement, as a JSON array, on
    /// stdout (progress goes to stderr).
    Json,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyArg {
    V4,
    V6,
}

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Manifests (Namespaces, Pods, NetworkPolicies): files or
    /// directories, several allowed (a topology and a policy set).
    /// Default: deploy/examples.
    #[arg(long, num_args = 1..)]
    pub manifests: Vec<PathBuf>,
    /// Ports to probe, comma-separated `PORT/PROTO` (`80/TCP,53/UDP`).
    /// Default: every container port the manifests declare.
    #[arg(long)]
    pub ports: Option<String>,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Address family to probe.
    #[arg(long, value_enum, default_value_t = FamilyArg::V4)]
    pub family: FamilyArg,
    /// Lab nodes. 1: every pod on one node, agents read the manifests.
    /// More: pods spread over `node-1`..`node-N` joined by an underlay,
    /// agents (one per node) read a fake API server serving the manifests.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub nodes: u8,
}

/// How long the agents get to program the node the first time.
const AGENT_READY: Duration = Duration::from_secs(60);

pub fn run(args: DemoArgs, agent_bin: &Path) -> Result<()> {
    let root = crate::build::workspace_root();
    let manifests = if args.manifests.is_empty() {
        vec![root.join("deploy/examples")]
    } else {
        args.manifests.clone()
    };
    // Absolute: the agent runs with another working directory.
    let manifests = manifests
        .iter()
        .map(|m| {
            std::fs::canonicalize(m).with_context(|| format!("demo: manifests {}", m.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let shown: Vec<String> = manifests.iter().map(|m| m.display().to_string()).collect();
    let shown = shown.join(" ");
    let family = match args.family {
        FamilyArg::V4 => Family::V4,
        FamilyArg::V6 => Family::V6,
    };

    let model = palisade_policy::load_paths(&manifests);
    for e in &model.errors {
        eprintln!("demo: skipped invalid input: {e}");
    }
    let pods: Vec<_> = model
        .pods
        .iter()
        .filter(|p| p.ip(family).is_some())
        .cloned()
        .collect();
    if pods.is_empty() {
        bail!(
            "demo: no running pod with a {family:?} address in {shown} (pods need status.podIPs)"
        );
    }
    let ports = match &args.ports {
        Some(list) => parse_ports(list)?,
        None => declared_ports(&model),
    };
    if ports.is_empty() {
        bail!("demo: no ports to probe: the pods declare no container ports; pass --ports");
    }
    if args.nodes > 1 {
        let output = args.output;
        let show = move |title: &str, m: &[MatrixEntry]| show(output, title, m);
        eprintln!(
            "demo: {} nodes, {} pods, probing {} over {family:?}",
            args.nodes,
            pods.len(),
            ports
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let (after, expected) = crate::demo_cluster::run(&crate::demo_cluster::Demo {
            nodes: usize::from(args.nodes),
            manifests: &manifests,
            model: &model,
            pods: &pods,
            ports: &ports,
            family,
            agent_bin,
            show: &show,
        })?;
        if args.output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&after)?);
        }
        return compare(&after, &expected);
    }
    let nodes: BTreeSet<String> = model.pods.iter().filter_map(|p| p.node.clone()).collect();
    for p in model.pods.iter().filter(|p| p.node.is_none()) {
        eprintln!(
            "demo: pod {} has no spec.nodeName: no agent enforces its policy",
            p.key()
        );
    }
    if nodes.is_empty() {
        bail!("demo: no pod has a spec.nodeName: there is no node to run an agent for");
    }

    let port_list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    eprintln!(
        "demo: lab with {} pods, probing {} over {family:?}",
        pods.len(),
        port_list.join(",")
    );
    let lab = Lab::up(&LabSpec::from_pods("xtask-demo", &pods, &ports))?;

    eprintln!("demo: measuring before enforcement");
    let before = lab.measure_matrix(&ports, family)?;
    show(
        args.output,
        "Before (no agent): everything reachable",
        &before,
    );

    let bpffs = lab.mount_bpffs()?;
    let agents = nodes
        .iter()
        .map(|node| {
            let opts = AgentOptions::new(
                agent_bin.to_path_buf(),
                manifests.clone(),
                node,
                bpffs.clone(),
            );
            lab.start_agent(&opts)
        })
        .collect::<Result<Vec<_>>>()?;
    for a in &agents {
        eprintln!(
            "demo: waiting for the agent of node {} (pid {})",
            a.node, a.process.pid
        );
        lab.wait_agent(a, 0, AGENT_READY)?;
    }

    eprintln!("demo: measuring with the policies enforced");
    let after = lab.measure_matrix(&ports, family)?;
    show(args.output, "After (policies enforced)", &after);
    if args.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&after)?);
    }

    let expected = palisade_policy::matrix(&model, &ports, family);
    // The lab goes before the verdict, so a failing demo leaves nothing.
    lab.teardown()?;
    compare(&after, &expected)
}

/// The measured-vs-oracle summary; an error listing the differences when
/// they disagree.
fn compare(after: &[MatrixEntry], expected: &[MatrixEntry]) -> Result<()> {
    let differences = palisade_lab::diff(after, expected);
    if differences.is_empty() {
        eprintln!(
            "demo: measured == expected: all {} probes agree with the policy oracle",
            after.len()
        );
        return Ok(());
    }
    let listed: Vec<String> = differences.iter().map(|d| format!("  {d}")).collect();
    bail!(
        "demo: measured != expected ({} of {} probes differ):\n{}",
        differences.len(),
        expected.len(),
        listed.join("\n")
    )
}

/// Tables go to stdout in table mode; in JSON mode stdout holds only the
/// final JSON, so they go to stderr.
fn show(output: Output, title: &str, m: &[MatrixEntry]) {
    let text = format!("{title}\n{}", palisade_policy::render_table(m));
    match output {
        Output::Table => println!("{text}"),
        Output::Json => eprintln!("{text}"),
    }
}

fn parse_ports(list: &str) -> Result<Vec<ProbePort>> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let p: ProbePort = item.parse().map_err(|e| anyhow::anyhow!("--ports: {e}"))?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

fn declared_ports(model: &palisade_policy::Model) -> Vec<ProbePort> {
    let set: BTreeSet<ProbePort> = model
        .pods
        .iter()
        .flat_map(|p| {
            p.ports.iter().map(|np| ProbePort {
                port: np.port,
                protocol: np.protocol,
            })
        })
        .collect();
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::Protocol;

    #[test]
    fn ports_parse_in_order_without_duplicates() {
        let p = parse_ports("80/TCP, 53/udp,80/TCP,81").unwrap();
        assert_eq!(
            p,
            vec![
                ProbePort {
                    port: 80,
                    protocol: Protocol::Tcp
                },
                ProbePort {
                    port: 53,
                    protocol: Protocol::Udp
                },
                ProbePort {
                    port: 81,
                    protocol: Protocol::Tcp
                },
            ]
        );
        assert!(parse_ports("80/ICMP").is_err());
        assert!(parse_ports("0/TCP").is_err());
    }
}
