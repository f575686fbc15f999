//! Conntrack orientation and closing (BPF_PROG_TEST_RUN): an entry opened
//! by one end never lets the other end open a connection on the same
//! 5-tuple, and FIN or RST shortens its life.

use std::net::IpAddr;

use anyhow::Result;
use palisade_common::*;
use palisade_tests::classifier::{one_peer, packet::Packet, Classifier, Hook, TCX_DROP, TCX_NEXT};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The pod admits the peer on any port and may open nothing itself.
fn inbound_only(pod: IpAddr, peer: IpAddr) -> Result<Classifier> {
    one_peer(pod, peer, DIR_INGRESS)
}

fn run(c: &Classifier, hook: Hook, p: &Packet) -> u32 {
    c.run(hook, &p.build()).expect("test run")
}

#[test]
fn a_syn_never_rides_an_entry_the_other_end_opened() -> Result<()> {
    for (pod, peer) in [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")] {
        let (pod, peer) = (ip(pod), ip(peer));
        let c = inbound_only(pod, peer)?;
        // The peer opens peer:80 -> pod:40000; the pod answers.
        let open = Packet::tcp(peer, pod, 80, 40000).syn();
        assert_eq!(run(&c, Hook::Ingress, &open), TCX_NEXT);
        let answer = Packet::tcp(pod, peer, 40000, 80).tcp_flags(0x12);
        assert_eq!(run(&c, Hook::Egress, &answer), TCX_NEXT, "SYN-ACK");
        assert_eq!(
            run(&c, Hook::Egress, &Packet::tcp(pod, peer, 40000, 80)),
            TCX_NEXT
        );
        // The pod opening pod:40000 -> peer:80 is a connection of its own,
        // which its egress refuses, though the 5-tuple is the same.
        let reverse = Packet::tcp(pod, peer, 40000, 80).syn();
        assert_eq!(run(&c, Hook::Egress, &reverse), TCX_DROP, "{pod}");
        // The opener retrying its SYN still rides its own entry.
        assert_eq!(run(&c, Hook::Ingress, &open), TCX_NEXT);
    }
    Ok(())
}

#[test]
fn fin_or_rst_marks_the_entry_closing() -> Result<()> {
    let (pod, peer) = (ip("10.0.0.1"), ip("10.0.0.2"));
    let mut c = inbound_only(pod, peer)?;
    assert_eq!(
        run(&c, Hook::Ingress, &Packet::tcp(peer, pod, 80, 40000).syn()),
        TCX_NEXT
    );
    let flags = |c: &mut Classifier| -> Result<Vec<u32>> {
        Ok(c.conntrack()?
            .iter()
            .map(|kv| kv.map(|(_, v)| v.flags))
            .collect::<Result<_, _>>()?)
    };
    assert_eq!(flags(&mut c)?, vec![CT_OPENED_REVERSE]);
    let rst = Packet::tcp(pod, peer, 40000, 80).tcp_flags(0x04);
    assert_eq!(
        run(&c, Hook::Egress, &rst),
        TCX_NEXT,
        "the RST itself passes"
    );
    assert_eq!(flags(&mut c)?, vec![CT_OPENED_REVERSE | CT_CLOSING]);
    Ok(())
}
