//! Conntrack fairness: a pod that opens flows as fast as it can, and the
//! established flows of other pods that must keep every reply meanwhile.

use crate::attack::{wire, Wire};
use crate::classifier::packet::Packet;
use palisade_lab::{Family, Lab};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How long one request of an established flow waits for its echo.
const ECHO_WAIT: Duration = Duration::from_secs(1);

/// Sends UDP datagrams from pod `pod` on `sockets × targets × ports`
/// distinct flows, each a new conntrack entry at the pod's hook, two
/// datagrams each: an entry used again is what an LRU keeps, so the
/// flood's entries compete with other pods' live ones as a real
/// attacker's would.
/// Bounded by `limit`; returns how many flows were opened.
pub fn open_flows(
    lab: &Lab,
    pod: &str,
    targets: &[IpAddr],
    sockets: usize,
    ports: std::ops::Range<u16>,
    limit: Duration,
) -> usize {
    let targets = targets.to_vec();
    let sent = lab.run_in_pod(pod, move || {
        let start = Instant::now();
        let socks: Vec<(UdpSocket, IpAddr)> = targets
            .iter()
            .flat_map(|t| (0..sockets).map(|_| (bind_any(t), *t)))
            .collect();
        let mut opened = 0;
        for (s, target) in &socks {
            for port in ports.clone() {
                if start.elapsed() > limit {
                    return opened;
                }
                // A full queue only loses a datagram: count what left.
                let first = s.send_to(b"f", (*target, port)).is_ok();
                if s.send_to(b"f", (*target, port)).is_ok() && first {
                    opened += 1;
                }
            }
        }
        opened
    });
    sent.expect("flooding pod")
}

/// Keeps the node's own connection tracking out of what a flood from
/// `pod` measures: the node namespace stops tracking the pod's packets
/// (nftables `notrack`, in the lab's namespace only). Any pod can fill the
/// node's `nf_conntrack` table, whose size is the node's
/// `nf_conntrack_max`; once full, the kernel drops the unassured entries
/// of Service DNAT, which is not Palisade's table and not what a test of
/// it may count.
pub fn untracked(lab: &Lab, pod: &str) {
    let veth = &lab.pod(pod).expect("pod").host_veth;
    let rules = format!(
        "table inet flood_notrack {{\n  chain pre {{\n    type filter hook prerouting priority raw;\n    iifname \"{veth}\" notrack\n  }}\n}}\n"
    );
    let file = lab.dir().join("flood_notrack.nft");
    std::fs::write(&file, rules).expect("write nft rules");
    let ns = lab.node_netns();
    let path = file.to_str().expect("a UTF-8 path");
    crate::kernel::run("ip", &["netns", "exec", &ns, "nft", "-f", path]);
}

/// Keeps the calling thread, and the threads it starts, on one CPU until
/// dropped. The kernel's LRU hash parks each new entry on a list of the
/// CPU that inserted it until that CPU inserts again; a flood on another
/// CPU takes from the shared lists and never reaches those entries. With
/// victim and attacker on one CPU (the attacker's best case, and what any
/// pod sharing a CPU with its victim gets) the flood competes with every
/// entry, so what a test of eviction counts does not depend on the
/// scheduler.
pub struct OneCpu(libc::cpu_set_t);

impl OneCpu {
    pub fn pin() -> OneCpu {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: cpu_set_t is plain data; the calls only read and write it.
        unsafe {
            let mut allowed: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(libc::sched_getaffinity(0, size, &mut allowed), 0);
            let first = (0..libc::CPU_SETSIZE as usize)
                .find(|c| libc::CPU_ISSET(*c, &allowed))
                .expect("an allowed CPU");
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(first, &mut one);
            assert_eq!(
                libc::sched_setaffinity(0, size, &one),
                0,
                "pin to CPU {first}"
            );
            OneCpu(allowed)
        }
    }
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: as in `pin`; restores the mask read there.
        unsafe { libc::sched_setaffinity(0, size, &self.0) };
    }
}

fn bind_any(target: &IpAddr) -> UdpSocket {
    UdpSocket::bind((Family::of(target).unspecified(), 0)).expect("flood socket")
}

/// A UDP flow a client pod opened and its server answered, in which the
/// server then speaks first (`push`): its datagrams pass only as replies
/// when the server's egress and the client's ingress refuse each other,
/// so they arrive only while both ends' conntrack entries live. (A request
/// from the allowed side would make a new entry and prove nothing.)
pub struct PushedFlow {
    pub name: String,
    client: UdpSocket,
    /// Where the client sent (a pod, or a ClusterIP): where pushes must
    /// seem to come from.
    seen_from: SocketAddr,
    server: Wire,
    /// The push as the server sends it (its address and port to the
    /// client's).
    push: Packet,
}

impl PushedFlow {
    /// `client` sends to `dst` and gets its echo from `server_pod`, whose
    /// address and port (`server`, after any DNAT) answered.
    pub fn open(lab: &Lab, client: &str, dst: SocketAddr) -> (UdpSocket, SocketAddr) {
        let socket = lab
            .run_in_pod(client, || {
                let s = bind_any(&dst.ip());
                s.set_read_timeout(Some(ECHO_WAIT)).map(|_| s)
            })
            .expect("client pod")
            .expect("client socket");
        let mut buf = [0u8; 16];
        let answered = socket.send_to(b"q", dst).is_ok()
            && matches!(socket.recv_from(&mut buf), Ok((1, from)) if from == dst);
        assert!(
            answered,
            "{client} -> {dst}: no answer to the first request"
        );
        let own = socket.local_addr().unwrap().port();
        let client_ip = lab.ip(client, Family::of(&dst.ip())).unwrap();
        (socket, SocketAddr::new(client_ip, own))
    }

    /// The flow `open` made, pushed from `server_pod` at `server`.
    pub fn new(
        lab: &Lab,
        name: String,
        opened: (UdpSocket, SocketAddr),
        seen_from: SocketAddr,
        server_pod: &str,
        server: SocketAddr,
    ) -> PushedFlow {
        let (client, client_addr) = opened;
        let push = Packet::udp(
            server.ip(),
            client_addr.ip(),
            server.port(),
            client_addr.port(),
        )
        .payload(b"p")
        .udp_checksum();
        PushedFlow {
            name,
            client,
            seen_from,
            server: wire(lab, server_pod),
            push,
        }
    }

    /// One push; whether it reached the client's socket.
    pub fn push(&self) -> bool {
        if self.server.send(std::slice::from_ref(&self.push)).is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(self.client.recv_from(&mut buf), Ok((_, from)) if from == self.seen_from)
    }
}

/// Pushes `rounds` times on each flow: the pushes lost per flow.
pub fn push_all(flows: &[PushedFlow], rounds: usize) -> Vec<(String, usize)> {
    flows
        .iter()
        .map(|f| (f.name.clone(), (0..rounds).filter(|_| !f.push()).count()))
        .collect()
}
