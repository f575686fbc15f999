//! The eBPF classifiers on crafted frames, through BPF_PROG_TEST_RUN against
//! the running kernel (root required). Each test loads its own copy of the
//! object with its own unpinned maps, so the tests run concurrently.

use std::net::IpAddr;

use anyhow::Result;
use palisade_common::*;
use palisade_tests::classifier::{
    bits, class,
    packet::{
        arp, eth_header, Frag, Packet, PROTO_AH, PROTO_DSTOPTS, PROTO_HOPOPTS, PROTO_ROUTING,
    },
    Classifier, DirMaps, Hook, IFINDEX, TCX_DROP, TCX_NEXT,
};

const POD4: &str = "10.0.0.1";
const POD6: &str = "fd00::1";
const PEER4: &str = "10.0.0.2";
const PEER6: &str = "fd00::2";
const OTHER4: &str = "10.0.0.3";
const OTHER6: &str = "fd00::3";
const ID_PEER: u32 = 300;
const ID_OTHER: u32 = 301;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn endpoint(flags: u32) -> Endpoint {
    palisade_tests::classifier::pod_endpoint(flags, &[ip(POD4), ip(POD6)])
}

fn key(dir: u32, generation: u32) -> PolicyKey {
    PolicyKey {
        ifindex: IFINDEX,
        generation,
        direction: dir,
    }
}

/// A harness whose pod (on `IFINDEX`) has `flags`, with the identities of
/// PEER and OTHER in the node trie.
fn setup(flags: u32) -> Result<Classifier> {
    let mut c = Classifier::load()?;
    c.set_endpoint(IFINDEX, &endpoint(flags))?;
    c.set_identity(ip(PEER4), 32, ID_PEER)?;
    c.set_identity(ip(PEER6), 128, ID_PEER)?;
    c.set_identity(ip(OTHER4), 32, ID_OTHER)?;
    c.set_identity(ip(OTHER6), 128, ID_OTHER)?;
    Ok(c)
}

/// Ingress rules: group 0 = from identity PEER on TCP 80, UDP 53 and
/// SCTP 9000; group 1 = from identity OTHER on TCP 22.
fn ingress_rules(c: &mut Classifier) -> Result<()> {
    let maps = DirMaps {
        identity: vec![(ID_PEER, bits(0b01)), (ID_OTHER, bits(0b10))],
        port: vec![
            (PROTO_TCP, 80, 16, bits(0b01)),
            (PROTO_UDP, 53, 16, bits(0b01)),
            (PROTO_SCTP, 9000, 16, bits(0b01)),
            (PROTO_TCP, 22, 16, bits(0b10)),
        ],
        ..Default::default()
    };
    c.set_policy(key(DIR_INGRESS, 0), &maps)
}

fn pass(c: &Classifier, hook: Hook, p: &Packet) -> bool {
    verdict(c, hook, &p.build())
}

fn verdict(c: &Classifier, hook: Hook, frame: &[u8]) -> bool {
    match c
        .run(hook, frame)
        .unwrap_or_else(|e| panic!("test run of {frame:02x?}: {e:#}"))
    {
        TCX_NEXT => true,
        TCX_DROP => false,
        other => panic!("unexpected verdict {other}"),
    }
}

#[test]
fn classifier_protocols_by_identity_and_port() -> Result<()> {
    let mut c = setup(EP_ISOLATED_INGRESS)?;
    ingress_rules(&mut c)?;
    for (peer, other, pod) in [(PEER4, OTHER4, POD4), (PEER6, OTHER6, POD6)] {
        let (peer, other, pod) = (ip(peer), ip(other), ip(pod));
        assert!(
            pass(&c, Hook::Ingress, &Packet::tcp(peer, pod, 40000, 80)),
            "tcp 80 from peer"
        );
        assert!(
            !pass(&c, Hook::Ingress, &Packet::tcp(peer, pod, 40001, 81)),
            "tcp 81 from peer"
        );
        assert!(
            !pass(&c, Hook::Ingress, &Packet::tcp(peer, pod, 40002, 22)),
            "tcp 22 from peer"
        );
        assert!(
            pass(&c, Hook::Ingress, &Packet::tcp(other, pod, 40003, 22)),
            "tcp 22 from other"
        );
        assert!(
            !pass(&c, Hook::Ingress, &Packet::tcp(other, pod, 40004, 80)),
            "tcp 80 from other"
        );
        assert!(
            pass(&c, Hook::Ingress, &Packet::udp(peer, pod, 40005, 53)),
            "udp 53"
        );
        assert!(
            !pass(&c, Hook::Ingress, &Packet::udp(peer, pod, 40006, 80)),
            "udp 80"
        );
        assert!(
            !pass(&c, Hook::Ingress, &Packet::tcp(peer, pod, 40007, 53)),
            "tcp 53"
        );
        assert!(
            pass(&c, Hook::Ingress, &Packet::sctp(peer, pod, 40008, 9000)),
            "sctp 9000"
        );
        assert!(
            !pass(&c, Hook::Ingress, &Packet::sctp(peer, pod, 40009, 9001)),
            "sctp 9001"
        );
        // ICMP is portless: no port rule covers it.
        assert!(
            !pass(&c, Hook::Ingress, &Packet::ping(peer, pod, 7)),
            "ping"
        );
        // WORLD (unknown address) matches no identity entry.
        let world = if pod.is_ipv4() {
            ip("192.0.2.9")
        } else {
            ip("2001:db8::9")
        };
        assert!(
            !pass(&c, Hook::Ingress, &Packet::tcp(world, pod, 40010, 80)),
            "tcp 80 from world"
        );
    }
    Ok(())
}

#[test]
fn classifier_any_port_rule_allows_icmp() -> Result<()> {
    let mut c = setup(EP_ISOLATED_INGRESS)?;
    let mut ep = endpoint(EP_ISOLATED_INGRESS);
    ep.ingress.any_port = 0b1;
    c.set_endpoint(IFINDEX, &ep)?;
    c.set_policy(
        key(DIR_INGRESS, 0),
        &DirMaps {
            identity: vec![(ID_PEER, bits(1))],
            ..Default::default()
        },
    )?;
    assert!(pass(
        &c,
        Hook::Ingress,
        &Packet::ping(ip(PEER4), ip(POD4), 1)
    ));
    assert!(pass(
        &c,
        Hook::Ingress,
        &Packet::ping(ip(PEER6), ip(POD6), 1)
    ));
    assert!(
        pass(
            &c,
            Hook::Ingress,
            &Packet::raw(ip(PEER4), ip(POD4), 47, vec![0; 8])
        ),
        "gre"
    );
    assert!(!pass(
        &c,
        Hook::Ingress,
        &Packet::ping(ip(OTHER4), ip(POD4), 1)
    ));
    Ok(())
}

#[test]
fn classifier_cidr_with_except_hole_at_egress() -> Result<()> {
    let mut c = setup(EP_ISOLATED_EGRESS)?;
    let mut ep = endpoint(EP_ISOLATED_EGRESS);
    ep.egress.any_port = 0b1;
    c.set_endpoint(IFINDEX, &ep)?;
    // 172.16.0.0/12 except 172.16.5.0/24; 2001:db8::/32 except 2001:db8:1::/48.
    let maps = DirMaps {
        cidr: vec![
            (ip("172.16.0.0"), 12, bits(1)),
            (ip("172.16.5.0"), 24, bits(0)),
            (ip("2001:db8::"), 32, bits(1)),
            (ip("2001:db8:1::"), 48, bits(0)),
        ],
        ..Default::default()
    };
    c.set_policy(key(DIR_EGRESS, 0), &maps)?;
    let pod = ip(POD4);
    assert!(pass(
        &c,
        Hook::Egress,
        &Packet::tcp(pod, ip("172.16.4.1"), 1000, 443)
    ));
    assert!(pass(
        &c,
        Hook::Egress,
        &Packet::udp(pod, ip("172.31.255.254"), 1000, 53)
    ));
    assert!(
        !pass(
            &c,
            Hook::Egress,
            &Packet::tcp(pod, ip("172.16.5.1"), 1000, 443)
        ),
        "except hole"
    );
    assert!(
        !pass(
            &c,
            Hook::Egress,
            &Packet::tcp(pod, ip("172.32.0.1"), 1000, 443)
        ),
        "outside"
    );
    let pod = ip(POD6);
    assert!(pass(
        &c,
        Hook::Egress,
        &Packet::tcp(pod, ip("2001:db8:2::1"), 1000, 443)
    ));
    assert!(
        !pass(
            &c,
            Hook::Egress,
            &Packet::tcp(pod, ip("2001:db8:1::1"), 1000, 443)
        ),
        "v6 hole"
    );
    // The family byte is part of the prefix: an IPv4 peer never hits v6 entries.
    assert!(!pass(
        &c,
        Hook::Egress,
        &Packet::tcp(ip(POD4), ip("32.1.13.184"), 1000, 443)
    ));
    Ok(())
}

#[test]
fn classifier_port_ranges() -> Result<()> {
    let mut c = setup(EP_ISOLATED_INGRESS)?;
    let mut ep = endpoint(EP_ISOLATED_INGRESS);
    ep.ingress.any_peer = 0b1;
    c.set_endpoint(IFINDEX, &ep)?;
    // TCP 1000-1011 = 1000/13 (1000-1007) + 1008/14 (1008-1011).
    let maps = DirMaps {
        port: vec![
            (PROTO_TCP, 1000, 13, bits(1)),
            (PROTO_TCP, 1008, 14, bits(1)),
        ],
        ..Default::default()
    };
    c.set_policy(key(DIR_INGRESS, 0), &maps)?;
    for (port, want) in [
        (999, false),
        (1000, true),
        (1005, true),
        (1011, true),
        (1012, false),
    ] {
        let p = Packet::tcp(ip(OTHER4), ip(POD4), 5000 + port, port);
        assert_eq!(pass(&c, Hook::Ingress, &p), want, "tcp port {port}");
    }
    assert!(
        !pass(
            &c,
            Hook::Ingress,
            &Packet::udp(ip(OTHER4), ip(POD4), 5000, 1000)
        ),
        "udp 1000"
    );
    Ok(())
}

#[test]
fn classifier_not_isolated_passes_and_missing_or_pending_drops() -> Result<()> {
    let mut c = setup(0)?;
    for hook in [Hook::Ingress, Hook::Egress] {
        let p = match hook {
            Hook::Ingress => Packet::tcp(ip(OTHER4), ip(POD4), 1, 2),
            Hook::Egress | Hook::Uplink => Packet::tcp(ip(POD4), ip(OTHER4), 1, 2),
        };
        assert!(pass(&c, hook, &p), "{hook:?} not isolated");
        c.set_endpoint(IFINDEX, &endpoint(EP_PENDING))?;
        assert!(!pass(&c, hook, &p), "{hook:?} pending");
        assert!(verdict(&c, hook, &arp()), "{hook:?} ARP while pending");
        c.set_endpoint(IFINDEX, &endpoint(EP_DENY_ALL))?;
        assert!(!pass(&c, hook, &p), "{hook:?} deny-all");
        c.remove_endpoint(IFINDEX)?;
        assert!(!pass(&c, hook, &p), "{hook:?} no endpoint record");
        assert!(verdict(&c, hook, &arp()), "{hook:?} ARP without endpoint");
        c.set_endpoint(IFINDEX, &endpoint(0))?;
    }
    let events = c.events()?;
    assert!(
        events.iter().any(|e| e.reason == REASON_PENDING),
        "pending drop events: {events:?}"
    );
    Ok(())
}

fn malformed_frames() -> Vec<(&'static str, Vec<u8>)> {
    let (pod, peer) = (ip(POD4), ip(PEER4));
    let tcp4 = Packet::tcp(peer, pod, 1, 80).build();
    let tcp6 = Packet::tcp(ip(PEER6), ip(POD6), 1, 80).build();
    let mut ihl4 = tcp4.clone();
    ihl4[14] = 0x44;
    let mut v4_says_6 = tcp4.clone();
    v4_says_6[14] = 0x65;
    let mut options_past_end = Packet::udp(peer, pod, 1, 53).build();
    options_past_end[14] = 0x4f;
    options_past_end.truncate(14 + 24);
    let mut gre_options_past_end = Packet::raw(peer, pod, 47, vec![0; 8]).build();
    gre_options_past_end[14] = 0x4f;
    // A hop-by-hop header whose length runs past the end of the packet.
    let mut bad_ext = Packet::tcp(ip(PEER6), ip(POD6), 1, 80)
        .ext(PROTO_HOPOPTS)
        .build();
    bad_ext[14 + 40 + 1] = 200;
    // A chain of 9 extension headers: longer than the classifier walks.
    let mut long = Packet::tcp(ip(PEER6), ip(POD6), 1, 80);
    for _ in 0..9 {
        long = long.ext(PROTO_DSTOPTS);
    }
    // BPF_PROG_TEST_RUN itself refuses (EINVAL) IPv4/IPv6 frames shorter
    // than the fixed IP header: those cases run on a real attach in
    // `classifier_attached_truncated_headers_dropped`.
    let mut v6_says_4 = tcp6.clone();
    v6_says_4[14] = 0x40;
    let mut vlan = eth_header(0x8100);
    vlan.extend_from_slice(&[0, 1, 0x08, 0x00]);
    vlan.extend_from_slice(&tcp4[14..]);
    vec![
        ("IPv4 IHL < 5", ihl4),
        ("IPv4 version 6", v4_says_6),
        ("IPv4 options past the end", options_past_end),
        ("IPv4 options past the end, portless", gre_options_past_end),
        ("truncated TCP", tcp4[..14 + 20 + 10].to_vec()),
        (
            "truncated UDP",
            Packet::udp(peer, pod, 1, 53).build()[..14 + 20 + 4].to_vec(),
        ),
        ("IPv6 version 4", v6_says_4),
        ("IPv6 header only, TCP announced", tcp6[..14 + 40].to_vec()),
        ("truncated TCP over IPv6", tcp6[..14 + 40 + 8].to_vec()),
        ("IPv6 extension header past the end", bad_ext),
        ("IPv6 extension chain too long", long.build()),
        ("VLAN tagged", vlan),
    ]
}

#[test]
fn classifier_malformed_dropped_when_isolated() -> Result<()> {
    let mut c = setup(EP_ISOLATED_INGRESS)?;
    let mut ep = endpoint(EP_ISOLATED_INGRESS);
    // Allows every peer and port: only the parse can drop.
    ep.ingress.any_peer = 1;
    ep.ingress.any_port = 1;
    c.set_endpoint(IFINDEX, &ep)?;
    c.set_policy(key(DIR_INGRESS, 0), &DirMaps::default())?;
    for (what, frame) in malformed_frames() {
        assert!(
            !verdict(&c, Hook::Ingress, &frame),
            "{what}: dropped when isolated"
        );
    }
    // Not isolated: the same frames are the stack's business.
    c.set_endpoint(IFINDEX, &endpoint(0))?;
    for (what, frame) in malformed_frames() {
        assert!(
            verdict(&c, Hook::Ingress, &frame),
            "{what}: passed when not isolated"
        );
    }
    let events = c.events()?;
    assert!(
        events.iter().any(|e| e.reason == REASON_MALFORMED),
        "{events:?}"
    );
    Ok(())
}

#[test]
fn classifier_ipv6_extension_headers_walked_to_tcp() -> Result<()> {
    let mut c = setup(EP_ISOLATED_INGRESS)?;
    ingress_rules(&mut c)?;
    let base = |dport| {
        Packet::tcp(ip(PEER6), ip(POD6), 3333, dport)
            .ext(PROTO_HOPOPTS)
            .ext(PROTO_ROUTING)
            .ext(PROTO_DSTOPTS)
            .ext(PROTO_AH)
            .ext(PROTO_DSTOPTS)
    };
    assert!(
        pass(&c, Hook::Ingress, &base(80)),
        "tcp 80 behind 5 extension headers"
    );
    assert!(
        !pass(&c, Hook::Ingress, &base(81)),
        "tcp 81 behind 5 extension headers"
    );
    Ok(())
}

/// A first fragment's verdict holds for as long as a receiver would
/// reassemble (`FRAG_TIMEOUT_TICKS`): past that, a later fragment with the
/// same id drops, as one without a first fragment.
#[test]
fn classifier_fragment_records_expire() -> Result<()> {
    let mut c = setup(EP_ISOLATED_INGRESS)?;
    ingress_rules(&mut c)?;
    for (peer, pod) in [(PEER4, POD4), (PEER6, POD6)] {
        let (peer, pod) = (ip(peer), ip(pod));
        let id = 0x77;
        let first = Packet::udp(peer, pod, 7000, 53).fragment(Frag {
            id,
            offset: 0,
            more: true,
        });
        let later = Packet::raw(peer, pod, PROTO_UDP, vec![0xab; 16]).fragment(Frag {
            id,
            offset: 185,
            more: false,
        });
        assert!(pass(&c, Hook::Ingress, &first), "allowed first fragment");
        assert!(pass(&c, Hook::Ingress, &later), "within the timeout");
        // Age every record past its expiry: made at tick T, it expired at
        // T + FRAG_TIMEOUT_TICKS; T - 1 is in the past.
        let mut frags = c.fragments()?;
        let records: Vec<(FragKey, FragValue)> = frags.iter().collect::<Result<_, _>>()?;
        assert!(!records.is_empty(), "the first fragment left a record");
        for (k, mut v) in records {
            v.expires = v.expires.wrapping_sub(FRAG_TIMEOUT_TICKS + 1);
            frags.insert(k, v, 0)?;
        }
        assert!(!pass(&c, Hook::Ingress, &later), "past the timeout");
        // A new first fragment of the id is decided and recorded anew.
        assert!(pass(&c, Hook::Ingress, &first), "the id reused");
        assert!(pass(&c, Hook::Ingress, &later), "its later fragment");
    }
    Ok(())
}

/// A pod with a fragment table of its own (`FRAGMENTS_POD`) records its
/// datagrams there: first fragments beyond its room evict only its own
/// records, and the node-wide table gets none.
#[test]
fn classifier_fragments_of_a_pod_with_a_table_of_its_own_stay_there() -> Result<()> {
    const ROOM: u32 = 32;
    let mut c = setup(EP_ISOLATED_INGRESS)?;
    ingress_rules(&mut c)?;
    let own = c.own_fragments(0, ROOM)?;
    let (peer, pod) = (ip(PEER4), ip(POD4));
    let frag = |id, offset, more| Frag { id, offset, more };
    let datagrams = 4 * ROOM;
    for id in 0..datagrams {
        let first = Packet::udp(peer, pod, 7000, 53).fragment(frag(id, 0, true));
        assert!(pass(&c, Hook::Ingress, &first), "first fragment {id}");
    }
    let later =
        |id| Packet::raw(peer, pod, PROTO_UDP, vec![0xab; 16]).fragment(frag(id, 185, false));
    assert!(
        pass(&c, Hook::Ingress, &later(datagrams - 1)),
        "the newest datagram"
    );
    assert!(!pass(&c, Hook::Ingress, &later(0)), "the oldest, evicted");
    let held = own.keys().count();
    assert!(held > 0 && held <= ROOM as usize, "{held} records");
    assert_eq!(c.fragments()?.keys().count(), 0, "node-wide table");
    Ok(())
}

#[test]
fn classifier_fragments_follow_first_fragment() -> Result<()> {
    let mut c = setup(EP_ISOLATED_INGRESS)?;
    ingress_rules(&mut c)?;
    for (peer, pod) in [(PEER4, POD4), (PEER6, POD6)] {
        let (peer, pod) = (ip(peer), ip(pod));
        let first = |id, dport| {
            Packet::udp(peer, pod, 7000, dport).fragment(Frag {
                id,
                offset: 0,
                more: true,
            })
        };
        let later = |id| {
            Packet::raw(peer, pod, PROTO_UDP, vec![0xab; 16]).fragment(Frag {
                id,
                offset: 185,
                more: false,
            })
        };
        assert!(
            pass(&c, Hook::Ingress, &first(11, 53)),
            "allowed first fragment"
        );
        assert!(
            pass(&c, Hook::Ingress, &later(11)),
            "later fragment of an allowed datagram"
        );
        assert!(
            !pass(&c, Hook::Ingress, &first(12, 54)),
            "denied first fragment"
        );
        assert!(
            !pass(&c, Hook::Ingress, &later(12)),
            "later fragment of a denied datagram"
        );
        assert!(
            !pass(&c, Hook::Ingress, &later(13)),
            "later fragment without a first"
        );
    }
    // IPv6: a hop-by-hop header before the fragment header, the ports after it.
    let (peer, pod) = (ip(PEER6), ip(POD6));
    let first = Packet::tcp(peer, pod, 7001, 80)
        .ext(PROTO_HOPOPTS)
        .fragment(Frag {
            id: 0x01020304,
            offset: 0,
            more: true,
        });
    let later = Packet::raw(peer, pod, PROTO_TCP, vec![0; 16])
        .ext(PROTO_HOPOPTS)
        .fragment(Frag {
            id: 0x01020304,
            offset: 2,
            more: false,
        });
    assert!(
        pass(&c, Hook::Ingress, &first),
        "v6 first fragment behind hop-by-hop"
    );
    assert!(
        pass(&c, Hook::Ingress, &later),
        "v6 later fragment behind hop-by-hop"
    );
    // Extension headers after the Fragment header (Frag -> DstOpts -> TCP):
    // the later fragments' Fragment header names DstOpts, not TCP, and
    // they must still find the first fragment's verdict.
    let first = Packet::tcp(peer, pod, 7002, 80)
        .ext_after_fragment(PROTO_DSTOPTS)
        .fragment(Frag {
            id: 0x0a0b0c0d,
            offset: 0,
            more: true,
        });
    let later = Packet::raw(peer, pod, PROTO_DSTOPTS, vec![0; 16]).fragment(Frag {
        id: 0x0a0b0c0d,
        offset: 3,
        more: false,
    });
    assert!(
        pass(&c, Hook::Ingress, &first),
        "v6 first fragment, dstopts after it"
    );
    assert!(
        pass(&c, Hook::Ingress, &later),
        "v6 later fragment, dstopts after the first"
    );
    // A first fragment too short to hold its TCP header is malformed.
    let tiny = Packet::raw(peer, pod, PROTO_TCP, vec![0, 80, 0, 80]).fragment(Frag {
        id: 5,
        offset: 0,
        more: true,
    });
    assert!(!pass(&c, Hook::Ingress, &tiny), "tiny first fragment");
    let events = c.events()?;
    assert!(
        events.iter().any(|e| e.reason == REASON_FRAGMENT),
        "{events:?}"
    );
    // Not isolated: a later fragment with no record passes.
    c.set_endpoint(IFINDEX, &endpoint(0))?;
    let later = Packet::raw(ip(PEER4), ip(POD4), PROTO_UDP, vec![0; 16]).fragment(Frag {
        id: 99,
        offset: 3,
        more: true,
    });
    assert!(pass(&c, Hook::Ingress, &later));
    Ok(())
}

#[test]
fn classifier_egress_anti_spoofing() -> Result<()> {
    let mut c = setup(0)?;
    assert!(
        pass(&c, Hook::Egress, &Packet::tcp(ip(POD4), ip(PEER4), 1, 80)),
        "own v4 source"
    );
    assert!(
        pass(&c, Hook::Egress, &Packet::tcp(ip(POD6), ip(PEER6), 1, 80)),
        "own v6 source"
    );
    assert!(
        !pass(&c, Hook::Egress, &Packet::tcp(ip(OTHER4), ip(PEER4), 1, 80)),
        "spoofed v4"
    );
    assert!(
        !pass(&c, Hook::Egress, &Packet::tcp(ip(OTHER6), ip(PEER6), 1, 80)),
        "spoofed v6"
    );
    assert!(
        !pass(&c, Hook::Egress, &Packet::ping(ip("fe80::1"), ip(PEER6), 1)),
        "link-local ping"
    );
    // Neighbour discovery from link-local and (DAD) unspecified sources.
    let ns = |src| Packet::nd(ip(src), ip("ff02::1:ff00:1"), 135);
    assert!(pass(&c, Hook::Egress, &ns("fe80::1")), "NS from link-local");
    assert!(pass(&c, Hook::Egress, &ns("::")), "DAD NS from ::");
    assert!(
        !pass(&c, Hook::Egress, &ns(OTHER6)),
        "NS from someone else's address"
    );
    // Multicast listener reports (MLDv2) from the link-local address.
    let mld = Packet::mld(ip("fe80::1"), ip("ff02::16"), 143);
    assert!(pass(&c, Hook::Egress, &mld), "MLD report from link-local");
    let mld = Packet::mld(ip(OTHER6), ip("ff02::16"), 143);
    assert!(
        !pass(&c, Hook::Egress, &mld),
        "MLD from someone else's address"
    );
    // The ingress side does not check sources.
    assert!(pass(
        &c,
        Hook::Ingress,
        &Packet::tcp(ip(OTHER4), ip(POD4), 1, 80)
    ));
    let events = c.events()?;
    assert!(
        events
            .iter()
            .any(|e| e.reason == REASON_SPOOF && e.direction == DIR_EGRESS),
        "{events:?}"
    );
    // NDP also passes an isolated, even pending, pod.
    c.set_endpoint(IFINDEX, &endpoint(EP_PENDING))?;
    assert!(pass(&c, Hook::Egress, &ns("fe80::1")), "NS while pending");
    assert!(
        pass(
            &c,
            Hook::Ingress,
            &Packet::nd(ip("fe80::2"), ip("fe80::1"), 136)
        ),
        "NA in"
    );
    Ok(())
}

/// The pod may talk to PEER (egress rule), nobody may talk to the pod
/// (ingress isolated, no rules).
fn outbound_only() -> Result<Classifier> {
    let mut c = setup(EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS)?;
    let mut ep = endpoint(EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS);
    ep.egress.any_port = 1;
    c.set_endpoint(IFINDEX, &ep)?;
    c.set_policy(
        key(DIR_EGRESS, 0),
        &DirMaps {
            identity: vec![(ID_PEER, bits(1))],
            ..Default::default()
        },
    )?;
    c.set_policy(key(DIR_INGRESS, 0), &DirMaps::default())?;
    Ok(c)
}

#[test]
fn classifier_conntrack_reply_passes_other_direction() -> Result<()> {
    let c = outbound_only()?;
    for (pod, peer) in [(POD4, PEER4), (POD6, PEER6)] {
        let (pod, peer) = (ip(pod), ip(peer));
        assert!(
            !pass(&c, Hook::Ingress, &Packet::tcp(peer, pod, 443, 50000)),
            "reply before request"
        );
        assert!(
            pass(&c, Hook::Egress, &Packet::tcp(pod, peer, 50000, 443)),
            "request"
        );
        assert!(
            pass(&c, Hook::Ingress, &Packet::tcp(peer, pod, 443, 50000)),
            "reply"
        );
        assert!(
            pass(&c, Hook::Egress, &Packet::tcp(pod, peer, 50000, 443)),
            "established"
        );
        assert!(
            !pass(&c, Hook::Ingress, &Packet::tcp(peer, pod, 443, 50001)),
            "other port"
        );
        assert!(
            !pass(&c, Hook::Ingress, &Packet::tcp(peer, pod, 50000, 443)),
            "new flow from peer"
        );
        let other = if pod.is_ipv4() {
            ip(OTHER4)
        } else {
            ip(OTHER6)
        };
        assert!(
            !pass(&c, Hook::Egress, &Packet::tcp(pod, other, 50000, 443)),
            "egress to other"
        );
        // Echo: the reply passes, a request from the peer with the same id does not.
        assert!(
            pass(&c, Hook::Egress, &Packet::ping(pod, peer, 77)),
            "ping out"
        );
        assert!(
            pass(&c, Hook::Ingress, &Packet::pong(peer, pod, 77)),
            "pong in"
        );
        assert!(
            !pass(&c, Hook::Ingress, &Packet::pong(peer, pod, 78)),
            "pong with another id"
        );
        assert!(
            !pass(&c, Hook::Ingress, &Packet::ping(peer, pod, 77)),
            "ping in"
        );
    }
    Ok(())
}

/// Plain TCP/UDP takes the classifier's fast path, the same flow with IPv4
/// options or an IPv6 extension header its general path: both must fill
/// and find the same (normalized) conntrack entries.
#[test]
fn classifier_fast_and_general_paths_share_connections() -> Result<()> {
    let c = outbound_only()?;
    let nops = [1u8, 1, 1, 1];
    let (pod4, peer4, pod6, peer6) = (ip(POD4), ip(PEER4), ip(POD6), ip(PEER6));
    // Opened by the general path, answered on the fast path.
    assert!(pass(
        &c,
        Hook::Egress,
        &Packet::udp(pod4, peer4, 40100, 53).v4_options(&nops)
    ));
    assert!(
        pass(&c, Hook::Ingress, &Packet::udp(peer4, pod4, 53, 40100)),
        "plain reply to a flow opened with options"
    );
    assert!(pass(
        &c,
        Hook::Egress,
        &Packet::tcp(pod6, peer6, 40101, 443).ext(PROTO_DSTOPTS)
    ));
    assert!(
        pass(&c, Hook::Ingress, &Packet::tcp(peer6, pod6, 443, 40101)),
        "plain reply to a flow opened with an extension header"
    );
    // Opened on the fast path, answered through the general path.
    assert!(pass(
        &c,
        Hook::Egress,
        &Packet::tcp(pod4, peer4, 40102, 443)
    ));
    assert!(
        pass(
            &c,
            Hook::Ingress,
            &Packet::tcp(peer4, pod4, 443, 40102).v4_options(&nops)
        ),
        "reply with options"
    );
    assert!(pass(&c, Hook::Egress, &Packet::udp(pod6, peer6, 40103, 53)));
    assert!(
        pass(
            &c,
            Hook::Ingress,
            &Packet::udp(peer6, pod6, 53, 40103).ext(PROTO_HOPOPTS)
        ),
        "reply with an extension header"
    );
    // Neither path lets an unrelated flow in.
    assert!(!pass(
        &c,
        Hook::Ingress,
        &Packet::tcp(peer4, pod4, 443, 40104).v4_options(&nops)
    ));
    assert!(!pass(
        &c,
        Hook::Ingress,
        &Packet::tcp(peer4, pod4, 443, 40104)
    ));
    Ok(())
}

#[test]
fn classifier_icmp_error_quoting_allowed_flow_passes() -> Result<()> {
    let c = outbound_only()?;
    for (pod, peer, other) in [(POD4, PEER4, OTHER4), (POD6, PEER6, OTHER6)] {
        let (pod, peer, other) = (ip(pod), ip(peer), ip(other));
        let request = Packet::udp(pod, peer, 40000, 5353);
        assert!(pass(&c, Hook::Egress, &request));
        // A router (OTHER, which the pod's ingress denies) reports the flow.
        assert!(
            pass(
                &c,
                Hook::Ingress,
                &Packet::unreachable(other, pod, &request)
            ),
            "error for the flow"
        );
        let unknown = Packet::udp(pod, peer, 40001, 5353);
        assert!(
            !pass(
                &c,
                Hook::Ingress,
                &Packet::unreachable(other, pod, &unknown)
            ),
            "error for no flow"
        );
    }
    Ok(())
}

#[test]
fn classifier_conntrack_expired_entry_is_a_new_flow() -> Result<()> {
    let mut c = outbound_only()?;
    let (pod, peer) = (ip(POD4), ip(PEER4));
    assert!(pass(&c, Hook::Egress, &Packet::udp(pod, peer, 40000, 53)));
    let reply = Packet::udp(peer, pod, 53, 40000);
    assert!(pass(&c, Hook::Ingress, &reply));
    // Age the entry past the UDP timeout (the clock started at boot, more
    // than a minute ago on any machine that runs tests).
    let mut ct = c.conntrack()?;
    let keys: Vec<CtKey> = ct.keys().collect::<Result<_, _>>()?;
    assert_eq!(keys.len(), 1, "one flow tracked: {keys:?}");
    let old = CtValue {
        last_seen_ns: 0,
        rule: 0,
        flags: 0,
    };
    ct.insert(keys[0], old, 0)?;
    assert!(!pass(&c, Hook::Ingress, &reply), "reply of an expired flow");
    Ok(())
}

#[test]
fn classifier_spilled_groups() -> Result<()> {
    let mut c = setup(EP_ISOLATED_INGRESS)?;
    let mut ep = endpoint(EP_ISOLATED_INGRESS);
    // Spilled any-port group for peers of CIDR class 4.
    ep.ingress.any_port_class = 9;
    c.set_endpoint(IFINDEX, &ep)?;
    let maps = DirMaps {
        identity: vec![],
        cidr: vec![(ip("192.0.2.0"), 24, class(0, 4))],
        // TCP 8080 is in port class 5 (spilled groups only, no bits).
        port: vec![(PROTO_TCP, 8080, 16, class(0, 5))],
        spill: vec![
            SpillKey {
                kind: SPILL_IDENTITY,
                peer: ID_PEER,
                port_class: 5,
            },
            SpillKey {
                kind: SPILL_CIDR_CLASS,
                peer: 4,
                port_class: 9,
            },
        ],
        spill_values: vec![],
    };
    c.set_policy(key(DIR_INGRESS, 0), &maps)?;
    let pod = ip(POD4);
    assert!(
        pass(&c, Hook::Ingress, &Packet::tcp(ip(PEER4), pod, 1, 8080)),
        "identity x port class"
    );
    assert!(
        !pass(&c, Hook::Ingress, &Packet::tcp(ip(OTHER4), pod, 1, 8080)),
        "other identity"
    );
    assert!(
        !pass(&c, Hook::Ingress, &Packet::tcp(ip(PEER4), pod, 1, 8081)),
        "other port"
    );
    assert!(
        pass(&c, Hook::Ingress, &Packet::udp(ip("192.0.2.7"), pod, 1, 9)),
        "cidr class x any port"
    );
    assert!(
        !pass(&c, Hook::Ingress, &Packet::udp(ip("192.0.3.7"), pod, 1, 9)),
        "outside the cidr"
    );

    // A spilled group with no peers: every peer on port class 5.
    ep.ingress.spill_any_peer = 1;
    c.set_endpoint(IFINDEX, &ep)?;
    let mut maps2 = maps.clone();
    maps2.spill.push(SpillKey {
        kind: SPILL_ANY_PEER,
        peer: 0,
        port_class: 5,
    });
    ep.generation = 1;
    c.set_policy(key(DIR_INGRESS, 1), &maps2)?;
    assert!(
        !pass(&c, Hook::Ingress, &Packet::tcp(ip(OTHER4), pod, 2, 8080)),
        "generation 0 still live"
    );
    c.set_endpoint(IFINDEX, &ep)?;
    assert!(
        pass(&c, Hook::Ingress, &Packet::tcp(ip(OTHER4), pod, 3, 8080)),
        "any peer x port class"
    );
    Ok(())
}

#[test]
fn classifier_generation_flip_switches_policy() -> Result<()> {
    let mut c = setup(EP_ISOLATED_INGRESS)?;
    let mut ep = endpoint(EP_ISOLATED_INGRESS);
    ep.ingress.any_port = 1;
    c.set_endpoint(IFINDEX, &ep)?;
    c.set_policy(
        key(DIR_INGRESS, 0),
        &DirMaps {
            identity: vec![(ID_PEER, bits(1))],
            ..Default::default()
        },
    )?;
    c.set_policy(
        key(DIR_INGRESS, 1),
        &DirMaps {
            identity: vec![(ID_OTHER, bits(1))],
            ..Default::default()
        },
    )?;
    let pod = ip(POD4);
    assert!(pass(&c, Hook::Ingress, &Packet::udp(ip(PEER4), pod, 1, 1)));
    assert!(!pass(
        &c,
        Hook::Ingress,
        &Packet::udp(ip(OTHER4), pod, 1, 1)
    ));
    ep.generation = 1;
    c.set_endpoint(IFINDEX, &ep)?;
    assert!(!pass(&c, Hook::Ingress, &Packet::udp(ip(PEER4), pod, 2, 2)));
    assert!(pass(&c, Hook::Ingress, &Packet::udp(ip(OTHER4), pod, 2, 2)));
    Ok(())
}

#[test]
fn classifier_deny_events_are_rate_limited_not_blocking() -> Result<()> {
    let mut c = setup(EP_ISOLATED_INGRESS)?;
    ingress_rules(&mut c)?;
    let denied = Packet::tcp(ip(OTHER4), ip(POD4), 1234, 80);
    let frame = denied.build();
    // Far more denials than the per-CPU burst: every one still drops.
    let (v, _) = c.run_repeat(Hook::Ingress, &frame, 1000)?;
    assert_eq!(v, TCX_DROP);
    let events = c.events()?;
    assert!(!events.is_empty(), "some events delivered");
    assert!(events.len() < 1000, "sampled: {} events", events.len());
    let e = events[0];
    assert_eq!(
        (e.ifindex, e.direction, e.reason),
        (IFINDEX, DIR_INGRESS, REASON_POLICY)
    );
    assert_eq!((e.sport, e.dport, e.proto), (1234, 80, PROTO_TCP));
    assert_eq!(e.src, palisade_tests::classifier::ip_key(ip(OTHER4)));
    let lost = c.events_lost(EVENTS_LOST_SAMPLED)?;
    assert_eq!(
        events.len() as u64 + lost,
        1000,
        "every denial is either delivered or counted"
    );
    Ok(())
}

#[test]
fn classifier_endpoints_and_conntrack_are_per_interface() -> Result<()> {
    let mut c = setup(0)?;
    palisade_tests::classifier::netns::in_private_netns(|| {
        let (a, b) = palisade_tests::classifier::netns::veth("pl-cls-a", "pl-cls-b")?;
        // Interface a: the pod, ingress isolated with no rule; b: pending.
        c.set_endpoint(a, &endpoint(EP_ISOLATED_INGRESS))?;
        c.set_endpoint(b, &endpoint(EP_PENDING))?;
        c.set_policy(
            PolicyKey {
                ifindex: a,
                generation: 0,
                direction: DIR_INGRESS,
            },
            &DirMaps::default(),
        )?;
        let run =
            |hook, p: &Packet, ifindex| c.run_on(hook, &p.build(), ifindex).unwrap() == TCX_NEXT;
        let (pod, peer) = (ip(POD4), ip(PEER4));
        let out = Packet::udp(pod, peer, 1000, 53);
        let back = Packet::udp(peer, pod, 53, 1000);
        assert!(!run(Hook::Egress, &out, b), "pending interface");
        assert!(run(Hook::Egress, &out, a), "not egress isolated");
        assert!(run(Hook::Ingress, &back, a), "reply on the same interface");
        assert!(
            !run(Hook::Ingress, &back, b),
            "no reply credit on another interface"
        );
        // lo (the default device) has an endpoint of its own: its conntrack is separate.
        c.set_endpoint(IFINDEX, &endpoint(EP_ISOLATED_INGRESS))?;
        c.set_policy(key(DIR_INGRESS, 0), &DirMaps::default())?;
        assert!(!pass(&c, Hook::Ingress, &back), "no reply credit on lo");
        Ok(())
    })
}

/// Attached for real (TCX), both programs find the endpoint by the
/// host-side interface's index: `pod_egress` at its TC ingress, `pod_ingress`
/// at its TC egress. Conntrack entries name the interface they were made on.
#[test]
fn classifier_attached_hooks_key_on_host_interface() -> Result<()> {
    use palisade_tests::classifier::netns::{in_private_netns, link_up, send_frame, veth};
    use std::time::{Duration, Instant};
    let mut c = setup(0)?;
    in_private_netns(|| {
        let (host, pod_side) = veth("pl-cls-host", "pl-cls-pod")?;
        link_up("pl-cls-host")?;
        link_up("pl-cls-pod")?;
        c.set_endpoint(host, &endpoint(0))?;
        c.attach(Hook::Egress, "pl-cls-host")?;
        c.attach(Hook::Ingress, "pl-cls-host")?;
        // From the pod: leaves the pod side, enters the host side's TC ingress.
        send_frame(
            pod_side,
            &Packet::udp(ip(POD4), ip(PEER4), 4000, 53).build(),
        )?;
        // Towards the pod: leaves the host side through its TC egress.
        send_frame(host, &Packet::udp(ip(PEER4), ip(POD4), 5000, 8080).build())?;
        // A spoofed frame from the pod is dropped with an event.
        send_frame(
            pod_side,
            &Packet::udp(ip(OTHER4), ip(PEER4), 4001, 53).build(),
        )?;
        let want = |src: &str, dst: &str, sport, dport| {
            let mut k = CtKey {
                ifindex: host,
                sport,
                dport,
                proto: PROTO_UDP,
                ..Default::default()
            };
            k.src = palisade_tests::classifier::ip_key(ip(src));
            k.dst = palisade_tests::classifier::ip_key(ip(dst));
            k
        };
        // Keys are normalized (lower address end first), so the flow towards
        // the pod is stored with its ends swapped.
        let expected = [want(POD4, PEER4, 4000, 53), want(POD4, PEER4, 8080, 5000)];
        // Delivery through the backlog is asynchronous: poll, bounded.
        let deadline = Instant::now() + Duration::from_secs(5);
        let keys = loop {
            let keys: Vec<CtKey> = c.conntrack()?.keys().collect::<Result<_, _>>()?;
            if expected.iter().all(|k| keys.contains(k)) || Instant::now() > deadline {
                break keys;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for k in &expected {
            assert!(keys.contains(k), "missing {k:?} in {keys:?}");
        }
        // (The kernel's own IPv6 chatter on the new links may add ICMPv6 entries.)
        let udp: Vec<&CtKey> = keys.iter().filter(|k| k.proto == PROTO_UDP).collect();
        assert_eq!(udp.len(), 2, "only the two allowed UDP flows: {keys:?}");
        let events = c.events()?;
        assert!(
            events
                .iter()
                .any(|e| e.reason == REASON_SPOOF && e.ifindex == host),
            "{events:?}"
        );
        Ok(())
    })
}

/// Frames cut short, which BPF_PROG_TEST_RUN refuses to run, from `src` to
/// `dst` (one address pair per family). The flag: the IP header (hence the
/// source) is readable.
fn truncated_frames(
    (src4, dst4): (IpAddr, IpAddr),
    (src6, dst6): (IpAddr, IpAddr),
) -> Vec<(&'static str, Vec<u8>, bool)> {
    let tcp4 = Packet::tcp(src4, dst4, 41000, 80).build();
    let tcp6 = Packet::tcp(src6, dst6, 41000, 80).build();
    // A hop-by-hop header (8 bytes) then destination options cut after 4.
    let chain = Packet::tcp(src6, dst6, 41000, 80)
        .ext(PROTO_HOPOPTS)
        .ext(PROTO_DSTOPTS)
        .build();
    vec![
        ("Ethernet header only, IPv4", eth_header(0x0800), false),
        ("Ethernet header only, IPv6", eth_header(0x86dd), false),
        ("IPv4 header cut short", tcp4[..14 + 10].to_vec(), false),
        ("IPv6 header cut short", tcp6[..14 + 20].to_vec(), false),
        (
            "IPv6 extension chain cut short",
            chain[..14 + 40 + 8 + 4].to_vec(),
            true,
        ),
        ("TCP header cut short", tcp4[..14 + 20 + 10].to_vec(), true),
        (
            "TCP header cut short, IPv6",
            tcp6[..14 + 40 + 10].to_vec(),
            true,
        ),
    ]
}

/// Sends `frames` out of interface `send_on` and reports which of them
/// arrive at any of `sniffers`. Bounded: it stops 150 ms after every frame
/// from index `controls` on (the controls) has arrived, or after 3 s.
fn deliveries(
    send_on: u32,
    sniffers: &[palisade_tests::classifier::netns::Sniffer],
    frames: &[(String, Vec<u8>, bool)],
    controls: usize,
) -> Result<Vec<bool>> {
    use std::time::{Duration, Instant};
    for (_, f, _) in frames {
        // A drop at the sending device's TC egress is also reported to the
        // sender; whether the frame arrives is what counts.
        palisade_tests::classifier::netns::try_send_frame(send_on, f)?;
    }
    let mut arrived = vec![false; frames.len()];
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut settled_at: Option<Instant> = None;
    while Instant::now() < deadline {
        for s in sniffers {
            while let Some(got) = s.recv()? {
                // Kernel chatter on the new links (IPv6 router solicitations,
                // MLD) matches none of the frames.
                if let Some(i) = frames.iter().position(|(_, f, _)| *f == got) {
                    arrived[i] = true;
                }
            }
        }
        let done = arrived[controls..].iter().all(|a| *a);
        match (done, settled_at) {
            (true, None) => settled_at = Some(Instant::now()),
            (true, Some(t)) if t.elapsed() > Duration::from_millis(150) => break,
            _ => {}
        }
    }
    Ok(arrived)
}

/// Truncated headers on a real TCX attach: frames too short for
/// BPF_PROG_TEST_RUN go through a veth in a private namespace. A dropped
/// frame is one that never reaches the other side, while well-formed
/// control frames sent the same way do.
#[test]
fn classifier_attached_truncated_headers_dropped() -> Result<()> {
    use palisade_tests::classifier::netns::{
        in_private_netns, link_up, veth, Sniffer, ETH_P_ALL, ETH_P_IP, ETH_P_IPV6,
    };
    let mut c = setup(0)?;
    in_private_netns(|| {
        let (host, pod_side) = veth("pl-trunc-host", "pl-trunc-pod")?;
        link_up("pl-trunc-host")?;
        link_up("pl-trunc-pod")?;
        c.attach(Hook::Egress, "pl-trunc-host")?;
        c.attach(Hook::Ingress, "pl-trunc-host")?;
        for dir in [DIR_INGRESS, DIR_EGRESS] {
            c.set_policy(
                PolicyKey {
                    ifindex: host,
                    generation: 0,
                    direction: dir,
                },
                &DirMaps::default(),
            )?;
        }
        // Isolated both ways, yet every peer and port allowed: only the
        // parse can drop.
        let mut isolated = endpoint(EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS);
        isolated.ingress.any_peer = 1;
        isolated.ingress.any_port = 1;
        isolated.egress.any_peer = 1;
        isolated.egress.any_port = 1;

        let (pod4, peer4, pod6, peer6) = (ip(POD4), ip(PEER4), ip(POD6), ip(PEER6));
        let with_controls = |frames: Vec<(&'static str, Vec<u8>, bool)>,
                             (s4, d4): (IpAddr, IpAddr),
                             (s6, d6): (IpAddr, IpAddr)| {
            let mut all: Vec<(String, Vec<u8>, bool)> = frames
                .into_iter()
                .map(|(n, f, l3)| (n.to_string(), f, l3))
                .collect();
            all.push((
                "control TCP".into(),
                Packet::tcp(s4, d4, 42000, 80).build(),
                true,
            ));
            all.push((
                "control TCP over IPv6".into(),
                Packet::tcp(s6, d6, 42000, 80).build(),
                true,
            ));
            all
        };
        let controls = |all: &[(String, Vec<u8>, bool)]| all.len() - 2;

        // Into the pod: `pod_ingress` at the host side's TC egress; the
        // frames reach the pod side, where any tap sees them.
        let into = with_controls(
            truncated_frames((peer4, pod4), (peer6, pod6)),
            (peer4, pod4),
            (peer6, pod6),
        );
        for (flags_ep, isolated_now) in [(isolated, true), (endpoint(0), false)] {
            c.set_endpoint(host, &flags_ep)?;
            let sniff = [Sniffer::open(pod_side, ETH_P_ALL)?];
            let got = deliveries(host, &sniff, &into, controls(&into))?;
            for (i, (what, _, _)) in into.iter().enumerate() {
                let want = i >= controls(&into) || !isolated_now;
                assert_eq!(
                    got[i], want,
                    "into the pod (isolated: {isolated_now}): {what} arrived = {}",
                    got[i]
                );
            }
        }

        // From the pod: `pod_egress` at the host side's TC ingress; only
        // sockets of one EtherType run after that hook.
        let from = with_controls(
            truncated_frames((pod4, peer4), (pod6, peer6)),
            (pod4, peer4),
            (pod6, peer6),
        );
        for (flags_ep, isolated_now) in [(isolated, true), (endpoint(0), false)] {
            c.set_endpoint(host, &flags_ep)?;
            let sniff = [
                Sniffer::open(host, ETH_P_IP)?,
                Sniffer::open(host, ETH_P_IPV6)?,
            ];
            let got = deliveries(pod_side, &sniff, &from, controls(&from))?;
            for (i, (what, _, l3_readable)) in from.iter().enumerate() {
                // An unreadable IP header hides the source: dropped always.
                let want = i >= controls(&from) || (!isolated_now && *l3_readable);
                assert_eq!(
                    got[i], want,
                    "from the pod (isolated: {isolated_now}): {what} arrived = {}",
                    got[i]
                );
            }
        }
        let events = c.events()?;
        assert!(
            events
                .iter()
                .any(|e| e.reason == REASON_MALFORMED && e.ifindex == host),
            "{events:?}"
        );
        Ok(())
    })
}
