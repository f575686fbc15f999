//! End to end: the agent enforcing real manifests on a lab node, measured
//! with real traffic and compared with the spec oracle.
//!
//! Needs the `palisade` binary: `$PALISADE_BIN`, else target/debug/palisade
//! (`cargo xtask build`). The scenarios are tests/scenarios/<name>/policies.yaml
//! over tests/scenarios/topology.yaml. One lab and one agent serve many
//! scenarios: the agent watches its manifests directory, and each scenario
//! atomically replaces the policy file there.

use palisade_lab::{
    palisade_bin, write_manifest, AgentOptions, AgentProcess, Family, Lab, LabSpec, MatrixEntry,
};
use palisade_tests::lab::{retrans_in, PORTS};
use palisade_tests::sweep::{policies_of, scenario_names, scenarios_dir};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Scenarios also measured over IPv6 (a subset: the matrix is the same
/// code path, the classifier's IPv6 parsing and CIDR handling are not).
const IPV6_SCENARIOS: [&str; 6] = [
    "pod-selector",
    "default-deny-all",
    "egress-cidr-except-dual-stack",
    "named-port-ingress",
    "sctp-policy-isolates",
    "deny-egress-namespace",
];

/// The agent's first programming of a node includes loading the
/// classifiers; later rounds are small.
const AGENT_START: Duration = Duration::from_secs(60);
const AGENT_CHANGE: Duration = Duration::from_secs(20);

/// A lab holding the standard topology, with an agent for its node
/// watching `manifests/` (topology plus one policy file).
struct Enforced {
    lab: Lab,
    agent: AgentProcess,
    opts: AgentOptions,
    manifests: PathBuf,
    policies: PathBuf,
}

impl Enforced {
    fn up(label: &str, initial_policies: &str) -> Enforced {
        let bin = palisade_bin().expect("the palisade binary");
        let topology = scenarios_dir().join("topology.yaml");
        let model = palisade_policy::load_paths(std::slice::from_ref(&topology));
        assert!(model.errors.is_empty(), "topology: {:?}", model.errors);
        let lab = Lab::up(&LabSpec::from_pods(label, &model.pods, &PORTS)).expect("lab up");
        let manifests = lab.dir().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        std::fs::copy(&topology, manifests.join("topology.yaml")).unwrap();
        let policies = manifests.join("policies.yaml");
        write_manifest(&policies, initial_policies).unwrap();
        let node = model.pods[0]
            .node
            .clone()
            .expect("topology pods have a node");
        let bpffs = lab.mount_bpffs().unwrap();
        let opts = AgentOptions::new(bin, vec![manifests.clone()], &node, bpffs);
        let agent = lab.start_agent(&opts).unwrap();
        lab.wait_agent(&agent, 0, AGENT_START).unwrap();
        Enforced {
            lab,
            agent,
            opts,
            manifests,
            policies,
        }
    }

    /// Swaps the policy file and waits until the agent enforces it.
    fn set_policies(&self, text: &str) {
        let before = self.agent.rounds();
        write_manifest(&self.policies, text).unwrap();
        self.lab
            .wait_agent(&self.agent, before, AGENT_CHANGE)
            .unwrap();
    }

    fn expected(&self, family: Family) -> Vec<MatrixEntry> {
        let model = palisade_policy::load_paths(std::slice::from_ref(&self.manifests));
        assert!(model.errors.is_empty(), "{:?}", model.errors);
        palisade_policy::matrix(&model, &PORTS, family)
    }

    /// Differences between measured and expected, as lines.
    fn check(&self, family: Family) -> Vec<String> {
        let measured = self.lab.measure_matrix(&PORTS, family).expect("measure");
        palisade_lab::diff(&measured, &self.expected(family))
            .iter()
            .map(|d| format!("{family:?} {d}"))
            .collect()
    }
}

/// Runs every `shards`-th scenario starting at `shard` on one lab.
fn scenarios_shard(shard: usize, shards: usize) {
    let names: Vec<String> = scenario_names()
        .into_iter()
        .skip(shard)
        .step_by(shards)
        .collect();
    let env = Enforced::up(&format!("lab_enforcement_{shard}"), "");
    let mut failures = Vec::new();
    for name in &names {
        env.set_policies(&policies_of(name));
        let mut families = vec![Family::V4];
        if IPV6_SCENARIOS.contains(&name.as_str()) {
            families.push(Family::V6);
        }
        for family in families {
            failures.extend(
                env.check(family)
                    .into_iter()
                    .map(|d| format!("{name}: {d}")),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences between measured and expected:\n{}\nagent log:\n{}",
        failures.len(),
        failures.join("\n"),
        env.lab.log(&env.agent.process)
    );
}

#[test]
fn lab_enforcement_scenarios_shard_0() {
    scenarios_shard(0, 4);
}

#[test]
fn lab_enforcement_scenarios_shard_1() {
    scenarios_shard(1, 4);
}

#[test]
fn lab_enforcement_scenarios_shard_2() {
    scenarios_shard(2, 4);
}

#[test]
fn lab_enforcement_scenarios_shard_3() {
    scenarios_shard(3, 4);
}

/// A connection from `from` to `to`:80 sending a numbered message every
/// 20 ms until `stop` (at most `max` messages), checking every echo.
/// Returns the number of messages echoed.
fn chatter(lab: &Lab, from: &str, to: &str, stop: &AtomicBool, max: u32) -> Result<u32, String> {
    let dst = lab.ip(to, Family::V4).unwrap();
    let conn = lab
        .run_in_pod(from, || {
            TcpStream::connect_timeout(&(dst, 80).into(), Duration::from_secs(2))
        })
        .unwrap()
        .map_err(|e| format!("connect {from} -> {to}: {e}"))?;
    palisade_tests::lab::echo_until(conn, &format!("{from} -> {to}"), stop, max)
}

#[test]
fn lab_enforcement_policy_change_keeps_established_connection() {
    // x/a admits x/b only; every later version still admits x/b on port
    // 80, while other pods' policies and x/a's rule set change around it.
    let v1 = policies_of("pod-selector");
    let v2 = format!(
        "{v1}\n{}",
        policies_of("default-deny-ingress").replace("name: ", "name: extra-")
    );
    let v3 = format!(
        "{v1}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: x-a-also-allows-x-c\n  namespace: x\nspec:\n  podSelector:\n    matchLabels: {{pod: a}}\n  ingress:\n    - from:\n        - podSelector:\n            matchLabels: {{pod: c}}\n"
    );
    let env = Enforced::up("lab_enforcement_change", &v1);
    assert!(
        env.check(Family::V4).is_empty(),
        "v1 not enforced as expected"
    );

    let (retrans_a, retrans_b) = (retrans_in(&env.lab, "x/a"), retrans_in(&env.lab, "x/b"));
    let stop = AtomicBool::new(false);
    let echoed = std::thread::scope(|s| {
        let talker = s.spawn(|| chatter(&env.lab, "x/b", "x/a", &stop, 500));
        std::thread::sleep(Duration::from_millis(300));
        for text in [&v2, &v3, &v1, &v3] {
            env.set_policies(text);
            std::thread::sleep(Duration::from_millis(200));
        }
        stop.store(true, Ordering::Relaxed);
        talker.join().unwrap()
    });
    let echoed =
        echoed.unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", env.lab.log(&env.agent.process)));
    assert!(echoed >= 10, "only {echoed} messages");
    // Retransmissions are how TCP hides a dropped segment: none may occur.
    assert_eq!(
        retrans_in(&env.lab, "x/a"),
        retrans_a,
        "x/a retransmitted: a segment was dropped"
    );
    assert_eq!(
        retrans_in(&env.lab, "x/b"),
        retrans_b,
        "x/b retransmitted: a segment was dropped"
    );
    // And the last version is what is enforced.
    let d = env.check(Family::V4);
    assert!(d.is_empty(), "after the changes:\n{}", d.join("\n"));
}

#[test]
fn lab_enforcement_agent_kill_9_keeps_verdicts() {
    let env = Enforced::up("lab_enforcement_kill", &policies_of("pod-selector"));
    let enforced = env.lab.measure_matrix(&PORTS, Family::V4).unwrap();
    assert!(palisade_lab::diff(&enforced, &env.expected(Family::V4)).is_empty());

    let (retrans_a, retrans_b) = (retrans_in(&env.lab, "x/a"), retrans_in(&env.lab, "x/b"));
    let stop = AtomicBool::new(false);
    let echoed = std::thread::scope(|s| {
        let talker = s.spawn(|| chatter(&env.lab, "x/b", "x/a", &stop, 500));
        std::thread::sleep(Duration::from_millis(300));
        env.lab.signal(&env.agent.process, 9).unwrap();
        let status = env
            .lab
            .wait_exit(&env.agent.process, Duration::from_secs(5))
            .unwrap();
        assert!(status.is_some(), "agent survived kill -9");
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        talker.join().unwrap()
    });
    echoed.unwrap();
    assert_eq!(retrans_in(&env.lab, "x/a"), retrans_a);
    assert_eq!(retrans_in(&env.lab, "x/b"), retrans_b);

    // No agent: the pinned state alone decides, and decides the same.
    let orphaned = env.lab.measure_matrix(&PORTS, Family::V4).unwrap();
    let d = palisade_lab::diff(&orphaned, &enforced);
    assert!(
        d.is_empty(),
        "verdicts changed with the agent gone:\n{d:#?}"
    );

    // A new agent adopts the pins and keeps enforcing.
    let agent = env.lab.start_agent(&env.opts).unwrap();
    env.lab.wait_agent(&agent, 0, AGENT_START).unwrap();
    let adopted = env.lab.measure_matrix(&PORTS, Family::V4).unwrap();
    let d = palisade_lab::diff(&adopted, &enforced);
    assert!(
        d.is_empty(),
        "verdicts changed after the restart:\n{d:#?}\nlog:\n{}",
        env.lab.log(&agent.process)
    );
}

/// Policies the API server would take but Palisade cannot read as
/// written: y/b is selected by a deny-ingress policy whose enforcement
/// mode is misspelt (`Audit`), z/c by one with an object where a port
/// belongs. Both are enforced (the first as written, the second as
/// isolation with nothing allowed), never dropped: probes into y/b and z/c
/// that passed before are refused, every other probe is unchanged.
const NOT_UNDERSTOOD: &str = "
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: y-b-trial
  namespace: y
  annotations: {palisade.dev/enforcement: Audit}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: z-c-web
  namespace: z
spec:
  podSelector: {matchLabels: {pod: c}}
  ingress:
    - ports: [{port: {number: 80}}]
";

#[test]
fn lab_enforcement_policies_not_understood_deny() {
    let v1 = policies_of("pod-selector");
    let env = Enforced::up("lab_enforcement_unread", &v1);
    let before = env.lab.measure_matrix(&PORTS, Family::V4).unwrap();
    let d = palisade_lab::diff(&before, &env.expected(Family::V4));
    assert!(d.is_empty(), "v1 not enforced as expected:\n{d:#?}");

    env.set_policies(&format!("{v1}{NOT_UNDERSTOOD}"));
    let after = env.lab.measure_matrix(&PORTS, Family::V4).unwrap();
    let log = env.lab.log(&env.agent.process);
    let d = palisade_lab::diff(&after, &env.expected(Family::V4));
    assert!(
        d.is_empty(),
        "not enforced as the oracle says:\n{d:#?}\n{log}"
    );

    let selected = |e: &MatrixEntry| e.to == "y/b" || e.to == "z/c";
    let mut refused = 0;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!((&b.from, &b.to, b.port), (&a.from, &a.to, a.port));
        if selected(b) {
            assert!(!a.allowed, "{a:?} passes a policy not understood");
            refused += usize::from(b.allowed);
        } else {
            assert_eq!(a.allowed, b.allowed, "{a:?} changed");
        }
    }
    // 8 sources x 4 probes into each of the two pods.
    assert_eq!(refused, 64, "probes that passed before and are refused now");
    // The agent said why, once each.
    for what in [
        "NetworkPolicy y/y-b-trial: metadata.annotations",
        "NetworkPolicy z/z-c-web: spec.ingress[0].ports[0].port",
    ] {
        assert_eq!(log.matches(what).count(), 1, "{what} in:\n{log}");
    }
}
