//! A two-node cluster for end-to-end tests: the upstream e2e topology
//! (namespaces x, y, z with pods a, b, c) spread over two lab nodes joined
//! by an underlay, one fake API server reachable from both node
//! namespaces, and one `palisade agent --kubeconfig` per node with a
//! private bpffs of its node's own.

use palisade_fake_apiserver::FakeApiServer;
use palisade_lab::{
    AgentOptions, AgentProcess, Cluster, ClusterSpec, Family, NodeSpec, ProbePort, Protocol,
};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The two node names.
pub const NODES: [&str; 2] = ["node-a", "node-b"];

/// Where each pod runs and its host number in its node's pod CIDRs: every
/// namespace has pods on both nodes, so each selector case has a local and
/// a remote peer.
pub const PLACEMENT: [(&str, &str, usize, u16); 9] = [
    ("x", "a", 0, 10),
    ("x", "b", 1, 11),
    ("x", "c", 0, 12),
    ("y", "a", 1, 20),
    ("y", "b", 0, 21),
    ("y", "c", 1, 22),
    ("z", "a", 0, 30),
    ("z", "b", 1, 31),
    ("z", "c", 0, 32),
];

/// Served by every pod.
pub const SERVED: [ProbePort; 2] = [
    ProbePort {
        port: 80,
        protocol: Protocol::Tcp,
    },
    ProbePort {
        port: 81,
        protocol: Protocol::Tcp,
    },
];

/// Where an agent serves /readyz and /metrics, inside its node namespace
/// (each node has its own loopback, so the same port never clashes).
pub const METRICS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

/// How long an agent gets to program a change (or its first round).
pub const SETTLE: Duration = Duration::from_secs(30);

/// The cluster, its API server and its agents. Field order is drop
/// order: the server goes first, then the lab nodes kill the agents and
/// remove namespaces and mounts.
pub struct TwoNodes {
    pub api: FakeApiServer,
    pub agents: Vec<AgentProcess>,
    pub opts: Vec<AgentOptions>,
    pub cluster: Cluster,
}

/// The cluster spec: both nodes with their pods, dual-stack.
pub fn spec(label: &str) -> ClusterSpec {
    let mut nodes: Vec<NodeSpec> = NODES
        .iter()
        .enumerate()
        .map(|(k, n)| NodeSpec::new(n, k))
        .collect();
    for (ns, name, k, host) in PLACEMENT {
        let ips = [
            nodes[k].addr(Family::V4, host).unwrap(),
            nodes[k].addr(Family::V6, host).unwrap(),
        ];
        nodes[k] = nodes[k].clone().pod(ns, name, &ips, &SERVED);
    }
    nodes
        .into_iter()
        .fold(ClusterSpec::new(label), |c, n| c.node(n))
}

pub fn namespace(name: &str, extra: &[(&str, &str)]) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert("ns".into(), json!(name));
    for (k, v) in extra {
        labels.insert((*k).into(), json!(v));
    }
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": labels}})
}

/// The Pod object of a lab pod, with `spec.nodeName`, container ports and
/// both addresses.
pub fn pod_object(cluster: &Cluster, key: &str, extra: &[(&str, &str)]) -> Value {
    let (ns, name) = key.split_once('/').expect("namespace/name");
    let node = cluster.node_of(key).unwrap();
    let ips: Vec<String> = cluster
        .pod(key)
        .unwrap()
        .spec
        .ips
        .iter()
        .map(|i| i.to_string())
        .collect();
    let mut labels = serde_json::Map::new();
    labels.insert("pod".into(), json!(name));
    for (k, v) in extra {
        labels.insert((*k).into(), json!(v));
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node.name, "containers": [{"name": "srv", "image": "srv",
                 "ports": [{"name": "http", "containerPort": 80},
                           {"name": "alt", "containerPort": 81}]}]},
        "status": {"phase": "Running", "podIP": ips[0],
                   "podIPs": ips.iter().map(|i| json!({"ip": i})).collect::<Vec<_>>()},
    })
}

/// An API server on the first node's underlay address (local to its
/// agent, one hop away for the others'), and the kubeconfig to reach it.
pub fn api_server(cluster: &Cluster) -> (FakeApiServer, std::path::PathBuf) {
    let hub = &cluster.nodes()[0];
    let at = SocketAddr::new(hub.underlay_v4.into(), 0);
    let api = hub
        .lab
        .run_in_node(|| FakeApiServer::start_at(at))
        .unwrap()
        .unwrap();
    let kubeconfig = api
        .write_kubeconfig(&hub.lab.dir().join("kubeconfig"))
        .unwrap();
    (api, kubeconfig)
}

impl TwoNodes {
    /// Brings the cluster up, serves its namespaces and pods, starts both
    /// agents and waits until each is ready and has programmed its pods.
    pub fn up(label: &str) -> TwoNodes {
        let cluster = Cluster::up(&spec(label)).unwrap_or_else(|e| panic!("{e:#}"));
        let (api, kubeconfig) = api_server(&cluster);
        for ns in ["x", "y", "z"] {
            api.apply(namespace(ns, &[])).unwrap();
        }
        for (ns, name, _, _) in PLACEMENT {
            api.apply(pod_object(&cluster, &format!("{ns}/{name}"), &[]))
                .unwrap();
        }
        let mut env = TwoNodes {
            api,
            agents: Vec::new(),
            opts: Vec::new(),
            cluster,
        };
        let bin = palisade_lab::palisade_bin().unwrap_or_else(|e| panic!("{e:#}"));
        for node in env.cluster.nodes() {
            let bpffs = node.lab.mount_bpffs().unwrap();
            let mut o = AgentOptions::kube(bin.clone(), kubeconfig.clone(), &node.name, bpffs);
            o.metrics_addr = Some(METRICS);
            o.env.push(("RUST_LOG".into(), "info".into()));
            env.opts.push(o);
        }
        for k in 0..NODES.len() {
            let a = env.start_agent(k);
            env.agents.push(a);
        }
        for k in 0..NODES.len() {
            env.wait_ready(k);
        }
        env
    }

    /// Starts node `k`'s agent (again: same options, same pins).
    pub fn start_agent(&self, k: usize) -> AgentProcess {
        self.cluster.nodes()[k]
            .lab
            .start_agent(&self.opts[k])
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Waits until agent `k` answers /readyz 200, has programmed every
    /// local pod (`palisade_pods_enforced`) and has settled.
    pub fn wait_ready(&self, k: usize) {
        let node = &self.cluster.nodes()[k];
        let local = node.lab.pods().len() as f64;
        let end = Instant::now() + SETTLE;
        loop {
            let ready = self.get(k, "/readyz").is_some_and(|(c, _)| c == 200);
            if ready && self.metric(k, "palisade_pods_enforced") == Some(local) {
                break;
            }
            assert!(
                Instant::now() < end,
                "agent of {} not ready with {local} pods within {SETTLE:?}; log:\n{}",
                node.name,
                self.log(k)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        node.lab
            .wait_agent(&self.agents[k], 0, SETTLE)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Makes a change through the API and waits until both agents have
    /// programmed a round after it and gone quiet.
    pub fn change(&self, f: impl FnOnce(&FakeApiServer)) {
        let before: Vec<u64> = self.agents.iter().map(|a| a.rounds()).collect();
        f(&self.api);
        self.settle(&before);
    }

    /// Waits until every agent did a round after `before` and went quiet.
    pub fn settle(&self, before: &[u64]) {
        for (k, (a, b)) in self.agents.iter().zip(before).enumerate() {
            self.cluster.nodes()[k]
                .lab
                .wait_agent(a, *b, SETTLE)
                .unwrap_or_else(|e| panic!("{e:#}"));
        }
    }

    /// Waits until every agent has gone quiet (no round for a few polling
    /// periods): whatever each read last is enforced.
    pub fn quiet(&self) {
        let before: Vec<u64> = self
            .agents
            .iter()
            .map(|a| a.rounds().saturating_sub(1))
            .collect();
        self.settle(&before);
    }

    /// Stops the agents and removes everything, reporting teardown errors
    /// (dropping does the same but can only print them).
    pub fn cluster_teardown(self) {
        drop(self.api);
        self.cluster
            .teardown()
            .unwrap_or_else(|e| panic!("teardown: {e:#}"));
    }

    /// What agent `k` logged so far.
    pub fn log(&self, k: usize) -> String {
        self.cluster.nodes()[k].lab.log(&self.agents[k].process)
    }

    fn logs(&self) -> String {
        (0..self.agents.len())
            .map(|k| format!("--- agent of {}:\n{}", NODES[k], self.log(k)))
            .collect()
    }

    /// One HTTP GET to agent `k`'s metrics server, from inside its node.
    pub fn get(&self, k: usize, path: &str) -> Option<(u16, String)> {
        self.cluster.nodes()[k]
            .lab
            .run_in_node(|| http_get(METRICS, path))
            .ok()
            .flatten()
    }

    /// A sample of agent `k`'s /metrics (exact name with labels).
    pub fn metric(&self, k: usize, sample: &str) -> Option<f64> {
        let (code, body) = self.get(k, "/metrics")?;
        (code == 200).then_some(())?;
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .find(|(name, _)| *name == sample)
            .and_then(|(_, v)| v.parse().ok())
    }

    /// One TCP probe from pod `from` to pod `to`; whether it connected.
    pub fn reach(&self, from: &str, to: &str, family: Family, port: u16) -> bool {
        self.cluster
            .probe(from, to, family, port, Protocol::Tcp)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Asserts the verdict of one probe now (no retry).
    #[track_caller]
    pub fn expect(&self, from: &str, to: &str, port: u16, allowed: bool) {
        self.expect_family(from, to, Family::V4, port, allowed);
    }

    #[track_caller]
    pub fn expect_family(&self, from: &str, to: &str, family: Family, port: u16, allowed: bool) {
        let got = self.reach(from, to, family, port);
        // A drop is a timeout: a loaded host may stall an allowed answer
        // once, never invent one, so an unexpected "denied" gets a second
        // look before it counts.
        let got = got || (allowed && self.reach(from, to, family, port));
        assert_eq!(
            got,
            allowed,
            "{from} -> {to} {port}/TCP {family:?}: expected {}, measured {}\n{}",
            verdict(allowed),
            verdict(got),
            self.logs()
        );
    }
}

fn verdict(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "denied"
    }
}

/// One HTTP/1.1 GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(c, "GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n").ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}
