//! Full maps, one of each kind the writer fills: `ENDPOINTS` (a new
//! interface finds no room for its record), `IDENTITIES` (a new pod of
//! another node gets no identity), `SERVICES` (a new Service gets no
//! frontend) and a pod's inner maps (a policy with more port entries than
//! an inner port trie holds). `LOCAL_ADDRS` and the policy outer maps are
//! sized from `ENDPOINTS` (two addresses, four outer keys per record), so
//! they cannot fill first. Each time the pods already enforced keep what
//! they have, the error is reported, and the round is retried until there
//! is room.

use palisade_common::{EP_DENY_ALL, EP_PENDING};
use palisade_tests::fault::fill::{self, Filled};
use palisade_tests::fault::operator::metric;
use palisade_tests::fault::pins::endpoint;
use palisade_tests::fault::{
    during, pod, row, server_ingress, FaultNode, Live, Operator, Tally, AGENT_CHANGE, METRICS, NODE,
};
use palisade_tests::kernel::{poll_until, run, tcx_progs};
use serde_json::json;
use std::time::Duration;

/// Room in the pinned `IDENTITIES`: the lab's pods and node addresses
/// take about a dozen.
const IDENTITIES_ROOM: u32 = 64;

fn round_errors(node: &FaultNode) -> f64 {
    metric(node, METRICS, "palisade_round_errors_total")
}

fn step_errors(node: &FaultNode, step: &str) -> f64 {
    metric(
        node,
        METRICS,
        &format!("palisade_node_step_errors_total{{step=\"{step}\"}}"),
    )
}

/// Waits until the agent has counted a failed round more than `before`.
#[track_caller]
fn wait_round_error(node: &FaultNode, before: f64) -> f64 {
    let mut now = before;
    let seen = poll_until(AGENT_CHANGE, || {
        now = round_errors(node);
        now > before
    });
    assert!(seen, "no failed round counted");
    now
}

/// Fills a map with `fill`, makes the change `change` that needs room in
/// it, checks what was reported (`reported`), empties the map again and
/// waits for `programmed` to hold.
fn full(
    node: &FaultNode,
    live: &Live,
    op: &mut Operator,
    filler: fn(&FaultNode) -> Filled,
    change: impl FnOnce(),
    reported: impl FnOnce(&mut Operator),
    programmed: impl Fn() -> bool,
) {
    let errors = round_errors(node);
    let filled = filler(node);
    assert!(filled.added() > 0, "the map was full already");
    change();
    let now = wait_round_error(node, errors);
    op.saw(format!("palisade_round_errors_total +{}", now - errors));
    reported(op);
    assert!(!programmed(), "programmed without room");
    // Room again: the retry (backoff of at most 5 s) gets it in.
    fill::empty(node, filled);
    assert!(
        poll_until(AGENT_CHANGE, programmed),
        "not programmed once there was room"
    );
    assert!(live.recovered(AGENT_CHANGE).is_some());
}

#[track_caller]
fn assert_kept(fault: &str, tally: &Tally) {
    assert_eq!(tally.wrongly_allowed(), 0, "{fault}: {tally:?}");
    assert_eq!(tally.wrongly_dropped(), 0, "{fault}: {tally:?}");
}

#[test]
fn full_maps_of_each_kind() {
    let node = FaultNode::up("fault-full");
    fill::pin_small_identities(&node, IDENTITIES_ROOM);
    let agent = node.start_enforcing(&node.options());
    let log = || node.log(&agent);

    // ENDPOINTS: an interface appears (its pod not known yet), and its
    // record does not fit. Its classifiers are attached first: with no
    // record they drop everything.
    let fault = "ENDPOINTS full: a new pod interface finds no room for its record";
    let mut op = Operator::new(&node);
    let stray = "stray0";
    let (tally, ()) = during(&node, |live| {
        let ifindex = std::sync::atomic::AtomicU32::new(0);
        full(
            &node,
            live,
            &mut op,
            fill::fill_endpoints,
            || {
                node.lab
                    .run_in_node(|| {
                        let host = palisade_tests::kernel::add_pod_iface(stray, "10.244.1.50");
                        ifindex.store(host, std::sync::atomic::Ordering::SeqCst);
                    })
                    .unwrap();
            },
            |op| {
                op.log(&log(), "cannot write the endpoint record");
                let held = node.lab.run_in_node(|| tcx_progs(stray)).unwrap();
                assert_eq!(held, (1, 1), "the interface is not held");
                op.saw("its classifiers attached, no record: it drops everything");
            },
            || {
                endpoint(&node, ifindex.load(std::sync::atomic::Ordering::SeqCst))
                    .is_some_and(|e| e.flags == EP_PENDING)
            },
        );
        node.lab
            .run_in_node(|| run("ip", &["link", "del", stray]))
            .unwrap();
    });
    row(fault, &tally, &op);
    assert_kept(fault, &tally);

    // IDENTITIES: a pod of another node appears; no room for its address.
    let fault = "IDENTITIES full: a new pod of another node gets no identity";
    let mut op = Operator::new(&node);
    let far: std::net::Ipv4Addr = "10.244.2.5".parse().unwrap();
    let (tally, ()) = during(&node, |live| {
        full(
            &node,
            live,
            &mut op,
            fill::fill_identities,
            || {
                let mut p = pod("far", &far.to_string());
                p["spec"]["nodeName"] = json!("node-2");
                node.api.apply(p).unwrap();
            },
            |op| {
                let n = step_errors(&node, "IDENTITIES");
                assert!(n > 0.0);
                op.saw(format!(
                    "palisade_node_step_errors_total{{step=IDENTITIES}} {n}"
                ));
                op.log(&log(), "fails closed step=\"IDENTITIES\"");
            },
            || fill::has_identity(&node, far),
        );
    });
    row(fault, &tally, &op);
    assert_kept(fault, &tally);

    // SERVICES: a Service appears; no room for its frontend.
    let fault = "SERVICES full: a new Service gets no frontend";
    let mut op = Operator::new(&node);
    let vip: std::net::Ipv4Addr = "10.96.0.10".parse().unwrap();
    let (tally, ()) = during(&node, |live| {
        full(
            &node,
            live,
            &mut op,
            fill::fill_services,
            || {
                node.api
                    .apply(json!({
                        "apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": "web", "namespace": "x"},
                        "spec": {"clusterIP": vip.to_string(), "clusterIPs": [vip.to_string()],
                                 "selector": {"app": "server"},
                                 "ports": [{"port": 80, "protocol": "TCP"}]},
                    }))
                    .unwrap();
            },
            |op| {
                let n = step_errors(&node, "SERVICES");
                assert!(n > 0.0);
                op.saw(format!(
                    "palisade_node_step_errors_total{{step=SERVICES}} {n}"
                ));
                op.log(&log(), "fails closed step=\"SERVICES\"");
            },
            || fill::has_service(&node, vip, 80),
        );
    });
    row(fault, &tally, &op);
    assert_kept(fault, &tally);

    over_capacity(&node, &agent);
}

/// A policy of the server with more port entries than an inner port trie
/// holds: the compiler refuses it and the server is denied everything
/// (never programmed open, nor left on its old policy, which may allow
/// what the new one refuses) until the policy fits again.
fn over_capacity(node: &FaultNode, agent: &palisade_lab::AgentProcess) {
    let fault = "a pod's inner port map over capacity (a policy of 16,400 ports)";
    let server = node
        .lab
        .host_ifindex(palisade_tests::fault::SERVER)
        .unwrap();
    let mut big = server_ingress(false);
    // Even ports only: no two merge into one prefix.
    let ports: Vec<_> = (1..=16_400u32)
        .map(|k| json!({"protocol": "TCP", "port": 2 * k}))
        .collect();
    big["spec"]["ingress"][0]["ports"] = json!(ports);
    let mut op = Operator::new(node);
    let (tally, ()) = during(node, |live| {
        node.api.apply(big).unwrap();
        let denied = poll_until(AGENT_CHANGE, || {
            endpoint(node, server).is_some_and(|e| e.flags == EP_DENY_ALL)
        });
        assert!(denied, "{}", node.log(agent));
        let log = node.log(agent);
        op.log(&log, "exceeds the datapath's capacity");
        // Set at the end of the round that wrote the record.
        let gauge = poll_until(AGENT_CHANGE, || {
            metric(node, METRICS, "palisade_pods_failed_closed") == 1.0
        });
        assert!(gauge, "palisade_pods_failed_closed is not 1");
        op.saw("palisade_pods_failed_closed 1");
        std::thread::sleep(Duration::from_secs(2));
        node.api.apply(server_ingress(false)).unwrap();
        assert!(live.recovered(AGENT_CHANGE).is_some(), "{log}");
        assert!(poll_until(AGENT_CHANGE, || {
            metric(node, METRICS, "palisade_pods_failed_closed") == 0.0
        }));
    });
    op.saw(format!("the server cut off until the policy fits ({NODE})"));
    row(fault, &tally, &op);
    assert_eq!(tally.wrongly_allowed(), 0, "{tally:?}");
    // Fail closed, by design: the server's allowed traffic is dropped.
    assert!(tally.wrongly_dropped() > 0, "{tally:?}");
}
