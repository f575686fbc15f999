//! The incremental compiler must end in exactly the state a full compile of
//! the same model gives, after any sequence of changes; identity numbers
//! may differ between the two (allocation order), so states are compared
//! with every identity replaced by its label set.

mod strategies;

use palisade_common::SPILL_IDENTITY;
use palisade_compiler::{
    compile, Change, CompiledDirection, CompiledNode, Compiler, IdentityAllocator, IdentityKey,
};
use palisade_policy::{
    ClusterPolicy, Enforcement, Labels, Model, NamedPort, Namespace, Pod, Policy,
    NAMESPACE_NAME_LABEL,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::BTreeMap;
use std::net::IpAddr;
use strategies::*;

#[derive(Clone, Debug)]
enum Op {
    Labels(usize, Labels),
    Ports(usize, Vec<NamedPort>),
    Move(usize, bool),
    Delete(usize),
    Add(usize, Labels, Vec<NamedPort>, bool),
    UpsertPolicy(Policy),
    DeletePolicy(usize),
    /// Only the enforcement annotation of an existing policy changes.
    Enforcement(usize, Enforcement),
    NamespaceLabels(usize, Labels),
    UpsertClusterPolicy(ClusterPolicy),
    DeleteClusterPolicy(usize),
    /// A Node's labels change (`nodes` peers follow them).
    NodeLabels(usize, Labels),
}

fn op() -> impl Strategy<Value = Op> {
    let labels = || labels_strategy(&["app", "tier"], &["a", "b"]);
    let ports = || proptest::collection::vec(named_port(), 0..=2);
    prop_oneof![
        3 => (0..8usize, labels()).prop_map(|(i, l)| Op::Labels(i, l)),
        1 => (0..8usize, ports()).prop_map(|(i, p)| Op::Ports(i, p)),
        1 => (0..8usize, any::<bool>()).prop_map(|(i, l)| Op::Move(i, l)),
        1 => (0..8usize).prop_map(Op::Delete),
        1 => (0..NAMESPACES.len(), labels(), ports(), any::<bool>()).prop_map(|(n, l, p, local)| Op::Add(n, l, p, local)),
        3 => (0..6usize).prop_flat_map(policy).prop_map(Op::UpsertPolicy),
        1 => (0..6usize).prop_map(Op::DeletePolicy),
        2 => (0..6usize, enforcement()).prop_map(|(i, e)| Op::Enforcement(i, e)),
        1 => (0..NAMESPACES.len(), labels_strategy(&["team"], &["a", "b"])).prop_map(|(n, l)| Op::NamespaceLabels(n, l)),
        2 => (0..4usize).prop_flat_map(cluster_policy).prop_map(Op::UpsertClusterPolicy),
        1 => (0..4usize).prop_map(Op::DeleteClusterPolicy),
        1 => (0..2usize, labels_strategy(&["role"], &["a", "b"])).prop_map(|(n, l)| Op::NodeLabels(n, l)),
    ]
}

fn node_of(local: bool) -> Option<String> {
    Some(if local {
        NODE.to_string()
    } else {
        "node-b".to_string()
    })
}

/// Applies `op` to the model and returns the matching change.
fn apply(model: &mut Model, op: Op, added: &mut u8) -> Option<Change> {
    let pod_at = |model: &Model, i: usize| (!model.pods.is_empty()).then(|| i % model.pods.len());
    Some(match op {
        Op::Labels(i, labels) => {
            let i = pod_at(model, i)?;
            model.pods[i].labels = labels;
            Change::UpsertPod(model.pods[i].clone())
        }
        Op::Ports(i, ports) => {
            let i = pod_at(model, i)?;
            model.pods[i].ports = ports;
            Change::UpsertPod(model.pods[i].clone())
        }
        Op::Move(i, local) => {
            let i = pod_at(model, i)?;
            model.pods[i].node = node_of(local);
            Change::UpsertPod(model.pods[i].clone())
        }
        Op::Delete(i) => {
            let i = pod_at(model, i)?;
            let pod = model.pods.remove(i);
            Change::DeletePod {
                namespace: pod.namespace,
                name: pod.name,
            }
        }
        Op::Add(ns, labels, ports, local) => {
            *added += 1;
            let n = 100 + *added;
            let pod = Pod {
                namespace: NAMESPACES[ns].into(),
                name: format!("new{n}"),
                labels,
                node: node_of(local),
                ips: vec![v4(n), v6(n)],
                ports,
                pending: false,
            };
            model.pods.push(pod.clone());
            Change::UpsertPod(pod)
        }
        Op::UpsertPolicy(p) => {
            match model
                .policies
                .iter_mut()
                .find(|q| q.namespace == p.namespace && q.name == p.name)
            {
                Some(q) => *q = p.clone(),
                None => model.policies.push(p.clone()),
            }
            Change::UpsertPolicy(p)
        }
        Op::DeletePolicy(i) => {
            if model.policies.is_empty() {
                return None;
            }
            let p = model.policies.remove(i % model.policies.len());
            Change::DeletePolicy {
                namespace: p.namespace,
                name: p.name,
            }
        }
        Op::Enforcement(i, enforcement) => {
            if model.policies.is_empty() {
                return None;
            }
            let i = i % model.policies.len();
            model.policies[i].enforcement = enforcement;
            Change::UpsertPolicy(model.policies[i].clone())
        }
        Op::NamespaceLabels(n, mut labels) => {
            let name = NAMESPACES[n].to_string();
            labels.insert(NAMESPACE_NAME_LABEL.into(), name.clone());
            let ns = Namespace {
                name: name.clone(),
                labels,
            };
            model.namespaces.insert(name, ns.clone());
            Change::UpsertNamespace(ns)
        }
        Op::UpsertClusterPolicy(p) => {
            model.cluster_policies.retain(|q| q.name != p.name);
            model.cluster_policies.push(p.clone());
            model
                .cluster_policies
                .sort_by(|a, b| a.order_key().cmp(&b.order_key()));
            Change::UpsertClusterPolicy(p)
        }
        Op::DeleteClusterPolicy(i) => {
            if model.cluster_policies.is_empty() {
                return None;
            }
            let p = model
                .cluster_policies
                .remove(i % model.cluster_policies.len());
            Change::DeleteClusterPolicy { name: p.name }
        }
        Op::NodeLabels(i, labels) => {
            if model.nodes.is_empty() {
                return None;
            }
            let n = model.nodes.len();
            let node = &mut model.nodes[i % n];
            node.labels = labels;
            Change::UpsertNode(node.clone())
        }
    })
}

/// A compiled node with identity numbers replaced by label sets.
fn normalize(node: &CompiledNode, alloc: &IdentityAllocator) -> String {
    let key = |id: u32| -> IdentityKey {
        alloc
            .key(id)
            .cloned()
            .unwrap_or_else(|| panic!("identity {id} not allocated"))
    };
    let ids: BTreeMap<IpAddr, IdentityKey> = node
        .identities
        .iter()
        .map(|(ip, id)| (*ip, key(*id)))
        .collect();
    let dir = |d: &CompiledDirection| {
        let identities: BTreeMap<IdentityKey, _> =
            d.identities.iter().map(|(id, v)| (key(*id), *v)).collect();
        let spill: Vec<_> = d
            .spill_groups
            .iter()
            .map(|(k, g)| {
                let peer = if k.kind == SPILL_IDENTITY {
                    format!("{:?}", key(k.peer))
                } else {
                    k.peer.to_string()
                };
                (k.kind, peer, k.port_class, *g)
            })
            .collect();
        let mut rest = d.clone();
        rest.identities.clear();
        rest.spill.clear();
        rest.spill_groups.clear();
        format!(
            "{identities:?} {spill:?} {rest:?} spill keys {}",
            d.spill.len()
        )
    };
    let pods: Vec<String> = node
        .pods
        .iter()
        .map(|(k, p)| {
            format!(
                "{k} {:?} {:?}\n  in {}\n  eg {}",
                p.ips,
                p.error,
                dir(&p.ingress),
                dir(&p.egress)
            )
        })
        .collect();
    format!("{ids:?}\n{}", pods.join("\n"))
}

#[test]
fn incremental_equals_full_compile() {
    let cases = std::env::var("PALISADE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(1_000, |n| (n / 10).max(1));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (mixed_model(), proptest::collection::vec(op(), 1..=8));
    runner
        .run(&strategy, |(mut model, ops)| {
            // Half of the pods live on another node.
            for (i, p) in model.pods.iter_mut().enumerate() {
                p.node = node_of(i % 2 == 0);
            }
            let mut compiler = Compiler::from_model(&model, NODE, IdentityAllocator::new());
            let mut added = 0;
            for op in ops {
                let before: BTreeMap<IpAddr, u32> = compiler.compiled().identities.clone();
                let Some(change) = apply(&mut model, op, &mut added) else {
                    continue;
                };
                let desc = format!("{change:?}");
                compiler.apply(change);
                let mut alloc = IdentityAllocator::new();
                let full = compile(&model, NODE, &mut alloc);
                prop_assert_eq!(
                    normalize(compiler.compiled(), compiler.allocator()),
                    normalize(&full, &alloc),
                    "after {}",
                    desc
                );
                // Label sets that still exist keep their numbers.
                for (ip, id) in &compiler.compiled().identities {
                    if let Some(old) = before.get(ip) {
                        let same_set =
                            compiler.allocator().key(*old) == compiler.allocator().key(*id);
                        prop_assert!(
                            !same_set || old == id,
                            "{ip}: identity renumbered from {old} to {id}"
                        );
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

/// `Applied` names exactly the local pods whose compiled state changed.
#[test]
fn applied_lists_the_changed_pods() {
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (mixed_model(), proptest::collection::vec(op(), 1..=6));
    runner
        .run(&strategy, |(mut model, ops)| {
            let mut compiler = Compiler::from_model(&model, NODE, IdentityAllocator::new());
            prop_assert!(
                compiler.take_identity_changes().is_none(),
                "a cold build names no addresses: every one is new"
            );
            let mut added = 0;
            for op in ops {
                let before = compiler.compiled().clone();
                let Some(change) = apply(&mut model, op, &mut added) else {
                    continue;
                };
                let applied = compiler.apply(change);
                let after = compiler.compiled();
                for (k, p) in &after.pods {
                    if before.pods.get(k) != Some(p) {
                        prop_assert!(
                            applied.pods.contains(k),
                            "{k} changed but is not in {applied:?}"
                        );
                    }
                }
                for k in before.pods.keys() {
                    if !after.pods.contains_key(k) {
                        prop_assert!(
                            applied.pods.contains(k),
                            "{k} removed but is not in {applied:?}"
                        );
                    }
                }
                if before.identities != after.identities {
                    prop_assert!(applied.identities, "identity trie changed but not reported");
                }
                // The journal the writer patches the kernel's trie from.
                let journal = compiler.take_identity_changes().unwrap_or_default();
                let after = compiler.compiled();
                let addrs = before.identities.keys().chain(after.identities.keys());
                for ip in addrs {
                    if before.identities.get(ip) != after.identities.get(ip) {
                        prop_assert!(
                            journal.contains(ip),
                            "{ip} changed but is not in the journal"
                        );
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

/// The agent moves the compiler between tasks.
#[test]
fn compiler_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Compiler>();
}

/// Flipping only a policy's enforcement recompiles the pods it selects:
/// the direction turns audit (its rules kept) and back.
#[test]
fn enforcement_change_recompiles_selected_pods() {
    let pod = |name: &str, i: u8, app: &str| Pod {
        namespace: "ns0".into(),
        name: name.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        node: Some(NODE.into()),
        ips: vec![v4(i)],
        ports: vec![],
        pending: false,
    };
    let deny = |name: &str, app: &str, enforcement| Policy {
        namespace: "ns0".into(),
        name: name.into(),
        enforcement,
        pod_selector: palisade_policy::Selector {
            match_labels: [("app".to_string(), app.to_string())].into(),
            match_expressions: vec![],
        },
        isolates_ingress: true,
        isolates_egress: false,
        ingress: vec![],
        egress: vec![],
        unreadable: None,
        warnings: vec![],
    };
    let model = Model {
        pods: vec![pod("a", 1, "a"), pod("b", 2, "b")],
        policies: vec![
            deny("deny-a", "a", Enforcement::Enforce),
            deny("deny-b", "b", Enforcement::Enforce),
        ],
        ..Model::default()
    };
    let mut compiler = Compiler::from_model(&model, NODE, IdentityAllocator::new());
    let ingress = |c: &Compiler, pod: &str| c.compiled().pods[pod].ingress.clone();
    assert!(!ingress(&compiler, "ns0/a").audit);
    assert_eq!(ingress(&compiler, "ns0/a").isolating, ["ns0/deny-a"]);

    let applied = compiler.apply(Change::UpsertPolicy(deny(
        "deny-a",
        "a",
        Enforcement::Audit,
    )));
    assert_eq!(applied.pods.iter().collect::<Vec<_>>(), ["ns0/a"]);
    let a = ingress(&compiler, "ns0/a");
    assert!(a.isolated && a.audit);
    assert_eq!(a.isolating, ["ns0/deny-a"]);
    assert!(!ingress(&compiler, "ns0/b").audit);

    // An enforced policy joining an audit one takes the direction over.
    let applied = compiler.apply(Change::UpsertPolicy(deny(
        "deny-a2",
        "a",
        Enforcement::Enforce,
    )));
    assert_eq!(applied.pods.iter().collect::<Vec<_>>(), ["ns0/a"]);
    let a = ingress(&compiler, "ns0/a");
    assert!(a.isolated && !a.audit);
    assert_eq!(a.isolating, ["ns0/deny-a2"]);
}
