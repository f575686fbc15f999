//! Conntrack: a node-wide LRU of tuples as seen at each hook. A packet whose
//! tuple (established) or reversed tuple (reply) is present and not idle past
//! its timeout passes without a policy lookup.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use palisade_common::{CtKey, CtValue, CT_TIMEOUT_OTHER_NS, CT_TIMEOUT_TCP_NS, PROTO_TCP};

use crate::{maps::CONNTRACK, parse::Tuple};

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

#[inline(always)]
fn reverse(k: &mut CtKey) {
    core::mem::swap(&mut k.src, &mut k.dst);
    core::mem::swap(&mut k.sport, &mut k.dport);
}

/// Looks `k` up; refreshes a live entry, reports an expired one as absent.
#[inline(always)]
fn live(k: &CtKey, now: u64) -> bool {
    let Some(v) = CONNTRACK.get_ptr_mut(k) else {
        return false;
    };
    let last = unsafe { (*v).last_seen_ns };
    let age = now.saturating_sub(last);
    if age > timeout(k.proto) {
        return false;
    }
    if age > REFRESH_NS {
        unsafe { (*v).last_seen_ns = now };
    }
    true
}

/// True when `t` belongs to a connection already allowed at this hook, in
/// either direction. `t` is used as the key in place (its `ifindex` is set
/// to the hook's) and is left as it came.
#[inline(always)]
pub fn known(ifindex: u32, t: &mut Tuple) -> bool {
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    t.ifindex = ifindex;
    if live(t, now) {
        return true;
    }
    reverse(t);
    let reply = live(t, now);
    reverse(t);
    reply
}

/// Records a new allowed flow. A full LRU evicts its oldest entry, so this
/// cannot fail for lack of room; any other error only costs a policy lookup
/// on the next packet.
#[inline(always)]
pub fn create(ifindex: u32, t: &mut Tuple, rule: u32) {
    let v = CtValue {
        last_seen_ns: unsafe { bpf_ktime_get_coarse_ns() },
        rule,
        _pad: 0,
    };
    t.ifindex = ifindex;
    // Passed by reference: the key stays in the scratch, off the stack.
    let k: &CtKey = t;
    let _ = CONNTRACK.insert(k, v, 0);
}
