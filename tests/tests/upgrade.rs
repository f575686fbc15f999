//! Layout versions of the pins: an upgrade from the unversioned pins of the
//! previous release migrates without a gap in enforcement, and pins of a
//! newer layout make the agent refuse and leave them as they are.
//!
//! The upgrade test runs the previous release's agent (built once from its
//! commit, `palisade_tests::legacy`) on a lab node, then this one, while
//! probes of an allowed and a denied flow run. Each test has its own
//! namespaces and bpffs; guards clean up on failure. Needs root.

use palisade_common::layout;
use palisade_lab::{palisade_bin, write_manifest, AgentOptions, Family, Lab, LabSpec, Protocol};
use palisade_tests::fault::operator::strip_colors;
use palisade_tests::fixtures::shop_pods;
use palisade_tests::kernel::{add_pod_iface, pins, Agent, NetNs, Scratch};
use palisade_tests::lab::PORTS;
use palisade_tests::legacy::legacy_agent;
use palisade_tests::sweep::{policies_of, scenarios_dir};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const AGENT_START: Duration = Duration::from_secs(60);

/// Every pin under `dir` (relative path) with the id of the map or program
/// it names (links: 0): equal snapshots mean the same objects.
fn snapshot(dir: &Path) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            let id = aya::maps::MapInfo::from_pin(&path)
                .map(|i| i.id())
                .or_else(|_| aya::programs::ProgramInfo::from_pin(&path).map(|i| i.id()))
                .unwrap_or(0);
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            out.insert(rel, id);
        }
    }
    out
}

/// The ids of the programs attached to both hooks of `ifname`.
fn attached_progs(ifname: &str) -> Vec<u32> {
    use aya::programs::{SchedClassifier, TcAttachType};
    [TcAttachType::Ingress, TcAttachType::Egress]
        .into_iter()
        .flat_map(|hook| SchedClassifier::query_tcx(ifname, hook).unwrap().1)
        .map(|p| p.id())
        .collect()
}

fn pinned_prog_id(path: &Path) -> u32 {
    aya::programs::ProgramInfo::from_pin(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .id()
}

#[test]
fn upgrade_refuses_a_newer_layout_and_leaves_its_pins() {
    let _ns = NetNs::enter("upd");
    let s = Scratch::new("upd");
    std::fs::write(s.manifests().join("pods.yaml"), shop_pods("10.79")).unwrap();
    add_pod_iface("web0", "10.79.0.2");
    add_pod_iface("cli0", "10.79.0.3");
    let manifests = s.manifests().display().to_string();
    let args = ["--manifests", manifests.as_str(), "--node", "node1"];
    let mut once = Agent::start(&s, &[&args[..], &["--once"]].concat(), &[]);
    let st = once.wait(Duration::from_secs(30)).expect("--once exits");
    assert!(st.success(), "agent --once failed:\n{}", once.log());

    // What a newer release would leave: the same pins under the directory
    // of the next layout version (the directory name is the version).
    let node_dir = s.bpffs().join("node1");
    let newer = layout::VERSION + 1;
    std::fs::rename(
        pins(&s.bpffs(), "node1"),
        node_dir.join(format!("v{newer}")),
    )
    .unwrap();
    let before = snapshot(&node_dir);
    let progs_before = (attached_progs("web0"), attached_progs("cli0"));
    assert_eq!(progs_before.0.len(), 2, "both hooks of web0 enforced");

    let mut agent = Agent::start(&s, &args, &[]);
    let st = agent
        .wait(Duration::from_secs(30))
        .expect("the agent gives up on a newer layout");
    assert!(
        !st.success(),
        "the agent ran on a newer layout:\n{}",
        agent.log()
    );
    let log = agent.log();
    for want in [
        format!("layout version {newer}"),
        format!("layout version {}", layout::VERSION),
        "roll the DaemonSet forward".to_string(),
    ] {
        assert!(log.contains(&want), "no {want:?} in:\n{log}");
    }
    assert_eq!(snapshot(&node_dir), before, "the newer pins changed");
    assert_eq!(
        (attached_progs("web0"), attached_progs("cli0")),
        progs_before,
        "the attached programs changed"
    );
}

/// Outcomes of the probes run during the upgrade.
#[derive(Debug, Default)]
struct Tally {
    allowed_reached: u32,
    allowed_dropped: u32,
    denied_dropped: u32,
    denied_reached: u32,
}

/// Probes `from` -> `to`:80 with new flows until `stop` (at most `max`).
/// Returns (reached, not reached).
fn probe_until(lab: &Lab, from: &str, to: &str, stop: &AtomicBool, max: u32) -> (u32, u32) {
    let dst = lab.ip(to, Family::V4).unwrap();
    let (mut yes, mut no) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(180);
    while !stop.load(Ordering::Relaxed) && yes + no < max && Instant::now() < deadline {
        let timeout = Duration::from_millis(300);
        if lab.probe(from, dst, 80, Protocol::Tcp, timeout).unwrap() {
            yes += 1;
        } else {
            no += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (yes, no)
}

#[test]
fn upgrade_from_unversioned_pins_keeps_enforcing() {
    let legacy = legacy_agent().unwrap_or_else(|e| panic!("the legacy agent: {e:#}"));
    let topology = scenarios_dir().join("topology.yaml");
    let model = palisade_policy::load_paths(std::slice::from_ref(&topology));
    let lab = Lab::up(&LabSpec::from_pods("upgrade", &model.pods, &PORTS)).expect("lab up");
    let manifests = lab.dir().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::copy(&topology, manifests.join("topology.yaml")).unwrap();
    // x/a admits x/b only.
    write_manifest(&manifests.join("p.yaml"), &policies_of("pod-selector")).unwrap();
    let node = model.pods[0].node.clone().expect("a node");
    let bpffs = lab.mount_bpffs().unwrap();
    let node_dir = bpffs.join(&node);

    let old_opts = AgentOptions::new(legacy, vec![manifests.clone()], &node, bpffs.clone());
    let old = lab.start_agent(&old_opts).unwrap();
    lab.wait_agent(&old, 0, AGENT_START).unwrap();
    assert!(
        node_dir.join("ENDPOINTS").exists(),
        "the old agent pins unversioned"
    );
    let old_ct = snapshot(&node_dir)["CONNTRACK"];

    let stop = AtomicBool::new(false);
    let new_opts = AgentOptions::new(
        palisade_bin().unwrap(),
        vec![manifests],
        &node,
        bpffs.clone(),
    );
    let (tally, new) = std::thread::scope(|s| {
        let allowed = s.spawn(|| probe_until(&lab, "x/b", "x/a", &stop, 3000));
        let denied = s.spawn(|| probe_until(&lab, "x/c", "x/a", &stop, 3000));
        std::thread::sleep(Duration::from_millis(300));
        // A rolling update: the old agent goes, its pins keep enforcing.
        lab.signal(&old.process, libc::SIGTERM).unwrap();
        lab.wait_exit(&old.process, Duration::from_secs(10))
            .unwrap();
        let started = Instant::now();
        let new = lab.start_agent(&new_opts).unwrap();
        let done = lab.wait_agent(&new, 0, AGENT_START);
        let deadline = Instant::now() + Duration::from_secs(20);
        while node_dir.join("ENDPOINTS").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "migration: {} pods, {} ms from the new agent's start to the old pins gone",
            lab.pods().len(),
            started.elapsed().as_millis()
        );
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::Relaxed);
        let (a, b) = (allowed.join().unwrap(), denied.join().unwrap());
        done.unwrap();
        let tally = Tally {
            allowed_reached: a.0,
            allowed_dropped: a.1,
            denied_reached: b.0,
            denied_dropped: b.1,
        };
        (tally, new)
    });
    let log = lab.log(&new.process);
    eprintln!("probes during the upgrade: {tally:?}");
    assert!(
        tally.allowed_dropped == 0 && tally.denied_reached == 0,
        "enforcement lapsed during the upgrade: {tally:?}\nlog:\n{log}"
    );
    assert!(
        tally.allowed_reached >= 10 && tally.denied_dropped >= 3,
        "{tally:?}"
    );

    // Only the new layout is left, its links on the new programs.
    let names: Vec<String> = std::fs::read_dir(&node_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [format!("v{}", layout::VERSION)], "{log}");
    let dir = pins(&bpffs, &node);
    let ingress = pinned_prog_id(&dir.join("progs/pod_ingress"));
    let egress = pinned_prog_id(&dir.join("progs/pod_egress"));
    for pod in lab.pods() {
        let ifindex = lab.host_ifindex(&pod.key()).unwrap();
        for prog in ["pod_ingress", "pod_egress"] {
            assert!(
                dir.join(format!("links/{ifindex}-{prog}")).exists(),
                "{}",
                pod.key()
            );
        }
        let veth = pod.host_veth.clone();
        let progs = lab.run_in_node(|| attached_progs(&veth)).unwrap();
        assert_eq!(progs, [egress, ingress], "{}: {log}", pod.key());
    }
    // Conntrack has one format in both layouts: the map was carried over.
    assert_eq!(snapshot(&dir)["CONNTRACK"], old_ct);
    assert!(
        log.contains("migrated the pins of an older layout"),
        "{log}"
    );
    // The probes' flows were in it when it was carried.
    let carried = log
        .lines()
        .find(|l| l.contains("conntrack carried over"))
        .unwrap_or_else(|| panic!("no conntrack carried over in:\n{log}"));
    let carried = strip_colors(carried);
    let entries: u64 = carried
        .split("entries=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no entry count in {carried:?}"));
    assert!(entries > 0, "{carried}");
    // Each pod tracks its flows in a table of its own now: the carried
    // entries moved there.
    assert!(
        log.contains("conntrack entries moved from the node-wide table into pod tables"),
        "{log}"
    );
}
