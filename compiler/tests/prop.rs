//! Property tests: the lookup model on the compiled maps must agree with the
//! spec oracle on random topologies, policies (enforced and audit) and
//! flows, would-deny verdicts included.
//!
//! Cases: 10,000 for the general property and 500 for the spill property by
//! default; `PALISADE_PROPTEST_CASES=N` sets the general count (the spill
//! count follows at N/20).

mod strategies;

use palisade_common::RULE_BITS;
use palisade_common::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use palisade_compiler::{check, compile, lookup, IdentityAllocator, LookupVerdict};
use palisade_policy::{
    evaluate, evaluate_direction, DirVerdict, Direction, Enforcement, Flow, Model, NamedPort, Peer,
    Pod, Policy, PortMatch, PortSpec, Protocol, Rule, Selector,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::cell::Cell;
use std::net::IpAddr;
use strategies::*;
// ---------- comparison ----------

fn agree(
    dir: Direction,
    pod: &Pod,
    got: &LookupVerdict,
    want: &DirVerdict,
) -> Result<(), TestCaseError> {
    match (got, want) {
        (LookupVerdict::NotIsolated, DirVerdict::NotIsolated) => Ok(()),
        (LookupVerdict::Denied, DirVerdict::Denied(_)) => Ok(()),
        (LookupVerdict::WouldDeny, DirVerdict::WouldDeny(_)) => Ok(()),
        (LookupVerdict::Allowed { group, rules }, DirVerdict::Allowed(oracle_rules)) => {
            // A group unites rules with one port set: the one that set the
            // bit must be among the rules the oracle says allow the flow.
            prop_assert!(
                rules.iter().any(|r| oracle_rules.contains(r)),
                "{dir:?} of {}/{}: group {group} ({rules:?}) has none of the oracle's rules {oracle_rules:?}",
                pod.namespace,
                pod.name
            );
            Ok(())
        }
        _ => Err(TestCaseError::fail(format!(
            "{dir:?} of {}/{}: lookup {got:?}, oracle {want:?}",
            pod.namespace, pod.name
        ))),
    }
}

/// How often each kind of outcome was seen, so that a generator change
/// that stops exercising a feature fails loudly instead of passing vacuously.
#[derive(Default)]
struct Coverage {
    not_isolated: Cell<usize>,
    denied: Cell<usize>,
    would_deny: Cell<usize>,
    allowed: Cell<usize>,
    by_audit_rule: Cell<usize>,
    /// Denied (or allowed) by enforced policies while an audit policy also
    /// isolates the same pod direction.
    enforced_over_audit: Cell<usize>,
    by_named_ingress: Cell<usize>,
    by_named_egress: Cell<usize>,
    by_block_on_pod: Cell<usize>,
    by_spilled_group: Cell<usize>,
}

impl Coverage {
    fn bump(c: &Cell<usize>) {
        c.set(c.get() + 1);
    }

    fn record(
        &self,
        model: &Model,
        pod: &Pod,
        dir: Direction,
        peer: IpAddr,
        got: &LookupVerdict,
        want: &DirVerdict,
    ) {
        let audit_isolates = model
            .isolating_policies(pod, dir)
            .any(|p| p.enforcement == Enforcement::Audit);
        match want {
            DirVerdict::NotIsolated => Self::bump(&self.not_isolated),
            DirVerdict::Denied(_) => {
                Self::bump(&self.denied);
                if audit_isolates {
                    Self::bump(&self.enforced_over_audit);
                }
            }
            DirVerdict::WouldDeny(_) => Self::bump(&self.would_deny),
            DirVerdict::Cluster(_) => unreachable!("no ClusterNetworkPolicy in these models"),
            DirVerdict::Allowed(rules) => {
                Self::bump(&self.allowed);
                for r in rules {
                    let policy = model
                        .policies
                        .iter()
                        .find(|p| p.key() == r.policy)
                        .expect("rule's policy");
                    if policy.enforcement == Enforcement::Audit {
                        Self::bump(&self.by_audit_rule);
                    }
                    let rule = &policy.rules(r.direction)[r.rule];
                    let named = rule
                        .ports
                        .iter()
                        .flatten()
                        .any(|p| matches!(p.port, PortMatch::Named(_)));
                    if named {
                        match r.direction {
                            Direction::Ingress => Self::bump(&self.by_named_ingress),
                            Direction::Egress => Self::bump(&self.by_named_egress),
                        }
                    }
                    let is_pod = model.pods.iter().any(|p| p.ips.contains(&peer));
                    if is_pod && rule.peers.iter().flatten().any(|p| p.block_contains(peer)) {
                        Self::bump(&self.by_block_on_pod);
                    }
                }
            }
        }
        if let LookupVerdict::Allowed { group, .. } = got {
            if *group >= RULE_BITS as usize {
                Self::bump(&self.by_spilled_group);
            }
        }
    }

    fn assert_seen(&self, spill: bool) {
        let mut all = vec![
            ("not isolated", self.not_isolated.get()),
            ("denied", self.denied.get()),
            ("would deny", self.would_deny.get()),
            ("allowed", self.allowed.get()),
            (
                "allowed by an audit policy's rule",
                self.by_audit_rule.get(),
            ),
            (
                "allowed by an ingress named port",
                self.by_named_ingress.get(),
            ),
            (
                "allowed by an egress named port",
                self.by_named_egress.get(),
            ),
            (
                "allowed by an ipBlock covering a pod address",
                self.by_block_on_pod.get(),
            ),
        ];
        if spill {
            all.push(("allowed by a spilled group", self.by_spilled_group.get()));
        } else {
            // The spill model has one policy per namespace: no mix there.
            all.push((
                "denied by enforced policies over an audit one",
                self.enforced_over_audit.get(),
            ));
        }
        eprintln!("coverage: {all:?}");
        for (what, n) in all {
            assert!(
                n > 0,
                "no flow was {what}: the generators no longer exercise it"
            );
        }
    }
}

fn check_flows(model: &Model, flows: &[FlowSpec], cov: &Coverage) -> Result<(), TestCaseError> {
    let mut alloc = IdentityAllocator::new();
    let node = compile(model, NODE, &mut alloc);
    for pod in &model.pods {
        let key = format!("{}/{}", pod.namespace, pod.name);
        let cp = &node.pods[&key];
        prop_assert!(cp.error.is_none(), "{key}: {:?}", cp.error);
        // Which policies decide each direction, and whether it is audit.
        for dir in [Direction::Ingress, Direction::Egress] {
            let d = cp.direction(dir);
            let (audit, isolating) = match model.deciding_policies(pod, dir) {
                None => (false, Vec::new()),
                Some(dec) => {
                    let mut keys: Vec<String> = dec.policies.iter().map(|p| p.key()).collect();
                    keys.sort();
                    (dec.audit, keys)
                }
            };
            prop_assert_eq!(d.isolated, !isolating.is_empty(), "{} {:?}", key, dir);
            prop_assert_eq!(d.audit, audit, "{} {:?}", key, dir);
            prop_assert_eq!(&d.isolating, &isolating, "{} {:?}", key, dir);
        }
    }
    for spec in flows {
        let flow = to_flow(model, spec);
        for (dir, addr) in [
            (Direction::Egress, flow.src),
            (Direction::Ingress, flow.dst),
        ] {
            if let Some(pod) = model.pods.iter().find(|p| p.ips.contains(&addr)) {
                let key = format!("{}/{}", pod.namespace, pod.name);
                let got = lookup(&node, &key, dir, &flow);
                let want = evaluate_direction(model, pod, dir, &flow);
                let peer = if dir == Direction::Egress {
                    flow.dst
                } else {
                    flow.src
                };
                cov.record(model, pod, dir, peer, &got, &want);
                agree(dir, pod, &got, &want)
                    .map_err(|e| TestCaseError::fail(format!("{e} for {flow:?}")))?;
            }
        }
        let (got, want) = (check(&node, &flow), evaluate(model, &flow));
        prop_assert_eq!(got.allowed(), want.allowed(), "{:?}", flow);
        prop_assert_eq!(got.would_deny(), want.would_deny(), "{:?}", flow);
    }
    Ok(())
}

#[test]
fn lookup_agrees_with_oracle() {
    let mut runner = TestRunner::new(Config {
        cases: cases(10_000),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        model_strategy(4),
        proptest::collection::vec(flow_spec(), 24),
    );
    let cov = Coverage::default();
    runner
        .run(&strategy, |(model, flows)| {
            check_flows(&model, &flows, &cov)
        })
        .unwrap();
    cov.assert_seen(false);
}

// ---------- spill ----------

/// More than `RULE_BITS` distinct port sets in one policy, so that groups
/// spill; the random rules go both before and after the filler rules so
/// that any-peer, any-port, CIDR, identity and named-port groups land in
/// the spilled range as well as in the bits.
fn spill_model() -> impl Strategy<Value = Model> {
    (
        namespaces_strategy(),
        pods_strategy(),
        selector(&["app"]),
        proptest::collection::vec(rule(), 0..=4),
        proptest::collection::vec(rule(), 1..=8),
        proptest::collection::vec(peer(), 1..=2),
        enforcement(),
    )
        .prop_map(
            |(namespaces, pods, pod_selector, before, after, filler_peers, enforcement)| {
                let filler = (0..RULE_BITS as u16).map(|i| Rule {
                    peers: Some(filler_peers.clone()),
                    ports: Some(vec![PortSpec {
                        protocol: Protocol::Tcp,
                        port: PortMatch::Range {
                            port: 20_000 + i,
                            end: 20_000 + i,
                        },
                    }]),
                });
                let rules: Vec<Rule> = before.into_iter().chain(filler).chain(after).collect();
                let policy = |name: &str, ns: &str| Policy {
                    namespace: ns.into(),
                    name: name.into(),
                    enforcement,
                    pod_selector: pod_selector.clone(),
                    isolates_ingress: true,
                    isolates_egress: true,
                    ingress: rules.clone(),
                    egress: rules.clone(),
                    unreadable: None,
                    warnings: vec![],
                };
                Model {
                    cluster_policies: vec![],
                    nodes: vec![],
                    namespaces: namespaces
                        .into_iter()
                        .map(|n| (n.name.clone(), n))
                        .collect(),
                    pods,
                    policies: NAMESPACES.iter().map(|ns| policy("spill", ns)).collect(),
                    services: vec![],
                    errors: vec![],
                    warnings: vec![],
                }
            },
        )
}

#[test]
fn spilled_groups_agree_with_oracle() {
    let mut runner = TestRunner::new(Config {
        cases: (cases(10_000) / 20).max(1),
        failure_persistence: None,
        ..Config::default()
    });
    let flows = proptest::collection::vec(flow_spec(), 24);
    let spilled = Cell::new(0usize);
    let cov = Coverage::default();
    runner
        .run(&(spill_model(), flows), |(model, flows)| {
            let node = compile(&model, NODE, &mut IdentityAllocator::new());
            if node
                .pods
                .values()
                .any(|p| p.ingress.groups.len() > RULE_BITS as usize)
            {
                spilled.set(spilled.get() + 1);
            }
            check_flows(&model, &flows, &cov)
        })
        .unwrap();
    assert!(spilled.get() > 0, "no case spilled");
    cov.assert_seen(true);
}

/// A hand-written spill case: the spilled groups are exercised for every
/// peer kind, so a broken spill path cannot hide behind generator luck.
#[test]
fn spill_path_decides_beyond_rule_bits() {
    let pod = |name: &str, i: u8, app: &str| Pod {
        namespace: "ns0".into(),
        name: name.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        node: Some(NODE.into()),
        ips: vec![v4(i), v6(i)],
        ports: vec![NamedPort {
            name: "http".into(),
            port: 8080,
            protocol: Protocol::Tcp,
        }],
        pending: false,
    };
    let tcp = |port: u16| PortSpec {
        protocol: Protocol::Tcp,
        port: PortMatch::Range { port, end: port },
    };
    let mut ingress: Vec<Rule> = (0..RULE_BITS as u16)
        .map(|i| Rule {
            peers: Some(vec![Peer::IpBlock {
                cidr: "203.0.113.0/24".parse().unwrap(),
                except: vec![],
            }]),
            ports: Some(vec![tcp(30_000 + i)]),
        })
        .collect();
    // Spilled: identity peer on 81, CIDR peer on 82..=90, any peer on 443,
    // any port from a CIDR, named port on ingress.
    let app_b = Peer::Pods {
        namespaces: None,
        pods: Some(Selector {
            match_labels: [("app".to_string(), "b".to_string())].into(),
            match_expressions: vec![],
        }),
    };
    ingress.push(Rule {
        peers: Some(vec![app_b]),
        ports: Some(vec![tcp(81)]),
    });
    ingress.push(Rule {
        peers: Some(vec![Peer::IpBlock {
            cidr: "192.168.0.0/16".parse().unwrap(),
            except: vec!["192.168.1.0/24".parse().unwrap()],
        }]),
        ports: Some(vec![PortSpec {
            protocol: Protocol::Tcp,
            port: PortMatch::Range { port: 82, end: 90 },
        }]),
    });
    ingress.push(Rule {
        peers: None,
        ports: Some(vec![tcp(443)]),
    });
    ingress.push(Rule {
        peers: Some(vec![Peer::IpBlock {
            cidr: "8.8.8.0/24".parse().unwrap(),
            except: vec![],
        }]),
        ports: None,
    });
    ingress.push(Rule {
        peers: Some(vec![Peer::IpBlock {
            cidr: "0.0.0.0/0".parse().unwrap(),
            except: vec![],
        }]),
        ports: Some(vec![PortSpec {
            protocol: Protocol::Tcp,
            port: PortMatch::Named("http".into()),
        }]),
    });
    let model = Model {
        cluster_policies: vec![],
        nodes: vec![],
        namespaces: Default::default(),
        pods: vec![pod("a", 1, "a"), pod("b", 2, "b")],
        policies: vec![Policy {
            namespace: "ns0".into(),
            name: "big".into(),
            enforcement: Enforcement::Enforce,
            pod_selector: Selector {
                match_labels: [("app".to_string(), "a".to_string())].into(),
                match_expressions: vec![],
            },
            isolates_ingress: true,
            isolates_egress: false,
            ingress,
            egress: vec![],
            unreadable: None,
            warnings: vec![],
        }],
        services: vec![],
        errors: vec![],
        warnings: vec![],
    };
    let node = compile(&model, NODE, &mut IdentityAllocator::new());
    let dir = &node.pods["ns0/a"].ingress;
    assert!(dir.groups.len() > RULE_BITS as usize);
    assert!(!dir.spill.is_empty());
    assert!(dir.spill_any_peer);
    assert_ne!(dir.any_port_class, 0);
    let to_a = |src: IpAddr, proto: u8, dport: u16| Flow {
        src,
        dst: v4(1),
        proto,
        dport,
    };
    let cases = [
        (to_a(v4(2), PROTO_TCP, 81), true),
        (to_a(v4(9), PROTO_TCP, 81), false),
        (to_a("192.168.2.1".parse().unwrap(), PROTO_TCP, 85), true),
        (to_a("192.168.1.1".parse().unwrap(), PROTO_TCP, 85), false),
        (to_a("192.168.2.1".parse().unwrap(), PROTO_TCP, 91), false),
        (to_a("1.2.3.4".parse().unwrap(), PROTO_TCP, 443), true),
        (to_a("1.2.3.4".parse().unwrap(), PROTO_UDP, 443), false),
        (to_a("8.8.8.8".parse().unwrap(), PROTO_ICMP, 0), true),
        (to_a("8.8.4.4".parse().unwrap(), PROTO_ICMP, 0), false),
        (to_a("1.2.3.4".parse().unwrap(), PROTO_TCP, 8080), true),
        (to_a("1.2.3.4".parse().unwrap(), PROTO_TCP, 8081), false),
    ];
    for (flow, want) in cases {
        let got = lookup(&node, "ns0/a", Direction::Ingress, &flow);
        let oracle = evaluate_direction(&model, &model.pods[0], Direction::Ingress, &flow);
        assert_eq!(got.allows(), want, "{flow:?}: {got:?}");
        assert_eq!(
            oracle.allows(),
            want,
            "oracle disagrees with the test on {flow:?}"
        );
        if let LookupVerdict::Allowed { group, .. } = got {
            assert!(
                group >= RULE_BITS as usize,
                "{flow:?} decided by bit {group}, not the spill path"
            );
        }
    }
}
