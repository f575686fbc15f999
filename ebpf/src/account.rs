//! Counting: every IP packet a hook sees is counted once per pod slot and
//! direction as allowed, denied or would-deny (audit mode), and an allowed
//! packet whose rule is known (a new flow's decision, or its conntrack
//! entry) once more in that rule's column.

use core::intrinsics::{atomic_xadd, AtomicOrdering};
use palisade_common::{
    Counters, RULE_BITS, RULE_COLS, RULE_COL_NOT_ISOLATED, RULE_COL_SPILLED, RULE_NOT_ISOLATED,
    RULE_SPILLED, RULE_WOULD_DENY,
};

use crate::maps::{COUNTERS, RULE_COUNTERS};

/// Where a packet lands in `Counters`.
#[derive(Clone, Copy)]
pub enum Verdict {
    Allowed,
    Denied,
    WouldDeny,
}

#[inline(always)]
fn counters(slot: u32, dir: u32) -> Option<&'static mut Counters> {
    // SAFETY: a per-CPU array element, only ever touched by this CPU.
    COUNTERS
        .get_ptr_mut(slot * 2 + dir)
        .map(|p| unsafe { &mut *p })
}

/// Counts one packet of `len` bytes.
#[inline(always)]
pub fn packet(slot: u32, dir: u32, verdict: Verdict, len: u64) {
    let Some(c) = counters(slot, dir) else {
        return;
    };
    let (packets, bytes) = match verdict {
        Verdict::Allowed => (&mut c.allowed_packets, &mut c.allowed_bytes),
        Verdict::Denied => (&mut c.denied_packets, &mut c.denied_bytes),
        Verdict::WouldDeny => (&mut c.would_deny_packets, &mut c.would_deny_bytes),
    };
    *packets += 1;
    *bytes += len;
}

/// Counts one denied packet; one a cluster Deny refused (`result` is its
/// `bit | RULE_DENY_FLAG`) also in its rule's column.
#[inline(always)]
pub fn denied(slot: u32, dir: u32, result: Option<u32>, len: u64) {
    packet(slot, dir, Verdict::Denied, len);
    if let Some(bit) = crate::policy::cluster_deny(result) {
        column_add(slot, dir, bit, len);
    }
}

/// The rule column of a `CtValue::rule`, `None` for a would-deny flow.
#[inline(always)]
fn column(rule: u32) -> Option<u32> {
    match rule {
        r if r < RULE_BITS => Some(r),
        RULE_SPILLED => Some(RULE_COL_SPILLED),
        RULE_NOT_ISOLATED => Some(RULE_COL_NOT_ISOLATED),
        _ => None,
    }
}

/// Counts one packet of a flow that `rule` (a `CtValue::rule`) decided.
#[inline(always)]
pub fn flow(slot: u32, dir: u32, rule: u32, len: u64) {
    if rule == RULE_WOULD_DENY {
        packet(slot, dir, Verdict::WouldDeny, len);
        return;
    }
    packet(slot, dir, Verdict::Allowed, len);
    if let Some(col) = column(rule) {
        column_add(slot, dir, col, len);
    }
}

/// Adds one packet of `len` bytes to rule column `col`.
#[inline(always)]
fn column_add(slot: u32, dir: u32, col: u32, len: u64) {
    let Some(c) = RULE_COUNTERS.get_ptr_mut((slot * 2 + dir) * RULE_COLS + col) else {
        return;
    };
    // SAFETY: an array element, valid for the program's run; other CPUs
    // update it only through atomics too.
    // The BPF target has no `AtomicU64::fetch_add` (no compare-and-swap
    // in its base instruction set), but it has atomic add: the intrinsic
    // compiles to one `lock xadd`-style BPF_ATOMIC instruction.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*c).packets, 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*c).bytes, len);
    }
}
