//! Pure translation of the compiler's output into the exact keys and values
//! of the BPF maps (`docs/maps.md`). The writer compares these "wire" forms
//! against what it reads back from the pinned maps, so both directions of
//! the translation must be canonical: LPM keys carry their address or port
//! masked to the prefix, exactly as they are stored.

use ipnetwork::IpNetwork;
use palisade_common::{
    DirPolicy, Endpoint, IpKey, PortKey, RuleBits, SpillKey, SpillValue, EP_AUDIT_EGRESS,
    EP_AUDIT_INGRESS, EP_DENY_ALL, EP_ISOLATED_EGRESS, EP_ISOLATED_INGRESS, FAMILY_V4, FAMILY_V6,
};
use palisade_compiler::{CompiledDirection, CompiledPod, PortPrefix};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// An LPM key as stored: (prefix length in bits, data).
pub type Lpm<K> = (u32, K);

/// The contents of the four inner maps of one pod direction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirMaps {
    pub identities: BTreeMap<u32, RuleBits>,
    pub cidrs: BTreeMap<Lpm<IpKey>, RuleBits>,
    pub ports: BTreeMap<Lpm<PortKey>, RuleBits>,
    pub spill: BTreeMap<SpillKey, SpillValue>,
}

/// The inner maps of both directions. `None` for a direction that is not
/// isolated: the classifier never looks its maps up, so none are created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMaps {
    pub ingress: Option<DirMaps>,
    pub egress: Option<DirMaps>,
}

impl PodMaps {
    pub fn is_empty(&self) -> bool {
        self.ingress.is_none() && self.egress.is_none()
    }
}

/// The `SERVICES` key of a Service frontend.
pub fn service_key(f: &palisade_compiler::Frontend) -> palisade_common::ServiceKey {
    palisade_common::ServiceKey {
        addr: ip_key(f.ip),
        proto: f.protocol.number(),
        port_be: f.port.to_be_bytes(),
    }
}

/// The identity trie: one full-length key per pod address.
pub fn ip_key(ip: IpAddr) -> IpKey {
    let mut addr = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            addr[..4].copy_from_slice(&v4.octets());
            IpKey {
                family: FAMILY_V4,
                addr,
            }
        }
        IpAddr::V6(v6) => {
            addr.copy_from_slice(&v6.octets());
            IpKey {
                family: FAMILY_V6,
                addr,
            }
        }
    }
}

/// LPM key of a host address: prefix 8 + 32 (IPv4) or 8 + 128 (IPv6).
pub fn host_key(ip: IpAddr) -> Lpm<IpKey> {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    (8 + len, ip_key(ip))
}

/// The address of a full-length (host) LPM key; `None` for shorter prefixes.
pub fn host_ip(key: Lpm<IpKey>) -> Option<IpAddr> {
    let (len, k) = key;
    match (k.family, len) {
        (FAMILY_V4, 40) => Some(IpAddr::from([k.addr[0], k.addr[1], k.addr[2], k.addr[3]])),
        (FAMILY_V6, 136) => Some(IpAddr::from(k.addr)),
        _ => None,
    }
}

/// LPM key of a CIDR: prefix 8 + cidr length, address masked to the prefix.
pub fn cidr_key(net: IpNetwork) -> Lpm<IpKey> {
    (8 + u32::from(net.prefix()), ip_key(net.network()))
}

/// LPM key of a port prefix: 8 (protocol) + `len` leading port bits, the
/// port masked to them and stored in network byte order.
pub fn port_key(p: PortPrefix) -> Lpm<PortKey> {
    let len = p.len.min(16);
    let mask: u16 = if len == 0 { 0 } else { u16::MAX << (16 - len) };
    (
        8 + u32::from(len),
        PortKey {
            proto: p.proto,
            port_be: (p.port & mask).to_be_bytes(),
        },
    )
}

fn dir_maps(d: &CompiledDirection) -> Option<DirMaps> {
    if !d.isolated {
        return None;
    }
    Some(DirMaps {
        identities: d.identities.clone(),
        cidrs: d
            .cidrs
            .iter()
            .map(|(net, bits)| (cidr_key(*net), *bits))
            .collect(),
        ports: d
            .ports
            .iter()
            .map(|(p, bits)| (port_key(*p), *bits))
            .collect(),
        spill: d.spill.clone(),
    })
}

fn dir_policy(d: &CompiledDirection) -> DirPolicy {
    if !d.isolated {
        return DirPolicy::default();
    }
    DirPolicy {
        any_peer: d.any_peer,
        any_port: d.any_port,
        admin: d.admin,
        deny: d.deny,
        pass: d.pass,
        any_port_class: d.any_port_class,
        spill_any_peer: u32::from(d.spill_any_peer),
        open: u32::from(d.open),
        _pad: 0,
    }
}

/// The pod's own addresses for anti-spoofing (first of each family first;
/// Kubernetes gives a pod at most one address per family).
pub fn endpoint_addrs(ips: &[IpAddr]) -> [IpKey; 2] {
    let mut out = [IpKey::default(); 2];
    for (slot, ip) in out.iter_mut().zip(ips.iter()) {
        *slot = ip_key(*ip);
    }
    out
}

/// What the writer programs for a pod: the endpoint record (its generation
/// is filled in by the writer) and the inner maps. A pod whose compilation
/// failed (`error`) is denied everything, with no inner maps.
pub fn encode_pod(pod: &CompiledPod) -> (Endpoint, PodMaps) {
    let addrs = endpoint_addrs(&pod.ips);
    if pod.error.is_some() {
        let ep = Endpoint {
            flags: EP_DENY_ALL,
            addrs,
            ..Endpoint::default()
        };
        return (ep, PodMaps::default());
    }
    let mut flags = 0;
    if pod.ingress.isolated {
        flags |= EP_ISOLATED_INGRESS;
    }
    if pod.egress.isolated {
        flags |= EP_ISOLATED_EGRESS;
    }
    if pod.ingress.audit {
        flags |= EP_AUDIT_INGRESS;
    }
    if pod.egress.audit {
        flags |= EP_AUDIT_EGRESS;
    }
    let ep = Endpoint {
        flags,
        generation: 0,
        ingress: dir_policy(&pod.ingress),
        egress: dir_policy(&pod.egress),
        addrs,
        slot: 0,
        epoch: 0,
    };
    (
        ep,
        PodMaps {
            ingress: dir_maps(&pod.ingress),
            egress: dir_maps(&pod.egress),
        },
    )
}

/// The endpoint record of a known interface whose pod policy is not known
/// yet: drop everything IP until it is programmed.
pub fn pending_endpoint() -> Endpoint {
    Endpoint {
        flags: palisade_common::EP_PENDING,
        ..Endpoint::default()
    }
}

/// Two endpoint records describe the same policy when they differ at most
/// in their generation and epoch.
pub fn same_policy(a: &Endpoint, b: &Endpoint) -> bool {
    Endpoint {
        generation: 0,
        epoch: 0,
        ..*a
    } == Endpoint {
        generation: 0,
        epoch: 0,
        ..*b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_common::{PROTO_TCP, PROTO_UDP};

    #[test]
    fn ipv4_keys_put_the_address_first_and_count_the_family_byte() {
        let (len, k) = host_key("10.1.2.3".parse().unwrap());
        assert_eq!(len, 40);
        assert_eq!(k.family, FAMILY_V4);
        assert_eq!(&k.addr[..4], &[10, 1, 2, 3]);
        assert!(k.addr[4..].iter().all(|b| *b == 0));
        assert_eq!(host_ip((len, k)), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(host_ip((39, k)), None);
    }

    #[test]
    fn ipv6_host_key_is_136_bits() {
        let (len, k) = host_key("fd00::7".parse().unwrap());
        assert_eq!(len, 136);
        assert_eq!(k.family, FAMILY_V6);
        assert_eq!(k.addr[15], 7);
        assert_eq!(k.addr[0], 0xfd);
        assert_eq!(host_ip((len, k)), Some("fd00::7".parse().unwrap()));
    }

    #[test]
    fn cidr_keys_are_masked_to_the_prefix() {
        let net: IpNetwork = "10.1.2.3/16".parse().unwrap();
        let (len, k) = cidr_key(net);
        assert_eq!(len, 24);
        assert_eq!(&k.addr[..4], &[10, 1, 0, 0]);
        let (len, k) = cidr_key("::/0".parse().unwrap());
        assert_eq!(len, 8);
        assert_eq!(k.family, FAMILY_V6);
        assert_eq!(k.addr, [0; 16]);
    }

    #[test]
    fn port_keys_are_big_endian_and_masked() {
        let (len, k) = port_key(PortPrefix {
            proto: PROTO_TCP,
            port: 443,
            len: 16,
        });
        assert_eq!(len, 24);
        assert_eq!(k.port_be, [0x01, 0xbb]);
        assert_eq!(k.proto, PROTO_TCP);
        // 8080/13 covers 8080..=8087: the low three bits are cleared.
        let (len, k) = port_key(PortPrefix {
            proto: PROTO_UDP,
            port: 8083,
            len: 13,
        });
        assert_eq!(len, 21);
        assert_eq!(u16::from_be_bytes(k.port_be), 8080);
        let (len, k) = port_key(PortPrefix {
            proto: PROTO_UDP,
            port: 9,
            len: 0,
        });
        assert_eq!(len, 8);
        assert_eq!(k.port_be, [0, 0]);
    }

    fn isolated(any_peer: u64) -> CompiledDirection {
        CompiledDirection {
            isolated: true,
            any_peer,
            ..CompiledDirection::default()
        }
    }

    #[test]
    fn endpoint_flags_follow_isolation() {
        let pod = CompiledPod {
            ips: vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            ingress: isolated(0b101),
            ..CompiledPod::default()
        };
        let (ep, maps) = encode_pod(&pod);
        assert_eq!(ep.flags, EP_ISOLATED_INGRESS);
        assert_eq!(ep.ingress.any_peer, 0b101);
        assert_eq!(ep.addrs[0].family, FAMILY_V4);
        assert_eq!(ep.addrs[1].family, FAMILY_V6);
        assert!(maps.ingress.is_some());
        assert!(maps.egress.is_none());
    }

    #[test]
    fn a_pod_with_an_error_is_denied_everything_without_maps() {
        let pod = CompiledPod {
            ingress: isolated(1),
            egress: isolated(1),
            error: Some("too many rules".into()),
            ..CompiledPod::default()
        };
        let (ep, maps) = encode_pod(&pod);
        assert_eq!(ep.flags, EP_DENY_ALL);
        assert!(maps.is_empty());
    }

    #[test]
    fn same_policy_ignores_only_the_generation_and_epoch() {
        let a = Endpoint {
            flags: EP_ISOLATED_EGRESS,
            generation: 0,
            ..Endpoint::default()
        };
        let b = Endpoint {
            generation: 1,
            epoch: 7,
            ..a
        };
        assert!(same_policy(&a, &b));
        let c = Endpoint {
            flags: EP_ISOLATED_INGRESS,
            ..a
        };
        assert!(!same_policy(&a, &c));
    }
}
