//! End to end: Service ClusterIP traffic (TCP, UDP, SCTP; IPv4 and IPv6)
//! on a lab node and across two. The agent runs from manifests holding
//! pods, a Service and policies; every node DNATs the
//! ClusterIP to the Service's backends as kube-proxy does
//! (`palisade_lab::service_rules`, `Lab::install_kube_proxy`). Policies
//! never name the ClusterIP: a connection to it is allowed exactly when the
//! policy oracle allows client -> the backend DNAT picked. Which backend
//! DNAT picked is read from the emulation's per-backend counters, so every
//! probe is checked against the oracle on its own post-DNAT tuple.
//!
//! Needs the `palisade` binary: `$PALISADE_BIN`, else target/debug/palisade
//! (`cargo xtask build`). The lab (namespaces, agent, bpffs, nftables) is
//! removed on drop, also when an assertion fails.

use palisade_lab::{
    palisade_bin, service_rules, write_manifest, AgentOptions, AgentProcess, Cluster, ClusterNode,
    ClusterSpec, Family, LabSpec, Masquerade, NodeSpec, Overlay, PodServer, ProbePort, Protocol,
    ServiceRule, UNDERLAY,
};
use palisade_policy::{evaluate, Flow, Model};
use palisade_tests::services::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[test]
fn services_cluster_ip_same_node() {
    let env = ServiceNode::up("services_same_node");

    // Allowed both ways: the client reaches the Service through its
    // isolated ingress (only replies pass it).
    let model = env.set_policies(&format!(
        "{}{}",
        client_policy("{app: web}"),
        web_policy("{app: client}")
    ));
    expect_all(&env.check(&model, "svc/client", 2), true, "allowed");
    // The client's ingress is isolated for real: a backend cannot open a
    // connection to it.
    let client_ip = env.lab.ip("svc/client", Family::V4).unwrap();
    let direct = Flow {
        src: env.lab.ip("svc/web-a", Family::V4).unwrap(),
        dst: client_ip,
        proto: Protocol::Udp.number(),
        dport: 9090,
    };
    assert!(!evaluate(&model, &direct).allowed());
    assert!(!env
        .lab
        .probe("svc/web-a", client_ip, 9090, Protocol::Udp, PROBE)
        .unwrap());
    // A pod the backends do not admit is refused, though nothing isolates
    // its egress.
    expect_all(&env.check(&model, "svc/other", 1), false, "bystander");

    // The client's egress allows other pods only: refused via the
    // ClusterIP, which no policy names.
    let model = env.set_policies(&format!(
        "{}{}",
        client_policy("{app: other}"),
        web_policy("{app: client}")
    ));
    expect_all(&env.check(&model, "svc/client", 1), false, "egress denies");

    // The backends' ingress does not admit the client.
    let model = env.set_policies(&format!(
        "{}{}",
        client_policy("{app: web}"),
        web_policy("{app: other}")
    ));
    expect_all(&env.check(&model, "svc/client", 1), false, "ingress denies");
    expect_all(
        &env.check(&model, "svc/other", 1),
        true,
        "bystander admitted",
    );

    // Without the emulation the ClusterIP leads nowhere, even for the
    // admitted bystander; removing twice is a no-op.
    env.lab.remove_kube_proxy().unwrap();
    env.lab.remove_kube_proxy().unwrap();
    assert!(env.lab.kube_proxy_picks(&env.rules).is_err());
    for family in [Family::V4, Family::V6] {
        let cluster_ip = model.services[0].cluster_ip(family).unwrap();
        let out = env
            .lab
            .probe_outcome("svc/other", cluster_ip, 80, Protocol::Tcp, PROBE)
            .unwrap();
        assert!(!out.reached(), "{cluster_ip} answered without DNAT");
    }
}

#[test]
fn services_cluster_ip_one_of_two_backends_allowed() {
    let env = ServiceNode::up("services_one_of_two");
    let model = env.set_policies(&format!(
        "{}{}",
        client_policy("{pod: web-a}"),
        web_policy("{app: client}")
    ));
    // Random DNAT: each connection succeeds exactly when it went to web-a
    // (`check` compares every one with the oracle on its backend).
    let seen = env.check(&model, "svc/client", 8);
    let web_a = |f| env.lab.ip("svc/web-a", f).unwrap();
    let web_b = |f| env.lab.ip("svc/web-b", f).unwrap();
    for family in [Family::V4, Family::V6] {
        assert!(
            seen.contains_key(&(web_a(family), true)),
            "{family:?}: DNAT never picked web-a: {seen:?}"
        );
        assert!(
            seen.contains_key(&(web_b(family), false)),
            "{family:?}: DNAT never picked web-b: {seen:?}"
        );
        assert!(!seen.contains_key(&(web_a(family), false)));
        assert!(!seen.contains_key(&(web_b(family), true)));
    }
}

/// Under `masqueradeAll` the backend sees the node's address, not the
/// client's: the client's egress is still decided after DNAT, by the
/// interface the packet came in on. The backends are not isolated, so the
/// client's egress alone decides, and the oracle's verdict on client ->
/// backend is the answer.
#[test]
fn services_cluster_ip_same_node_masquerade_all() {
    let env = ServiceNode::up_with("services_same_node_masq", Masquerade::All, &[]);
    let model = env.set_policies(&client_policy("{pod: web-a}"));
    let seen = env.check(&model, "svc/client", 8);
    for family in [Family::V4, Family::V6] {
        let web_a = env.lab.ip("svc/web-a", family).unwrap();
        let web_b = env.lab.ip("svc/web-b", family).unwrap();
        assert!(
            seen.contains_key(&(web_a, true)) && seen.contains_key(&(web_b, false)),
            "{family:?}: DNAT did not pick both backends: {seen:?}"
        );
    }
    // The connections were masqueraded indeed.
    assert!(env.lab.kube_proxy_masquerades(Family::V4).unwrap() > 0);
}

/// Two nodes: the client on node-a, both backends on node-b, every node
/// running kube-proxy (DNAT in both node namespaces, masquerade as `masq`)
/// and an agent reading the same manifests.
struct Nodes {
    cluster: Cluster,
    agents: Vec<AgentProcess>,
    manifests: PathBuf,
    rules: Vec<ServiceRule>,
}

impl Nodes {
    /// `uplink`: the agents' `--uplink`.
    fn up(label: &str, overlay: Overlay, masq: Masquerade, uplink: &str) -> Nodes {
        let bin = palisade_bin().expect("the palisade binary");
        let (na, nb) = (NodeSpec::new("node-a", 0), NodeSpec::new("node-b", 1));
        let ips = |n: &NodeSpec, host: u16| -> [IpAddr; 2] {
            [
                n.addr(Family::V4, host).unwrap(),
                n.addr(Family::V6, host).unwrap(),
            ]
        };
        let pod = |name, labels, n: &NodeSpec, host, web| PodDef {
            name,
            labels,
            node: n.name.clone(),
            ips: ips(n, host),
            web,
        };
        let defs = vec![
            pod("client", "{app: client}", &na, 10, None),
            pod("web-a", "{app: web, pod: web-a}", &nb, 11, Some(8080)),
            pod("web-b", "{app: web, pod: web-b}", &nb, 12, Some(8081)),
        ];
        let text = topology(&defs);
        let model = palisade_policy::load_str(&text, "topology.yaml");
        assert!(model.errors.is_empty(), "topology: {:?}", model.errors);
        let mut spec = ClusterSpec::new(label).overlay(overlay);
        for n in [na, nb] {
            let mut node = n.clone();
            for p in model
                .pods
                .iter()
                .filter(|p| p.node.as_deref() == Some(&n.name))
            {
                let lab_pod = LabSpec::from_pods("", std::slice::from_ref(p), &EXTRA_PORTS).pods;
                node = node.pod(&p.namespace, &p.name, &p.ips, &lab_pod[0].ports);
            }
            spec = spec.node(node);
        }
        let cluster = Cluster::up(&spec).unwrap_or_else(|e| panic!("{e:#}"));
        let rules = service_rules(&model);
        cluster.install_kube_proxy_with(&rules, masq).unwrap();
        let manifests = cluster.nodes()[0].lab.dir().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        write_manifest(&manifests.join("topology.yaml"), &text).unwrap();
        write_manifest(&manifests.join("policies.yaml"), "").unwrap();
        let mut agents = Vec::new();
        for node in cluster.nodes() {
            let bpffs = node.lab.mount_bpffs().unwrap();
            let mut opts =
                AgentOptions::new(bin.clone(), vec![manifests.clone()], &node.name, bpffs);
            opts.args = vec!["--uplink".into(), uplink.into()];
            agents.push(node.lab.start_agent(&opts).unwrap());
        }
        for (node, agent) in cluster.nodes().iter().zip(&agents) {
            node.lab.wait_agent(agent, 0, AGENT_START).unwrap();
        }
        Nodes {
            cluster,
            agents,
            manifests,
            rules,
        }
    }

    fn logs(&self) -> String {
        self.cluster
            .nodes()
            .iter()
            .zip(&self.agents)
            .map(|(n, a)| format!("--- {}:\n{}", n.name, n.lab.log(&a.process)))
            .collect()
    }

    /// Swaps the policies and waits until both agents enforce them.
    fn set_policies(&self, text: &str) -> Model {
        let before: Vec<u64> = self.agents.iter().map(|a| a.rounds()).collect();
        write_manifest(&self.manifests.join("policies.yaml"), text).unwrap();
        for ((node, agent), b) in self.cluster.nodes().iter().zip(&self.agents).zip(before) {
            node.lab.wait_agent(agent, b, AGENT_CHANGE).unwrap();
        }
        load_model(&self.manifests)
    }

    /// Probes from the client's node, checked as `Via::check` does.
    fn check(&self, model: &Model, from: &str, rounds: usize) -> BTreeMap<(IpAddr, bool), usize> {
        let logs = || self.logs();
        Via {
            lab: &self.cluster.nodes()[0].lab,
            rules: &self.rules,
            logs: &logs,
        }
        .check(model, from, rounds)
    }

    /// The client's egress admits web-a only: every connection DNATed to
    /// web-b must be refused after DNAT, on the client's node.
    fn expect_egress_decided_by_backend(&self, what: &str) {
        let model = self.set_policies(&client_policy("{pod: web-a}"));
        let seen = self.check(&model, "svc/client", 6);
        for family in [Family::V4, Family::V6] {
            let web_a = self.cluster.ip("svc/web-a", family).unwrap();
            let web_b = self.cluster.ip("svc/web-b", family).unwrap();
            assert!(
                seen.contains_key(&(web_a, true)) && seen.contains_key(&(web_b, false)),
                "{what} {family:?}: DNAT did not pick both backends: {seen:?}"
            );
        }
    }
}

/// Over a VXLAN overlay (flannel's layout) the underlay carries only
/// encapsulated packets: the client's egress is decided on `flannel.1`
/// before encapsulation, which `--uplink auto` attaches to.
#[test]
fn services_cluster_ip_cross_node_over_vxlan() {
    let nodes = Nodes::up(
        "services_vxlan",
        Overlay::Vxlan,
        Masquerade::default(),
        "auto",
    );
    nodes.expect_egress_decided_by_backend("vxlan");
}

/// Under `masqueradeAll` the packet leaves the client's node with the
/// node's address: the client is still found by its interface.
#[test]
fn services_cluster_ip_cross_node_masquerade_all() {
    let nodes = Nodes::up("services_masq_x", Overlay::None, Masquerade::All, UNDERLAY);
    nodes.expect_egress_decided_by_backend("masquerade");
}

/// Two nodes: the client on node-a, both backends on node-b. The client's
/// egress to a remote backend is decided after DNAT at node-a's uplink
/// (the agent's `--uplink`), the backend's ingress at its veth on node-b.
#[test]
fn services_cluster_ip_cross_node() {
    let nodes = Nodes::up(
        "services_cross_node",
        Overlay::None,
        Masquerade::default(),
        UNDERLAY,
    );
    // The client's egress admits web-a only: decided on node-a's uplink,
    // after DNAT, for each connection by the backend it went to (the
    // backends admit the client).
    let model = nodes.set_policies(&format!(
        "{}{}",
        client_policy("{pod: web-a}"),
        web_policy("{app: client}")
    ));
    let seen = nodes.check(&model, "svc/client", 6);
    for family in [Family::V4, Family::V6] {
        let web_a = nodes.cluster.ip("svc/web-a", family).unwrap();
        let web_b = nodes.cluster.ip("svc/web-b", family).unwrap();
        assert!(
            seen.contains_key(&(web_a, true)) && seen.contains_key(&(web_b, false)),
            "{family:?}: DNAT did not pick both backends: {seen:?}"
        );
    }

    // The backends' ingress (on node-b) does not admit the client.
    let model = nodes.set_policies(&format!(
        "{}{}",
        client_policy("{app: web}"),
        web_policy("{app: nobody}")
    ));
    expect_all(
        &nodes.check(&model, "svc/client", 1),
        false,
        "remote ingress denies",
    );

    // Both allow: every connection gets through, replies included.
    let model = nodes.set_policies(&format!(
        "{}{}",
        client_policy("{app: web}"),
        web_policy("{app: client}")
    ));
    expect_all(
        &nodes.check(&model, "svc/client", 2),
        true,
        "allowed across nodes",
    );
}

/// A Service whose endpoints are the nodes' own addresses, as a
/// hostNetwork Deployment's are: every rule of `rules` DNATs to `node-a`
/// and `node-b` (the servers `host_network_ports` starts there).
fn host_network_rules(rules: &[ServiceRule], cluster: &Cluster) -> Vec<ServiceRule> {
    rules
        .iter()
        .map(|r| {
            let family = Family::of(&r.cluster_ip);
            let port = if r.protocol == Protocol::Tcp {
                8080
            } else {
                9090
            };
            let backends = cluster
                .nodes()
                .iter()
                .map(|n| SocketAddr::new(node_addr(n, family), port))
                .collect();
            ServiceRule {
                backends,
                ..r.clone()
            }
        })
        .collect()
}

/// What a hostNetwork backend serves: the target ports of Service `web`.
const HOST_NETWORK_PORTS: [ProbePort; 3] = [
    ProbePort {
        port: 8080,
        protocol: Protocol::Tcp,
    },
    EXTRA_PORTS[0],
    EXTRA_PORTS[1],
];

fn node_addr(node: &ClusterNode, family: Family) -> IpAddr {
    match family {
        Family::V4 => node.underlay_v4.into(),
        Family::V6 => node.underlay_v6.into(),
    }
}

/// hostNetwork backends. The client's egress admits pods only, so no
/// ipBlock covers either node. The backend on the other node is an
/// ordinary remote peer: refused after DNAT at the client's uplink, as a
/// direct connection to that node's address is. The backend on the
/// client's own node is that node, and traffic between a pod and its node
/// is always allowed (the NetworkPolicy spec's exception for the node a
/// pod runs on): reached, as a direct connection to the node is. Through
/// the ClusterIP, every connection gets its backend's direct verdict.
#[test]
fn services_cluster_ip_host_network_backends() {
    let mut nodes = Nodes::up(
        "services_hostnet",
        Overlay::None,
        Masquerade::default(),
        UNDERLAY,
    );
    nodes.rules = host_network_rules(&nodes.rules, &nodes.cluster);
    nodes
        .cluster
        .install_kube_proxy_with(&nodes.rules, Masquerade::default())
        .unwrap();
    let _servers: Vec<PodServer> = nodes
        .cluster
        .nodes()
        .iter()
        .map(|n| {
            let addrs = [node_addr(n, Family::V4), node_addr(n, Family::V6)];
            n.lab.serve_in_node(&HOST_NETWORK_PORTS, &addrs).unwrap()
        })
        .collect();
    nodes.set_policies(&client_policy("{app: web}"));
    let lab = &nodes.cluster.nodes()[0].lab;
    let logs = || nodes.logs();
    let via = Via {
        lab,
        rules: &nodes.rules,
        logs: &logs,
    };
    for family in [Family::V4, Family::V6] {
        let local = node_addr(&nodes.cluster.nodes()[0], family);
        let remote = node_addr(&nodes.cluster.nodes()[1], family);
        for p in HOST_NETWORK_PORTS {
            let direct = |to| {
                lab.probe_outcome("svc/client", to, p.port, p.protocol, PROBE)
                    .unwrap()
                    .reached()
            };
            assert!(direct(local), "{family:?} {p:?}: the own node refused");
            assert!(!direct(remote), "{family:?} {p:?}: the remote node reached");
        }
        let mut seen = BTreeSet::new();
        for (port, proto) in SERVICE_PORTS {
            for _ in 0..6 {
                let (t, reached) = via.probe("svc/client", family, port, proto);
                assert_eq!(
                    reached,
                    t.backend.ip() == local,
                    "{family:?} {port}/{} DNAT to {}\n{}",
                    proto.name(),
                    t.backend,
                    nodes.logs()
                );
                seen.insert((t.backend.ip(), reached));
            }
        }
        assert!(
            seen.contains(&(local, true)) && seen.contains(&(remote, false)),
            "{family:?}: DNAT did not pick both nodes: {seen:?}"
        );
    }
}
