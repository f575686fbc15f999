//! Service traffic through BPF_PROG_TEST_RUN (root required): a client's
//! flow to a ClusterIP passes its own egress hook undecided, its egress
//! policy is applied after DNAT at the backend's hook (same node) or at the
//! uplink (`node_egress`, other node), and un-NATed replies reach it.

use std::net::IpAddr;

use anyhow::Result;
use palisade_common::*;
use palisade_tests::classifier::{
    bits, ip_key, netns, packet::Packet, Classifier, DirMaps, Hook, IFINDEX, TCX_DROP, TCX_NEXT,
};

const CLIENT: &str = "10.0.0.1";
const BACKEND: &str = "10.0.0.2";
const OTHER_BACKEND: &str = "10.0.0.3";
const REMOTE: &str = "10.1.0.9";
const CLUSTER_IP: &str = "10.96.0.10";
const HOST: &str = "192.168.0.1";
const ID_BACKEND: u32 = 300;
const ID_OTHER: u32 = 301;
const ID_REMOTE: u32 = 302;
/// The client's host-side interface when the hook under test belongs to
/// another pod: only maps refer to it.
const CLIENT_IFINDEX: u32 = 4242;
const CLIENT_SLOT: u16 = 3;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn endpoint(flags: u32, addr: &str, slot: u16) -> Endpoint {
    let mut ep = Endpoint {
        flags,
        slot,
        ..Default::default()
    };
    ep.addrs[0] = ip_key(ip(addr));
    ep
}

/// Egress of the client on `ifindex`: BACKEND and REMOTE on TCP 80 (group
/// 0); nothing else, ClusterIPs included.
fn client_policy(c: &mut Classifier, ifindex: u32) -> Result<()> {
    c.set_endpoint(ifindex, &endpoint(EP_ISOLATED_EGRESS, CLIENT, CLIENT_SLOT))?;
    c.set_local_addr(ip(CLIENT), ifindex)?;
    c.set_policy(
        PolicyKey {
            ifindex,
            generation: 0,
            direction: DIR_EGRESS,
        },
        &DirMaps {
            identity: vec![(ID_BACKEND, bits(1)), (ID_REMOTE, bits(1))],
            port: vec![(PROTO_TCP, 80, 16, bits(1))],
            ..Default::default()
        },
    )
}

fn harness() -> Result<Classifier> {
    let mut c = Classifier::load()?;
    c.set_identity(ip(BACKEND), 32, ID_BACKEND)?;
    c.set_identity(ip(OTHER_BACKEND), 32, ID_OTHER)?;
    c.set_identity(ip(REMOTE), 32, ID_REMOTE)?;
    c.set_service(ip(CLUSTER_IP), PROTO_TCP, 8080)?;
    Ok(c)
}

fn run(c: &Classifier, hook: Hook, p: &Packet) -> u32 {
    c.run(hook, &p.build())
        .unwrap_or_else(|e| panic!("test run: {e:#}"))
}

#[test]
fn services_client_hook_defers_and_lets_replies_in() -> Result<()> {
    let mut c = harness()?;
    // The client is the hook's own pod, isolated both ways.
    client_policy(&mut c, IFINDEX)?;
    let mut ep = endpoint(
        EP_ISOLATED_EGRESS | EP_ISOLATED_INGRESS,
        CLIENT,
        CLIENT_SLOT,
    );
    ep.generation = 0;
    c.set_endpoint(IFINDEX, &ep)?;
    let to_service = Packet::tcp(ip(CLIENT), ip(CLUSTER_IP), 40000, 8080);
    assert_eq!(run(&c, Hook::Egress, &to_service), TCX_NEXT);
    // Not a Service: the same port on another address is refused.
    let elsewhere = Packet::tcp(ip(CLIENT), ip("10.96.0.11"), 40001, 8080);
    assert_eq!(run(&c, Hook::Egress, &elsewhere), TCX_DROP);
    // Nor is another port or protocol of the ClusterIP: only the Service's
    // own frontends are left to after DNAT.
    let other_port = Packet::tcp(ip(CLIENT), ip(CLUSTER_IP), 40002, 8081);
    assert_eq!(run(&c, Hook::Egress, &other_port), TCX_DROP);
    let other_proto = Packet::udp(ip(CLIENT), ip(CLUSTER_IP), 40003, 8080);
    assert_eq!(run(&c, Hook::Egress, &other_proto), TCX_DROP);
    // The reply, un-NATed, comes from the ClusterIP: the client's ingress
    // (isolated, no rule) lets it in as part of the flow.
    let reply = Packet::tcp(ip(CLUSTER_IP), ip(CLIENT), 8080, 40000);
    assert_eq!(run(&c, Hook::Ingress, &reply), TCX_NEXT);
    let unrelated = Packet::tcp(ip(CLUSTER_IP), ip(CLIENT), 8080, 40009);
    assert_eq!(run(&c, Hook::Ingress, &unrelated), TCX_DROP);
    Ok(())
}

#[test]
fn services_same_node_backend_hook_applies_client_egress() -> Result<()> {
    let mut c = harness()?;
    client_policy(&mut c, CLIENT_IFINDEX)?;
    // The hook's pod is the backend, not isolated; OTHER_BACKEND is another
    // backend the client may not reach.
    c.set_endpoint(IFINDEX, &endpoint(0, BACKEND, 5))?;
    let allowed = Packet::tcp(ip(CLIENT), ip(BACKEND), 40000, 80);
    assert_eq!(run(&c, Hook::Ingress, &allowed), TCX_NEXT);
    assert_eq!(run(&c, Hook::Ingress, &allowed), TCX_NEXT);
    let wrong_port = Packet::tcp(ip(CLIENT), ip(BACKEND), 40001, 81);
    assert_eq!(run(&c, Hook::Ingress, &wrong_port), TCX_DROP);
    c.set_endpoint(IFINDEX, &endpoint(0, OTHER_BACKEND, 5))?;
    let other = Packet::udp(ip(CLIENT), ip(OTHER_BACKEND), 40002, 80);
    assert_eq!(run(&c, Hook::Ingress, &other), TCX_DROP);

    // The denials are the client's egress: its slot, its interface.
    let n = c.counters(CLIENT_SLOT, DIR_EGRESS)?;
    assert_eq!(n.denied_packets, 2);
    let events = c.events()?;
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        assert_eq!(
            (e.ifindex, e.direction, e.verdict),
            (CLIENT_IFINDEX, DIR_EGRESS, VERDICT_DENIED)
        );
        assert_eq!(e.src, ip_key(ip(CLIENT)));
    }
    assert_eq!(events[0].dport, 81);
    // The backend's own ingress counted only what it let in.
    let b = c.counters(5, DIR_INGRESS)?;
    assert_eq!((b.allowed_packets, b.denied_packets), (2, 0));
    Ok(())
}

#[test]
fn services_direct_flows_are_not_checked_twice() -> Result<()> {
    let mut c = harness()?;
    netns::in_private_netns(|| {
        let (client_if, _) = netns::veth("pl-svc-a", "pl-svc-b")?;
        client_policy(&mut c, client_if)?;
        c.set_endpoint(IFINDEX, &endpoint(0, BACKEND, 5))?;
        // Decided at the client's own hook: allowed there.
        let flow = Packet::tcp(ip(CLIENT), ip(BACKEND), 40000, 80).build();
        assert_eq!(c.run_on(Hook::Egress, &flow, client_if)?, TCX_NEXT);
        // The client's policy now refuses everything. The backend's hook
        // finds the flow decided at the client's hook and does not decide
        // it again; a new flow is checked (and refused).
        c.set_policy(
            PolicyKey {
                ifindex: client_if,
                generation: 0,
                direction: DIR_EGRESS,
            },
            &DirMaps::default(),
        )?;
        assert_eq!(c.run(Hook::Ingress, &flow)?, TCX_NEXT);
        let fresh = Packet::tcp(ip(CLIENT), ip(BACKEND), 40001, 80).build();
        assert_eq!(c.run(Hook::Ingress, &fresh)?, TCX_DROP);
        Ok(())
    })
}

#[test]
fn services_uplink_applies_client_egress_to_remote_backends() -> Result<()> {
    let mut c = harness()?;
    client_policy(&mut c, CLIENT_IFINDEX)?;
    let allowed = Packet::tcp(ip(CLIENT), ip(REMOTE), 40000, 80);
    assert_eq!(run(&c, Hook::Uplink, &allowed), TCX_NEXT);
    assert_eq!(run(&c, Hook::Uplink, &allowed), TCX_NEXT);
    let denied = Packet::tcp(ip(CLIENT), ip(REMOTE), 40001, 443);
    assert_eq!(run(&c, Hook::Uplink, &denied), TCX_DROP);
    // Replies and the host's own traffic are not the client's egress.
    let reply = Packet::tcp(ip(REMOTE), ip(CLIENT), 443, 40001);
    assert_eq!(run(&c, Hook::Uplink, &reply), TCX_NEXT);
    let host = Packet::tcp(ip(HOST), ip(REMOTE), 40002, 443);
    assert_eq!(run(&c, Hook::Uplink, &host), TCX_NEXT);
    assert_eq!(c.counters(CLIENT_SLOT, DIR_EGRESS)?.denied_packets, 1);
    Ok(())
}

#[test]
fn services_uplink_audit_passes_would_deny() -> Result<()> {
    let mut c = harness()?;
    client_policy(&mut c, CLIENT_IFINDEX)?;
    c.set_endpoint(
        CLIENT_IFINDEX,
        &endpoint(EP_ISOLATED_EGRESS | EP_AUDIT_EGRESS, CLIENT, CLIENT_SLOT),
    )?;
    let refused = Packet::tcp(ip(CLIENT), ip(REMOTE), 40001, 443);
    assert_eq!(run(&c, Hook::Uplink, &refused), TCX_NEXT);
    assert_eq!(c.counters(CLIENT_SLOT, DIR_EGRESS)?.would_deny_packets, 1);
    let events = c.events()?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].verdict, VERDICT_WOULD_DENY);
    Ok(())
}

/// A flow masqueraded to the node's address (kube-proxy's hairpin or
/// masqueradeAll rules, ip-masq-agent, a CNI's natOutgoing) no longer
/// carries its client's source: the client is the pod whose interface the
/// packet came in on, at the backend's hook and at the uplink alike.
#[test]
fn services_masqueraded_flows_are_still_their_clients() -> Result<()> {
    let mut c = harness()?;
    client_policy(&mut c, CLIENT_IFINDEX)?;
    c.set_endpoint(IFINDEX, &endpoint(0, BACKEND, 5))?;
    let masq = |dport, sport| Packet::tcp(ip(HOST), ip(BACKEND), sport, dport).build();
    let via = |hook, frame: &[u8], iif| c.run_forwarded(hook, frame, iif).unwrap();
    // Same node: allowed port in, refused port dropped.
    assert_eq!(
        via(Hook::Ingress, &masq(80, 41000), CLIENT_IFINDEX),
        TCX_NEXT
    );
    assert_eq!(
        via(Hook::Ingress, &masq(81, 41001), CLIENT_IFINDEX),
        TCX_DROP
    );
    // The node's own packet (no receiving device) is nobody's egress.
    assert_eq!(via(Hook::Ingress, &masq(81, 41002), 0), TCX_NEXT);
    // Another node: the uplink decides the same way.
    let remote = |dport, sport| Packet::tcp(ip(HOST), ip(REMOTE), sport, dport).build();
    assert_eq!(
        via(Hook::Uplink, &remote(80, 41003), CLIENT_IFINDEX),
        TCX_NEXT
    );
    assert_eq!(
        via(Hook::Uplink, &remote(443, 41004), CLIENT_IFINDEX),
        TCX_DROP
    );
    assert_eq!(c.counters(CLIENT_SLOT, DIR_EGRESS)?.denied_packets, 2);
    Ok(())
}
