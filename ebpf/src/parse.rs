//! Packet parsing: Ethernet, IPv4 (with options), IPv6 (walking extension
//! headers), the ports of TCP/UDP/SCTP, ICMP and ICMPv6 (including the packet
//! an ICMP error quotes).
//!
//! Every read goes through `bpf_skb_load_bytes`: it checks bounds at run time
//! and also reads headers that sit in paged fragments of a non-linear skb,
//! where direct packet access would see nothing. Results land in the per-CPU
//! scratch (`scratch.rs`), not on the stack.

use aya_ebpf::programs::TcContext;
use palisade_common::{
    CtKey, IpKey, FAMILY_V4, FAMILY_V6, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
};

use crate::scratch::{load, Scratch};

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// IPv6 extension headers walked before the upper-layer header. A longer
/// chain is treated as unparsable.
const MAX_IPV6_EXT: usize = 8;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

/// What the Ethernet header says about the frame.
pub enum L2 {
    /// Not IP (ARP, LLDP, ...): passes, NetworkPolicy is about IP.
    NotIp,
    /// A VLAN tag on a pod interface: it could carry IP we cannot see
    /// through, so it is treated like an unparsable IP header.
    Tagged,
    V4,
    V6,
}

/// Fragment position of the packet.
pub const FRAG_NONE: u8 = 0;
pub const FRAG_FIRST: u8 = 1;
pub const FRAG_LATER: u8 = 2;

/// ICMP message classes that matter to the classifiers.
pub const ICMP_OTHER: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 1;
pub const ICMP_ECHO_REPLY: u8 = 2;
pub const ICMP_ERROR: u8 = 3;
/// ICMPv6 link-local control: neighbour discovery (types 133 to 137)...
pub const ICMP_NDP: u8 = 4;
/// ... and multicast listener discovery (130 to 132, 143).
pub const ICMP_MLD: u8 = 5;

/// The tuple of a packet, as the conntrack and policy lookups use it. It
/// has the layout of a conntrack key, so the conntrack lookup of a packet
/// uses it in place, without copying it into a key first (`ifindex` is set
/// by the conntrack module). Ports are in host byte order; for ICMP echo the
/// identifier stands in (see `echo_ports`), for other portless protocols
/// both are 0.
pub type Tuple = CtKey;

#[repr(C)]
pub struct Packet {
    pub tuple: Tuple,
    /// For ICMP errors: the tuple of the quoted packet (when `has_quoted`).
    pub quoted: Tuple,
    pub has_quoted: bool,
    /// The addresses are valid (the fixed IP header was readable).
    pub l3_ok: bool,
    /// The upper layer (or an extension header) could not be read.
    pub malformed: bool,
    pub frag: u8,
    pub icmp: u8,
    /// The protocol fragments of this datagram are recorded under: the
    /// IPv4 protocol, or the next header of the IPv6 Fragment header. The
    /// first and the later fragments agree on it even when extension
    /// headers follow the Fragment header (`Frag -> DstOpts -> UDP`),
    /// where the first fragment's upper-layer protocol is another one.
    pub frag_proto: u8,
    /// The TCP header's flags byte (0 for other protocols).
    pub tcp_flags: u8,
    /// IPv6's hop limit (0 for IPv4): tells link-scoped discovery messages
    /// (`hook::link_scoped`).
    pub hop_limit: u8,
    pub frag_id: u32,
}

#[inline(always)]
pub fn l2(ctx: &TcContext) -> L2 {
    let Ok(proto) = ctx.load::<u16>(12) else {
        // Too short to carry an EtherType: the stack will not take it as IP.
        return L2::NotIp;
    };
    match u16::from_be(proto) {
        ETH_P_IP => L2::V4,
        ETH_P_IPV6 => L2::V6,
        ETH_P_8021Q | ETH_P_8021AD => L2::Tagged,
        _ => L2::NotIp,
    }
}

/// Zeroes an address with byte stores. Written as `IpKey::default()` it
/// becomes a `memset` of an unaligned 17-byte object, which the BPF backend
/// emits as a call to a byte-at-a-time loop: several times slower.
#[inline(always)]
fn zero_ip(k: &mut IpKey) {
    let p = core::ptr::from_mut(k).cast::<u8>();
    for i in 0..core::mem::size_of::<IpKey>() {
        // SAFETY: within the 17 bytes of `k`; volatile keeps LLVM from
        // merging the stores back into a memset.
        unsafe { p.add(i).write_volatile(0) };
    }
}

#[inline(always)]
fn clear_tuple(t: &mut Tuple) {
    t.ifindex = 0;
    t._pad = [0];
    zero_ip(&mut t.src);
    zero_ip(&mut t.dst);
    t.sport = 0;
    t.dport = 0;
    t.proto = 0;
}

/// Clears the per-CPU packet record of whatever the previous packet left.
#[inline(always)]
pub fn reset(p: &mut Packet) {
    clear_tuple(&mut p.tuple);
    // Volatile for the same reason as in `zero_ip`: these five adjacent
    // bytes would otherwise become a memset call.
    unsafe {
        core::ptr::write_volatile(&mut p.has_quoted, false);
        core::ptr::write_volatile(&mut p.l3_ok, false);
        core::ptr::write_volatile(&mut p.malformed, false);
        core::ptr::write_volatile(&mut p.frag, FRAG_NONE);
        core::ptr::write_volatile(&mut p.icmp, ICMP_OTHER);
        core::ptr::write_volatile(&mut p.frag_proto, 0);
        core::ptr::write_volatile(&mut p.tcp_flags, 0);
        core::ptr::write_volatile(&mut p.hop_limit, 0);
    }
    p.frag_id = 0;
}

/// Fills `t`'s addresses and protocol from the IPv4 header in `h`.
#[inline(always)]
fn v4_addrs(h: &[u8; 40], t: &mut Tuple) {
    t.proto = h[9];
    zero_ip(&mut t.src);
    zero_ip(&mut t.dst);
    t.src.family = FAMILY_V4;
    t.dst.family = FAMILY_V4;
    t.src.addr[..4].copy_from_slice(&h[12..16]);
    t.dst.addr[..4].copy_from_slice(&h[16..20]);
}

/// Fills `t`'s addresses and next header from the IPv6 header in `h`.
#[inline(always)]
fn v6_addrs(h: &[u8; 40], t: &mut Tuple) {
    t.proto = h[6];
    t.src.family = FAMILY_V6;
    t.dst.family = FAMILY_V6;
    t.src.addr.copy_from_slice(&h[8..24]);
    t.dst.addr.copy_from_slice(&h[24..40]);
}

#[inline(always)]
fn classify_icmp(ty: u8, v6: bool) -> u8 {
    if v6 {
        match ty {
            128 => ICMP_ECHO_REQUEST,
            129 => ICMP_ECHO_REPLY,
            1..=4 => ICMP_ERROR,
            // Neighbour discovery and multicast listener discovery: the
            // link-local control traffic IPv6 needs to work at all.
            133..=137 => ICMP_NDP,
            130..=132 | 143 => ICMP_MLD,
            _ => ICMP_OTHER,
        }
    } else {
        match ty {
            8 => ICMP_ECHO_REQUEST,
            0 => ICMP_ECHO_REPLY,
            3 | 4 | 5 | 11 | 12 => ICMP_ERROR,
            _ => ICMP_OTHER,
        }
    }
}

/// Echo request: (sport, dport) = (id, 0); echo reply: (0, id). A reply's
/// reversed tuple is then exactly its request's tuple, while a request in the
/// opposite direction never looks like a reply.
#[inline(always)]
fn echo_ports(class: u8, id: u16, t: &mut Tuple) {
    let (s, d) = match class {
        ICMP_ECHO_REQUEST => (id, 0),
        ICMP_ECHO_REPLY => (0, id),
        _ => (0, 0),
    };
    t.sport = s;
    t.dport = d;
}

/// The tuple of the packet quoted by an ICMP error, starting at `off`. Only
/// the fixed IP header and the first 8 bytes of its payload are read (all
/// that RFC 792 guarantees); a quoted IPv6 packet with extension headers
/// yields no ports and so matches no connection.
#[inline(always)]
fn quoted(ctx: &TcContext, off: usize, v6: bool, s: &mut Scratch) -> bool {
    let (h, q) = (&mut s.hdr, &mut s.pkt.quoted);
    clear_tuple(q);
    let l4 = if v6 {
        if load(ctx, off, &mut h[..]).is_err() || h[0] >> 4 != 6 {
            return false;
        }
        v6_addrs(h, q);
        off + 40
    } else {
        if load(ctx, off, &mut h[..20]).is_err() {
            return false;
        }
        let ihl = (h[0] & 0x0f) as usize;
        if h[0] >> 4 != 4 || ihl < 5 {
            return false;
        }
        v4_addrs(h, q);
        off + ihl * 4
    };
    if load(ctx, l4, &mut h[..8]).is_err() {
        return false;
    }
    match q.proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
            q.sport = u16::from_be_bytes([h[0], h[1]]);
            q.dport = u16::from_be_bytes([h[2], h[3]]);
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let class = classify_icmp(h[0], q.proto == PROTO_ICMPV6);
            echo_ports(class, u16::from_be_bytes([h[4], h[5]]), q);
        }
        _ => {}
    }
    true
}

/// Reads the ports (or ICMP identifier) of the upper-layer header at `off`;
/// marks the packet malformed when that header is shorter than its
/// protocol's minimum.
#[inline(always)]
fn upper(ctx: &TcContext, off: usize, s: &mut Scratch) {
    let proto = s.pkt.tuple.proto;
    let min = match proto {
        PROTO_TCP => 20,
        PROTO_UDP | PROTO_ICMP | PROTO_ICMPV6 => 8,
        PROTO_SCTP => 12,
        _ => return,
    };
    if off + min > ctx.len() as usize || load(ctx, off, &mut s.hdr[..8]).is_err() {
        s.pkt.malformed = true;
        return;
    }
    let h = &s.hdr;
    if proto == PROTO_ICMP || proto == PROTO_ICMPV6 {
        let v6 = proto == PROTO_ICMPV6;
        let class = classify_icmp(h[0], v6);
        s.pkt.icmp = class;
        echo_ports(class, u16::from_be_bytes([h[4], h[5]]), &mut s.pkt.tuple);
        if class == ICMP_ERROR {
            s.pkt.has_quoted = quoted(ctx, off + 8, v6, s);
        }
    } else {
        s.pkt.tuple.sport = u16::from_be_bytes([h[0], h[1]]);
        s.pkt.tuple.dport = u16::from_be_bytes([h[2], h[3]]);
        // The flags tell a new connection (SYN) and its end (FIN, RST).
        if proto == PROTO_TCP && load(ctx, off + 13, &mut s.hdr[8..9]).is_ok() {
            s.pkt.tcp_flags = s.hdr[8];
        }
    }
}

/// Parses an IPv4 packet. `l3_ok` stays false when even the addresses cannot
/// be read (truncated header, wrong version, IHL below 5).
#[inline(always)]
pub fn ipv4(ctx: &TcContext, s: &mut Scratch) {
    reset(&mut s.pkt);
    let h = &mut s.hdr;
    if load(ctx, ETH_HLEN, &mut h[..20]).is_err() {
        return;
    }
    let ihl = (h[0] & 0x0f) as usize;
    if h[0] >> 4 != 4 || ihl < 5 {
        return;
    }
    let p = &mut s.pkt;
    v4_addrs(h, &mut p.tuple);
    p.l3_ok = true;
    if ETH_HLEN + ihl * 4 > ctx.len() as usize {
        // Options run past the end of the packet.
        p.malformed = true;
        return;
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    p.frag_id = u16::from_be_bytes([h[4], h[5]]) as u32;
    p.frag_proto = p.tuple.proto;
    if frag & 0x1fff != 0 {
        p.frag = FRAG_LATER;
        return;
    }
    if frag & 0x2000 != 0 {
        p.frag = FRAG_FIRST;
    }
    upper(ctx, ETH_HLEN + ihl * 4, s);
}

/// Parses an IPv6 packet, walking at most `MAX_IPV6_EXT` extension headers.
#[inline(always)]
pub fn ipv6(ctx: &TcContext, s: &mut Scratch) {
    reset(&mut s.pkt);
    if load(ctx, ETH_HLEN, &mut s.hdr[..]).is_err() || s.hdr[0] >> 4 != 6 {
        return;
    }
    v6_addrs(&s.hdr, &mut s.pkt.tuple);
    s.pkt.hop_limit = s.hdr[7];
    s.pkt.l3_ok = true;
    let mut next = s.pkt.tuple.proto;
    let mut off = ETH_HLEN + 40;
    let mut found = false;
    for _ in 0..MAX_IPV6_EXT {
        let h = &mut s.hdr;
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH => {
                if load(ctx, off, &mut h[..2]).is_err() {
                    break;
                }
                let len = h[1] as usize;
                // AH counts 4-byte words minus 2, the others 8-byte words minus 1.
                off += if next == IPPROTO_AH {
                    (len + 2) * 4
                } else {
                    (len + 1) * 8
                };
                next = h[0];
            }
            IPPROTO_FRAGMENT => {
                if load(ctx, off, &mut h[..8]).is_err() {
                    break;
                }
                next = h[0];
                s.pkt.frag_proto = next;
                off += 8;
                let fo = u16::from_be_bytes([h[2], h[3]]);
                s.pkt.frag_id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                if fo >> 3 != 0 {
                    s.pkt.frag = FRAG_LATER;
                    s.pkt.tuple.proto = next;
                    return;
                }
                if fo & 1 != 0 {
                    s.pkt.frag = FRAG_FIRST;
                }
            }
            _ => {
                found = true;
                break;
            }
        }
    }
    s.pkt.tuple.proto = next;
    if !found || off > ctx.len() as usize {
        // A broken or overlong chain: the upper layer is unknown.
        s.pkt.malformed = true;
        return;
    }
    upper(ctx, off, s);
}
