//! The suite on real packets: the topology's nodes as lab nodes (routed
//! pods, an underlay between nodes), one `palisade agent --manifests` per
//! node following one manifest file, hostNetwork servers in the node
//! namespaces, and each step's probes sent from the client pods.
//!
//! A step's objects are written to the manifest file (atomically) only
//! when they changed, and every agent must finish a round after that
//! before the probes run. Upstream asserts a denial as a timeout: a probe
//! expected to be denied must time out (a refusal fails it); one expected
//! to pass that timed out is probed once more before it fails (a busy host
//! can delay an answer, never invent one).

use super::{host_network, node_addresses, node_name, pod_ip, Expect, Objects, Suite};
use super::{ConformanceTest, Resolved};
use anyhow::{bail, ensure, Context, Result};
use palisade_lab::{
    palisade_bin, underlay_addrs, write_manifest, AgentOptions, AgentProcess, Cluster, ClusterSpec,
    NodeSpec, Outcome, PodServer, Probe, ServedPort, PROBE_TIMEOUT,
};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How long agents get for their first round and for each change.
const SETTLE: Duration = Duration::from_secs(60);

/// A running cluster for the suite. Field order is drop order: the
/// hostNetwork servers, then the nodes (agents killed, namespaces,
/// mounts and the manifest directory removed).
pub struct ConformanceLab {
    _host_servers: Vec<PodServer>,
    agents: Vec<AgentProcess>,
    manifest: PathBuf,
    written: String,
    cluster: Cluster,
}

/// What one test did on the lab.
#[derive(Debug, Default)]
pub struct TestRun {
    pub name: String,
    pub probes: usize,
    /// One line per probe that disagreed with upstream.
    pub failures: Vec<String>,
    /// Probes marked as beyond the lab, with what they measured.
    pub caveats: Vec<String>,
}

impl ConformanceLab {
    /// The topology of `suite` on lab nodes named and addressed as its
    /// Node objects say (node k must hold the lab's k-th underlay
    /// address), agents started and settled.
    pub fn up(label: &str, suite: &Suite) -> Result<ConformanceLab> {
        let topology = Objects::new(suite.topology.iter().cloned())?;
        let served: Vec<ServedPort> = suite
            .meta
            .serves
            .pod
            .iter()
            .map(|s| ServedPort {
                port: s.port,
                protocol: s.protocol.protocol(),
            })
            .collect();
        let mut spec = ClusterSpec::new(label);
        let nodes: Vec<&serde_json::Value> = topology.of_kind("Node").collect();
        for (k, node) in nodes.iter().enumerate() {
            let name = node["metadata"]["name"].as_str().context("Node name")?;
            let underlay = IpAddr::V4(underlay_addrs(k).0);
            ensure!(
                node_addresses(node).contains(&underlay),
                "Node {name} (the lab's node {k}) must have the address {underlay}"
            );
            let mut n = NodeSpec::new(name, k);
            for pod in topology.of_kind("Pod").filter(|p| !host_network(p)) {
                if node_name(pod)? == name {
                    let ns = pod["metadata"]["namespace"].as_str().context("namespace")?;
                    let pname = pod["metadata"]["name"].as_str().context("name")?;
                    n = n.pod(ns, pname, &[pod_ip(pod)?], &served);
                }
            }
            spec = spec.node(n);
        }
        let cluster = Cluster::up(&spec)?;
        let host_ports: Vec<ServedPort> = suite
            .meta
            .serves
            .host_network
            .iter()
            .map(|s| ServedPort {
                port: s.port,
                protocol: s.protocol.protocol(),
            })
            .collect();
        let mut host_servers = Vec::new();
        for pod in topology.of_kind("Pod").filter(|p| host_network(p)) {
            let node = cluster.node(&node_name(pod)?)?;
            host_servers.push(node.lab.serve_in_node(&host_ports, &[pod_ip(pod)?])?);
        }
        let dir = cluster.nodes()[0].lab.dir().join("manifests");
        std::fs::create_dir(&dir).with_context(|| format!("{}", dir.display()))?;
        let manifest = dir.join("objects.yaml");
        let written = topology.to_yaml();
        write_manifest(&manifest, &written)?;
        let bin = palisade_bin()?;
        let mut agents = Vec::new();
        for node in cluster.nodes() {
            let bpffs = node.lab.mount_bpffs()?;
            let opts = AgentOptions::new(bin.clone(), vec![dir.clone()], &node.name, bpffs);
            agents.push(node.lab.start_agent(&opts)?);
        }
        let lab = ConformanceLab {
            _host_servers: host_servers,
            agents,
            manifest,
            written,
            cluster,
        };
        for (node, agent) in lab.cluster.nodes().iter().zip(&lab.agents) {
            node.lab.wait_agent(agent, 0, SETTLE)?;
        }
        Ok(lab)
    }

    /// Makes `objects` what the agents enforce.
    fn set_objects(&mut self, objects: &Objects) -> Result<()> {
        let text = objects.to_yaml();
        if text == self.written {
            return Ok(());
        }
        let before: Vec<u64> = self.agents.iter().map(|a| a.rounds()).collect();
        write_manifest(&self.manifest, &text)?;
        self.written = text;
        for ((node, agent), b) in self.cluster.nodes().iter().zip(&self.agents).zip(before) {
            node.lab.wait_agent(agent, b, SETTLE)?;
        }
        Ok(())
    }

    /// Runs every step of `test`; an error is a lab that stopped working
    /// (an agent gone, a probe that could not be sent), not a verdict.
    pub fn run(&mut self, suite: &Suite, test: &ConformanceTest) -> Result<TestRun> {
        let mut run = TestRun {
            name: test.name.clone(),
            ..TestRun::default()
        };
        for st in test.walk(&suite.topology)? {
            self.set_objects(&st.objects)
                .with_context(|| format!("{} step {}", test.name, st.index))?;
            let outcomes = self.probe(&st.probes)?;
            for (p, out) in st.probes.iter().zip(outcomes) {
                run.probes += 1;
                let wrong = verdict(p, &out);
                match (&p.probe.lab, wrong) {
                    (Some(why), w) => run.caveats.push(format!(
                        "{p}: {out:?}{} (not checked: {why})",
                        w.map(|w| format!(", {w}")).unwrap_or_default()
                    )),
                    (None, Some(w)) => run.failures.push(format!("{p}: {w}")),
                    (None, None) => {}
                }
            }
        }
        Ok(run)
    }

    /// Every probe of a step at once; those expected to pass that timed
    /// out get one more try.
    fn probe(&self, probes: &[Resolved]) -> Result<Vec<Outcome>> {
        let to_lab = |p: &Resolved| Probe {
            from: p.probe.from.clone(),
            to: p.dst,
            port: p.probe.port,
            protocol: p.probe.protocol.protocol(),
        };
        let all: Vec<Probe> = probes.iter().map(to_lab).collect();
        let mut outcomes = self.cluster.probe_many(&all, PROBE_TIMEOUT)?;
        let again: Vec<usize> = (0..probes.len())
            .filter(|&i| {
                probes[i].probe.expect == Expect::Allow && outcomes[i] == Outcome::TimedOut
            })
            .collect();
        if !again.is_empty() {
            let retry: Vec<Probe> = again.iter().map(|&i| to_lab(&probes[i])).collect();
            for (i, o) in again
                .into_iter()
                .zip(self.cluster.probe_many(&retry, PROBE_TIMEOUT)?)
            {
                outcomes[i] = o;
            }
        }
        Ok(outcomes)
    }

    /// The agents' logs, for failure messages.
    pub fn logs(&self) -> String {
        self.cluster
            .nodes()
            .iter()
            .zip(&self.agents)
            .map(|(n, a)| format!("--- {}:\n{}", n.name, n.lab.log(&a.process)))
            .collect()
    }

    /// Fails when an agent has exited (its log says why).
    pub fn agents_alive(&self) -> Result<()> {
        for (n, a) in self.cluster.nodes().iter().zip(&self.agents) {
            if let Some(status) = n.lab.exit_status(&a.process)? {
                bail!(
                    "agent of {} exited ({status}):\n{}",
                    n.name,
                    n.lab.log(&a.process)
                );
            }
        }
        Ok(())
    }
}

/// What is wrong with `out` for `p`, if anything.
fn verdict(p: &Resolved, out: &Outcome) -> Option<String> {
    match (p.probe.expect, out) {
        (Expect::Allow, Outcome::Reached) | (Expect::Deny, Outcome::TimedOut) => None,
        (Expect::Allow, Outcome::Refused) => Some("refused".into()),
        (Expect::Allow, Outcome::TimedOut) => Some("no answer (dropped)".into()),
        (Expect::Deny, Outcome::Reached) => Some("the server answered".into()),
        (Expect::Deny, Outcome::Refused) => {
            Some("refused, where upstream requires a drop (timeout)".into())
        }
        (_, Outcome::Error(e)) => Some(format!("probe error: {e}")),
    }
}
