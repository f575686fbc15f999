//! The policy lookup of one direction check, with the result `docs/maps.md`
//! ("The lookup") states; the port goes first so that peer lookups which
//! cannot change the answer are skipped (see `check`).

use aya_ebpf::{helpers::bpf_map_lookup_elem, maps::lpm_trie::Key};
use core::{ffi::c_void, ptr};
use palisade_common::{
    DirPolicy, Endpoint, IpKey, PolicyKey, PortKey, RuleBits, SpillValue, DIR_INGRESS,
    IDENTITY_HOST, IDENTITY_WORLD, PROTO_SCTP, PROTO_TCP, PROTO_UDP, RULE_BITS, RULE_COL_SPILLED,
    RULE_DENY_FLAG, RULE_NODE, RULE_NOT_ISOLATED, RULE_SPILLED, SPILL_ANY_PEER, SPILL_CIDR_CLASS,
    SPILL_DENY, SPILL_IDENTITY, SPILL_NONE, SPILL_PASS,
};

use crate::maps::{
    IDENTITIES, POLICY_CIDR, POLICY_IDENTITY, POLICY_PORT, POLICY_SPILL, SCRATCH, ZERO,
};
use crate::scratch::Scratch;

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

/// Folds the spill table `table`'s entry for the key in `s.spill`, if
/// any, into `s.spill_first` (the first spilled group matching so far)
/// and `s.spill_after` (the first past the Admin tier): `SpillValue`s
/// order by group, so the first is the minimum.
#[inline(always)]
fn spill_fold(table: *mut c_void, s: &mut Scratch) {
    let v = unsafe { bpf_map_lookup_elem(table, ptr::from_ref(&s.spill).cast()) };
    let v = v.cast::<SpillValue>();
    if !v.is_null() {
        let v = unsafe { ptr::read(v) };
        s.spill_first = s.spill_first.min(v.first);
        s.spill_after = s.spill_after.min(v.after_admin);
    }
}

/// The peers argument of `spilled`: the identity, then the CIDR class
/// (class numbers count a pod direction's spilled group sets, far below
/// 2^31) with bit 31 set when some spilled group has no peers.
#[inline(always)]
fn spill_peers(id: u32, cidr_class: u32, any: bool) -> u64 {
    u64::from(id) << 32 | u64::from(cidr_class) | u64::from(any) << 31
}

/// `spill_fold` over the peers of `s.spill_peers` with port class
/// `s.spill_classes[i]` (none when 0).
#[inline(always)]
fn fold_class(table: *mut c_void, s: &mut Scratch, i: usize) {
    let k = s.spill_classes[i];
    if k == 0 {
        return;
    }
    s.spill.port_class = k;
    if s.spill_peers[0] != 0 {
        (s.spill.kind, s.spill.peer) = (SPILL_ANY_PEER, 0);
        spill_fold(table, s);
    }
    (s.spill.kind, s.spill.peer) = (SPILL_IDENTITY, s.spill_peers[2]);
    spill_fold(table, s);
    if s.spill_peers[1] != 0 {
        (s.spill.kind, s.spill.peer) = (SPILL_CIDR_CLASS, s.spill_peers[1]);
        spill_fold(table, s);
    }
}

/// The first spilled group matching, in the spill table `table`: port
/// classes `classes` (the packet's port class, then the direction's
/// any-port class) and `peers` (the peer's identity, then the peer's CIDR
/// class with bit 31 set when some spilled group has no peers, see
/// `spill_peers`): `first << 32 | after` (see `spill_fold`). Out of line
/// and with no stack of its own: its key and running results are in the
/// scratch, and it takes no more arguments than callee-saved registers
/// can keep across the scratch lookup (the deepest call chain has no
/// stack to spare). A missing scratch, which cannot happen once loaded,
/// answers a Deny of the first spilled group.
#[inline(never)]
fn spilled(table: *mut c_void, classes: u64, peers: u64) -> u64 {
    let scratch = ptr::from_ref(&SCRATCH).cast_mut().cast();
    let s = unsafe { bpf_map_lookup_elem(scratch, ptr::from_ref(&ZERO).cast()) };
    let Some(s) = (unsafe { s.cast::<Scratch>().as_mut() }) else {
        let deny = u64::from(RULE_BITS << 2 | SPILL_DENY);
        return deny << 32 | deny;
    };
    s.spill_first = SPILL_NONE;
    s.spill_after = SPILL_NONE;
    s.spill_classes = [(classes >> 32) as u32, classes as u32];
    let low = peers as u32;
    s.spill_peers = [low >> 31, low & !(1 << 31), (peers >> 32) as u32];
    fold_class(table, s, 0);
    fold_class(table, s, 1);
    u64::from(s.spill_first) << 32 | u64::from(s.spill_after)
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
    // Whether an Admin tier Pass cleared every bit that hit.
    let mut passed = false;
    if hit != 0 {
        match winner(dir, hit, node_ok, Some(id), ip) {
            Some(v) => return v,
            None => passed = true,
        }
    }
    if !spill {
        return unmatched(dir, node_ok, Some(id), ip);
    }
    // No spill table: no spilled group matches anything.
    let Some(table) = (unsafe { POLICY_SPILL.get(key) }) else {
        return unmatched(dir, node_ok, Some(id), ip);
    };
    let table = ptr::from_ref(table).cast_mut().cast::<c_void>();
    let classes = u64::from(rp.class) << 32 | u64::from(dir.any_port_class);
    let peers = spill_peers(id, rc.class, dir.spill_any_peer != 0);
    let found = spilled(table, classes, peers);
    let (first, after) = ((found >> 32) as u32, found as u32);
    // After an Admin Pass (in the bits, or the first spilled group) only
    // groups past the Admin tier count.
    let mut v = if passed { after } else { first };
    if v != SPILL_NONE && v & 3 == SPILL_PASS {
        v = after;
    }
    if v == SPILL_NONE {
        return unmatched(dir, node_ok, Some(id), ip);
    }
    if v & 3 == SPILL_DENY {
        return Some(refused(node_ok, Some(id), ip).unwrap_or(RULE_DENY_FLAG | RULE_COL_SPILLED));
    }
    Some(RULE_SPILLED)
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
