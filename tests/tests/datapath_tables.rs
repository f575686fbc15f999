//! The datapath's node tables against the real kernel: counter slots of
//! endpoint records, `SERVICES` and `LOCAL_ADDRS`, `CONFIG`, and the
//! uplinks `node_egress` is attached to. Each test runs in its own network
//! namespace with its own bpffs mount (guards remove both). Needs root and
//! the embedded eBPF object.

use palisade::datapath::{ebpf_object, uplink::UplinkSpec, Datapath};
use palisade_common::{CONFIG_EVENTS_DENIED, MAX_ENDPOINTS};
use palisade_compiler::{CompiledNode, CompiledPod};
use palisade_tests::kernel::{
    add_pod_iface, pod_interfaces, run, tcx_progs, wait_until, NetNs, Scratch,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

fn dump(bpffs: &Path, map: &str) -> Vec<Value> {
    palisade_tests::kernel::dump(&palisade_tests::kernel::pins(bpffs, "node1").join(map))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pod(name: &str, addr: &str) -> CompiledPod {
    CompiledPod {
        namespace: "ns".into(),
        name: name.into(),
        ips: vec![ip(addr)],
        ..CompiledPod::default()
    }
}

fn node(pods: &[(&str, &str)], services: &[&str]) -> CompiledNode {
    let mut n = CompiledNode::default();
    for (name, addr) in pods {
        n.pods.insert(format!("ns/{name}"), pod(name, addr));
        n.identities.insert(ip(addr), 300);
    }
    n.services = services
        .iter()
        .map(|s| palisade_compiler::Frontend {
            ip: ip(s),
            protocol: palisade_policy::Protocol::Tcp,
            port: 80,
        })
        .collect();
    n
}

/// The slot of each endpoint record, by ifindex, as bpftool prints it.
fn slots(bpffs: &Path) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = dump(bpffs, "ENDPOINTS")
        .iter()
        .map(|e| {
            (
                e["key"].as_u64().unwrap(),
                e["value"]["slot"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The IPv4 addresses of an address table with their values; for
/// `SERVICES` the address with `:<proto>/<port>`.
fn table(bpffs: &Path, map: &str) -> BTreeSet<(String, u64)> {
    dump(bpffs, map)
        .iter()
        .map(|e| {
            let k = &e["key"];
            let (a, suffix) = match k.get("proto") {
                Some(proto) => {
                    let p = &k["port_be"];
                    let port = p[0].as_u64().unwrap() * 256 + p[1].as_u64().unwrap();
                    (&k["addr"]["addr"], format!(":{proto}/{port}"))
                }
                None => (&k["addr"], String::new()),
            };
            let octets: Vec<String> = (0..4).map(|i| a[i].as_u64().unwrap().to_string()).collect();
            (octets.join(".") + &suffix, e["value"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn datapath_tables_slots_addresses_services_config() {
    let object = ebpf_object()
        .expect("the agent must be built with its eBPF object (cargo xtask build-ebpf)");
    let _ns = NetNs::enter("dpt");
    let s = Scratch::new("dpt");
    let bpffs = s.bpffs();
    let a_if = add_pod_iface("ta", "10.78.0.2");
    let b_if = add_pod_iface("tb", "10.78.0.3");

    let n = node(&[("a", "10.78.0.2"), ("b", "10.78.0.3")], &["10.96.0.10"]);
    let mut dp = Datapath::open(object, &bpffs, "node1").expect("open datapath");
    dp.set_uplinks(UplinkSpec::Off);
    dp.program(&n, &pod_interfaces(&n)).expect("program");

    // Distinct slots, lowest first.
    let got = slots(&bpffs);
    assert_eq!(got.len(), 2);
    let used: BTreeSet<u64> = got.iter().map(|(_, s)| *s).collect();
    assert_eq!(used, [0, 1].into_iter().collect());
    assert_eq!(
        table(&bpffs, "LOCAL_ADDRS"),
        [
            ("10.78.0.2".to_string(), u64::from(a_if)),
            ("10.78.0.3".to_string(), u64::from(b_if))
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(
        table(&bpffs, "SERVICES"),
        [("10.96.0.10:6/80".to_string(), 1)].into_iter().collect()
    );
    let config = dump(&bpffs, "CONFIG");
    assert_eq!(
        config[0]["value"]["events"].as_u64(),
        Some(u64::from(CONFIG_EVENTS_DENIED))
    );

    // A restarted agent keeps every slot; a new pod gets a free one; a
    // Service that went away leaves SERVICES.
    drop(dp);
    let mut dp = Datapath::open(object, &bpffs, "node1").expect("re-open");
    dp.set_uplinks(UplinkSpec::Off);
    let c_if = add_pod_iface("tc", "10.78.0.4");
    let n = node(
        &[("a", "10.78.0.2"), ("b", "10.78.0.3"), ("c", "10.78.0.4")],
        &["10.96.0.11"],
    );
    dp.program(&n, &pod_interfaces(&n)).expect("program");
    let after = slots(&bpffs);
    for (i, s) in &got {
        assert!(after.contains(&(*i, *s)), "slot of {i} kept: {after:?}");
    }
    assert!(after.contains(&(u64::from(c_if), 2)), "{after:?}");
    assert_eq!(
        table(&bpffs, "SERVICES"),
        [("10.96.0.11:6/80".to_string(), 1)].into_iter().collect()
    );

    // A pod that leaves frees its slot and its address for the next one.
    run("ip", &["link", "del", "ta"]);
    let n = node(&[("b", "10.78.0.3"), ("c", "10.78.0.4")], &[]);
    dp.program(&n, &pod_interfaces(&n))
        .expect("program removal");
    assert!(!table(&bpffs, "LOCAL_ADDRS")
        .iter()
        .any(|(a, _)| a == "10.78.0.2"));
    assert!(table(&bpffs, "SERVICES").is_empty());
    let d_if = add_pod_iface("td", "10.78.0.5");
    let n = node(
        &[("b", "10.78.0.3"), ("c", "10.78.0.4"), ("d", "10.78.0.5")],
        &[],
    );
    dp.program(&n, &pod_interfaces(&n)).expect("program");
    let freed = got.iter().find(|(i, _)| *i == u64::from(a_if)).unwrap().1;
    assert!(slots(&bpffs).contains(&(u64::from(d_if), freed)));
    assert!(slots(&bpffs)
        .iter()
        .all(|(_, s)| *s < u64::from(MAX_ENDPOINTS)));
}

#[test]
fn datapath_tables_uplinks_attach_readopt_detach() {
    let object = ebpf_object()
        .expect("the agent must be built with its eBPF object (cargo xtask build-ebpf)");
    let _ns = NetNs::enter("dpu");
    let s = Scratch::new("dpu");
    let bpffs = s.bpffs();
    run(
        "ip",
        &["link", "add", "up0", "type", "veth", "peer", "name", "up0p"],
    );
    run("ip", &["link", "set", "up0", "up"]);
    run("ip", &["link", "set", "up0p", "up"]);
    run("ip", &["addr", "add", "192.0.2.1/24", "dev", "up0"]);
    run(
        "ip",
        &["route", "add", "default", "via", "192.0.2.2", "dev", "up0"],
    );
    let up0 = palisade::datapath::sys::ifindex("up0").expect("up0");
    let pin = palisade_tests::kernel::pins(&bpffs, "node1")
        .join("uplinks")
        .join(format!("{up0}-node_egress"));
    let n = CompiledNode::default();

    // Auto: the device of the default route, and an overlay device (a
    // pod's packet to another node crosses it before encapsulation).
    run(
        "ip",
        &[
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "1",
            "dstport",
            "8472",
            "local",
            "192.0.2.1",
            "dev",
            "up0",
            "nolearning",
        ],
    );
    run("ip", &["link", "set", "vx0", "up"]);
    let vx0 = palisade::datapath::sys::ifindex("vx0").expect("vx0");
    let mut dp = Datapath::open(object, &bpffs, "node1").expect("open datapath");
    dp.program(&n, &pod_interfaces(&n)).expect("program");
    assert_eq!(
        dp.uplinks(),
        &[up0, vx0].into_iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(tcx_progs("vx0"), (0, 1));
    run("ip", &["link", "del", "vx0"]);
    let link = palisade::datapath::sys::tcx_link_info(&pin).expect("pinned uplink link");
    assert_eq!(link.ifindex, up0);

    // The link outlives the agent and is re-adopted, not attached twice;
    // the overlay device is gone, and so is its link.
    drop(dp);
    let mut dp = Datapath::open(object, &bpffs, "node1").expect("re-open");
    assert_eq!(dp.uplinks(), &[up0].into_iter().collect::<BTreeSet<_>>());
    dp.program(&n, &pod_interfaces(&n)).expect("program");
    assert_eq!(tcx_progs("up0"), (0, 1));

    // Off: detached and unpinned.
    dp.set_uplinks(UplinkSpec::Off);
    dp.program(&n, &pod_interfaces(&n)).expect("program");
    assert!(dp.uplinks().is_empty());
    assert!(!pin.exists());
    // The kernel frees a link whose last reference was its pin once the
    // pin's inode is evicted, which may come a moment later.
    wait_until(
        "node_egress to leave up0",
        std::time::Duration::from_secs(5),
        || tcx_progs("up0") == (0, 0),
    );
}

#[test]
fn datapath_tables_a_full_services_table_never_keeps_a_pod_unfiltered() {
    let object = ebpf_object()
        .expect("the agent must be built with its eBPF object (cargo xtask build-ebpf)");
    let _ns = NetNs::enter("dpf");
    let s = Scratch::new("dpf");
    let a_if = add_pod_iface("ta", "10.78.0.2");
    // One frontend more than SERVICES holds.
    let many: Vec<String> = (0..=palisade_common::SERVICES_MAX)
        .map(|i| format!("10.{}.{}.{}", 96 + i / 65536, (i / 256) % 256, i % 256))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let n = node(&[("a", "10.78.0.2")], &many);
    let mut dp = Datapath::open(object, &s.bpffs(), "node1").expect("open datapath");
    dp.set_uplinks(UplinkSpec::Off);
    let report = dp
        .program(&n, &pod_interfaces(&n))
        .expect("a report, not an error");
    // The table overflowed, was reported, and the round went on: the new
    // pod's interface is attached and programmed.
    assert!(
        report
            .node_errors
            .iter()
            .any(|(step, _)| *step == "SERVICES"),
        "{:?}",
        report.node_errors
    );
    assert!(!report.clean());
    assert_eq!(tcx_progs("ta"), (1, 1));
    let ep = dp.endpoint(a_if).expect("an endpoint record");
    assert_eq!(ep.flags & palisade_common::EP_PENDING, 0);
    // Once the cluster fits again, the round is clean.
    let n = node(&[("a", "10.78.0.2")], &many[..10]);
    let report = dp.program(&n, &pod_interfaces(&n)).expect("program");
    assert!(report.clean(), "{:?}", report.node_errors);
}
