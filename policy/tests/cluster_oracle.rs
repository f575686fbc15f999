//! The oracle's ClusterNetworkPolicy tiers: order of tiers, priorities and
//! rules, Pass, the NetworkPolicy tier in between, and each peer kind.
//! Cluster policies are built in code so that these tests hold the
//! semantics apart from manifest loading.

use palisade_common::{PROTO_TCP, PROTO_UDP};
use palisade_policy::{
    evaluate, load_str, Action, ClusterPeer, ClusterPolicy, ClusterRule, DirVerdict, Flow, Model,
    Node, PodSet, PortMatch, PortSpec, Protocol, Selector, Tier,
};
use std::net::IpAddr;

const CLUSTER: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {env: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops, labels: {env: ops}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIPs: [{ip: 10.0.0.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
status: {podIPs: [{ip: 10.0.0.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: probe, namespace: ops, labels: {app: probe}}
status: {podIPs: [{ip: 10.0.1.1}]}
";

/// db's ingress allows web only.
const DB_FROM_WEB: &str = "
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]
";

fn model(extra: &str, cluster: Vec<ClusterPolicy>) -> Model {
    let mut m = load_str(&format!("{CLUSTER}{extra}"), "test.yaml");
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    m.cluster_policies = cluster;
    m.cluster_policies
        .sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    m
}

fn ns(name: &str) -> Selector {
    let mut s = Selector::default();
    s.match_labels
        .insert("kubernetes.io/metadata.name".into(), name.into());
    s
}

fn app(name: &str) -> Selector {
    let mut s = Selector::default();
    s.match_labels.insert("app".into(), name.into());
    s
}

fn pods(namespaces: Selector, pods: Selector) -> PodSet {
    PodSet { namespaces, pods }
}

fn rule(action: Action, peers: Vec<ClusterPeer>, ports: Option<Vec<PortSpec>>) -> ClusterRule {
    ClusterRule {
        name: None,
        action,
        peers,
        ports,
    }
}

fn tcp(port: u16) -> Option<Vec<PortSpec>> {
    Some(vec![PortSpec {
        protocol: Protocol::Tcp,
        port: PortMatch::Range { port, end: port },
    }])
}

fn cnp(name: &str, tier: Tier, priority: u32, subject: PodSet) -> ClusterPolicy {
    ClusterPolicy {
        name: name.into(),
        tier,
        priority,
        subject,
        ingress: vec![],
        egress: vec![],
        warnings: vec![],
    }
}

fn flow(src: &str, dst: &str, proto: u8, dport: u16) -> Flow {
    Flow {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto,
        dport,
    }
}

const WEB: &str = "10.0.0.1";
const DB: &str = "10.0.0.2";
const PROBE: &str = "10.0.1.1";

/// The policy and action of a cluster decision, or what else decided.
fn decided_by(v: &DirVerdict) -> String {
    match v {
        DirVerdict::Cluster(r) => format!("{}:{}#{}", r.policy, r.action.name(), r.rule),
        DirVerdict::NotIsolated => "open".into(),
        DirVerdict::Allowed(_) => "np-allow".into(),
        DirVerdict::Denied(_) => "np-deny".into(),
        DirVerdict::WouldDeny(_) => "np-would-deny".into(),
    }
}

#[test]
fn an_admin_deny_overrides_a_network_policy_allow() {
    let mut deny = cnp("deny-web", Tier::Admin, 10, pods(ns("shop"), app("db")));
    deny.ingress = vec![rule(
        Action::Deny,
        vec![ClusterPeer::Pods(pods(Selector::default(), app("web")))],
        None,
    )];
    let m = model(DB_FROM_WEB, vec![deny]);
    let v = evaluate(&m, &flow(WEB, DB, PROTO_TCP, 5432));
    assert_eq!(decided_by(&v.ingress), "deny-web:Deny#0");
    assert!(!v.allowed());
}

#[test]
fn an_admin_accept_overrides_network_policy_isolation() {
    let mut accept = cnp(
        "scrape",
        Tier::Admin,
        1,
        pods(Selector::default(), Selector::default()),
    );
    accept.ingress = vec![rule(
        Action::Accept,
        vec![ClusterPeer::Pods(pods(ns("ops"), Selector::default()))],
        tcp(9090),
    )];
    let m = model(DB_FROM_WEB, vec![accept]);
    let scrape = evaluate(&m, &flow(PROBE, DB, PROTO_TCP, 9090));
    assert_eq!(decided_by(&scrape.ingress), "scrape:Accept#0");
    assert!(scrape.allowed());
    // Another port: the NetworkPolicy decides, and refuses.
    let other = evaluate(&m, &flow(PROBE, DB, PROTO_TCP, 9091));
    assert_eq!(decided_by(&other.ingress), "np-deny");
}

#[test]
fn pass_hands_over_to_network_policy_then_to_the_baseline() {
    let mut pass = cnp(
        "pass-shop",
        Tier::Admin,
        5,
        pods(ns("shop"), Selector::default()),
    );
    pass.ingress = vec![rule(Action::Pass, vec![ClusterPeer::All], None)];
    // A later admin deny of everything: never reached past the Pass.
    let mut deny = cnp(
        "deny-all",
        Tier::Admin,
        6,
        pods(Selector::default(), Selector::default()),
    );
    deny.ingress = vec![rule(Action::Deny, vec![ClusterPeer::All], None)];
    let mut baseline = cnp(
        "baseline",
        Tier::Baseline,
        0,
        pods(ns("shop"), Selector::default()),
    );
    baseline.ingress = vec![rule(
        Action::Deny,
        vec![ClusterPeer::Pods(pods(ns("ops"), Selector::default()))],
        None,
    )];
    let m = model(DB_FROM_WEB, vec![deny, baseline, pass]);
    // db is isolated by its NetworkPolicy: it decides.
    assert_eq!(
        decided_by(&evaluate(&m, &flow(WEB, DB, PROTO_TCP, 1)).ingress),
        "np-allow"
    );
    assert_eq!(
        decided_by(&evaluate(&m, &flow(PROBE, DB, PROTO_TCP, 1)).ingress),
        "np-deny"
    );
    // web is not: the baseline decides, then the default allows.
    let from_probe = evaluate(&m, &flow(PROBE, WEB, PROTO_TCP, 1));
    assert_eq!(decided_by(&from_probe.ingress), "baseline:Deny#0");
    assert_eq!(
        decided_by(&evaluate(&m, &flow(DB, WEB, PROTO_TCP, 1)).ingress),
        "open"
    );
    // probe is not in shop: the admin deny-all decides its ingress.
    let to_probe = evaluate(&m, &flow(WEB, PROBE, PROTO_TCP, 1));
    assert_eq!(decided_by(&to_probe.ingress), "deny-all:Deny#0");
}

#[test]
fn lower_priority_first_then_name_then_rule_order() {
    let subject = || pods(Selector::default(), Selector::default());
    let mut b = cnp("b", Tier::Admin, 3, subject());
    b.egress = vec![rule(Action::Accept, vec![ClusterPeer::All], None)];
    let mut a = cnp("a", Tier::Admin, 3, subject());
    a.egress = vec![
        rule(Action::Pass, vec![ClusterPeer::All], tcp(80)),
        rule(Action::Deny, vec![ClusterPeer::All], None),
    ];
    let mut first = cnp("z", Tier::Admin, 2, subject());
    first.egress = vec![rule(
        Action::Accept,
        vec![ClusterPeer::Networks(vec!["10.0.0.2/32".parse().unwrap()])],
        None,
    )];
    let m = model("", vec![b, a, first]);
    let verdict = |dst, port| decided_by(&evaluate(&m, &flow(WEB, dst, PROTO_UDP, port)).egress);
    // Priority 2 before 3; networks match pod addresses too.
    assert_eq!(verdict(DB, 53), "z:Accept#0");
    // Same priority: a before b; rule 0 only for TCP 80.
    assert_eq!(verdict(PROBE, 53), "a:Deny#1");
    let tcp80 = evaluate(&m, &flow(WEB, PROBE, PROTO_TCP, 80));
    assert_eq!(decided_by(&tcp80.egress), "open");
}

#[test]
fn an_egress_accept_leaves_the_destination_its_ingress() {
    let mut accept = cnp("out", Tier::Admin, 0, pods(ns("ops"), Selector::default()));
    accept.egress = vec![rule(Action::Accept, vec![ClusterPeer::All], None)];
    let m = model(DB_FROM_WEB, vec![accept]);
    let v = evaluate(&m, &flow(PROBE, DB, PROTO_TCP, 80));
    assert_eq!(decided_by(&v.egress), "out:Accept#0");
    assert_eq!(decided_by(&v.ingress), "np-deny");
    assert!(!v.allowed());
}

#[test]
fn nodes_peers_match_node_addresses_only() {
    let mut m = model("", vec![]);
    let node_ip: IpAddr = "192.168.0.7".parse().unwrap();
    let mut labels = palisade_policy::Labels::new();
    labels.insert("role".to_string(), "infra".to_string());
    m.nodes = vec![Node {
        name: "n1".into(),
        labels,
        addresses: vec![node_ip],
    }];
    let mut role = Selector::default();
    role.match_labels.insert("role".into(), "infra".into());
    let mut deny = cnp(
        "no-infra",
        Tier::Admin,
        0,
        pods(Selector::default(), Selector::default()),
    );
    deny.egress = vec![rule(Action::Deny, vec![ClusterPeer::Nodes(role)], None)];
    m.cluster_policies = vec![deny];
    let to_node = evaluate(&m, &flow(WEB, "192.168.0.7", PROTO_TCP, 10250));
    assert_eq!(decided_by(&to_node.egress), "no-infra:Deny#0");
    let elsewhere = evaluate(&m, &flow(WEB, "192.168.0.8", PROTO_TCP, 10250));
    assert_eq!(decided_by(&elsewhere.egress), "open");
}

#[test]
fn named_ports_resolve_on_the_receiving_pod() {
    let named = Some(vec![PortSpec {
        protocol: Protocol::Tcp,
        port: PortMatch::Named("http".into()),
    }]);
    let mut deny = cnp(
        "no-http",
        Tier::Baseline,
        0,
        pods(Selector::default(), Selector::default()),
    );
    deny.egress = vec![rule(Action::Deny, vec![ClusterPeer::All], named.clone())];
    deny.ingress = vec![rule(Action::Deny, vec![ClusterPeer::All], named)];
    let m = model("", vec![deny]);
    // web declares http = 8080; db declares nothing.
    let to_web = evaluate(&m, &flow(PROBE, WEB, PROTO_TCP, 8080));
    assert_eq!(decided_by(&to_web.egress), "no-http:Deny#0");
    assert_eq!(decided_by(&to_web.ingress), "no-http:Deny#0");
    let to_db = evaluate(&m, &flow(PROBE, DB, PROTO_TCP, 8080));
    assert!(to_db.allowed());
}
