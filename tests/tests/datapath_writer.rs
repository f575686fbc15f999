//! The datapath's userspace half against the real kernel: load and pin,
//! write a compiled node, inspect the pins with `bpftool`, re-adopt after
//! the loader is gone, flip generations, hold unknown interfaces pending,
//! remove pods. Each test runs in its own network namespace (entered by the
//! test thread only) with its own bpffs mount; guards remove both even when
//! an assertion fails. Needs root and the embedded eBPF object.

use ipnetwork::IpNetwork;
use palisade::datapath::{ebpf_object, Datapath};
use palisade_common::Endpoint;
use palisade_common::{
    PolicyKey, RuleBits, SpillKey, EP_DENY_ALL, EP_ISOLATED_INGRESS, EP_PENDING, IDENTITY_HOST,
    INNER_IDENTITY_MAX, PROTO_TCP, SPILL_IDENTITY,
};
use palisade_compiler::{CompiledDirection, CompiledNode, CompiledPod, PortPrefix};
use palisade_tests::kernel::{
    add_pod_iface, bpftool, cell_records, pins, plant_cell, pod_interfaces, records, run,
    tcx_progs, wait_until, NetNs, Scratch,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The entries of node1's pinned map `map`.
fn dump(bpffs: &Path, map: &str) -> Vec<Value> {
    palisade_tests::kernel::dump(&pins(bpffs, "node1").join(map))
}

/// The outer maps of the policy lookups, one per kind of inner map.
const OUTER_MAPS: [&str; 4] = [
    "POLICY_IDENTITY",
    "POLICY_CIDR",
    "POLICY_PORT",
    "POLICY_SPILL",
];

/// The endpoint record of `ifindex` as bpftool prints it (BTF field names).
fn endpoint_json(bpffs: &Path, ifindex: u32) -> Option<Value> {
    dump(bpffs, "ENDPOINTS")
        .into_iter()
        .find(|e| e["key"].as_u64() == Some(u64::from(ifindex)))
        .map(|e| e["value"].clone())
}

/// The cells hold exactly the records of `ENDPOINTS` but the pending ones
/// (no interface of these tests shares a cell), once the cells of new
/// interfaces, linked in the background, are in.
fn assert_cells_follow(bpffs: &Path, what: &str) {
    let mut want = records(&pins(bpffs, "node1"));
    want.retain(|_, e| e.flags & EP_PENDING == 0);
    assert!(!want.is_empty(), "{what}: no records");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let have = cell_records(&pins(bpffs, "node1"));
        if have == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: cells {have:?}\nrecords {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Inner map ids of an outer map.
fn inner_ids(bpffs: &Path, outer: &str) -> BTreeSet<u64> {
    // Outer maps carry no BTF: the value is the inner map id, little endian hex.
    dump(bpffs, outer)
        .iter()
        .map(|e| hex_le(&e["value"]))
        .collect()
}

fn hex_le(v: &Value) -> u64 {
    let bytes: Vec<u8> = v
        .as_array()
        .expect("hex byte array")
        .iter()
        .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .collect();
    bytes
        .iter()
        .rev()
        .fold(0, |acc, b| (acc << 8) | u64::from(*b))
}

fn map_exists(id: u64) -> bool {
    Command::new("bpftool")
        .args(["map", "show", "id", &id.to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn bits(b: u64) -> RuleBits {
    RuleBits {
        bits: b,
        class: 0,
        _pad: 0,
    }
}

/// Pod `ns/a` isolated for ingress with one entry in every inner map; pod
/// `ns/b` over capacity (denied everything).
fn compiled(identity_bits: u64) -> CompiledNode {
    let mut ingress = CompiledDirection {
        isolated: true,
        any_port: 0b100,
        ..CompiledDirection::default()
    };
    ingress.identities.insert(301, bits(identity_bits));
    ingress
        .cidrs
        .insert("10.0.0.0/8".parse::<IpNetwork>().unwrap(), bits(0b10));
    ingress.ports.insert(
        PortPrefix {
            proto: PROTO_TCP,
            port: 80,
            len: 16,
        },
        bits(0b1),
    );
    ingress.spill.insert(
        SpillKey {
            kind: SPILL_IDENTITY,
            peer: 301,
            port_class: 1,
        },
        palisade_tests::classifier::spill_allow(),
    );
    let a = CompiledPod {
        namespace: "ns".into(),
        name: "a".into(),
        ips: vec![ip("10.77.0.2")],
        ingress,
        ..CompiledPod::default()
    };
    let b = CompiledPod {
        namespace: "ns".into(),
        name: "b".into(),
        ips: vec![ip("10.77.0.3")],
        error: Some("over capacity".into()),
        ..CompiledPod::default()
    };
    let mut node = CompiledNode::default();
    node.identities.insert(ip("10.77.0.2"), 300);
    node.identities.insert(ip("10.77.0.3"), 301);
    node.identities.insert(ip("10.99.0.1"), 302);
    node.pods.insert("ns/a".into(), a);
    node.pods.insert("ns/b".into(), b);
    node
}

#[test]
fn datapath_writer_programs_readopts_flips_and_removes() {
    let object = ebpf_object()
        .expect("the agent must be built with its eBPF object (cargo xtask build-ebpf)");
    let _ns = NetNs::enter("dpw");
    let s = Scratch::new("dpw");
    let bpffs = s.bpffs();
    let a_if = add_pod_iface("pa", "10.77.0.2");
    let b_if = add_pod_iface("pb", "10.77.0.3");

    // Load, pin, write.
    let node = compiled(0b1);
    let mut dp = Datapath::open(object, &bpffs, "node1").expect("open datapath");
    assert!(!dp.adopted());
    let ifaces = pod_interfaces(&node);
    assert_eq!(ifaces.pods.get("ns/a"), Some(&a_if));
    assert_eq!(ifaces.pods.get("ns/b"), Some(&b_if));
    let report = dp.program(&node, &ifaces).expect("program");
    assert_eq!(report.write.flipped, 2, "{report:?}");
    assert_eq!(report.attached, 2);
    assert!(report.attach_errors.is_empty(), "{report:?}");
    assert_cells_follow(&bpffs, "first write");

    // bpftool sees the records with their BTF field names.
    let ep_a = endpoint_json(&bpffs, a_if).expect("endpoint of pod a");
    assert_eq!(ep_a["flags"].as_u64(), Some(u64::from(EP_ISOLATED_INGRESS)));
    assert_eq!(ep_a["generation"].as_u64(), Some(0));
    assert_eq!(ep_a["ingress"]["any_port"].as_u64(), Some(0b100));
    assert_eq!(ep_a["addrs"][0]["family"].as_u64(), Some(4));
    let ep_b = endpoint_json(&bpffs, b_if).expect("endpoint of pod b");
    assert_eq!(ep_b["flags"].as_u64(), Some(u64::from(EP_DENY_ALL)));
    // The pods' identities, and the node's own addresses (the test
    // namespace's link-local ones) as IDENTITY_HOST.
    let (identities, node_ids): (Vec<_>, Vec<_>) = dump(&bpffs, "IDENTITIES")
        .into_iter()
        .partition(|e| e["value"].as_u64() != Some(u64::from(IDENTITY_HOST)));
    assert_eq!(identities.len(), 3, "{identities:?}");
    assert_eq!(node_ids.len(), dp.node_addrs().len(), "{node_ids:?}");
    let mut ids: Vec<u64> = identities
        .iter()
        .filter_map(|e| e["value"].as_u64())
        .collect();
    ids.sort();
    assert_eq!(ids, [300, 301, 302]);
    // Only pod a's ingress has inner maps, one of each kind.
    for outer in OUTER_MAPS {
        assert_eq!(
            inner_ids(&bpffs, outer).len(),
            1,
            "{outer}: {:?}",
            dump(&bpffs, outer)
        );
    }
    let identity_inner = *inner_ids(&bpffs, "POLICY_IDENTITY").iter().next().unwrap();
    let entries = bpftool(&["map", "dump", "id", &identity_inner.to_string()]);
    assert_eq!(entries.as_array().map(Vec::len), Some(1), "{entries}");
    // Sized to its contents, not to the template's 65,536 entries.
    let info = bpftool(&["map", "show", "id", &identity_inner.to_string()]);
    assert_eq!(info["max_entries"].as_u64(), Some(1), "{info}");
    // Both hooks of both interfaces, pinned.
    assert_eq!(tcx_progs("pa"), (1, 1));
    assert_eq!(tcx_progs("pb"), (1, 1));
    for prog in ["pod_ingress", "pod_egress"] {
        let pin = pins(&bpffs, "node1")
            .join("links")
            .join(format!("{a_if}-{prog}"));
        let link = palisade::datapath::sys::tcx_link_info(&pin).expect("pinned link");
        assert_eq!(link.ifindex, a_if, "{link:?}");
    }

    // The loader goes away; enforcement stays; a new one re-adopts.
    drop(dp);
    assert_eq!(tcx_progs("pa"), (1, 1), "links survive the loader");
    // As if it had stopped between a record and its cell: b's cell holds
    // an older record, and a cell names an interface without a record.
    let stale = Endpoint {
        generation: 9,
        ..Default::default()
    };
    let node_pins = pins(&bpffs, "node1");
    for ifindex in [b_if, 4242] {
        plant_cell(&node_pins, ifindex, &stale);
    }
    assert_ne!(cell_records(&node_pins), records(&node_pins));
    let mut dp = Datapath::open(object, &bpffs, "node1").expect("re-open datapath");
    assert!(dp.adopted());
    assert_cells_follow(&bpffs, "re-adopted");
    assert_eq!(
        dp.attached(),
        &[a_if, b_if].into_iter().collect::<BTreeSet<_>>()
    );
    let epoch = |bpffs: &Path| {
        endpoint_json(bpffs, a_if).unwrap()["epoch"]
            .as_u64()
            .unwrap()
    };
    let epoch_before = epoch(&bpffs);
    let report = dp.program(&node, &ifaces).expect("reprogram");
    assert_eq!(
        (
            report.write.flipped,
            report.write.records,
            report.write.unchanged
        ),
        (0, 0, 2),
        "{report:?}"
    );
    assert_eq!(report.attached, 0);
    assert_eq!(tcx_progs("pa"), (1, 1), "no double attach");
    assert_eq!(
        endpoint_json(&bpffs, a_if).unwrap()["generation"].as_u64(),
        Some(0)
    );
    // Nothing changed, so the policy epoch did not move either.
    assert_eq!(epoch(&bpffs), epoch_before);

    // Outer entries no record points at (an interrupted run) are collected.
    {
        use aya::maps::{HashMap, HashOfMaps, Map, MapData};
        let outer = MapData::from_pin(pins(&bpffs, "node1").join("POLICY_IDENTITY"))
            .expect("open outer map");
        let mut outer: HashOfMaps<MapData, PolicyKey, HashMap<MapData, u32, RuleBits>> =
            HashOfMaps::try_from(Map::HashOfMaps(outer)).expect("typed outer map");
        let stray: HashMap<MapData, u32, RuleBits> =
            HashMap::create(INNER_IDENTITY_MAX, 1 /* BPF_F_NO_PREALLOC */).expect("inner map");
        let key = PolicyKey {
            ifindex: 999_999,
            generation: 0,
            direction: 0,
        };
        outer
            .insert(key, &stray, 0)
            .expect("insert stray inner map");
    }
    assert_eq!(inner_ids(&bpffs, "POLICY_IDENTITY").len(), 2);
    let report = dp.program(&node, &ifaces).expect("collect garbage");
    assert_eq!(report.garbage, 1, "{report:?}");
    assert_eq!(report.write.unchanged, 2, "{report:?}");
    assert_eq!(inner_ids(&bpffs, "POLICY_IDENTITY").len(), 1);

    // A policy change flips the generation and frees the old inner maps.
    let old_inner: BTreeSet<u64> = OUTER_MAPS
        .iter()
        .flat_map(|o| inner_ids(&bpffs, o))
        .collect();
    let mut node = compiled(0b11);
    let report = dp.program(&node, &ifaces).expect("program change");
    assert_eq!(
        (report.write.flipped, report.write.unchanged),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(
        endpoint_json(&bpffs, a_if).unwrap()["generation"].as_u64(),
        Some(1)
    );
    assert_cells_follow(&bpffs, "flipped");
    // ... and moves the policy epoch on: established flows are decided
    // again at their next packet.
    assert_eq!(epoch(&bpffs), (epoch_before + 1) & u64::from(u32::MAX));
    let new_inner: BTreeSet<u64> = OUTER_MAPS
        .iter()
        .flat_map(|o| inner_ids(&bpffs, o))
        .collect();
    assert_eq!(new_inner.len(), 4);
    assert!(new_inner.is_disjoint(&old_inner));
    for id in &old_inner {
        wait_until(
            &format!("inner map {id} to be freed"),
            Duration::from_secs(5),
            || !map_exists(*id),
        );
    }

    // A new address in the cluster changes nothing of the pods...
    node.identities.insert(ip("10.99.0.7"), 303);
    let before = epoch(&bpffs);
    let report = dp.program(&node, &ifaces).expect("new identity");
    assert_eq!(report.write.unchanged, 2, "{report:?}");
    assert_eq!(epoch(&bpffs), before);
    // ... but an address whose identity changes (a peer relabelled), or
    // that leaves, moves every pod's epoch on: established flows with it
    // are decided again against what it is now.
    node.identities.insert(ip("10.99.0.7"), 304);
    let report = dp.program(&node, &ifaces).expect("identity changed");
    assert_eq!(report.write.records, 2, "{report:?}");
    assert_eq!(epoch(&bpffs), (before + 1) & u64::from(u32::MAX));
    node.identities.remove(&ip("10.99.0.7"));
    dp.program(&node, &ifaces).expect("identity removed");
    let report = dp.program(&node, &ifaces).expect("the round after");
    assert_eq!(report.write.records, 2, "{report:?}");
    assert_eq!(epoch(&bpffs), (before + 2) & u64::from(u32::MAX));
    let report = dp.program(&node, &ifaces).expect("settled");
    assert_eq!(report.write.unchanged, 2, "{report:?}");

    // Told which addresses changed (the compiler's journal), a round
    // compares only those with the trie...
    let (a, b) = (ip("10.99.0.8"), ip("10.99.0.9"));
    node.identities.insert(a, 305);
    node.identities.insert(b, 306);
    dp.note_identity_changes(Some([a].into()));
    let report = dp.program(&node, &ifaces).expect("journal of one address");
    assert_eq!(report.write.identities_set, 1, "{report:?}");
    assert_eq!(dp.identities().get(&a), Some(&305));
    assert_eq!(dp.identities().get(&b), None, "outside the journal");
    // ... journals add up until a round writes them ...
    node.identities.remove(&a);
    dp.note_identity_changes(Some([a].into()));
    dp.note_identity_changes(Some(BTreeSet::new()));
    let report = dp.program(&node, &ifaces).expect("journal of a removal");
    assert_eq!(report.write.identities_removed, 1, "{report:?}");
    assert_eq!(dp.identities().get(&a), None);
    // ... and a round told nothing compares every address.
    let report = dp.program(&node, &ifaces).expect("no journal");
    assert_eq!(report.write.identities_set, 1, "{report:?}");
    assert_eq!(dp.identities().get(&b), Some(&306));
    let pinned: BTreeSet<IpAddr> = dp.identities().keys().copied().collect();
    let want: BTreeSet<IpAddr> = node
        .identities
        .keys()
        .chain(dp.node_addrs())
        .copied()
        .collect();
    assert_eq!(pinned, want);
    node.identities.remove(&b);
    dp.program(&node, &ifaces)
        .expect("back to the settled node");

    // An interface whose pod is unknown is held pending.
    let c_if = add_pod_iface("pc", "10.77.0.9");
    let ifaces = pod_interfaces(&node);
    assert_eq!(ifaces.unknown.get(&c_if).map(String::as_str), Some("pc"));
    let report = dp.program(&node, &ifaces).expect("program pending");
    assert_eq!(report.write.pending, 1);
    assert_eq!(
        endpoint_json(&bpffs, c_if).unwrap()["flags"].as_u64(),
        Some(u64::from(EP_PENDING))
    );
    assert_eq!(tcx_progs("pc"), (1, 1));
    assert_cells_follow(&bpffs, "pending");

    // A pod that goes away with its interface: detached, record and maps gone.
    run("ip", &["link", "del", "pa"]);
    node.pods.remove("ns/a");
    node.identities.remove(&ip("10.99.0.1"));
    let ifaces = pod_interfaces(&node);
    let report = dp.program(&node, &ifaces).expect("program removal");
    assert_eq!(report.detached, 1, "{report:?}");
    assert!(endpoint_json(&bpffs, a_if).is_none());
    assert_cells_follow(&bpffs, "removed");
    assert!(!pins(&bpffs, "node1")
        .join("links")
        .join(format!("{a_if}-pod_ingress"))
        .exists());
    for outer in OUTER_MAPS {
        assert!(inner_ids(&bpffs, outer).is_empty(), "{outer}");
    }
    // Two pod identities left, beside the node's own addresses.
    assert_eq!(dump(&bpffs, "IDENTITIES").len(), 2 + dp.node_addrs().len());
    assert_eq!(
        dp.endpoints(),
        [b_if, c_if].into_iter().collect::<BTreeSet<_>>()
    );
}

#[test]
fn datapath_writer_refuses_pins_that_break_their_layout_version() {
    let object = ebpf_object()
        .expect("the agent must be built with its eBPF object (cargo xtask build-ebpf)");
    let s = Scratch::new("dpl");
    let bpffs = s.bpffs();
    let dir = pins(&bpffs, "node1");
    std::fs::create_dir_all(&dir).unwrap();
    // An ENDPOINTS map of this layout version's directory that does not
    // match it (a release that changed it without bumping the version).
    let old: aya::maps::HashMap<aya::maps::MapData, u32, [u8; 8]> =
        aya::maps::HashMap::create(16, 0).expect("create map");
    old.pin(dir.join("ENDPOINTS")).expect("pin");
    let err = match Datapath::open(object, &bpffs, "node1") {
        Ok(_) => panic!("an incompatible pinned map must be refused"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("ENDPOINTS") && err.contains("without bumping"),
        "{err}"
    );
}

/// A full `ENDPOINTS` refuses a new interface's record in the middle of a
/// round's flips: the pods after it in the round still flip (a change of
/// their policy, which may take away what the old one allowed, is
/// enforced), the new interface is reported and written once there is
/// room.
#[test]
fn datapath_writer_full_endpoints_fail_only_the_new_record() {
    use aya::maps::{HashMap, Map, MapData};
    use palisade::datapath::iface::Interfaces;
    use palisade_common::Endpoint;
    let object = ebpf_object()
        .expect("the agent must be built with its eBPF object (cargo xtask build-ebpf)");
    let _ns = NetNs::enter("dpwf");
    let s = Scratch::new("dpwf");
    // Made first, so the lower index: flipped first in a round.
    let late = add_pod_iface("pl", "10.77.0.3");
    let web = add_pod_iface("pw", "10.77.0.2");
    assert!(late < web);
    let node = |identity_bits, with_late: bool| {
        let mut n = compiled(identity_bits);
        let mut b = n.pods.remove("ns/b").unwrap();
        b.error = None;
        let mut ifaces = Interfaces::default();
        ifaces.pods.insert("ns/a".into(), web);
        if with_late {
            n.pods.insert("ns/b".into(), b);
            ifaces.pods.insert("ns/b".into(), late);
        }
        (n, ifaces)
    };
    let mut dp = Datapath::open(object, &s.bpffs(), "node1").expect("open datapath");
    let (n, ifaces) = node(0b1, false);
    let report = dp.program(&n, &ifaces).expect("program");
    assert!(report.clean(), "{report:?}");
    let before = dp.endpoint(web).unwrap();

    // No room for one more record.
    let pin = pins(&s.bpffs(), "node1").join("ENDPOINTS");
    let mut records: HashMap<MapData, u32, Endpoint> =
        HashMap::try_from(Map::HashMap(MapData::from_pin(&pin).unwrap())).unwrap();
    let mut filler = 1_000_000;
    while records.insert(filler, Endpoint::default(), 0).is_ok() {
        filler += 1;
    }
    // The late pod appears and web's policy changes, in one round.
    let (n, ifaces) = node(0b11, true);
    let report = dp.program(&n, &ifaces).expect("program");
    let after = dp.endpoint(web).unwrap();
    assert_ne!(
        after.generation, before.generation,
        "web not flipped: {report:?}"
    );
    assert_eq!(
        records.get(&web, 0).unwrap().generation,
        after.generation,
        "the pinned record"
    );
    assert!(dp.endpoint(late).is_none());
    assert!(
        report.write.failed.iter().any(|(label, _)| label == "ns/b"),
        "{report:?}"
    );
    assert!(report.node_errors.is_empty(), "{report:?}");

    // Room again: the next round writes it.
    for k in 1_000_000..filler {
        records.remove(&k).unwrap();
    }
    let report = dp.program(&n, &ifaces).expect("program");
    assert!(report.clean(), "{report:?}");
    assert!(dp.endpoint(late).is_some());
}
