//! `cargo xtask demo`: the example policies enforced on a lab.
//!
//! Brings up a lab with every pod of the manifests, one lab node per
//! `spec.nodeName` (`placement`), measures the reachability matrix with no
//! agent, starts one `palisade agent` per node, measures again, and
//! compares with the oracle's matrix (`palisade_policy::matrix`). Exits
//! non-zero, listing the differences, when the measured matrix is not the
//! expected one. With ClusterNetworkPolicies in the manifests (IPv4), it
//! also probes a cloud metadata server behind every node and shows what
//! the Admin tier decided (`demo_tiers`).

use crate::demo_tiers as tiers;
use crate::options::{LabOptions, Plan};
use crate::running::Running;
use anyhow::{bail, Result};
use palisade_lab::{CniLayout, Family, MatrixEntry};
use std::collections::BTreeMap;
use std::path::Path;

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
    #[command(flatten)]
    pub lab: LabOptions,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Address family to probe.
    #[arg(long, value_enum, default_value_t = FamilyArg::V4)]
    pub family: FamilyArg,
}

pub fn run(args: DemoArgs, agent_bin: &Path) -> Result<()> {
    let family = match args.family {
        FamilyArg::V4 => Family::V4,
        FamilyArg::V6 => Family::V6,
    };
    let plan = Plan::load(&args.lab, Some(family), "demo")?;
    let nodes = &plan.placement.nodes;
    eprintln!(
        "demo: {} node(s) ({}), {} pods, {} pod wiring, probing {} over {family:?}",
        nodes.len(),
        nodes.join(", "),
        plan.pods.len(),
        plan.cni,
        plan.port_list()
    );
    for n in nodes {
        eprintln!("demo: {n}: {}", plan.placement.pods_on(n).join(", "));
    }
    if args.output == Output::Table {
        println!("Pod wiring: {}", wiring(plan.cni));
    }

    let mut lab = Running::up(&plan, "xtask-demo")?;
    let with_tiers = family == Family::V4 && !plan.model.cluster_policies.is_empty();
    let metadata = if with_tiers {
        tiers::serve_metadata(&lab)?
    } else {
        Vec::new()
    };
    eprintln!("demo: measuring before enforcement");
    let before = lab.measure(&plan.ports, family)?;
    let title = match plan.cni {
        CniLayout::Routed => "Before (no agent): everything reachable",
        _ => "Before (no agent): every pod held pending by palisade-cni",
    };
    show(args.output, title, &before);
    if with_tiers {
        let probes = tiers::probe_metadata(&lab)?;
        say(
            args.output,
            &format!(
                "Cloud metadata {} {} (a host behind each node), before: {}\n",
                tiers::METADATA,
                tiers::METADATA_PORT,
                tiers::reached_text(&probes)
            ),
        );
    }

    lab.start_agents(agent_bin)?;
    eprintln!("demo: measuring with the policies enforced");
    let after = lab.measure(&plan.ports, family)?;
    let title = match &lab {
        Running::One(_) => "After (policies enforced)",
        Running::Many(_) => "After (policies enforced, served by the API)",
    };
    show(args.output, title, &after);
    if nodes.len() > 1 {
        report_crossing(&plan, &after);
    }
    let mut tier_differences = Vec::new();
    if with_tiers {
        let probes = tiers::probe_metadata(&lab)?;
        tier_differences = tiers::metadata_differences(&plan.model, &probes);
        say(
            args.output,
            &tier_report(&plan, &probes, &after, family, agent_bin),
        );
    }
    if args.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&after)?);
    }
    let expected = palisade_policy::matrix(&plan.model, &plan.ports, family);
    // The lab goes before the verdict, so a failing demo leaves nothing.
    drop(metadata);
    lab.teardown()?;
    compare(&after, &expected)?;
    if !tier_differences.is_empty() {
        bail!(
            "demo: metadata probes differ from the oracle:\n  {}",
            tier_differences.join("\n  ")
        );
    }
    Ok(())
}

/// What the Admin tier did: the metadata probes after enforcement with
/// `palisade check` naming the Deny, and a cell an Admin Accept allows
/// although a NetworkPolicy isolates its destination.
fn tier_report(
    plan: &Plan,
    probes: &[(String, bool)],
    after: &[MatrixEntry],
    family: Family,
    bin: &Path,
) -> String {
    let mut out = format!(
        "Cloud metadata {} {}, after: {}\n",
        tiers::METADATA,
        tiers::METADATA_PORT,
        tiers::reached_text(probes)
    );
    let pods: Vec<String> = probes.iter().map(|(k, _)| k.clone()).collect();
    if let Some(pod) = tiers::metadata_denied_pod(&plan.model, &pods) {
        out += &tiers::check(
            bin,
            &plan.manifests,
            &pod,
            &tiers::metadata_addr().to_string(),
            &tiers::METADATA_PORT.to_string(),
        );
    }
    if let Some(cell) = tiers::accept_over_network_policy(&plan.model, &plan.ports, family) {
        let e = &cell.entry;
        let measured = after
            .iter()
            .find(|m| {
                m.from == e.from && m.to == e.to && m.port == e.port && m.protocol == e.protocol
            })
            .map_or(
                "not probed",
                |m| if m.allowed { "allowed" } else { "denied" },
            );
        out += &format!(
            "Allowed by an Admin Accept although a NetworkPolicy isolates {}: {} -> {} {}/{}: measured {measured}\n",
            e.to,
            e.from,
            e.to,
            e.port,
            e.protocol.name()
        );
        out += &tiers::check(
            bin,
            &plan.manifests,
            &e.from,
            &e.to,
            &format!("{}/{}", e.port, e.protocol.name()),
        );
    }
    out
}

/// A paragraph beside the tables: stdout in table mode, stderr in JSON
/// mode.
fn say(output: Output, text: &str) {
    match output {
        Output::Table => println!("{text}"),
        Output::Json => eprintln!("{text}"),
    }
}

fn wiring(layout: CniLayout) -> String {
    match layout {
        CniLayout::Routed => "routed (Calico-style host routes)".to_string(),
        l => format!("{l} (reference CNI plugin, palisade-cni chained)"),
    }
}

/// How many probes crossed nodes, and how many of those got through.
fn report_crossing(plan: &Plan, after: &[MatrixEntry]) {
    let node_of: BTreeMap<&str, &str> = plan
        .placement
        .node_of
        .iter()
        .map(|(k, n)| (k.as_str(), n.as_str()))
        .collect();
    let cross = |e: &&MatrixEntry| node_of.get(e.from.as_str()) != node_of.get(e.to.as_str());
    let crossing: Vec<&MatrixEntry> = after.iter().filter(cross).collect();
    let allowed = crossing.iter().filter(|e| e.allowed).count();
    eprintln!(
        "demo: {} of {} probes crossed nodes ({allowed} allowed, {} denied)",
        crossing.len(),
        after.len(),
        crossing.len() - allowed
    );
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
