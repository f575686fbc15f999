//! What a lab is built from, shared by `demo` and `lab up`: the command
//! line options, and the plan they resolve to (the model, the lab's pods,
//! the probed ports, which node each pod runs on, the pod wiring).

use crate::placement::{place, Placement};
use anyhow::{bail, Context, Result};
use palisade_lab::{CniLayout, Family, ProbePort};
use palisade_policy::{Model, Pod};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// How the lab wires its pods (`palisade_lab::CniLayout`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CniArg {
    /// Calico-style, wired by the lab: a host route per pod.
    #[default]
    Routed,
    /// The reference `ptp` plugin (kindnet), palisade-cni chained.
    Ptp,
    /// The reference `bridge` plugin (flannel, kubenet), palisade-cni
    /// chained: no per-pod host route.
    Bridge,
}

impl CniArg {
    pub fn layout(self) -> CniLayout {
        match self {
            CniArg::Routed => CniLayout::Routed,
            CniArg::Ptp => CniLayout::Ptp,
            CniArg::Bridge => CniLayout::Bridge,
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct LabOptions {
    /// Manifests (Namespaces, Pods, NetworkPolicies, Services): files or
    /// directories, several allowed (a topology and a policy set).
    /// Default: deploy/examples.
    #[arg(long, num_args = 1..)]
    pub manifests: Vec<PathBuf>,
    /// Ports every pod serves (and the demo probes), comma-separated
    /// `PORT/PROTO` (`80/TCP,53/UDP`). Default: every container port the
    /// manifests declare.
    #[arg(long)]
    pub ports: Option<String>,
    /// Lab nodes when no pod names one: pods spread over `node-1`..`node-N`.
    /// Pods' `spec.nodeName`s otherwise decide the nodes (one lab node per
    /// name); then N, if given, must be their number.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub nodes: Option<u8>,
    /// Pod wiring. ptp and bridge run the reference CNI plugins with
    /// palisade-cni chained after them (new pods are held until the agent
    /// enforces their policy).
    #[arg(long, value_enum, default_value_t = CniArg::Routed)]
    pub cni: CniArg,
}

impl LabOptions {
    /// The options as command-line arguments (for a process that rebuilds
    /// the same plan).
    pub fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.manifests.is_empty() {
            out.push("--manifests".to_string());
            out.extend(self.manifests.iter().map(|m| m.display().to_string()));
        }
        if let Some(p) = &self.ports {
            out.extend(["--ports".to_string(), p.clone()]);
        }
        if let Some(n) = self.nodes {
            out.extend(["--nodes".to_string(), n.to_string()]);
        }
        let cni = self.cni.layout().to_string();
        out.extend(["--cni".to_string(), cni]);
        out
    }
}

/// Everything a lab is built from.
pub struct Plan {
    /// Absolute: the agents run with another working directory.
    pub manifests: Vec<PathBuf>,
    pub model: Model,
    /// The lab's pods: those with an address (of the probed family, when
    /// there is one).
    pub pods: Vec<Pod>,
    pub ports: Vec<ProbePort>,
    pub placement: Placement,
    pub cni: CniLayout,
}

impl Plan {
    /// Reads the manifests and places the pods. `family`: only pods with
    /// an address of it become lab pods (the demo's matrix); `None`: every
    /// pod with an address.
    pub fn load(opts: &LabOptions, family: Option<Family>, what: &str) -> Result<Plan> {
        let manifests = if opts.manifests.is_empty() {
            vec![crate::build::workspace_root().join("deploy/examples")]
        } else {
            opts.manifests.clone()
        };
        let manifests = manifests
            .iter()
            .map(|m| {
                std::fs::canonicalize(m)
                    .with_context(|| format!("{what}: manifests {}", m.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        let model = palisade_policy::load_paths(&manifests);
        for e in &model.errors {
            eprintln!("{what}: skipped invalid input: {e}");
        }
        for w in &model.warnings {
            eprintln!("{what}: warning: {w}");
        }
        let pods: Vec<Pod> = model
            .pods
            .iter()
            .filter(|p| match family {
                Some(f) => p.ip(f).is_some(),
                None => !p.ips.is_empty(),
            })
            .cloned()
            .collect();
        if pods.is_empty() {
            let shown: Vec<String> = manifests.iter().map(|m| m.display().to_string()).collect();
            let fam = family.map(|f| format!(" {f:?}")).unwrap_or_default();
            bail!(
                "{what}: no running pod with an{fam} address in {} (pods need status.podIPs)",
                shown.join(" ")
            );
        }
        let placement =
            place(&pods, opts.nodes).with_context(|| format!("{what}: placing pods"))?;
        let ports = match &opts.ports {
            Some(list) => parse_ports(list)?,
            None => declared_ports(&model),
        };
        if ports.is_empty() {
            bail!("{what}: no ports: the pods declare no named container ports; pass --ports");
        }
        Ok(Plan {
            manifests,
            model,
            pods,
            ports,
            placement,
            cni: opts.cni.layout(),
        })
    }

    /// `80/TCP,53/UDP`
    pub fn port_list(&self) -> String {
        let list: Vec<String> = self.ports.iter().map(|p| p.to_string()).collect();
        list.join(",")
    }
}

pub fn parse_ports(list: &str) -> Result<Vec<ProbePort>> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let p: ProbePort = item.parse().map_err(|e| anyhow::anyhow!("--ports: {e}"))?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

fn declared_ports(model: &Model) -> Vec<ProbePort> {
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
    use clap::Parser;
    use palisade_policy::Protocol;

    #[test]
    fn ports_parse_in_order_without_duplicates() {
        let p = parse_ports("80/TCP, 53/udp,80/TCP,81").unwrap();
        let tcp = |port| ProbePort {
            port,
            protocol: Protocol::Tcp,
        };
        let udp53 = ProbePort {
            port: 53,
            protocol: Protocol::Udp,
        };
        assert_eq!(p, vec![tcp(80), udp53, tcp(81)]);
        assert!(parse_ports("80/ICMP").is_err());
        assert!(parse_ports("0/TCP").is_err());
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        lab: LabOptions,
    }

    #[test]
    fn options_round_trip_through_arguments() {
        let cli = Cli::parse_from([
            "x",
            "--manifests",
            "a",
            "b",
            "--ports",
            "80/TCP",
            "--nodes",
            "2",
            "--cni",
            "bridge",
        ]);
        let again = Cli::parse_from(std::iter::once("x".to_string()).chain(cli.lab.to_args()));
        assert_eq!(again.lab.manifests, cli.lab.manifests);
        assert_eq!(again.lab.ports.as_deref(), Some("80/TCP"));
        assert_eq!(again.lab.nodes, Some(2));
        assert_eq!(again.lab.cni, CniArg::Bridge);
        let default = Cli::parse_from(["x"]);
        assert_eq!(default.lab.cni, CniArg::Routed);
        assert_eq!(default.lab.nodes, None);
    }
}
