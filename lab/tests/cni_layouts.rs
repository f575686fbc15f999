//! Every pod wiring of the lab, on the local kernel (needs root, `ip` and
//! Debian's containernetworking-plugins): the routed layout, and pods set
//! up by the real `ptp` and `bridge` plugins with `host-local`, on one node
//! and across two. No policy agent runs here, so everything is allowed.
//! Each test builds its own labs (unique names): they run concurrently.

use palisade_lab::{
    ChainedPlugin, Cidr, Cluster, ClusterSpec, CniLayout, Family, Lab, LabSpec, NodeSpec,
    ProbePort, Protocol, BRIDGE, NETWORK_NAME,
};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PORTS: [ProbePort; 2] = [
    ProbePort {
        port: 80,
        protocol: Protocol::Tcp,
    },
    ProbePort {
        port: 80,
        protocol: Protocol::Udp,
    },
];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn three_pods(label: &str, layout: CniLayout) -> LabSpec {
    [("x", "a", 10), ("x", "b", 11), ("y", "c", 12)]
        .into_iter()
        .fold(LabSpec::new(label).cni(layout), |spec, (ns, name, k)| {
            let ips = [ip(&format!("10.0.0.{k}")), ip(&format!("fd00::{k}"))];
            spec.pod(ns, name, &ips, &PORTS)
        })
}

/// `ip -d -j` output of one command in `netns`.
fn ip_json(netns: &str, args: &[&str]) -> Value {
    let out = Command::new("ip")
        .args(["-n", netns, "-d", "-j"])
        .args(args)
        .output()
        .expect("running ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).expect("ip -j output")
}

fn link(netns: &str, dev: &str) -> Value {
    ip_json(netns, &["link", "show", "dev", dev])[0].clone()
}

fn routes(netns: &str, family: &str) -> Vec<Value> {
    ip_json(netns, &[family, "route", "show"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn lab_netns_of(id: &str) -> Vec<String> {
    palisade_lab::lab_netns_present()
        .into_iter()
        .filter(|n| n.contains(id))
        .collect()
}

fn all_allowed(m: &[palisade_lab::MatrixEntry], pairs: usize, what: &str) {
    assert_eq!(m.len(), pairs * PORTS.len(), "{what}");
    let blocked: Vec<_> = m.iter().filter(|e| !e.allowed).collect();
    assert!(blocked.is_empty(), "{what}: unreachable: {blocked:#?}");
}

/// What the plugins leave in the node, per layout.
fn check_plumbing(lab: &Lab, layout: CniLayout) {
    let node = lab.node_netns();
    let v4_routes = routes(&node, "-4");
    for p in lab.pods() {
        let key = p.key();
        assert!(lab.host_ifindex(&key).unwrap() > 0);
        let l = link(&node, &p.host_veth);
        assert_eq!(l["linkinfo"]["info_kind"], "veth", "{key}: {l}");
        assert_ne!(p.host_veth, BRIDGE);
        let v4 = p.spec.ip(Family::V4).unwrap().to_string();
        let host_route = v4_routes
            .iter()
            .any(|r| r["dst"] == v4.as_str() && r["dev"] == p.host_veth.as_str());
        match layout {
            CniLayout::Routed => {
                assert!(p.host_veth.starts_with("cali"), "{key}");
                assert!(p.cni_result().is_none());
                assert!(host_route, "{key}: no host route");
            }
            CniLayout::Ptp => {
                assert!(p.cni_result().is_some());
                assert!(host_route, "{key}: ptp adds a host route per pod");
            }
            CniLayout::Bridge => {
                assert_eq!(l["master"], BRIDGE, "{key}: {l}");
                assert_eq!(
                    l["linkinfo"]["info_slave_data"]["hairpin"], true,
                    "{key}: {l}"
                );
                assert!(!host_route, "{key}: a bridge has no per-pod route");
            }
        }
    }
    if layout == CniLayout::Bridge {
        let br = ip_json(&node, &["addr", "show", "dev", BRIDGE]);
        let addrs: Vec<String> = br[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
            .collect();
        for r in lab.ipam_ranges() {
            let want = format!("{}/{}", r.gateway, r.subnet.len);
            assert!(addrs.contains(&want), "{want} not on {BRIDGE}: {addrs:?}");
        }
    }
}

/// One node, three dual-stack pods: every pair over TCP and UDP, both
/// families; the host veths; teardown through DEL leaves nothing behind.
fn one_node(layout: CniLayout) {
    let label = format!("cni_layouts_{layout}");
    let lab = Lab::up(&three_pods(&label, layout)).expect("lab up");
    assert_eq!(lab.cni_layout(), layout);
    for family in [Family::V4, Family::V6] {
        let m = lab.measure_matrix(&PORTS, family).expect("matrix");
        all_allowed(&m, 6, &format!("{layout} {family:?}"));
    }
    check_plumbing(&lab, layout);

    let data_dir = lab.ipam_data_dir();
    if layout == CniLayout::Routed {
        assert!(data_dir.is_none());
    } else {
        // One lease file per pod address, inside the lab's record.
        let data_dir = data_dir.unwrap();
        assert!(data_dir.starts_with(lab.dir()), "{}", data_dir.display());
        for p in lab.pods() {
            for a in &p.spec.ips {
                let lease = data_dir.join(NETWORK_NAME).join(a.to_string());
                assert!(lease.is_file(), "{}", lease.display());
            }
        }
    }
    let id = lab.id().to_string();
    let dir = lab.dir().to_path_buf();
    lab.teardown().expect("teardown");
    assert!(lab_netns_of(&id).is_empty(), "{:?}", lab_netns_of(&id));
    assert!(!dir.exists(), "{}", dir.display());
    // Nothing in host-local's default place either.
    assert!(!Path::new("/var/lib/cni/networks")
        .join(NETWORK_NAME)
        .exists());
}

#[test]
fn routed_layout_one_node() {
    one_node(CniLayout::Routed);
}

#[test]
fn ptp_layout_one_node() {
    one_node(CniLayout::Ptp);
}

#[test]
fn bridge_layout_one_node() {
    one_node(CniLayout::Bridge);
}

/// A chained plugin runs after the main one with its result (`tuning`
/// sets a sysctl in the pod); a failing one fails `Lab::up` naming the pod
/// and the plugin, and leaves nothing behind.
#[test]
fn chained_plugins_run_after_the_main_one() {
    let tuning = || ChainedPlugin::new("/usr/lib/cni/tuning");
    let ok = three_pods("cni_layouts_chain", CniLayout::Ptp).chain(vec![
        tuning().with("sysctl", json!({"net.ipv4.conf.eth0.arp_announce": "2"}))
    ]);
    let lab = Lab::up(&ok).expect("lab up");
    let announce = lab
        .run_in_pod("x/b", || {
            std::fs::read_to_string("/proc/sys/net/ipv4/conf/eth0/arp_announce")
        })
        .unwrap()
        .unwrap();
    assert_eq!(announce.trim(), "2");
    let result = lab.pod("x/b").unwrap().cni_result().unwrap();
    assert_eq!(result["cniVersion"], "1.0.0");
    let to = lab.ip("y/c", Family::V6).unwrap();
    assert!(lab
        .probe("x/a", to, 80, Protocol::Tcp, Duration::from_secs(2))
        .unwrap());
    lab.teardown().expect("teardown through the chain's DEL");

    let bad = three_pods("cni_layouts_chain_error", CniLayout::Bridge)
        .chain(vec![tuning().with("sysctl", json!({"kernel.no_such": "1"}))]);
    let e = format!("{:#}", Lab::up(&bad).err().expect("tuning must refuse"));
    assert!(e.contains("pod x/a") && e.contains("plugin tuning"), "{e}");
}

fn cluster_pods(nodes: Vec<NodeSpec>, placement: &[(&str, &str, usize, u16)]) -> Vec<NodeSpec> {
    let mut nodes = nodes;
    for &(ns, name, k, host) in placement {
        let ips = [
            nodes[k].addr(Family::V4, host).unwrap(),
            nodes[k].addr(Family::V6, host).unwrap(),
        ];
        nodes[k] = nodes[k].clone().pod(ns, name, &ips, &PORTS);
    }
    nodes
}

fn two_nodes(layout: CniLayout, nodes: Vec<NodeSpec>) {
    let spec = nodes.into_iter().fold(
        ClusterSpec::new(format!("cni_layouts_two_{layout}")).cni(layout),
        |c, n| c.node(n),
    );
    let cluster = Cluster::up(&spec).expect("cluster up");
    for family in [Family::V4, Family::V6] {
        let m = cluster.measure_matrix(&PORTS, family).expect("matrix");
        all_allowed(&m, 6, &format!("{layout} {family:?}"));
    }
    for n in cluster.nodes() {
        check_plumbing(&n.lab, layout);
    }
    let ids: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.lab.id().to_string())
        .collect();
    cluster.teardown().expect("teardown");
    for id in ids {
        assert!(lab_netns_of(&id).is_empty());
    }
}

/// Per-node pod CIDRs (`10.244.<k>.0/24`): each is its node's bridge
/// subnet, routed to it by the other node.
#[test]
fn bridge_layout_two_nodes() {
    let nodes = cluster_pods(
        vec![NodeSpec::new("node-a", 0), NodeSpec::new("node-b", 1)],
        &[("x", "a", 0, 10), ("x", "b", 0, 11), ("y", "c", 1, 10)],
    );
    two_nodes(CniLayout::Bridge, nodes);
}

/// Addresses following no per-node block (as manifests give them): host
/// prefixes as pod CIDRs, interleaved across nodes; each node's ptp
/// gateway must be no pod of either node.
#[test]
fn ptp_layout_two_nodes_interleaved_addresses() {
    let host = |s: &str| {
        let a = ip(s);
        Cidr::new(a, if a.is_ipv4() { 32 } else { 128 })
    };
    let node = |name: &str, pods: &[(&str, &str, &str, &str)]| {
        let mut n = NodeSpec::new(name, 0);
        n.pod_cidrs.clear();
        for &(ns, pod, v4, v6) in pods {
            n.pod_cidrs.extend([host(v4), host(v6)]);
            n = n.pod(ns, pod, &[ip(v4), ip(v6)], &PORTS);
        }
        n
    };
    let nodes = vec![
        node(
            "node-a",
            &[
                ("x", "a", "10.0.0.10", "fd00::10"),
                ("y", "c", "10.0.0.12", "fd00::12"),
            ],
        ),
        node("node-b", &[("x", "b", "10.0.0.9", "fd00::11")]),
    ];
    two_nodes(CniLayout::Ptp, nodes);
}

/// A run killed with SIGKILL runs no DEL: the next lab removes its
/// namespaces (taking the bridge and veths along) and its record (taking
/// host-local's leases along). Here the owner is faked dead; the lab's own
/// teardown afterwards finds nothing left and runs DEL on absent
/// namespaces, which the plugins accept.
#[test]
fn bridge_leftovers_of_a_dead_run_are_removed() {
    let lab = Lab::up(&three_pods("cni_layouts_leftovers", CniLayout::Bridge)).expect("lab up");
    let dead = {
        let mut c = Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id()
    };
    std::fs::write(lab.dir().join("owner"), format!("{dead} 1\nleftover\n")).unwrap();
    let removed = palisade_lab::clean_leftovers().unwrap();
    assert!(
        removed.contains(&lab.id().to_string()) || lab_netns_of(lab.id()).is_empty(),
        "{removed:?}"
    );
    assert!(lab_netns_of(lab.id()).is_empty());
    assert!(!lab.dir().exists());
    let dir = lab.dir().to_path_buf();
    lab.teardown().expect("DEL after the namespaces are gone");
    assert!(!dir.exists());
}
