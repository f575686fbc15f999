//! Two probe streams on real traffic while a fault happens: new TCP
//! connections `client` -> `server`:80, which the policy allows (each one
//! that does not get through is wrongly dropped), and `other` ->
//! `server`:80, which it refuses (each one that gets through is wrongly
//! allowed). Every probe is a new flow (the lab's per-pod source ports),
//! so each is decided by the policy, not by conntrack.
//!
//! Bounded: each stream stops when the fault's closure returns, and at
//! `MAX_RUN` whatever happens.

use super::{FaultNode, CLIENT, OTHER, SERVER};
use palisade_lab::{Family, Outcome, Protocol};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An allowed connection gets this long: on a veth it takes well under a
/// millisecond, and a dropped SYN is retransmitted only after 1 s, so a
/// probe that fails here lost a packet.
const ALLOWED_TIMEOUT: Duration = Duration::from_millis(1000);
/// A refused probe waits this long for an answer that should never come;
/// long enough that a connection let through on a busy machine is seen.
const REFUSED_TIMEOUT: Duration = Duration::from_millis(400);
/// Refused probes in flight at once: a short window of openness is met.
const REFUSED_THREADS: usize = 2;
const PAUSE: Duration = Duration::from_millis(20);
/// No stream runs longer than this.
const MAX_RUN: Duration = Duration::from_secs(180);

/// What the streams saw.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub allowed_ok: u32,
    /// Allowed probes that failed: wrongly dropped.
    pub allowed_dropped: u32,
    /// The longest time between two allowed probes that got through (the
    /// stream's start and end count as such), while counting.
    pub longest_gap: Duration,
    /// Refused probes that got through: wrongly allowed.
    pub refused_reached: u32,
    pub refused_blocked: u32,
    /// Why the dropped allowed probes failed, first few.
    pub drop_reasons: Vec<String>,
    /// The first agent's `/healthz` and `/readyz` answers, each change
    /// once, sampled every 250 ms (`operator::health`).
    pub health: Vec<String>,
}

impl Tally {
    pub fn wrongly_allowed(&self) -> u32 {
        self.refused_reached
    }

    pub fn wrongly_dropped(&self) -> u32 {
        self.allowed_dropped
    }

    /// The health answers seen, in order.
    pub fn health_cell(&self) -> String {
        self.health.join(" -> ")
    }

    /// "count, longest gap ms" for the table.
    pub fn dropped_cell(&self) -> String {
        format!(
            "{} ({} ms longest gap)",
            self.allowed_dropped,
            self.longest_gap.as_millis()
        )
    }
}

struct State {
    tally: Tally,
    /// When the last allowed probe that got through started (or counting
    /// resumed).
    last_ok: Instant,
    /// Allowed probes in a row that got through.
    ok_run: u32,
    /// Counting (re)started: a probe started before did not see what is
    /// counted (it may have run through a pause).
    counted_from: Instant,
}

/// The streams as the fault's closure sees them.
pub struct Live {
    state: Mutex<State>,
    counting: AtomicBool,
    stop: AtomicBool,
}

impl Live {
    fn new() -> Live {
        Live {
            state: Mutex::new(State {
                tally: Tally::default(),
                last_ok: Instant::now(),
                ok_run: 0,
                counted_from: Instant::now(),
            }),
            counting: AtomicBool::new(true),
            stop: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What was seen so far.
    pub fn tally(&self) -> Tally {
        self.lock().tally.clone()
    }

    /// Stops counting (a step of the fault that cuts the pods' wiring
    /// itself, not a decision of Palisade's).
    pub fn pause(&self) {
        self.counting.store(false, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        let mut s = self.lock();
        s.last_ok = Instant::now();
        s.counted_from = s.last_ok;
        s.ok_run = 0;
        self.counting.store(true, Ordering::SeqCst);
    }

    /// Waits (up to `limit`) until 5 allowed probes in a row got through
    /// after this call; how long that took, or None.
    pub fn recovered(&self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        self.lock().ok_run = 0;
        while start.elapsed() < limit {
            if self.lock().ok_run >= 5 {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn allowed(&self, started: Instant, outcome: &Outcome) {
        if !self.counting.load(Ordering::SeqCst) {
            return;
        }
        let mut s = self.lock();
        if started < s.counted_from {
            return;
        }
        if outcome.reached() {
            let gap = started.saturating_duration_since(s.last_ok);
            s.tally.longest_gap = s.tally.longest_gap.max(gap);
            s.last_ok = started;
            s.tally.allowed_ok += 1;
            s.ok_run += 1;
        } else {
            s.tally.allowed_dropped += 1;
            s.ok_run = 0;
            if s.tally.drop_reasons.len() < 5 {
                s.tally.drop_reasons.push(format!("{outcome:?}"));
            }
        }
    }

    fn refused(&self, started: Instant, outcome: &Outcome) {
        if !self.counting.load(Ordering::SeqCst) {
            return;
        }
        let mut s = self.lock();
        if started < s.counted_from {
            return;
        }
        if outcome.reached() {
            s.tally.refused_reached += 1;
        } else {
            s.tally.refused_blocked += 1;
        }
    }

    fn health_seen(&self, now: String) {
        let mut s = self.lock();
        if s.tally.health.last() != Some(&now) {
            s.tally.health.push(now);
        }
    }

    fn finish(&self) -> Tally {
        let mut s = self.lock();
        if self.counting.load(Ordering::SeqCst) {
            let gap = s.last_ok.elapsed();
            s.tally.longest_gap = s.tally.longest_gap.max(gap);
        }
        s.tally.clone()
    }

    fn running(&self, begun: Instant) -> bool {
        !self.stop.load(Ordering::SeqCst) && begun.elapsed() < MAX_RUN
    }
}

/// Runs the two streams while `fault` runs, and a little before and
/// after; the tally and what `fault` returned.
pub fn during<R>(node: &FaultNode, fault: impl FnOnce(&Live) -> R) -> (Tally, R) {
    let lab = &node.lab;
    let server = lab.ip(SERVER, Family::V4).unwrap();
    let live = Live::new();
    let begun = Instant::now();
    let r = std::thread::scope(|s| {
        let live = &live;
        s.spawn(move || {
            while live.running(begun) {
                let started = Instant::now();
                let outcome = lab
                    .probe_outcome(CLIENT, server, 80, Protocol::Tcp, ALLOWED_TIMEOUT)
                    .unwrap();
                live.allowed(started, &outcome);
                std::thread::sleep(PAUSE);
            }
        });
        for _ in 0..REFUSED_THREADS {
            s.spawn(move || {
                while live.running(begun) {
                    let started = Instant::now();
                    let outcome = lab
                        .probe_outcome(OTHER, server, 80, Protocol::Tcp, REFUSED_TIMEOUT)
                        .unwrap();
                    live.refused(started, &outcome);
                }
            });
        }
        s.spawn(move || {
            while live.running(begun) {
                live.health_seen(super::operator::health(node, super::METRICS));
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        // The streams stop however `fault` ends, a failed assertion too.
        let _stop = StopOnDrop(&live.stop);
        // Both streams are seen working before the fault.
        std::thread::sleep(Duration::from_millis(300));
        let r = fault(live);
        std::thread::sleep(Duration::from_millis(300));
        r
    });
    (live.finish(), r)
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
