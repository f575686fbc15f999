//! A small builder of Ethernet frames for BPF_PROG_TEST_RUN and for frames
//! sent on real interfaces: IPv4 (with options and fragment fields), IPv6
//! (with extension headers), TCP, UDP, SCTP, ICMP and ICMPv6, payloads and
//! fragmentation. The IPv4 header checksum is filled in (a forwarding
//! kernel checks it); upper-layer checksums are left zero: the classifiers
//! never look at them.

use std::net::IpAddr;

pub const PROTO_HOPOPTS: u8 = 0;
pub const PROTO_ROUTING: u8 = 43;
pub const PROTO_FRAGMENT: u8 = 44;
pub const PROTO_AH: u8 = 51;
pub const PROTO_DSTOPTS: u8 = 60;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;

/// Fragment fields: `offset` in 8-byte units.
#[derive(Clone, Copy, Debug)]
pub struct Frag {
    pub id: u32,
    pub offset: u16,
    pub more: bool,
}

#[derive(Clone, Debug)]
pub struct Packet {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    l4: Vec<u8>,
    v4_options: Vec<u8>,
    /// IPv6 extension headers in order: (header type, body after the
    /// next-header and length bytes).
    v6_ext: Vec<(u8, Vec<u8>)>,
    /// Extension headers after the Fragment header.
    v6_ext_after: Vec<(u8, Vec<u8>)>,
    frag: Option<Frag>,
    /// IPv4's TTL or IPv6's hop limit.
    hop_limit: u8,
}

fn ports(sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    v[0..2].copy_from_slice(&sport.to_be_bytes());
    v[2..4].copy_from_slice(&dport.to_be_bytes());
    v
}

fn is_v6(a: IpAddr) -> bool {
    a.is_ipv6()
}

impl Packet {
    fn new(src: IpAddr, dst: IpAddr, proto: u8, l4: Vec<u8>) -> Self {
        assert_eq!(src.is_ipv6(), dst.is_ipv6(), "mixed address families");
        Packet {
            src,
            dst,
            proto,
            l4,
            v4_options: vec![],
            v6_ext: vec![],
            v6_ext_after: vec![],
            frag: None,
            hop_limit: 64,
        }
    }

    /// Sets the TTL (IPv4) or hop limit (IPv6); 64 unless set.
    pub fn hop_limit(mut self, hops: u8) -> Self {
        self.hop_limit = hops;
        self
    }

    /// A neighbour discovery message of ICMPv6 `ty` (133 to 137) as a
    /// host's stack sends it: hop limit 255 (RFC 4861).
    pub fn nd(src: IpAddr, dst: IpAddr, ty: u8) -> Self {
        Packet::icmp(src, dst, ty, 0, 0).hop_limit(255)
    }

    /// A multicast listener discovery message of ICMPv6 `ty` (130 to 132,
    /// 143) as a host's stack sends it: hop limit 1 (RFC 2710, 3810).
    pub fn mld(src: IpAddr, dst: IpAddr, ty: u8) -> Self {
        Packet::icmp(src, dst, ty, 0, 0).hop_limit(1)
    }

    /// A TCP segment with ACK set: a packet of a connection, not the
    /// first of one (`syn`, `tcp_flags` for others).
    pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Self {
        let mut l4 = ports(sport, dport, 20);
        l4[12] = 5 << 4; // data offset: 5 words
        l4[13] = 0x10; // ACK
        Self::new(src, dst, 6, l4)
    }

    /// Sets the TCP flags byte (SYN 0x02, ACK 0x10, FIN 0x01, RST 0x04).
    pub fn tcp_flags(mut self, flags: u8) -> Self {
        assert_eq!(self.proto, 6, "not TCP");
        self.l4[13] = flags;
        self
    }

    /// A SYN: the first packet of a new connection.
    pub fn syn(self) -> Self {
        self.tcp_flags(0x02)
    }

    pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Self {
        let mut l4 = ports(sport, dport, 8);
        l4[4..6].copy_from_slice(&8u16.to_be_bytes());
        Self::new(src, dst, 17, l4)
    }

    pub fn sctp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Self {
        Self::new(src, dst, 132, ports(sport, dport, 12))
    }

    /// An ICMP (IPv4) or ICMPv6 message with the given type and code; bytes
    /// 4..8 are the echo identifier and sequence number.
    pub fn icmp(src: IpAddr, dst: IpAddr, ty: u8, code: u8, id: u16) -> Self {
        let proto = if is_v6(src) { 58 } else { 1 };
        let mut l4 = vec![ty, code, 0, 0];
        l4.extend_from_slice(&id.to_be_bytes());
        l4.extend_from_slice(&1u16.to_be_bytes());
        Self::new(src, dst, proto, l4)
    }

    /// Echo request in the packet's family.
    pub fn ping(src: IpAddr, dst: IpAddr, id: u16) -> Self {
        Self::icmp(src, dst, if is_v6(src) { 128 } else { 8 }, 0, id)
    }

    /// Echo reply in the packet's family.
    pub fn pong(src: IpAddr, dst: IpAddr, id: u16) -> Self {
        Self::icmp(src, dst, if is_v6(src) { 129 } else { 0 }, 0, id)
    }

    /// An ICMP error (destination unreachable) quoting `quoted`'s IP packet.
    pub fn unreachable(src: IpAddr, dst: IpAddr, quoted: &Packet) -> Self {
        let ty = if is_v6(src) { 1 } else { 3 };
        Self::icmp_error(src, dst, ty, 3, quoted)
    }

    /// An ICMP error of any type and code quoting `quoted`'s IP packet;
    /// the four bytes after the checksum (unused, or the MTU of a packet
    /// too big) are zero.
    pub fn icmp_error(src: IpAddr, dst: IpAddr, ty: u8, code: u8, quoted: &Packet) -> Self {
        let mut p = Self::icmp(src, dst, ty, code, 0);
        p.l4[4..8].fill(0);
        p.l4.extend_from_slice(&quoted.ip_bytes());
        p
    }

    /// Appends `data` after the upper-layer header (a UDP header's length
    /// follows).
    pub fn payload(mut self, data: &[u8]) -> Self {
        self.l4.extend_from_slice(data);
        if self.proto == 17 && self.frag.is_none() && self.l4.len() >= 8 {
            let len = self.l4.len() as u16;
            self.l4[4..6].copy_from_slice(&len.to_be_bytes());
        }
        self
    }

    /// Any other IP protocol with the given payload.
    /// Fills in the UDP checksum (after `payload`; IPv6 receivers drop a
    /// datagram without one), for a packet a real stack is to accept.
    pub fn udp_checksum(mut self) -> Self {
        assert_eq!(self.proto, 17, "a UDP packet");
        let mut pseudo = Vec::new();
        for a in [self.src, self.dst] {
            match a {
                IpAddr::V4(a) => pseudo.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => pseudo.extend_from_slice(&a.octets()),
            }
        }
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(self.l4.len() as u16).to_be_bytes());
        self.l4[6..8].fill(0);
        pseudo.extend_from_slice(&self.l4);
        let sum = match checksum(&pseudo) {
            0 => 0xffff,
            s => s,
        };
        self.l4[6..8].copy_from_slice(&sum.to_be_bytes());
        self
    }

    pub fn raw(src: IpAddr, dst: IpAddr, proto: u8, payload: Vec<u8>) -> Self {
        Self::new(src, dst, proto, payload)
    }

    pub fn v4_options(mut self, options: &[u8]) -> Self {
        assert!(options.len().is_multiple_of(4) && options.len() <= 40);
        self.v4_options = options.to_vec();
        self
    }

    /// Appends an IPv6 extension header (hop-by-hop, routing, destination
    /// options or AH) with a body of padding that rounds it to its unit.
    pub fn ext(mut self, kind: u8) -> Self {
        let body = match kind {
            PROTO_AH => vec![0u8; 10],      // 12 bytes total: 1 unit of 4, len = 1
            PROTO_ROUTING => vec![0u8; 14], // 16 bytes total: len = 1
            _ => vec![0u8; 6],              // 8 bytes total: len = 0
        };
        self.v6_ext.push((kind, body));
        self
    }

    /// Appends an IPv6 extension header after the Fragment header (part
    /// of the fragmentable part, as a destination options header can be).
    pub fn ext_after_fragment(mut self, kind: u8) -> Self {
        let body = match kind {
            PROTO_AH => vec![0u8; 10],
            PROTO_ROUTING => vec![0u8; 14],
            _ => vec![0u8; 6],
        };
        self.v6_ext_after.push((kind, body));
        self
    }

    pub fn fragment(mut self, frag: Frag) -> Self {
        self.frag = Some(frag);
        self
    }

    /// The packet cut as a sender fragments it: the fragmentable part (the
    /// extension headers after the Fragment header, then the upper layer)
    /// in pieces of `size` bytes (a multiple of 8), each behind the same
    /// IP header (and IPv6 headers before the Fragment header).
    pub fn fragments(&self, id: u32, size: usize) -> Vec<Packet> {
        assert!(size > 0 && size.is_multiple_of(8), "fragment size {size}");
        assert!(self.frag.is_none(), "already a fragment");
        let mut body = ext_chain(&self.v6_ext_after, self.proto);
        body.extend_from_slice(&self.l4);
        let next = self.v6_ext_after.first().map_or(self.proto, |k| k.0);
        let pieces = body.len().div_ceil(size);
        body.chunks(size)
            .enumerate()
            .map(|(i, chunk)| Packet {
                proto: next,
                l4: chunk.to_vec(),
                v6_ext_after: vec![],
                frag: Some(Frag {
                    id,
                    offset: (i * size / 8) as u16,
                    more: i + 1 < pieces,
                }),
                ..self.clone()
            })
            .collect()
    }

    /// The IP packet (no Ethernet header).
    pub fn ip_bytes(&self) -> Vec<u8> {
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let ihl = 20 + self.v4_options.len();
                let total = ihl + self.l4.len();
                let mut h = vec![0u8; 20];
                h[0] = 0x40 | (ihl / 4) as u8;
                h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                if let Some(f) = self.frag {
                    h[4..6].copy_from_slice(&(f.id as u16).to_be_bytes());
                    let mut field = f.offset & 0x1fff;
                    if f.more {
                        field |= 0x2000;
                    }
                    h[6..8].copy_from_slice(&field.to_be_bytes());
                }
                h[8] = self.hop_limit;
                h[9] = self.proto;
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                h.extend_from_slice(&self.v4_options);
                let sum = checksum(&h);
                h[10..12].copy_from_slice(&sum.to_be_bytes());
                h.extend_from_slice(&self.l4);
                h
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut kinds: Vec<(u8, Vec<u8>)> = self.v6_ext.clone();
                if let Some(f) = self.frag {
                    let mut body = vec![0u8; 6];
                    let field = (f.offset << 3) | u16::from(f.more);
                    body[0..2].copy_from_slice(&field.to_be_bytes());
                    body[2..6].copy_from_slice(&f.id.to_be_bytes());
                    // The fragment header's first byte is reserved, not a length.
                    kinds.push((PROTO_FRAGMENT, body));
                }
                kinds.extend(self.v6_ext_after.iter().cloned());
                let ext = ext_chain(&kinds, self.proto);
                let first = kinds.first().map_or(self.proto, |k| k.0);
                let mut h = vec![0u8; 40];
                h[0] = 0x60;
                h[4..6].copy_from_slice(&((ext.len() + self.l4.len()) as u16).to_be_bytes());
                h[6] = first;
                h[7] = self.hop_limit;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
                h.extend_from_slice(&ext);
                h.extend_from_slice(&self.l4);
                h
            }
            _ => unreachable!("checked in Packet::new"),
        }
    }

    /// The Ethernet frame (between two made-up MAC addresses).
    pub fn build(&self) -> Vec<u8> {
        let mut f = eth_header(self.ethertype());
        f.extend_from_slice(&self.ip_bytes());
        f
    }

    /// The Ethernet frame from MAC address `src` to `dst`.
    pub fn frame(&self, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&self.ethertype().to_be_bytes());
        f.extend_from_slice(&self.ip_bytes());
        f
    }

    fn ethertype(&self) -> u16 {
        if is_v6(self.src) {
            ETH_P_IPV6
        } else {
            ETH_P_IP
        }
    }
}

/// IPv6 extension headers in order, each naming the next, the last naming
/// `proto`.
fn ext_chain(kinds: &[(u8, Vec<u8>)], proto: u8) -> Vec<u8> {
    let mut ext = Vec::new();
    for (i, (kind, body)) in kinds.iter().enumerate() {
        let next = kinds.get(i + 1).map_or(proto, |k| k.0);
        let total = 2 + body.len();
        let len = match *kind {
            PROTO_AH => total / 4 - 2,
            PROTO_FRAGMENT => 0,
            _ => total / 8 - 1,
        };
        ext.push(next);
        ext.push(len as u8);
        ext.extend_from_slice(body);
    }
    ext
}

/// The Internet checksum of `data` (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn eth_header(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An ARP request frame.
pub fn arp() -> Vec<u8> {
    let mut f = eth_header(ETH_P_ARP);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 10, 0, 0, 1]);
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_headers_carry_a_valid_checksum() {
        let p = Packet::udp(ip("10.0.0.1"), ip("10.0.0.2"), 1, 2).payload(b"xyz");
        let bytes = p.ip_bytes();
        assert_ne!(&bytes[10..12], &[0, 0]);
        // A header with its checksum in place sums to zero.
        assert_eq!(checksum(&bytes[..20]), 0);
        assert_eq!(&bytes[24..26], &11u16.to_be_bytes(), "UDP length");
    }

    #[test]
    fn ipv6_fragments_put_the_fragmentable_part_back_together() {
        let whole = Packet::udp(ip("fd00::1"), ip("fd00::2"), 1000, 53)
            .payload(&[7u8; 100])
            .ext_after_fragment(PROTO_DSTOPTS);
        let fragmentable = whole.ip_bytes()[40..].to_vec();
        let pieces = whole.fragments(0xabcd, 48);
        assert_eq!(pieces.len(), 3);
        let mut joined = Vec::new();
        for (i, f) in pieces.iter().enumerate() {
            let b = f.ip_bytes();
            assert_eq!(b[6], PROTO_FRAGMENT);
            assert_eq!(b[40], PROTO_DSTOPTS, "every Fragment header names DstOpts");
            let field = u16::from_be_bytes([b[42], b[43]]);
            assert_eq!(usize::from(field >> 3), i * 6, "offset in 8-byte units");
            assert_eq!(field & 1 == 1, i < 2, "more fragments");
            assert_eq!(&b[44..48], &0xabcdu32.to_be_bytes());
            joined.extend_from_slice(&b[48..]);
        }
        assert_eq!(joined, fragmentable);
    }
}
