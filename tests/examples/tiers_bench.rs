//! Cost per packet of ClusterNetworkPolicy tiers: the same pod programmed
//! from a model with a NetworkPolicy alone, from the same model plus one
//! ClusterNetworkPolicy (an Admin Deny of the metadata address), and plus
//! 100 (Admin and Baseline; ten of them select the pod, with rules of
//! alternating actions), measured in the same rounds through
//! BPF_PROG_TEST_RUN. One cluster policy against 100 shows what the count
//! costs; NetworkPolicy alone against one shows what having cluster rules
//! at all costs (a rule for every port means the peer lookups that a
//! port no rule names would have skipped). Run as root:
//! `cargo run --release -p palisade-tests --example tiers_bench`.
//! Prints; never judges.

use anyhow::{ensure, Result};
use palisade_policy::{
    load_str, Action, ClusterPeer, ClusterPolicy, ClusterRule, Model, PodSet, Selector, Tier,
};
use palisade_tests::classifier::bench::{measure, Case};
use palisade_tests::classifier::{
    allow_as_next, compiled::program_pod, packet::Packet, Classifier, Hook, TCX_DROP, TCX_NEXT,
};
use palisade_tests::tiers::{ns, policy, rule, tcp};
use std::net::IpAddr;

const REPEAT: u32 = 200_000;
const ROUNDS: usize = 5;
const CLUSTER_POLICIES: usize = 100;

const CLUSTER: &str = "
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1}
status: {podIPs: [{ip: 10.0.0.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {nodeName: n2}
status: {podIPs: [{ip: 10.0.0.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: shop, labels: {app: other}}
spec: {nodeName: n2}
status: {podIPs: [{ip: 10.0.0.3}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: db}}}], ports: [{port: 8080}]}]
  egress: [{to: [{podSelector: {matchLabels: {app: db}}}], ports: [{port: 5432}]}]
";

/// Policy `i`: every tenth selects the shop namespace; the others select
/// namespaces with no pod here. Each denies a network on a port, then
/// accepts a namespace on another, in both directions.
fn cluster_policy(i: usize) -> ClusterPolicy {
    let subject = if i.is_multiple_of(10) {
        ns("shop")
    } else {
        ns(&format!("tenant-{i}"))
    };
    let net = format!("203.0.113.{}/32", i % 250).parse().unwrap();
    let monitoring = PodSet {
        namespaces: ns(&format!("monitoring-{i}")),
        pods: Selector::default(),
    };
    let rules = vec![
        ClusterRule {
            name: Some(format!("deny-{i}")),
            ..rule(
                Action::Deny,
                vec![ClusterPeer::Networks(vec![net])],
                tcp(1000 + i as u16),
            )
        },
        ClusterRule {
            name: Some(format!("accept-{i}")),
            ..rule(
                Action::Accept,
                vec![ClusterPeer::Pods(monitoring)],
                tcp(9000 + i as u16),
            )
        },
    ];
    let tier = if i.is_multiple_of(2) {
        Tier::Admin
    } else {
        Tier::Baseline
    };
    let mut p = policy(&format!("cnp-{i:03}"), tier, i as u32);
    p.subject.namespaces = subject;
    p.ingress = rules.clone();
    p.egress = rules;
    p
}

/// The first selecting Admin policy also denies the metadata address.
fn metadata_deny() -> ClusterPolicy {
    let mut p = policy("no-metadata", Tier::Admin, 0);
    let metadata = "169.254.169.254/32".parse().unwrap();
    p.egress = vec![rule(
        Action::Deny,
        vec![ClusterPeer::Networks(vec![metadata])],
        None,
    )];
    p
}

fn model(cluster_policies: usize) -> Model {
    let mut m = load_str(CLUSTER, "bench.yaml");
    if cluster_policies > 0 {
        m.cluster_policies = (1..cluster_policies).map(cluster_policy).collect();
        m.cluster_policies.push(metadata_deny());
        m.cluster_policies
            .sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    }
    m
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cases() -> Vec<Case> {
    let (web, db, other) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
    let established = Packet::tcp(web, db, 40000, 5432).build();
    // Every harness gives the same verdict.
    let case = |name, hook, frame, want| Case {
        name,
        hook,
        frame,
        want,
        forwarded_from: 0,
    };
    vec![
        case(
            "no-op classifier (floor)",
            None,
            established.clone(),
            TCX_NEXT,
        ),
        case(
            "established TCP (conntrack hit)",
            Some(Hook::Egress),
            established,
            TCX_NEXT,
        ),
        case(
            "new flow denied by the NetworkPolicy",
            Some(Hook::Egress),
            Packet::tcp(web, other, 40001, 443).build(),
            TCX_DROP,
        ),
        case(
            "new flow to 169.254.169.254 (Admin Deny)",
            Some(Hook::Egress),
            Packet::tcp(web, ip("169.254.169.254"), 40002, 80).build(),
            TCX_DROP,
        ),
        case(
            "new flow in, denied at ingress",
            Some(Hook::Ingress),
            Packet::tcp(other, web, 40003, 8080).build(),
            TCX_DROP,
        ),
    ]
}

fn main() -> Result<()> {
    let models = [model(0), model(1), model(CLUSTER_POLICIES)];
    let mut harnesses: Vec<Classifier> = Vec::new();
    for m in &models {
        let c = program_pod(m, "n1", "shop/web")?;
        // The established case's flow.
        let open = Packet::tcp(ip("10.0.0.1"), ip("10.0.0.2"), 40000, 5432).build();
        ensure!(allow_as_next(c.run(Hook::Egress, &open)?) == TCX_NEXT);
        harnesses.push(c);
    }
    let cases = cases();
    let best = measure(
        &harnesses.iter().collect::<Vec<_>>(),
        &cases,
        ROUNDS,
        REPEAT,
    )?;
    let floor = best.iter().map(|b| b[0]).min().unwrap_or(0);
    println!(
        "ns per packet, best of {ROUNDS} x {REPEAT} runs, above the no-op floor ({floor} ns); \
         ratios of whole packets"
    );
    println!(
        "  {:42} {:>8} {:>8} {:>8} {:>10} {:>10}",
        "case", "NP only", "+1 CNP", "+100 CNP", "100/1", "100/NP"
    );
    let ratio = |a: u128, b: u128| a as f64 / b.max(1) as f64;
    for (i, case) in cases.iter().enumerate().skip(1) {
        let above: Vec<u128> = best.iter().map(|b| b[i].saturating_sub(floor)).collect();
        println!(
            "  {:42} {:>8} {:>8} {:>8} {:>10.2} {:>10.2}",
            case.name,
            above[0],
            above[1],
            above[2],
            ratio(best[2][i], best[1][i]),
            ratio(best[2][i], best[0][i])
        );
    }
    Ok(())
}
