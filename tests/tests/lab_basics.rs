//! The lab on its own (no agent, no policy): plumbing, servers, probes,
//! teardown. Every test builds its own lab (unique namespace names), so
//! they run concurrently.

use palisade_lab::{Family, Lab, LabSpec, Outcome, Protocol};
use palisade_tests::lab::PORTS;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::Duration;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn four_pods(label: &str) -> LabSpec {
    let mut spec = LabSpec::new(label);
    for (k, (ns, name)) in [("x", "a"), ("x", "b"), ("y", "a"), ("y", "c")]
        .into_iter()
        .enumerate()
    {
        let v4 = ip(&format!("10.0.{}.{}", k / 2, 10 + k));
        let v6 = ip(&format!("fd00::{:x}", 10 + k));
        spec = spec.pod(ns, name, &[v4, v6], &PORTS);
    }
    spec
}

fn lab_netns_of(id: &str) -> Vec<String> {
    palisade_lab::lab_netns_present()
        .into_iter()
        .filter(|n| n.contains(id))
        .collect()
}

#[test]
fn lab_all_pairs_reach_each_other_without_policy() {
    let lab = Lab::up(&four_pods("lab_all_pairs")).expect("lab up");
    for family in [Family::V4, Family::V6] {
        let m = lab.measure_matrix(&PORTS, family).expect("matrix");
        // 4 pods: 12 ordered pairs of distinct pods, per port.
        assert_eq!(m.len(), 12 * PORTS.len(), "{family:?}");
        let blocked: Vec<_> = m.iter().filter(|e| !e.allowed).collect();
        assert!(
            blocked.is_empty(),
            "{family:?}: unreachable without policy: {blocked:#?}"
        );
    }
}

#[test]
fn lab_closed_port_is_refused_not_timed_out() {
    let lab = Lab::up(&four_pods("lab_closed_port")).expect("lab up");
    for family in [Family::V4, Family::V6] {
        let to = lab.ip("y/c", family).unwrap();
        for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            // Served on port 80, not on 9999: TCP answers RST, UDP an ICMP
            // port unreachable, SCTP an ABORT; all come back quickly.
            let out = lab
                .probe_outcome("x/a", to, 9999, proto, Duration::from_secs(2))
                .unwrap();
            assert_eq!(out, Outcome::Refused, "{family:?} {proto:?}");
            let open = lab
                .probe("x/a", to, 80, proto, Duration::from_secs(2))
                .unwrap();
            assert!(open, "{family:?} {proto:?} port 80");
        }
        // An address nobody has: the node routes it to its uplink, where
        // it disappears, so the probe times out.
        let nobody = match family {
            Family::V4 => ip("10.9.9.9"),
            Family::V6 => ip("fd00::9:9"),
        };
        let out = lab
            .probe_outcome("x/a", nobody, 80, Protocol::Tcp, Duration::from_millis(300))
            .unwrap();
        assert!(
            matches!(out, Outcome::TimedOut | Outcome::Refused),
            "{family:?}: {out:?}"
        );
        assert!(!out.reached());
    }
}

#[test]
fn lab_long_lived_tcp_connection_echoes_every_message() {
    let lab = Lab::up(&four_pods("lab_long_tcp")).expect("lab up");
    let to = lab.ip("y/a", Family::V6).unwrap();
    let mut conn = lab
        .run_in_pod("x/b", || {
            TcpStream::connect_timeout(&(to, 80).into(), Duration::from_secs(2))
        })
        .unwrap()
        .expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for i in 0u32..50 {
        let msg = i.to_be_bytes();
        conn.write_all(&msg).unwrap();
        let mut back = [0u8; 4];
        conn.read_exact(&mut back).unwrap();
        assert_eq!(back, msg, "message {i}");
    }
}

#[test]
fn lab_pods_are_plumbed_like_calico() {
    let lab = Lab::up(&four_pods("lab_plumbing")).expect("lab up");
    let pod = lab.pod("x/a").unwrap();
    assert!(pod.host_veth.starts_with("cali") && pod.host_veth.len() == 15);
    assert!(lab.host_ifindex("x/a").unwrap() > 0);
    // The node routes each pod address to the pod's host veth.
    let routes = std::process::Command::new("ip")
        .args(["-n", &lab.node_netns(), "route", "show", "10.0.0.10/32"])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(routes.contains(&pod.host_veth), "{routes}");
    let routes6 = std::process::Command::new("ip")
        .args([
            "-n",
            &lab.node_netns(),
            "-6",
            "route",
            "show",
            "fd00::a/128",
        ])
        .output()
        .unwrap();
    let routes6 = String::from_utf8_lossy(&routes6.stdout);
    assert!(routes6.contains(&pod.host_veth), "{routes6}");
}

#[test]
fn lab_teardown_leaves_nothing() {
    let lab = Lab::up(&four_pods("lab_teardown")).expect("lab up");
    let id = lab.id().to_string();
    let dir = lab.dir().to_path_buf();
    let bpffs = lab.mount_bpffs().unwrap();
    let sleeper = lab.spawn_in_node("sleep", ["30"]).unwrap();
    assert_eq!(lab_netns_of(&id).len(), 5);
    assert!(mounted(&bpffs));
    assert!(lab.exit_status(&sleeper).unwrap().is_none());

    lab.teardown().expect("clean teardown");
    assert!(lab_netns_of(&id).is_empty(), "{:?}", lab_netns_of(&id));
    assert!(!mounted(&bpffs));
    assert!(!dir.exists());
    assert!(
        !std::path::Path::new(&format!("/proc/{}", sleeper.pid)).exists()
            || is_zombie_free(sleeper.pid)
    );
}

#[test]
fn lab_teardown_runs_on_panic() {
    let captured = std::sync::Mutex::new(None);
    let r = std::panic::catch_unwind(|| {
        let lab = Lab::up(&four_pods("lab_panic")).expect("lab up");
        *captured.lock().unwrap() = Some((lab.id().to_string(), lab.mount_bpffs().unwrap()));
        panic!("test failure inside a lab");
    });
    assert!(r.is_err());
    let (id, bpffs) = captured.into_inner().unwrap().unwrap();
    assert!(lab_netns_of(&id).is_empty());
    assert!(!mounted(&bpffs));
}

#[test]
fn lab_leftovers_of_a_dead_run_are_removed() {
    // Fake what a run killed with SIGKILL leaves: namespaces and a record
    // whose owner is gone (a reaped child: its pid no longer runs).
    let dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    // An id no lab uses: random, and checked against the namespaces present.
    let id = loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let id = format!(
            "{:06x}",
            (nanos ^ std::process::id().rotate_left(12)) & 0xff_ffff
        );
        if lab_netns_of(&format!("pl-{id}-")).is_empty()
            && !std::path::Path::new(palisade_lab::RECORD_ROOT)
                .join(&id)
                .exists()
        {
            break id;
        }
    };
    let ns = [format!("pl-{id}-n"), format!("pl-{id}-p0")];
    for n in &ns {
        let st = std::process::Command::new("ip")
            .args(["netns", "add", n])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let dir = std::path::Path::new(palisade_lab::RECORD_ROOT).join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("owner"), format!("{dead_pid} 1\nleftover\n")).unwrap();

    let removed = palisade_lab::clean_leftovers().unwrap();
    assert!(
        removed.contains(&id) || lab_netns_of(&id).is_empty(),
        "{removed:?}"
    );
    assert!(lab_netns_of(&id).is_empty());
    assert!(!dir.exists());
}

#[test]
fn lab_ctrl_c_tears_down_and_exits_130() {
    use std::io::BufRead;
    // Run the helper below in a child copy of this test binary, wait until
    // its lab is up, then Ctrl-C it.
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "lab_signal_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PALISADE_LAB_SIGNAL_HELPER", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut id = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        // The harness prints the test name first, on the same line.
        if let Some((_, rest)) = line.split_once("LAB-UP ") {
            id = Some(rest.trim().to_string());
            break;
        }
    }
    let id = id.expect("helper reported its lab");
    assert_eq!(lab_netns_of(&id).len(), 5);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(lab_netns_of(&id).is_empty(), "{:?}", lab_netns_of(&id));
}

#[test]
#[ignore = "helper of lab_ctrl_c_tears_down_and_exits_130, run by it"]
fn lab_signal_helper() {
    if std::env::var_os("PALISADE_LAB_SIGNAL_HELPER").is_none() {
        return;
    }
    let lab = Lab::up(&four_pods("lab_signal_helper")).expect("lab up");
    println!("LAB-UP {}", lab.id());
    // Bounded: the parent signals within milliseconds; never outlive it long.
    std::thread::sleep(Duration::from_secs(20));
}

fn mounted(path: &std::path::Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*p))
}

// The sleeper was reaped by teardown; if the pid exists again it belongs
// to some unrelated new process, not a sleep of ours.
fn is_zombie_free(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .map(|c| !c.starts_with("sleep"))
        .unwrap_or(true)
}
