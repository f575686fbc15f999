//! The API server misbehaving: gone when the agent starts and while it
//! runs, watch streams carrying garbage, 410 Gone over and over, a slow
//! API; and the agent killed while its first sync is still under way.
//! In each, the pins keep enforcing what the last round programmed, and
//! a policy change made during or after the fault is enforced once the
//! API answers properly again.

use palisade_common::Endpoint;
use palisade_lab::AgentProcess;
use palisade_tests::fault::operator::{metric, programmed};
use palisade_tests::fault::{during, row, FaultNode, Live, Operator, Tally, AGENT_CHANGE, METRICS};
use std::time::Duration;

/// Long enough for kube-rs' backoff (0.8 s doubling up to 30 s, jitter)
/// to try again after a few seconds of outage.
const RECONNECT: Duration = Duration::from_secs(60);

/// The sum of a counter over its `resource` labels.
fn total(node: &FaultNode, name: &str) -> f64 {
    ["namespaces", "pods", "networkpolicies", "services"]
        .iter()
        .map(|r| metric(node, METRICS, &format!("{name}{{resource=\"{r}\"}}")))
        .sum()
}

#[track_caller]
fn assert_clean(fault: &str, tally: &Tally) {
    assert_eq!(tally.wrongly_allowed(), 0, "{fault}: {tally:?}");
    assert_eq!(tally.wrongly_dropped(), 0, "{fault}: {tally:?}");
}

/// A fault of the API server while an agent runs: a node `label`
/// with an enforcing agent; `fault` runs while the probe streams go (it
/// gets the agent, the server's record before, the streams and the
/// operator's notes); the row is printed with the health samples, and
/// nothing may be wrongly allowed or dropped. An outage never fails
/// liveness or readiness.
fn while_running(
    fault: &str,
    label: &str,
    run: impl FnOnce(&FaultNode, &AgentProcess, &Endpoint, &Live, &mut Operator),
) {
    let node = FaultNode::up(label);
    let agent = node.start_enforcing(&node.options());
    let before = node.server_record();
    let mut op = Operator::new(&node);
    let (tally, ()) = during(&node, |live| run(&node, &agent, &before, live, &mut op));
    op.saw(format!("/healthz,/readyz {}", tally.health_cell()));
    row(fault, &tally, &op);
    assert_clean(fault, &tally);
    assert_eq!(tally.health, ["200/200"], "{tally:?}");
}

#[test]
fn api_server_down_when_the_agent_starts() {
    let fault = "API server down when the agent (re)starts";
    let node = FaultNode::up("fault-api-start");
    let first = node.start_enforcing(&node.options());
    let before = node.server_record();
    let mut op = Operator::new(&node);
    let (tally, ()) = during(&node, |live| {
        node.stop(&first);
        node.api.set_down(true);
        let agent = node.start(&node.options());
        node.wait_log(&agent, "waiting for the first full list", AGENT_CHANGE);
        // A change the agent cannot see yet.
        node.flip_server_policy(true).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(
            palisade_tests::fault::operator::health(&node, METRICS),
            "200/503",
            "live, not ready, while it waits"
        );
        node.api.set_down(false);
        node.wait_round(&agent, 0, RECONNECT);
        node.wait_server_change(&agent, &before, AGENT_CHANGE);
        assert!(live.recovered(AGENT_CHANGE).is_some());
        let log = node.log(&agent);
        op.log(&log, "waiting for the first full list");
        op.log(&log, "watch failed; retrying with backoff");
        op.saw(format!("then its first round: {}", programmed(&log)));
    });
    op.saw(format!("/healthz,/readyz {}", tally.health_cell()));
    row(fault, &tally, &op);
    assert_clean(fault, &tally);
    assert!(tally.health.iter().any(|h| h == "200/503"), "{tally:?}");
}

#[test]
fn api_server_down_while_the_agent_runs() {
    let fault = "API server down for 5 s while the agent runs";
    while_running(fault, "fault-api-mid", |node, agent, before, live, op| {
        let restarts = total(node, "palisade_watch_restarts_total");
        node.api.set_down(true);
        node.flip_server_policy(true).unwrap();
        std::thread::sleep(Duration::from_secs(5));
        node.api.set_down(false);
        node.wait_server_change(agent, before, RECONNECT);
        assert!(live.recovered(AGENT_CHANGE).is_some());
        let more = total(node, "palisade_watch_restarts_total") - restarts;
        assert!(more > 0.0, "no watch restart counted");
        op.saw(format!("palisade_watch_restarts_total +{more}"));
        op.log(&node.log(agent), "watch failed; retrying with backoff");
    });
}

/// What a broken proxy or a hostile API server might write on a watch
/// stream: each is one line (or not even that).
const GARBAGE: [&[u8]; 7] = [
    b"this is not JSON\n",
    b"{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\",\"metadata\":\n",
    b"[1,2,3]\n",
    b"{\"type\":\"BOGUS\",\"object\":{}}\n",
    b"{\"type\":\"ADDED\",\"object\":42}\n",
    b"{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\",\"code\":500,\"reason\":\"InternalError\",\"message\":\"garbage\"}}\n",
    // Not UTF-8: the line reader itself fails and the stream ends.
    b"\xff\xfe\xfd garbage\n",
];

#[test]
fn watch_streams_that_return_garbage() {
    let fault = "watch streams that return garbage (7 kinds, every watch)";
    while_running(fault, "fault-garbage", |node, agent, before, live, op| {
        let restarts = total(node, "palisade_watch_restarts_total");
        for bytes in GARBAGE {
            node.api.inject_watches(bytes);
            // The watchers read it (and reconnect if it ended a stream).
            std::thread::sleep(Duration::from_millis(1200));
        }
        // The watchers still follow the API.
        node.flip_server_policy(true).unwrap();
        node.wait_server_change(agent, before, RECONNECT);
        assert!(live.recovered(AGENT_CHANGE).is_some());
        let more = total(node, "palisade_watch_restarts_total") - restarts;
        assert!(more > 0.0, "the garbage was not noticed");
        op.saw(format!("palisade_watch_restarts_total +{more}"));
        op.log(&node.log(agent), "watch failed; retrying with backoff");
    });
}

#[test]
fn gone_over_and_over() {
    let fault = "410 Gone loop (history compacted and every watch expired, 10 times in 3 s)";
    while_running(fault, "fault-410", |node, agent, before, live, op| {
        let relists = total(node, "palisade_watch_relists_total");
        for k in 0..10 {
            node.api.compact();
            node.api.expire_watches();
            if k == 5 {
                node.flip_server_policy(true).unwrap();
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        node.wait_server_change(agent, before, RECONNECT);
        assert!(live.recovered(AGENT_CHANGE).is_some());
        let more = total(node, "palisade_watch_relists_total") - relists;
        assert!(more >= 4.0, "{more} relists");
        op.saw(format!("palisade_watch_relists_total +{more}"));
        op.log(&node.log(agent), "listing again");
    });
}

#[test]
fn a_slow_api_server() {
    let fault = "slow API (every request answered 3 s late; watches cut)";
    while_running(fault, "fault-slow", |node, agent, before, live, op| {
        node.api.set_delay(Duration::from_secs(3));
        // Every watcher must come back through the slow server.
        node.api.drop_watches();
        node.flip_server_policy(true).unwrap();
        node.wait_server_change(agent, before, RECONNECT);
        assert!(live.recovered(AGENT_CHANGE).is_some());
        node.api.set_delay(Duration::ZERO);
        op.log(&node.log(agent), "watch failed; retrying with backoff");
    });
}

#[test]
fn agent_killed_during_its_first_sync() {
    let fault = "agent SIGKILLed during its first sync (slow API), restarted";
    let node = FaultNode::up("fault-sync");
    let first = node.start_enforcing(&node.options());
    let before = node.server_record();
    let mut op = Operator::new(&node);
    let (tally, ()) = during(&node, |live| {
        node.stop(&first);
        node.api.set_delay(Duration::from_secs(3));
        node.flip_server_policy(true).unwrap();
        let syncing = node.start(&node.options());
        node.wait_log(&syncing, "waiting for the first full list", AGENT_CHANGE);
        std::thread::sleep(Duration::from_secs(1));
        node.kill(&syncing);
        assert_eq!(syncing.rounds(), 0, "it programmed before its sync");
        let agent = node.start(&node.options());
        node.wait_round(&agent, 0, RECONNECT);
        node.wait_server_change(&agent, &before, AGENT_CHANGE);
        assert!(live.recovered(AGENT_CHANGE).is_some());
        node.api.set_delay(Duration::ZERO);
        let log = node.log(&agent);
        op.log(&log, "waiting for the first full list");
        op.saw(format!("then its first round: {}", programmed(&log)));
    });
    op.saw(format!("/healthz,/readyz {}", tally.health_cell()));
    row(fault, &tally, &op);
    assert_clean(fault, &tally);
}
