//! Attacks on the datapath with real packets, counted at the victim (see
//! `palisade_tests::attack`): forged ICMP errors, a SYN from the accepting
//! end of a connection, and spoofed source addresses. IPv6 fragments and
//! neighbour discovery are in `adversarial_ipv6`, encapsulation in
//! `adversarial_encap`.
//!
//! Each test prints `attack <name>: sent N arrived M` (and the same for
//! its control). Needs the `palisade` binary: `$PALISADE_BIN`, else
//! target/debug/palisade.

use palisade_lab::Family::{self, V4, V6};
use palisade_tests::attack::policies::{join, A_DNS_ONLY, A_TO_V, V_DNS_ONLY, V_FROM_P, V_TO_A};
use palisade_tests::attack::{
    report, report_control, Arena, ATTACKER, DNS_PORT, PEER, SINK_PORT, VICTIM,
};
use palisade_tests::classifier::packet::Packet;

/// Frames of each kind an attack sends.
const REPEAT: usize = 10;

/// ICMP errors each family forges: (type, code). IPv4 port unreachable;
/// ICMPv6 port unreachable and packet too big.
fn error_kinds(family: Family) -> &'static [(u8, u8)] {
    match family {
        V4 => &[(3, 3)],
        V6 => &[(1, 4), (2, 0)],
    }
}

/// An egress-isolated pod that may only talk DNS to the peer has that flow
/// open, then sends ICMP errors quoting the peer's answer to the victim
/// (which is not isolated): an error goes back to the sender of what it
/// quotes, so these are no part of the flow and the attacker's egress
/// refuses them. Control: the same errors once the attacker's egress
/// allows the victim.
#[test]
fn forged_icmp_errors_quoting_an_allowed_flow_reach_no_other_pod() {
    let arena = Arena::up("adv_icmp_errors", A_DNS_ONLY);
    let flows = [V4, V6].map(|f| (f, arena.udp_flow(ATTACKER, PEER, f)));
    let forge = |marker: &[u8]| {
        let mut out = Vec::new();
        for (family, (_, port)) in &flows {
            let a = arena.ip(ATTACKER, *family);
            let p = arena.ip(PEER, *family);
            let v = arena.ip(VICTIM, *family);
            // The peer's answer, which the attacker's errors quote.
            let answer = Packet::udp(p, a, DNS_PORT, *port).payload(marker);
            for &(ty, code) in error_kinds(*family) {
                let error = Packet::icmp_error(a, v, ty, code, &answer);
                out.extend(std::iter::repeat_n(error, REPEAT));
            }
        }
        out
    };
    let attack = arena.attempt(ATTACKER, &arena.capture(VICTIM), forge);
    report("icmp-error", attack);
    arena.set_policies(&join(&[A_DNS_ONLY, A_TO_V]));
    let control = arena.attempt(ATTACKER, &arena.capture(VICTIM), forge);
    report_control("icmp-error", control);
    assert_eq!(attack.arrived, 0, "forged errors arrived\n{}", arena.log());
    assert_eq!(control.arrived, control.sent, "allowed errors lost");
}

/// The attacker opens a connection to the victim's port 80; the victim,
/// whose egress refuses the attacker, sends a fresh SYN on the same four
/// addresses and ports, the other way (with data). A SYN never rides a
/// connection the other end opened: it is a new connection of the
/// victim's, which its egress refuses. Control: the same SYNs once the
/// victim's egress allows the attacker.
#[test]
fn a_syn_from_the_accepting_end_does_not_ride_the_connection() {
    let arena = Arena::up("adv_reverse_syn", V_DNS_ONLY);
    let conns = [V4, V6].map(|f| (f, arena.connect(ATTACKER, VICTIM, f)));
    let forge = |marker: &[u8]| {
        let mut out = Vec::new();
        for (family, (_, port)) in &conns {
            let a = arena.ip(ATTACKER, *family);
            let v = arena.ip(VICTIM, *family);
            let syn = Packet::tcp(v, a, 80, *port).syn().payload(marker);
            out.extend(std::iter::repeat_n(syn, REPEAT));
        }
        out
    };
    let attack = arena.attempt(VICTIM, &arena.capture(ATTACKER), forge);
    report("reverse-syn", attack);
    arena.set_policies(&join(&[V_DNS_ONLY, V_TO_A]));
    let control = arena.attempt(VICTIM, &arena.capture(ATTACKER), forge);
    report_control("reverse-syn", control);
    assert_eq!(attack.arrived, 0, "reverse SYNs arrived\n{}", arena.log());
    assert_eq!(control.arrived, control.sent, "allowed SYNs lost");
}

/// The victim admits only the peer; the attacker (not isolated: its
/// egress allows everything) sends datagrams with the peer's source
/// address, and with the node's. Anti-spoofing drops them at the
/// attacker's egress. Control: the peer's datagrams from the peer itself.
#[test]
fn spoofed_sources_reach_nothing() {
    let arena = Arena::up("adv_spoofed_source", V_FROM_P);
    let from_peer = |marker: &[u8]| {
        let mut out = Vec::new();
        for family in [V4, V6] {
            let (p, v) = (arena.ip(PEER, family), arena.ip(VICTIM, family));
            let d = Packet::udp(p, v, DNS_PORT, SINK_PORT).payload(marker);
            out.extend(std::iter::repeat_n(d, REPEAT));
        }
        out
    };
    let spoofed = |marker: &[u8]| {
        let mut out = from_peer(marker);
        for (node, family) in [
            (palisade_lab::NODE_V4.into(), V4),
            (palisade_lab::NODE_V6.into(), V6),
        ] {
            let v = arena.ip(VICTIM, family);
            let d = Packet::udp(node, v, DNS_PORT, SINK_PORT).payload(marker);
            out.extend(std::iter::repeat_n(d, REPEAT / 2));
        }
        out
    };
    let attack = arena.attempt(ATTACKER, &arena.capture(VICTIM), spoofed);
    report("spoofed-source", attack);
    let control = arena.attempt(PEER, &arena.capture(VICTIM), from_peer);
    report_control("spoofed-source", control);
    assert_eq!(
        attack.arrived,
        0,
        "spoofed datagrams arrived\n{}",
        arena.log()
    );
    assert_eq!(
        control.arrived, control.sent,
        "the peer's own datagrams lost"
    );
}
