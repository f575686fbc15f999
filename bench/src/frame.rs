//! Ethernet + IPv4 + TCP frames for BPF_PROG_TEST_RUN: just the fields the
//! classifiers read (EtherType, IPv4 header without options, protocol,
//! addresses, ports, TCP header length and flags). Checksums stay zero: the
//! classifiers never look at them.

use std::net::Ipv4Addr;

const ETH_P_IP: u16 = 0x0800;
const IPPROTO_TCP: u8 = 6;
const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const TCP_HLEN: usize = 20;

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

/// A TCP segment without payload from `src:sport` to `dst:dport`.
pub fn tcp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![0u8; ETH_HLEN + IPV4_HLEN + TCP_HLEN];
    // Locally administered MACs: the classifiers do not read them.
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
    let ip = &mut f[ETH_HLEN..ETH_HLEN + IPV4_HLEN];
    ip[0] = 0x45; // version 4, 5 words: no options
    ip[2..4].copy_from_slice(&((IPV4_HLEN + TCP_HLEN) as u16).to_be_bytes());
    ip[6] = 0x40; // don't fragment, offset 0
    ip[8] = 64; // TTL
    ip[9] = IPPROTO_TCP;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let tcp = &mut f[ETH_HLEN + IPV4_HLEN..];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = ((TCP_HLEN / 4) as u8) << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes()); // window
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_sit_where_parsers_read_them() {
        let f = tcp4(
            Ipv4Addr::new(10, 1, 2, 3),
            Ipv4Addr::new(10, 4, 5, 6),
            40000,
            5201,
            TCP_SYN,
        );
        assert_eq!(f.len(), 54);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(f[14], 0x45);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 40);
        assert_eq!(f[23], 6);
        assert_eq!(&f[26..30], &[10, 1, 2, 3]);
        assert_eq!(&f[30..34], &[10, 4, 5, 6]);
        assert_eq!(u16::from_be_bytes([f[34], f[35]]), 40000);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 5201);
        assert_eq!(f[46], 0x50);
        assert_eq!(f[47], TCP_SYN);
    }
}
