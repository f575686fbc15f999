//! Generators of ClusterNetworkPolicies: every action and peer kind, few
//! priorities (ties broken by name), Nodes on outside addresses.

use super::*;
use palisade_policy::{Action, ClusterPeer, ClusterPolicy, ClusterRule, Node, PodSet, Tier};

pub fn action() -> impl Strategy<Value = Action> {
    prop_oneof![Just(Action::Accept), Just(Action::Deny), Just(Action::Pass)]
}

pub fn pod_set() -> impl Strategy<Value = PodSet> {
    (ns_selector(), selector(&["app"])).prop_map(|(namespaces, pods)| PodSet { namespaces, pods })
}

pub fn cluster_peer() -> impl Strategy<Value = ClusterPeer> {
    prop_oneof![
        4 => pod_set().prop_map(ClusterPeer::Pods),
        2 => proptest::collection::vec(cidr(), 1..=2).prop_map(ClusterPeer::Networks),
        1 => selector(&["role"]).prop_map(ClusterPeer::Nodes),
        1 => Just(ClusterPeer::All),
    ]
}

pub fn cluster_rule() -> impl Strategy<Value = ClusterRule> {
    (
        action(),
        proptest::collection::vec(cluster_peer(), 0..=3),
        proptest::option::weighted(0.6, proptest::collection::vec(port_spec(), 0..=2)),
    )
        .prop_map(|(action, peers, ports)| ClusterRule {
            name: None,
            action,
            peers,
            ports,
        })
}

pub fn cluster_policy(index: usize) -> impl Strategy<Value = ClusterPolicy> {
    let tier = prop_oneof![Just(Tier::Admin), Just(Tier::Baseline)];
    let rules = || proptest::collection::vec(cluster_rule(), 0..=3);
    // Few priorities, so that ties (broken by name) are common.
    (tier, 0..3u32, pod_set(), rules(), rules()).prop_map(
        move |(tier, priority, subject, ingress, egress)| ClusterPolicy {
            // Names sort against the index, so name order is no index order.
            name: format!("cnp-{}", (7 - index) % 8),
            tier,
            priority,
            subject,
            ingress,
            egress,
            warnings: vec![],
        },
    )
}

/// Nodes on outside addresses the flows use, one labelled `role`.
pub fn nodes() -> Vec<Node> {
    let labels = |role: &str| Labels::from([("role".to_string(), role.to_string())]);
    vec![
        Node {
            name: "n1".into(),
            labels: labels("a"),
            addresses: vec![v4(9), v6(9)],
        },
        Node {
            name: "n2".into(),
            labels: labels("b"),
            addresses: vec![v4(200)],
        },
    ]
}

pub fn mixed_model() -> impl Strategy<Value = Model> {
    let policies = (0..4usize).map(cluster_policy).collect::<Vec<_>>();
    (
        model_strategy(3),
        proptest::sample::subsequence(vec![0usize, 1, 2, 3], 0..=4),
        policies,
    )
        .prop_map(|(mut model, keep, policies)| {
            model.cluster_policies = keep.into_iter().map(|i| policies[i].clone()).collect();
            model
                .cluster_policies
                .sort_by(|a, b| a.order_key().cmp(&b.order_key()));
            model.nodes = nodes();
            model
        })
}
