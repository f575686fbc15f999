//! Conntrack fairness on real traffic: pod `other` opens more flows than
//! the node-wide conntrack table holds (`CONNTRACK_MAX`, 2.7 times over), each used twice
//! as an LRU would keep it, while the client holds UDP flows to web-a (a
//! server whose egress allows nothing) and through Service `web`'s
//! ClusterIP. After the flood each server speaks first on its flow: its
//! datagrams pass the server's egress and the client's ingress (which
//! admits nobody) only as replies, so only while both ends' entries live.
//! Each pod's flows live in its own table (`CONNTRACK_POD`), so the flood
//! evicts only the flooder's entries. (The node's own `nf_conntrack` does
//! not track the flood here: a pod can fill that table on any node, and
//! that is not Palisade's; see `flood::untracked`.)
//!
//! The control runs the same flood with one node-wide table
//! (`--conntrack-per-pod 0`, the layout before per-pod tables) and shows
//! that the attack is real: the flows lose their replies there.
//!
//! Prints `attack conntrack-flood: flows opened N, pushes sent S, lost M`. Needs
//! the `palisade` binary: `$PALISADE_BIN`, else target/debug/palisade.

use palisade_common::CONNTRACK_MAX;
use palisade_lab::{DnatTarget, Family, Masquerade};
use palisade_tests::flood::{open_flows, push_all, untracked, OneCpu, PushedFlow};
use palisade_tests::services::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Flooding sockets per target, targets (web-b's two addresses), ports
/// per socket and target: 720,000 flows, 2.7 times `CONNTRACK_MAX`. The
/// kernel's LRU moves a referenced entry to the head of its active list
/// once before it may be evicted, so a flood must pass the table about
/// twice to evict what the client used. Client and flood share one CPU
/// (`OneCpu`): unpinned, the control lost only the flows whose entries the
/// client happened to insert on the flood's CPU, none at all in one CI run.
const SOCKETS: usize = 6;
const PORTS: std::ops::Range<u16> = 1..60_001;
const FLOOD_LIMIT: Duration = Duration::from_secs(120);
/// Pushes each established flow's server sends after the flood.
const ROUNDS: usize = 3;

/// The client reaches the backends through the Service; nothing reaches
/// the client, and the backends reach nothing, but as replies.
fn policies() -> String {
    format!(
        "{}{}",
        client_policy("{app: web}"),
        policy(
            "web",
            "web",
            "[Ingress, Egress]",
            "[{from: [{podSelector: {matchLabels: {app: client}}}]}]",
            "[]",
        )
    )
}

/// The client's UDP flows, each answered once, in both families: to
/// web-a directly (a server whose egress allows nothing) and through the
/// Service's ClusterIP (to whichever backend DNAT picked).
fn open_flows_of_client(node: &ServiceNode) -> Vec<PushedFlow> {
    let logs = || node.log();
    let via = node.via(&logs);
    let lab = &node.lab;
    let mut flows = Vec::new();
    for family in [Family::V4, Family::V6] {
        let web_a = SocketAddr::new(lab.ip("svc/web-a", family).unwrap(), 9090);
        let opened = PushedFlow::open(lab, "svc/client", web_a);
        let name = format!("web-a {web_a} -> client");
        flows.push(PushedFlow::new(
            lab,
            name,
            opened,
            web_a,
            "svc/web-a",
            web_a,
        ));

        let cluster_ip = SocketAddr::new(via.cluster_ip(family), 90);
        let before = via.picks();
        let opened = PushedFlow::open(lab, "svc/client", cluster_ip);
        let backend = picked(&before, &via.picks());
        let pod = ["svc/web-a", "svc/web-b"]
            .into_iter()
            .find(|p| lab.ip(p, family).unwrap() == backend.ip())
            .expect("the backend is a web pod");
        let name = format!("{pod} {backend} via {cluster_ip} -> client");
        flows.push(PushedFlow::new(lab, name, opened, cluster_ip, pod, backend));
    }
    flows
}

/// The backend of the one connection DNAT counted between two readings.
fn picked(before: &BTreeMap<DnatTarget, u64>, after: &BTreeMap<DnatTarget, u64>) -> SocketAddr {
    let moved: Vec<_> = after
        .iter()
        .filter(|(t, n)| before.get(t) != Some(n))
        .collect();
    assert_eq!(moved.len(), 1, "one DNAT expected: {moved:?}");
    moved[0].0.backend
}

/// Opens the client's flows, floods from `other`, then has each server
/// push on its flow: the pushes lost per flow.
fn flood_then_push(node: &ServiceNode) -> Vec<(String, usize)> {
    node.set_policies(&policies());
    let _pinned = OneCpu::pin();
    let flows = open_flows_of_client(node);
    let first = push_all(&flows, 1);
    assert!(
        first.iter().all(|f| f.1 == 0),
        "pushes before the flood: {first:?}"
    );
    let targets = [
        node.lab.ip("svc/web-b", Family::V4).unwrap(),
        node.lab.ip("svc/web-b", Family::V6).unwrap(),
    ];
    untracked(&node.lab, "svc/other");
    let opened = open_flows(
        &node.lab,
        "svc/other",
        &targets,
        SOCKETS,
        PORTS,
        FLOOD_LIMIT,
    );
    assert!(
        opened > CONNTRACK_MAX as usize,
        "the flood opened only {opened} flows"
    );
    let lost = push_all(&flows, ROUNDS);
    let total: usize = lost.iter().map(|(_, n)| n).sum();
    println!(
        "attack conntrack-flood: flows opened {opened}, pushes sent {}, lost {total}: {lost:?}",
        ROUNDS * lost.len()
    );
    lost
}

#[test]
fn a_pod_opening_more_flows_than_the_table_holds_evicts_no_other_pods_flows() {
    let node = ServiceNode::up("ct_fairness");
    let lost = flood_then_push(&node);
    assert!(
        lost.iter().all(|(_, n)| *n == 0),
        "established flows lost replies: {lost:?}\n{}",
        node.log()
    );
}

#[test]
fn control_with_one_node_wide_table_the_flood_evicts_them() {
    let node = ServiceNode::up_with(
        "ct_fairness_shared",
        Masquerade::default(),
        &["--conntrack-per-pod", "0"],
    );
    let lost = flood_then_push(&node);
    assert!(
        lost.iter().any(|(_, n)| *n > 0),
        "the flood evicted nothing: the fairness test proves nothing\n{}",
        node.log()
    );
}
