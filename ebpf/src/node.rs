//! `node_egress`, at TC egress of the node's uplink (or tunnel) device:
//! the egress check of local clients whose flows left their own hook
//! undecided because they went to a Service ClusterIP, now that DNAT has
//! named a backend on another node (`deferred.rs`). Everything else passes
//! on to the next program: traffic of the host, forwarded traffic, and flows
//! already decided at the client's hook (found in conntrack).
//!
//! ICMP errors, neighbour and multicast listener discovery and non-first
//! fragments pass: the client's own hook checked them against its
//! conntrack, link scope and fragment state.

use aya_ebpf::bindings::tcx_action_base::TCX_DROP;
use aya_ebpf::{bindings::tcx_action_base::TCX_NEXT, programs::TcContext};

use crate::{
    conntrack, deferred,
    parse::{self, FRAG_LATER, ICMP_ERROR, ICMP_MLD, ICMP_NDP, L2},
    policy, scratch,
};

#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let ip = parse::l2(ctx);
    let Some(s) = scratch::get() else {
        return TCX_NEXT;
    };
    match ip {
        L2::V4 => parse::ipv4(ctx, s),
        L2::V6 => parse::ipv6(ctx, s),
        _ => return TCX_NEXT,
    }
    let p = &s.pkt;
    if !p.l3_ok
        || p.malformed
        || p.frag == FRAG_LATER
        || matches!(p.icmp, ICMP_ERROR | ICMP_NDP | ICMP_MLD)
    {
        return TCX_NEXT;
    }
    let ingress_ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    let Some(c) = deferred::client(ingress_ifindex, &p.tuple.src, ifindex) else {
        return TCX_NEXT;
    };
    let t = &s.pkt.tuple;
    policy::fill_keys(&t.dst, t.proto, t.dport, &mut s.ip, &mut s.port);
    let t = &mut s.pkt.tuple;
    let swapped = conntrack::normalize(t);
    if deferred::decide(&c, t, swapped, &s.ip, &s.port, ctx.len() as u64) {
        TCX_NEXT
    } else {
        TCX_DROP
    }
}
