//! Deny events: sampled by a per-CPU token bucket and never blocking. An
//! event that is rate-limited or finds the ring buffer full is counted in
//! `EVENTS_LOST` and the packet's verdict goes on unchanged.

use palisade_common::{Event, EVENTS_LOST_FULL, EVENTS_LOST_SAMPLED};

use crate::{
    clock,
    maps::{EVENTS, EVENTS_LOST, EVENT_BUDGET},
    parse::Tuple,
};

/// One token per millisecond per CPU, at most `BURST` saved up.
const TOKEN_NS: u64 = 1_000_000;
const BURST: u64 = 64;

#[inline(always)]
fn count_lost(index: u32) {
    if let Some(c) = EVENTS_LOST.get_ptr_mut(index) {
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn take_token() -> bool {
    let Some(b) = EVENT_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    let now = clock::now();
    let b = unsafe { &mut *b };
    let earned = now.saturating_sub(b.last_ns) / TOKEN_NS;
    if earned > 0 {
        b.tokens = if b.tokens + earned > BURST {
            BURST
        } else {
            b.tokens + earned
        };
        b.last_ns = now;
    }
    if b.tokens == 0 {
        return false;
    }
    b.tokens -= 1;
    true
}

#[inline(always)]
pub fn deny(ifindex: u32, direction: u32, reason: u32, t: &Tuple) {
    if !take_token() {
        count_lost(EVENTS_LOST_SAMPLED);
        return;
    }
    let Some(mut e) = EVENTS.reserve(0) else {
        count_lost(EVENTS_LOST_FULL);
        return;
    };
    e.write(Event {
        ifindex,
        direction,
        reason,
        sport: t.sport,
        dport: t.dport,
        proto: t.proto,
        src: t.src,
        dst: t.dst,
        _pad: [0],
    });
    e.submit(0);
}
