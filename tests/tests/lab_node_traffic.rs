//! End to end on real traffic: what a real node does besides pod-to-pod
//! traffic. Kubelet-style probes from the node reach pods that deny all
//! ingress, pods reach their node, and a Pending pod (init containers
//! running) is enforced by its policy rather than held pending; in each
//! CNI layout (routed, and the reference `ptp` and `bridge` plugins with
//! `palisade-cni` chained).
//!
//! Needs the `palisade` binary: `$PALISADE_BIN`, else target/debug/palisade.

use palisade_lab::{
    palisade_bin, write_manifest, AgentOptions, AgentProcess, CniLayout, Family, Lab, LabSpec,
    Protocol, PROBE_TIMEOUT,
};
use palisade_tests::kernel::Scratch;
use palisade_tests::lab::{wired, PORTS};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

const AGENT_START: Duration = Duration::from_secs(60);
/// The lab node's own address (`uplink0`, see docs/lab.md).
const NODE_ADDR: &str = "192.0.2.1";

fn pod(name: &str, phase: &str, v4: &str, v6: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: x, labels: {{pod: {name}}}}}
spec:
  nodeName: node-1
  containers:
    - name: c
      ports:
        - {{name: serve-80-tcp, containerPort: 80}}
        - {{name: serve-81-tcp, containerPort: 81}}
        - {{name: serve-80-udp, containerPort: 80, protocol: UDP}}
        - {{name: serve-80-sctp, containerPort: 80, protocol: SCTP}}
status: {{phase: {phase}, podIP: {v4}, podIPs: [{{ip: {v4}}}, {{ip: '{v6}'}}]}}
"
    )
}

/// Pods x/a (Running), x/b (Pending: init containers) and x/c (Running).
fn pods() -> String {
    [
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n".to_string(),
        pod("a", "Running", "10.244.1.10", "fd00:10:244::110"),
        pod("b", "Pending", "10.244.1.11", "fd00:10:244::111"),
        pod("c", "Running", "10.244.1.12", "fd00:10:244::112"),
    ]
    .join("---\n")
}

/// A lab with `pods()` wired by a CNI layout, and an agent enforcing
/// `policies`. Field order is drop order: the lab, then the bpffs.
struct Node {
    lab: Lab,
    agent: AgentProcess,
    manifests: std::path::PathBuf,
    _scratch: Scratch,
}

impl Node {
    fn up(label: &str, layout: CniLayout, policies: &str) -> Node {
        let scratch = Scratch::new(label);
        let dir = scratch.dir().join("pending-manifests");
        std::fs::create_dir_all(&dir).unwrap();
        write_manifest(&dir.join("pods.yaml"), &pods()).unwrap();
        write_manifest(&dir.join("policies.yaml"), policies).unwrap();
        let model = palisade_policy::load_paths(std::slice::from_ref(&dir));
        assert!(model.errors.is_empty(), "{:?}", model.errors);
        let spec = LabSpec::from_pods(label, &model.pods, &PORTS);
        let (spec, args) = wired(spec, layout, &scratch, "node-1");
        let lab = Lab::up(&spec).expect("lab up");
        let manifests = lab.dir().join("manifests");
        std::fs::rename(&dir, &manifests).unwrap();
        let mut opts = AgentOptions::new(
            palisade_bin().unwrap(),
            vec![manifests.clone()],
            "node-1",
            scratch.bpffs(),
        );
        opts.args = args;
        let agent = lab.start_agent(&opts).unwrap();
        lab.wait_agent(&agent, 0, AGENT_START).unwrap();
        Node {
            lab,
            agent,
            manifests,
            _scratch: scratch,
        }
    }

    fn probe(&self, from: &str, to: &str, port: u16, protocol: Protocol) -> bool {
        let ip = self.lab.ip(to, Family::V4).unwrap();
        self.lab
            .probe(from, ip, port, protocol, PROBE_TIMEOUT)
            .unwrap()
    }

    fn log(&self) -> String {
        self.lab.log(&self.agent.process)
    }
}

/// Connects to `addr` and has one byte echoed back; what failed, if any.
fn echo(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"k")
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)
        .map_err(|e| format!("echo from {addr}: {e}"))?;
    Ok(())
}

const DENY_ALL: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
";

/// Kubelet-style probes and pod-to-node traffic under deny-all, in a
/// layout: the node's address the pods see is the uplink's (routed), the
/// bridge's gateway (bridge) or the host veth's gateway (ptp).
fn node_probes(layout: CniLayout) {
    let node = Node::up(&format!("lab_node_probes_{layout}"), layout, DENY_ALL);
    // Pod-to-pod is refused both ways: the policy is in force.
    assert!(!node.probe("x/a", "x/c", 80, Protocol::Tcp), "a -> c");
    // Kubelet-style probes from the node, to a Running and a Pending pod.
    for pod in ["x/a", "x/b", "x/c"] {
        let ip = node.lab.ip(pod, Family::V4).unwrap();
        for port in [80, 81] {
            let got = node.lab.run_in_node(|| echo((ip, port).into())).unwrap();
            assert!(got.is_ok(), "node -> {pod}:{port}: {got:?}\n{}", node.log());
        }
    }
    // A pod opening a connection to its node (a node-local agent, say).
    let listener = node
        .lab
        .run_in_node(|| TcpListener::bind(("0.0.0.0", 0)).unwrap())
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        c.write_all(&b).unwrap();
    });
    let to: IpAddr = NODE_ADDR.parse().unwrap();
    let got = node
        .lab
        .run_in_pod("x/a", || echo((to, port).into()))
        .unwrap();
    assert!(got.is_ok(), "x/a -> node: {got:?}\n{}", node.log());
    server.join().unwrap();
}

const ONLY_A_TO_B_80: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
    - from: [{podSelector: {matchLabels: {pod: a}}}]
      ports: [{port: 80}]
";

#[test]
fn node_probes_reach_pods_that_deny_all_and_pods_reach_their_node_routed() {
    node_probes(CniLayout::Routed);
}

#[test]
fn node_probes_reach_pods_that_deny_all_and_pods_reach_their_node_ptp() {
    node_probes(CniLayout::Ptp);
}

#[test]
fn node_probes_reach_pods_that_deny_all_and_pods_reach_their_node_bridge() {
    node_probes(CniLayout::Bridge);
}

/// A Pending pod (init containers running) follows its policy.
fn pending_pod(layout: CniLayout) {
    let node = Node::up(&format!("lab_pending_pod_{layout}"), layout, ONLY_A_TO_B_80);
    let model = palisade_policy::load_paths(std::slice::from_ref(&node.manifests));
    for family in [Family::V4, Family::V6] {
        let measured = node.lab.measure_matrix(&PORTS, family).unwrap();
        let expected = palisade_policy::matrix(&model, &PORTS, family);
        let diff = palisade_lab::diff(&measured, &expected);
        assert!(diff.is_empty(), "{family:?}: {diff:?}\n{}", node.log());
    }
    // What the matrix says, spelled out: the Pending pod is reachable as
    // its policy allows, refused otherwise, and its own traffic flows.
    assert!(node.probe("x/a", "x/b", 80, Protocol::Tcp));
    assert!(!node.probe("x/a", "x/b", 81, Protocol::Tcp));
    assert!(!node.probe("x/c", "x/b", 80, Protocol::Tcp));
    assert!(node.probe("x/b", "x/a", 80, Protocol::Tcp));
}

#[test]
fn a_pending_pod_is_enforced_by_its_policy_not_held_routed() {
    pending_pod(CniLayout::Routed);
}

#[test]
fn a_pending_pod_is_enforced_by_its_policy_not_held_ptp() {
    pending_pod(CniLayout::Ptp);
}

#[test]
fn a_pending_pod_is_enforced_by_its_policy_not_held_bridge() {
    pending_pod(CniLayout::Bridge);
}
