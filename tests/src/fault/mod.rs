//! The fault suite's setting (`tests/tests/faults*.rs`): one lab node with
//! three pods in namespace `x` (`client`, `other`, `server`, each serving
//! TCP 80), a fake API server inside the node's namespace, and agents
//! started with `--kubeconfig` on it, as a DaemonSet runs them. The policy
//! isolates every pod for ingress and lets only `client` reach `server` on
//! TCP 80; two probe streams run while a fault happens (`streams`), and
//! what an operator would have seen is collected beside them (`operator`).
//!
//! Everything (namespaces, mounts, agents, the API server) goes on drop,
//! also when an assertion fails.

pub mod disk;
pub mod fill;
pub mod operator;
pub mod pins;
pub mod streams;

use anyhow::Result;
use palisade_fake_apiserver::FakeApiServer;
use palisade_lab::{palisade_bin, AgentOptions, AgentProcess, Lab, LabSpec};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use operator::{row, Operator};
pub use streams::{during, Live, Tally};

pub const NODE: &str = "node-1";
pub const CLIENT: &str = "x/client";
pub const OTHER: &str = "x/other";
pub const SERVER: &str = "x/server";
const PODS: [(&str, &str); 3] = [
    ("client", "10.244.1.10"),
    ("server", "10.244.1.11"),
    ("other", "10.244.1.12"),
];

/// Where the first agent serves its probes and metrics (node namespace).
pub const METRICS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);
/// A first round loads and attaches the classifiers.
pub const AGENT_START: Duration = Duration::from_secs(60);
/// Later rounds are small.
pub const AGENT_CHANGE: Duration = Duration::from_secs(30);

/// A Running pod of namespace `x` on `NODE` serving TCP 80 (named, so
/// that the lab serves it).
pub fn pod(name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "x", "labels": {"app": name}},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "x",
                 "ports": [{"name": "http", "containerPort": 80}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

/// Every pod of `x` isolated for ingress, nothing allowed.
pub fn isolate() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "isolate", "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    })
}

/// `server` admits `client` on TCP 80; with `extra`, also
/// 198.51.100.0/24 on 8080: other maps, same verdicts for the streams
/// (a policy change that flips the server's generation).
pub fn server_ingress(extra: bool) -> Value {
    let mut rules = vec![json!({
        "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
        "ports": [{"protocol": "TCP", "port": 80}],
    })];
    if extra {
        rules.push(json!({
            "from": [{"ipBlock": {"cidr": "198.51.100.0/24"}}],
            "ports": [{"protocol": "TCP", "port": 8080}],
        }));
    }
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "server-ingress", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "server"}}, "ingress": rules},
    })
}

/// The pods of `objects()` as the lab wires them.
fn model_pods() -> Vec<palisade_policy::Pod> {
    let text: Vec<String> = objects()
        .iter()
        .map(|o| serde_yaml::to_string(o).unwrap())
        .collect();
    let model = palisade_policy::load_str(&text.join("---\n"), "objects.yaml");
    assert!(model.errors.is_empty(), "{:?}", model.errors);
    model.pods
}

/// The namespace, the pods and the policies, in the order they are applied.
pub fn objects() -> Vec<Value> {
    let mut out = vec![json!({"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": "x", "labels": {"ns": "x"}}})];
    out.extend(PODS.iter().map(|(n, ip)| pod(n, ip)));
    out.push(isolate());
    out.push(server_ingress(false));
    out
}

/// The lab node, its API server and bpffs.
pub struct FaultNode {
    /// Dropped first: the agents then only see the API go away.
    pub api: FakeApiServer,
    pub kubeconfig: PathBuf,
    pub bpffs: PathBuf,
    pub lab: Lab,
    /// With the chained CNI plugin (`up_chained`): the run directory the
    /// plugin and the agent share, and the scratch directory of the bpffs
    /// (unmounted after the lab is gone).
    pub run: Option<disk::Tmpfs>,
    _scratch: Option<crate::kernel::Scratch>,
}

impl FaultNode {
    /// The pods wired (routed layout), the API server serving them and
    /// the policies; no agent yet.
    pub fn up(label: &str) -> FaultNode {
        let (lab, bpffs) = {
            let spec = LabSpec::from_pods(label, &model_pods(), &[]);
            let lab = Lab::up(&spec).expect("lab up");
            let bpffs = lab.mount_bpffs().expect("bpffs");
            (lab, bpffs)
        };
        FaultNode::serve(lab, bpffs, None, None)
    }

    /// The pods wired by the `bridge` plugin with `palisade-cni` chained
    /// (held from their creation, found by the agent from the plugin's
    /// records), the plugin's records and the agent's verdict socket on a
    /// small tmpfs standing for `/run/palisade` (`run`).
    pub fn up_chained(label: &str) -> FaultNode {
        let scratch = crate::kernel::Scratch::new(label);
        let run = disk::Tmpfs::mount(&scratch.dir().join("run"));
        let plugin = palisade_lab::ChainedPlugin::new(
            palisade_lab::palisade_cni_bin().expect("palisade-cni"),
        )
        .with("stateDir", run.dir().join("cni").to_str().unwrap().into())
        .with("bpffsRoot", scratch.bpffs().to_str().unwrap().into())
        .with("nodeName", NODE.into());
        let range = palisade_lab::IpamRange {
            subnet: palisade_lab::Cidr::new(std::net::IpAddr::from([10, 244, 1, 0]), 24),
            gateway: std::net::IpAddr::from([10, 244, 1, 254]),
        };
        let spec = LabSpec::from_pods(label, &model_pods(), &[])
            .ipam_range(range)
            .cni(palisade_lab::CniLayout::Bridge)
            .chain(vec![plugin]);
        let lab = Lab::up(&spec).expect("lab up");
        let bpffs = scratch.bpffs();
        FaultNode::serve(lab, bpffs, Some(run), Some(scratch))
    }

    /// The API server in the node's namespace, serving `objects()`.
    fn serve(
        lab: Lab,
        bpffs: PathBuf,
        run: Option<disk::Tmpfs>,
        scratch: Option<crate::kernel::Scratch>,
    ) -> FaultNode {
        // Its socket lives in the node's namespace, where the agents run.
        let api = lab
            .run_in_node(FakeApiServer::start)
            .expect("node namespace")
            .expect("fake API server");
        let kubeconfig = api
            .write_kubeconfig(&lab.dir().join("kubeconfig"))
            .expect("kubeconfig");
        for o in objects() {
            api.apply(o).expect("apply");
        }
        FaultNode {
            api,
            kubeconfig,
            bpffs,
            lab,
            run,
            _scratch: scratch,
        }
    }

    /// Options of an agent for `NODE` on this API server and bpffs, with
    /// its probes on `METRICS` and its log at info level.
    pub fn options(&self) -> AgentOptions {
        let bin = palisade_bin().expect("the palisade binary");
        let mut o = AgentOptions::kube(bin, self.kubeconfig.clone(), NODE, self.bpffs.clone());
        o.metrics_addr = Some(METRICS);
        o.env.push(("RUST_LOG".into(), "info".into()));
        if let Some(run) = &self.run {
            let dir = |name: &str| run.dir().join(name).display().to_string();
            o.args = vec![
                "--cni-state-dir".into(),
                dir("cni"),
                "--monitor-socket".into(),
                dir("monitor.sock"),
            ];
        }
        o
    }

    pub fn start(&self, opts: &AgentOptions) -> AgentProcess {
        self.lab.start_agent(opts).expect("start the agent")
    }

    /// Starts an agent with `opts` and waits until it has enforced.
    pub fn start_enforcing(&self, opts: &AgentOptions) -> AgentProcess {
        let agent = self.start(opts);
        self.wait_round(&agent, 0, AGENT_START);
        agent
    }

    /// Waits until `agent` completed a round after `after` and settled;
    /// panics with its log if not within `limit`.
    #[track_caller]
    pub fn wait_round(&self, agent: &AgentProcess, after: u64, limit: Duration) -> u64 {
        self.lab
            .wait_agent(agent, after, limit)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&self, agent: &AgentProcess) {
        self.lab.signal(&agent.process, libc::SIGKILL).unwrap();
        self.wait_exit(agent, Duration::from_secs(10));
    }

    /// SIGTERM (a clean stop, as on a rolling update), and waits.
    pub fn stop(&self, agent: &AgentProcess) {
        self.lab.signal(&agent.process, libc::SIGTERM).unwrap();
        self.wait_exit(agent, Duration::from_secs(10));
    }

    /// Waits up to `limit` for the agent to exit; its status.
    #[track_caller]
    pub fn wait_exit(&self, agent: &AgentProcess, limit: Duration) -> std::process::ExitStatus {
        self.lab
            .wait_exit(&agent.process, limit)
            .unwrap()
            .unwrap_or_else(|| {
                panic!(
                    "the agent did not exit within {limit:?}; its log:\n{}",
                    self.log(agent)
                )
            })
    }

    /// The agent's log without terminal colors.
    pub fn log(&self, agent: &AgentProcess) -> String {
        operator::strip_colors(&self.lab.log(&agent.process))
    }

    /// Waits (up to `limit`) for a line with `needle` in the agent's log;
    /// panics with the log if none comes.
    #[track_caller]
    pub fn wait_log(&self, agent: &AgentProcess, needle: &str, limit: Duration) {
        let found = crate::kernel::poll_until(limit, || self.log(agent).contains(needle));
        assert!(
            found,
            "no {needle:?} within {limit:?} in the agent's log:\n{}",
            self.log(agent)
        );
    }

    /// The server's record now (it exists once an agent has enforced).
    #[track_caller]
    pub fn server_record(&self) -> palisade_common::Endpoint {
        let ifindex = self.lab.host_ifindex(SERVER).unwrap();
        pins::endpoint(self, ifindex).expect("the server's record")
    }

    /// Waits until a change of the server's policy is programmed (its
    /// epoch moves on from `before`'s); panics with `agent`'s log if not.
    #[track_caller]
    pub fn wait_server_change(
        &self,
        agent: &AgentProcess,
        before: &palisade_common::Endpoint,
        limit: Duration,
    ) {
        let ifindex = self.lab.host_ifindex(SERVER).unwrap();
        assert!(
            pins::wait_new_epoch(self, ifindex, before.epoch, limit),
            "the server's policy change was not programmed within {limit:?}; agent log:\n{}",
            self.log(agent)
        );
    }

    /// One GET to an agent's HTTP server in the node namespace.
    pub fn get(&self, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
        self.lab
            .run_in_node(|| crate::cluster::http_get(addr, path))
            .ok()
            .flatten()
    }

    /// Replaces `server-ingress` (a generation flip of the server).
    pub fn flip_server_policy(&self, extra: bool) -> Result<u64> {
        self.api.apply(server_ingress(extra))
    }

    /// The pinned maps of this node's layout.
    pub fn pins(&self) -> PathBuf {
        crate::kernel::pins(&self.bpffs, NODE)
    }
}
