//! End to end on real traffic: a policy change reaches established flows.
//! A TCP connection and a UDP socket from x/client to x/server's echo
//! server, over IPv4 and over IPv6, send a numbered message every 5 ms
//! while the policies change
//! under them. A change that refuses the flow cuts it: no message sent
//! after the agent's round is echoed, and TCP's retransmissions never get
//! through. A change that still allows it (the pods' maps flipping to a
//! new generation) loses nothing.
//!
//! A flow refused at one pod whose other direction is not isolated stays
//! cut too: that pod's next retransmission finds the entry marked cut
//! (`CT_CUT`) rather than no entry, so it cannot open the flow again in
//! its own direction (docs/ebpf.md, Conntrack).
//!
//! Needs the `palisade` binary: `$PALISADE_BIN`, else target/debug/palisade.
//! The lab (namespaces, agent, bpffs) is removed on drop, also when an
//! assertion fails; every flow is bounded by `LIMIT`.

use palisade_common::{EP_AUDIT_INGRESS, EP_ISOLATED_INGRESS};
use palisade_lab::{Family, Protocol};
use palisade_tests::echo_flow::{Flow, Record};
use palisade_tests::lab::retrans_in;
use palisade_tests::revocation::{policies, Change, Node, CLIENT_EGRESS, ISOLATE, SERVER_INGRESS};
use std::time::Duration;

const PERIOD: Duration = Duration::from_millis(5);
/// The longest a flow runs.
const LIMIT: Duration = Duration::from_secs(20);
/// Echoes that show a flow passes before the change.
const WARM: usize = 20;
/// How long a cut flow keeps sending after the change: TCP retransmits
/// the first lost segment about 0.2, 0.6 and 1.4 s after it.
const AFTER_CUT: Duration = Duration::from_millis(1500);
/// Messages sent this long before the change must all be echoed; a
/// message sent just before it may lose its echo to the change.
const IN_FLIGHT: Duration = Duration::from_millis(50);

/// Every pod isolated for egress, enforced whatever the ingress policies'
/// mode; nothing allowed.
const ISOLATE_EGRESS: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: isolate-egress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
";

/// The server isolated for ingress with nothing allowed; `mode` is the
/// `palisade.dev/enforcement` annotation, if any.
fn server_deny(mode: Option<&str>) -> String {
    let annotations = mode.map_or(String::new(), |m| {
        format!("\n  annotations: {{palisade.dev/enforcement: {m}}}")
    });
    format!(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: server-deny
  namespace: x{annotations}
spec:
  podSelector: {{matchLabels: {{app: server}}}}
  policyTypes: [Ingress]
"
    )
}

/// `CLIENT_EGRESS` with its peer written as an expression, and a rule for
/// an unrelated destination: the same flow allowed by other maps.
const CLIENT_EGRESS_REWRITTEN: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-egress, namespace: x}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
    - to: [{podSelector: {matchExpressions: [{key: app, operator: In, values: [server]}]}}]
      ports: [{port: 80, protocol: TCP}, {port: 80, protocol: UDP}]
    - to: [{ipBlock: {cidr: 203.0.113.0/24}}]
      ports: [{port: 443}]
";

/// `SERVER_INGRESS` rewritten the same way.
const SERVER_INGRESS_REWRITTEN: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-ingress, namespace: x}
spec:
  podSelector: {matchExpressions: [{key: app, operator: In, values: [server]}]}
  ingress:
    - from: [{podSelector: {matchExpressions: [{key: app, operator: Exists}, {key: app, operator: NotIn, values: [server]}]}}]
      ports: [{port: 80, protocol: TCP}, {port: 80, protocol: UDP}]
    - from: [{ipBlock: {cidr: 198.51.100.0/24}}]
      ports: [{port: 8080}]
";

/// A flow of each of `protocols` from the client to the server, in both
/// families, each echoed `WARM` times.
fn flows(node: &Node, protocols: &[Protocol]) -> Vec<Flow> {
    let families = [Family::V4, Family::V6];
    protocols
        .iter()
        .flat_map(|&p| families.map(|f| (p, f)))
        .map(|(p, f)| {
            let ends = ("x/client", "x/server", f);
            let flow = Flow::start_in(&node.lab, ends, p, 80, PERIOD, LIMIT)
                .unwrap_or_else(|e| panic!("{e:#}\n{}", node.log()));
            flow.wait_echoes(WARM, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("before the change: {e:#}\n{}", node.log()));
            flow
        })
        .collect()
}

/// The flow passed before the change and nothing sent after the agent's
/// round came back.
fn assert_cut(r: &Record, change: &Change, node: &Node) {
    let what = || format!("{}\nagent log:\n{}", r.summary(), node.log());
    assert!(r.error.is_none(), "broken rather than cut: {}", what());
    assert!(
        r.echoed_sent_before(change.written) >= WARM,
        "did not pass before the change: {}",
        what()
    );
    assert_eq!(
        r.lost_sent_before(change.written - IN_FLIGHT),
        0,
        "lost messages before the change: {}",
        what()
    );
    // A cut TCP connection's sender may stall once its send buffer is
    // full of unacknowledged messages; it must have tried for a while.
    let after = r.sent_from(change.enforced);
    assert!(after >= 20, "{after} messages after the cut: {}", what());
    assert_eq!(
        r.echoed_sent_from(change.enforced),
        0,
        "echoes after the change: {}",
        what()
    );
}

/// Runs flows of `protocols` under `before`, changes to `after`, and
/// checks that every one is cut.
fn cut(label: &str, before: &str, after: &str, protocols: &[Protocol]) {
    cut_on(&Node::up(label, before).expect("lab up"), after, protocols);
}

/// `cut` on a node already up.
fn cut_on(node: &Node, after: &str, protocols: &[Protocol]) {
    let retrans = retrans_in(&node.lab, "x/client");
    let running = flows(node, protocols);
    let change = node
        .change(after)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", node.log()));
    std::thread::sleep(AFTER_CUT);
    for record in running.into_iter().map(Flow::finish) {
        assert_cut(&record, &change, node);
    }
    // The TCP client went on trying: the cut is a silent drop of every
    // retransmission, not a reset.
    if protocols.contains(&Protocol::Tcp) {
        assert!(
            retrans_in(&node.lab, "x/client") > retrans,
            "no TCP retransmission after the cut"
        );
    }
}

const BOTH: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];

/// Both pods isolated both ways: the server's ingress refuses the flow
/// (the client's egress still allows it).
#[test]
fn removing_the_servers_ingress_allow_cuts_established_flows() {
    cut(
        "revoke_server_ingress",
        &policies(&[ISOLATE, CLIENT_EGRESS, SERVER_INGRESS]),
        &policies(&[ISOLATE, CLIENT_EGRESS]),
        &BOTH,
    );
}

/// Both pods isolated both ways: the client's egress refuses the flow
/// (the server's ingress still allows it).
#[test]
fn removing_the_clients_egress_allow_cuts_established_flows() {
    cut(
        "revoke_client_egress",
        &policies(&[ISOLATE, CLIENT_EGRESS, SERVER_INGRESS]),
        &policies(&[ISOLATE, SERVER_INGRESS]),
        &BOTH,
    );
}

/// Only one direction of one pod is isolated, by `policy`, which then
/// stops allowing its `peer`.
fn only_allow_removed(label: &str, policy: &str, peer: &str, protocol: Protocol) {
    let after = policy.replace(&format!("app: {peer}}}}}"), "app: nobody}}");
    assert_ne!(after, policy, "the allowed peer is not in the policy");
    cut(label, policy, &after, &[protocol]);
}

#[test]
fn removing_the_servers_only_allow_cuts_an_established_udp_flow() {
    only_allow_removed(
        "revoke_only_ingress_udp",
        SERVER_INGRESS,
        "client",
        Protocol::Udp,
    );
}

#[test]
fn removing_the_clients_only_allow_cuts_an_established_udp_flow() {
    only_allow_removed(
        "revoke_only_egress_udp",
        CLIENT_EGRESS,
        "server",
        Protocol::Udp,
    );
}

#[test]
fn removing_the_servers_only_allow_cuts_an_established_tcp_connection() {
    only_allow_removed(
        "revoke_only_ingress_tcp",
        SERVER_INGRESS,
        "client",
        Protocol::Tcp,
    );
}

#[test]
fn removing_the_clients_only_allow_cuts_an_established_tcp_connection() {
    only_allow_removed(
        "revoke_only_egress_tcp",
        CLIENT_EGRESS,
        "server",
        Protocol::Tcp,
    );
}

/// Every pod's egress isolated (enforced), the client's allowing the
/// server; the server's ingress isolated by `server_deny(before)`, in
/// audit mode: the flow is a would-deny and passes, until `after`.
fn audit_then(label: &str, after: Option<&str>) {
    let policies_with = |mode| policies(&[ISOLATE_EGRESS, CLIENT_EGRESS, &server_deny(mode)]);
    let node = Node::up(label, &policies_with(Some("audit"))).expect("lab up");
    let audit = |node: &Node| {
        let flags = node.endpoint("x/server").unwrap()["flags"]
            .as_u64()
            .unwrap() as u32;
        assert_ne!(
            flags & EP_ISOLATED_INGRESS,
            0,
            "server ingress not isolated"
        );
        flags & EP_AUDIT_INGRESS != 0
    };
    assert!(audit(&node), "the server's ingress is not in audit mode");
    cut_on(&node, &policies_with(after), &BOTH);
    assert!(!audit(&node), "the server's ingress is still in audit mode");
}

#[test]
fn switching_from_audit_to_enforce_cuts_would_deny_flows() {
    audit_then("revoke_audit", Some("enforce"));
}

/// Absent means enforce: removing the annotation is the same switch.
#[test]
fn removing_the_audit_annotation_cuts_would_deny_flows() {
    audit_then("revoke_audit_absent", None);
}

/// `generation` and `epoch` of a pod's record.
fn versions(node: &Node, pod: &str) -> (u64, u64) {
    let e = node.endpoint(pod).unwrap();
    (
        e["generation"].as_u64().unwrap(),
        e["epoch"].as_u64().unwrap(),
    )
}

#[test]
fn flows_still_allowed_survive_the_flip_without_loss() {
    let node = Node::up(
        "revoke_survive",
        &policies(&[ISOLATE, CLIENT_EGRESS, SERVER_INGRESS]),
    )
    .expect("lab up");
    let pods = ["x/client", "x/server"];
    let old = pods.map(|p| versions(&node, p));
    let retrans = pods.map(|p| retrans_in(&node.lab, p));
    let running = flows(&node, &BOTH);
    let change = node
        .change(&policies(&[
            ISOLATE,
            CLIENT_EGRESS_REWRITTEN,
            SERVER_INGRESS_REWRITTEN,
        ]))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", node.log()));
    // Both pods run new maps under a new epoch: every entry went stale.
    for (pod, (generation, epoch)) in pods.iter().zip(old) {
        let (g, e) = versions(&node, pod);
        assert_ne!(g, generation, "{pod}: maps did not flip\n{}", node.log());
        assert_ne!(e, epoch, "{pod}: epoch did not move");
    }
    std::thread::sleep(Duration::from_millis(500));
    for r in running.into_iter().map(Flow::finish) {
        let what = || format!("{}\nagent log:\n{}", r.summary(), node.log());
        assert!(r.error.is_none(), "{}", what());
        assert!(r.sent_from(change.enforced) >= 50, "{}", what());
        assert_eq!(r.lost(), 0, "messages lost: {}", what());
    }
    // Nor did TCP hide a loss by retransmitting.
    for (pod, before) in pods.iter().zip(retrans) {
        assert_eq!(retrans_in(&node.lab, pod), before, "{pod} retransmitted");
    }
}
