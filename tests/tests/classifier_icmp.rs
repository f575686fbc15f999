//! ICMP errors a pod forges (BPF_PROG_TEST_RUN): an error belongs to the
//! flow it quotes only when it goes back to the quoted packet's sender.
//! Quoting an allowed flow must not carry a packet to a peer the pod's
//! policy refuses (a way out of deny-all egress).

use std::net::IpAddr;

use anyhow::Result;
use palisade_common::*;
use palisade_tests::classifier::{
    bits, ip_key, packet::Packet, Classifier, DirMaps, Hook, IFINDEX, TCX_DROP, TCX_PASS,
};

const ID_PEER: u32 = 300;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The pod (POD) may send anything to PEER and nothing else; its ingress
/// is isolated with no rule (replies only).
fn harness(pod: IpAddr, peer: IpAddr) -> Result<Classifier> {
    let mut c = Classifier::load()?;
    c.set_identity(peer, if peer.is_ipv4() { 32 } else { 128 }, ID_PEER)?;
    let key = |direction| PolicyKey {
        ifindex: IFINDEX,
        generation: 0,
        direction,
    };
    let egress = DirMaps {
        identity: vec![(ID_PEER, bits(1))],
        ..Default::default()
    };
    c.set_policy(key(DIR_EGRESS), &egress)?;
    c.set_policy(key(DIR_INGRESS), &DirMaps::default())?;
    // Group 1 takes any port: the peer on any protocol, ICMP included.
    let mut ep = Endpoint {
        flags: EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS,
        ..Default::default()
    };
    ep.addrs[0] = ip_key(pod);
    ep.egress.any_port = 1;
    c.set_endpoint(IFINDEX, &ep)?;
    Ok(c)
}

fn verdict(c: &Classifier, hook: Hook, p: &Packet) -> u32 {
    c.run(hook, &p.build()).expect("test run")
}

#[test]
fn a_forged_icmp_error_to_another_peer_is_refused() -> Result<()> {
    for (pod, peer, victim) in [
        ("10.0.0.1", "10.0.0.2", "10.0.0.9"),
        ("fd00::1", "fd00::2", "fd00::9"),
    ] {
        let (pod, peer, victim) = (ip(pod), ip(peer), ip(victim));
        let c = harness(pod, peer)?;
        // An allowed flow, and the peer's answer to it.
        let request = Packet::udp(pod, peer, 40000, 5353);
        assert_eq!(verdict(&c, Hook::Egress, &request), TCX_PASS);
        let answer = Packet::udp(peer, pod, 5353, 40000);
        assert_eq!(verdict(&c, Hook::Ingress, &answer), TCX_PASS);
        // The pod's port-unreachable about that answer goes back to the
        // peer: part of the flow.
        let back = Packet::unreachable(pod, peer, &answer);
        assert_eq!(verdict(&c, Hook::Egress, &back), TCX_PASS, "{peer}");
        // The same quote sent to the victim is no part of any flow, and
        // the pod's egress refuses the victim.
        let forged = Packet::unreachable(pod, victim, &answer);
        assert_eq!(verdict(&c, Hook::Egress, &forged), TCX_DROP, "{victim}");
    }
    Ok(())
}
