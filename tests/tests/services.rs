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
    palisade_bin, service_rules, write_manifest, AgentOptions, AgentProcess, Cluster, ClusterSpec,
    DnatTarget, Family, Lab, LabSpec, NodeSpec, Outcome, ProbePort, Protocol, ServiceRule,
    UNDERLAY,
};
use palisade_policy::{evaluate, Flow, Model};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const AGENT_START: Duration = Duration::from_secs(60);
const AGENT_CHANGE: Duration = Duration::from_secs(20);
/// Longer than the matrices' timeout: every probe here is checked on its
/// own, with no second try for a stalled host.
const PROBE: Duration = Duration::from_millis(800);
const NODE: &str = "node-svc";

/// One pod of namespace `svc`: name, labels (YAML flow map), node,
/// addresses, and the number of its container port named `web`.
struct PodDef {
    name: &'static str,
    labels: &'static str,
    node: String,
    ips: [IpAddr; 2],
    web: Option<u16>,
}

/// The manifests of the pods and of Service `web` (ClusterIPs
/// 10.96.81.10 and fd00:96::81:10; port 80/TCP to the named port `web`,
/// which is a different number on each backend, so it is resolved per
/// backend; port 90/UDP and port 100/SCTP to 9090).
fn topology(pods: &[PodDef]) -> String {
    let mut out = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: svc}\n");
    for p in pods {
        let ports = p
            .web
            .map(|n| format!(", ports: [{{name: web, containerPort: {n}}}]"))
            .unwrap_or_default();
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\n\
             metadata: {{name: {}, namespace: svc, labels: {}}}\n\
             spec: {{nodeName: {}, containers: [{{name: c{ports}}}]}}\n\
             status: {{phase: Running, podIPs: [{{ip: '{}'}}, {{ip: '{}'}}]}}\n",
            p.name, p.labels, p.node, p.ips[0], p.ips[1]
        ));
    }
    out.push_str(
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: svc}\n\
         spec:\n  clusterIPs: [10.96.81.10, 'fd00:96::81:10']\n  selector: {app: web}\n\
         \x20 ports:\n    - {name: http, port: 80, targetPort: web}\n\
         \x20   - {name: dgram, port: 90, protocol: UDP, targetPort: 9090}\n\
         \x20   - {name: assoc, port: 100, protocol: SCTP, targetPort: 9090}\n",
    );
    out
}

/// The single-node lab's pods: a client, two backends and a bystander.
fn one_node_pods() -> Vec<PodDef> {
    let ips = |h: u8| -> [IpAddr; 2] {
        [
            IpAddr::from([10, 81, 0, h]),
            IpAddr::from([0xfd00, 0x81, 0, 0, 0, 0, 0, u16::from(h)]),
        ]
    };
    let pod = |name, labels, h, web| PodDef {
        name,
        labels,
        node: NODE.to_string(),
        ips: ips(h),
        web,
    };
    vec![
        pod("client", "{app: client}", 2, None),
        pod("web-a", "{app: web, pod: web-a}", 3, Some(8080)),
        pod("web-b", "{app: web, pod: web-b}", 4, Some(8081)),
        pod("other", "{app: other}", 5, None),
    ]
}

/// Every pod also serves 9090 on UDP and SCTP (the targets of `dgram`
/// and `assoc`).
const EXTRA_PORTS: [ProbePort; 2] = [
    ProbePort {
        port: 9090,
        protocol: Protocol::Udp,
    },
    ProbePort {
        port: 9090,
        protocol: Protocol::Sctp,
    },
];

/// The Service ports probed through the ClusterIP.
const SERVICE_PORTS: [(u16, Protocol); 3] = [
    (80, Protocol::Tcp),
    (90, Protocol::Udp),
    (100, Protocol::Sctp),
];

/// A policy selecting `app: <app>` with the given policyTypes and rules
/// (YAML flow sequences).
fn policy(name: &str, app: &str, types: &str, ingress: &str, egress: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: {name}, namespace: svc}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: {app}}}}}\n  policyTypes: {types}\n\
         \x20 ingress: {ingress}\n  egress: {egress}\n"
    )
}

/// The client: ingress isolated with no rule (so replies pass only as
/// replies), egress allowed to the pods `to` selects on the Service's
/// target ports.
fn client_policy(to: &str) -> String {
    policy(
        "client",
        "client",
        "[Ingress, Egress]",
        "[]",
        &format!(
            "[{{to: [{{podSelector: {{matchLabels: {to}}}}}], \
             ports: [{{port: web}}, {{port: 9090, protocol: UDP}}, {{port: 9090, protocol: SCTP}}]}}]"
        ),
    )
}

/// The backends admit the pods `from` selects.
fn web_policy(from: &str) -> String {
    policy(
        "web",
        "web",
        "[Ingress]",
        &format!("[{{from: [{{podSelector: {{matchLabels: {from}}}}}]}}]"),
        "[]",
    )
}

/// Probing Service `web` from pods of `lab`, the node whose kube-proxy
/// emulation DNATs their connections.
struct Via<'a> {
    lab: &'a Lab,
    rules: &'a [ServiceRule],
    /// Agent logs, for failure messages.
    logs: &'a dyn Fn() -> String,
}

impl Via<'_> {
    fn picks(&self) -> BTreeMap<DnatTarget, u64> {
        self.lab
            .kube_proxy_picks(self.rules)
            .expect("DNAT counters")
    }

    fn cluster_ip(&self, family: Family) -> IpAddr {
        self.rules
            .iter()
            .map(|r| r.cluster_ip)
            .find(|ip| Family::of(ip) == family)
            .expect("a ClusterIP of the family")
    }

    /// One probe from `from` to the Service's ClusterIP of `family`:
    /// (the backend DNAT picked, whether the probe got an answer).
    fn probe(&self, from: &str, family: Family, port: u16, proto: Protocol) -> (DnatTarget, bool) {
        let cluster_ip = self.cluster_ip(family);
        let before = self.picks();
        let outcome = self
            .lab
            .probe_outcome(from, cluster_ip, port, proto, PROBE)
            .unwrap();
        if let Outcome::Error(e) = &outcome {
            panic!("probe {from} -> {cluster_ip}:{port}/{}: {e}", proto.name());
        }
        let after = self.picks();
        let picked: Vec<DnatTarget> = after
            .iter()
            .filter(|(t, n)| before.get(t) != Some(n))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(
            picked.len(),
            1,
            "probe {from} -> {cluster_ip}:{port}/{}: expected one DNAT, counters moved for {picked:?}",
            proto.name()
        );
        let t = picked[0];
        assert_eq!(
            (
                t.cluster_ip,
                t.port,
                t.protocol,
                after[&t] - before.get(&t).unwrap_or(&0)
            ),
            (cluster_ip, port, proto, 1),
            "one new connection, to the probed ClusterIP and port"
        );
        (t, outcome.reached())
    }

    /// Probes `from` -> ClusterIP `rounds` times per Service port and
    /// family; every outcome must be the oracle's verdict on the post-DNAT
    /// tuple (from's address -> the backend picked). Returns how often
    /// each (backend address, oracle verdict) was seen.
    fn check(&self, model: &Model, from: &str, rounds: usize) -> BTreeMap<(IpAddr, bool), usize> {
        let mut seen = BTreeMap::new();
        let mut failures = Vec::new();
        for family in [Family::V4, Family::V6] {
            let src = self.lab.ip(from, family).unwrap();
            for (port, proto) in SERVICE_PORTS {
                for _ in 0..rounds {
                    let (t, reached) = self.probe(from, family, port, proto);
                    let flow = Flow {
                        src,
                        dst: t.backend.ip(),
                        proto: proto.number(),
                        dport: t.backend.port(),
                    };
                    let expected = evaluate(model, &flow).allowed();
                    if reached != expected {
                        failures.push(format!(
                            "{from} -> {}:{port}/{} DNAT to {}: reached {reached}, oracle says {expected}",
                            t.cluster_ip,
                            proto.name(),
                            t.backend
                        ));
                    }
                    *seen.entry((t.backend.ip(), expected)).or_default() += 1;
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{}\nagent logs:\n{}",
            failures.join("\n"),
            (self.logs)()
        );
        seen
    }
}

/// Reads the manifests back: the model expectations come from.
fn load_model(manifests: &Path) -> Model {
    let model = palisade_policy::load_paths(&[manifests.to_path_buf()]);
    assert!(model.errors.is_empty(), "{:?}", model.errors);
    model
}

/// One lab node with the agent and the kube-proxy emulation.
struct Env {
    lab: Lab,
    agent: AgentProcess,
    manifests: PathBuf,
    rules: Vec<ServiceRule>,
}

impl Env {
    fn up(label: &str) -> Env {
        let bin = palisade_bin().expect("the palisade binary");
        let text = topology(&one_node_pods());
        let model = palisade_policy::load_str(&text, "topology.yaml");
        assert!(model.errors.is_empty(), "topology: {:?}", model.errors);
        let lab = Lab::up(&LabSpec::from_pods(label, &model.pods, &EXTRA_PORTS)).expect("lab up");
        let rules = service_rules(&model);
        lab.install_kube_proxy(&rules)
            .expect("kube-proxy emulation");
        // Installing again replaces, never duplicates.
        lab.install_kube_proxy(&rules)
            .expect("kube-proxy emulation, again");
        let manifests = lab.dir().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        write_manifest(&manifests.join("topology.yaml"), &text).unwrap();
        write_manifest(&manifests.join("policies.yaml"), "").unwrap();
        let bpffs = lab.mount_bpffs().unwrap();
        let opts = AgentOptions::new(bin, vec![manifests.clone()], NODE, bpffs);
        let agent = lab.start_agent(&opts).unwrap();
        lab.wait_agent(&agent, 0, AGENT_START).unwrap();
        Env {
            lab,
            agent,
            manifests,
            rules,
        }
    }

    /// Swaps the policies and waits until the agent enforces them;
    /// returns the model the expectations come from.
    fn set_policies(&self, text: &str) -> Model {
        let before = self.agent.rounds();
        write_manifest(&self.manifests.join("policies.yaml"), text).unwrap();
        self.lab
            .wait_agent(&self.agent, before, AGENT_CHANGE)
            .unwrap();
        load_model(&self.manifests)
    }

    fn check(&self, model: &Model, from: &str, rounds: usize) -> BTreeMap<(IpAddr, bool), usize> {
        let logs = || self.lab.log(&self.agent.process);
        Via {
            lab: &self.lab,
            rules: &self.rules,
            logs: &logs,
        }
        .check(model, from, rounds)
    }
}

fn expect_all(seen: &BTreeMap<(IpAddr, bool), usize>, allowed: bool, what: &str) {
    assert!(
        !seen.is_empty() && seen.keys().all(|(_, a)| *a == allowed),
        "{what}: the oracle should say {allowed} for every backend: {seen:?}"
    );
}

#[test]
fn services_cluster_ip_same_node() {
    let env = Env::up("services_same_node");

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
    let env = Env::up("services_one_of_two");
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

/// Two nodes: the client on node-a, both backends on node-b. The client's
/// egress to a remote backend is decided after DNAT at node-a's uplink
/// (the agent's `--uplink`), the backend's ingress at its veth on node-b.
#[test]
fn services_cluster_ip_cross_node() {
    let bin = palisade_bin().expect("the palisade binary");
    let (na, nb) = (NodeSpec::new("node-a", 0), NodeSpec::new("node-b", 1));
    let ips = |n: &NodeSpec, host: u16| -> [IpAddr; 2] {
        [
            n.addr(Family::V4, host).unwrap(),
            n.addr(Family::V6, host).unwrap(),
        ]
    };
    let defs = vec![
        PodDef {
            name: "client",
            labels: "{app: client}",
            node: na.name.clone(),
            ips: ips(&na, 10),
            web: None,
        },
        PodDef {
            name: "web-a",
            labels: "{app: web, pod: web-a}",
            node: nb.name.clone(),
            ips: ips(&nb, 11),
            web: Some(8080),
        },
        PodDef {
            name: "web-b",
            labels: "{app: web, pod: web-b}",
            node: nb.name.clone(),
            ips: ips(&nb, 12),
            web: Some(8081),
        },
    ];
    let text = topology(&defs);
    let model = palisade_policy::load_str(&text, "topology.yaml");
    assert!(model.errors.is_empty(), "topology: {:?}", model.errors);
    let mut spec = ClusterSpec::new("services_cross_node");
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

    // Every node runs kube-proxy (here: DNAT in both node namespaces) and
    // an agent reading the same manifests, with the underlay as uplink.
    let rules = service_rules(&model);
    let first = cluster.nodes()[0].lab.dir().join("manifests");
    std::fs::create_dir(&first).unwrap();
    write_manifest(&first.join("topology.yaml"), &text).unwrap();
    let policies = first.join("policies.yaml");
    write_manifest(&policies, "").unwrap();
    let mut agents = Vec::new();
    for node in cluster.nodes() {
        node.lab.install_kube_proxy(&rules).unwrap();
        let bpffs = node.lab.mount_bpffs().unwrap();
        let mut opts = AgentOptions::new(bin.clone(), vec![first.clone()], &node.name, bpffs);
        opts.args = vec!["--uplink".into(), UNDERLAY.into()];
        agents.push(node.lab.start_agent(&opts).unwrap());
    }
    for (node, agent) in cluster.nodes().iter().zip(&agents) {
        node.lab.wait_agent(agent, 0, AGENT_START).unwrap();
    }
    let logs = || {
        cluster
            .nodes()
            .iter()
            .zip(&agents)
            .map(|(n, a)| format!("--- {}:\n{}", n.name, n.lab.log(&a.process)))
            .collect::<String>()
    };
    let set_policies = |text: &str| -> Model {
        let before: Vec<u64> = agents.iter().map(|a| a.rounds()).collect();
        write_manifest(&policies, text).unwrap();
        for ((node, agent), b) in cluster.nodes().iter().zip(&agents).zip(before) {
            node.lab.wait_agent(agent, b, AGENT_CHANGE).unwrap();
        }
        load_model(&first)
    };
    let via = Via {
        lab: &cluster.nodes()[0].lab,
        rules: &rules,
        logs: &logs,
    };

    // The client's egress admits web-a only: decided on node-a's uplink,
    // after DNAT, for each connection by the backend it went to.
    let model = set_policies(&format!(
        "{}{}",
        client_policy("{pod: web-a}"),
        web_policy("{app: client}")
    ));
    let seen = via.check(&model, "svc/client", 6);
    for family in [Family::V4, Family::V6] {
        let web_a = cluster.ip("svc/web-a", family).unwrap();
        let web_b = cluster.ip("svc/web-b", family).unwrap();
        assert!(
            seen.contains_key(&(web_a, true)) && seen.contains_key(&(web_b, false)),
            "{family:?}: DNAT did not pick both backends: {seen:?}"
        );
    }

    // The backends' ingress (on node-b) does not admit the client.
    let model = set_policies(&format!(
        "{}{}",
        client_policy("{app: web}"),
        web_policy("{app: nobody}")
    ));
    expect_all(
        &via.check(&model, "svc/client", 1),
        false,
        "remote ingress denies",
    );

    // Both allow: every connection gets through, replies included.
    let model = set_policies(&format!(
        "{}{}",
        client_policy("{app: web}"),
        web_policy("{app: client}")
    ));
    expect_all(
        &via.check(&model, "svc/client", 2),
        true,
        "allowed across nodes",
    );
}
