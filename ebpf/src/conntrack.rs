//! Conntrack: a node-wide LRU of connections, one entry per connection and
//! hook. A packet whose connection is present and not idle past its timeout
//! passes without a policy lookup.
//!
//! Keys are normalized: of the two ends (address, port), the lower one is
//! `src`. A packet and its reply therefore share one key and one lookup
//! finds either, which is exactly "tuple or reversed tuple present" with
//! half the lookups. Order: address bytes compared lexicographically (for
//! IPv4 the first four, the rest being zero), then the port as a number.

use palisade_common::{CtKey, CtValue, IpKey, CT_TIMEOUT_OTHER_NS, CT_TIMEOUT_TCP_NS, PROTO_TCP};

use crate::{clock, maps::CONNTRACK, parse::Tuple};

/// `last_seen_ns` is rewritten at most this often per entry: a write per
/// packet would bounce the entry's cache line between CPUs for nothing.
const REFRESH_NS: u64 = 1_000_000_000;

#[inline(always)]
fn timeout(proto: u8) -> u64 {
    if proto == PROTO_TCP {
        CT_TIMEOUT_TCP_NS
    } else {
        CT_TIMEOUT_OTHER_NS
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

/// Looks up the normalized key `k`; refreshes a live entry (at most once
/// per `REFRESH_NS`) and gives the rule it was allowed by; reports an
/// expired one as absent.
#[inline(always)]
pub fn live(k: &CtKey) -> Option<u32> {
    let v = CONNTRACK.get_ptr_mut(k)?;
    let now = clock::now();
    let (last, rule) = unsafe { ((*v).last_seen_ns, (*v).rule) };
    let age = now.saturating_sub(last);
    if age > timeout(k.proto) {
        return None;
    }
    if age > REFRESH_NS {
        unsafe { (*v).last_seen_ns = now };
    }
    Some(rule)
}

/// The rule of the connection `t` belongs to when it was already passed at
/// this hook, in either direction. `t` is used as the key in place (its
/// `ifindex` is set to the hook's) and is left in the orientation it came
/// in.
#[inline(always)]
pub fn known(ifindex: u32, t: &mut Tuple) -> Option<u32> {
    t.ifindex = ifindex;
    let swapped = normalize(t);
    let found = live(t);
    if swapped {
        reverse(t);
    }
    found
}

/// Records a new allowed connection under the normalized key `k`. A full
/// LRU evicts its oldest entry, so this cannot fail for lack of room; any
/// other error only costs a policy lookup on the next packet.
#[inline(always)]
pub fn create(k: &CtKey, rule: u32) {
    let v = CtValue {
        last_seen_ns: clock::now(),
        rule,
        _pad: 0,
    };
    let _ = CONNTRACK.insert(k, v, 0);
}

/// `create` for a tuple as seen at hook `ifindex` (left as it came).
#[inline(always)]
pub fn create_seen(ifindex: u32, t: &mut Tuple, rule: u32) {
    t.ifindex = ifindex;
    let swapped = normalize(t);
    create(t, rule);
    if swapped {
        reverse(t);
    }
}
