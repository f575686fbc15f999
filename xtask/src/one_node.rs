//! A one-node lab: every pod in one node namespace, one agent reading the
//! lab's copy of the manifests (`objects::write_placed_copy`).

use crate::cni_scratch::CniScratch;
use crate::options::Plan;
use anyhow::{Context, Result};
use palisade_lab::{AgentOptions, AgentProcess, CniLayout, Lab, LabSpec};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct OneNode {
    pub node: String,
    pub lab: Lab,
    /// The manifests the agent reads.
    pub manifests: PathBuf,
    pub agent: Option<AgentProcess>,
    // Last: the lab's teardown (the plugin's DEL) still uses its paths.
    scratch: Option<CniScratch>,
}

impl OneNode {
    pub fn up(plan: &Plan, label: &str) -> Result<OneNode> {
        let node = plan.placement.nodes[0].clone();
        let mut spec = LabSpec::from_pods(label, &plan.pods, &plan.ports).cni(plan.cni);
        let scratch = if plan.cni == CniLayout::Routed {
            None
        } else {
            let s = CniScratch::new(label, std::slice::from_ref(&node))?;
            spec = spec.chain(vec![s.plugin(&palisade_lab::palisade_cni_bin()?, &node)]);
            Some(s)
        };
        let lab = Lab::up(&spec).with_context(|| format!("bringing up node {node}"))?;
        let manifests = lab.dir().join("manifests");
        crate::objects::write_placed_copy(&plan.manifests, &manifests, &plan.placement)?;
        Ok(OneNode {
            node,
            lab,
            manifests,
            agent: None,
            scratch,
        })
    }

    /// Starts the agent and waits until it has programmed the node.
    pub fn start_agent(&mut self, bin: &Path, ready: Duration) -> Result<()> {
        let (bpffs, state_dir) = match &mut self.scratch {
            Some(s) => (s.adopt(&self.node, &self.lab)?, s.state_dir(&self.node)),
            None => (self.lab.mount_bpffs()?, empty_state_dir(&self.lab)?),
        };
        let mut opts = AgentOptions::new(
            bin.to_path_buf(),
            vec![self.manifests.clone()],
            &self.node,
            bpffs,
        );
        opts.args = vec!["--cni-state-dir".into(), state_dir.display().to_string()];
        let agent = self.lab.start_agent(&opts)?;
        eprintln!(
            "lab: agent of {} (pid {}) started",
            self.node, agent.process.pid
        );
        self.lab.wait_agent(&agent, 0, ready)?;
        self.agent = Some(agent);
        Ok(())
    }

    pub fn teardown(self) -> Result<()> {
        let OneNode { lab, scratch, .. } = self;
        let result = lab.teardown();
        drop(scratch);
        result
    }
}

/// Without a chained plugin the agent still reads plugin records, by
/// default from the host's own state directory, whose interface numbers
/// mean nothing in the lab (or worse, name lab interfaces): give it an
/// empty directory of the lab's.
pub fn empty_state_dir(lab: &Lab) -> Result<PathBuf> {
    let dir = lab.dir().join("cni-state-empty");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
