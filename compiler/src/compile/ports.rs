//! Port sets: ranges split into aligned prefixes, and the port trie
//! contents (overlaps flattened like CIDRs).

use super::groupset::GroupSet;
use super::prefix::{flatten, Contribution, Prefix};
use crate::types::PortPrefix;
use std::collections::BTreeMap;

/// An inclusive port range of one protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub proto: u8,
    pub lo: u16,
    pub hi: u16,
}

/// Sorts and merges overlapping or adjacent ranges of the same protocol, so
/// that equal port sets get equal keys (and share a rule group).
pub fn normalize(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort_unstable();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        if let Some(last) = out.last_mut() {
            if last.proto == r.proto && u32::from(r.lo) <= u32::from(last.hi) + 1 {
                last.hi = last.hi.max(r.hi);
                continue;
            }
        }
        out.push(r);
    }
    out
}

/// The minimal set of aligned prefixes `(port, len)` covering `lo..=hi`.
pub fn range_prefixes(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    while lo <= hi {
        // Largest aligned block starting at lo that stays within hi.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            1 << lo.trailing_zeros().min(16)
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push((lo as u16, 16 - size.trailing_zeros() as u8));
        lo += size;
    }
    out
}

pub fn to_prefix(p: PortPrefix) -> Prefix {
    Prefix::new(p.proto, u128::from(p.port) << 112, p.len)
}

fn from_prefix(p: Prefix) -> PortPrefix {
    PortPrefix {
        proto: p.space,
        port: (p.value >> 112) as u16,
        len: p.len,
    }
}

/// Port trie contents: for each group with a port set, its ranges; groups
/// with `None` (any port) are not in the trie. Returns prefix -> groups.
pub fn port_entries(groups: &[Option<&[PortRange]>]) -> BTreeMap<PortPrefix, GroupSet> {
    let mut contribs = Vec::new();
    let mut block_group = Vec::new();
    for (g, ranges) in groups.iter().enumerate() {
        let Some(ranges) = ranges else { continue };
        for r in ranges.iter() {
            for (port, len) in range_prefixes(r.lo, r.hi) {
                contribs.push(Contribution {
                    prefix: to_prefix(PortPrefix {
                        proto: r.proto,
                        port,
                        len,
                    }),
                    block: block_group.len(),
                    negative: false,
                });
                block_group.push(g);
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

    fn covered(prefixes: &[(u16, u8)]) -> Vec<u16> {
        let mut v: Vec<u16> = prefixes
            .iter()
            .flat_map(|&(p, len)| {
                let size = 1u32 << (16 - len);
                (u32::from(p)..u32::from(p) + size).map(|x| x as u16)
            })
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn ranges_become_minimal_aligned_prefixes() {
        assert_eq!(range_prefixes(80, 80), vec![(80, 16)]);
        assert_eq!(range_prefixes(0, 65535), vec![(0, 0)]);
        assert_eq!(range_prefixes(1, 65535).len(), 16);
        assert_eq!(range_prefixes(1024, 2047), vec![(1024, 6)]);
        assert_eq!(range_prefixes(65535, 65535), vec![(65535, 16)]);
        for &(lo, hi) in &[(1u16, 7u16), (3, 300), (8000, 8080), (65000, 65535), (0, 1)] {
            let ps = range_prefixes(lo, hi);
            assert_eq!(covered(&ps), (lo..=hi).collect::<Vec<_>>(), "{lo}-{hi}");
            for (p, len) in ps {
                let size = 1u32 << (16 - len);
                assert_eq!(u32::from(p) % size, 0, "aligned");
            }
        }
    }

    #[test]
    fn normalize_merges_overlaps_and_neighbours_per_protocol() {
        let r = |proto, lo, hi| PortRange { proto, lo, hi };
        assert_eq!(
            normalize(vec![
                r(6, 10, 20),
                r(17, 5, 5),
                r(6, 21, 30),
                r(6, 15, 16),
                r(6, 40, 40)
            ]),
            vec![r(6, 10, 30), r(6, 40, 40), r(17, 5, 5)]
        );
    }

    #[test]
    fn overlapping_ranges_flatten_to_unions() {
        let a = [PortRange {
            proto: 6,
            lo: 1000,
            hi: 2000,
        }];
        let b = [
            PortRange {
                proto: 6,
                lo: 1500,
                hi: 1500,
            },
            PortRange {
                proto: 17,
                lo: 53,
                hi: 53,
            },
        ];
        let entries = port_entries(&[Some(&a), None, Some(&b)]);
        let lookup = |proto: u8, port: u16| -> Vec<usize> {
            let key = to_prefix(PortPrefix {
                proto,
                port,
                len: 16,
            });
            entries
                .iter()
                .filter(|(k, _)| to_prefix(**k).contains(&key))
                .max_by_key(|(k, _)| k.len)
                .map(|(_, v)| v.iter().collect())
                .unwrap_or_default()
        };
        assert_eq!(lookup(6, 999), Vec::<usize>::new());
        assert_eq!(lookup(6, 1000), vec![0]);
        assert_eq!(lookup(6, 1500), vec![0, 2]);
        assert_eq!(lookup(6, 2000), vec![0]);
        assert_eq!(lookup(6, 2001), Vec::<usize>::new());
        assert_eq!(lookup(17, 53), vec![2]);
        assert_eq!(lookup(132, 53), Vec::<usize>::new());
    }
}
