//! kube-proxy's masquerading in the lab's emulation: which source address
//! a Service's backend sees. Each backend runs a small server (on port
//! 9000, beside the lab's own servers) that reports the peer address of
//! the connection it accepted. No policy agent runs here. Needs root,
//! `ip`, `nft` and (for the bridge case) Debian's containernetworking-plugins.

use palisade_lab::{
    Cluster, ClusterSpec, CniLayout, Family, Lab, LabSpec, Masquerade, NodeSpec, ServiceRule,
    NODE_V4,
};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const BACKEND_PORT: u16 = 9000;
const SERVICE_PORT: u16 = 80;
/// Long enough for a busy host; a connection that should work never
/// takes this long otherwise.
const CONNECT: Duration = Duration::from_secs(2);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A Service `name` at `cluster_ip` whose one backend is `backend`.
fn service(name: &str, cluster_ip: &str, backend: IpAddr) -> ServiceRule {
    ServiceRule {
        service: format!("x/{name}"),
        cluster_ip: ip(cluster_ip),
        protocol: palisade_lab::Protocol::Tcp,
        port: SERVICE_PORT,
        backends: vec![SocketAddr::new(backend, BACKEND_PORT)],
    }
}

/// A dual-stack listener inside a pod (or a node: `listen_in`).
fn listen(lab: &Lab, pod: &str) -> TcpListener {
    let l = lab
        .run_in_pod(pod, || TcpListener::bind(("::", BACKEND_PORT)))
        .unwrap()
        .unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

/// The peer address of the next connection `listener` accepts (waiting
/// at most `CONNECT`), after reading the client's one byte from it.
fn accepted_peer(listener: &TcpListener) -> IpAddr {
    let deadline = Instant::now() + CONNECT;
    loop {
        match listener.accept() {
            Ok((mut s, peer)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(CONNECT)).unwrap();
                let mut b = [0u8; 1];
                s.read_exact(&mut b).unwrap();
                return peer.ip().to_canonical();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "nothing accepted");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Connects to `dst` (a ClusterIP) and sends a byte: `Err` when the
/// connection fails within `timeout`.
fn connect(dst: IpAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::new(dst, SERVICE_PORT), timeout)?;
    s.write_all(b"x")?;
    Ok(s)
}

/// What `listener`'s pod sees as the source of `from`'s connection to
/// `cluster_ip`.
fn peer_seen(lab: &Lab, from: &str, cluster_ip: &str, listener: &TcpListener) -> IpAddr {
    let dst = ip(cluster_ip);
    let _s = lab
        .run_in_pod(from, || connect(dst, CONNECT))
        .unwrap()
        .unwrap_or_else(|e| panic!("{from} -> {cluster_ip}: {e}"));
    accepted_peer(listener)
}

/// Every address of the node namespace.
fn node_addrs(netns: &str) -> Vec<IpAddr> {
    let out = Command::new("ip")
        .args(["-n", netns, "-j", "addr", "show"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["local"].as_str()?.parse().ok())
        .collect()
}

/// Pods x/a and x/b (dual-stack) and Services: `svc-a` (10.96.0.11,
/// fd00:96::11) backed by x/a, `svc-b` (10.96.0.10, fd00:96::10) by x/b.
/// (Listeners first: on a panic they close before the lab goes.)
struct Setup {
    a: TcpListener,
    b: TcpListener,
    rules: Vec<ServiceRule>,
    lab: Lab,
}

impl Setup {
    fn teardown(self) {
        let Setup { a, b, lab, .. } = self;
        drop((a, b));
        lab.teardown().expect("teardown");
    }
}

fn setup(label: &str, layout: CniLayout) -> Setup {
    let spec = LabSpec::new(label)
        .cni(layout)
        .pod("x", "a", &[ip("10.0.0.10"), ip("fd00::10")], &[])
        .pod("x", "b", &[ip("10.0.0.11"), ip("fd00::11")], &[]);
    let lab = Lab::up(&spec).expect("lab up");
    let rules = vec![
        service("svc-b", "10.96.0.10", ip("10.0.0.11")),
        service("svc-b", "fd00:96::10", ip("fd00::11")),
        service("svc-a", "10.96.0.11", ip("10.0.0.10")),
        service("svc-a", "fd00:96::11", ip("fd00::10")),
    ];
    Setup {
        a: listen(&lab, "x/a"),
        b: listen(&lab, "x/b"),
        lab,
        rules,
    }
}

/// masqueradeAll: the backend sees the node, never the client; over IPv6
/// the node's address on the way out (link-local: a routed node has no
/// other IPv6 address).
#[test]
fn all_masquerades_every_service_connection() {
    let s = setup("kube_proxy_masq_all", CniLayout::Routed);
    s.lab
        .install_kube_proxy_with(&s.rules, Masquerade::All)
        .unwrap();
    assert_eq!(
        peer_seen(&s.lab, "x/a", "10.96.0.10", &s.b),
        IpAddr::from(NODE_V4)
    );
    let v6 = peer_seen(&s.lab, "x/a", "fd00:96::10", &s.b);
    assert_ne!(v6, ip("fd00::10"));
    assert!(node_addrs(&s.lab.node_netns()).contains(&v6), "{v6}");
    assert_eq!(s.lab.kube_proxy_masquerades(Family::V4).unwrap(), 1);
    assert_eq!(s.lab.kube_proxy_masquerades(Family::V6).unwrap(), 1);
    s.teardown();
}

/// The default: a pod reaching itself through its Service works and
/// arrives from the node; other pods keep their address; the node itself,
/// being outside the pods' prefixes, is masqueraded.
#[test]
fn hairpin_is_masqueraded_by_default() {
    let s = setup("kube_proxy_masq_hairpin", CniLayout::Routed);
    s.lab.install_kube_proxy(&s.rules).unwrap();
    assert_eq!(
        peer_seen(&s.lab, "x/a", "10.96.0.11", &s.a),
        IpAddr::from(NODE_V4)
    );
    let v6 = peer_seen(&s.lab, "x/a", "fd00:96::11", &s.a);
    assert!(node_addrs(&s.lab.node_netns()).contains(&v6), "{v6}");
    assert_eq!(s.lab.kube_proxy_masquerades(Family::V4).unwrap(), 1);

    assert_eq!(
        peer_seen(&s.lab, "x/a", "10.96.0.10", &s.b),
        ip("10.0.0.10")
    );
    assert_eq!(
        peer_seen(&s.lab, "x/a", "fd00:96::10", &s.b),
        ip("fd00::10")
    );
    assert_eq!(s.lab.kube_proxy_masquerades(Family::V4).unwrap(), 1);
    assert_eq!(s.lab.kube_proxy_masquerades(Family::V6).unwrap(), 1);

    // The node's own connection (DNAT in the output hook) is marked by
    // the cluster CIDR rule.
    let dst = ip("10.96.0.10");
    let _c = s
        .lab
        .run_in_node(|| connect(dst, CONNECT))
        .unwrap()
        .unwrap();
    assert_eq!(accepted_peer(&s.b), IpAddr::from(NODE_V4));
    assert_eq!(s.lab.kube_proxy_masquerades(Family::V4).unwrap(), 2);
    s.teardown();
}

/// No masquerading: sources are preserved, and a pod cannot reach itself
/// through its Service (it would receive a packet from its own address,
/// a martian).
#[test]
fn none_preserves_sources() {
    let s = setup("kube_proxy_masq_none", CniLayout::Routed);
    s.lab
        .install_kube_proxy_with(&s.rules, Masquerade::None)
        .unwrap();
    assert_eq!(
        peer_seen(&s.lab, "x/a", "10.96.0.10", &s.b),
        ip("10.0.0.10")
    );
    assert_eq!(
        peer_seen(&s.lab, "x/a", "fd00:96::10", &s.b),
        ip("fd00::10")
    );
    let dst = ip("10.96.0.11");
    let hairpin = s
        .lab
        .run_in_pod("x/a", || connect(dst, Duration::from_millis(500)))
        .unwrap();
    assert!(hairpin.is_err(), "hairpin without SNAT cannot work");
    assert_eq!(s.lab.kube_proxy_masquerades(Family::V4).unwrap(), 0);
    assert_eq!(s.lab.kube_proxy_masquerades(Family::V6).unwrap(), 0);
    s.teardown();
}

/// Masquerading takes the outgoing interface's address: on a bridge
/// node, the bridge's gateway address.
#[test]
fn all_on_a_bridge_uses_the_bridge_address() {
    let s = setup("kube_proxy_masq_bridge", CniLayout::Bridge);
    s.lab
        .install_kube_proxy_with(&s.rules, Masquerade::All)
        .unwrap();
    let gw = |f: Family| {
        s.lab
            .ipam_ranges()
            .iter()
            .find(|r| r.family() == f)
            .unwrap()
            .gateway
    };
    assert_eq!(peer_seen(&s.lab, "x/a", "10.96.0.10", &s.b), gw(Family::V4));
    assert_eq!(
        peer_seen(&s.lab, "x/a", "fd00:96::10", &s.b),
        gw(Family::V6)
    );
    s.teardown();
}

/// In a cluster the cluster CIDRs span every node: a client of another
/// node keeps its address by default; with masqueradeAll the backend sees
/// the client's node's underlay address (where the connection left it).
#[test]
fn cluster_wide_pod_prefixes() {
    let (a, b) = (NodeSpec::new("node-a", 0), NodeSpec::new("node-b", 1));
    let ips = |n: &NodeSpec| {
        [
            n.addr(Family::V4, 10).unwrap(),
            n.addr(Family::V6, 10).unwrap(),
        ]
    };
    let (client, backend) = (ips(&a), ips(&b));
    let spec = ClusterSpec::new("kube_proxy_masq_cluster")
        .node(a.pod("x", "client", &client, &[]))
        .node(b.pod("x", "backend", &backend, &[]));
    let cluster = Cluster::up(&spec).expect("cluster up");
    let rules = vec![
        service("svc", "10.96.0.10", backend[0]),
        service("svc", "fd00:96::10", backend[1]),
    ];
    let lab_b = &cluster.node("node-b").unwrap().lab;
    let listener = listen(lab_b, "x/backend");
    let lab_a = &cluster.node("node-a").unwrap().lab;

    cluster.install_kube_proxy(&rules).unwrap();
    for (cip, want) in [("10.96.0.10", client[0]), ("fd00:96::10", client[1])] {
        assert_eq!(peer_seen(lab_a, "x/client", cip, &listener), want);
    }
    cluster
        .install_kube_proxy_with(&rules, Masquerade::All)
        .unwrap();
    let node_a = cluster.node("node-a").unwrap();
    for (cip, want) in [
        ("10.96.0.10", IpAddr::from(node_a.underlay_v4)),
        ("fd00:96::10", IpAddr::from(node_a.underlay_v6)),
    ] {
        assert_eq!(peer_seen(lab_a, "x/client", cip, &listener), want);
    }
    drop(listener);
    cluster.teardown().unwrap();
}
