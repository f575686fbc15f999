//! The two latencies operators ask about: how long a change takes to be
//! enforced, and how long a new pod's interface stays pending (dropping
//! everything) before its policy is known.

use crate::datapath::iface::Interfaces;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Default)]
pub struct Latency {
    /// When the oldest change not yet programmed was learned of.
    unenforced_since: Option<Instant>,
    /// Interfaces programmed pending, and when that was first done.
    pending_since: BTreeMap<u32, Instant>,
    /// When routes or links last changed, until a round attached what
    /// they brought.
    interfaces_changed: Option<Instant>,
}

impl Latency {
    /// A change was learned of at `at`; it counts from the oldest one still
    /// waiting (a failed round leaves it waiting).
    pub fn learned(&mut self, at: Instant) {
        if self.unenforced_since.is_none_or(|t| at < t) {
            self.unenforced_since = Some(at);
        }
    }

    /// Routes or links changed at `at` (a new interface, maybe).
    pub fn interfaces_changed(&mut self, at: Instant) {
        self.interfaces_changed.get_or_insert(at);
    }

    /// A round attached classifiers to new interfaces at `at` (`None`: it
    /// attached none): the time from the change that brought them.
    pub fn attached(&mut self, at: Option<Instant>, time_to_attach: &Histogram) {
        let Some(seen) = self.interfaces_changed.take() else {
            return;
        };
        if let Some(at) = at {
            time_to_attach.observe(at.saturating_duration_since(seen).as_secs_f64());
        }
    }

    /// A round programmed the kernel with these interfaces, ending `now`.
    pub fn programmed(
        &mut self,
        ifaces: &Interfaces,
        now: Instant,
        time_to_enforce: &Histogram,
        pending_window: &Histogram,
    ) {
        if let Some(t) = self.unenforced_since.take() {
            time_to_enforce.observe(now.saturating_duration_since(t).as_secs_f64());
        }
        // An interface that left the pending set either got its pod (the
        // window ends) or went away (no window to speak of: never observed).
        let known: std::collections::BTreeSet<u32> = ifaces.pods.values().copied().collect();
        self.pending_since.retain(|ifindex, since| {
            if ifaces.unknown.contains_key(ifindex) {
                return true;
            }
            if known.contains(ifindex) {
                pending_window.observe(now.saturating_duration_since(*since).as_secs_f64());
            }
            false
        });
        for ifindex in ifaces.unknown.keys() {
            self.pending_since.entry(*ifindex).or_insert(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::exponential_buckets;
    use std::time::Duration;

    fn histogram() -> Histogram {
        Histogram::new(exponential_buckets(0.005, 2.0, 15))
    }

    /// (count, sum) of a histogram, read through the text encoding.
    fn observed(h: &Histogram) -> (u64, f64) {
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register("h", "h", h.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap()
        };
        (value("h_count ") as u64, value("h_sum "))
    }

    #[test]
    fn a_change_is_timed_from_its_oldest_notice_to_the_round() {
        let (enforce, pending) = (histogram(), histogram());
        let mut l = Latency::default();
        let t0 = Instant::now();
        l.learned(t0 + Duration::from_millis(100));
        l.learned(t0);
        l.programmed(
            &Interfaces::default(),
            t0 + Duration::from_millis(300),
            &enforce,
            &pending,
        );
        assert_eq!(observed(&enforce), (1, 0.3));
        // A round with no change (a retry) observes nothing.
        l.programmed(&Interfaces::default(), t0, &enforce, &pending);
        assert_eq!(observed(&enforce).0, 1);
    }

    #[test]
    fn a_pending_interface_is_timed_until_its_pod_is_programmed() {
        let (enforce, pending) = (histogram(), histogram());
        let mut l = Latency::default();
        let t0 = Instant::now();
        let mut ifaces = Interfaces::default();
        ifaces.unknown.insert(7, "10.0.0.7".into());
        ifaces.unknown.insert(8, "10.0.0.8".into());
        l.programmed(&ifaces, t0, &enforce, &pending);
        // Still pending a round later: the window keeps its start.
        l.programmed(&ifaces, t0 + Duration::from_millis(50), &enforce, &pending);
        assert_eq!(observed(&pending).0, 0);
        // 7 gets its pod, 8 goes away.
        let mut later = Interfaces::default();
        later.pods.insert("ns/a".into(), 7);
        l.programmed(&later, t0 + Duration::from_millis(200), &enforce, &pending);
        assert_eq!(observed(&pending), (1, 0.2));
        assert!(l.pending_since.is_empty());
    }
}
