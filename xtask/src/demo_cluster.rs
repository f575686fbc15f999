//! `cargo xtask demo --nodes N` (N > 1): the example policies enforced on
//! a multi-node lab fed by the fake API server.
//!
//! The manifests' pods are spread over `node-1` ... `node-N` (round robin
//! in `namespace/name` order, which overrides their `spec.nodeName`); each
//! node's pod CIDRs are its pods' own addresses, routed over the underlay.
//! The manifests' objects are served by one fake API server on node-1's
//! underlay address, and each node runs `palisade agent --kubeconfig` with
//! a bpffs of its own. The measured matrix (every pair, within and across
//! nodes) is compared with the oracle's.

use anyhow::{bail, Context, Result};
use palisade_fake_apiserver::FakeApiServer;
use palisade_lab::{
    AgentOptions, Cidr, Cluster, ClusterSpec, Family, MatrixEntry, NodeSpec, ProbePort,
};
use palisade_policy::{Model, Pod};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the agents get to program their node the first time.
const AGENT_READY: Duration = Duration::from_secs(60);

/// What the multi-node demo needs from the command line and the model.
pub struct Demo<'a> {
    pub nodes: usize,
    pub manifests: &'a [PathBuf],
    pub model: &'a Model,
    /// The pods to place (those with an address of `family`).
    pub pods: &'a [Pod],
    pub ports: &'a [ProbePort],
    pub family: Family,
    pub agent_bin: &'a Path,
    /// Prints a titled matrix (stdout or stderr by output mode).
    pub show: &'a dyn Fn(&str, &[MatrixEntry]),
}

/// Runs it; returns the matrix after enforcement and the oracle's.
pub fn run(d: &Demo) -> Result<(Vec<MatrixEntry>, Vec<MatrixEntry>)> {
    let placement = place(d.pods, d.nodes);
    let spec = cluster_spec(d.pods, &placement, d.nodes, d.ports)?;
    for n in &spec.nodes {
        let keys: Vec<String> = n.pods.iter().map(|p| p.key()).collect();
        eprintln!("demo: {}: {}", n.name, keys.join(", "));
    }
    let objects = read_objects(d.manifests)?;
    let cluster = Cluster::up(&spec)?;

    eprintln!("demo: measuring before enforcement");
    let before = cluster.measure_matrix(d.ports, d.family)?;
    (d.show)("Before (no agent): everything reachable", &before);

    let hub = &cluster.nodes()[0];
    let at = SocketAddr::new(hub.underlay_v4.into(), 0);
    let api = hub.lab.run_in_node(|| FakeApiServer::start_at(at))??;
    let kubeconfig = api.write_kubeconfig(&hub.lab.dir().join("kubeconfig"))?;
    let mut served = 0;
    for o in objects {
        let o = match o["kind"].as_str() {
            Some("Pod") => match placement.get(&object_key(&o)) {
                Some(node) => with_node(o, node),
                // A pod without an address of the probed family: no lab
                // pod, but still a peer the policies may name.
                None => o,
            },
            _ => o,
        };
        api.apply(o).context("demo: serving the manifests")?;
        served += 1;
    }
    eprintln!(
        "demo: fake API server at {} serving {served} objects",
        api.url()
    );

    let mut agents = Vec::new();
    for n in cluster.nodes() {
        let bpffs = n.lab.mount_bpffs()?;
        let opts = AgentOptions::kube(
            d.agent_bin.to_path_buf(),
            kubeconfig.clone(),
            &n.name,
            bpffs,
        );
        let a = n.lab.start_agent(&opts)?;
        eprintln!("demo: agent of {} (pid {}) started", n.name, a.process.pid);
        agents.push(a);
    }
    for (n, a) in cluster.nodes().iter().zip(&agents) {
        n.lab.wait_agent(a, 0, AGENT_READY)?;
    }

    eprintln!("demo: measuring with the policies enforced");
    let after = cluster.measure_matrix(d.ports, d.family)?;
    (d.show)("After (policies enforced, served by the API)", &after);
    let expected = palisade_policy::matrix(d.model, d.ports, d.family);

    let node_of: BTreeMap<&str, &str> = placement
        .iter()
        .map(|(k, n)| (k.as_str(), n.as_str()))
        .collect();
    let cross = |e: &MatrixEntry| node_of.get(e.from.as_str()) != node_of.get(e.to.as_str());
    let (x_allowed, x_total) = (
        after.iter().filter(|e| cross(e) && e.allowed).count(),
        after.iter().filter(|e| cross(e)).count(),
    );
    eprintln!(
        "demo: {x_total} of {} probes crossed nodes ({x_allowed} allowed, {} denied)",
        after.len(),
        x_total - x_allowed
    );
    drop(api);
    cluster.teardown()?;
    Ok((after, expected))
}

/// `namespace/name` -> node name, round robin over sorted keys.
fn place(pods: &[Pod], nodes: usize) -> BTreeMap<String, String> {
    let mut keys: Vec<String> = pods.iter().map(|p| p.key()).collect();
    keys.sort();
    keys.into_iter()
        .enumerate()
        .map(|(i, k)| (k, format!("node-{}", i % nodes + 1)))
        .collect()
}

fn cluster_spec(
    pods: &[Pod],
    placement: &BTreeMap<String, String>,
    nodes: usize,
    extra_ports: &[ProbePort],
) -> Result<ClusterSpec> {
    let lab = palisade_lab::LabSpec::from_pods("xtask-demo", pods, extra_ports);
    let mut spec = ClusterSpec::new("xtask-demo");
    for k in 0..nodes {
        let name = format!("node-{}", k + 1);
        let mine: Vec<_> = lab
            .pods
            .iter()
            .filter(|p| placement.get(&p.key()) == Some(&name))
            .cloned()
            .collect();
        // The node's "pod CIDRs" are its pods' own addresses: the
        // manifests' addresses follow no per-node blocks.
        let pod_cidrs = mine
            .iter()
            .flat_map(|p| p.ips.iter())
            .map(|ip| Cidr::new(*ip, if ip.is_ipv4() { 32 } else { 128 }))
            .collect();
        spec = spec.node(NodeSpec {
            name,
            pod_cidrs,
            pods: mine,
        });
    }
    if spec.nodes.iter().any(|n| n.pods.is_empty()) {
        bail!(
            "demo: {} pods cannot fill {nodes} nodes; use fewer --nodes",
            pods.len()
        );
    }
    Ok(spec)
}

fn object_key(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or("default"),
        o["metadata"]["name"].as_str().unwrap_or_default()
    )
}

fn with_node(mut pod: Value, node: &str) -> Value {
    pod["spec"]["nodeName"] = Value::from(node);
    pod
}

/// The Namespaces, Pods and NetworkPolicies of the manifests, as JSON, in
/// file order (directories: `*.yaml`, `*.yml`, `*.json`, sorted, hidden
/// entries skipped; `*List` documents contribute their items). Documents
/// that do not parse are left out here: the model load already reported
/// them.
fn read_objects(paths: &[PathBuf]) -> Result<Vec<Value>> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, true, &mut files)?;
    }
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)
            .with_context(|| format!("demo: reading {}", f.display()))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let Ok(v) = serde_json::to_value(
                <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap_or_default(),
            ) else {
                continue;
            };
            let items = match v["kind"].as_str() {
                Some(k) if k.ends_with("List") => {
                    v["items"].as_array().cloned().unwrap_or_default()
                }
                _ => vec![v],
            };
            out.extend(items.into_iter().filter(|o| {
                matches!(
                    o["kind"].as_str(),
                    Some("Namespace" | "Pod" | "NetworkPolicy")
                )
            }));
        }
    }
    Ok(out)
}

fn collect(path: &Path, explicit: bool, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("demo: manifests {}", path.display()))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        entries.sort();
        for e in entries {
            collect(&e, false, out)?;
        }
    } else if explicit
        || matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
    {
        out.push(path.to_path_buf());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_round_robin_over_sorted_keys() {
        let m = palisade_policy::load_str(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: x}\nspec: {nodeName: n}\nstatus: {podIPs: [{ip: 10.0.0.2}]}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec: {nodeName: n}\nstatus: {podIPs: [{ip: 10.0.0.1}]}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: x}\nspec: {nodeName: n}\nstatus: {podIPs: [{ip: 10.0.0.3}]}\n",
            "t.yaml",
        );
        let p = place(&m.pods, 2);
        assert_eq!(p["x/a"], "node-1");
        assert_eq!(p["x/b"], "node-2");
        assert_eq!(p["x/c"], "node-1");
        let spec = cluster_spec(&m.pods, &p, 2, &[]).unwrap();
        spec.validate().unwrap();
        assert!(cluster_spec(&m.pods, &place(&m.pods, 4), 4, &[]).is_err());
    }
}
