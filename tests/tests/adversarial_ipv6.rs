//! Attacks on the IPv6 datapath with real packets, counted at the victim
//! (see `palisade_tests::attack`): fragments with an extension header after
//! the Fragment header, and neighbour discovery sent where it has no
//! business. Prints `attack <name>: sent N arrived M` per attack.
//!
//! Needs the `palisade` binary: `$PALISADE_BIN`, else target/debug/palisade.

use palisade_lab::{Family::V6, Protocol, PROBE_TIMEOUT};
use palisade_tests::attack::policies::{
    join, A_DNS_ONLY, A_TO_V, P_DNS_FROM_A, V_DENY_INGRESS, V_FROM_A,
};
use palisade_tests::attack::{
    report, report_control, Arena, ATTACKER, DNS_PORT, PEER, POD_IFACE, SINK_PORT, VICTIM,
};
use palisade_tests::classifier::packet::{Packet, PROTO_DSTOPTS};

/// Datagrams sent per fragment attack.
const DATAGRAMS: usize = 8;
/// Bytes of fragmentable part per fragment: 3 fragments per datagram.
const FRAGMENT: usize = 64;
/// Copies of the marker in a datagram's payload: with 16-byte markers on
/// 8-byte boundaries every fragment holds at least one whole copy.
const COPIES: usize = 10;

/// `DATAGRAMS` datagrams (UDP from the attacker's `sport` to the peer's
/// `dport`, `Frag -> DstOpts -> UDP`, each with an identification of its
/// own) cut in fragments; `keep` picks which by their index in the
/// datagram (0: the first fragment).
fn fragmented(
    arena: &Arena,
    sport: u16,
    dport: u16,
    marker: &[u8],
    keep: impl Fn(usize) -> bool,
) -> Vec<Packet> {
    let (a, p) = (arena.ip(ATTACKER, V6), arena.ip(PEER, V6));
    let datagram = Packet::udp(a, p, sport, dport)
        .payload(&marker.repeat(COPIES))
        .ext_after_fragment(PROTO_DSTOPTS);
    (0..DATAGRAMS)
        .flat_map(|_| {
            let id = u32::from_ne_bytes(palisade_tests::attack::marker()[..4].try_into().unwrap());
            let pieces = datagram.fragments(id, FRAGMENT).into_iter().enumerate();
            pieces.filter(|(i, _)| keep(*i)).map(|(_, f)| f)
        })
        .collect()
}

/// The attacker may send the peer DNS-like datagrams, which the peer
/// admits. Sent as `Frag -> DstOpts -> UDP` fragments, every fragment of
/// them arrives (the later ones take the first one's verdict, though
/// their Fragment header names DstOpts); the fragments of a datagram to a
/// port the policy refuses, and later fragments whose first fragment was
/// never sent, arrive not at all.
#[test]
fn ipv6_fragments_with_a_header_after_the_fragment_header_follow_their_first() {
    let arena = Arena::up("adv_fragments", &join(&[A_DNS_ONLY, P_DNS_FROM_A]));
    // A bound socket: the port is the attacker's, and whatever the peer's
    // server answers to a reassembled datagram lands there.
    let (_socket, sport) = arena.udp_socket(ATTACKER, V6);
    let all = |_: usize| true;
    let allowed = arena.attempt(ATTACKER, &arena.capture(PEER), |m| {
        fragmented(&arena, sport, DNS_PORT, m, all)
    });
    report_control("ipv6-fragments-allowed", allowed);
    let denied = arena.attempt(ATTACKER, &arena.capture(PEER), |m| {
        fragmented(&arena, sport, SINK_PORT, m, all)
    });
    report("ipv6-fragments-denied", denied);
    let orphans = arena.attempt(ATTACKER, &arena.capture(PEER), |m| {
        fragmented(&arena, sport, DNS_PORT, m, |i| i > 0)
    });
    report("ipv6-fragments-orphan", orphans);
    assert_eq!(
        allowed.arrived,
        allowed.sent,
        "fragments of allowed datagrams lost\n{}",
        arena.log()
    );
    assert_eq!(denied.arrived, 0, "fragments of refused datagrams arrived");
    assert_eq!(
        orphans.arrived, 0,
        "later fragments without a first arrived"
    );
}

/// Neighbour discovery (133 to 137) and multicast listener discovery (130
/// to 132, 143) types, as hop limit 255 and 64, sent to `to`: global
/// addresses, never link-scoped.
fn discovery(arena: &Arena, to: &str, marker: &[u8]) -> Vec<Packet> {
    let (a, v) = (arena.ip(ATTACKER, V6), arena.ip(to, V6));
    let mut out = Vec::new();
    for ty in [133, 134, 135, 136, 137, 130, 131, 132, 143] {
        // A hop limit of 1 (MLD's) would never leave the node: 255 and 64.
        for hop_limit in [255, 64] {
            let p = Packet::icmp(a, v, ty, 0, 0)
                .hop_limit(hop_limit)
                .payload(marker);
            out.push(p);
        }
    }
    out.extend(out.clone());
    out
}

/// An isolated attacker (DNS to the peer only) sends discovery messages
/// to the victim's global address, through the node, to a victim that
/// admits nothing: discovery is link-scoped, so these get no exemption
/// and policy refuses them. Link-scoped discovery still works: the
/// attacker forgets its neighbours and its allowed probe, which must
/// resolve the gateway again, gets through. Control: the same messages
/// once both policies allow them.
#[test]
fn neighbour_discovery_off_link_is_no_exemption() {
    let arena = Arena::up("adv_ndp", &join(&[A_DNS_ONLY, V_DENY_INGRESS]));
    let attack = arena.attempt(ATTACKER, &arena.capture(VICTIM), |m| {
        discovery(&arena, VICTIM, m)
    });
    report("ndp-off-link", attack);
    let resolved = gateway_resolves(&arena);
    arena.set_policies(&join(&[A_DNS_ONLY, A_TO_V, V_FROM_A]));
    let control = arena.attempt(ATTACKER, &arena.capture(VICTIM), |m| {
        discovery(&arena, VICTIM, m)
    });
    report_control("ndp-off-link", control);
    assert_eq!(
        attack.arrived,
        0,
        "off-link discovery arrived\n{}",
        arena.log()
    );
    assert!(resolved, "the attacker could not resolve its gateway again");
    assert_eq!(control.arrived, control.sent, "allowed messages lost");
}

/// Flushes the attacker's neighbour table and probes the peer on its
/// allowed port over IPv6: true when the probe, which needs the gateway
/// resolved afresh, is answered.
fn gateway_resolves(arena: &Arena) -> bool {
    let netns = arena.lab.pod(ATTACKER).unwrap().netns.clone();
    palisade_tests::kernel::run(
        "ip",
        &["-n", &netns, "-6", "neigh", "flush", "dev", POD_IFACE],
    );
    let p = arena.ip(PEER, V6);
    let probe = arena
        .lab
        .probe(ATTACKER, p, DNS_PORT, Protocol::Udp, PROBE_TIMEOUT);
    probe.unwrap()
}
