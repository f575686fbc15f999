//! From groups to map contents: bits for the first `RULE_BITS` groups,
//! classes and spill keys for the rest, capacity checks.

use super::cidr::{cidr_entries, CidrBlock};
use super::groups::Group;
use super::groupset::GroupSet;
use super::ports::port_entries;
use crate::types::{CompiledDirection, RuleGroup};
use ipnetwork::IpNetwork;
use palisade_common::{
    RuleBits, SpillKey, SpillValue, INNER_CIDR_MAX, INNER_IDENTITY_MAX, INNER_PORT_MAX,
    INNER_SPILL_MAX, RULE_BITS, SPILL_ALLOW, SPILL_ANY_PEER, SPILL_CIDR_CLASS, SPILL_DENY,
    SPILL_IDENTITY, SPILL_NONE, SPILL_PASS,
};
use palisade_policy::{Action, Tier};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Class numbers of spilled-group sets, unique within one pod direction.
#[derive(Default)]
struct Classes {
    ids: HashMap<GroupSet, u32>,
    sets: BTreeMap<u32, GroupSet>,
}

impl Classes {
    /// The class of the spilled part of `set` (0 when it has none).
    fn of(&mut self, set: &GroupSet) -> u32 {
        let spilled = set.spilled();
        if spilled.is_empty() {
            return 0;
        }
        if let Some(&c) = self.ids.get(&spilled) {
            return c;
        }
        let c = self.ids.len() as u32 + 1;
        self.ids.insert(spilled.clone(), c);
        self.sets.insert(c, spilled);
        c
    }
}

/// Builds one isolated direction; `Err` names the capacity exceeded.
pub fn assemble(groups: Vec<Group>) -> Result<CompiledDirection, String> {
    let spilled = |g: usize| g as u32 >= RULE_BITS;
    let bit = |g: usize| if spilled(g) { 0 } else { 1u64 << g };
    let mut out = CompiledDirection {
        isolated: true,
        ..CompiledDirection::default()
    };
    let mut classes = Classes::default();

    // Ports.
    let port_sets: Vec<_> = groups.iter().map(|g| g.ports.as_deref()).collect();
    for (prefix, set) in port_entries(&port_sets) {
        let class = classes.of(&set);
        out.ports.insert(
            prefix,
            RuleBits {
                bits: set.bits(),
                class,
                _pad: 0,
            },
        );
    }
    let mut any_port_spilled = GroupSet::default();
    for (g, group) in groups.iter().enumerate() {
        if group.ports.is_none() {
            out.any_port |= bit(g);
            if spilled(g) {
                any_port_spilled.insert(g);
            }
        }
        if group.peers.any {
            out.any_peer |= bit(g);
            if spilled(g) {
                out.spill_any_peer = true;
            }
        }
    }
    out.any_port_class = classes.of(&any_port_spilled);

    // Peers: identities, then address blocks.
    let mut identities: BTreeMap<u32, GroupSet> = BTreeMap::new();
    let mut blocks = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        for id in &group.peers.identities {
            identities.entry(*id).or_default().insert(g);
        }
        for (cidr, except) in &group.peers.blocks {
            blocks.push(CidrBlock {
                group: g,
                cidr: *cidr,
                except: except.clone(),
            });
        }
        for addr in &group.peers.addrs {
            blocks.push(CidrBlock {
                group: g,
                cidr: IpNetwork::from(*addr),
                except: vec![],
            });
        }
    }
    for (id, set) in &identities {
        if set.bits() != 0 {
            out.identities.insert(
                *id,
                RuleBits {
                    bits: set.bits(),
                    class: 0,
                    _pad: 0,
                },
            );
        }
    }
    let mut cidr_classes_of_group: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for (net, set) in cidr_entries(&blocks) {
        let class = classes.of(&set);
        out.cidrs.insert(
            net,
            RuleBits {
                bits: set.bits(),
                class,
                _pad: 0,
            },
        );
    }
    for (&c, set) in &classes.sets {
        for g in set.iter() {
            cidr_classes_of_group.entry(g).or_default().push(c);
        }
    }
    let cidr_classes: BTreeSet<u32> = out
        .cidrs
        .values()
        .map(|v| v.class)
        .filter(|&c| c != 0)
        .collect();

    // Spill: for each port class k and each spilled group g in it, every
    // peer of g (any, identity, CIDR class containing g) with k.
    let mut port_classes: BTreeSet<u32> = out
        .ports
        .values()
        .map(|v| v.class)
        .filter(|&c| c != 0)
        .collect();
    if out.any_port_class != 0 {
        port_classes.insert(out.any_port_class);
    }
    let mut ids_of_group: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for (id, set) in &identities {
        for g in set.spilled().iter() {
            ids_of_group.entry(g).or_default().push(*id);
        }
    }
    for &k in &port_classes {
        for g in classes.sets[&k].iter() {
            let value = spill_value(&groups[g], g);
            let mut add = |key: SpillKey| {
                out.spill_groups.entry(key).or_insert(g as u32);
                let v = out.spill.entry(key).or_insert(SpillValue {
                    first: SPILL_NONE,
                    after_admin: SPILL_NONE,
                });
                v.first = v.first.min(value.first);
                v.after_admin = v.after_admin.min(value.after_admin);
            };
            if groups[g].peers.any {
                add(SpillKey {
                    kind: SPILL_ANY_PEER,
                    peer: 0,
                    port_class: k,
                });
            }
            for &id in ids_of_group.get(&g).into_iter().flatten() {
                add(SpillKey {
                    kind: SPILL_IDENTITY,
                    peer: id,
                    port_class: k,
                });
            }
            for &c in cidr_classes_of_group.get(&g).into_iter().flatten() {
                if cidr_classes.contains(&c) {
                    add(SpillKey {
                        kind: SPILL_CIDR_CLASS,
                        peer: c,
                        port_class: k,
                    });
                }
            }
        }
    }
    out.classes = classes
        .sets
        .into_iter()
        .map(|(c, set)| (c, set.iter().map(|g| g as u32).collect()))
        .collect();
    for (g, group) in groups.iter().enumerate().take(RULE_BITS as usize) {
        match group.cluster.first().map(|r| r.action) {
            Some(Action::Deny) => out.deny |= 1 << g,
            Some(Action::Pass) => out.pass |= 1 << g,
            _ => {}
        }
    }
    out.groups = groups
        .into_iter()
        .map(|g| RuleGroup {
            rules: g.rules,
            cluster: g.cluster,
        })
        .collect();
    check_capacity(&out)?;
    Ok(out)
}

/// The spill value of spilled group `g` alone: its number and action, and
/// the same again as `after_admin` unless it is of the Admin tier.
fn spill_value(group: &Group, g: usize) -> SpillValue {
    let action = group.cluster.first().map(|r| (r.tier, r.action));
    let code = match action {
        Some((_, Action::Deny)) => SPILL_DENY,
        Some((Tier::Admin, Action::Pass)) => SPILL_PASS,
        _ => SPILL_ALLOW,
    };
    let first = (g as u32) << 2 | code;
    let admin = matches!(action, Some((Tier::Admin, _)));
    SpillValue {
        first,
        after_admin: if admin { SPILL_NONE } else { first },
    }
}

fn check_capacity(d: &CompiledDirection) -> Result<(), String> {
    let checks = [
        ("identity", d.identities.len(), INNER_IDENTITY_MAX),
        ("CIDR", d.cidrs.len(), INNER_CIDR_MAX),
        ("port", d.ports.len(), INNER_PORT_MAX),
        ("spill", d.spill.len(), INNER_SPILL_MAX),
    ];
    for (what, len, max) in checks {
        if len > max as usize {
            return Err(format!(
                "{len} {what} entries exceed the map capacity of {max}"
            ));
        }
    }
    Ok(())
}
