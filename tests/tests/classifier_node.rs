//! Node traffic on crafted frames (BPF_PROG_TEST_RUN): a pod and its own
//! node may always talk, whatever the policy, but only a packet the node
//! itself sent counts as the node's at pod ingress.

use std::net::IpAddr;

use anyhow::Result;
use palisade_common::*;
use palisade_tests::classifier::{
    bits, packet::Packet, pod_on_node, Classifier, DirMaps, Hook, IFINDEX, TCX_DROP, TCX_NEXT,
};

const POD4: &str = "10.0.0.1";
const POD6: &str = "fd00::1";
const NODE4: &str = "192.0.2.1";
const NODE6: &str = "2001:db8::1";
const WORLD4: &str = "198.51.100.7";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A pod with `flags` and no rule at all (isolated: default deny), whose
/// node has NODE4 and NODE6.
fn setup(flags: u32) -> Result<Classifier> {
    pod_on_node(flags, &[ip(POD4), ip(POD6)], &[ip(NODE4), ip(NODE6)])
}

fn pass(v: u32) -> bool {
    match v {
        TCX_NEXT => true,
        TCX_DROP => false,
        other => panic!("unexpected verdict {other}"),
    }
}

#[test]
fn node_traffic_passes_default_deny_both_ways_and_opens_a_flow() -> Result<()> {
    let mut c = setup(EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS)?;
    for (node, pod) in [(NODE4, POD4), (NODE6, POD6)] {
        let (node, pod) = (ip(node), ip(pod));
        // A kubelet probe and its answer.
        let probe = Packet::tcp(node, pod, 41000, 8080).build();
        assert!(pass(c.run(Hook::Ingress, &probe)?), "probe from {node}");
        let answer = Packet::tcp(pod, node, 8080, 41000).build();
        assert!(pass(c.run(Hook::Egress, &answer)?), "answer to {node}");
        // The pod may open connections to its node too (any port, ICMP).
        let to_node = Packet::udp(pod, node, 42000, 10250).build();
        assert!(pass(c.run(Hook::Egress, &to_node)?), "pod to {node}");
    }
    // The flow the node opened is tracked under the node rule.
    let rules: Vec<u32> = c
        .conntrack()?
        .iter()
        .map(|kv| kv.map(|(_, v)| v.rule))
        .collect::<Result<_, _>>()?;
    assert!(!rules.is_empty());
    assert!(rules.iter().all(|r| *r == RULE_NODE), "{rules:?}");
    // Others are still refused.
    let world = Packet::tcp(ip(WORLD4), ip(POD4), 41001, 8080).build();
    assert!(!pass(c.run(Hook::Ingress, &world)?));
    let out = Packet::tcp(ip(POD4), ip(WORLD4), 41002, 443).build();
    assert!(!pass(c.run(Hook::Egress, &out)?));
    Ok(())
}

#[test]
fn a_forwarded_packet_with_a_node_source_is_judged_by_policy() -> Result<()> {
    let c = setup(EP_ISOLATED_INGRESS)?;
    let probe = Packet::tcp(ip(NODE4), ip(POD4), 41000, 8080).build();
    // Received on device 7 and forwarded (masqueraded to the node's address,
    // or forged from off the node): not the node's own traffic.
    assert!(!pass(c.run_forwarded(Hook::Ingress, &probe, 7)?));
    // The same packet sent by the node itself passes.
    assert!(pass(c.run_forwarded(Hook::Ingress, &probe, 0)?));
    Ok(())
}

#[test]
fn node_traffic_never_lifts_pending_or_anti_spoofing() -> Result<()> {
    let c = setup(EP_PENDING)?;
    let probe = Packet::tcp(ip(NODE4), ip(POD4), 41000, 8080).build();
    assert!(!pass(c.run(Hook::Ingress, &probe)?), "pending drops all");
    let c = setup(EP_ISOLATED_EGRESS)?;
    // A pod claiming another source towards its node is still a spoofer.
    let forged = Packet::tcp(ip(WORLD4), ip(NODE4), 41000, 10250).build();
    assert!(!pass(c.run(Hook::Egress, &forged)?));
    Ok(())
}

/// Tunnel packets to the node, as a decapsulating device (tunl0, a VXLAN
/// or Geneve device) would take them in: IPIP, IPv6-in-IP, GRE and
/// MPLS-in-IP, and UDP to the VXLAN and Geneve ports.
fn tunnel_packets(pod: IpAddr, node: IpAddr) -> Vec<(String, Packet)> {
    let mut out: Vec<(String, Packet)> = [4u8, 41, 47, 137]
        .into_iter()
        .map(|proto| {
            (
                format!("protocol {proto}"),
                Packet::raw(pod, node, proto, vec![0; 40]),
            )
        })
        .collect();
    for port in [4789, 8472, 6081] {
        out.push((format!("UDP {port}"), Packet::udp(pod, node, 40000, port)));
    }
    out
}

/// A pod is a packet's sender only on the outer header: an encapsulated
/// packet to its node, decapsulated there, would arrive at any pod with
/// any source. It is never node traffic.
#[test]
fn tunnel_packets_to_the_node_are_not_node_traffic() -> Result<()> {
    for (pod, node) in [(POD4, NODE4), (POD6, NODE6)] {
        let (pod, node) = (ip(pod), ip(node));
        // Not isolated: no rule could allow them, dropped and reported.
        let mut c = setup(0)?;
        c.set_events(CONFIG_EVENTS_DENIED)?;
        for (what, p) in tunnel_packets(pod, node) {
            assert!(!pass(c.run(Hook::Egress, &p.build())?), "{node}: {what}");
        }
        let events = c.events()?;
        assert!(
            events.iter().any(|e| e.reason == REASON_ENCAP),
            "{events:?}"
        );
        // Elsewhere, and other traffic to the node, as before.
        for (what, p) in tunnel_packets(pod, ip(if pod.is_ipv4() { WORLD4 } else { "fd00:9::7" })) {
            assert!(pass(c.run(Hook::Egress, &p.build())?), "elsewhere: {what}");
        }
        let dns = Packet::udp(pod, node, 40000, 53).build();
        assert!(pass(c.run(Hook::Egress, &dns)?), "{node}: DNS");

        // Isolated with no rule: other node traffic passes, tunnels do not.
        let c = setup(EP_ISOLATED_EGRESS)?;
        for (what, p) in tunnel_packets(pod, node) {
            assert!(
                !pass(c.run(Hook::Egress, &p.build())?),
                "isolated {node}: {what}"
            );
        }
        assert!(pass(c.run(Hook::Egress, &dns)?), "isolated {node}: DNS");
    }
    Ok(())
}

/// A rule of the pod's egress policy whose ipBlock covers the node allows
/// tunnel packets to it: the operator asked for them.
#[test]
fn an_egress_rule_to_the_node_allows_tunnel_packets() -> Result<()> {
    let mut c = setup(EP_ISOLATED_EGRESS)?;
    let mut ep = Endpoint {
        flags: EP_ISOLATED_EGRESS,
        ..Default::default()
    };
    ep.addrs[0] = palisade_tests::classifier::ip_key(ip(POD4));
    ep.addrs[1] = palisade_tests::classifier::ip_key(ip(POD6));
    ep.egress.any_port = 0b1;
    c.set_endpoint(IFINDEX, &ep)?;
    let maps = DirMaps {
        cidr: vec![(ip(NODE4), 32, bits(0b1)), (ip(NODE6), 128, bits(0b1))],
        ..Default::default()
    };
    let key = PolicyKey {
        ifindex: IFINDEX,
        generation: 0,
        direction: DIR_EGRESS,
    };
    c.set_policy(key, &maps)?;
    for (pod, node) in [(POD4, NODE4), (POD6, NODE6)] {
        for (what, p) in tunnel_packets(ip(pod), ip(node)) {
            assert!(pass(c.run(Hook::Egress, &p.build())?), "{node}: {what}");
        }
    }
    Ok(())
}
