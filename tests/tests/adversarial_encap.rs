//! Encapsulation as a way around policy, with real packets (see
//! `palisade_tests::attack`): a pod sends its node tunnel packets whose
//! inner packet claims a trusted peer's address and goes to a victim that
//! admits that peer. Prints `attack <name>: sent N arrived M`.
//!
//! VXLAN (UDP 4789) is decapsulated by a real VXLAN device in the node
//! namespace, and the inner packets are counted at the victim. IPIP,
//! GRE and IPv6 in IPv4 or IPv6 are counted where the node's decapsulating
//! device would take them: delivered to the node's own stack, on raw
//! sockets of those protocols (so the test needs no tunnel driver; a
//! kernel with one decapsulates the same packets).
//!
//! Needs the `palisade` binary: `$PALISADE_BIN`, else target/debug/palisade.

use palisade_lab::Family::{V4, V6};
use palisade_lab::{NODE_V4, NODE_V6};
use palisade_tests::attack::policies::{join, A_DNS_ONLY, A_TO_NODE, V_FROM_P};
use palisade_tests::attack::{
    mac, report, report_control, Arena, Capture, ATTACKER, DNS_PORT, PEER, SINK_PORT, VICTIM,
};
use palisade_tests::classifier::packet::Packet;
use std::net::IpAddr;

/// Frames of each kind an attack sends.
const REPEAT: usize = 5;
/// The node's VXLAN device: the IANA port, a VNI of its own.
const VXLAN_DEV: &str = "vxattack0";
const VXLAN_PORT: u16 = 4789;
const VNI: u32 = 42;
/// IP protocols of the tunnels.
const IPIP: u8 = 4;
const IPV6_IN_IP: u8 = 41;
const GRE: u8 = 47;

/// A VXLAN device in the node namespace accepting VNI `VNI` on UDP
/// `VXLAN_PORT` of the node's address from anyone; its MAC address.
fn vxlan_device(arena: &Arena) -> [u8; 6] {
    let node = arena.lab.node_netns();
    let add = format!(
        "link add {VXLAN_DEV} type vxlan id {VNI} dstport {VXLAN_PORT} local {NODE_V4} nolearning"
    );
    for cmd in [add, format!("link set {VXLAN_DEV} up")] {
        let mut args = vec!["-n", &node];
        args.extend(cmd.split(' '));
        palisade_tests::kernel::run("ip", &args);
    }
    mac(&node, VXLAN_DEV)
}

/// The VXLAN header of VNI `VNI` (RFC 7348: flags with the I bit).
fn vxlan_header() -> Vec<u8> {
    let mut h = vec![0x08, 0, 0, 0];
    h.extend_from_slice(&(VNI << 8).to_be_bytes());
    h
}

/// Tunnel packets from the attacker to the node, each carrying a datagram
/// from the peer to the victim: IPIP, GRE, IPv6 in IPv4, IPv4 and IPv6 in
/// IPv6, and VXLAN to `vxlan_mac`.
fn tunnelled(arena: &Arena, vxlan_mac: [u8; 6], marker: &[u8]) -> Vec<Packet> {
    let inner = |family| {
        let (p, v) = (arena.ip(PEER, family), arena.ip(VICTIM, family));
        Packet::udp(p, v, DNS_PORT, SINK_PORT).payload(marker)
    };
    let (inner4, inner6) = (inner(V4).ip_bytes(), inner(V6).ip_bytes());
    let (a4, a6) = (arena.ip(ATTACKER, V4), arena.ip(ATTACKER, V6));
    let (n4, n6): (IpAddr, IpAddr) = (NODE_V4.into(), NODE_V6.into());
    let gre = [&[0u8, 0, 0x08, 0x00][..], &inner4].concat();
    let mut vxlan = vxlan_header();
    vxlan.extend(inner(V4).frame(vxlan_mac, [0x02, 0, 0, 0, 0, 0x99]));
    let kinds = [
        Packet::raw(a4, n4, IPIP, inner4.clone()),
        Packet::raw(a4, n4, GRE, gre),
        Packet::raw(a4, n4, IPV6_IN_IP, inner6.clone()),
        Packet::raw(a6, n6, IPIP, inner4),
        Packet::raw(a6, n6, IPV6_IN_IP, inner6),
        Packet::udp(a4, n4, DNS_PORT, VXLAN_PORT).payload(&vxlan),
    ];
    kinds
        .iter()
        .flat_map(|k| std::iter::repeat_n(k.clone(), REPEAT))
        .collect()
}

/// Where the tunnelled datagrams would surface: the node's stack for the
/// tunnels without a device here, the victim for VXLAN.
fn capture(arena: &Arena) -> Capture {
    let node = arena.capture_node(&[
        (V4, IPIP),
        (V4, GRE),
        (V4, IPV6_IN_IP),
        (V6, IPIP),
        (V6, IPV6_IN_IP),
    ]);
    node.and(arena.capture(VICTIM))
}

/// The attacker's egress allows DNS to the peer only; the victim admits
/// the peer. Tunnel packets to the node must not carry the peer's
/// address past the attacker's egress: the node is a peer like any for
/// them (0 arrive) unless a policy explicitly allows the node. Control:
/// the same packets once the attacker's egress allows the node's
/// addresses.
#[test]
fn tunnels_through_the_node_carry_nothing_policy_refuses() {
    let arena = Arena::up("adv_encap", &join(&[A_DNS_ONLY, V_FROM_P]));
    let vxlan_mac = vxlan_device(&arena);
    let attack = arena.attempt(ATTACKER, &capture(&arena), |m| {
        tunnelled(&arena, vxlan_mac, m)
    });
    report("encapsulation", attack);
    arena.set_policies(&join(&[A_DNS_ONLY, A_TO_NODE, V_FROM_P]));
    let control = arena.attempt(ATTACKER, &capture(&arena), |m| {
        tunnelled(&arena, vxlan_mac, m)
    });
    report_control("encapsulation", control);
    assert_eq!(
        attack.arrived,
        0,
        "tunnelled packets arrived\n{}",
        arena.log()
    );
    assert_eq!(control.arrived, control.sent, "allowed tunnel packets lost");
}
