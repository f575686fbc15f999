//! The time stamps of conntrack entries and of the event budget: values of
//! `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE), cached per CPU.
//!
//! The coarse clock only moves at timer ticks, and so do jiffies, whose
//! helper the verifier inlines into one load. Reading the coarse clock costs
//! a helper call, a noticeable share of an established packet's cost, so it
//! is read once per tick per CPU: while `jiffies` has not moved, the cached
//! value is returned. It lags the coarse clock by at most a tick or two,
//! which only matters against the one-second refresh interval and timeouts
//! of a minute or more.

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns};

use crate::scratch;

#[inline(always)]
pub fn now() -> u64 {
    let j = unsafe { bpf_jiffies64() };
    let Some(s) = scratch::get() else {
        return unsafe { bpf_ktime_get_coarse_ns() };
    };
    if s.clock_jiffies == j {
        return s.clock_ns;
    }
    let ns = unsafe { bpf_ktime_get_coarse_ns() };
    s.clock_jiffies = j;
    s.clock_ns = ns;
    ns
}
