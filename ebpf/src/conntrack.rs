//! Conntrack: one entry per connection and hook, in the pod's own LRU table
//! (`CONNTRACK_POD`, by endpoint slot) so that a pod that opens more flows
//! than its table holds evicts only its own entries. A pod without a table
//! of its own uses the node-wide `CONNTRACK` (the agent moves a pod's
//! entries from there into its table when it creates one). A packet
//! whose connection is present and not idle past its timeout passes
//! without a policy lookup.
//!
//! Keys are normalized: of the two ends (address, port), the lower one is
//! `src`. A packet and its reply therefore share one key and one lookup
//! finds either, which is exactly "tuple or reversed tuple present" with
//! half the lookups. Order: address bytes compared lexicographically (for
//! IPv4 the first four, the rest being zero), then the port as a number.

use palisade_common::{
    CtKey, CtValue, Endpoint, IpKey, CT_CLOSING, CT_CUT, CT_EPOCH_SHIFT, CT_OPENED_FORWARD,
    CT_OPENED_MASK, CT_OPENED_REVERSE, CT_TIMEOUT_CLOSING_NS, CT_TIMEOUT_OTHER_NS,
    CT_TIMEOUT_TCP_NS, PROTO_TCP, RULE_NODE,
};

use crate::{
    clock,
    maps::{in_slot, PodConntrack, CONNTRACK, CONNTRACK_POD},
    parse::Tuple,
};

/// The own table of the pod in endpoint slot `slot`, if it has one. Out of
/// line and without a stack frame (`maps::in_slot`): its callers sit at the
/// 512-byte limit of the call chain.
#[inline(never)]
fn own(slot: u16) -> Option<&'static PodConntrack> {
    let inner = in_slot(core::ptr::from_ref(&CONNTRACK_POD).cast_mut().cast(), slot);
    // SAFETY: an array of maps' value is the inner map, which the kernel
    // keeps alive for the rest of the program run.
    unsafe { inner.cast::<PodConntrack>().as_ref() }
}

/// The entry of `k` in the table of the pod in endpoint slot `slot`: its
/// own, or the node-wide one when it has none.
#[inline(always)]
fn entry(slot: u16, k: &CtKey) -> Option<*mut CtValue> {
    match own(slot) {
        Some(own) => own.get_ptr_mut(k),
        None => CONNTRACK.get_ptr_mut(k),
    }
}

/// Stores `v` under `k` in the table of the pod in slot `slot`: its own,
/// or the node-wide one when it has none. A full LRU evicts its oldest
/// entry, so this cannot fail for lack of room; any other error only costs
/// a policy lookup on the next packet.
#[inline(always)]
fn store(slot: u16, k: &CtKey, v: &CtValue) {
    let _ = match own(slot) {
        Some(own) => own.insert(k, v, 0),
        None => CONNTRACK.insert(k, v, 0),
    };
}

/// `last_seen_ns` is rewritten at most this often per entry: a write per
/// packet would bounce the entry's cache line between CPUs for nothing.
const REFRESH_NS: u64 = 1_000_000_000;

/// What a lookup knows of the packet (`live`'s `seen`): its ends were
/// swapped by normalizing, it is a TCP SYN without ACK (a new connection
/// attempt), it carries FIN or RST.
pub const SEEN_SWAPPED: u32 = 1;
pub const SEEN_SYN: u32 = 2;
pub const SEEN_FIN_RST: u32 = 4;

/// `SEEN_SYN` and `SEEN_FIN_RST` of a TCP header's flags byte.
#[inline(always)]
pub fn tcp_seen(flags: u8) -> u32 {
    let syn = if flags & 0x12 == 0x02 { SEEN_SYN } else { 0 };
    let fin_rst = if flags & 0x05 != 0 { SEEN_FIN_RST } else { 0 };
    syn | fin_rst
}

#[inline(always)]
fn timeout(proto: u8, flags: u32) -> u64 {
    if proto != PROTO_TCP {
        CT_TIMEOUT_OTHER_NS
    } else if flags & CT_CLOSING != 0 {
        CT_TIMEOUT_CLOSING_NS
    } else {
        CT_TIMEOUT_TCP_NS
    }
}

#[inline(always)]
fn opened(swapped: bool) -> u32 {
    if swapped {
        CT_OPENED_REVERSE
    } else {
        CT_OPENED_FORWARD
    }
}

/// Swaps the two ends of `k`.
#[inline(always)]
pub fn reverse(k: &mut CtKey) {
    core::mem::swap(&mut k.src, &mut k.dst);
    core::mem::swap(&mut k.sport, &mut k.dport);
}

/// Whether `a` sorts after `b` (same family: the packet's); `None` when
/// they are equal.
#[inline(always)]
fn addr_greater(a: &IpKey, b: &IpKey) -> Option<bool> {
    for i in 0..16 {
        if a.addr[i] != b.addr[i] {
            return Some(a.addr[i] > b.addr[i]);
        }
    }
    None
}

/// Puts `k` in normalized orientation; true when that swapped its ends.
#[inline(always)]
pub fn normalize(k: &mut CtKey) -> bool {
    let swap = match addr_greater(&k.src, &k.dst) {
        Some(g) => g,
        None => k.sport > k.dport,
    };
    if swap {
        reverse(k);
    }
    swap
}

/// What `live` gives for an entry allowed under an earlier policy epoch:
/// the flow must be decided again (`redo`) before it passes. Never stored.
pub const STALE: u32 = u32::MAX - 64;
/// What `live` gives for a flow a policy change cut (`CT_CUT`): its packets
/// drop. Never stored.
pub const CUT: u32 = u32::MAX - 65;

/// The `CtValue::flags` bits of `epoch`.
#[inline(always)]
fn epoch_bits(epoch: u32) -> u32 {
    epoch << CT_EPOCH_SHIFT
}

/// Looks up the normalized key `k` for a packet described by `seen`
/// (`SEEN_*`) at a hook of endpoint `ep` (its table and policy epoch);
/// refreshes a live entry (at most once per `REFRESH_NS`) and gives the
/// rule it was allowed by, or `STALE` for an entry of another epoch.
/// Reports as absent an expired entry, and one a SYN from the other end
/// than its opener would ride; marks a TCP entry closing on FIN or RST.
#[inline(always)]
pub fn live(ep: &Endpoint, k: &CtKey, seen: u32) -> Option<u32> {
    let epoch = ep.epoch;
    let v = entry(ep.slot, k)?;
    let now = clock::now();
    let (last, rule, flags) = unsafe { ((*v).last_seen_ns, (*v).rule, (*v).flags) };
    let age = now.saturating_sub(last);
    if age > timeout(k.proto, flags) {
        return None;
    }
    let opener = flags & CT_OPENED_MASK;
    if seen & SEEN_SYN != 0 && opener != 0 && opener != opened(seen & SEEN_SWAPPED != 0) {
        return None;
    }
    if (flags ^ epoch_bits(epoch)) >> CT_EPOCH_SHIFT != 0 {
        return Some(STALE);
    }
    if flags & CT_CUT != 0 {
        // A SYN is a new connection on the same ports: decided anew. Any
        // other packet keeps the cut alive while the ends keep trying.
        if seen & SEEN_SYN != 0 {
            return None;
        }
        unsafe { (*v).last_seen_ns = now };
        return Some(CUT);
    }
    if seen & SEEN_FIN_RST != 0 && flags & CT_CLOSING == 0 {
        unsafe {
            (*v).flags = flags | CT_CLOSING;
            (*v).last_seen_ns = now;
        }
    } else if age > REFRESH_NS {
        unsafe { (*v).last_seen_ns = now };
    }
    Some(rule)
}

/// How the flow of a `STALE` entry of the pod in slot `slot`, under the
/// normalized key `k`, is decided again: `REDO_STALE`, plus `REDO_REPLY`
/// when the packet (`swapped` by normalizing, or not) goes the other way
/// than the one that opened the flow, plus `REDO_NODE` when the flow was
/// node traffic. Out of line, and only on this rare path: the lookup paths
/// have no stack to carry it.
#[inline(never)]
pub fn redo(slot: u16, k: &CtKey, swapped: bool) -> u32 {
    let Some(v) = entry(slot, k) else {
        return REDO_STALE;
    };
    let v = unsafe { &*v };
    let opener = v.flags & CT_OPENED_MASK;
    let reply = opener != 0 && opener != opened(swapped);
    let mut redo = REDO_STALE;
    if reply {
        redo |= REDO_REPLY;
    }
    if v.rule == RULE_NODE {
        redo |= REDO_NODE;
    }
    redo
}

/// `Scratch::redo`: the packet's flow has an entry of an earlier policy
/// epoch (`STALE`); the packet goes the other way than the one that opened
/// it (`REPLY`); the entry was node traffic (`NODE`).
pub const REDO_STALE: u32 = 1;
pub const REDO_REPLY: u32 = 2;
pub const REDO_NODE: u32 = 4;

/// What `live` gives for the connection `t` belongs to, in either
/// direction, at hook `ifindex` of endpoint `ep`;
/// for a `STALE` entry, `redo` gets how to decide it again. `t` is used as
/// the key in place (its `ifindex` is set to the hook's) and is left in
/// the orientation it came in.
///
/// `seen`: the packet's `SEEN_SYN` and `SEEN_FIN_RST` (the orientation is
/// added here).
#[inline(always)]
pub fn known(
    ifindex: u32,
    t: &mut Tuple,
    seen: u32,
    ep: &Endpoint,
    redo_out: &mut u32,
) -> Option<u32> {
    t.ifindex = ifindex;
    let swapped = normalize(t);
    let seen = if swapped { seen | SEEN_SWAPPED } else { seen };
    let found = live(ep, t, seen);
    *redo_out = 0;
    if found == Some(STALE) {
        *redo_out = redo(ep.slot, t, swapped);
    }
    if swapped {
        reverse(t);
    }
    found
}

/// Marks the entry of the connection `t` belongs to at hook `ifindex` of
/// endpoint `ep` cut (`CT_CUT`) under its policy epoch: a flow the current
/// policy refuses. `t` is left as it came.
#[inline(always)]
pub fn cut_seen(ifindex: u32, t: &mut Tuple, ep: &Endpoint) {
    let epoch = ep.epoch;
    t.ifindex = ifindex;
    let swapped = normalize(t);
    // By reference: a copy of the key would take stack there is none of.
    let key: &CtKey = t;
    if let Some(v) = entry(ep.slot, key) {
        unsafe {
            let flags = (*v).flags & (CT_OPENED_MASK | CT_CLOSING);
            (*v).flags = flags | CT_CLOSING | CT_CUT | epoch_bits(epoch);
            (*v).last_seen_ns = clock::now();
        }
    }
    if swapped {
        reverse(t);
    }
}

/// Records a new allowed connection of endpoint `ep` under the normalized
/// key `k`, opened by a packet whose ends normalizing `swapped` (or not),
/// allowed under the endpoint's policy epoch.
#[inline(always)]
pub fn create(ep: &Endpoint, k: &CtKey, rule: u32, swapped: bool) {
    let v = CtValue {
        last_seen_ns: clock::now(),
        rule,
        flags: opened(swapped) | epoch_bits(ep.epoch),
    };
    store(ep.slot, k, &v);
}

/// `create` for a tuple as seen at hook `ifindex` (left as it came).
#[inline(always)]
pub fn create_seen(ifindex: u32, t: &mut Tuple, rule: u32, ep: &Endpoint) {
    t.ifindex = ifindex;
    let swapped = normalize(t);
    create(ep, t, rule, swapped);
    if swapped {
        reverse(t);
    }
}
