//! The ClusterRole of `deploy/clusterrole.yaml` grants exactly what the
//! agent uses, with "what it uses" taken from the agent itself: the agent
//! runs against the in-process API server through every path that talks
//! to the API (first lists and watches of every kind, a reconnect, a relist
//! after 410 Gone, an Event on an invalid policy, the same problem fixed
//! and made again), and the requests the server recorded, turned into
//! (API group, resource, verb) as the API server's authorizer would, must
//! equal the triples the role grants: a verb the role lacks fails here, and
//! so does one it grants that the agent never uses.
//!
//! Runs the `palisade` binary in a network namespace of its own with a
//! private bpffs (guards clean up on failure).

use palisade_fake_apiserver::FakeApiServer;
use palisade_tests::fixtures::shop_api;
use palisade_tests::kernel::{
    add_pod_iface, rounds, settled_rounds, wait_for, Agent, NetNs, Scratch,
};
use palisade_tests::rbac::{deployed_role, granted, request_attributes, Attr};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// A policy on web; its ipBlock is `cidr` (valid or not).
fn policy(cidr: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-web"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}],
        },
    })
}

/// Pod list and watch requests so far.
fn pod_requests(api: &FakeApiServer) -> (usize, usize) {
    let requests = api.requests();
    let pods = requests
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/pods?"));
    let watches = pods.clone().filter(|r| r.contains("watch=true")).count();
    (pods.count() - watches, watches)
}

#[test]
fn deploy_rbac_grants_exactly_what_the_agent_requests() {
    let _ns = NetNs::enter("rbac");
    let s = Scratch::new("rbac");
    let (api, kubeconfig) = shop_api(s.dir(), "10.73.0.2");
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.7.1", "clusterIPs": ["10.96.7.1"],
                 "ports": [{"port": 80, "protocol": "TCP"}]},
    }))
    .unwrap();
    api.apply(policy("10.0.0.0/8")).unwrap();
    api.apply(json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "to-nodes"},
        "spec": {"tier": "Baseline", "priority": 5, "subject": {"namespaces": {}},
                 "egress": [{"action": "Deny", "to": [{"nodes": {}}]}]},
    }))
    .unwrap();
    api.apply(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node1", "labels": {"role": "worker"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.7.1"}]},
    }))
    .unwrap();
    add_pod_iface("web0", "10.73.0.2");
    let agent = Agent::start(
        &s,
        &["--kubeconfig", kubeconfig.to_str().unwrap()],
        &[("NODE_NAME", "node1"), ("RUST_LOG", "info")],
    );
    wait_for(&agent, "the first round", LIMIT, || rounds(&s) >= 1);

    // An invalid policy: one Event. Fixed, then broken again: one more
    // (the agent never repeats an Event, each is new).
    api.apply(policy("10.0.0.300/8")).unwrap();
    wait_for(&agent, "the first Event", LIMIT, || api.events().len() == 1);
    let r = settled_rounds(&s);
    api.apply(policy("10.0.0.0/8")).unwrap();
    wait_for(&agent, "the fixed policy's round", LIMIT, || rounds(&s) > r);
    api.apply(policy("10.0.0.300/8")).unwrap();
    wait_for(&agent, "the second Event", LIMIT, || {
        api.events().len() == 2
    });

    // Streams cut: the watchers reconnect. 410 Gone: they list again.
    let (lists, watches) = pod_requests(&api);
    api.drop_watches();
    wait_for(&agent, "a new watch", LIMIT, || {
        pod_requests(&api).1 > watches
    });
    let (_, watches) = pod_requests(&api);
    api.compact();
    api.expire_watches();
    wait_for(&agent, "a relist and its watch", LIMIT, || {
        let (l, w) = pod_requests(&api);
        l > lists && w > watches
    });

    let requests = api.requests();
    let unmapped: Vec<&String> = requests
        .iter()
        .filter(|r| request_attributes(r).is_none())
        .collect();
    assert!(
        unmapped.is_empty(),
        "requests outside the resource API (would need nonResourceURLs): {unmapped:#?}"
    );
    let used: BTreeSet<Attr> = requests
        .iter()
        .filter_map(|r| request_attributes(r))
        .collect();
    let granted = granted(&deployed_role());
    let missing: Vec<&Attr> = used.difference(&granted).collect();
    let unused: Vec<&Attr> = granted.difference(&used).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "deploy/clusterrole.yaml: the agent needs {missing:?} and does not use {unused:?}\n\
         requests:\n{requests:#?}"
    );
}
