//! A multi-node lab: one lab node per node of the placement, joined by an
//! underlay, fed by one fake API server.
//!
//! Each node's pod CIDRs are its pods' own addresses, routed over the
//! underlay (the manifests' addresses follow no per-node blocks). The lab's
//! copy of the manifests (where every lab pod names its node) is served by
//! a fake API server on the first node's underlay address; each node runs
//! `palisade agent --kubeconfig` with a bpffs of its own. Changes come
//! from two sides: clients (kubectl) write to the API server directly, and
//! `sync` serves whatever changed in the copy's files (only the objects
//! whose text changed: an object a client changed or deleted stays so
//! until its file says otherwise).

use crate::cni_scratch::CniScratch;
use crate::objects::{by_key, manifest_files, read_objects, ObjectKey};
use crate::options::Plan;
use anyhow::{bail, Context, Result};
use palisade_fake_apiserver::{FakeApiServer, Kind};
use palisade_lab::{AgentOptions, AgentProcess, Cidr, Cluster, ClusterSpec, CniLayout, NodeSpec};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub struct ManyNodes {
    /// Dropped first: the agents may log its going, nothing more.
    api: FakeApiServer,
    pub cluster: Cluster,
    pub kubeconfig: PathBuf,
    /// The manifests the API server serves.
    pub manifests: PathBuf,
    pub agents: Vec<AgentProcess>,
    served: BTreeMap<ObjectKey, Value>,
    /// The copy's files as last read (path, modified, length).
    seen: Vec<(PathBuf, SystemTime, u64)>,
    // Last: the nodes' teardown (the plugin's DEL) still uses its paths.
    scratch: Option<CniScratch>,
}

impl ManyNodes {
    pub fn up(plan: &Plan, label: &str) -> Result<ManyNodes> {
        let spec = cluster_spec(plan, label)?;
        let scratch = match plan.cni {
            CniLayout::Routed => None,
            _ => Some(CniScratch::new(label, &plan.placement.nodes)?),
        };
        let cni_bin = match &scratch {
            Some(_) => Some(palisade_lab::palisade_cni_bin()?),
            None => None,
        };
        let chain_of = |node: &str| match (&scratch, &cni_bin) {
            (Some(s), Some(bin)) => vec![s.plugin(bin, node)],
            _ => Vec::new(),
        };
        let cluster = Cluster::up_with_chains(&spec, &chain_of)?;

        let hub = &cluster.nodes()[0];
        let manifests = hub.lab.dir().join("manifests");
        crate::objects::write_placed_copy(&plan.manifests, &manifests, &plan.placement)?;
        let at = SocketAddr::new(hub.underlay_v4.into(), 0);
        let api = hub
            .lab
            .run_in_node(|| FakeApiServer::start_at(at))?
            .with_context(|| format!("starting the API server in node {}", hub.name))?;
        let kubeconfig = api.write_kubeconfig(&hub.lab.dir().join("kubeconfig"))?;
        let mut many = ManyNodes {
            api,
            cluster,
            kubeconfig,
            manifests,
            agents: Vec::new(),
            served: BTreeMap::new(),
            seen: Vec::new(),
            scratch,
        };
        many.sync()?;
        eprintln!(
            "lab: fake API server at {} serving {} objects",
            many.api.url(),
            many.served.len()
        );
        Ok(many)
    }

    /// Starts one agent per node and waits until each has programmed its
    /// node.
    pub fn start_agents(&mut self, bin: &Path, ready: Duration) -> Result<()> {
        for n in self.cluster.nodes() {
            let (bpffs, state_dir) = match &mut self.scratch {
                Some(s) => (s.adopt(&n.name, &n.lab)?, s.state_dir(&n.name)),
                None => (
                    n.lab.mount_bpffs()?,
                    crate::one_node::empty_state_dir(&n.lab)?,
                ),
            };
            let mut opts =
                AgentOptions::kube(bin.to_path_buf(), self.kubeconfig.clone(), &n.name, bpffs);
            opts.args = vec!["--cni-state-dir".into(), state_dir.display().to_string()];
            let a = n.lab.start_agent(&opts)?;
            eprintln!("lab: agent of {} (pid {}) started", n.name, a.process.pid);
            self.agents.push(a);
        }
        for (n, a) in self.cluster.nodes().iter().zip(&self.agents) {
            n.lab.wait_agent(a, 0, ready)?;
        }
        Ok(())
    }

    /// Serves what changed in the copy's files since the last call:
    /// new and changed objects are applied, vanished ones deleted.
    /// Returns how many objects changed.
    pub fn sync(&mut self) -> Result<usize> {
        let dirs = [self.manifests.clone()];
        let seen = fingerprint(&manifest_files(&dirs)?);
        if !self.served.is_empty() && seen == self.seen {
            return Ok(0);
        }
        let now = by_key(read_objects(&dirs)?);
        let mut changes = 0;
        for (key, o) in &now {
            if self.served.get(key) != Some(o) {
                self.api
                    .apply(o.clone())
                    .with_context(|| format!("serving {} {}/{}", key.0, key.1, key.2))?;
                changes += 1;
            }
        }
        for (kind, ns, name) in self.served.keys().filter(|k| !now.contains_key(*k)) {
            if let Some(k) = Kind::from_name(kind) {
                self.api.delete(k, ns, name);
                changes += 1;
            }
        }
        self.served = now;
        self.seen = seen;
        Ok(changes)
    }

    pub fn teardown(self) -> Result<()> {
        let ManyNodes {
            api,
            cluster,
            scratch,
            ..
        } = self;
        drop(api);
        let result = cluster.teardown();
        drop(scratch);
        result
    }
}

fn fingerprint(files: &[PathBuf]) -> Vec<(PathBuf, SystemTime, u64)> {
    files
        .iter()
        .filter_map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((f.clone(), m.modified().ok()?, m.len()))
        })
        .collect()
}

fn cluster_spec(plan: &Plan, label: &str) -> Result<ClusterSpec> {
    let lab = palisade_lab::LabSpec::from_pods(label, &plan.pods, &plan.ports);
    let mut spec = ClusterSpec::new(label).cni(plan.cni);
    for name in &plan.placement.nodes {
        let mine: Vec<_> = lab
            .pods
            .iter()
            .filter(|p| plan.placement.node(&p.key()) == Some(name.as_str()))
            .cloned()
            .collect();
        if mine.is_empty() {
            bail!("node {name} has no pod to run");
        }
        // The node's "pod CIDRs" are its pods' own addresses: the
        // manifests' addresses follow no per-node blocks.
        let pod_cidrs = mine
            .iter()
            .flat_map(|p| p.ips.iter())
            .map(|ip| Cidr::new(*ip, if ip.is_ipv4() { 32 } else { 128 }))
            .collect();
        spec = spec.node(NodeSpec {
            name: name.clone(),
            pod_cidrs,
            pods: mine,
        });
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{CniArg, LabOptions};

    #[test]
    fn every_node_gets_its_placed_pods_and_their_addresses() {
        let dir = std::env::temp_dir().join(format!("xtask-cluster-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pod = |name: &str, node: &str, ip: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: x}}\n\
                 spec: {{nodeName: {node}}}\nstatus: {{podIPs: [{{ip: {ip}}}, {{ip: 'fd00::{name}'}}]}}\n"
            )
        };
        let text = [
            pod("a", "n1", "10.0.0.1"),
            pod("b", "n2", "10.0.0.2"),
            pod("c", "n1", "10.0.0.3"),
        ]
        .join("---\n");
        std::fs::write(dir.join("pods.yaml"), text).unwrap();
        let opts = LabOptions {
            manifests: vec![dir.clone()],
            ports: Some("80/TCP".into()),
            nodes: None,
            cni: CniArg::Ptp,
        };
        let plan = Plan::load(&opts, None, "test").unwrap();
        let spec = cluster_spec(&plan, "t").unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.cni, CniLayout::Ptp);
        let names: Vec<&str> = spec.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["n1", "n2"]);
        let keys: Vec<String> = spec.nodes[0].pods.iter().map(|p| p.key()).collect();
        assert_eq!(keys, ["x/a", "x/c"]);
        assert_eq!(spec.nodes[1].pod_cidrs.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
