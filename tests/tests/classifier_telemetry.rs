//! What the classifiers report besides their verdicts, through
//! BPF_PROG_TEST_RUN (root required): per-pod counters and rule counters,
//! audit mode, allowed-flow events and the per-pod event budget. Each test
//! loads its own copy of the object with its own unpinned maps.

use std::net::IpAddr;

use anyhow::Result;
use palisade_common::*;
use palisade_tests::classifier::{
    bits, ip_key, netns, packet::Packet, Classifier, DirMaps, Hook, IFINDEX, TCX_DROP, TCX_NEXT,
};

const POD: &str = "10.0.0.1";
const PEER: &str = "10.0.0.2";
const OTHER: &str = "10.0.0.3";
const ID_PEER: u32 = 300;
const ID_OTHER: u32 = 301;
/// The counter slot of the pod under test (not 0, to catch a slot ignored).
const SLOT: u16 = 7;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn endpoint(flags: u32, slot: u16) -> Endpoint {
    let mut ep = Endpoint {
        flags,
        slot,
        ..Default::default()
    };
    ep.addrs[0] = ip_key(ip(POD));
    ep
}

/// A pod on `IFINDEX` with `flags`; ingress: group 0 admits PEER on TCP 80
/// and UDP 53, group 1 admits OTHER on TCP 22.
fn setup(flags: u32) -> Result<Classifier> {
    let mut c = Classifier::load()?;
    c.set_endpoint(IFINDEX, &endpoint(flags, SLOT))?;
    c.set_identity(ip(PEER), 32, ID_PEER)?;
    c.set_identity(ip(OTHER), 32, ID_OTHER)?;
    let maps = DirMaps {
        identity: vec![(ID_PEER, bits(0b01)), (ID_OTHER, bits(0b10))],
        port: vec![
            (PROTO_TCP, 80, 16, bits(0b01)),
            (PROTO_UDP, 53, 16, bits(0b01)),
            (PROTO_TCP, 22, 16, bits(0b10)),
        ],
        ..Default::default()
    };
    let key = PolicyKey {
        ifindex: IFINDEX,
        generation: 0,
        direction: DIR_INGRESS,
    };
    c.set_policy(key, &maps)?;
    Ok(c)
}

fn run(c: &Classifier, hook: Hook, frame: &[u8]) -> u32 {
    c.run(hook, frame)
        .unwrap_or_else(|e| panic!("test run: {e:#}"))
}

#[test]
fn telemetry_counters_count_every_packet_once() -> Result<()> {
    let c = setup(EP_ISOLATED_INGRESS)?;
    let allowed = Packet::tcp(ip(PEER), ip(POD), 40000, 80).build();
    let via_other = Packet::tcp(ip(OTHER), ip(POD), 40001, 22).build();
    let denied = Packet::udp(ip(OTHER), ip(POD), 40002, 53).build();
    // The first packet of each flow takes the policy path, the rest the
    // conntrack path: both count.
    for _ in 0..5 {
        assert_eq!(run(&c, Hook::Ingress, &allowed), TCX_NEXT);
    }
    for _ in 0..2 {
        assert_eq!(run(&c, Hook::Ingress, &via_other), TCX_NEXT);
    }
    for _ in 0..3 {
        assert_eq!(run(&c, Hook::Ingress, &denied), TCX_DROP);
    }
    let n = c.counters(SLOT, DIR_INGRESS)?;
    assert_eq!(n.allowed_packets, 7);
    assert_eq!(
        n.allowed_bytes,
        5 * allowed.len() as u64 + 2 * via_other.len() as u64
    );
    assert_eq!(
        (n.denied_packets, n.denied_bytes),
        (3, 3 * denied.len() as u64)
    );
    assert_eq!((n.would_deny_packets, n.would_deny_bytes), (0, 0));

    let g0 = c.rule_counter(SLOT, DIR_INGRESS, 0)?;
    let g1 = c.rule_counter(SLOT, DIR_INGRESS, 1)?;
    assert_eq!((g0.packets, g0.bytes), (5, 5 * allowed.len() as u64));
    assert_eq!((g1.packets, g1.bytes), (2, 2 * via_other.len() as u64));
    // Nothing lands in the other direction or in another slot.
    assert_eq!(c.counters(SLOT, DIR_EGRESS)?, Counters::default());
    assert_eq!(c.counters(0, DIR_INGRESS)?, Counters::default());
    Ok(())
}

#[test]
fn telemetry_not_isolated_flows_count_in_their_column() -> Result<()> {
    let c = setup(0)?;
    let frame = Packet::udp(ip(OTHER), ip(POD), 1000, 9999).build();
    for _ in 0..4 {
        assert_eq!(run(&c, Hook::Ingress, &frame), TCX_NEXT);
    }
    let col = c.rule_counter(SLOT, DIR_INGRESS, RULE_COL_NOT_ISOLATED)?;
    assert_eq!(col.packets, 4);
    assert_eq!(c.counters(SLOT, DIR_INGRESS)?.allowed_packets, 4);
    Ok(())
}

#[test]
fn telemetry_unknown_interfaces_count_in_their_own_slot() -> Result<()> {
    let mut c = setup(EP_ISOLATED_INGRESS)?;
    c.remove_endpoint(IFINDEX)?;
    let frame = Packet::tcp(ip(PEER), ip(POD), 40000, 80).build();
    assert_eq!(run(&c, Hook::Ingress, &frame), TCX_DROP);
    let n = c.counters(SLOT_UNKNOWN as u16, DIR_INGRESS)?;
    assert_eq!(n.denied_packets, 1);
    assert_eq!(c.counters(SLOT, DIR_INGRESS)?, Counters::default());
    Ok(())
}

#[test]
fn telemetry_audit_passes_and_reports_what_it_would_deny() -> Result<()> {
    let mut c = setup(EP_ISOLATED_INGRESS | EP_AUDIT_INGRESS)?;
    let refused = Packet::udp(ip(OTHER), ip(POD), 40002, 53).build();
    let admitted = Packet::tcp(ip(PEER), ip(POD), 40000, 80).build();
    for _ in 0..3 {
        assert_eq!(run(&c, Hook::Ingress, &refused), TCX_NEXT);
    }
    assert_eq!(run(&c, Hook::Ingress, &admitted), TCX_NEXT);
    let n = c.counters(SLOT, DIR_INGRESS)?;
    assert_eq!(
        (n.would_deny_packets, n.allowed_packets, n.denied_packets),
        (3, 1, 0)
    );
    assert_eq!(n.would_deny_bytes, 3 * refused.len() as u64);
    assert_eq!(c.rule_counter(SLOT, DIR_INGRESS, 0)?.packets, 1);

    // One event per flow: the first packet; later ones are established.
    let events = c.events()?;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = events[0];
    assert_eq!(e.verdict, VERDICT_WOULD_DENY);
    assert_eq!((e.reason, e.rule), (REASON_POLICY, RULE_WOULD_DENY));
    assert_eq!((e.ifindex, e.direction), (IFINDEX, DIR_INGRESS));
    assert_eq!((e.src, e.dst), (ip_key(ip(OTHER)), ip_key(ip(POD))));
    assert_eq!((e.sport, e.dport, e.proto), (40002, 53, PROTO_UDP));
    Ok(())
}

#[test]
fn telemetry_audit_never_covers_enforced_directions_or_spoofing() -> Result<()> {
    // Ingress audited, egress enforced with no rule.
    let c = setup(EP_ISOLATED_INGRESS | EP_AUDIT_INGRESS | EP_ISOLATED_EGRESS)?;
    let out = Packet::udp(ip(POD), ip(PEER), 5000, 53).build();
    assert_eq!(run(&c, Hook::Egress, &out), TCX_DROP);
    let spoofed = Packet::udp(ip(OTHER), ip(PEER), 5000, 53).build();
    assert_eq!(run(&c, Hook::Egress, &spoofed), TCX_DROP);
    let n = c.counters(SLOT, DIR_EGRESS)?;
    assert_eq!((n.denied_packets, n.would_deny_packets), (2, 0));
    Ok(())
}

#[test]
fn telemetry_allowed_flow_events_only_when_asked() -> Result<()> {
    let mut c = setup(EP_ISOLATED_INGRESS)?;
    let first = Packet::tcp(ip(PEER), ip(POD), 40000, 80).build();
    assert_eq!(run(&c, Hook::Ingress, &first), TCX_NEXT);
    assert!(
        c.events()?.is_empty(),
        "allowed flows are silent by default"
    );

    c.set_events(CONFIG_EVENTS_DENIED | CONFIG_EVENTS_ALLOWED)?;
    let second = Packet::tcp(ip(OTHER), ip(POD), 40001, 22).build();
    for _ in 0..3 {
        assert_eq!(run(&c, Hook::Ingress, &second), TCX_NEXT);
    }
    let events = c.events()?;
    assert_eq!(events.len(), 1, "one event per new flow: {events:?}");
    let e = events[0];
    assert_eq!((e.verdict, e.rule, e.reason), (VERDICT_ALLOWED, 1, 0));
    assert_eq!(e.generation, 0);
    assert_eq!((e.sport, e.dport), (40001, 22));

    // Denied events can be switched off too: then nothing is lost either.
    c.set_events(0)?;
    let denied = Packet::udp(ip(OTHER), ip(POD), 40002, 53).build();
    assert_eq!(run(&c, Hook::Ingress, &denied), TCX_DROP);
    assert!(c.events()?.is_empty());
    assert_eq!(c.events_lost(EVENTS_LOST_SAMPLED)?, 0);
    assert_eq!(c.counters(SLOT, DIR_INGRESS)?.denied_packets, 1);
    Ok(())
}

#[test]
fn telemetry_event_budget_is_per_pod() -> Result<()> {
    let mut c = Classifier::load()?;
    netns::in_private_netns(|| {
        let (a, b) = netns::veth("pl-tel-a", "pl-tel-b")?;
        // Both pods isolated for ingress with no rule: everything denied.
        c.set_endpoint(a, &endpoint(EP_ISOLATED_INGRESS, 1))?;
        c.set_endpoint(b, &endpoint(EP_ISOLATED_INGRESS, 2))?;
        for ifindex in [a, b] {
            c.set_policy(
                PolicyKey {
                    ifindex,
                    generation: 0,
                    direction: DIR_INGRESS,
                },
                &DirMaps::default(),
            )?;
        }
        // Flood pod a far beyond its burst, then one packet to pod b.
        let flood = Packet::udp(ip(OTHER), ip(POD), 1, 1).build();
        for _ in 0..200 {
            assert_eq!(c.run_on(Hook::Ingress, &flood, a)?, TCX_DROP);
        }
        let lone = Packet::udp(ip(OTHER), ip(POD), 2, 2).build();
        assert_eq!(c.run_on(Hook::Ingress, &lone, b)?, TCX_DROP);
        let events = c.events()?;
        let of = |i: u32| events.iter().filter(|e| e.ifindex == i).count() as u64;
        assert!(of(a) < 200, "pod a is rate-limited: {} events", of(a));
        assert_eq!(of(b), 1, "pod b keeps its own budget");
        let lost = c.events_lost(EVENTS_LOST_SAMPLED)?;
        assert_eq!(of(a) + lost, 200, "every denial delivered or counted");
        assert_eq!(c.counters(1, DIR_INGRESS)?.denied_packets, 200);
        assert_eq!(c.counters(2, DIR_INGRESS)?.denied_packets, 1);
        Ok(())
    })
}
