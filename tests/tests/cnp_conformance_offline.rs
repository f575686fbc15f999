//! The upstream ClusterNetworkPolicy conformance suite
//! (`tests/cnp-conformance`) without a kernel: for every test, step and
//! probe, the model built from the objects in force must give upstream's
//! expectation through the oracle (`palisade_policy::evaluate`) and
//! through the compiler's lookup model (each node compiled as its agent
//! would: the client's node decides its egress, the server's node its
//! ingress). One `#[test]` per upstream test, named after it.
//!
//! `suite_data` checks the data itself: it loads, every object is a valid
//! Kubernetes object (ClusterNetworkPolicies against the v1alpha2 CRD),
//! every upstream assertion is there, and every probe can run in the lab.

use palisade_compiler::{check, compile, CompiledNode, IdentityAllocator};
use palisade_policy::{evaluate, load_str, Model};
use palisade_tests::cnp_conformance::{
    node_addresses, schema, ConformanceTest, Profile, Resolved, StepState, Suite,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

// ---------- the data ----------

/// Upstream's assertions (`PokeServer` calls) per test: a transcription
/// that loses one fails here.
const PROBES: &[(&str, usize)] = &[
    ("CNPAdminTierEgressNamedPort", 2),
    ("CNPAdminTierEgressNodePeers", 5),
    ("CNPAdminTierIngressNamedPort", 2),
    ("CNPAdminTierEgressInlineCIDRPeers", 27),
    ("CNPAdminTierEgressSCTP", 12),
    ("CNPAdminTierEgressTCP", 12),
    ("CNPAdminTierEgressUDP", 12),
    ("CNPAdminTierGress", 54),
    ("CNPAdminTierIngressSCTP", 12),
    ("CNPAdminTierIngressTCP", 12),
    ("CNPAdminTierIngressUDP", 12),
    ("CNPAdminTierIntegration", 12),
    ("CNPAdminTierPriorityField", 8),
    ("CNPBaselineTierEgressNamedPort", 2),
    ("CNPBaselineTierEgressNodePeers", 4),
    ("CNPBaselineTierIngressNamedPort", 2),
    ("CNPBaselineTierEgressInlineCIDRPeers", 27),
    ("CNPBaselineTierEgressSCTP", 8),
    ("CNPBaselineTierEgressTCP", 8),
    ("CNPBaselineTierEgressUDP", 8),
    ("CNPBaselineTierGress", 36),
    ("CNPBaselineTierIngressSCTP", 8),
    ("CNPBaselineTierIngressTCP", 8),
    ("CNPBaselineTierIngressUDP", 8),
];

/// Deserializes `v` as `T` and checks that serializing it back keeps
/// every field `v` has: k8s-openapi skips unknown fields, so a misspelt
/// one would otherwise pass unnoticed.
fn lossless<T: DeserializeOwned + Serialize>(v: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(typed).map_err(|e| e.to_string())?;
    covered(v, &back, "")
}

/// Every field and value of `want` is in `got`.
fn covered(want: &Value, got: &Value, path: &str) -> Result<(), String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, v) in w {
                let p = format!("{path}.{k}");
                covered(v, g.get(k).ok_or(format!("{p}: dropped"))?, &p)?;
            }
            Ok(())
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .try_for_each(|(i, (w, g))| covered(w, g, &format!("{path}[{i}]"))),
        (w, g) if w == g => Ok(()),
        _ => Err(format!("{path}: {want} read as {got}")),
    }
}

/// Problems of one object (what an API server would refuse, or fields
/// nothing reads), by kind.
fn object_issues(o: &Value, test: Option<&ConformanceTest>) -> Vec<String> {
    use k8s_openapi::api::{core::v1 as core, networking::v1 as net};
    let lossless_issue = |r: Result<(), String>| r.err().into_iter().collect::<Vec<_>>();
    match o["kind"].as_str().unwrap_or_default() {
        "Namespace" => lossless_issue(lossless::<core::Namespace>(o)),
        "Pod" => lossless_issue(lossless::<core::Pod>(o)),
        "Node" => lossless_issue(lossless::<core::Node>(o)),
        "Service" => lossless_issue(lossless::<core::Service>(o)),
        "NetworkPolicy" => lossless_issue(lossless::<net::NetworkPolicy>(o)),
        "ClusterNetworkPolicy" => match schema::check(o) {
            Err(issues) => issues,
            Ok(channel) => {
                let mut issues = Vec::new();
                let Some(t) = test else {
                    return vec!["a ClusterNetworkPolicy in the topology".into()];
                };
                if channel.experimental() && t.profile != Profile::Experimental {
                    issues.push("experimental-channel fields in a standard test".into());
                }
                let named = t
                    .features
                    .iter()
                    .any(|f| f == "ClusterNetworkPolicyNamedPorts");
                if channel.named_ports && !named {
                    issues.push("named ports without the NamedPorts feature".into());
                }
                issues
            }
        },
        other => vec![format!("unexpected kind {other:?}")],
    }
}

#[test]
fn suite_data() {
    let suite = Suite::load().unwrap_or_else(|e| panic!("{e:#}"));
    let mut problems = Vec::new();

    let names: Vec<&str> = suite.tests.iter().map(|t| t.name.as_str()).collect();
    let pinned: Vec<&str> = PROBES.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, pinned, "suite.yaml's tests, in upstream's order");

    for o in &suite.topology {
        for i in object_issues(o, None) {
            problems.push(format!("topology.yaml {}: {i}", o["metadata"]["name"]));
        }
    }
    let served = |host: bool| -> Vec<(u16, palisade_tests::cnp_conformance::Proto)> {
        let s = &suite.meta.serves;
        let list = if host { &s.host_network } else { &s.pod };
        list.iter().map(|s| (s.port, s.protocol)).collect()
    };
    let mut total = 0;
    for (test, (_, want)) in suite.tests.iter().zip(PROBES) {
        let name = &test.name;
        if test.probe_count() != *want {
            problems.push(format!(
                "{name}: {} probes, upstream asserts {want}",
                test.probe_count()
            ));
        }
        total += test.probe_count();
        let steps = match test.walk(&suite.topology) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{name}: {e:#}"));
                continue;
            }
        };
        let changed = test
            .objects
            .iter()
            .chain(test.steps.iter().flat_map(|s| &s.apply));
        for o in changed {
            for i in object_issues(o, Some(test)) {
                problems.push(format!("{name} {}: {i}", o["metadata"]["name"]));
            }
        }
        for st in &steps {
            if st.probes.is_empty() {
                problems.push(format!("{name} step {}: no probes", st.index));
            }
            // Palisade's loader reads the topology as it stands today: the
            // workload pods (hostNetwork ones are the node), no error.
            let model = load_str(&st.objects.to_yaml(), name);
            if !model.errors.is_empty() {
                problems.push(format!("{name} step {}: {:?}", st.index, model.errors));
            }
            if model.pods.len() != 8 {
                problems.push(format!(
                    "{name} step {}: {} pods in the model",
                    st.index,
                    model.pods.len()
                ));
            }
            for p in &st.probes {
                let pair = (p.probe.port, p.probe.protocol);
                if !served(p.dst_host_network).contains(&pair) {
                    problems.push(format!("{p}: nothing serves this port"));
                }
                // Traffic between a pod and its own node is always
                // allowed here: no probe may depend on it.
                let own = st
                    .objects
                    .of_kind("Node")
                    .filter(|n| n["metadata"]["name"] == p.src_node.as_str())
                    .any(|n| node_addresses(n).contains(&p.dst));
                if own {
                    problems.push(format!("{p}: the client's own node"));
                }
            }
        }
    }
    assert_eq!(total, 301, "upstream asserts 301 connections");
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The checks above fail on the mistakes they are there for.
#[test]
fn data_checks_catch_mistakes() {
    use serde_json::json;
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "n"},
        "spec": {"nodName": "node-1", "containers": [{"name": "c", "image": "i"}]}});
    assert!(object_issues(&pod, None)
        .iter()
        .any(|i| i.contains("nodName")));
    let cnp = |spec: Value| {
        json!({"apiVersion": schema::API_VERSION, "kind": schema::KIND,
        "metadata": {"name": "c"}, "spec": spec})
    };
    let ok = json!({"tier": "Admin", "priority": 1,
        "subject": {"namespaces": {}},
        "egress": [{"action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]}]});
    assert_eq!(
        schema::check(&cnp(ok.clone())),
        Ok(schema::Channel::default())
    );
    let mut bad = Vec::new();
    for (field, value) in [
        ("/priority", json!(1001)),
        (
            "/subject",
            json!({"namespaces": {}, "pods": {"namespaceSelector": {}, "podSelector": {}}}),
        ),
        ("/egress/0/to/0", json!({"networks": ["10.0.0.1"]})),
        (
            "/egress/0/to/0",
            json!({"networks": ["0.0.0.0/0"], "nodes": {}}),
        ),
        (
            "/egress/0/protocols",
            json!([{"tcp": {"destinationPort": {"number": 0}}}]),
        ),
        (
            "/egress/0/protocols",
            json!([{"udp": {"destinationPort": {"range": {"start": 9, "end": 9}}}}]),
        ),
        (
            "/egress/0/protocols",
            json!([{"destinationNamedPort": "web"}]),
        ),
        ("/egress/0/action", json!("Drop")),
        ("/egress/0/port", json!(80)),
    ] {
        let mut spec = ok.clone();
        match spec.pointer_mut(field) {
            Some(v) => *v = value,
            None => {
                let (parent, key) = field.rsplit_once('/').unwrap();
                spec.pointer_mut(parent).unwrap()[key] = value;
            }
        }
        if schema::check(&cnp(spec)).is_ok() {
            bad.push(field);
        }
    }
    assert!(bad.is_empty(), "accepted: {bad:?}");
}

// ---------- the runner ----------

/// The model of one step, with what it must hold: every
/// ClusterNetworkPolicy and Node of the manifests.
fn model_of(st: &StepState, test: &str, failures: &mut Vec<String>) -> Option<Model> {
    let model = load_str(
        &st.objects.to_yaml(),
        &format!("{test}-step-{}.yaml", st.index),
    );
    let at = format!("{test} / {} (step {})", st.step.subtest, st.index);
    if !model.errors.is_empty() {
        failures.push(format!("{at}: manifests not loaded: {:?}", model.errors));
        return None;
    }
    let cnps = st.objects.of_kind("ClusterNetworkPolicy").count();
    if model.cluster_policies.len() != cnps {
        failures.push(format!(
            "{at}: {cnps} ClusterNetworkPolicies in the manifests, {} in the model",
            model.cluster_policies.len()
        ));
    }
    let nodes = st.objects.of_kind("Node").count();
    if model.nodes.len() != nodes {
        failures.push(format!(
            "{at}: {nodes} Nodes in the manifests, {} in the model",
            model.nodes.len()
        ));
    }
    Some(model)
}

/// Each probe against the oracle and the lookup model; a line per
/// disagreement with upstream.
fn check_probe(
    p: &Resolved,
    model: &Model,
    nodes: &mut BTreeMap<String, CompiledNode>,
    failures: &mut Vec<String>,
) {
    let want = p.expect_allowed();
    let flow = p.flow();
    let oracle = evaluate(model, &flow);
    if oracle.allowed() != want {
        failures.push(format!(
            "{p}: oracle {} (egress {:?}, ingress {:?})",
            if oracle.allowed() { "allows" } else { "denies" },
            oracle.egress,
            oracle.ingress
        ));
    }
    // Each agent compiles its node on its own (its own identities).
    for node in [&p.src_node, &p.dst_node] {
        nodes
            .entry(node.clone())
            .or_insert_with(|| compile(model, node, &mut IdentityAllocator::new()));
    }
    let egress = check(&nodes[&p.src_node], &flow).egress;
    let ingress = check(&nodes[&p.dst_node], &flow).ingress;
    if (egress.allows() && ingress.allows()) != want {
        failures.push(format!(
            "{p}: lookup model {} (egress on {} {egress:?}, ingress on {} {ingress:?})",
            if want { "denies" } else { "allows" },
            p.src_node,
            p.dst_node
        ));
    }
}

fn run(name: &str) {
    let suite = Suite::load().unwrap_or_else(|e| panic!("{e:#}"));
    let test = suite.test(name).unwrap();
    let steps = test
        .walk(&suite.topology)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut failures = Vec::new();
    let mut probes = 0;
    for st in &steps {
        let Some(model) = model_of(st, name, &mut failures) else {
            continue;
        };
        let mut nodes = BTreeMap::new();
        for p in &st.probes {
            probes += 1;
            check_probe(p, &model, &mut nodes, &mut failures);
        }
    }
    assert_eq!(probes, test.probe_count(), "{name}: every probe checked");
    assert!(
        failures.is_empty(),
        "{name}: {} disagreements with upstream:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

macro_rules! conformance {
    ($($fn:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $fn() {
                run($name);
            }
        )*

        /// Every test of the suite has its `#[test]` here.
        #[test]
        fn every_test_runs() {
            let suite = Suite::load().unwrap();
            let mut here = vec![$($name),*];
            let mut all: Vec<&str> = suite.tests.iter().map(|t| t.name.as_str()).collect();
            here.sort();
            all.sort();
            assert_eq!(here, all);
        }
    };
}

conformance! {
    cnp_admin_tier_egress_named_port => "CNPAdminTierEgressNamedPort",
    cnp_admin_tier_egress_node_peers => "CNPAdminTierEgressNodePeers",
    cnp_admin_tier_ingress_named_port => "CNPAdminTierIngressNamedPort",
    cnp_admin_tier_egress_inline_cidr_peers => "CNPAdminTierEgressInlineCIDRPeers",
    cnp_admin_tier_egress_sctp => "CNPAdminTierEgressSCTP",
    cnp_admin_tier_egress_tcp => "CNPAdminTierEgressTCP",
    cnp_admin_tier_egress_udp => "CNPAdminTierEgressUDP",
    cnp_admin_tier_gress => "CNPAdminTierGress",
    cnp_admin_tier_ingress_sctp => "CNPAdminTierIngressSCTP",
    cnp_admin_tier_ingress_tcp => "CNPAdminTierIngressTCP",
    cnp_admin_tier_ingress_udp => "CNPAdminTierIngressUDP",
    cnp_admin_tier_integration => "CNPAdminTierIntegration",
    cnp_admin_tier_priority_field => "CNPAdminTierPriorityField",
    cnp_baseline_tier_egress_named_port => "CNPBaselineTierEgressNamedPort",
    cnp_baseline_tier_egress_node_peers => "CNPBaselineTierEgressNodePeers",
    cnp_baseline_tier_ingress_named_port => "CNPBaselineTierIngressNamedPort",
    cnp_baseline_tier_egress_inline_cidr_peers => "CNPBaselineTierEgressInlineCIDRPeers",
    cnp_baseline_tier_egress_sctp => "CNPBaselineTierEgressSCTP",
    cnp_baseline_tier_egress_tcp => "CNPBaselineTierEgressTCP",
    cnp_baseline_tier_egress_udp => "CNPBaselineTierEgressUDP",
    cnp_baseline_tier_gress => "CNPBaselineTierGress",
    cnp_baseline_tier_ingress_sctp => "CNPBaselineTierIngressSCTP",
    cnp_baseline_tier_ingress_tcp => "CNPBaselineTierIngressTCP",
    cnp_baseline_tier_ingress_udp => "CNPBaselineTierIngressUDP",
}
