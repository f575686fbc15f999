//! What the Service tests share: a namespace `svc` with a Service `web`
//! in front of backends whose target port differs per pod, policies for
//! the client and the backends, and probing through the ClusterIP with
//! every connection checked against the oracle on its post-DNAT tuple.

use palisade_lab::{
    palisade_bin, service_rules, write_manifest, AgentOptions, AgentProcess, DnatTarget, Family,
    Lab, LabSpec, Masquerade, Outcome, ProbePort, Protocol, ServiceRule,
};
use palisade_policy::{evaluate, Flow, Model};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const AGENT_START: Duration = Duration::from_secs(60);
pub const AGENT_CHANGE: Duration = Duration::from_secs(20);
/// Longer than the matrices' timeout: every probe here is checked on its
/// own, with no second try for a stalled host.
pub const PROBE: Duration = Duration::from_millis(800);
pub const NODE: &str = "node-svc";

/// One pod of namespace `svc`: name, labels (YAML flow map), node,
/// addresses, and the number of its container port named `web`.
pub struct PodDef {
    pub name: &'static str,
    pub labels: &'static str,
    pub node: String,
    pub ips: [IpAddr; 2],
    pub web: Option<u16>,
}

/// The manifests of the pods and of Service `web` (ClusterIPs
/// 10.96.81.10 and fd00:96::81:10; port 80/TCP to the named port `web`,
/// which is a different number on each backend, so it is resolved per
/// backend; port 90/UDP and port 100/SCTP to 9090).
pub fn topology(pods: &[PodDef]) -> String {
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
pub fn one_node_pods() -> Vec<PodDef> {
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
pub const EXTRA_PORTS: [ProbePort; 2] = [
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
pub const SERVICE_PORTS: [(u16, Protocol); 3] = [
    (80, Protocol::Tcp),
    (90, Protocol::Udp),
    (100, Protocol::Sctp),
];

/// A policy selecting `app: <app>` with the given policyTypes and rules
/// (YAML flow sequences).
pub fn policy(name: &str, app: &str, types: &str, ingress: &str, egress: &str) -> String {
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
pub fn client_policy(to: &str) -> String {
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
pub fn web_policy(from: &str) -> String {
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
pub struct Via<'a> {
    pub lab: &'a Lab,
    pub rules: &'a [ServiceRule],
    /// Agent logs, for failure messages.
    pub logs: &'a dyn Fn() -> String,
}

impl Via<'_> {
    pub fn picks(&self) -> BTreeMap<DnatTarget, u64> {
        self.lab
            .kube_proxy_picks(self.rules)
            .expect("DNAT counters")
    }

    pub fn cluster_ip(&self, family: Family) -> IpAddr {
        self.rules
            .iter()
            .map(|r| r.cluster_ip)
            .find(|ip| Family::of(ip) == family)
            .expect("a ClusterIP of the family")
    }

    /// One probe from `from` to the Service's ClusterIP of `family`:
    /// (the backend DNAT picked, whether the probe got an answer).
    pub fn probe(
        &self,
        from: &str,
        family: Family,
        port: u16,
        proto: Protocol,
    ) -> (DnatTarget, bool) {
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
    pub fn check(
        &self,
        model: &Model,
        from: &str,
        rounds: usize,
    ) -> BTreeMap<(IpAddr, bool), usize> {
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
pub fn load_model(manifests: &Path) -> Model {
    let model = palisade_policy::load_paths(&[manifests.to_path_buf()]);
    assert!(model.errors.is_empty(), "{:?}", model.errors);
    model
}

/// Asserts the oracle said `allowed` for every backend `check` saw.
pub fn expect_all(seen: &BTreeMap<(IpAddr, bool), usize>, allowed: bool, what: &str) {
    assert!(
        !seen.is_empty() && seen.keys().all(|(_, a)| *a == allowed),
        "{what}: the oracle should say {allowed} for every backend: {seen:?}"
    );
}

/// One lab node of `one_node_pods` with the agent and the kube-proxy
/// emulation.
pub struct ServiceNode {
    pub lab: Lab,
    pub agent: AgentProcess,
    pub manifests: PathBuf,
    pub rules: Vec<ServiceRule>,
}

impl ServiceNode {
    pub fn up(label: &str) -> ServiceNode {
        ServiceNode::up_with(label, Masquerade::default(), &[])
    }

    /// The node with kube-proxy's masquerade rules set to `masq`, the agent
    /// started with the extra arguments `args`.
    pub fn up_with(label: &str, masq: Masquerade, args: &[&str]) -> ServiceNode {
        let bin = palisade_bin().expect("the palisade binary");
        let text = topology(&one_node_pods());
        let model = palisade_policy::load_str(&text, "topology.yaml");
        assert!(model.errors.is_empty(), "topology: {:?}", model.errors);
        let lab = Lab::up(&LabSpec::from_pods(label, &model.pods, &EXTRA_PORTS)).expect("lab up");
        let rules = service_rules(&model);
        lab.install_kube_proxy_with(&rules, masq)
            .expect("kube-proxy emulation");
        // Installing again replaces, never duplicates.
        lab.install_kube_proxy_with(&rules, masq)
            .expect("kube-proxy emulation, again");
        let manifests = lab.dir().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        write_manifest(&manifests.join("topology.yaml"), &text).unwrap();
        write_manifest(&manifests.join("policies.yaml"), "").unwrap();
        let bpffs = lab.mount_bpffs().unwrap();
        let mut opts = AgentOptions::new(bin, vec![manifests.clone()], NODE, bpffs);
        opts.args = args.iter().map(|a| a.to_string()).collect();
        let agent = lab.start_agent(&opts).unwrap();
        lab.wait_agent(&agent, 0, AGENT_START).unwrap();
        ServiceNode {
            lab,
            agent,
            manifests,
            rules,
        }
    }

    /// Swaps the policies and waits until the agent enforces them;
    /// returns the model the expectations come from.
    pub fn set_policies(&self, text: &str) -> Model {
        let before = self.agent.rounds();
        write_manifest(&self.manifests.join("policies.yaml"), text).unwrap();
        self.lab
            .wait_agent(&self.agent, before, AGENT_CHANGE)
            .unwrap();
        load_model(&self.manifests)
    }

    /// The agent's log, for failure messages.
    pub fn log(&self) -> String {
        self.lab.log(&self.agent.process)
    }

    pub fn check(
        &self,
        model: &Model,
        from: &str,
        rounds: usize,
    ) -> BTreeMap<(IpAddr, bool), usize> {
        let logs = || self.log();
        self.via(&logs).check(model, from, rounds)
    }

    /// Probing through this node's Service rules.
    pub fn via<'a>(&'a self, logs: &'a dyn Fn() -> String) -> Via<'a> {
        Via {
            lab: &self.lab,
            rules: &self.rules,
            logs,
        }
    }
}
