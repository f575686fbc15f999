//! Whether every watcher still runs. A watcher lives for the whole
//! process, retrying API errors with backoff; one that ends or panics
//! leaves its store frozen while enforcement looks fine, so the agent's
//! liveness probe asks here (`cli/agent/health.rs`).

use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct WatcherLiveness {
    /// "the pods watcher panicked", in the order they ended.
    ended: Mutex<Vec<String>>,
}

impl WatcherLiveness {
    /// Held by the watcher of `resource` for as long as it runs: dropping it
    /// (the watch returned, or a panic unwound through it) records the end.
    pub fn running(this: &Arc<Self>, resource: &'static str) -> Running {
        Running {
            liveness: Arc::clone(this),
            resource,
        }
    }

    /// The first watcher that ended, if any.
    pub fn ended(&self) -> Option<String> {
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        ended.first().cloned()
    }
}

/// A running watcher; see [`WatcherLiveness::running`].
pub struct Running {
    liveness: Arc<WatcherLiveness>,
    resource: &'static str,
}

impl Drop for Running {
    fn drop(&mut self) {
        let how = if std::thread::panicking() {
            "panicked (see the log)"
        } else {
            "ended"
        };
        let what = format!("the {} watcher {how}", self.resource);
        tracing::error!("{what}; the liveness probe fails from now on");
        self.liveness
            .ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }
}

/// A fault for the tests of the liveness probe, in debug builds only:
/// with `PALISADE_TEST_WATCHER_PANIC=pods/NAME` in the environment, the pods
/// watcher panics when an object named NAME arrives (as a bug in an
/// object's conversion would make it).
#[cfg(debug_assertions)]
pub fn test_fault<K: kube::Resource>(resource: &str, event: &kube::runtime::watcher::Event<K>) {
    use kube::runtime::watcher::Event;
    let Ok(fault) = std::env::var("PALISADE_TEST_WATCHER_PANIC") else {
        return;
    };
    if let Event::Apply(obj) | Event::InitApply(obj) = event {
        let name = obj.meta().name.as_deref().unwrap_or_default();
        if fault == format!("{resource}/{name}") {
            panic!("PALISADE_TEST_WATCHER_PANIC: {resource}/{name} arrived");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watcher_that_ends_or_panics_is_recorded() {
        let l = Arc::new(WatcherLiveness::default());
        let a = WatcherLiveness::running(&l, "pods");
        assert_eq!(l.ended(), None);
        let l2 = Arc::clone(&l);
        let panicked = std::thread::spawn(move || {
            let _b = WatcherLiveness::running(&l2, "services");
            panic!("a conversion bug");
        })
        .join();
        assert!(panicked.is_err());
        assert_eq!(
            l.ended().as_deref(),
            Some("the services watcher panicked (see the log)")
        );
        drop(a);
        assert_eq!(l.ended.lock().unwrap()[1], "the pods watcher ended");
    }
}
