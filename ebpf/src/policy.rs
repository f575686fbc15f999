//! The policy lookup of one direction check, with the result `docs/maps.md`
//! ("The lookup") states; the port goes first so that peer lookups which
//! cannot change the answer are skipped (see `check`).

use aya_ebpf::{helpers::bpf_map_lookup_elem, maps::lpm_trie::Key};
use core::{ffi::c_void, ptr};
use palisade_common::{
    DirPolicy, Endpoint, IpKey, PolicyKey, PortKey, RuleBits, SpillKey, DIR_INGRESS, IDENTITY_HOST,
    IDENTITY_WORLD, PROTO_SCTP, PROTO_TCP, PROTO_UDP, RULE_DENY_FLAG, RULE_NODE,
    RULE_NOT_ISOLATED, RULE_SPILLED, SPILL_ANY_PEER, SPILL_CIDR_CLASS, SPILL_IDENTITY,
};

use crate::maps::{
    SpillInner, IDENTITIES, POLICY_CIDR, POLICY_IDENTITY, POLICY_PORT, POLICY_SPILL,
};

/// LPM prefix lengths of full-length lookups: the family or protocol byte,
/// then the whole address or port.
pub const IP_KEY_BITS: u32 = 8 + 128;
pub const PORT_KEY_BITS: u32 = 8 + 16;

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
pub fn identity(key: &Key<IpKey>) -> u32 {
    let map = ptr::from_ref(&IDENTITIES).cast_mut().cast::<c_void>();
    // The trie's u32 value sits at offset 17 of the node data: unaligned.
    let v = unsafe { bpf_map_lookup_elem(map, ptr::from_ref(key).cast()) }.cast::<u32>();
    if v.is_null() {
        IDENTITY_WORLD
    } else {
        unsafe { ptr::read_unaligned(v) }
    }
}

/// What a refusal becomes when the peer may be the pod's own node
/// (`node_ok`): `RULE_NODE` when its identity (`id`, or looked up now when
/// the lookup was skipped) is `IDENTITY_HOST`, else refused. Node traffic is
/// allowed whatever the policy, so it is only ever asked on this path. Out
/// of line: it needs no stack of its own, and inlined at each refusal it
/// grew its callers' frames past the verifier's 512-byte combined limit.
#[inline(never)]
fn refused(node_ok: bool, id: Option<u32>, ip: &Key<IpKey>) -> Option<u32> {
    if !node_ok {
        return None;
    }
    let id = match id {
        Some(id) => id,
        None => identity(ip),
    };
    (id == IDENTITY_HOST).then_some(RULE_NODE)
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

/// Whether the pod's spill table (the inner map `spill`, looked up once per
/// check) holds `(kind, peer, port_class)`.
#[inline(always)]
fn spill_has(spill: &SpillInner, kind: u32, peer: u32, port_class: u32) -> bool {
    let sk = SpillKey {
        kind,
        peer,
        port_class,
    };
    let map = ptr::from_ref(spill).cast_mut().cast::<c_void>();
    !unsafe { bpf_map_lookup_elem(map, ptr::from_ref(&sk).cast()) }.is_null()
}

/// True when `hit`'s lowest set bit is also the lowest bit `port_bits`
/// allows and is no Pass: no lookup still to come can produce a lower
/// winner, so the remaining peer lookups cannot change the answer. (A
/// Pass needs the whole hit: the winner is then the lowest bit after the
/// Admin tier's.)
#[inline(always)]
fn settled(dir: &DirPolicy, hit: u64, port_bits: u64) -> bool {
    hit != 0
        && hit.trailing_zeros() == port_bits.trailing_zeros()
        && hit & hit.wrapping_neg() & dir.pass == 0
}

/// The verdict of a non-empty `hit` (the whole one, or a settled one):
/// an Admin-tier Pass as lowest bit clears the Admin tier's bits; then the
/// lowest bit left wins. A Deny bit refuses with `RULE_DENY_FLAG` (unless
/// the peer is the pod's own node), any other allows. `None` when the Pass
/// left nothing: the caller goes on as if no bit had hit.
#[inline(always)]
fn winner(
    dir: &DirPolicy,
    mut hit: u64,
    node_ok: bool,
    id: Option<u32>,
    ip: &Key<IpKey>,
) -> Option<Option<u32>> {
    if hit & hit.wrapping_neg() & dir.pass & dir.admin != 0 {
        hit &= !dir.admin;
        if hit == 0 {
            return None;
        }
    }
    let bit = hit.trailing_zeros();
    if (dir.deny >> bit) & 1 == 0 {
        return Some(Some(bit));
    }
    Some(refused(node_ok, id, ip).or(Some(bit | RULE_DENY_FLAG)))
}

/// The verdict when no bit decided: allowed in a direction no
/// NetworkPolicy isolates (`open`), else refused by the isolation.
#[inline(always)]
fn unmatched(dir: &DirPolicy, node_ok: bool, id: Option<u32>, ip: &Key<IpKey>) -> Option<u32> {
    if dir.open != 0 {
        return Some(RULE_NOT_ISOLATED);
    }
    refused(node_ok, id, ip)
}

/// Checks one direction of a pod. `Some(rule)` when allowed: the
/// lowest set bit of the hit (the winning rule group), `RULE_SPILLED`, or
/// `RULE_NOT_ISOLATED` in an `open` direction no bit decided;
/// `Some(bit | RULE_DENY_FLAG)` when a ClusterNetworkPolicy Deny refused
/// it (see [`cluster_deny`]); `None` when the isolation refused it.
/// `ip` (the peer at full length) and `pk` (protocol and policy port at full
/// length) are the filled LPM keys.
///
/// The port is looked up first: it bounds what the peer lookups can still
/// add, so they are skipped once the answer is known (no port allowed and no
/// spilled group, or the lowest allowed bit already hit). The result is
/// always the one the full sequence of `docs/maps.md` gives.
///
/// `node_ok`: the peer would be the pod's own node if its identity is
/// `IDENTITY_HOST` (see `hook::node_ok`); such a refusal is `RULE_NODE`.
#[inline(always)]
pub fn check(
    key: &PolicyKey,
    dir: &DirPolicy,
    ip: &Key<IpKey>,
    pk: &Key<PortKey>,
    node_ok: bool,
) -> Option<u32> {
    let rp = read_bits(unsafe { POLICY_PORT.get_value_ptr_mut(key, pk) });
    let port_bits = dir.any_port | rp.bits;
    let spill = rp.class != 0 || dir.any_port_class != 0;
    if port_bits == 0 && !spill {
        return unmatched(dir, node_ok, None, ip);
    }
    let mut hit = dir.any_peer & port_bits;
    if settled(dir, hit, port_bits) {
        return winner(dir, hit, node_ok, None, ip).flatten();
    }
    let id = identity(ip);
    let rid = read_bits(unsafe { POLICY_IDENTITY.get_value_ptr_mut(key, &id) });
    hit |= rid.bits & port_bits;
    if settled(dir, hit, port_bits) {
        return winner(dir, hit, node_ok, Some(id), ip).flatten();
    }
    let rc = read_bits(unsafe { POLICY_CIDR.get_value_ptr_mut(key, ip) });
    hit |= rc.bits & port_bits;
    if hit != 0 {
        if let Some(v) = winner(dir, hit, node_ok, Some(id), ip) {
            return v;
        }
    }
    if !spill {
        return unmatched(dir, node_ok, Some(id), ip);
    }
    // No spill table: no spilled group allows anything. Spilled groups
    // are NetworkPolicy groups only, so the direction is not `open`.
    let Some(table) = (unsafe { POLICY_SPILL.get(key) }) else {
        return refused(node_ok, Some(id), ip);
    };
    for k in [rp.class, dir.any_port_class] {
        if k == 0 {
            continue;
        }
        if dir.spill_any_peer != 0 && spill_has(table, SPILL_ANY_PEER, 0, k) {
            return Some(RULE_SPILLED);
        }
        if spill_has(table, SPILL_IDENTITY, id, k) {
            return Some(RULE_SPILLED);
        }
        if rc.class != 0 && spill_has(table, SPILL_CIDR_CLASS, rc.class, k) {
            return Some(RULE_SPILLED);
        }
    }
    refused(node_ok, Some(id), ip)
}

/// `check` for hook `ifindex` in direction `dir` of endpoint `ep`.
#[inline(always)]
pub fn check_dir(
    ifindex: u32,
    dir: u32,
    ep: &Endpoint,
    ip: &Key<IpKey>,
    pk: &Key<PortKey>,
    node_ok: bool,
) -> Option<u32> {
    let d = if dir == DIR_INGRESS {
        &ep.ingress
    } else {
        &ep.egress
    };
    let key = PolicyKey {
        ifindex,
        generation: ep.generation,
        direction: dir,
    };
    check(&key, d, ip, pk, node_ok)
}

/// Fills the LPM keys of a policy lookup: `peer` at full length, `proto`
/// with its policy port (`policy_port`) at full length.
#[inline(always)]
pub fn fill_keys(peer: &IpKey, proto: u8, dport: u16, ip: &mut Key<IpKey>, pk: &mut Key<PortKey>) {
    ip.prefix_len = IP_KEY_BITS;
    ip.data = *peer;
    pk.prefix_len = PORT_KEY_BITS;
    pk.data = PortKey {
        proto,
        port_be: policy_port(proto, dport).to_be_bytes(),
    };
}

/// The Deny rule bit of a check's result, when a ClusterNetworkPolicy Deny
/// refused the packet. Such a refusal is final: audit mode, which softens
/// only NetworkPolicy isolation, does not pass it.
#[inline(always)]
pub fn cluster_deny(result: Option<u32>) -> Option<u32> {
    match result {
        Some(r) if r & !0xff == RULE_DENY_FLAG => Some(r & 0xff),
        _ => None,
    }
}
