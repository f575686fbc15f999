//! Two pods on one lab node, `x/client` and `x/server` (echo servers on
//! TCP and UDP 80), and an agent following a manifests directory: the
//! setting in which a policy change is watched reaching established flows
//! (tests/tests/lab_revocation.rs, the `revocation_latency` example).

use crate::kernel::dump;
use anyhow::{bail, Context, Result};
use palisade_lab::{palisade_bin, write_manifest, AgentOptions, AgentProcess, Lab, LabSpec};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const NODE: &str = "node-1";
/// The agent's first round loads and attaches the classifiers.
const AGENT_START: Duration = Duration::from_secs(60);
/// Later rounds are small.
const AGENT_CHANGE: Duration = Duration::from_secs(20);

fn pod(name: &str, ip: &str, ip6: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: x, labels: {{app: {name}}}}}
spec:
  nodeName: {NODE}
  containers:
    - name: c
      ports:
        - {{name: echo-tcp, containerPort: 80}}
        - {{name: echo-udp, containerPort: 80, protocol: UDP}}
status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}, {{ip: '{ip6}'}}]}}
"
    )
}

/// Namespace x with the two pods, dual-stack. The ports are named: the lab
/// serves the named container ports.
pub fn pods() -> String {
    [
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n".to_string(),
        pod("client", "10.244.1.10", "fd00:244:1::10"),
        pod("server", "10.244.1.11", "fd00:244:1::11"),
    ]
    .join("---\n")
}

/// Both pods isolated both ways; nothing allowed.
pub const ISOLATE: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: isolate, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
";

/// The client may reach the server on TCP and UDP 80.
pub const CLIENT_EGRESS: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-egress, namespace: x}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
    - to: [{podSelector: {matchLabels: {app: server}}}]
      ports: [{port: 80}, {port: 80, protocol: UDP}]
";

/// The server admits the client on TCP and UDP 80.
pub const SERVER_INGRESS: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-ingress, namespace: x}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: client}}}]
      ports: [{port: 80}, {port: 80, protocol: UDP}]
";

/// The policies `parts` in one file.
pub fn policies(parts: &[&str]) -> String {
    parts.join("---\n")
}

/// One policy change as the pods saw it.
#[derive(Clone, Copy, Debug)]
pub struct Change {
    /// The new policy file was in place.
    pub written: Instant,
    /// The agent's round that read it had been seen complete: every packet
    /// after this is decided by the new policy.
    pub enforced: Instant,
}

/// The lab and its agent; both removed on drop (the lab stops the agent).
pub struct Node {
    pub lab: Lab,
    pub agent: AgentProcess,
    policies: PathBuf,
    pins: PathBuf,
}

impl Node {
    /// The two pods with `policies` enforced.
    pub fn up(label: &str, policies: &str) -> Result<Node> {
        Node::up_polling(label, policies, None)
    }

    /// As `up`, the agent looking for manifest changes every `poll`
    /// (`--poll-ms`; `None`: the lab's default).
    pub fn up_polling(label: &str, policies: &str, poll: Option<Duration>) -> Result<Node> {
        let model = palisade_policy::load_str(&pods(), "pods.yaml");
        if !model.errors.is_empty() {
            bail!("pods.yaml: {:?}", model.errors);
        }
        let lab = Lab::up(&LabSpec::from_pods(label, &model.pods, &[]))?;
        let manifests = lab.dir().join("manifests");
        std::fs::create_dir(&manifests)?;
        write_manifest(&manifests.join("pods.yaml"), &pods())?;
        let policies_file = manifests.join("policies.yaml");
        write_manifest(&policies_file, policies)?;
        let bpffs = lab.mount_bpffs()?;
        let mut opts = AgentOptions::new(palisade_bin()?, vec![manifests], NODE, bpffs.clone());
        opts.poll = poll.unwrap_or(opts.poll);
        let agent = lab.start_agent(&opts)?;
        lab.wait_agent(&agent, 0, AGENT_START)?;
        Ok(Node {
            lab,
            agent,
            policies: policies_file,
            pins: crate::kernel::pins(&bpffs, NODE),
        })
    }

    /// Replaces the policies with `text` and waits until the agent has
    /// enforced them and settled. The round is watched every millisecond;
    /// if more than one round ran (one may have read the directory just
    /// before the rename), `enforced` is when the last was seen settled.
    pub fn change(&self, text: &str) -> Result<Change> {
        let before = self.agent.rounds();
        write_manifest(&self.policies, text)?;
        let written = Instant::now();
        let end = written + AGENT_CHANGE;
        while self.agent.rounds() == before {
            if Instant::now() >= end {
                bail!("no agent round after the change:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut enforced = Instant::now();
        let seen = self.agent.rounds();
        if self.lab.wait_agent(&self.agent, before, AGENT_CHANGE)? != seen {
            enforced = Instant::now();
        }
        Ok(Change { written, enforced })
    }

    /// The pod's `ENDPOINTS` record as bpftool prints it (BTF field names).
    pub fn endpoint(&self, pod: &str) -> Result<Value> {
        let ifindex = u64::from(self.lab.host_ifindex(pod)?);
        dump(&self.pins.join("ENDPOINTS"))
            .into_iter()
            .find(|e| e["key"].as_u64() == Some(ifindex))
            .map(|e| e["value"].clone())
            .with_context(|| format!("no ENDPOINTS record for {pod} (ifindex {ifindex})"))
    }

    pub fn log(&self) -> String {
        self.lab.log(&self.agent.process)
    }
}
