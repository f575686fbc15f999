//! CIDR trie contents: ipBlocks (with their `except` holes) and the pod
//! addresses of egress named-port rules, flattened so that the longest match
//! of any address carries exactly the groups whose blocks contain it.

use super::groupset::GroupSet;
use super::prefix::{flatten, Contribution, Prefix};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use palisade_common::{FAMILY_V4, FAMILY_V6};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One block of addresses a group allows: `cidr` minus the `except` holes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CidrBlock {
    pub group: usize,
    pub cidr: IpNetwork,
    pub except: Vec<IpNetwork>,
}

pub fn to_prefix(net: IpNetwork) -> Prefix {
    match net {
        IpNetwork::V4(n) => Prefix::new(
            FAMILY_V4,
            u128::from(u32::from(n.network())) << 96,
            n.prefix(),
        ),
        IpNetwork::V6(n) => Prefix::new(FAMILY_V6, u128::from(n.network()), n.prefix()),
    }
}

/// The prefix of a single address (/32 or /128).
pub fn addr_prefix(addr: IpAddr) -> Prefix {
    match addr {
        IpAddr::V4(a) => Prefix::new(FAMILY_V4, u128::from(u32::from(a)) << 96, 32),
        IpAddr::V6(a) => Prefix::new(FAMILY_V6, u128::from(a), 128),
    }
}

fn from_prefix(p: Prefix) -> IpNetwork {
    if p.space == FAMILY_V4 {
        let addr = ((p.value >> 96) as u32).into();
        IpNetwork::V4(Ipv4Network::new(addr, p.len).expect("length checked on entry"))
    } else {
        IpNetwork::V6(Ipv6Network::new(p.value.into(), p.len).expect("length checked on entry"))
    }
}

/// Flattened CIDR entries (network address normalized) -> groups.
/// Excepts of the other family than their block are ignored: they cannot
/// intersect it.
pub fn cidr_entries(blocks: &[CidrBlock]) -> BTreeMap<IpNetwork, GroupSet> {
    let mut contribs = Vec::new();
    let mut block_group = Vec::with_capacity(blocks.len());
    for (b, block) in blocks.iter().enumerate() {
        block_group.push(block.group);
        let cidr = to_prefix(block.cidr);
        contribs.push(Contribution {
            prefix: cidr,
            block: b,
            negative: false,
        });
        for e in &block.except {
            let hole = to_prefix(*e);
            if hole.space == cidr.space {
                contribs.push(Contribution {
                    prefix: hole,
                    block: b,
                    negative: true,
                });
            }
        }
    }
    flatten(contribs, &block_group)
        .into_iter()
        .map(|(p, v)| (from_prefix(p), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn lpm(entries: &BTreeMap<IpNetwork, GroupSet>, addr: &str) -> Vec<usize> {
        let a: IpAddr = addr.parse().unwrap();
        let key = addr_prefix(a);
        entries
            .iter()
            .filter(|(k, _)| to_prefix(**k).contains(&key))
            .max_by_key(|(k, _)| k.prefix())
            .map(|(_, v)| v.iter().collect())
            .unwrap_or_default()
    }

    #[test]
    fn except_holes_and_overlaps() {
        let blocks = vec![
            CidrBlock {
                group: 0,
                cidr: net("10.0.0.0/8"),
                except: vec![net("10.1.0.0/16")],
            },
            CidrBlock {
                group: 1,
                cidr: net("10.1.2.0/24"),
                except: vec![],
            },
            CidrBlock {
                group: 2,
                cidr: net("0.0.0.0/0"),
                except: vec![net("10.0.0.0/8")],
            },
        ];
        let e = cidr_entries(&blocks);
        assert_eq!(lpm(&e, "10.2.3.4"), vec![0]);
        assert_eq!(lpm(&e, "10.1.3.4"), Vec::<usize>::new());
        assert_eq!(lpm(&e, "10.1.2.9"), vec![1]);
        assert_eq!(lpm(&e, "192.168.1.1"), vec![2]);
        // IPv6 is a separate key space: 0.0.0.0/0 does not cover it.
        assert_eq!(lpm(&e, "fd00::1"), Vec::<usize>::new());
        // The hole 10.1/16 needs an explicit empty entry to beat 10/8.
        assert_eq!(e.get(&net("10.1.0.0/16")).map(|s| s.is_empty()), Some(true));
    }

    #[test]
    fn except_equal_to_cidr_and_host_bits_normalized() {
        let blocks = vec![
            CidrBlock {
                group: 0,
                cidr: net("10.0.0.5/24"),
                except: vec![net("10.0.0.0/24")],
            },
            CidrBlock {
                group: 1,
                cidr: net("::/0"),
                except: vec![net("fd00::/8"), net("10.0.0.0/8")],
            },
            CidrBlock {
                group: 1,
                cidr: net("fd00::7/128"),
                except: vec![],
            },
        ];
        let e = cidr_entries(&blocks);
        assert_eq!(lpm(&e, "10.0.0.5"), Vec::<usize>::new());
        assert_eq!(lpm(&e, "2001:db8::1"), vec![1]);
        assert_eq!(lpm(&e, "fd00::6"), Vec::<usize>::new());
        assert_eq!(lpm(&e, "fd00::7"), vec![1]);
        assert!(e.keys().all(|k| k.ip() == k.network()));
    }
}
