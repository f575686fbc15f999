//! Compiler behaviour the property tests do not pin down: group sharing and
//! order, capacity errors, identity stability across compiles.

use palisade_common::{INNER_PORT_MAX, PROTO_TCP};
use palisade_compiler::{compile, lookup, IdentityAllocator, LookupVerdict};
use palisade_policy::{
    Direction, FieldIssue, Flow, Model, Peer, Pod, Policy, PortMatch, PortSpec, Protocol, Rule,
    RuleRef, Selector,
};
use std::net::IpAddr;

fn pod(name: &str, ip: &str, app: &str) -> Pod {
    Pod {
        namespace: "ns".into(),
        name: name.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        node: Some("n1".into()),
        ips: vec![ip.parse().unwrap()],
        ports: vec![],
        pending: false,
    }
}

fn app(a: &str) -> Option<Selector> {
    Some(Selector {
        match_labels: [("app".to_string(), a.to_string())].into(),
        match_expressions: vec![],
    })
}

fn tcp(port: u16) -> PortSpec {
    PortSpec {
        protocol: Protocol::Tcp,
        port: PortMatch::Range { port, end: port },
    }
}

fn ingress_policy(name: &str, rules: Vec<Rule>) -> Policy {
    Policy {
        namespace: "ns".into(),
        name: name.into(),
        enforcement: Default::default(),
        pod_selector: app("web").unwrap(),
        isolates_ingress: true,
        isolates_egress: false,
        ingress: rules,
        egress: vec![],
        unreadable: None,
        warnings: vec![],
    }
}

fn model(policies: Vec<Policy>) -> Model {
    Model {
        cluster_policies: vec![],
        nodes: vec![],
        namespaces: Default::default(),
        pods: vec![
            pod("web", "10.0.0.1", "web"),
            pod("a", "10.0.0.2", "a"),
            pod("b", "10.0.0.3", "b"),
        ],
        policies,
        services: vec![],
        errors: vec![],
        warnings: vec![],
    }
}

fn rref(policy: &str, rule: usize) -> RuleRef {
    RuleRef {
        policy: format!("ns/{policy}"),
        direction: Direction::Ingress,
        rule,
    }
}

#[test]
fn rules_with_one_port_set_share_a_group_in_stable_order() {
    let from = |a: &str| {
        Some(vec![Peer::Pods {
            namespaces: None,
            pods: app(a),
        }])
    };
    let m = model(vec![
        // Listed out of name order: groups follow policy names.
        ingress_policy(
            "zeta",
            vec![Rule {
                peers: from("b"),
                ports: Some(vec![tcp(80)]),
            }],
        ),
        ingress_policy(
            "alpha",
            vec![
                Rule {
                    peers: from("a"),
                    ports: Some(vec![tcp(443)]),
                },
                // Same set as zeta's rule, written differently.
                Rule {
                    peers: from("a"),
                    ports: Some(vec![tcp(80), tcp(80)]),
                },
            ],
        ),
    ]);
    let node = compile(&m, "n1", &mut IdentityAllocator::new());
    let ing = &node.pods["ns/web"].ingress;
    assert_eq!(ing.groups.len(), 2);
    assert_eq!(ing.groups[0].rules, vec![rref("alpha", 0)]);
    assert_eq!(ing.groups[1].rules, vec![rref("alpha", 1), rref("zeta", 0)]);
    let flow = |src: &str, dport| Flow {
        src: src.parse().unwrap(),
        dst: "10.0.0.1".parse().unwrap(),
        proto: PROTO_TCP,
        dport,
    };
    match lookup(&node, "ns/web", Direction::Ingress, &flow("10.0.0.3", 80)) {
        LookupVerdict::Allowed { group, .. } => assert_eq!(group, 1),
        other => panic!("expected allowed by group 1, got {other:?}"),
    }
    assert_eq!(
        lookup(&node, "ns/web", Direction::Ingress, &flow("10.0.0.3", 443)),
        LookupVerdict::Denied
    );
}

#[test]
fn over_capacity_sets_an_error_and_denies() {
    // Every other TCP port: that many disjoint single-port entries cannot
    // fit the port trie.
    let ports: Vec<PortSpec> = (0..=INNER_PORT_MAX as u16)
        .map(|i| tcp(1 + 2 * i))
        .collect();
    let m = model(vec![ingress_policy(
        "huge",
        vec![Rule {
            peers: None,
            ports: Some(ports),
        }],
    )]);
    let node = compile(&m, "n1", &mut IdentityAllocator::new());
    let web = &node.pods["ns/web"];
    let err = web.error.as_deref().expect("capacity error");
    assert!(err.contains("ns/web") && err.contains("port"), "{err}");
    let flow = Flow {
        src: "10.0.0.2".parse().unwrap(),
        dst: "10.0.0.1".parse().unwrap(),
        proto: PROTO_TCP,
        dport: 1,
    };
    assert_eq!(
        lookup(&node, "ns/web", Direction::Ingress, &flow),
        LookupVerdict::Denied
    );
    // Its egress is denied too (the pod is programmed deny-all).
    assert_eq!(
        lookup(&node, "ns/web", Direction::Egress, &flow),
        LookupVerdict::Denied
    );
    // Other pods are unaffected.
    assert!(node.pods["ns/a"].error.is_none());
}

#[test]
fn identities_survive_recompiles_while_their_label_set_exists() {
    let mut alloc = IdentityAllocator::new();
    let mut m = model(vec![]);
    let first = compile(&m, "n1", &mut alloc);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let id_a = first.identities[&ip("10.0.0.2")];
    let id_b = first.identities[&ip("10.0.0.3")];
    // Pod b takes another label set; a keeps its number, b's old one goes.
    m.pods[2].labels.insert("canary".into(), "1".into());
    let second = compile(&m, "n1", &mut alloc);
    assert_eq!(second.identities[&ip("10.0.0.2")], id_a);
    assert_ne!(second.identities[&ip("10.0.0.3")], id_b);
    assert!(alloc.key(id_b).is_none(), "unused identity freed");
    assert!(second
        .identities
        .values()
        .all(|&id| id >= palisade_common::IDENTITY_FIRST_POD));
}

#[test]
fn families_never_mix() {
    let block = |cidr: &str| Rule {
        peers: Some(vec![Peer::IpBlock {
            cidr: cidr.parse().unwrap(),
            except: vec![],
        }]),
        ports: None,
    };
    let mut m = model(vec![ingress_policy("v6only", vec![block("::/0")])]);
    m.pods[0].ips.push("fd00::1".parse().unwrap());
    let node = compile(&m, "n1", &mut IdentityAllocator::new());
    let check = |src: &str, dst: &str| {
        let flow = Flow {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: PROTO_TCP,
            dport: 80,
        };
        lookup(&node, "ns/web", Direction::Ingress, &flow).allows()
    };
    assert!(check("2001:db8::1", "fd00::1"));
    assert!(!check("192.0.2.1", "10.0.0.1"), "::/0 must not cover IPv4");
}

#[test]
fn an_unreadable_policy_compiles_to_isolation_with_no_bits() {
    let allow_all = vec![Rule {
        peers: None,
        ports: None,
    }];
    let mut unreadable = ingress_policy("broken", allow_all.clone());
    unreadable.unreadable = Some(FieldIssue {
        field: "spec.ingress[1].ports[0].port".into(),
        message: "0 is out of range 1-65535".into(),
    });
    let node = compile(
        &model(vec![unreadable.clone()]),
        "n1",
        &mut IdentityAllocator::new(),
    );
    let ing = &node.pods["ns/web"].ingress;
    assert!(ing.isolated && !ing.audit);
    assert_eq!(ing.isolating, ["ns/broken"]);
    assert!(ing.groups.is_empty(), "{:?}", ing.groups);
    assert_eq!((ing.any_peer, ing.any_port), (0, 0));
    assert!(ing.identities.is_empty() && ing.cidrs.is_empty() && ing.ports.is_empty());
    assert!(ing.spill.is_empty() && !ing.spill_any_peer);
    assert!(!node.pods["ns/web"].egress.isolated);
    // A readable policy on the same pod still allows what it allows.
    let node = compile(
        &model(vec![unreadable, ingress_policy("open", allow_all)]),
        "n1",
        &mut IdentityAllocator::new(),
    );
    let ing = &node.pods["ns/web"].ingress;
    assert_eq!(ing.isolating, ["ns/broken", "ns/open"]);
    assert_eq!(ing.groups.len(), 1);
    assert_eq!(ing.groups[0].rules, vec![rref("open", 0)]);
}
