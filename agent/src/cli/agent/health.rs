//! What `/healthz` answers: whether the agent still does its job, not only
//! whether the process answers HTTP. It fails (and the kubelet restarts the
//! agent) when
//!
//! - the agent loop has not ticked for the stall bound: it ticks while it
//!   waits for a change (every few milliseconds, so an idle agent is not
//!   mistaken for a hung one), while it waits for the first sync, and
//!   after every round; a round stuck in a system call or a lock stops it;
//! - a watcher of the API source has ended or panicked: its store no longer
//!   follows the cluster. A watcher retrying after API errors is alive: an
//!   outage of the API server must not restart agents that keep enforcing;
//! - a child command (`ip`) was killed for running past its timeout and has
//!   not completed a run since (`palisade_datapath::command`).
//!
//! Restarting is safe: the pins keep enforcing while the agent is away.

use crate::datapath::command;
use crate::source::api::WatcherLiveness;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub struct Health {
    started: Instant,
    /// Milliseconds from `started` to the loop's last tick.
    last_tick: AtomicU64,
    stall: Duration,
    /// The API source's watchers; unset with manifests.
    watchers: OnceLock<Arc<WatcherLiveness>>,
}

impl Health {
    /// A loop that last ticked now, failing after `stall` without a tick.
    pub fn new(stall: Duration) -> Arc<Health> {
        Arc::new(Health {
            started: Instant::now(),
            last_tick: AtomicU64::new(0),
            stall,
            watchers: OnceLock::new(),
        })
    }

    pub fn watch(&self, watchers: Arc<WatcherLiveness>) {
        let _ = self.watchers.set(watchers);
    }

    /// The loop is alive now.
    pub fn tick(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_tick.store(ms, Ordering::Release);
    }

    /// Time since the last tick.
    fn quiet(&self) -> Duration {
        let last = Duration::from_millis(self.last_tick.load(Ordering::Acquire));
        self.started.elapsed().saturating_sub(last)
    }

    /// Ok, or why the agent is not live.
    pub fn check(&self) -> Result<(), String> {
        if let Some(ended) = self.watchers.get().and_then(|w| w.ended()) {
            return Err(format!("{ended}: the agent no longer follows the cluster"));
        }
        if let Some(hung) = command::hung() {
            return Err(format!("child command hung: {hung}"));
        }
        let quiet = self.quiet();
        if quiet > self.stall {
            let quiet = Duration::from_millis(quiet.as_millis() as u64);
            return Err(format!(
                "agent loop stalled: no round or idle tick for {quiet:?} (limit {:?})",
                self.stall
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_ticking_fails_and_recovers_with_the_next_tick() {
        let h = Health::new(Duration::from_millis(100));
        assert_eq!(h.check(), Ok(()));
        std::thread::sleep(Duration::from_millis(150));
        let err = h.check().unwrap_err();
        assert!(err.starts_with("agent loop stalled"), "{err}");
        h.tick();
        assert_eq!(h.check(), Ok(()));
    }

    #[test]
    fn an_ended_watcher_fails_whatever_the_loop_does() {
        let h = Health::new(Duration::from_secs(60));
        let w = Arc::new(WatcherLiveness::default());
        h.watch(Arc::clone(&w));
        let running = WatcherLiveness::running(&w, "pods");
        assert_eq!(h.check(), Ok(()));
        drop(running);
        h.tick();
        let err = h.check().unwrap_err();
        assert!(err.starts_with("the pods watcher ended"), "{err}");
    }
}
