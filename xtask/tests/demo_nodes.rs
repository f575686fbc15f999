//! `cargo xtask demo` on manifests whose pods name their nodes: one lab
//! node per name, every pod on its own node, and the measured matrix
//! (`--output json`) equal to the oracle's, with each pod wiring. Needs
//! root and the built binaries.

mod common;

use common::{lab_lock, pod, xtask, Scratch, NAMESPACE};
use palisade_lab::{Family, ProbePort, Protocol};
use std::path::Path;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

/// Only `role: front` may reach the `role: db` pod; everything else is open.
const POLICY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
    metadata: {name: db, namespace: x}\n\
    spec:\n  podSelector: {matchLabels: {role: db}}\n  policyTypes: [Ingress]\n\
    \x20 ingress:\n  - from:\n    - podSelector: {matchLabels: {role: front}}\n";

/// Two pods per node, in per-node subnets (so the bridge layout's subnet
/// of one node holds no pod of the other).
fn manifests(dir: &Path, named: bool) {
    let node = |n: &'static str| named.then_some(n);
    let pods = [
        pod("a", "front", node("node-a"), "10.1.1.10"),
        pod("b", "back", node("node-a"), "10.1.1.11"),
        pod("c", "db", node("node-b"), "10.1.2.10"),
        pod("d", "back", node("node-b"), "10.1.2.11"),
    ];
    std::fs::write(
        dir.join("topology.yaml"),
        format!("{NAMESPACE}---\n{}", pods.join("---\n")),
    )
    .unwrap();
    std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();
}

/// Runs the demo and checks stdout against the oracle; returns stderr.
fn demo_agrees(tag: &str, named: bool, extra: &[&str]) -> String {
    let _one_at_a_time = lab_lock();
    let scratch = Scratch::new(tag);
    manifests(scratch.path(), named);
    let dir = scratch.path().to_str().unwrap();
    let mut args = vec![
        "demo",
        "--manifests",
        dir,
        "--ports",
        "80/TCP",
        "--output",
        "json",
    ];
    args.extend(extra);
    let started = Instant::now();
    let run = xtask(&args, LIMIT);
    eprintln!("{tag}: demo took {:?}", started.elapsed());
    assert!(run.ok, "demo {args:?} failed; stderr:\n{}", run.stderr);
    let measured: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", run.stdout));
    let model = palisade_policy::load_paths(&[scratch.path().to_path_buf()]);
    assert!(model.errors.is_empty(), "{:?}", model.errors);
    let ports = [ProbePort {
        port: 80,
        protocol: Protocol::Tcp,
    }];
    let expected =
        serde_json::to_value(palisade_policy::matrix(&model, &ports, Family::V4)).unwrap();
    assert_eq!(measured, expected, "stderr:\n{}", run.stderr);
    // The policy denies something, so agreeing means it was enforced.
    assert!(measured
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["allowed"] == false));
    run.stderr
}

#[test]
fn pods_naming_two_nodes_run_on_two_nodes() {
    let stderr = demo_agrees("named-routed", true, &[]);
    assert!(stderr.contains("2 node(s) (node-a, node-b)"), "{stderr}");
    assert!(stderr.contains("node-a: x/a, x/b"), "{stderr}");
    assert!(stderr.contains("8 of 12 probes crossed nodes"), "{stderr}");
}

#[test]
fn bridge_wiring_with_palisade_cni_on_two_nodes() {
    let stderr = demo_agrees("named-bridge", true, &["--cni", "bridge"]);
    assert!(stderr.contains("bridge pod wiring"), "{stderr}");
}

#[test]
fn ptp_wiring_with_palisade_cni_on_one_node() {
    let stderr = demo_agrees("unnamed-ptp", false, &["--cni", "ptp"]);
    assert!(stderr.contains("1 node(s) (node-1)"), "{stderr}");
}

#[test]
fn nodes_flag_contradicting_the_manifests_is_refused() {
    let scratch = Scratch::new("contradiction");
    manifests(scratch.path(), true);
    let dir = scratch.path().to_str().unwrap();
    let run = xtask(&["demo", "--manifests", dir, "--nodes", "3"], LIMIT);
    assert!(!run.ok);
    assert!(
        run.stderr.contains("--nodes 3 contradicts the manifests"),
        "{}",
        run.stderr
    );
}
