//! Just enough SCTP to probe reachability without kernel SCTP sockets.
//!
//! The probe sends an INIT chunk to a port over a raw IP socket (protocol
//! 132); the pod's responder answers with an INIT-ACK from that port when
//! it serves the port, and with an ABORT otherwise (RFC 9260 8.4: an INIT to
//! a closed port is answered with ABORT), so a closed port fails fast like
//! a TCP RST. The kernel itself never answers SCTP here.

/// SCTP as an IP protocol number.
pub const IPPROTO_SCTP: i32 = 132;

pub const CHUNK_INIT: u8 = 1;
pub const CHUNK_INIT_ACK: u8 = 2;
pub const CHUNK_ABORT: u8 = 6;

const COMMON_HEADER: usize = 12;

/// The parts of a received packet the lab looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src_port: u16,
    pub dst_port: u16,
    pub vtag: u32,
    /// Type of the first chunk.
    pub chunk: u8,
    /// Initiate tag, for INIT and INIT-ACK chunks (0 otherwise).
    pub initiate_tag: u32,
}

/// An INIT from `src_port` to `dst_port` with `tag` as initiate tag.
pub fn init(src_port: u16, dst_port: u16, tag: u32) -> Vec<u8> {
    let mut chunk = Vec::with_capacity(20);
    chunk.extend_from_slice(&[CHUNK_INIT, 0]);
    chunk.extend_from_slice(&20u16.to_be_bytes());
    chunk.extend_from_slice(&tag.to_be_bytes()); // initiate tag
    chunk.extend_from_slice(&65535u32.to_be_bytes()); // a_rwnd
    chunk.extend_from_slice(&1u16.to_be_bytes()); // outbound streams
    chunk.extend_from_slice(&1u16.to_be_bytes()); // inbound streams
    chunk.extend_from_slice(&tag.to_be_bytes()); // initial TSN
                                                 // An INIT travels with verification tag 0 (RFC 9260 8.5.1).
    packet(src_port, dst_port, 0, &chunk)
}

/// The INIT-ACK answering `req` (an INIT), with a state cookie so that it
/// has the shape a real stack sends.
pub fn init_ack(req: &Packet, own_tag: u32) -> Vec<u8> {
    let cookie = own_tag.to_be_bytes();
    let len = 20 + 4 + cookie.len();
    let mut chunk = Vec::with_capacity(len);
    chunk.extend_from_slice(&[CHUNK_INIT_ACK, 0]);
    chunk.extend_from_slice(&(len as u16).to_be_bytes());
    chunk.extend_from_slice(&own_tag.to_be_bytes());
    chunk.extend_from_slice(&65535u32.to_be_bytes());
    chunk.extend_from_slice(&1u16.to_be_bytes());
    chunk.extend_from_slice(&1u16.to_be_bytes());
    chunk.extend_from_slice(&own_tag.to_be_bytes());
    chunk.extend_from_slice(&7u16.to_be_bytes()); // parameter: state cookie
    chunk.extend_from_slice(&((4 + cookie.len()) as u16).to_be_bytes());
    chunk.extend_from_slice(&cookie);
    packet(req.dst_port, req.src_port, req.initiate_tag, &chunk)
}

/// The ABORT answering an INIT to a port nobody serves: verification tag
/// is the INIT's initiate tag, T bit clear.
pub fn abort(req: &Packet) -> Vec<u8> {
    packet(
        req.dst_port,
        req.src_port,
        req.initiate_tag,
        &[CHUNK_ABORT, 0, 0, 4],
    )
}

fn packet(src_port: u16, dst_port: u16, vtag: u32, chunk: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(COMMON_HEADER + chunk.len());
    p.extend_from_slice(&src_port.to_be_bytes());
    p.extend_from_slice(&dst_port.to_be_bytes());
    p.extend_from_slice(&vtag.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(chunk);
    let sum = crc32c(&p);
    // The CRC32c goes on the wire least significant byte first, as the
    // Linux stack and RFC 9260 appendix A's reference code put it.
    p[8..12].copy_from_slice(&sum.to_le_bytes());
    p
}

/// Parses an SCTP packet (starting at the common header). Packets with a
/// bad checksum or no chunk are ignored.
pub fn parse(p: &[u8]) -> Option<Packet> {
    if p.len() < COMMON_HEADER + 4 {
        return None;
    }
    let mut copy = p.to_vec();
    copy[8..12].copy_from_slice(&[0; 4]);
    if crc32c(&copy).to_le_bytes() != p[8..12] {
        return None;
    }
    let be16 = |o: usize| u16::from_be_bytes([p[o], p[o + 1]]);
    let be32 = |o: usize| u32::from_be_bytes([p[o], p[o + 1], p[o + 2], p[o + 3]]);
    let chunk = p[COMMON_HEADER];
    let initiate_tag =
        if matches!(chunk, CHUNK_INIT | CHUNK_INIT_ACK) && p.len() >= COMMON_HEADER + 8 {
            be32(COMMON_HEADER + 4)
        } else {
            0
        };
    Some(Packet {
        src_port: be16(0),
        dst_port: be16(2),
        vtag: be32(4),
        chunk,
        initiate_tag,
    })
}

/// The SCTP part of what an IPv4 raw socket returns (the IP header is
/// included there, unlike IPv6 raw sockets).
pub fn strip_ipv4_header(p: &[u8]) -> Option<&[u8]> {
    let ihl = usize::from(*p.first()? & 0x0f) * 4;
    (ihl >= 20 && p.len() >= ihl).then(|| &p[ihl..])
}

/// CRC32c (Castagnoli), bitwise: packets here are a few dozen bytes.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn init_then_ack_round_trip() {
        let i = init(40000, 80, 0xdead_beef);
        let p = parse(&i).expect("valid INIT");
        assert_eq!(
            p,
            Packet {
                src_port: 40000,
                dst_port: 80,
                vtag: 0,
                chunk: CHUNK_INIT,
                initiate_tag: 0xdead_beef
            }
        );
        let a = parse(&init_ack(&p, 7)).expect("valid INIT-ACK");
        assert_eq!(
            (a.src_port, a.dst_port, a.vtag, a.chunk, a.initiate_tag),
            (80, 40000, 0xdead_beef, CHUNK_INIT_ACK, 7)
        );
        let ab = parse(&abort(&p)).expect("valid ABORT");
        assert_eq!(
            (ab.src_port, ab.dst_port, ab.vtag, ab.chunk),
            (80, 40000, 0xdead_beef, CHUNK_ABORT)
        );
    }

    #[test]
    fn corrupted_packet_is_ignored() {
        let mut i = init(1, 2, 3);
        i[13] ^= 1;
        assert_eq!(parse(&i), None);
        assert_eq!(parse(&[0; 8]), None);
    }

    #[test]
    fn ipv4_header_is_stripped() {
        let mut p = vec![0x45u8];
        p.extend_from_slice(&[0; 19]);
        p.extend_from_slice(b"sctp");
        assert_eq!(strip_ipv4_header(&p), Some(&b"sctp"[..]));
        assert_eq!(strip_ipv4_header(&[0x41]), None);
    }
}
