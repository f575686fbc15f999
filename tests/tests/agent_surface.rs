//! What the agent exposes on its node, checked on the real sockets of a
//! running agent: `/metrics` and the probes listen on the one address
//! `--metrics-addr` names (given as an IP alone: port 9090), not on the
//! node's other addresses; the monitor socket is mode 0660, owned by root
//! and the `--monitor-group` GID, so a member of that group may connect
//! and another unprivileged user may not (and `palisade monitor` tells
//! that user why).
//!
//! Runs in a network namespace of its own with a private bpffs (guards
//! clean up on failure).

use palisade_tests::cluster::http_get;
use palisade_tests::fixtures::shop_pods;
use palisade_tests::kernel::{rounds, run, wait_for, Agent, NetNs, Scratch};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const GROUP: u32 = 4242;
/// An unprivileged user in neither root's group nor `GROUP`.
const NOBODY: u32 = 65534;

/// Connects to the socket at `path` from a thread whose file-system
/// identity is `uid`/`gid` (Linux keeps it per thread; leaving uid 0 drops
/// the thread's file capabilities, so the socket's mode decides).
fn connect_as(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: setfsgid/setfsuid change this thread's credentials only;
        // the thread ends right after.
        unsafe {
            libc::setfsgid(gid);
            libc::setfsuid(uid);
        }
        std::os::unix::net::UnixStream::connect(&path).map(drop)
    })
    .join()
    .unwrap()
}

fn refused(addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
}

#[test]
fn agent_surface_metrics_address_and_monitor_socket_access() {
    let _ns = NetNs::enter("srf");
    let s = Scratch::new("srf");
    // The node's addresses: two on one device, and loopback.
    run(
        "ip",
        &[
            "link", "add", "node0", "type", "veth", "peer", "name", "node0p",
        ],
    );
    run("ip", &["link", "set", "node0", "up"]);
    run("ip", &["addr", "add", "10.74.0.1/24", "dev", "node0"]);
    run("ip", &["addr", "add", "10.74.0.2/24", "dev", "node0"]);
    std::fs::write(s.manifests().join("pods.yaml"), shop_pods("10.74")).unwrap();
    let socket: PathBuf = s.dir().join("run/monitor.sock");
    let manifests = s.manifests().display().to_string();
    let group = GROUP.to_string();
    let agent = Agent::start(
        &s,
        &[
            "--manifests",
            &manifests,
            "--node",
            "node1",
            "--metrics-addr",
            "10.74.0.1",
            "--monitor-socket",
            socket.to_str().unwrap(),
            "--monitor-group",
            &group,
        ],
        &[],
    );
    wait_for(&agent, "the first round", Duration::from_secs(30), || {
        rounds(&s) >= 1
    });
    wait_for(
        &agent,
        "the monitor socket",
        Duration::from_secs(10),
        || socket.exists(),
    );

    // Served on the named address, port 9090; nowhere else.
    let served = http_get("10.74.0.1:9090".parse().unwrap(), "/healthz");
    assert_eq!(served.map(|(c, _)| c), Some(200), "{}", agent.log());
    for other in ["10.74.0.2:9090", "127.0.0.1:9090"] {
        assert!(refused(other), "{other} answers");
    }

    // The socket: root and the group, read and write, nobody else.
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (0, GROUP));
    // SAFETY: getgroups with a buffer of the size given.
    let mut groups = [0 as libc::gid_t; 256];
    let n = unsafe { libc::getgroups(groups.len() as i32, groups.as_mut_ptr()) };
    assert!(n >= 0);
    assert!(
        !groups[..n as usize].contains(&GROUP),
        "this test's process must not be in group {GROUP} itself"
    );
    connect_as(&socket, NOBODY, GROUP).expect("a member of the group connects");
    let denied = connect_as(&socket, NOBODY, NOBODY).unwrap_err();
    assert_eq!(denied.kind(), std::io::ErrorKind::PermissionDenied);
    // `palisade monitor` run by such a user says why.
    let out = std::process::Command::new(palisade_lab::palisade_bin().unwrap())
        .args(["monitor", "--socket", socket.to_str().unwrap()])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr
            .contains("permission denied: the stream is for root and the agent's --monitor-group"),
        "{stderr}"
    );
}
