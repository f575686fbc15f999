//! The agent killed (SIGKILL) in the middle of its work: between the
//! kernel writes of a generation flip. The crash points are the debug
//! build's `PALISADE_TEST_CRASH_AT` (`datapath/src/crash.rs`): the agent
//! kills itself exactly there, as the node would.

use palisade::datapath::crash;
use palisade_lab::AgentOptions;
use palisade_tests::fault::operator::programmed;
use palisade_tests::fault::pins::{endpoint, live_keys, outer_keys};
use palisade_tests::fault::{during, row, FaultNode, Operator, AGENT_CHANGE, SERVER};
use std::time::Duration;

fn crashing(mut opts: AgentOptions, point: &str) -> AgentOptions {
    opts.env.push((crash::ENV.into(), point.into()));
    opts
}

/// A policy change of the server, the agent killed at `point` of its
/// flip; a new agent finishes it. `extra`: the policy version written.
fn killed_in_flip(node: &FaultNode, point: &str, nth: u32, extra: bool, fault: &str) {
    let server = node.lab.host_ifindex(SERVER).unwrap();
    let pods: Vec<u32> = node
        .lab
        .pods()
        .iter()
        .map(|p| node.lab.host_ifindex(&p.key()).unwrap())
        .collect();
    let before = endpoint(node, server).expect("the server's record");
    let agent = node.start_enforcing(&crashing(node.options(), &format!("{point}:{nth}")));
    let mut op = Operator::new(node);
    let (tally, next) = during(node, |live| {
        node.flip_server_policy(extra).unwrap();
        let status = node.wait_exit(&agent, AGENT_CHANGE);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "{}",
            node.log(&agent)
        );
        assert!(
            node.log(&agent).contains(&format!("killed at {point}")),
            "{}",
            node.log(&agent)
        );
        // What the dead agent left: the new generation linked beside the
        // live one; the record flipped or not, depending on the point.
        let left = endpoint(node, server).unwrap();
        let flipped = left.generation != before.generation;
        assert_eq!(flipped, point == crash::FLIP_FLIPPED, "{left:?}");
        let stale = outer_keys(node).len() - live_keys(node, &pods).len();
        assert!(stale > 0, "no half-done flip left behind");
        op.saw(format!(
            "agent gone ({} stale outer keys, record {})",
            stale,
            if flipped { "flipped" } else { "not flipped" }
        ));
        // The node without its agent for a while: the pins decide.
        std::thread::sleep(Duration::from_secs(1));
        let next = node.start_enforcing(&node.options());
        assert!(
            live.recovered(AGENT_CHANGE).is_some(),
            "{}",
            node.log(&next)
        );
        let log = node.log(&next);
        op.log(&log, "re-adopted pinned maps");
        op.saw(format!("its first round: {}", programmed(&log)));
        next
    });
    node.stop(&next);
    // The interrupted update is cleaned up: only live keys remain.
    assert_eq!(outer_keys(node), live_keys(node, &pods));
    let now = endpoint(node, server).unwrap();
    op.saw(format!("/healthz,/readyz {}", tally.health_cell()));
    row(fault, &tally, &op);
    assert_eq!(tally.wrongly_allowed(), 0, "{tally:?}");
    assert_eq!(tally.wrongly_dropped(), 0, "{tally:?}");
    assert_ne!(now.epoch, before.epoch, "the change was not enforced");
}

#[test]
fn agent_killed_during_a_generation_flip() {
    let node = FaultNode::up("fault-flip");
    let first = node.start_enforcing(&node.options());
    node.stop(&first);
    // The agent's first round on these pins flips nothing: the crash
    // point is met first by the change.
    killed_in_flip(
        &node,
        crash::FLIP_LINKED,
        1,
        true,
        "agent SIGKILLed during a flip: new maps linked, record not flipped",
    );
    killed_in_flip(
        &node,
        crash::FLIP_FLIPPED,
        1,
        false,
        "agent SIGKILLed during a flip: record flipped, old maps not unlinked",
    );
}

/// The node's pins as the last release left them (unversioned), then
/// this agent killed at `point` of its migration to versioned pins, and
/// a new one finishing it.
fn killed_in_migration(point: &str, fault: &str) {
    let legacy = palisade_tests::legacy::legacy_agent()
        .unwrap_or_else(|e| panic!("the legacy agent: {e:#}"));
    let node = FaultNode::up("fault-migrate");
    let mut old = node.options();
    old.bin = legacy;
    let old = node.start_enforcing(&old);
    let node_dir = node.bpffs.join(palisade_tests::fault::NODE);
    assert!(node_dir.join("ENDPOINTS").exists(), "unversioned pins");
    let mut op = Operator::new(&node);
    let (tally, ()) = during(&node, |live| {
        // A rolling update: the old agent goes, its pins keep enforcing.
        node.stop(&old);
        let agent = node.start(&crashing(node.options(), point));
        let status = node.wait_exit(&agent, AGENT_CHANGE);
        let log = node.log(&agent);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "{log}"
        );
        assert!(log.contains(&format!("killed at {point}")), "{log}");
        // Both layouts are there, each holding some of the links.
        assert!(node_dir.join("ENDPOINTS").exists(), "{log}");
        assert!(node.pins().join("ENDPOINTS").exists(), "{log}");
        op.saw("agent gone mid-migration, both layouts pinned");
        std::thread::sleep(Duration::from_secs(1));
        let next = node.start_enforcing(&node.options());
        assert!(live.recovered(AGENT_CHANGE).is_some());
        let log = node.log(&next);
        op.log(&log, "migrated the pins of an older layout");
    });
    // Only the new layout is left.
    let names: Vec<String> = std::fs::read_dir(&node_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [format!("v{}", palisade_common::layout::VERSION)]);
    op.saw(format!("/healthz,/readyz {}", tally.health_cell()));
    row(fault, &tally, &op);
    assert_eq!(tally.wrongly_allowed(), 0, "{tally:?}");
    assert_eq!(tally.wrongly_dropped(), 0, "{tally:?}");
}

#[test]
fn agent_killed_during_a_migration_from_the_legacy_layout() {
    killed_in_migration(
        crash::MIGRATE_MOVED,
        "agent SIGKILLed migrating from unversioned pins: one link moved",
    );
    killed_in_migration(
        crash::MIGRATE_LINKS_MOVED,
        "agent SIGKILLed migrating from unversioned pins: links moved, old pins not removed",
    );
}
