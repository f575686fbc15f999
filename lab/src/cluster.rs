//! `Cluster`: several lab nodes joined by an underlay, each with its own
//! pods, pod CIDRs and (when a test starts one) its own agent.
//!
//! Each node is a whole one-node `Lab` (its own id, record, namespaces,
//! bpffs mounts and processes, torn down on drop, panic or signal exactly
//! like a lab on its own); the cluster adds the underlay between their
//! node namespaces (`underlay`), which goes away with those namespaces.

use crate::cluster_spec::{underlay_addrs, ClusterSpec};
use crate::cni::ChainedPlugin;
use crate::lab::{Lab, LabPod};
use crate::measure::{matrix_of, Probe, PROBE_TIMEOUT};
use crate::probe::Outcome;
use crate::spec::LabSpec;
use anyhow::{bail, Context, Result};
use palisade_policy::{Family, MatrixEntry, ProbePort, Protocol};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// One node of a running cluster.
pub struct ClusterNode {
    /// The Kubernetes node name (`spec.nodeName`, the agent's `--node`).
    pub name: String,
    /// The node's namespace, pods, processes and mounts.
    pub lab: Lab,
    /// The node's addresses on the underlay.
    pub underlay_v4: Ipv4Addr,
    pub underlay_v6: Ipv6Addr,
}

/// A running multi-node lab; everything is removed on drop.
pub struct Cluster {
    nodes: Vec<ClusterNode>,
}

impl Cluster {
    /// Builds every node (as `Lab::up` does), then the underlay. On error,
    /// whatever was made is removed before returning.
    pub fn up(spec: &ClusterSpec) -> Result<Cluster> {
        Cluster::up_with_chains(spec, &|_| spec.chain.clone())
    }

    /// `up`, with each node's chained plugins given by `chain_of(node
    /// name)` instead of `spec.chain`: for plugins whose configuration
    /// differs per node (a state directory, a pin root, the node's name).
    pub fn up_with_chains(
        spec: &ClusterSpec,
        chain_of: &dyn Fn(&str) -> Vec<ChainedPlugin>,
    ) -> Result<Cluster> {
        spec.validate()?;
        let ranges = spec.ipam_ranges()?;
        let mut nodes = Vec::with_capacity(spec.nodes.len());
        for (k, (n, ipam_ranges)) in spec.nodes.iter().zip(&ranges).enumerate() {
            let lab = Lab::up(&LabSpec {
                label: format!("{}/{}", spec.label, n.name),
                pods: n.pods.clone(),
                cni: spec.cni,
                chain: chain_of(&n.name),
                ipam_ranges: ipam_ranges.clone(),
            })
            .with_context(|| format!("cluster {}: node {}", spec.label, n.name))?;
            let (underlay_v4, underlay_v6) = underlay_addrs(k);
            nodes.push(ClusterNode {
                name: n.name.clone(),
                lab,
                underlay_v4,
                underlay_v6,
            });
        }
        let netns: Vec<String> = nodes.iter().map(|n| n.lab.node_netns()).collect();
        crate::underlay::wire(&netns, spec, &ranges)
            .with_context(|| format!("cluster {}", spec.label))?;
        Ok(Cluster { nodes })
    }

    pub fn nodes(&self) -> &[ClusterNode] {
        &self.nodes
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Result<&ClusterNode> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("cluster: no node {name}"))
    }

    /// The node a pod (`namespace/name`) runs on.
    pub fn node_of(&self, pod: &str) -> Result<&ClusterNode> {
        self.nodes
            .iter()
            .find(|n| n.lab.pods().iter().any(|p| p.key() == pod))
            .with_context(|| format!("cluster: no pod {pod}"))
    }

    pub fn pod(&self, key: &str) -> Result<&LabPod> {
        self.node_of(key)?.lab.pod(key)
    }

    /// A pod's address of `family`.
    pub fn ip(&self, key: &str, family: Family) -> Result<IpAddr> {
        self.node_of(key)?.lab.ip(key, family)
    }

    /// One probe from pod `from` to pod `to` (both `namespace/name`, on
    /// any nodes); true when the server answered.
    pub fn probe(
        &self,
        from: &str,
        to: &str,
        family: Family,
        port: u16,
        protocol: Protocol,
    ) -> Result<bool> {
        let dst = self.ip(to, family)?;
        match self
            .node_of(from)?
            .lab
            .probe_outcome(from, dst, port, protocol, PROBE_TIMEOUT)?
        {
            Outcome::Error(e) => bail!("probe {from} -> {to} {port}/{protocol:?}: {e}"),
            out => Ok(out.reached()),
        }
    }

    /// Many probes (each from the node of its source pod; the nodes probe
    /// at the same time); results in input order.
    pub fn probe_many(&self, probes: &[Probe], timeout: Duration) -> Result<Vec<Outcome>> {
        let mut by_node: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for (i, p) in probes.iter().enumerate() {
            let k = self
                .nodes
                .iter()
                .position(|n| n.lab.pods().iter().any(|q| q.key() == p.from))
                .with_context(|| format!("cluster: no pod {}", p.from))?;
            by_node[k].push(i);
        }
        let mut out: Vec<Option<Outcome>> = vec![None; probes.len()];
        let results: Vec<Result<Vec<Outcome>>> = std::thread::scope(|s| {
            let handles: Vec<_> = by_node
                .iter()
                .zip(&self.nodes)
                .map(|(idx, node)| {
                    let mine: Vec<Probe> = idx.iter().map(|&i| probes[i].clone()).collect();
                    s.spawn(move || node.lab.probe_many(&mine, timeout))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("probe thread panicked")))
                })
                .collect()
        });
        for (idx, r) in by_node.iter().zip(results) {
            for (&i, o) in idx.iter().zip(r?) {
                out[i] = Some(o);
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.expect("every probe ran"))
            .collect())
    }

    /// The measured matrix over every pod of every node, in the order and
    /// shape of `palisade_policy::matrix` (see `Lab::measure_matrix`).
    pub fn measure_matrix(&self, ports: &[ProbePort], family: Family) -> Result<Vec<MatrixEntry>> {
        let pods: Vec<(String, IpAddr)> = self
            .nodes
            .iter()
            .flat_map(|n| n.lab.pods())
            .filter_map(|p| p.spec.ip(family).map(|ip| (p.key(), ip)))
            .collect();
        matrix_of(pods, ports, |probes| self.probe_many(probes, PROBE_TIMEOUT))
    }

    /// Tears every node down now, reporting the first problem (drop does
    /// the same but can only print them).
    pub fn teardown(self) -> Result<()> {
        let mut first = Ok(());
        for n in self.nodes {
            let name = n.name;
            if let Err(e) = n.lab.teardown() {
                if first.is_ok() {
                    first = Err(e.context(format!("node {name}")));
                }
            }
        }
        first
    }
}
