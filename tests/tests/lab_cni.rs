//! End to end with the chained CNI plugin: pods wired by the reference
//! `bridge` and `ptp` plugins with `palisade-cni` last in the chain, as a
//! runtime runs a node's conflist. Before any agent runs, every new pod is
//! held pending (no packet gets through); once the agent runs, it finds the
//! pods from the plugin's records (the bridge layout has no per-pod host
//! route) and enforces policy exactly as the oracle says.
//!
//! Needs `palisade` and `palisade-cni` (`cargo xtask build`).

use palisade_lab::{
    palisade_bin, write_manifest, AgentOptions, CniLayout, Family, Lab, LabSpec, Outcome, Probe,
};
use palisade_tests::kernel::Scratch;
use palisade_tests::lab::{wired, PORTS};
use std::path::{Path, PathBuf};
use std::time::Duration;

const AGENT_START: Duration = Duration::from_secs(60);
const NODE: &str = "node-1";

fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// Every ordered pair of distinct pods, TCP 80 over IPv4.
fn all_pairs(lab: &Lab) -> Vec<Probe> {
    let mut out = Vec::new();
    for from in lab.pods() {
        for to in lab.pods() {
            if from.key() != to.key() {
                out.push(Probe {
                    from: from.key(),
                    to: lab.ip(&to.key(), Family::V4).unwrap(),
                    port: 80,
                    protocol: palisade_lab::Protocol::Tcp,
                });
            }
        }
    }
    out
}

fn held_then_enforced(layout: CniLayout, scenario: &str) {
    let scratch = Scratch::new(&format!("lab-cni-{layout}"));
    // Where `wired` has the plugin keep its records.
    let state = scratch.dir().join("cni-state");
    let manifests = scratch.manifests();
    std::fs::copy(
        scenarios().join("topology.yaml"),
        manifests.join("topology.yaml"),
    )
    .unwrap();
    let policies =
        std::fs::read_to_string(scenarios().join(scenario).join("policies.yaml")).unwrap();
    write_manifest(&manifests.join("policies.yaml"), &policies).unwrap();
    let model = palisade_policy::load_paths(std::slice::from_ref(&manifests));
    assert!(model.errors.is_empty(), "{:?}", model.errors);

    let spec = LabSpec::from_pods(&format!("lab_cni_{layout}"), &model.pods, &PORTS);
    let (spec, args) = wired(spec, layout, &scratch, NODE);
    let lab = Lab::up(&spec).expect("lab up");

    // One record per pod, naming the host veth the lab found.
    let records = palisade_cni::RecordStore::new(&state).list().unwrap();
    assert!(records.unreadable.is_empty(), "{:?}", records.unreadable);
    assert_eq!(records.records.len(), lab.pods().len());
    for pod in lab.pods() {
        let r = records
            .records
            .iter()
            .find(|r| r.host_interface == pod.host_veth)
            .unwrap_or_else(|| panic!("no record for {} ({})", pod.key(), pod.host_veth));
        assert_eq!(r.pod_name.as_deref(), Some(pod.spec.name.as_str()));
    }

    // No agent has run: every pod is held, nothing gets through.
    let probes = all_pairs(&lab);
    let before = lab.probe_many(&probes, Duration::from_millis(300)).unwrap();
    let through = before
        .iter()
        .filter(|o| matches!(o, Outcome::Reached))
        .count();
    assert_eq!(
        through,
        0,
        "{through} of {} probes got through held pods",
        probes.len()
    );

    let mut opts = AgentOptions::new(
        palisade_bin().unwrap(),
        vec![manifests.clone()],
        NODE,
        scratch.bpffs(),
    );
    opts.args = args;
    let agent = lab.start_agent(&opts).unwrap();
    lab.wait_agent(&agent, 0, AGENT_START).unwrap();
    for family in [Family::V4, Family::V6] {
        let measured = lab.measure_matrix(&PORTS, family).unwrap();
        let expected = palisade_policy::matrix(&model, &PORTS, family);
        let diff = palisade_lab::diff(&measured, &expected);
        assert!(
            diff.is_empty(),
            "{layout} {family:?}: {diff:#?}\n{}",
            lab.log(&agent.process)
        );
    }
    lab.teardown().unwrap();
    // DEL removed every record.
    let left = palisade_cni::RecordStore::new(&state).list().unwrap();
    assert!(left.records.is_empty(), "{:?}", left.records);
}

#[test]
fn bridge_pods_are_held_by_the_plugin_then_enforced_from_its_records() {
    held_then_enforced(CniLayout::Bridge, "ingress-and-egress-together");
}

#[test]
fn ptp_pods_are_held_by_the_plugin_then_enforced() {
    held_then_enforced(CniLayout::Ptp, "pod-and-namespace-selector");
}

/// Pod `w/p<i>`, 10.67.0.(10+i), serving the usual ports.
fn live_pod(i: u8) -> palisade_lab::PodSpec {
    palisade_lab::PodSpec {
        namespace: "w".into(),
        name: format!("p{i}"),
        ips: vec![std::net::IpAddr::from([10, 67, 0, 10 + i])],
        ports: PORTS.to_vec(),
    }
}

/// A lab node wired by `layout` with `palisade-cni` chained, holding pod
/// `w/p0`, with manifests naming `w/p0`..`w/p5` plus `policies`, and the
/// options of an agent enforcing them (not started).
fn live_lab(layout: CniLayout, label: &str, policies: &str) -> (Lab, AgentOptions, Scratch) {
    let scratch = Scratch::new(label);
    let range = palisade_lab::IpamRange {
        subnet: palisade_lab::Cidr::new(std::net::IpAddr::from([10, 67, 0, 0]), 24),
        gateway: std::net::IpAddr::from([10, 67, 0, 254]),
    };
    let spec = LabSpec::new(label)
        .ipam_range(range)
        .pod("w", "p0", &live_pod(0).ips, &PORTS);
    let (spec, args) = wired(spec, layout, &scratch, NODE);
    let lab = Lab::up(&spec).expect("lab up");
    let manifests = lab.dir().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let mut text: String = (0..6)
        .map(|i| {
            let p = live_pod(i);
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: w, labels: {{pod: {}}}}}\n\
                 spec: {{nodeName: {NODE}}}\nstatus: {{podIP: {}}}\n",
                p.name, p.name, p.ips[0]
            )
        })
        .collect();
    text.push_str(policies);
    write_manifest(&manifests.join("cluster.yaml"), &text).unwrap();
    let mut opts = AgentOptions::new(
        palisade_bin().unwrap(),
        vec![manifests],
        NODE,
        scratch.bpffs(),
    );
    opts.args = args;
    (lab, opts, scratch)
}

fn reaches(lab: &Lab, from: &str, to: &str, port: u16) -> bool {
    let ip = lab.ip(to, Family::V4).unwrap();
    lab.probe(
        from,
        ip,
        port,
        palisade_lab::Protocol::Tcp,
        Duration::from_millis(400),
    )
    .unwrap()
}

/// Pods added while the agent runs, on both plugin layouts: the agent may
/// find a ptp pod by its host route and attach while the plugin's ADD is
/// still holding it; neither may fail, and every pod ends up enforced
/// (here: reachable from a peer, as nothing isolates it).
#[test]
fn pods_added_while_the_agent_runs_are_held_then_enforced() {
    for layout in [CniLayout::Ptp, CniLayout::Bridge] {
        let (mut lab, opts, _scratch) = live_lab(layout, &format!("lab_cni_live_{layout}"), "");
        let agent = lab.start_agent(&opts).unwrap();
        lab.wait_agent(&agent, 0, AGENT_START).unwrap();
        for i in 1..6 {
            lab.add_pod(&live_pod(i)).unwrap_or_else(|e| {
                panic!(
                    "{layout}: ADD of w/p{i}: {e:#}\n{}",
                    lab.log(&agent.process)
                )
            });
        }
        lab.wait_agent(&agent, agent.rounds().saturating_sub(1), AGENT_START)
            .unwrap();
        for i in 1..6 {
            assert!(
                reaches(&lab, "w/p0", &format!("w/p{i}"), 80),
                "{layout}: w/p0 -> w/p{i}\n{}",
                lab.log(&agent.process)
            );
        }
    }
}

/// Only port 80 of w/p1 is open to w/p0.
const P1_ONLY_80: &str = "---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p1, namespace: w}
spec:
  podSelector: {matchLabels: {pod: p1}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: p0}}}], ports: [{port: 80}]}]
";

/// A pod created while the agent is stopped (killed: nothing cleaned up)
/// is held by the plugin, every probe to it dropped, until the agent is
/// back and programs it; then it follows its policy.
#[test]
fn a_pod_created_while_the_agent_is_stopped_is_held_until_it_returns() {
    let (mut lab, opts, _scratch) = live_lab(CniLayout::Bridge, "lab_cni_stopped", P1_ONLY_80);
    let agent = lab.start_agent(&opts).unwrap();
    lab.wait_agent(&agent, 0, AGENT_START).unwrap();
    lab.signal(&agent.process, libc::SIGKILL).unwrap();
    lab.wait_exit(&agent.process, Duration::from_secs(10))
        .unwrap();

    lab.add_pod(&live_pod(1)).expect("ADD with the agent down");
    let tries = 10;
    let through = (0..tries)
        .filter(|_| reaches(&lab, "w/p0", "w/p1", 80) || reaches(&lab, "w/p0", "w/p1", 81))
        .count();
    assert_eq!(
        through, 0,
        "{through} of {tries} probe pairs reached a held pod"
    );

    let agent = lab.start_agent(&opts).unwrap();
    lab.wait_agent(&agent, 0, AGENT_START).unwrap();
    assert!(
        reaches(&lab, "w/p0", "w/p1", 80),
        "{}",
        lab.log(&agent.process)
    );
    assert!(
        !reaches(&lab, "w/p0", "w/p1", 81),
        "{}",
        lab.log(&agent.process)
    );
}
