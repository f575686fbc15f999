//! ICMP errors a pod forges (BPF_PROG_TEST_RUN): an error belongs to the
//! flow it quotes only when it goes back to the quoted packet's sender.
//! Quoting an allowed flow must not carry a packet to a peer the pod's
//! policy refuses (a way out of deny-all egress).

use std::net::IpAddr;

use anyhow::Result;
use palisade_common::*;
use palisade_tests::classifier::{one_peer, packet::Packet, Classifier, Hook, TCX_DROP, TCX_NEXT};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The pod may send anything to the peer and nothing else; its ingress is
/// isolated with no rule (replies only).
fn harness(pod: IpAddr, peer: IpAddr) -> Result<Classifier> {
    one_peer(pod, peer, DIR_EGRESS)
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
        assert_eq!(verdict(&c, Hook::Egress, &request), TCX_NEXT);
        let answer = Packet::udp(peer, pod, 5353, 40000);
        assert_eq!(verdict(&c, Hook::Ingress, &answer), TCX_NEXT);
        // The pod's port-unreachable about that answer goes back to the
        // peer: part of the flow.
        let back = Packet::unreachable(pod, peer, &answer);
        assert_eq!(verdict(&c, Hook::Egress, &back), TCX_NEXT, "{peer}");
        // The same quote sent to the victim is no part of any flow, and
        // the pod's egress refuses the victim.
        let forged = Packet::unreachable(pod, victim, &answer);
        assert_eq!(verdict(&c, Hook::Egress, &forged), TCX_DROP, "{victim}");
    }
    Ok(())
}
