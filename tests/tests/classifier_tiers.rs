//! ClusterNetworkPolicy tiers in the kernel, on crafted frames
//! (BPF_PROG_TEST_RUN): a pod programmed from a model with Admin and
//! Baseline policies beside a NetworkPolicy must give, for every probe,
//! the verdict the oracle gives; a cluster Deny is final even in audit
//! mode, and never cuts a pod off from its own node.

use anyhow::Result;
use palisade_common::{PROTO_TCP, PROTO_UDP};
use palisade_policy::{
    evaluate_direction, load_str, Action, ClusterPeer, ClusterPolicy, Direction, Flow, Model,
    PodSet, Selector, Tier,
};
use palisade_tests::classifier::{
    compiled::program_pod, packet::Packet, Classifier, Hook, TCX_DROP, TCX_NEXT,
};
use palisade_tests::tiers::{ns, policy, rule, tcp};
use std::net::IpAddr;

const CLUSTER: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
---
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
metadata: {name: prom, namespace: monitoring, labels: {app: prom}}
spec: {nodeName: n2}
status: {podIPs: [{ip: 10.0.1.1}]}
";

/// web's ingress admits db only, on 5432.
const WEB_FROM_DB: &str = "
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {app: db}}}], ports: [{port: 5432}]}]
";

const WEB: &str = "10.0.0.1";
const DB: &str = "10.0.0.2";
const PROM: &str = "10.0.1.1";
const METADATA: &str = "169.254.169.254";
const WORLD: &str = "198.51.100.7";

/// Admin: scraping from monitoring on 9090 always allowed; the metadata
/// address never; shop's own traffic passed to NetworkPolicy. Baseline:
/// egress to the world on 443 only.
fn cluster_policies() -> Vec<ClusterPolicy> {
    let mut scrape = policy("scrape", Tier::Admin, 1);
    scrape.ingress = vec![rule(
        Action::Accept,
        vec![ClusterPeer::Pods(PodSet {
            namespaces: ns("monitoring"),
            pods: Selector::default(),
        })],
        tcp(9090),
    )];
    let mut metadata = policy("no-metadata", Tier::Admin, 2);
    metadata.egress = vec![rule(
        Action::Deny,
        vec![ClusterPeer::Networks(vec![format!("{METADATA}/32")
            .parse()
            .unwrap()])],
        None,
    )];
    let mut pass = policy("shop-decides", Tier::Admin, 3);
    pass.subject.namespaces = ns("shop");
    pass.ingress = vec![rule(
        Action::Pass,
        vec![ClusterPeer::Pods(PodSet {
            namespaces: ns("shop"),
            pods: Selector::default(),
        })],
        None,
    )];
    pass.ingress
        .push(rule(Action::Deny, vec![ClusterPeer::All], tcp(22)));
    let mut baseline = policy("egress-443", Tier::Baseline, 0);
    baseline.egress = vec![
        rule(Action::Accept, vec![ClusterPeer::All], tcp(443)),
        rule(
            Action::Deny,
            vec![ClusterPeer::Networks(vec!["0.0.0.0/0".parse().unwrap()])],
            None,
        ),
    ];
    vec![scrape, metadata, pass, baseline]
}

fn model(network_policy: &str) -> Model {
    let mut m = load_str(&format!("{CLUSTER}{network_policy}"), "test.yaml");
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    m.cluster_policies = cluster_policies();
    m.cluster_policies
        .sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    m
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn passes(v: u32) -> bool {
    match v {
        TCX_NEXT => true,
        TCX_DROP => false,
        other => panic!("unexpected verdict {other}"),
    }
}

/// Runs every probe through web's hooks (each a new flow: its own source
/// port) and compares with the oracle; returns how many the oracle denied.
fn against_oracle(c: &Classifier, m: &Model) -> Result<usize> {
    let web = m.pod("shop", "web").unwrap();
    let mut sport = 30_000;
    let mut denied = 0;
    let peers = [DB, PROM, METADATA, WORLD];
    for (proto, ports) in [
        (PROTO_TCP, &[22u16, 443, 5432, 9090][..]),
        (PROTO_UDP, &[53][..]),
    ] {
        for port in ports {
            for peer in peers {
                for dir in [Direction::Ingress, Direction::Egress] {
                    sport += 1;
                    let (src, dst, hook) = match dir {
                        Direction::Ingress => (ip(peer), ip(WEB), Hook::Ingress),
                        Direction::Egress => (ip(WEB), ip(peer), Hook::Egress),
                    };
                    let frame = match proto {
                        PROTO_TCP => Packet::tcp(src, dst, sport, *port).syn().build(),
                        _ => Packet::udp(src, dst, sport, *port).build(),
                    };
                    let flow = Flow {
                        src,
                        dst,
                        proto,
                        dport: *port,
                    };
                    let want = evaluate_direction(m, web, dir, &flow);
                    let got = passes(c.run(hook, &frame)?);
                    assert_eq!(got, want.allows(), "{dir:?} {flow:?}: oracle {want:?}");
                    denied += usize::from(!want.allows());
                }
            }
        }
    }
    Ok(denied)
}

#[test]
fn kernel_verdicts_equal_the_oracle_across_tiers() -> Result<()> {
    for extra in ["", WEB_FROM_DB] {
        let m = model(extra);
        let c = program_pod(&m, "n1", "shop/web")?;
        let denied = against_oracle(&c, &m)?;
        assert!(denied > 0, "no probe was denied: the test proves nothing");
    }
    Ok(())
}

/// An Admin policy first in evaluation order whose 70 rules (alternating
/// Accept and Deny on ports no probe uses) take every rule bit: the
/// policies of `cluster_policies` spill, and must decide as before.
fn filler() -> ClusterPolicy {
    let mut p = policy("aaa-filler", Tier::Admin, 0);
    p.ingress = (0..70)
        .map(|i| {
            let action = if i % 2 == 0 {
                Action::Accept
            } else {
                Action::Deny
            };
            rule(action, vec![ClusterPeer::All], tcp(30_000 + i))
        })
        .collect();
    p.egress = p.ingress.clone();
    p
}

#[test]
fn spilled_cluster_groups_decide_in_order_in_the_kernel() -> Result<()> {
    for extra in ["", WEB_FROM_DB] {
        let mut m = model(extra);
        m.cluster_policies.insert(0, filler());
        let c = program_pod(&m, "n1", "shop/web")?;
        let denied = against_oracle(&c, &m)?;
        assert!(denied > 0, "no probe was denied: the test proves nothing");
    }
    Ok(())
}

#[test]
fn a_cluster_deny_is_final_in_audit_mode() -> Result<()> {
    // The NetworkPolicy in audit mode: what it refuses passes as would
    // deny, but the Admin Deny of port 22 (after shop's Pass, from
    // outside shop) still drops.
    let audit = WEB_FROM_DB.replace(
        "metadata: {name: web-from-db, namespace: shop}",
        "metadata: {name: web-from-db, namespace: shop, annotations: {palisade.dev/enforcement: audit}}",
    );
    let m = model(&audit);
    let c = program_pod(&m, "n1", "shop/web")?;
    let ssh = Packet::tcp(ip(PROM), ip(WEB), 40_001, 22).syn().build();
    assert!(
        !passes(c.run(Hook::Ingress, &ssh)?),
        "admin deny softened by audit"
    );
    let other = Packet::tcp(ip(PROM), ip(WEB), 40_002, 8080).syn().build();
    assert!(
        passes(c.run(Hook::Ingress, &other)?),
        "audit isolation dropped"
    );
    Ok(())
}

#[test]
fn a_cluster_deny_spares_the_pods_own_node() -> Result<()> {
    // The Baseline denies egress to 0.0.0.0/0 but port 443: the node
    // (identity HOST) is still reachable, as kubelet needs.
    let m = model("");
    let mut c = program_pod(&m, "n1", "shop/web")?;
    let node = ip("192.0.2.1");
    c.set_identity(node, 32, palisade_common::IDENTITY_HOST)?;
    let to_node = Packet::tcp(ip(WEB), node, 40_003, 10250).syn().build();
    assert!(passes(c.run(Hook::Egress, &to_node)?));
    let elsewhere = Packet::tcp(ip(WEB), ip(WORLD), 40_004, 10250).syn().build();
    assert!(!passes(c.run(Hook::Egress, &elsewhere)?));
    Ok(())
}
