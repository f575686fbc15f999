//! The policy lookup of one direction check, exactly as `docs/maps.md`
//! ("The lookup") states it.

use aya_ebpf::{helpers::bpf_map_lookup_elem, maps::lpm_trie::Key};
use core::{ffi::c_void, ptr};
use palisade_common::{
    DirPolicy, IpKey, PolicyKey, PortKey, RuleBits, SpillKey, IDENTITY_WORLD, PROTO_SCTP,
    PROTO_TCP, PROTO_UDP, SPILL_ANY_PEER, SPILL_CIDR_CLASS, SPILL_IDENTITY,
};

use crate::maps::{IDENTITIES, POLICY_CIDR, POLICY_IDENTITY, POLICY_PORT, POLICY_SPILL};

/// LPM prefix lengths of full-length lookups: the family or protocol byte,
/// then the whole address or port.
const IP_KEY_BITS: u32 = 8 + 128;
const PORT_KEY_BITS: u32 = 8 + 16;

/// `CtValue::rule` when a spilled group allowed the flow.
pub const RULE_SPILLED: u32 = u32::MAX - 1;

/// Reads a `RuleBits` value. LPM trie values sit right after the key data
/// (17 or 3 bytes), so they are not 8-aligned: read them unaligned.
#[inline(always)]
fn read_bits(p: Option<*mut RuleBits>) -> RuleBits {
    match p {
        Some(p) => unsafe { ptr::read_unaligned(p) },
        None => RuleBits::default(),
    }
}

/// The identity of the peer address in `key`: the node-wide trie, WORLD when
/// absent.
#[inline(always)]
fn identity(key: &Key<IpKey>) -> u32 {
    let map = ptr::from_ref(&IDENTITIES).cast_mut().cast::<c_void>();
    // The trie's u32 value sits at offset 17 of the node data: unaligned.
    let v = unsafe { bpf_map_lookup_elem(map, ptr::from_ref(key).cast()) }.cast::<u32>();
    if v.is_null() {
        IDENTITY_WORLD
    } else {
        unsafe { ptr::read_unaligned(v) }
    }
}

/// The port used for the policy lookup: the destination port for protocols
/// with ports, 0 (at full length) for every other protocol, ICMP included.
#[inline(always)]
pub fn policy_port(proto: u8, dport: u16) -> u16 {
    match proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => dport,
        _ => 0,
    }
}

#[inline(always)]
fn spill_has(key: &PolicyKey, kind: u32, peer: u32, port_class: u32) -> bool {
    let sk = SpillKey {
        kind,
        peer,
        port_class,
    };
    unsafe { POLICY_SPILL.get_value_ptr_mut(key, &sk) }.is_some()
}

/// Checks one direction of an isolated pod. `Some(rule)` when allowed: the
/// lowest set bit of the hit (the winning rule group) or `RULE_SPILLED`.
/// `ip` and `pk` are lookup keys in the per-CPU scratch.
#[inline(always)]
pub fn check(
    key: &PolicyKey,
    dir: &DirPolicy,
    peer: &IpKey,
    proto: u8,
    port: u16,
    ip: &mut Key<IpKey>,
    pk: &mut Key<PortKey>,
) -> Option<u32> {
    ip.prefix_len = IP_KEY_BITS;
    ip.data = *peer;
    pk.prefix_len = PORT_KEY_BITS;
    pk.data = PortKey {
        proto,
        port_be: port.to_be_bytes(),
    };
    let id = identity(ip);
    let rid = read_bits(unsafe { POLICY_IDENTITY.get_value_ptr_mut(key, &id) });
    let rc = read_bits(unsafe { POLICY_CIDR.get_value_ptr_mut(key, ip) });
    let rp = read_bits(unsafe { POLICY_PORT.get_value_ptr_mut(key, pk) });
    let hit = (dir.any_peer | rid.bits | rc.bits) & (dir.any_port | rp.bits);
    if hit != 0 {
        return Some(hit.trailing_zeros());
    }
    for k in [rp.class, dir.any_port_class] {
        if k == 0 {
            continue;
        }
        if dir.spill_any_peer != 0 && spill_has(key, SPILL_ANY_PEER, 0, k) {
            return Some(RULE_SPILLED);
        }
        if spill_has(key, SPILL_IDENTITY, id, k) {
            return Some(RULE_SPILLED);
        }
        if rc.class != 0 && spill_has(key, SPILL_CIDR_CLASS, rc.class, k) {
            return Some(RULE_SPILLED);
        }
    }
    None
}
