//! The check one hook makes: the pod's ingress policy at TC egress of its
//! host-side interface, its egress policy (plus anti-spoofing) at TC ingress.

use aya_ebpf::{
    bindings::tcx_action_base::{TCX_DROP, TCX_NEXT},
    programs::TcContext,
};
use palisade_common::{
    Endpoint, IpKey, DIR_EGRESS, DIR_INGRESS, EP_AUDIT_EGRESS, EP_AUDIT_INGRESS, EP_DENY_ALL,
    EP_ISOLATED_EGRESS, EP_ISOLATED_INGRESS, EP_PENDING, FAMILY_V6, IDENTITY_HOST, PROTO_ICMPV6,
    PROTO_UDP, REASON_ENCAP, REASON_FRAGMENT, REASON_MALFORMED, REASON_PENDING, REASON_POLICY,
    REASON_SPOOF, RULE_NOT_ISOLATED, RULE_SERVICE, RULE_WOULD_DENY, SLOT_UNKNOWN,
};

use crate::{
    account::{self, Verdict},
    conntrack::{self, CUT, REDO_NODE, REDO_REPLY, REDO_STALE, STALE},
    deferred,
    events::{self, Source},
    fast, frag,
    maps::{record, LOCAL_ADDRS},
    parse::{self, Tuple, FRAG_FIRST, FRAG_LATER, ICMP_ERROR, ICMP_MLD, ICMP_NDP, L2},
    policy,
    scratch::{self, Scratch},
};

/// The verdict of an allowed packet: on to the next program of the
/// interface's TCX chain, not `TCX_PASS`, which would end the chain and
/// hide the packet from whatever is attached after Palisade (a bandwidth
/// or observability program). The agent attaches Palisade first, so a
/// program before it cannot pass a packet around it. At the end of the
/// chain `TCX_NEXT` passes the packet.
pub const ALLOW: i32 = TCX_NEXT;

/// One run of a hook on one packet: where its events and counts go.
struct Hook {
    src: Source,
    len: u64,
}

impl Hook {
    /// Drops the packet: counted and reported.
    #[inline(always)]
    fn drop(&self, reason: u32, t: &Tuple) -> i32 {
        events::deny(&self.src, reason, t);
        account::packet(self.src.slot, self.src.dir, Verdict::Denied, self.len);
        TCX_DROP
    }

    /// Passes a packet whose flow has no rule to count (NDP, fragments,
    /// packets without a readable header in a direction not isolated).
    #[inline(always)]
    fn pass(&self) -> i32 {
        account::packet(self.src.slot, self.src.dir, Verdict::Allowed, self.len);
        ALLOW
    }

    /// Refuses the packet for `reason` on behalf of the isolation or of a
    /// cluster Deny (`result`, a check's result naming its rule): dropped,
    /// or passed as would-deny when the isolation is in audit mode.
    #[inline(always)]
    fn refuse(&self, audit: bool, reason: u32, result: Option<u32>, t: &Tuple) -> i32 {
        if !audit {
            events::denied(&self.src, reason, result, t);
            account::denied(self.src.slot, self.src.dir, result, self.len);
            return TCX_DROP;
        }
        events::flow(&self.src, reason, RULE_WOULD_DENY, t);
        account::packet(self.src.slot, self.src.dir, Verdict::WouldDeny, self.len);
        ALLOW
    }
}

#[inline(always)]
fn same_addr(a: &IpKey, b: &IpKey) -> bool {
    a.family == b.family && a.addr == b.addr
}

/// Whether an ICMP error goes back to the sender of the packet it quotes.
/// Out of line: it needs no stack, and inlined it pushed the general
/// path's frame past the verifier's combined 512-byte limit.
#[inline(never)]
fn goes_back(p: &parse::Packet) -> bool {
    same_addr(&p.quoted.src, &p.tuple.dst)
}

#[inline(always)]
fn own_addr(ep: &Endpoint, a: &IpKey) -> bool {
    same_addr(&ep.addrs[0], a) || same_addr(&ep.addrs[1], a)
}

/// Neighbour discovery is sent from the unspecified address (duplicate
/// address detection) or a link-local address, which the endpoint record
/// does not list; any other source must still be the pod's own.
#[inline(always)]
fn ndp_source_ok(ep: Option<&Endpoint>, a: &IpKey) -> bool {
    if a.family != FAMILY_V6 {
        return false;
    }
    let unspecified = a.addr == [0u8; 16];
    let link_local = a.addr[0] == 0xfe && a.addr[1] & 0xc0 == 0x80;
    unspecified || link_local || ep.is_some_and(|ep| own_addr(ep, a))
}

/// Whether a neighbour or multicast listener discovery message stays on the
/// pod's link, and so is IPv6's ARP rather than a packet to judge: ND with
/// hop limit 255 (RFC 4861 has receivers drop any other, so a router never
/// forwarded it), MLD with hop limit 1 to a multicast group (RFC 2710, 3810).
/// At pod egress the destination must be link-local (unicast or link-scope
/// multicast) or on the link: the node or one of its pods. Anything else
/// the node would forward, one hop down, to wherever the pod chose, payload
/// included: judged like any ICMPv6 packet. Out of line, with no stack.
#[inline(never)]
fn link_scoped(s: &mut Scratch, dir: u32) -> bool {
    let p = &s.pkt;
    let d = &p.tuple.dst.addr;
    let multicast = d[0] == 0xff;
    if p.icmp == ICMP_MLD {
        return p.hop_limit == 1 && multicast;
    }
    if p.hop_limit != 255 {
        return false;
    }
    let link_local = d[0] == 0xfe && d[1] & 0xc0 == 0x80;
    if link_local || (multicast && d[1] & 0x0f == 2) || dir == DIR_INGRESS {
        return true;
    }
    if multicast {
        return false;
    }
    if to_node(s) {
        return true;
    }
    // By reference: a copy of the key would take stack there is none of.
    let dst = &s.pkt.tuple.dst;
    unsafe { LOCAL_ADDRS.get(dst) }.is_some()
}

/// Whether the packet's destination is an address of this node. Builds the
/// key in the scratch: its callers have no stack left.
#[inline(never)]
fn to_node(s: &mut Scratch) -> bool {
    s.ip.prefix_len = policy::IP_KEY_BITS;
    s.ip.data = s.pkt.tuple.dst;
    policy::identity(&s.ip) == IDENTITY_HOST
}

/// IP-in-IP, IPv6-in-IP, GRE and MPLS-in-IP.
const TUNNEL_PROTOCOLS: [u8; 4] = [4, 41, 47, 137];

/// VXLAN (IANA's port, and the Linux and flannel default) and Geneve.
#[inline(always)]
pub fn tunnel_port(port: u16) -> bool {
    matches!(port, 4789 | 8472 | 6081)
}

/// Whether the packet is a tunnel packet a decapsulating device of the node
/// would take in, and so could carry a packet with any source past the
/// sender's anti-spoofing. It is never node traffic: to the node it passes
/// only by a rule of the sender's egress policy.
#[inline(always)]
fn encapsulated(t: &Tuple) -> bool {
    TUNNEL_PROTOCOLS.contains(&t.proto) || (t.proto == PROTO_UDP && tunnel_port(t.dport))
}

/// Whether the endpoint with `flags` is isolated in direction `dir`.
#[inline(always)]
pub fn isolated(flags: u32, dir: u32) -> bool {
    let iso_flag = if dir == DIR_INGRESS {
        EP_ISOLATED_INGRESS
    } else {
        EP_ISOLATED_EGRESS
    };
    flags & iso_flag != 0
}

/// Whether the isolation of direction `dir` is in audit mode.
#[inline(always)]
pub fn audited(flags: u32, dir: u32) -> bool {
    let audit_flag = if dir == DIR_INGRESS {
        EP_AUDIT_INGRESS
    } else {
        EP_AUDIT_EGRESS
    };
    flags & audit_flag != 0
}

#[inline(always)]
pub fn run(ctx: &TcContext, dir: u32) -> i32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if let Some(verdict) = fast::run(ctx, dir, ifindex) {
        return verdict;
    }
    general(ctx, dir, ifindex)
}

/// Every packet the fast path (`fast.rs`) leaves: IPv4 with options or
/// fragmented, IPv6 with extension headers, protocols other than TCP and
/// UDP, VLAN tags, headers outside the linear skb data or cut short, and
/// endpoints missing, pending or denying all, or spoofed sources. Its reads
/// go through `bpf_skb_load_bytes` into the per-CPU scratch. Kept out of
/// line so that the fast path's code and stack stay its own.
#[inline(never)]
fn general(ctx: &TcContext, dir: u32, ifindex: u32) -> i32 {
    let ip = match parse::l2(ctx) {
        L2::NotIp => return ALLOW,
        l2 => l2,
    };
    // Only fails if the per-CPU array is missing, which cannot happen once
    // loaded; failing closed keeps it honest anyway.
    let Some(s) = scratch::get() else {
        return TCX_DROP;
    };
    match ip {
        L2::V4 => parse::ipv4(ctx, s),
        L2::V6 => parse::ipv6(ctx, s),
        // A tagged frame: treated as an unreadable IP header (`l3_ok` false).
        _ => parse::reset(&mut s.pkt),
    }
    let ep = record(ifindex);
    let h = Hook {
        src: Source {
            slot: ep.map_or(SLOT_UNKNOWN, |e| e.slot as u32),
            ifindex,
            dir,
            generation: ep.map_or(0, |e| e.generation),
        },
        len: ctx.len() as u64,
    };
    // Neighbour discovery is IPv6's ARP: on the link it passes like ARP.
    let p = &s.pkt;
    let discovery = p.l3_ok
        && !p.malformed
        && matches!(p.icmp, ICMP_NDP | ICMP_MLD)
        && p.tuple.proto == PROTO_ICMPV6;
    if discovery && link_scoped(s, dir) {
        let t = &s.pkt.tuple;
        if dir == DIR_EGRESS && !ndp_source_ok(ep, &t.src) {
            return h.drop(REASON_SPOOF, t);
        }
        return h.pass();
    }
    // When `l3_ok` is false the parser left the tuple zeroed: events then
    // report no addresses.
    let p = &s.pkt;
    let t = &p.tuple;

    // Fail closed: no record yet, pending, or deny-all.
    let Some(ep) = ep else {
        return h.drop(REASON_PENDING, t);
    };
    let flags = ep.flags;
    if flags & EP_PENDING != 0 {
        return h.drop(REASON_PENDING, t);
    }
    if flags & EP_DENY_ALL != 0 {
        return h.drop(REASON_POLICY, t);
    }
    let isolated = isolated(flags, dir);
    let audit = audited(flags, dir);

    if !p.l3_ok {
        // At pod egress the source cannot be verified: dropped whatever the
        // policy says.
        if dir == DIR_EGRESS {
            return h.drop(REASON_MALFORMED, t);
        }
        if isolated {
            return h.refuse(audit, REASON_MALFORMED, None, t);
        }
        return h.pass();
    }
    if dir == DIR_EGRESS && !own_addr(ep, &t.src) {
        return h.drop(REASON_SPOOF, t);
    }
    if p.malformed {
        if isolated {
            return h.refuse(audit, REASON_MALFORMED, None, t);
        }
        return h.pass();
    }
    if p.frag == FRAG_LATER {
        let id = p.frag_id;
        let proto = s.pkt.frag_proto;
        if !isolated
            || frag::verdict(
                &mut s.frag,
                h.src.slot as u16,
                ifindex,
                id,
                proto,
                &s.pkt.tuple,
            ) == Some(true)
        {
            return h.pass();
        }
        return h.refuse(audit, REASON_FRAGMENT, None, &s.pkt.tuple);
    }
    // A pod with no egress policy has no rule that could allow a tunnel
    // packet to the node.
    if dir == DIR_EGRESS && !isolated && encapsulated(&s.pkt.tuple) && to_node(s) {
        return h.drop(REASON_ENCAP, &s.pkt.tuple);
    }
    s.ingress_ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    decide(&h, ep, s)
}

/// At a pod's ingress, the egress check of a client on this node that was
/// left to after DNAT (`deferred.rs`). False to drop. The tuple is left as
/// it came, with the hook's ifindex.
#[inline(always)]
fn deferred_pass(h: &Hook, s: &mut Scratch) -> bool {
    let Some(c) = deferred::client(s.ingress_ifindex, &s.pkt.tuple.src, h.src.ifindex) else {
        return true;
    };
    let t = &s.pkt.tuple;
    policy::fill_keys(&t.dst, t.proto, t.dport, &mut s.ip, &mut s.port);
    let t = &mut s.pkt.tuple;
    let swapped = conntrack::normalize(t);
    let pass = deferred::decide(&c, t, swapped, &s.ip, &s.port, h.len);
    if swapped {
        conntrack::reverse(t);
    }
    t.ifindex = h.src.ifindex;
    pass
}

/// Whether a peer with a node address would really be the pod's node: at
/// pod egress any packet to a node address is delivered to the node; at pod
/// ingress a packet with a node source counts only when the node sent it,
/// not when it was forwarded (a flow masqueraded to the node's address, or
/// forged off the node, is still judged by policy).
#[inline(always)]
pub fn node_ok(dir: u32, local_origin: bool) -> bool {
    dir == DIR_EGRESS || local_origin
}

/// Whether the parsed packet's destination (address, protocol, port) is a
/// Service frontend; the key is built in the scratch.
#[inline(always)]
fn service(s: &mut Scratch) -> bool {
    let t = &s.pkt.tuple;
    s.service.addr = t.dst;
    s.service.proto = t.proto;
    s.service.port_be = t.dport.to_be_bytes();
    deferred::service(&s.service)
}

/// Conntrack, then policy, for a parsed, non-spoofed packet that is whole or
/// a first fragment.
///
/// A flow whose entry was allowed under an earlier policy epoch is decided
/// again as if it were new, in the direction of the packet that opened it:
/// a reply is turned around (tuple reversed, the other direction's policy)
/// and turned back before it passes. A flow the new policy refuses is cut
/// at this packet and its entry forgotten; one it allows gets a fresh entry.
#[inline(always)]
fn decide(h: &Hook, ep: &Endpoint, s: &mut Scratch) -> i32 {
    let (ifindex, dir) = (h.src.ifindex, h.src.dir);
    let error = s.pkt.icmp == ICMP_ERROR;
    let found = if error {
        // An error belongs to the connection of the packet it quotes, and
        // goes back to that packet's sender: one sent anywhere else (a pod
        // quoting an allowed flow to reach a peer its policy refuses) is
        // judged by policy like any packet. So is one of a flow whose entry
        // is of an earlier epoch, until the flow's own next packet.
        let quoted = s.pkt.has_quoted && goes_back(&s.pkt);
        let found = match quoted {
            true => conntrack::known(ifindex, &mut s.pkt.quoted, 0, ep, &mut s.redo),
            false => None,
        };
        s.redo = 0;
        found.filter(|r| *r != STALE)
    } else {
        let seen = conntrack::tcp_seen(s.pkt.tcp_flags);
        conntrack::known(ifindex, &mut s.pkt.tuple, seen, ep, &mut s.redo)
    };
    if let Some(rule) = found.filter(|r| *r != STALE) {
        if rule == CUT {
            return h.drop(REASON_POLICY, &s.pkt.tuple);
        }
        account::flow(h.src.slot, dir, rule, h.len);
        record_first_fragment(s, h.src.slot as u16, ifindex);
        return ALLOW;
    }
    let pdir = if s.redo & REDO_REPLY != 0 {
        conntrack::reverse(&mut s.pkt.tuple);
        dir ^ 1
    } else {
        if dir == DIR_INGRESS && !error && !deferred_pass(h, s) {
            return TCX_DROP;
        }
        dir
    };
    decide_new(h, ep, pdir, s)
}

/// Policy for a packet no live entry of the current epoch passed, in
/// direction `pdir`: the hook's, or for a reply of a flow decided again
/// (`REDO_REPLY`, its tuple reversed by the caller) the direction of the
/// packet that opened it.
#[inline(always)]
fn decide_new(h: &Hook, ep: &Endpoint, pdir: u32, s: &mut Scratch) -> i32 {
    let (ifindex, dir) = (h.src.ifindex, h.src.dir);
    let error = s.pkt.icmp == ICMP_ERROR;
    let isolated = crate::hook::isolated(ep.flags, pdir);
    let t = &s.pkt.tuple;
    let rule = if !isolated {
        RULE_NOT_ISOLATED
    } else {
        let peer = if pdir == DIR_INGRESS { &t.src } else { &t.dst };
        policy::fill_keys(peer, t.proto, t.dport, &mut s.ip, &mut s.port);
        // A flow that was node traffic stays node traffic while its peer
        // is the node.
        let node_rule = s.redo & REDO_NODE != 0;
        let node_ok = (node_ok(pdir, s.ingress_ifindex == 0) || node_rule) && !encapsulated(t);
        let result = policy::check_dir(ifindex, pdir, ep, &s.ip, &s.port, node_ok);
        // A cluster Deny is final: audit mode does not soften it.
        let deny = policy::cluster_deny(result);
        let audit = deny.is_none() && audited(ep.flags, pdir);
        match result {
            Some(r) if deny.is_none() => r,
            // Looked up only when policy refuses the ClusterIP itself.
            _ if pdir == DIR_EGRESS && !error && service(s) => RULE_SERVICE,
            // An error quoting no flow of ours is refused like any packet,
            // and opens no flow even in audit mode.
            _ if !audit || error => {
                if s.redo & REDO_STALE != 0 {
                    conntrack::cut_seen(ifindex, &mut s.pkt.tuple, ep);
                }
                return h.refuse(audit, REASON_POLICY, result, &s.pkt.tuple);
            }
            _ => RULE_WOULD_DENY,
        }
    };
    // Errors are not flows of their own: they never open one.
    if !error {
        conntrack::create_seen(ifindex, &mut s.pkt.tuple, rule, ep);
        events::flow(&h.src, REASON_POLICY, rule, &s.pkt.tuple);
    }
    if s.redo & REDO_REPLY != 0 {
        conntrack::reverse(&mut s.pkt.tuple);
    }
    account::flow(h.src.slot, dir, rule, h.len);
    record_first_fragment(s, h.src.slot as u16, ifindex);
    ALLOW
}

/// Records a passing first fragment, so that its later fragments pass.
#[inline(always)]
fn record_first_fragment(s: &mut Scratch, slot: u16, ifindex: u32) {
    if s.pkt.frag == FRAG_FIRST {
        frag::record(
            &mut s.frag,
            slot,
            ifindex,
            s.pkt.frag_id,
            s.pkt.frag_proto,
            &s.pkt.tuple,
        );
    }
}
