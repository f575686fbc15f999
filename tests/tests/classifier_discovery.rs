//! IPv6 neighbour and multicast listener discovery on crafted frames
//! (BPF_PROG_TEST_RUN). They pass every pod, pending ones included, as ARP
//! does, but only while they stay on the pod's link: a pod must not use
//! the exemption to send ICMPv6 of those types, with any payload, to
//! anywhere its policy refuses.

use std::net::IpAddr;

use anyhow::Result;
use palisade_common::*;
use palisade_tests::classifier::{
    packet::Packet, pod_on_node, Classifier, Hook, IFINDEX, TCX_DROP, TCX_NEXT,
};

const POD6: &str = "fd00::1";
/// Another pod of this node (`LOCAL_ADDRS`).
const NEIGHBOUR6: &str = "fd00::2";
/// A pod of another node, or anything off the link.
const FAR6: &str = "fd00:9::7";
const NODE6: &str = "2001:db8::1";
const SOLICITED: &str = "ff02::1:ff00:2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A pod with `flags` and no rule at all, beside NEIGHBOUR6 on a node with
/// NODE6.
fn setup(flags: u32) -> Result<Classifier> {
    let mut c = pod_on_node(flags, &[ip(POD6)], &[ip(NODE6)])?;
    c.set_local_addr(ip(NEIGHBOUR6), IFINDEX + 1)?;
    Ok(c)
}

fn pass(c: &Classifier, hook: Hook, p: &Packet) -> bool {
    match c.run(hook, &p.build()).unwrap() {
        TCX_NEXT => true,
        TCX_DROP => false,
        other => panic!("unexpected verdict {other}"),
    }
}

/// What a pod's stack sends: solicitations to solicited-node multicast or
/// to a neighbour it already knows (NUD), advertisements back to the
/// soliciting address, router solicitations, MLD reports.
fn on_link_egress() -> Vec<(&'static str, Packet)> {
    vec![
        (
            "NS to solicited-node",
            Packet::nd(ip(POD6), ip(SOLICITED), 135),
        ),
        ("DAD NS", Packet::nd(ip("::"), ip(SOLICITED), 135)),
        ("NUD NS to the node", Packet::nd(ip(POD6), ip(NODE6), 135)),
        (
            "NA to a neighbour pod",
            Packet::nd(ip(POD6), ip(NEIGHBOUR6), 136),
        ),
        ("NA to link-local", Packet::nd(ip(POD6), ip("fe80::1"), 136)),
        (
            "RS to all-routers",
            Packet::nd(ip("fe80::5"), ip("ff02::2"), 133),
        ),
        (
            "MLDv2 report",
            Packet::mld(ip("fe80::5"), ip("ff02::16"), 143),
        ),
        (
            "MLDv1 report",
            Packet::mld(ip("fe80::5"), ip("ff05::1:3"), 131),
        ),
    ]
}

/// The same types where the node would forward them: off the link, with
/// a routable hop limit, to a wider multicast scope.
fn off_link_egress() -> Vec<(&'static str, Packet)> {
    vec![
        ("NA to a far pod", Packet::nd(ip(POD6), ip(FAR6), 136)),
        ("NS to a far pod", Packet::nd(ip(POD6), ip(FAR6), 135)),
        (
            "NA to link-local, hop limit 64",
            Packet::nd(ip(POD6), ip("fe80::1"), 136).hop_limit(64),
        ),
        (
            "NS to a neighbour pod, hop limit 64",
            Packet::nd(ip(POD6), ip(NEIGHBOUR6), 135).hop_limit(64),
        ),
        (
            "RA to site-scope multicast",
            Packet::nd(ip(POD6), ip("ff05::1"), 134),
        ),
        (
            "MLD report to a far pod",
            Packet::mld(ip(POD6), ip(FAR6), 131),
        ),
        (
            "MLD report, hop limit 255",
            Packet::mld(ip(POD6), ip("ff02::16"), 143).hop_limit(255),
        ),
    ]
}

#[test]
fn link_scoped_discovery_passes_even_a_pending_pod() -> Result<()> {
    let c = setup(EP_PENDING)?;
    for (what, p) in on_link_egress() {
        assert!(pass(&c, Hook::Egress, &p), "{what}");
    }
    // Inbound: the node's (or a bridge neighbour's) advertisements and
    // solicitations arrive with hop limit 255 whatever the destination.
    let na = Packet::nd(ip(NODE6), ip(POD6), 136);
    assert!(pass(&c, Hook::Ingress, &na), "NA to the pod");
    let ra = Packet::nd(ip("fe80::1"), ip("ff02::1"), 134);
    assert!(pass(&c, Hook::Ingress, &ra), "RA to all-nodes");
    Ok(())
}

#[test]
fn discovery_off_the_link_is_judged_like_any_icmpv6() -> Result<()> {
    // Pending: dropped.
    let c = setup(EP_PENDING)?;
    for (what, p) in off_link_egress() {
        assert!(!pass(&c, Hook::Egress, &p), "pending: {what}");
    }
    // A forwarded advertisement (hop limit 254) into a pending pod.
    let na = Packet::nd(ip(FAR6), ip(POD6), 136).hop_limit(254);
    assert!(!pass(&c, Hook::Ingress, &na), "forwarded NA");

    // Isolated for egress with no rule: refused, and reported as policy.
    let mut c = setup(EP_ISOLATED_EGRESS | EP_ISOLATED_INGRESS)?;
    c.set_events(CONFIG_EVENTS_DENIED)?;
    for (what, p) in off_link_egress() {
        assert!(!pass(&c, Hook::Egress, &p), "isolated: {what}");
    }
    assert!(!pass(&c, Hook::Ingress, &na), "isolated: forwarded NA");
    let events = c.events()?;
    assert!(
        events.iter().any(|e| e.reason == REASON_POLICY),
        "{events:?}"
    );
    // Not isolated: ordinary ICMPv6 is allowed, so these pass too.
    let c = setup(0)?;
    for (what, p) in off_link_egress() {
        assert!(pass(&c, Hook::Egress, &p), "not isolated: {what}");
    }
    Ok(())
}
