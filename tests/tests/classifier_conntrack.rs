//! Conntrack orientation and closing (BPF_PROG_TEST_RUN): an entry opened
//! by one end never lets the other end open a connection on the same
//! 5-tuple, and FIN or RST shortens its life; a pod with a table of its
//! own keeps its entries there.

use std::net::IpAddr;

use anyhow::Result;
use palisade_common::*;
use palisade_tests::classifier::{
    one_peer, packet::Packet, Classifier, Hook, IFINDEX, TCX_DROP, TCX_NEXT,
};

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

/// The endpoint record of `one_peer`'s pod, to rewrite as the writer does
/// on a policy change: every change moves the policy epoch on.
fn record(pod: IpAddr, flags: u32, egress_any_port: u64, epoch: u32) -> Endpoint {
    let mut ep = Endpoint {
        flags,
        epoch,
        ..Default::default()
    };
    ep.addrs[0] = palisade_tests::classifier::ip_key(pod);
    ep.egress.any_port = egress_any_port;
    ep
}

/// The pod opens `proto` to the peer's port 80 and gets one answer back.
fn open_flow(c: &Classifier, pod: IpAddr, peer: IpAddr, tcp: bool) -> (Packet, Packet) {
    let (out, back) = if tcp {
        let syn = Packet::tcp(pod, peer, 40000, 80).syn();
        assert_eq!(run(c, Hook::Egress, &syn), TCX_NEXT, "SYN");
        let synack = Packet::tcp(peer, pod, 80, 40000).tcp_flags(0x12);
        assert_eq!(run(c, Hook::Ingress, &synack), TCX_NEXT, "SYN-ACK");
        (
            Packet::tcp(pod, peer, 40000, 80),
            Packet::tcp(peer, pod, 80, 40000),
        )
    } else {
        let out = Packet::udp(pod, peer, 40000, 80);
        assert_eq!(run(c, Hook::Egress, &out), TCX_NEXT, "first datagram");
        (out, Packet::udp(peer, pod, 80, 40000))
    };
    assert_eq!(run(c, Hook::Ingress, &back), TCX_NEXT, "answer");
    (out, back)
}

fn entries(c: &mut Classifier) -> Result<Vec<CtValue>> {
    Ok(c.conntrack()?
        .iter()
        .map(|kv| kv.map(|(_, v)| v))
        .collect::<Result<_, _>>()?)
}

/// A policy change reaches established flows at their next packet, in
/// either direction: a flow the new policy refuses is cut and forgotten,
/// one it still allows passes and is renewed under the new epoch.
#[test]
fn a_policy_change_reaches_established_flows_at_their_next_packet() -> Result<()> {
    let iso = EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS;
    for (pod, peer) in [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")] {
        let (pod, peer) = (ip(pod), ip(peer));
        for tcp in [true, false] {
            for pod_speaks_first in [true, false] {
                let what = format!("{pod} tcp={tcp} pod first={pod_speaks_first}");
                let mut c = one_peer(pod, peer, DIR_EGRESS)?;
                c.set_endpoint(IFINDEX, &record(pod, iso, 1, 7))?;
                let (out, back) = open_flow(&c, pod, peer, tcp);
                // Same policy, new epoch: the flow survives, renewed.
                c.set_endpoint(IFINDEX, &record(pod, iso, 1, 8))?;
                let (first, then) = match pod_speaks_first {
                    true => ((Hook::Egress, &out), (Hook::Ingress, &back)),
                    false => ((Hook::Ingress, &back), (Hook::Egress, &out)),
                };
                assert_eq!(run(&c, first.0, first.1), TCX_NEXT, "{what}: kept");
                assert_eq!(run(&c, then.0, then.1), TCX_NEXT, "{what}: kept");
                let renewed = entries(&mut c)?;
                assert_eq!(renewed.len(), 1, "{what}: {renewed:?}");
                assert_eq!(renewed[0].flags >> CT_EPOCH_SHIFT, 8, "{what}");
                assert!(renewed[0].flags & CT_OPENED_MASK != 0, "{what}");
                // The rule is gone: the next packet, either way, is cut.
                c.set_endpoint(IFINDEX, &record(pod, iso, 0, 9))?;
                assert_eq!(run(&c, first.0, first.1), TCX_DROP, "{what}: cut");
                let cut = entries(&mut c)?;
                assert_eq!(cut.len(), 1, "{what}: {cut:?}");
                assert!(cut[0].flags & CT_CUT != 0, "{what}: marked cut");
                assert_eq!(run(&c, then.0, then.1), TCX_DROP, "{what}: cut");
                assert_eq!(run(&c, first.0, first.1), TCX_DROP, "{what}: stays cut");
                // Allowed again by a later change: decided again, renewed.
                c.set_endpoint(IFINDEX, &record(pod, iso, 1, 10))?;
                assert_eq!(run(&c, first.0, first.1), TCX_NEXT, "{what}: again");
                assert_eq!(run(&c, then.0, then.1), TCX_NEXT, "{what}: again");
            }
        }
    }
    Ok(())
}

/// Flows admitted in audit mode are cut when the pod switches to enforce.
#[test]
fn switching_from_audit_to_enforce_cuts_would_deny_flows() -> Result<()> {
    let (pod, peer) = (ip("10.0.0.1"), ip("10.0.0.2"));
    let audit = EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS | EP_AUDIT_EGRESS;
    let mut c = one_peer(pod, peer, DIR_EGRESS)?;
    // No egress rule; in audit mode the pod's flow passes as would-deny.
    c.set_endpoint(IFINDEX, &record(pod, audit, 0, 1))?;
    let (out, back) = open_flow(&c, pod, peer, true);
    let rules: Vec<u32> = entries(&mut c)?.iter().map(|v| v.rule).collect();
    assert_eq!(rules, vec![RULE_WOULD_DENY]);
    c.set_endpoint(
        IFINDEX,
        &record(pod, EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS, 0, 2),
    )?;
    assert_eq!(run(&c, Hook::Ingress, &back), TCX_DROP, "the answer");
    assert_eq!(run(&c, Hook::Egress, &out), TCX_DROP, "the next segment");
    Ok(())
}

/// A flow the node opened (a kubelet probe, `kubectl port-forward`) stays
/// node traffic across a policy change: node traffic is always allowed.
#[test]
fn node_traffic_survives_a_policy_change() -> Result<()> {
    let (pod, node) = (ip("10.0.0.1"), ip("192.0.2.1"));
    let iso = EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS;
    let mut c = one_peer(pod, ip("10.0.0.2"), DIR_EGRESS)?;
    c.set_identity(node, 32, IDENTITY_HOST)?;
    c.set_endpoint(IFINDEX, &record(pod, iso, 0, 1))?;
    let probe = Packet::tcp(node, pod, 41000, 8080).syn();
    assert_eq!(run(&c, Hook::Ingress, &probe), TCX_NEXT);
    let rules: Vec<u32> = entries(&mut c)?.iter().map(|v| v.rule).collect();
    assert_eq!(rules, vec![RULE_NODE]);
    c.set_endpoint(IFINDEX, &record(pod, iso, 0, 2))?;
    // The pod's answer comes first after the change.
    let answer = Packet::tcp(pod, node, 8080, 41000).tcp_flags(0x12);
    assert_eq!(run(&c, Hook::Egress, &answer), TCX_NEXT, "answer");
    let data = Packet::tcp(node, pod, 41000, 8080);
    assert_eq!(run(&c, Hook::Ingress, &data), TCX_NEXT, "data");
    Ok(())
}

/// A flow cut by a policy change stays cut in both directions, also where
/// the refusing pod's other direction is not isolated: the pod's own next
/// packet (a retransmission, an echo) must not open the flow again, with
/// the peer's packets riding it as replies. A new connection (SYN) on the
/// same ports is decided anew.
#[test]
fn a_cut_flow_is_not_opened_again_by_the_end_whose_other_direction_is_open() -> Result<()> {
    for (pod, peer) in [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")] {
        let (pod, peer) = (ip(pod), ip(peer));
        let mut c = inbound_only(pod, peer)?;
        let ingress_only = |epoch, any_port| {
            let mut ep = record(pod, EP_ISOLATED_INGRESS, 0, epoch);
            ep.ingress.any_port = any_port;
            ep
        };
        c.set_endpoint(IFINDEX, &ingress_only(1, 1))?;
        // The peer opens peer:40000 -> pod:80; the pod answers.
        let open = Packet::tcp(peer, pod, 40000, 80).syn();
        assert_eq!(run(&c, Hook::Ingress, &open), TCX_NEXT);
        let data_in = Packet::tcp(peer, pod, 40000, 80);
        let data_out = Packet::tcp(pod, peer, 80, 40000);
        assert_eq!(run(&c, Hook::Egress, &data_out), TCX_NEXT);
        // The pod's ingress no longer admits the peer.
        c.set_endpoint(IFINDEX, &ingress_only(2, 0))?;
        assert_eq!(run(&c, Hook::Ingress, &data_in), TCX_DROP, "{pod}: cut");
        // The pod's retransmission: its egress is not isolated, but the
        // flow is cut, and the peer's next segment stays refused.
        assert_eq!(run(&c, Hook::Egress, &data_out), TCX_DROP, "{pod}: out");
        assert_eq!(run(&c, Hook::Ingress, &data_in), TCX_DROP, "{pod}: in");
        // A new connection from the pod on those ports is its own.
        let syn = Packet::tcp(pod, peer, 80, 40000).syn();
        assert_eq!(run(&c, Hook::Egress, &syn), TCX_NEXT, "{pod}: new SYN");
    }
    Ok(())
}

/// A pod with a table of its own (`CONNTRACK_POD`) keeps its entries
/// there: opening more flows than it holds evicts its own oldest, and the
/// node-wide table gets none of them.
#[test]
fn a_pod_with_a_table_of_its_own_tracks_its_flows_there() -> Result<()> {
    const ROOM: u32 = 64;
    for (pod, peer) in [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")] {
        let (pod, peer) = (ip(pod), ip(peer));
        let mut c = inbound_only(pod, peer)?;
        let own = c.own_conntrack(0, ROOM)?;
        let flows = 4 * ROOM as u16;
        for port in 0..flows {
            let open = Packet::udp(peer, pod, 1000 + port, 53);
            assert_eq!(run(&c, Hook::Ingress, &open), TCX_NEXT);
        }
        // The reply of the newest flow rides its entry; the pod's egress
        // refuses anything else.
        let newest = Packet::udp(pod, peer, 53, 1000 + flows - 1);
        assert_eq!(run(&c, Hook::Egress, &newest), TCX_NEXT, "{pod}");
        let oldest = Packet::udp(pod, peer, 53, 1000);
        assert_eq!(run(&c, Hook::Egress, &oldest), TCX_DROP, "evicted");
        let held = own.keys().count();
        assert!(held > 0 && held <= ROOM as usize, "{held} entries");
        assert_eq!(c.conntrack()?.keys().count(), 0, "node-wide table");
    }
    Ok(())
}
