//! The upstream conformance scenarios (tests/scenarios) on a cluster laid
//! out like a real one: pods wired by a CNI layout (routed, or the
//! reference `ptp` / `bridge` plugins with `palisade-cni` chained), on one
//! node or several (joined by plain routes or a VXLAN overlay), every agent
//! fed by one in-process API server. Each scenario's policies are applied
//! through the API, and the measured matrix must equal the oracle's.

use crate::cluster::api_server;
use crate::kernel::Scratch;
use crate::lab::{cni_plugin, PORTS};
use palisade_fake_apiserver::{FakeApiServer, Kind};
use palisade_lab::{
    palisade_bin, AgentOptions, AgentProcess, ChainedPlugin, Cidr, Cluster, ClusterSpec, CniLayout,
    Family, LabSpec, NodeSpec, Overlay,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long an agent gets for its first round or a change.
const SETTLE: Duration = Duration::from_secs(60);

pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// Every scenario with a policies.yaml, sorted.
pub fn scenario_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(scenarios_dir())
        .expect("tests/scenarios")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("policies.yaml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub fn policies_of(scenario: &str) -> String {
    let p = scenarios_dir().join(scenario).join("policies.yaml");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The objects of a multi-document YAML text.
fn objects(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|d| {
            let v: Value = serde::Deserialize::deserialize(d).expect("YAML");
            (!v.is_null()).then_some(v)
        })
        .collect()
}

fn to_yaml(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| serde_yaml::to_string(o).expect("YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The standard topology with each pod's `spec.nodeName` set by `node_of`
/// (its namespace -> node name).
pub fn topology(node_of: &dyn Fn(&str) -> String) -> Vec<Value> {
    let text = std::fs::read_to_string(scenarios_dir().join("topology.yaml")).unwrap();
    let mut objs = objects(&text);
    for o in &mut objs {
        if o["kind"] == "Pod" {
            let ns = o["metadata"]["namespace"].as_str().unwrap().to_string();
            o["spec"]["nodeName"] = Value::String(node_of(&ns));
        }
    }
    objs
}

/// A running cluster and its agents. Field order is drop order: the API
/// server, then the nodes (agents killed, namespaces removed), then the
/// bpf filesystems the plugins pinned in.
pub struct Sweep {
    api: FakeApiServer,
    agents: Vec<AgentProcess>,
    cluster: Cluster,
    _bpffs: Vec<Scratch>,
    topology: Vec<Value>,
    applied: Vec<(String, String)>,
}

impl Sweep {
    /// `nodes`: each node's name with the namespaces whose pods it runs.
    pub fn up(
        label: &str,
        layout: CniLayout,
        overlay: Overlay,
        nodes: &[(&str, &[&str])],
    ) -> Sweep {
        let node_of = |ns: &str| -> String {
            let (name, _) = nodes
                .iter()
                .find(|(_, nss)| nss.contains(&ns))
                .expect("placed");
            name.to_string()
        };
        let topology = topology(&node_of);
        let model = palisade_policy::load_str(&to_yaml(&topology), "topology.yaml");
        assert!(model.errors.is_empty(), "{:?}", model.errors);
        let mut spec = ClusterSpec::new(label).cni(layout).overlay(overlay);
        for (name, _) in nodes {
            let mine: Vec<_> = model
                .pods
                .iter()
                .filter(|p| p.node.as_deref() == Some(*name))
                .collect();
            // Each pod's addresses as host prefixes: the topology's
            // addresses follow namespaces, not nodes.
            let mut node = NodeSpec {
                name: name.to_string(),
                pod_cidrs: mine
                    .iter()
                    .flat_map(|p| &p.ips)
                    .map(|ip| Cidr::new(*ip, if ip.is_ipv4() { 32 } else { 128 }))
                    .collect(),
                pods: Vec::new(),
            };
            for p in mine {
                let lab = LabSpec::from_pods("", std::slice::from_ref(p), &PORTS).pods;
                node = node.pod(&p.namespace, &p.name, &p.ips, &lab[0].ports);
            }
            spec = spec.node(node);
        }
        // The plugin pins during pod creation: each node's bpffs exists
        // before the cluster does.
        let bpffs: Vec<Scratch> = nodes
            .iter()
            .map(|(n, _)| Scratch::new(&format!("sweep-{n}")))
            .collect();
        let plugin_layout = layout != CniLayout::Routed;
        let chain_of = |node: &str| -> Vec<ChainedPlugin> {
            if !plugin_layout {
                return Vec::new();
            }
            let s = &bpffs[nodes.iter().position(|(n, _)| *n == node).unwrap()];
            vec![cni_plugin(s, node).0]
        };
        let cluster = Cluster::up_with_chains(&spec, &chain_of).unwrap_or_else(|e| panic!("{e:#}"));
        let (api, kubeconfig) = api_server(&cluster);
        for o in &topology {
            api.apply(o.clone()).unwrap();
        }
        let bin = palisade_bin().unwrap();
        let mut agents = Vec::new();
        for (node, s) in cluster.nodes().iter().zip(&bpffs) {
            let mut o = AgentOptions::kube(bin.clone(), kubeconfig.clone(), &node.name, s.bpffs());
            if plugin_layout {
                o.args = cni_plugin(s, &node.name).1;
            }
            agents.push(node.lab.start_agent(&o).unwrap());
        }
        for (node, a) in cluster.nodes().iter().zip(&agents) {
            node.lab
                .wait_agent(a, 0, SETTLE)
                .unwrap_or_else(|e| panic!("{e:#}"));
        }
        Sweep {
            api,
            agents,
            cluster,
            _bpffs: bpffs,
            topology,
            applied: Vec::new(),
        }
    }

    /// Replaces the policies through the API and waits until every agent
    /// enforces them. The text must differ from the last one set.
    pub fn set_policies(&mut self, yaml: &str) {
        let before: Vec<u64> = self.agents.iter().map(|a| a.rounds()).collect();
        for (ns, name) in std::mem::take(&mut self.applied) {
            self.api.delete(Kind::NetworkPolicy, &ns, &name);
        }
        for o in objects(yaml) {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or("default");
            let name = o["metadata"]["name"].as_str().unwrap();
            self.applied.push((ns.to_string(), name.to_string()));
            self.api.apply(o).unwrap();
        }
        for ((node, a), b) in self.cluster.nodes().iter().zip(&self.agents).zip(before) {
            node.lab
                .wait_agent(a, b, SETTLE)
                .unwrap_or_else(|e| panic!("{e:#}"));
        }
    }

    /// Differences between the measured matrix and the oracle's for the
    /// topology and `policies`, as lines.
    pub fn check(&self, policies: &str, family: Family) -> Vec<String> {
        let text = format!("{}---\n{policies}", to_yaml(&self.topology));
        let model = palisade_policy::load_str(&text, "sweep.yaml");
        assert!(model.errors.is_empty(), "{:?}", model.errors);
        let expected = palisade_policy::matrix(&model, &PORTS, family);
        let measured = self
            .cluster
            .measure_matrix(&PORTS, family)
            .expect("measure");
        palisade_lab::diff(&measured, &expected)
            .iter()
            .map(|d| format!("{family:?} {d}"))
            .collect()
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
}

/// Runs every `shards`-th scenario from `shard` on one sweep cluster
/// (IPv4; the first scenario of the shard over IPv6 too); panics with
/// every difference.
pub fn run_shard(sweep: &mut Sweep, shard: usize, shards: usize) {
    let mut failures = Vec::new();
    let names: Vec<String> = scenario_names()
        .into_iter()
        .skip(shard)
        .step_by(shards)
        .collect();
    assert!(!names.is_empty(), "no scenarios in shard {shard}");
    for (i, name) in names.iter().enumerate() {
        let policies = policies_of(name);
        sweep.set_policies(&policies);
        let mut families = vec![Family::V4];
        if i == 0 {
            families.push(Family::V6);
        }
        for family in families {
            failures.extend(
                sweep
                    .check(&policies, family)
                    .into_iter()
                    .map(|d| format!("{name}: {d}")),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences between measured and expected:\n{}\nagent logs:\n{}",
        failures.len(),
        failures.join("\n"),
        sweep.logs()
    );
}
