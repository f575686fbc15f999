//! The VXLAN overlay between cluster nodes, laid out as flannel's vxlan
//! backend lays it out, with every pod wiring: two nodes, every pair over
//! TCP on IPv4 and IPv6, the devices and static entries flannel programs,
//! and proof without a capture that pod traffic crossed the underlay only
//! inside VXLAN: nftables counters in each node namespace count UDP 8472
//! leaving on the underlay (per family) and count any packet the node
//! forwards straight onto it (none may). Needs root, `ip`, `bridge`, `nft`
//! and Debian's containernetworking-plugins; no policy agent runs here.

use palisade_lab::{
    Cidr, Cluster, ClusterNode, ClusterSpec, CniLayout, Family, NodeSpec, Overlay, ProbePort,
    Protocol, UNDERLAY, UPLINK, UPLINK_GATEWAY_V4, VXLAN_DEV, VXLAN_MTU, VXLAN_PORT, VXLAN_V6_DEV,
};
use serde_json::Value;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

const PORTS: [ProbePort; 1] = [ProbePort {
    port: 80,
    protocol: Protocol::Tcp,
}];

/// The counting table's name (the test's own, next to the lab's).
const COUNT_TABLE: &str = "overlay_test_counters";

fn ip_json(netns: &str, args: &[&str]) -> Value {
    let out = Command::new("ip")
        .args(["-n", netns, "-d", "-j"])
        .args(args)
        .output()
        .expect("running ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).expect("ip -j output")
}

fn list(v: Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn nft(netns: &str, args: &[&str], script: Option<&str>) -> String {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running nft");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(s) = script {
        stdin.write_all(s.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "nft {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Counters in the node: VXLAN datagrams the node sends on the underlay
/// (IPv4, IPv6: output hook, the tunnel's own sends), and packets it
/// forwards onto the underlay (pod traffic routed there in the clear).
fn add_counters(netns: &str) {
    let script = format!(
        "table inet {COUNT_TABLE} {{
  chain sent {{
    type filter hook output priority 0; policy accept;
    oifname \"{UNDERLAY}\" meta nfproto ipv4 udp dport {VXLAN_PORT} counter comment \"vxlan4\"
    oifname \"{UNDERLAY}\" meta nfproto ipv6 udp dport {VXLAN_PORT} counter comment \"vxlan6\"
  }}
  chain routed {{
    type filter hook forward priority 0; policy accept;
    oifname \"{UNDERLAY}\" counter comment \"plain\"
  }}
}}
"
    );
    nft(netns, &["-f", "-"], Some(&script));
}

/// Packets per counter comment.
fn counters(netns: &str) -> std::collections::BTreeMap<String, u64> {
    let json = nft(netns, &["-j", "list", "table", "inet", COUNT_TABLE], None);
    let v: Value = serde_json::from_str(&json).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for item in list(v["nftables"].clone()) {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let Some(comment) = rule["comment"].as_str() else {
            continue;
        };
        for e in list(rule["expr"].clone()) {
            if let Some(p) = e.get("counter").and_then(|c| c["packets"].as_u64()) {
                out.insert(comment.to_string(), p);
            }
        }
    }
    out
}

fn pods(nodes: [NodeSpec; 2]) -> Vec<NodeSpec> {
    let [a, b] = nodes;
    let ips = |n: &NodeSpec, h| {
        [
            n.addr(Family::V4, h).unwrap(),
            n.addr(Family::V6, h).unwrap(),
        ]
    };
    let (ia, ib, ic) = (ips(&a, 10), ips(&a, 11), ips(&b, 10));
    vec![
        a.pod("x", "a", &ia, &PORTS).pod("x", "b", &ib, &PORTS),
        b.pod("y", "c", &ic, &PORTS),
    ]
}

/// What flannel programs on `node` for `peer`, and nothing of the pods
/// over the underlay.
fn check_node(node: &ClusterNode, k: usize, spec: &ClusterSpec) {
    let ns = node.lab.node_netns();
    let vteps = spec.vteps().unwrap();
    let peer = &vteps[1 - k];
    for (fam, dev) in [("-4", VXLAN_DEV), ("-6", VXLAN_V6_DEV)] {
        let l = &ip_json(&ns, &["link", "show", "dev", dev])[0];
        let info = &l["linkinfo"]["info_data"];
        assert_eq!(l["linkinfo"]["info_kind"], "vxlan", "{l}");
        assert_eq!(info["id"], 1, "{l}");
        assert_eq!(info["port"], VXLAN_PORT, "{l}");
        assert_eq!(info["learning"], false, "{l}");
        assert_eq!(info["link"], UNDERLAY, "{l}");
        assert_eq!(l["mtu"], VXLAN_MTU, "{l}");
        let mine = vteps[k].iter().find(|v| v.device == dev).unwrap();
        let local = if fam == "-4" {
            info["local"].clone()
        } else {
            info["local6"].clone()
        };
        assert_eq!(local, mine.underlay.to_string(), "{l}");
        assert_eq!(l["address"], mine.mac_string(), "{l}");

        let t = peer.iter().find(|v| v.device == dev).unwrap();
        let routes = list(ip_json(&ns, &[fam, "route", "show"]));
        let to_peer = routes
            .iter()
            .find(|r| r["dst"] == t.subnet.to_string())
            .unwrap_or_else(|| panic!("no route to {}: {routes:#?}", t.subnet));
        assert_eq!(to_peer["dev"], dev, "{to_peer}");
        assert_eq!(to_peer["gateway"], t.addr.to_string(), "{to_peer}");
        assert!(
            list(to_peer["flags"].clone()).contains(&Value::from("onlink")),
            "{to_peer}"
        );
        // The underlay routes only its own segment.
        for r in routes.iter().filter(|r| r["dev"] == UNDERLAY) {
            let dst = r["dst"].as_str().unwrap();
            let ok = ["198.51.100.0/24", "fd00:198::/64", "fe80::/64"];
            assert!(ok.contains(&dst), "{dst} routed over the underlay");
        }

        let neigh = list(ip_json(&ns, &[fam, "neigh", "show", "dev", dev]));
        assert!(
            neigh.iter().any(|n| n["dst"] == t.addr.to_string()
                && n["lladdr"] == t.mac_string()
                && list(n["state"].clone()).contains(&Value::from("PERMANENT"))),
            "{neigh:#?}"
        );
        let out = Command::new("bridge")
            .args(["-n", &ns, "-j", "fdb", "show", "dev", dev])
            .output()
            .unwrap();
        let fdb: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            list(fdb.clone())
                .iter()
                .any(|e| e["mac"] == t.mac_string() && e["dst"] == t.underlay.to_string()),
            "{fdb:#}"
        );
    }
    // Cluster nodes have the uplink's gateway route too.
    let gw = list(ip_json(
        &ns,
        &["route", "show", &UPLINK_GATEWAY_V4.to_string()],
    ));
    assert!(
        gw.iter()
            .any(|r| r["dev"] == UPLINK && r["scope"] == "link" && r.get("gateway").is_none()),
        "{gw:#?}"
    );
}

/// Two nodes wired with `layout` and `overlay`; every pair reachable;
/// what the node counters saw, per node.
fn two_nodes(
    layout: CniLayout,
    overlay: Overlay,
    check: impl Fn(&ClusterNode, usize, &ClusterSpec, &std::collections::BTreeMap<String, u64>),
) {
    let spec = pods([NodeSpec::new("node-a", 0), NodeSpec::new("node-b", 1)])
        .into_iter()
        .fold(
            ClusterSpec::new(format!("overlay_{layout}_{overlay}"))
                .cni(layout)
                .overlay(overlay),
            |c, n| c.node(n),
        );
    let cluster = Cluster::up(&spec).expect("cluster up");
    for n in cluster.nodes() {
        add_counters(&n.lab.node_netns());
    }
    for family in [Family::V4, Family::V6] {
        let m = cluster.measure_matrix(&PORTS, family).expect("matrix");
        assert_eq!(m.len(), 6, "{layout} {family:?}");
        let blocked: Vec<_> = m.iter().filter(|e| !e.allowed).collect();
        assert!(blocked.is_empty(), "{layout} {family:?}: {blocked:#?}");
    }
    for (k, n) in cluster.nodes().iter().enumerate() {
        check(n, k, &spec, &counters(&n.lab.node_netns()));
    }
    cluster.teardown().expect("teardown");
}

fn vxlan_two_nodes(layout: CniLayout) {
    two_nodes(layout, Overlay::Vxlan, |n, k, spec, c| {
        // Every cross-node probe sent at least a SYN from each side.
        assert!(
            c["vxlan4"] > 0 && c["vxlan6"] > 0,
            "{layout} {}: {c:?}",
            n.name
        );
        assert_eq!(c["plain"], 0, "{layout} {}: pods in the clear", n.name);
        check_node(n, k, spec);
    });
}

#[test]
fn vxlan_routed_layout() {
    vxlan_two_nodes(CniLayout::Routed);
}

#[test]
fn vxlan_ptp_layout() {
    vxlan_two_nodes(CniLayout::Ptp);
}

#[test]
fn vxlan_bridge_layout() {
    vxlan_two_nodes(CniLayout::Bridge);
}

/// The counters tell the two apart: without an overlay, pod packets are
/// forwarded onto the underlay as they are, and nothing is encapsulated.
#[test]
fn without_overlay_pods_cross_in_the_clear() {
    two_nodes(CniLayout::Routed, Overlay::None, |n, _, _, c| {
        assert!(c["plain"] > 0, "{}: {c:?}", n.name);
        assert_eq!(c["vxlan4"] + c["vxlan6"], 0, "{}: {c:?}", n.name);
        let links = list(ip_json(&n.lab.node_netns(), &["link", "show"]));
        assert!(
            !links.iter().any(|l| l["ifname"] == VXLAN_DEV),
            "{links:#?}"
        );
    });
}

/// Interleaved host prefixes give no subnet per node: refused before
/// anything is made, naming both nodes.
#[test]
fn vxlan_needs_a_subnet_per_node() {
    let host = |s: &str| {
        let a: IpAddr = s.parse().unwrap();
        Cidr::new(a, if a.is_ipv4() { 32 } else { 128 })
    };
    let node = |name: &str, pods: &[(&str, &str)]| {
        let mut n = NodeSpec::new(name, 0);
        n.pod_cidrs = pods.iter().map(|(_, a)| host(a)).collect();
        for (p, a) in pods {
            n = n.pod("x", p, &[a.parse().unwrap()], &PORTS);
        }
        n
    };
    let spec = ClusterSpec::new("overlay_interleaved")
        .overlay(Overlay::Vxlan)
        .node(node("node-a", &[("p", "10.0.0.10"), ("q", "10.0.0.12")]))
        .node(node("node-b", &[("r", "10.0.0.11")]));
    let e = format!("{:#}", Cluster::up(&spec).err().expect("must be refused"));
    assert!(
        e.contains("node-a") && e.contains("node-b") && e.contains("overlaps"),
        "{e}"
    );
    // The same nodes route fine without an overlay.
    spec.clone().overlay(Overlay::None).validate().unwrap();
    assert_eq!("vxlan".parse::<Overlay>().unwrap(), Overlay::Vxlan);
}
