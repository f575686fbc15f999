//! A lab built from a `Plan`, whatever its number of nodes: one node
//! (`one_node`, the agent reads files) or several (`demo_cluster`, the
//! agents read a fake API server).

use crate::demo_cluster::ManyNodes;
use crate::one_node::OneNode;
use crate::options::Plan;
use anyhow::Result;
use palisade_lab::{AgentProcess, Family, Lab, MatrixEntry, ProbePort};
use std::path::Path;
use std::time::Duration;

/// How long the agents get to program their node the first time.
pub const AGENT_READY: Duration = Duration::from_secs(60);

pub enum Running {
    One(OneNode),
    Many(ManyNodes),
}

/// One node of a running lab, for reports.
pub struct NodeView<'a> {
    pub name: &'a str,
    pub lab: &'a Lab,
    pub addresses: Vec<std::net::IpAddr>,
    pub agent: Option<&'a AgentProcess>,
}

impl Running {
    /// Wires every pod (held pending by palisade-cni with the plugin
    /// layouts); no agent runs yet.
    pub fn up(plan: &Plan, label: &str) -> Result<Running> {
        Ok(if plan.placement.nodes.len() == 1 {
            Running::One(OneNode::up(plan, label)?)
        } else {
            Running::Many(ManyNodes::up(plan, label)?)
        })
    }

    pub fn start_agents(&mut self, bin: &Path) -> Result<()> {
        match self {
            Running::One(o) => o.start_agent(bin, AGENT_READY),
            Running::Many(m) => m.start_agents(bin, AGENT_READY),
        }
    }

    pub fn measure(&self, ports: &[ProbePort], family: Family) -> Result<Vec<MatrixEntry>> {
        match self {
            Running::One(o) => o.lab.measure_matrix(ports, family),
            Running::Many(m) => m.cluster.measure_matrix(ports, family),
        }
    }

    pub fn nodes(&self) -> Vec<NodeView<'_>> {
        match self {
            Running::One(o) => vec![NodeView {
                name: &o.node,
                lab: &o.lab,
                addresses: vec![palisade_lab::NODE_V4.into()],
                agent: o.agent.as_ref(),
            }],
            Running::Many(m) => m
                .cluster
                .nodes()
                .iter()
                .enumerate()
                .map(|(k, n)| NodeView {
                    name: &n.name,
                    lab: &n.lab,
                    addresses: vec![n.underlay_v4.into(), n.underlay_v6.into()],
                    agent: m.agents.get(k),
                })
                .collect(),
        }
    }

    /// The manifests the agents follow (a copy the lab owns).
    pub fn manifests(&self) -> &Path {
        match self {
            Running::One(o) => &o.manifests,
            Running::Many(m) => &m.manifests,
        }
    }

    pub fn kubeconfig(&self) -> Option<&Path> {
        match self {
            Running::One(_) => None,
            Running::Many(m) => Some(&m.kubeconfig),
        }
    }

    /// Makes the agents see changes of `manifests()`: the one-node agent
    /// reads the files itself; the API server is told. Returns how many
    /// objects changed.
    pub fn follow(&mut self) -> Result<usize> {
        match self {
            Running::One(_) => Ok(0),
            Running::Many(m) => m.sync(),
        }
    }

    pub fn teardown(self) -> Result<()> {
        match self {
            Running::One(o) => o.teardown(),
            Running::Many(m) => m.teardown(),
        }
    }
}
