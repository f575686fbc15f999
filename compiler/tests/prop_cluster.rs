//! Property test: ClusterNetworkPolicy tiers beside NetworkPolicy. The
//! lookup model on the compiled maps must agree with the spec oracle on
//! random mixes of Admin and Baseline policies (every action, every peer
//! kind, tied priorities) and NetworkPolicies (enforced and audit).
//!
//! 10,000 cases by default; `PALISADE_PROPTEST_CASES=N` sets the count.

mod strategies;

use ipnetwork::IpNetwork;
use palisade_compiler::{check, compile, lookup, IdentityAllocator, LookupVerdict};
use palisade_policy::{
    evaluate, evaluate_direction, Action, ClusterPeer, ClusterPolicy, ClusterRule, DirVerdict,
    Direction, Model, Pod, PodSet, Tier,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::cell::Cell;
use std::collections::BTreeMap;
use strategies::*;

/// What decided, seen the same way from both sides.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Open,
    /// A cluster rule of this tier with this action.
    Cluster(Tier, Action),
    NetworkPolicyAllowed,
    Denied,
    WouldDeny,
}

fn from_lookup(v: &LookupVerdict) -> Decision {
    match v {
        LookupVerdict::NotIsolated => Decision::Open,
        // A Baseline Pass leaves the packet to the default: allowed.
        LookupVerdict::Cluster {
            action: Action::Pass,
            ..
        } => Decision::Open,
        LookupVerdict::Cluster { rules, action, .. } => Decision::Cluster(rules[0].tier, *action),
        LookupVerdict::Allowed { .. } => Decision::NetworkPolicyAllowed,
        LookupVerdict::Denied => Decision::Denied,
        LookupVerdict::WouldDeny => Decision::WouldDeny,
    }
}

fn from_oracle(v: &DirVerdict) -> Decision {
    match v {
        DirVerdict::NotIsolated => Decision::Open,
        DirVerdict::Cluster(r) => Decision::Cluster(r.tier, r.action),
        DirVerdict::Allowed(_) => Decision::NetworkPolicyAllowed,
        DirVerdict::Denied(_) => Decision::Denied,
        DirVerdict::WouldDeny(_) => Decision::WouldDeny,
    }
}

/// How often each tier decided, so that a generator change that stops
/// exercising one fails loudly instead of passing vacuously.
#[derive(Default)]
struct Coverage(BTreeMap<String, Cell<usize>>);

impl Coverage {
    fn record(&mut self, d: &Decision, passed: bool) {
        let c = self.0.entry(name_of(d, passed)).or_default();
        c.set(c.get() + 1);
    }

    fn assert_seen(&self) {
        let counts: BTreeMap<&String, usize> = self.0.iter().map(|(k, v)| (k, v.get())).collect();
        eprintln!("coverage: {counts:?}");
        let want = [
            "Admin Accept",
            "Admin Deny",
            "Baseline Accept",
            "Baseline Deny",
            "NetworkPolicyAllowed after an Admin Pass",
            "Denied after an Admin Pass",
            "Open after an Admin Pass",
            "Denied",
            "WouldDeny",
            "Open",
        ];
        for w in want {
            assert!(
                counts.get(&w.to_string()).is_some_and(|n| *n > 0),
                "no flow was decided as {w}: the generators no longer exercise it"
            );
        }
    }
}

fn name_of(d: &Decision, passed: bool) -> String {
    match (d, passed) {
        (Decision::Cluster(t, a), _) => format!("{} {}", t.name(), a.name()),
        (d, true) => format!("{d:?} after an Admin Pass"),
        (d, false) => format!("{d:?}"),
    }
}

/// Whether an Admin tier Pass was the first Admin rule to match.
fn admin_passed(model: &Model, pod: &Pod, dir: Direction, flow: &palisade_policy::Flow) -> bool {
    matches!(
        palisade_policy::tier_decision(model, Tier::Admin, pod, dir, flow),
        palisade_policy::TierOutcome::Passed(_)
    )
}

fn check_model(model: &Model, flows: &[FlowSpec], cov: &mut Coverage) -> Result<(), TestCaseError> {
    let mut alloc = IdentityAllocator::new();
    let node = compile(model, NODE, &mut alloc);
    for pod in &model.pods {
        let key = format!("{}/{}", pod.namespace, pod.name);
        let cp = &node.pods[&key];
        prop_assert!(cp.error.is_none(), "{key}: {:?}", cp.error);
        for dir in [Direction::Ingress, Direction::Egress] {
            let d = cp.direction(dir);
            let np_isolated = model.deciding_policies(pod, dir).is_some();
            prop_assert_eq!(d.isolated && !d.open, np_isolated, "{} {:?}", key, dir);
        }
    }
    for spec in flows {
        let flow = to_flow(model, spec);
        for (dir, addr) in [
            (Direction::Egress, flow.src),
            (Direction::Ingress, flow.dst),
        ] {
            let Some(pod) = model.pods.iter().find(|p| p.ips.contains(&addr)) else {
                continue;
            };
            let key = format!("{}/{}", pod.namespace, pod.name);
            let got = lookup(&node, &key, dir, &flow);
            let want = evaluate_direction(model, pod, dir, &flow);
            let decision = from_oracle(&want);
            cov.record(&decision, admin_passed(model, pod, dir, &flow));
            prop_assert_eq!(
                from_lookup(&got),
                decision,
                "{:?} of {} for {:?}: lookup {:?}, oracle {:?}",
                dir,
                key,
                flow,
                got,
                want
            );
        }
        let (got, want) = (check(&node, &flow), evaluate(model, &flow));
        prop_assert_eq!(got.allowed(), want.allowed(), "{:?}", flow);
        prop_assert_eq!(got.would_deny(), want.would_deny(), "{:?}", flow);
    }
    Ok(())
}

#[test]
fn lookup_agrees_with_oracle_across_tiers() {
    let mut runner = TestRunner::new(Config {
        cases: cases(10_000),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (mixed_model(), proptest::collection::vec(flow_spec(), 24));
    let cov = std::cell::RefCell::new(Coverage::default());
    runner
        .run(&strategy, |(model, flows)| {
            check_model(&model, &flows, &mut cov.borrow_mut())
        })
        .unwrap();
    cov.borrow().assert_seen();
}

#[test]
fn networks_peers_cover_pod_addresses() {
    // A Deny of a network holding every generated pod address decides
    // pod-to-pod traffic too.
    let everything: IpNetwork = "10.0.0.0/8".parse().unwrap();
    let mut runner = TestRunner::new(Config {
        cases: cases(10_000) / 20,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        model_strategy(2),
        proptest::collection::vec(flow_spec(), 12),
    );
    runner
        .run(&strategy, |(mut model, flows)| {
            model.cluster_policies = vec![ClusterPolicy {
                name: "deny-net".into(),
                tier: Tier::Admin,
                priority: 0,
                subject: PodSet::default(),
                ingress: vec![],
                egress: vec![ClusterRule {
                    name: None,
                    action: Action::Deny,
                    peers: vec![ClusterPeer::Networks(vec![everything])],
                    ports: None,
                }],
                warnings: vec![],
            }];
            let mut cov = Coverage::default();
            check_model(&model, &flows, &mut cov)
        })
        .unwrap();
}

/// An Admin policy first in evaluation order whose 70 rules (alternating
/// Accept and Deny, one port each, ports no flow uses) fill every bit: the
/// random cluster policies after it spill, and their order must survive
/// in the spill table's values.
fn filler() -> ClusterPolicy {
    let rules = (0..70u16)
        .map(|i| ClusterRule {
            name: None,
            action: if i % 2 == 0 {
                Action::Accept
            } else {
                Action::Deny
            },
            peers: vec![ClusterPeer::All],
            ports: Some(vec![palisade_policy::PortSpec {
                protocol: palisade_policy::Protocol::Tcp,
                port: palisade_policy::PortMatch::Range {
                    port: 30_000 + i,
                    end: 30_000 + i,
                },
            }]),
        })
        .collect::<Vec<_>>();
    ClusterPolicy {
        name: "aaa-filler".into(),
        tier: Tier::Admin,
        priority: 0,
        subject: PodSet::default(),
        ingress: rules.clone(),
        egress: rules,
        warnings: vec![],
    }
}

#[test]
fn spilled_cluster_groups_keep_their_order() {
    let mut runner = TestRunner::new(Config {
        cases: cases(10_000) / 10,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (mixed_model(), proptest::collection::vec(flow_spec(), 24));
    let spilled_decisions = Cell::new(0usize);
    runner
        .run(&strategy, |(mut model, flows)| {
            model.cluster_policies.insert(0, filler());
            let mut cov = Coverage::default();
            check_model(&model, &flows, &mut cov)?;
            let node = compile(&model, NODE, &mut IdentityAllocator::new());
            for spec in &flows {
                let flow = to_flow(&model, spec);
                for pod in model.pods.iter().filter(|p| p.ips.contains(&flow.src)) {
                    let key = format!("{}/{}", pod.namespace, pod.name);
                    if let LookupVerdict::Cluster { group, .. } =
                        lookup(&node, &key, Direction::Egress, &flow)
                    {
                        if group >= palisade_common::RULE_BITS as usize {
                            spilled_decisions.set(spilled_decisions.get() + 1);
                        }
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(
        spilled_decisions.get() > 0,
        "no spilled cluster group decided a flow: the test proves nothing"
    );
}
