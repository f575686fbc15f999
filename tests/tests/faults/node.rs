//! Faults of the node around the agent: its bpffs missing, a pod
//! interface deleted and re-created with the same ifindex, two agents
//! for one node, and the disk under the agent's run directory full.

use palisade_tests::fault::operator::{health, log_line, programmed, row_cells};
use palisade_tests::fault::{during, row, FaultNode, Operator, AGENT_CHANGE, METRICS, SERVER};
use palisade_tests::kernel::{poll_until, run, tcx_progs};
use std::time::Duration;

#[test]
fn bpffs_root_not_on_a_bpf_filesystem() {
    let fault = "--bpffs-root not on a bpffs (agent restarted without the mount)";
    let node = FaultNode::up("fault-bpffs");
    let first = node.start_enforcing(&node.options());
    // A directory of the lab's tmpfs, and one that does not exist.
    let plain = node.lab.dir().join("plain-root");
    std::fs::create_dir(&plain).unwrap();
    let missing = node.lab.dir().join("no-such-dir").join("bpf");
    let mut op = Operator::new(&node);
    let (tally, ()) = during(&node, |live| {
        node.stop(&first);
        for root in [&plain, &missing] {
            let mut opts = node.options();
            opts.bpffs_root = root.clone();
            let agent = node.start(&opts);
            let status = node.wait_exit(&agent, AGENT_CHANGE);
            let log = node.log(&agent);
            assert!(!status.success(), "it ran on {}:\n{log}", root.display());
            assert!(
                log.contains("is not on a bpf filesystem, so the pins would not outlive"),
                "{log}"
            );
            if root == &plain {
                op.saw(format!(
                    "agent exits at once, code {}",
                    status.code().unwrap_or(-1)
                ));
                op.log(&log, "is not on a bpf filesystem");
            }
            // Nothing made there: no directory, no mount, no pin.
            let left: Vec<_> = std::fs::read_dir(&plain).unwrap().collect();
            assert!(left.is_empty(), "{left:?}");
            assert!(!missing.parent().unwrap().exists());
        }
        let agent = node.start_enforcing(&node.options());
        assert!(live.recovered(AGENT_CHANGE).is_some());
        op.saw(format!(
            "with the right root: {}",
            programmed(&node.log(&agent))
        ));
    });
    op.saw(format!("/healthz,/readyz {}", tally.health_cell()));
    row(fault, &tally, &op);
    assert_eq!(tally.wrongly_allowed(), 0, "{tally:?}");
    assert_eq!(tally.wrongly_dropped(), 0, "{tally:?}");
}

/// The classifiers TCX runs on `ifname` in the node (ingress, egress).
fn node_tcx(node: &FaultNode, ifname: &str) -> (usize, usize) {
    node.lab.run_in_node(|| tcx_progs(ifname)).unwrap()
}

#[test]
fn pod_interface_recreated_with_the_same_ifindex() {
    let fault =
        "server's interface deleted and re-created with the same ifindex, agent stopped meanwhile";
    let node = FaultNode::up("fault-replug");
    let agent = node.start_enforcing(&node.options());
    let veth = node.lab.pod(SERVER).unwrap().host_veth.clone();
    let mut op = Operator::new(&node);
    let (tally, back) = during(&node, |live| {
        // Not Palisade's drops: the pod has no interface for a while.
        live.pause();
        // The agent is not scheduled while the interface goes and comes
        // back: it never sees it missing.
        node.lab.signal(&agent.process, libc::SIGSTOP).unwrap();
        let ifindex = node.lab.replug_pod(SERVER, false).unwrap();
        assert_eq!(
            node_tcx(&node, &veth),
            (0, 0),
            "classifiers on a new device"
        );
        std::thread::sleep(Duration::from_millis(500));
        node.lab.signal(&agent.process, libc::SIGCONT).unwrap();
        let back = poll_until(AGENT_CHANGE, || node_tcx(&node, &veth) == (1, 1));
        op.saw(format!("ifindex {ifindex} again; classifiers back: {back}"));
        // Only now can a packet reach the pod. The node's neighbour entry
        // for it failed meanwhile: flushed, so that the first probes are
        // not lost to ARP (wiring, not policy).
        node.lab.add_pod_addresses(SERVER).unwrap();
        node.lab
            .run_in_node(|| run("ip", &["neigh", "flush", "dev", &veth]))
            .unwrap();
        live.resume();
        assert!(live.recovered(AGENT_CHANGE).is_some());
        // The refused stream against the new interface for a while.
        std::thread::sleep(Duration::from_secs(2));
        back
    });
    if let Some(line) = log_line(&node.log(&agent), "re-created under the same index") {
        op.saw(format!("log \"{line}\""));
    }
    op.saw(format!("/healthz,/readyz {}", tally.health_cell()));
    row(fault, &tally, &op);
    assert!(
        back,
        "the re-created interface never got its classifiers back:\n{}",
        node.log(&agent)
    );
    op.log(&node.log(&agent), "re-created under the same index");
    assert_eq!(tally.wrongly_allowed(), 0, "{tally:?}");
    assert_eq!(tally.wrongly_dropped(), 0, "{tally:?}");
}

/// Where a second agent serves its probes.
const SECOND: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9091);

#[test]
fn two_agents_for_one_node() {
    let fault = "two agents for one node (same --node), the first stopped after 4 s";
    let node = FaultNode::up("fault-two");
    let first = node.start_enforcing(&node.options());
    let before = node.server_record();
    let mut op = Operator::new(&node);
    let (tally, ()) = during(&node, |live| {
        let mut opts = node.options();
        opts.metrics_addr = Some(SECOND);
        let second = node.start(&opts);
        node.wait_log(
            &second,
            "another agent holds this node's pins; waiting",
            AGENT_CHANGE,
        );
        // The first one goes on enforcing; the second touches nothing.
        node.flip_server_policy(true).unwrap();
        node.wait_server_change(&first, &before, AGENT_CHANGE);
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(second.rounds(), 0, "{}", node.log(&second));
        assert_eq!(health(&node, SECOND), "200/503");
        op.log(&node.log(&second), "another agent holds this node's pins");
        // A rolling update's overlap ends: the second takes over.
        node.stop(&first);
        node.wait_round(&second, 0, AGENT_CHANGE);
        assert!(live.recovered(AGENT_CHANGE).is_some());
        op.saw(format!(
            "second agent: /readyz 503 while it waits, then its first round: {}",
            programmed(&node.log(&second))
        ));
    });
    op.saw(format!(
        "first agent's /healthz,/readyz {}",
        tally.health_cell()
    ));
    row(fault, &tally, &op);
    assert_eq!(tally.wrongly_allowed(), 0, "{tally:?}");
    assert_eq!(tally.wrongly_dropped(), 0, "{tally:?}");
}

#[test]
fn a_second_agent_under_another_node_name() {
    let fault = "a second agent on the node under another --node";
    let node = FaultNode::up("fault-other-node");
    let first = node.start_enforcing(&node.options());
    let before = node.server_record();
    let mut op = Operator::new(&node);
    let (tally, ()) = during(&node, |live| {
        let mut opts = node.options();
        opts.metrics_addr = Some(SECOND);
        opts.node = "node-2".into();
        let second = node.start(&opts);
        let status = node.wait_exit(&second, AGENT_CHANGE);
        let log = node.log(&second);
        assert!(!status.success(), "{log}");
        op.saw(format!(
            "the second agent exits at once, code {}",
            status.code().unwrap_or(-1)
        ));
        op.log(
            &log,
            "another palisade agent runs on this node as --node node-1",
        );
        // It left nothing on the pods, and the first one goes on.
        let second_dir = node.bpffs.join("node-2");
        let links = std::fs::read_dir(
            second_dir.join(format!("v{}/links", palisade_common::layout::VERSION)),
        )
        .map_or(0, |d| d.count());
        assert_eq!(links, 0, "{log}");
        node.flip_server_policy(true).unwrap();
        node.wait_server_change(&first, &before, AGENT_CHANGE);
        assert!(live.recovered(AGENT_CHANGE).is_some(), "{log}");
    });
    op.saw(format!(
        "first agent's /healthz,/readyz {}",
        tally.health_cell()
    ));
    row(fault, &tally, &op);
    assert_eq!(tally.wrongly_allowed(), 0, "{tally:?}");
    assert_eq!(tally.wrongly_dropped(), 0, "{tally:?}");

    // The agent of the right name replaced by one of the wrong name (a
    // DaemonSet rolled out with a wrong NODE_NAME): the pins of node-1
    // go on enforcing, the other agent holds none of node-1's pods.
    let fault = "the node's agent replaced by one under another --node";
    let mut op = Operator::new(&node);
    let (tally, ()) = during(&node, |live| {
        node.kill(&first);
        let mut opts = node.options();
        opts.node = "node-2".into();
        let wrong = node.start_enforcing(&opts);
        let log = node.log(&wrong);
        op.log(&log, "pins of another node name, whose agent is gone");
        let round = log_line(&log, "programmed generation=").unwrap_or_default();
        assert!(
            round.contains("pods=0") && round.contains("pending=0"),
            "{log}"
        );
        op.saw(format!(
            "its first round: pods=0 pending=0; its /healthz,/readyz {}",
            health(&node, METRICS)
        ));
        std::thread::sleep(Duration::from_secs(2));
        node.kill(&wrong);
        node.start_enforcing(&node.options());
        assert!(live.recovered(AGENT_CHANGE).is_some());
    });
    row(fault, &tally, &op);
    assert_eq!(tally.wrongly_allowed(), 0, "{tally:?}");
    assert_eq!(tally.wrongly_dropped(), 0, "{tally:?}");
}

#[test]
fn run_directory_on_a_full_disk() {
    let fault = "/run/palisade full (no byte, no inode left): agent restarted, policy changed";
    let mut node = FaultNode::up_chained("fault-disk");
    let first = node.start_enforcing(&node.options());
    let before = node.server_record();
    let run = node.run.as_ref().unwrap().dir().to_path_buf();
    let mut op = Operator::new(&node);
    let (tally, ()) = during(&node, |live| {
        // A clean stop takes its verdict socket away.
        node.stop(&first);
        node.run.as_ref().unwrap().fill();
        let agent = node.start_enforcing(&node.options());
        let log = node.log(&agent);
        op.log(&log, "no verdict stream");
        assert!(!run.join("monitor.sock").exists());
        node.flip_server_policy(true).unwrap();
        node.wait_server_change(&agent, &before, AGENT_CHANGE);
        assert!(live.recovered(AGENT_CHANGE).is_some());
        op.saw(format!("the policy change enforced; {}", programmed(&log)));
    });
    op.saw(format!("/healthz,/readyz {}", tally.health_cell()));
    row(fault, &tally, &op);
    assert_eq!(tally.wrongly_allowed(), 0, "{tally:?}");
    assert_eq!(tally.wrongly_dropped(), 0, "{tally:?}");

    // A pod created on the full disk: the plugin cannot record it, so the
    // runtime's ADD fails and the pod is not started (never unprotected).
    let fault = "/run/palisade full: a pod created (CNI ADD)";
    let mut op = Operator::new(&node);
    let late = palisade_lab::PodSpec {
        namespace: "x".into(),
        name: "late".into(),
        ips: vec!["10.244.1.13".parse().unwrap()],
        ports: vec![],
    };
    let err = format!("{:#}", node.lab.add_pod(&late).unwrap_err());
    assert!(err.contains("cannot write the attachment record"), "{err}");
    op.saw(
        "ADD fails: \"cannot write the attachment record\" (the plugin's error, to the runtime)",
    );
    node.run.as_ref().unwrap().free();
    node.lab.add_pod(&late).expect("ADD once there is room");
    op.saw("with room again, ADD succeeds");
    row_cells(fault, "0 (the pod is never started)", "-", &op);
}
