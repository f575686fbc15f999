//! Flattening of nested prefixes (CIDRs, port prefixes) into longest-match
//! entries.
//!
//! Every prefix of a family is laminar: two prefixes either nest or are
//! disjoint. Sorted by (space, address, length) they come in depth-first
//! pre-order, so one pass with a stack of open ancestors computes, for each
//! prefix, the set of groups that cover the addresses whose longest match it
//! is. A block (an ipBlock, or one port range) covers such an address iff
//! one of its positive prefixes is an ancestor-or-self and none of its
//! negative (except) prefixes is.

use super::groupset::GroupSet;
use std::collections::BTreeMap;

/// A prefix in some key space (address family, or protocol): the value is
/// left-aligned in 128 bits, `len` leading bits significant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub space: u8,
    pub value: u128,
    pub len: u8,
}

impl Prefix {
    pub fn new(space: u8, value: u128, len: u8) -> Prefix {
        Prefix {
            space,
            value: value & mask(len),
            len,
        }
    }

    /// `other` lies inside `self` (or is equal).
    pub fn contains(&self, other: &Prefix) -> bool {
        self.space == other.space
            && self.len <= other.len
            && (other.value & mask(self.len)) == self.value
    }
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// One contribution: `block` covers `prefix` (or, negative, excepts it).
#[derive(Clone, Copy, Debug)]
pub struct Contribution {
    pub prefix: Prefix,
    pub block: usize,
    pub negative: bool,
}

/// Flattens contributions of blocks (each belonging to one group, given by
/// `block_group`) into entries: every returned prefix maps to the groups
/// covering the addresses whose longest match among the returned prefixes it
/// is. Entries that would repeat their enclosing entry's value (or be empty
/// with no enclosing entry) are left out, since the longest match then gives
/// the same answer without them.
pub fn flatten(
    mut contribs: Vec<Contribution>,
    block_group: &[usize],
) -> BTreeMap<Prefix, GroupSet> {
    contribs.sort_unstable_by_key(|c| (c.prefix, c.block, c.negative));
    let mut pos = vec![0u32; block_group.len()];
    let mut neg = vec![0u32; block_group.len()];
    let mut group_active: Vec<u32> = vec![0; block_group.iter().max().map_or(0, |m| m + 1)];
    let mut current = GroupSet::default();

    struct Open {
        prefix: Prefix,
        range: std::ops::Range<usize>,
        value: GroupSet,
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut out = BTreeMap::new();

    // Applies (or undoes) the contributions in `range`.
    let mut apply = |range: std::ops::Range<usize>,
                     undo: bool,
                     contribs: &[Contribution],
                     current: &mut GroupSet| {
        for c in &contribs[range] {
            let b = c.block;
            let was = pos[b] > 0 && neg[b] == 0;
            let counter = if c.negative { &mut neg[b] } else { &mut pos[b] };
            if undo {
                *counter -= 1;
            } else {
                *counter += 1;
            }
            let is = pos[b] > 0 && neg[b] == 0;
            let g = block_group[b];
            if is && !was {
                group_active[g] += 1;
                if group_active[g] == 1 {
                    current.insert(g);
                }
            } else if was && !is {
                group_active[g] -= 1;
                if group_active[g] == 0 {
                    current.remove(g);
                }
            }
        }
    };

    let mut i = 0;
    while i < contribs.len() {
        let prefix = contribs[i].prefix;
        let mut j = i;
        while j < contribs.len() && contribs[j].prefix == prefix {
            j += 1;
        }
        while let Some(top) = stack.last() {
            if top.prefix.contains(&prefix) {
                break;
            }
            let top = stack.pop().expect("non-empty");
            apply(top.range, true, &contribs, &mut current);
        }
        apply(i..j, false, &contribs, &mut current);
        let enclosing = stack.last().map(|o| &o.value);
        let redundant = match enclosing {
            Some(v) => *v == current,
            None => current.is_empty(),
        };
        if !redundant {
            out.insert(prefix, current.clone());
        }
        stack.push(Open {
            prefix,
            range: i..j,
            value: current.clone(),
        });
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(value: u8, len: u8) -> Prefix {
        Prefix::new(4, u128::from(value) << 120, len)
    }

    fn set(gs: &[usize]) -> GroupSet {
        let mut s = GroupSet::default();
        for &g in gs {
            s.insert(g);
        }
        s
    }

    /// Longest match over the flattened entries.
    fn lpm(entries: &BTreeMap<Prefix, GroupSet>, value: u8) -> GroupSet {
        let addr = p(value, 8);
        entries
            .iter()
            .filter(|(k, _)| k.contains(&addr))
            .max_by_key(|(k, _)| k.len)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    #[test]
    fn nested_blocks_with_holes() {
        // group 0: 0/1 except 0/3; group 1: 0/2.
        let contribs = vec![
            Contribution {
                prefix: p(0, 1),
                block: 0,
                negative: false,
            },
            Contribution {
                prefix: p(0, 3),
                block: 0,
                negative: true,
            },
            Contribution {
                prefix: p(0, 2),
                block: 1,
                negative: false,
            },
        ];
        let out = flatten(contribs, &[0, 1]);
        for v in 0..=255u8 {
            let mut want = vec![];
            if (32..128).contains(&v) {
                want.push(0);
            }
            if v < 64 {
                want.push(1);
            }
            assert_eq!(lpm(&out, v), set(&want), "value {v}");
        }
        // The hole is an entry of its own (group 1 still covers it).
        assert_eq!(out.get(&p(0, 3)), Some(&set(&[1])));
    }

    #[test]
    fn hole_equal_to_block_and_redundant_entries_dropped() {
        let contribs = vec![
            Contribution {
                prefix: p(0, 4),
                block: 0,
                negative: false,
            },
            Contribution {
                prefix: p(0, 4),
                block: 0,
                negative: true,
            },
            Contribution {
                prefix: p(64, 2),
                block: 1,
                negative: false,
            },
            Contribution {
                prefix: p(64, 3),
                block: 2,
                negative: false,
            },
        ];
        let out = flatten(contribs, &[0, 1, 1]);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out.get(&p(64, 2)), Some(&set(&[1])));
    }

    #[test]
    fn same_group_two_blocks_one_excepted() {
        // Group 0 has 0/1 except 0/2, and another block 0/3: the hole is
        // still covered by the second block below 32.
        let contribs = vec![
            Contribution {
                prefix: p(0, 1),
                block: 0,
                negative: false,
            },
            Contribution {
                prefix: p(0, 2),
                block: 0,
                negative: true,
            },
            Contribution {
                prefix: p(0, 3),
                block: 1,
                negative: false,
            },
        ];
        let out = flatten(contribs, &[0, 0]);
        for v in 0..=255u8 {
            let want = if v < 32 || (64..128).contains(&v) {
                set(&[0])
            } else {
                set(&[])
            };
            assert_eq!(lpm(&out, v), want, "value {v}");
        }
    }
}
