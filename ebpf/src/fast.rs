//! The common case in one straight line: TCP or UDP over IPv4 without
//! options or fragmentation, or over IPv6 without extension headers, whose
//! headers sit in the linear part of the skb, for an endpoint in its normal
//! state. It reads the headers by direct packet access and keeps every key
//! on the stack: no helper call to copy bytes, no per-CPU scratch, one
//! conntrack lookup.
//!
//! Anything else (other EtherTypes aside, which pass here at once) returns
//! `None` and takes the general path of `hook.rs`, which decides it from
//! scratch: this path may only ever take the decisions the general path
//! would take for the same packet.

use aya_ebpf::{bindings::tcx_action_base::TCX_DROP, maps::lpm_trie::Key, programs::TcContext};
use palisade_common::{
    CtKey, Endpoint, IpKey, PortKey, ServiceKey, DIR_EGRESS, DIR_INGRESS, EP_DENY_ALL, EP_PENDING,
    FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP, REASON_POLICY, RULE_NOT_ISOLATED, RULE_SERVICE,
    RULE_WOULD_DENY,
};

use crate::{account, conntrack, deferred, events, hook, parse::ETH_HLEN};

const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
const ETH_P_IPV6_BE: u16 = 0x86ddu16.to_be();
const ETH_P_8021Q_BE: u16 = 0x8100u16.to_be();
const ETH_P_8021AD_BE: u16 = 0x88a8u16.to_be();
/// Version 4, IHL 5: no options.
const V4_NO_OPTIONS: u8 = 0x45;
/// More-fragments flag and fragment offset, in network byte order.
const V4_FRAG_MASK_BE: u16 = 0x3fffu16.to_be();
const V4_HLEN: usize = 20;
const V6_HLEN: usize = 40;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;

/// Reads a `T` at `p`, a packet address the caller has bounds-checked.
///
/// The read is typed as aligned so that it becomes one BPF load:
/// `read_unaligned` compiles to byte loads and shifts. Packet data is not
/// always aligned (`NET_IP_ALIGN` is 0 on x86), which BPF does not mind: the
/// verifier accepts unaligned packet loads unless strict alignment is
/// requested, and the JITs of hosts with efficient unaligned access emit
/// plain loads.
#[inline(always)]
unsafe fn at<T: Copy>(p: usize) -> T {
    unsafe { core::ptr::read(p as *const T) }
}

/// An aligned buffer holding one lookup key, filled word by word. The key
/// structs are `repr(C)` with unaligned fields: filling them field by field
/// (or zeroing them with `Default`) compiles to byte stores and memset calls.
#[repr(C, align(8))]
struct Words<const N: usize>([u32; N]);

impl<const N: usize> Words<N> {
    /// Views the buffer as the key `T` it was filled as.
    #[inline(always)]
    fn key<T>(&self) -> &T {
        const { assert!(core::mem::size_of::<T>() <= 4 * N) };
        // SAFETY: large and aligned enough (asserted, align 8), and `T` is
        // plain data (integers and byte arrays) valid for any bytes.
        unsafe { &*self.0.as_ptr().cast::<T>() }
    }

    #[inline(always)]
    fn key_mut<T>(&mut self) -> &mut T {
        const { assert!(core::mem::size_of::<T>() <= 4 * N) };
        // SAFETY: as in `key`.
        unsafe { &mut *self.0.as_mut_ptr().cast::<T>() }
    }
}

// The word layouts below follow these offsets (little-endian target).
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(offset_of!(CtKey, ifindex) == 0);
    assert!(offset_of!(CtKey, sport) == 4 && offset_of!(CtKey, dport) == 6);
    assert!(offset_of!(CtKey, proto) == 8);
    assert!(offset_of!(CtKey, src) == 9 && offset_of!(CtKey, dst) == 26);
    assert!(size_of::<CtKey>() == 44);
    assert!(offset_of!(Endpoint, addrs) == 120 && size_of::<Endpoint>() == 160);
    assert!(size_of::<IpKey>() == 17 && offset_of!(IpKey, addr) == 1);
    assert!(size_of::<Key<IpKey>>() == 21 && size_of::<Key<PortKey>>() == 7);
};

/// An address as loaded from the packet: four little-endian words of its
/// network-order bytes (IPv4: the first word, the others zero).
type Addr = [u32; 4];

/// The conntrack key of a tuple, ports in host order.
#[inline(always)]
fn ct_key(
    ifindex: u32,
    proto: u8,
    family: u8,
    s: &Addr,
    d: &Addr,
    sport: u16,
    dport: u16,
) -> Words<12> {
    let f = family as u32;
    Words([
        ifindex,
        sport as u32 | (dport as u32) << 16,
        // proto, src.family, src.addr[0..2]
        proto as u32 | f << 8 | (s[0] & 0xffff) << 16,
        // src.addr[2..14]
        s[0] >> 16 | (s[1] & 0xffff) << 16,
        s[1] >> 16 | (s[2] & 0xffff) << 16,
        s[2] >> 16 | (s[3] & 0xffff) << 16,
        // src.addr[14..16], dst.family, dst.addr[0]
        s[3] >> 16 | f << 16 | (d[0] & 0xff) << 24,
        // dst.addr[1..13]
        d[0] >> 8 | (d[1] & 0xff) << 24,
        d[1] >> 8 | (d[2] & 0xff) << 24,
        d[2] >> 8 | (d[3] & 0xff) << 24,
        // dst.addr[13..16], _pad
        d[3] >> 8,
        0,
    ])
}

/// TCP flags that open or close a connection.
const TCP_SYN_FIN_RST: u8 = 0x02 | 0x01 | 0x04;

/// The full-length LPM key of an address.
#[inline(always)]
fn ip_key(family: u8, a: &Addr) -> Words<6> {
    // prefix_len; family, addr[0..3]; then the address shifted by one byte.
    Words([
        crate::policy::IP_KEY_BITS,
        family as u32 | (a[0] & 0x00ff_ffff) << 8,
        a[0] >> 24 | (a[1] & 0x00ff_ffff) << 8,
        a[1] >> 24 | (a[2] & 0x00ff_ffff) << 8,
        a[2] >> 24 | (a[3] & 0x00ff_ffff) << 8,
        a[3] >> 24,
    ])
}

/// The address inside a full-length LPM key built by `ip_key`.
#[inline(always)]
fn addr_of(k: &Words<6>) -> &IpKey {
    // SAFETY: the key data (an `IpKey`, alignment 1) starts at byte 4.
    unsafe { &*k.0.as_ptr().add(1).cast::<IpKey>() }
}

/// Turns a full-length LPM key built by `ip_key` into the `SERVICES` key
/// of (that address, `proto`, `port`) in place: the `ServiceKey` starts at
/// the address (byte 4) and its protocol and port take the three spare
/// bytes after it, which the address key leaves zero and never reads. No
/// new stack: this path sits at BPF's combined stack limit.
#[inline(always)]
fn service_key(k: &mut Words<6>, proto: u8, port: u16) -> &ServiceKey {
    const { assert!(core::mem::size_of::<ServiceKey>() == 20) };
    k.0[5] = (k.0[5] & 0xff) | (proto as u32) << 8 | (port.to_be() as u32) << 16;
    // SAFETY: bytes 4..24 of the buffer; `ServiceKey` has alignment 1.
    unsafe { &*k.0.as_ptr().add(1).cast::<ServiceKey>() }
}

/// The full-length LPM key of (protocol, port).
#[inline(always)]
fn port_key(proto: u8, port: u16) -> Words<2> {
    let be = port.to_be() as u32;
    Words([crate::policy::PORT_KEY_BITS, proto as u32 | be << 8])
}

/// Reads the 8-byte word at `off` (a multiple of 8) of an endpoint record;
/// map values are 8-aligned, and `Endpoint` is 8-aligned too.
#[inline(always)]
fn ep_word(ep: &Endpoint, off: usize) -> u64 {
    // SAFETY: `off + 8 <= 160` at every call site below, aligned.
    unsafe { *core::ptr::from_ref(ep).cast::<u8>().add(off).cast::<u64>() }
}

/// True when `ep.addrs` lists the address (`family`, `a`). `addrs[0]` spans
/// bytes 120..137 of the record (family, then 16 address bytes) and
/// `addrs[1]` bytes 137..154; both are compared as 8-byte words.
#[inline(always)]
fn own(ep: &Endpoint, family: u8, a: &Addr) -> bool {
    let f = family as u64;
    // The address as two little-endian 8-byte words.
    let p0 = a[0] as u64 | (a[1] as u64) << 32;
    let p1 = a[2] as u64 | (a[3] as u64) << 32;
    let (w0, w1, w2, w3, w4) = (
        ep_word(ep, 120),
        ep_word(ep, 128),
        ep_word(ep, 136),
        ep_word(ep, 144),
        ep_word(ep, 152),
    );
    let first = w0 == f | p0 << 8 && w1 == p0 >> 56 | p1 << 8 && w2 & 0xff == p1 >> 56;
    let second = w2 >> 8 == f | (p0 & 0xffff_ffff_ffff) << 8
        && w3 == p0 >> 48 | p1 << 16
        && w4 & 0xffff == p1 >> 48;
    first || second
}

/// Whether (`a`, `pa`) sorts after (`b`, `pb`): addresses by their bytes,
/// then ports as numbers (the order of `conntrack::normalize`).
#[inline(always)]
fn after(a: &Addr, pa: u16, b: &Addr, pb: u16) -> bool {
    for i in 0..4 {
        let (x, y) = (u32::from_be(a[i]), u32::from_be(b[i]));
        if x != y {
            return x > y;
        }
    }
    pa > pb
}

/// The fields of a packet the fast path handles.
struct Parsed {
    family: u8,
    proto: u8,
    src: Addr,
    dst: Addr,
    /// Start of the TCP or UDP header.
    l4: usize,
    /// Filled in after parsing: the destination port, whether normalizing
    /// the conntrack key swapped the ends, the packet length.
    dport: u16,
    swapped: bool,
    len: u32,
}

/// IPv4 without options, not a fragment, carrying TCP or UDP.
#[inline(always)]
fn ipv4(data: usize, end: usize) -> Option<Parsed> {
    let ip = data + ETH_HLEN;
    let l4 = ip + V4_HLEN;
    if l4 + UDP_HLEN > end {
        return None;
    }
    let vihl: u8 = unsafe { at(ip) };
    let frag: u16 = unsafe { at(ip + 6) };
    if vihl != V4_NO_OPTIONS || frag & V4_FRAG_MASK_BE != 0 {
        return None;
    }
    Some(Parsed {
        family: FAMILY_V4,
        proto: unsafe { at(ip + 9) },
        src: [unsafe { at(ip + 12) }, 0, 0, 0],
        dst: [unsafe { at(ip + 16) }, 0, 0, 0],
        l4,
        dport: 0,
        swapped: false,
        len: 0,
    })
}

/// IPv6 whose next header is TCP or UDP (no extension header).
#[inline(always)]
fn ipv6(data: usize, end: usize) -> Option<Parsed> {
    let ip = data + ETH_HLEN;
    let l4 = ip + V6_HLEN;
    if l4 + UDP_HLEN > end {
        return None;
    }
    let version: u8 = unsafe { at(ip) };
    if version >> 4 != 6 {
        return None;
    }
    let w = |off: usize| -> u32 { unsafe { at(ip + off) } };
    Some(Parsed {
        family: FAMILY_V6,
        proto: unsafe { at(ip + 6) },
        src: [w(8), w(12), w(16), w(20)],
        dst: [w(24), w(28), w(32), w(36)],
        l4,
        dport: 0,
        swapped: false,
        len: 0,
    })
}

/// Classifies the frame if it is the common case; `None` sends it to the
/// general path.
#[inline(always)]
pub fn run(ctx: &TcContext, dir: u32, ifindex: u32) -> Option<i32> {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + ETH_HLEN > end {
        return None;
    }
    let ethertype: u16 = unsafe { at(data + 12) };
    let mut p = match ethertype {
        ETH_P_IP_BE => ipv4(data, end)?,
        ETH_P_IPV6_BE => ipv6(data, end)?,
        // Tagged frames need the general path (`parse::l2`).
        ETH_P_8021Q_BE | ETH_P_8021AD_BE => return None,
        // Not IP: passes.
        _ => return Some(hook::ALLOW),
    };
    let proto = p.proto;
    match proto {
        PROTO_UDP => {}
        PROTO_TCP if p.l4 + TCP_HLEN <= end => {}
        _ => return None,
    }
    let sport = u16::from_be(unsafe { at(p.l4) });
    let dport = u16::from_be(unsafe { at(p.l4 + 2) });

    // Tunnel packets are checked by the general path (`hook::encapsulated`).
    if proto == PROTO_UDP && dir == DIR_EGRESS && hook::tunnel_port(dport) {
        return None;
    }

    let ep = crate::maps::endpoint(ifindex)?;
    let flags = ep.flags;
    // Pending, deny-all and spoofed packets are dropped, with their events,
    // by the general path.
    if flags & (EP_PENDING | EP_DENY_ALL) != 0 || (dir == DIR_EGRESS && !own(ep, p.family, &p.src))
    {
        return None;
    }
    let len = ctx.len() as u64;

    // The conntrack key in its normalized orientation (`conntrack.rs`).
    let swapped = after(&p.src, sport, &p.dst, dport);
    let (lo, hi, lo_port, hi_port) = if swapped {
        (&p.dst, &p.src, dport, sport)
    } else {
        (&p.src, &p.dst, sport, dport)
    };
    let mut k = ct_key(ifindex, proto, p.family, lo, hi, lo_port, hi_port);
    if let Some(rule) = conntrack::live(ep, k.key(), 0) {
        // Decided again by the general path, in its opener's direction;
        // a cut flow is dropped and reported there.
        if rule == conntrack::STALE || rule == conntrack::CUT {
            return None;
        }
        // A TCP packet that opens or closes a connection and finds an
        // entry goes to the general path, which checks which end opened
        // the entry and marks it closing: once or twice per connection,
        // and the fast path's frame has no room for it.
        if proto == PROTO_TCP && unsafe { at::<u8>(p.l4 + 13) } & TCP_SYN_FIN_RST != 0 {
            return None;
        }
        account::flow(ep.slot as u32, dir, rule, len);
        return Some(hook::ALLOW);
    }

    p.dport = dport;
    p.swapped = swapped;
    p.len = len as u32;
    // A client on this node whose egress was left to after DNAT.
    let ingress_ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    if dir == DIR_INGRESS && !deferred_ingress(&p, &k, ifindex, ingress_ifindex) {
        return Some(TCX_DROP);
    }
    Some(new_flow(&p, &mut k, ep, ctx, dir))
}

/// At a pod's ingress, the egress check of a client on this node that was
/// left to after DNAT (`deferred.rs`); false to drop. `k` is the flow's
/// normalized conntrack key at this hook. Out of line, like `new_flow`, to
/// keep call chains within the stack limit.
#[inline(never)]
fn deferred_ingress(p: &Parsed, k: &Words<12>, ifindex: u32, ingress_ifindex: u32) -> bool {
    let from = ip_key(p.family, &p.src);
    let Some(c) = deferred::client(ingress_ifindex, addr_of(&from), ifindex) else {
        return true;
    };
    let to = ip_key(p.family, &p.dst);
    let port = port_key(p.proto, p.dport);
    let mut ck = Words(k.0);
    deferred::decide(
        &c,
        ck.key_mut(),
        p.swapped,
        to.key(),
        port.key(),
        p.len as u64,
    )
}

/// The first packet of a flow: policy, then a conntrack entry. Out of line, so that
/// its keys and records are not part of the stack frame the general path's
/// frame is stacked on (their sum must stay within BPF's 512 bytes); the
/// call costs a few instructions on a path that does several lookups.
#[inline(never)]
fn new_flow(p: &Parsed, k: &mut Words<12>, ep: &Endpoint, ctx: &TcContext, dir: u32) -> i32 {
    // Read here rather than carried in: the frames of this path and its
    // callers sit right at BPF's 512-byte combined stack limit.
    let skb = unsafe { &*ctx.skb.skb };
    let (ifindex, local_origin) = (skb.ifindex, skb.ingress_ifindex == 0);
    let (dport, swapped, len) = (p.dport, p.swapped, p.len as u64);
    let (flags, slot) = (ep.flags, ep.slot as u32);
    let src = events::Source {
        slot,
        ifindex,
        dir,
        generation: ep.generation,
    };
    let from = ip_key(p.family, &p.src);
    let mut to = ip_key(p.family, &p.dst);
    let port = port_key(p.proto, dport);
    let rule = if !hook::isolated(flags, dir) {
        RULE_NOT_ISOLATED
    } else {
        let peer = if dir == DIR_EGRESS { &to } else { &from };
        let node_ok = hook::node_ok(dir, local_origin);
        let result = crate::policy::check_dir(ifindex, dir, ep, peer.key(), port.key(), node_ok);
        // A cluster Deny is final: audit mode does not soften it.
        let deny = crate::policy::cluster_deny(result);
        match result {
            Some(r) if deny.is_none() => r,
            // Looked up only when policy refuses the ClusterIP itself.
            _ if dir == DIR_EGRESS && deferred::service(service_key(&mut to, p.proto, dport)) => {
                RULE_SERVICE
            }
            _ if deny.is_none() && hook::audited(flags, dir) => RULE_WOULD_DENY,
            _ => {
                // The event reports the packet as seen.
                let t: &mut CtKey = k.key_mut();
                if swapped {
                    conntrack::reverse(t);
                }
                events::denied(&src, REASON_POLICY, result, t);
                account::denied(slot, dir, result, len);
                return TCX_DROP;
            }
        }
    };
    conntrack::create(ep, k.key(), rule, swapped);
    account::flow(slot, dir, rule, len);
    let t: &mut CtKey = k.key_mut();
    if swapped {
        conntrack::reverse(t);
    }
    events::flow(&src, REASON_POLICY, rule, t);
    hook::ALLOW
}
