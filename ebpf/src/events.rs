//! Verdict events: rate-limited by a token bucket per pod slot and CPU and
//! never blocking. An event that is rate-limited or finds the ring buffer
//! full is counted in `EVENTS_LOST` and the packet's verdict goes on
//! unchanged. What is emitted at all is the agent's choice (`CONFIG`):
//! denied and would-deny packets by default, the first packet of each
//! allowed flow only while someone listens for them.

use palisade_common::{
    CONFIG_EVENTS_ALLOWED, CONFIG_EVENTS_DENIED, EVENTS_LOST_FULL, EVENTS_LOST_SAMPLED, RULE_NONE,
    RULE_WOULD_DENY, VERDICT_ALLOWED, VERDICT_DENIED, VERDICT_WOULD_DENY,
};

use crate::{
    clock,
    maps::{CONFIG, EVENTS, EVENTS_LOST, EVENT_BUDGET},
    parse::Tuple,
};

/// One token per millisecond per pod and CPU, at most `BURST` saved up.
const TOKEN_NS: u64 = 1_000_000;
const BURST: u64 = 64;

/// The hook an event comes from.
pub struct Source {
    pub slot: u32,
    pub ifindex: u32,
    pub dir: u32,
    pub generation: u32,
}

#[inline(always)]
fn enabled(bit: u32) -> bool {
    CONFIG.get(0).is_some_and(|c| c.events & bit != 0)
}

#[inline(always)]
fn count_lost(index: u32) {
    if let Some(c) = EVENTS_LOST.get_ptr_mut(index) {
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn take_token(slot: u32) -> bool {
    let Some(b) = EVENT_BUDGET.get_ptr_mut(slot) else {
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
fn emit(src: &Source, verdict: u8, reason: u32, rule: u32, t: &Tuple) {
    if !take_token(src.slot) {
        count_lost(EVENTS_LOST_SAMPLED);
        return;
    }
    let Some(mut e) = EVENTS.reserve(0) else {
        count_lost(EVENTS_LOST_FULL);
        return;
    };
    // Written in place: a record built on the stack first would cost 64
    // bytes of stack in every frame that may emit.
    let p = e.as_mut_ptr();
    unsafe {
        (&raw mut (*p).ifindex).write(src.ifindex);
        (&raw mut (*p).direction).write(src.dir);
        (&raw mut (*p).reason).write(reason);
        (&raw mut (*p).rule).write(rule);
        (&raw mut (*p).generation).write(src.generation);
        (&raw mut (*p).sport).write(t.sport);
        (&raw mut (*p).dport).write(t.dport);
        (&raw mut (*p).proto).write(t.proto);
        (&raw mut (*p).verdict).write(verdict);
        (&raw mut (*p).src).write(t.src);
        (&raw mut (*p).dst).write(t.dst);
        (&raw mut (*p)._pad).write([0; 4]);
    }
    e.submit(0);
}

/// A dropped packet.
#[inline(always)]
pub fn deny(src: &Source, reason: u32, t: &Tuple) {
    denied(src, reason, None, t);
}

/// A denied packet with the check's `result`: a cluster Deny names its
/// rule bit (`bit | RULE_DENY_FLAG`), an isolation's refusal no rule.
#[inline(always)]
pub fn denied(src: &Source, reason: u32, result: Option<u32>, t: &Tuple) {
    if enabled(CONFIG_EVENTS_DENIED) {
        emit(src, VERDICT_DENIED, reason, result.unwrap_or(RULE_NONE), t);
    }
}

/// The first packet of a flow passed with `rule` (a `CtValue::rule`):
/// a would-deny one is reported like a denied packet, an allowed one only
/// when asked for.
#[inline(always)]
pub fn flow(src: &Source, reason: u32, rule: u32, t: &Tuple) {
    if rule == RULE_WOULD_DENY {
        if enabled(CONFIG_EVENTS_DENIED) {
            emit(src, VERDICT_WOULD_DENY, reason, rule, t);
        }
    } else if enabled(CONFIG_EVENTS_ALLOWED) {
        emit(src, VERDICT_ALLOWED, 0, rule, t);
    }
}
