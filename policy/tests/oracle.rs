//! The oracle's verdicts in detail: which rules allow, which policies
//! isolate, ICMP, addresses outside the cluster, named ports.

use palisade_common::{PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use palisade_policy::{
    evaluate, evaluate_direction, load_str, DirVerdict, Direction, Flow, Model, RuleRef,
};

const CLUSTER: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {env: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIPs: [{ip: 10.0.0.1}, {ip: 'fd00::1'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {containers: [{name: c, ports: [{name: pg, containerPort: 5432}]}]}
status: {podIPs: [{ip: 10.0.0.2}, {ip: 'fd00::2'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: probe, namespace: ops, labels: {app: probe}}
status: {podIPs: [{ip: 10.0.1.1}]}
---
# db: ingress from web on the named port, and from ops on anything.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: web}}}]
      ports: [{port: pg}]
    - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ops}}}]
---
# A second policy selecting db, also allowing web on 5432: both rules show.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-db-numeric, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
    - from: [{ipBlock: {cidr: 10.0.0.0/24}}]
      ports: [{port: 5432}]
---
# web: egress to db's named port, and to the outside world on 443 except a range.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
    - to: [{podSelector: {matchLabels: {app: db}}}]
      ports: [{port: pg}]
    - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [192.168.0.0/16]}}]
      ports: [{port: 443}]
";

fn model() -> Model {
    let m = load_str(CLUSTER, "cluster.yaml");
    assert!(m.errors.is_empty(), "{:#?}", m.errors);
    m
}

fn flow(src: &str, dst: &str, proto: u8, dport: u16) -> Flow {
    Flow {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto,
        dport,
    }
}

fn rule(policy: &str, direction: Direction, rule: usize) -> RuleRef {
    RuleRef {
        policy: policy.into(),
        direction,
        rule,
    }
}

#[test]
fn every_allowing_rule_is_listed_sorted() {
    let m = model();
    let v = evaluate(&m, &flow("10.0.0.1", "10.0.0.2", PROTO_TCP, 5432));
    assert!(v.allowed());
    assert_eq!(
        v.egress,
        DirVerdict::Allowed(vec![rule("shop/web-egress", Direction::Egress, 0)])
    );
    assert_eq!(
        v.ingress,
        DirVerdict::Allowed(vec![
            rule("shop/a-db-numeric", Direction::Ingress, 0),
            rule("shop/db-ingress", Direction::Ingress, 0),
        ])
    );
}

#[test]
fn denial_names_the_isolating_policies() {
    let m = model();
    // web is only allowed to reach db on pg = 5432.
    let v = evaluate(&m, &flow("10.0.0.1", "10.0.0.2", PROTO_TCP, 5433));
    assert!(!v.allowed());
    assert_eq!(v.egress, DirVerdict::Denied(vec!["shop/web-egress".into()]));
    assert_eq!(
        v.ingress,
        DirVerdict::Denied(vec!["shop/a-db-numeric".into(), "shop/db-ingress".into()])
    );
}

#[test]
fn rules_without_ports_match_every_protocol_including_icmp() {
    let m = model();
    for (proto, port) in [
        (PROTO_ICMP, 0),
        (PROTO_UDP, 53),
        (PROTO_SCTP, 9),
        (PROTO_TCP, 1),
    ] {
        let v = evaluate(&m, &flow("10.0.1.1", "10.0.0.2", proto, port));
        assert_eq!(
            v.ingress,
            DirVerdict::Allowed(vec![rule("shop/db-ingress", Direction::Ingress, 1)]),
            "proto {proto}"
        );
        assert_eq!(v.egress, DirVerdict::NotIsolated);
    }
    // Rules with ports never match ICMP.
    let v = evaluate(&m, &flow("10.0.0.1", "10.0.0.2", PROTO_ICMP, 0));
    assert!(!v.egress.allows());
    assert!(!v.ingress.allows());
    let v = evaluate(&m, &flow("fd00::1", "fd00::2", PROTO_ICMPV6, 0));
    assert!(!v.allowed());
}

#[test]
fn addresses_outside_the_cluster() {
    let m = model();
    // web -> the internet on 443: egress allowed by the ipBlock, the
    // destination is no pod so its side is not checked.
    let v = evaluate(&m, &flow("10.0.0.1", "1.1.1.1", PROTO_TCP, 443));
    assert_eq!(
        v.egress,
        DirVerdict::Allowed(vec![rule("shop/web-egress", Direction::Egress, 1)])
    );
    assert_eq!(v.ingress, DirVerdict::NotIsolated);
    assert!(v.allowed());
    // except
    assert!(!evaluate(&m, &flow("10.0.0.1", "192.168.3.4", PROTO_TCP, 443)).allowed());
    // The IPv4 block does not cover IPv6.
    assert!(!evaluate(&m, &flow("fd00::1", "2001:db8::1", PROTO_TCP, 443)).allowed());
    // From outside to db: no rule names it.
    let v = evaluate(&m, &flow("172.16.0.1", "10.0.0.2", PROTO_TCP, 5432));
    assert_eq!(v.egress, DirVerdict::NotIsolated);
    assert!(!v.allowed());
    // Neither end a pod: nothing to check.
    assert!(evaluate(&m, &flow("172.16.0.1", "172.16.0.2", PROTO_TCP, 1)).allowed());
}

#[test]
fn ip_blocks_match_pod_addresses() {
    let m = model();
    // web (10.0.0.1) is a pod inside 10.0.0.0/24: the ipBlock rule of
    // a-db-numeric matches it like any address.
    let v = evaluate(&m, &flow("10.0.0.1", "10.0.0.2", PROTO_TCP, 5432));
    assert!(
        matches!(&v.ingress, DirVerdict::Allowed(r) if r.contains(&rule("shop/a-db-numeric", Direction::Ingress, 0)))
    );
    // probe (10.0.1.1) is outside it: only the namespace rule allows.
    let v = evaluate(&m, &flow("10.0.1.1", "10.0.0.2", PROTO_TCP, 5432));
    assert_eq!(
        v.ingress,
        DirVerdict::Allowed(vec![rule("shop/db-ingress", Direction::Ingress, 1)])
    );
}

#[test]
fn named_ports_resolve_on_the_receiving_pod() {
    let m = model();
    let db = m.pod("shop", "db").unwrap();
    // Ingress: `pg` is db's own 5432.
    let f = flow("10.0.0.1", "10.0.0.2", PROTO_TCP, 5432);
    assert!(evaluate_direction(&m, db, Direction::Ingress, &f).allows());
    // Egress from web: `pg` resolves on the destination. probe declares no
    // pg, so web -> probe:5432 is denied, and so is any non-pod address.
    let web = m.pod("shop", "web").unwrap();
    let to_probe = flow("10.0.0.1", "10.0.1.1", PROTO_TCP, 5432);
    assert!(!evaluate_direction(&m, web, Direction::Egress, &to_probe).allows());
    let outside = flow("10.0.0.1", "10.9.9.9", PROTO_TCP, 5432);
    assert!(!evaluate_direction(&m, web, Direction::Egress, &outside).allows());
    // Named port with the wrong protocol.
    let udp = flow("10.0.0.1", "10.0.0.2", PROTO_UDP, 5432);
    assert!(!evaluate_direction(&m, web, Direction::Egress, &udp).allows());
}

#[test]
fn pods_without_policies_are_not_isolated() {
    let m = model();
    let probe = m.pod("ops", "probe").unwrap();
    let f = flow("10.0.0.1", "10.0.1.1", PROTO_TCP, 80);
    assert_eq!(
        evaluate_direction(&m, probe, Direction::Ingress, &f),
        DirVerdict::NotIsolated
    );
    assert_eq!(m.policies_selecting(probe).count(), 0);
    let db = m.pod("shop", "db").unwrap();
    assert_eq!(m.isolating_policies(db, Direction::Ingress).count(), 2);
    assert_eq!(m.isolating_policies(db, Direction::Egress).count(), 0);
}
