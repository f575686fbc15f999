//! The agent's Prometheus metrics and its health state, served by
//! `http.rs`.

use crate::source::api::WatchMetrics;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct Metrics {
    registry: Mutex<Registry>,
    pub pods: Gauge,
    pub policies: Gauge,
    pub identities: Gauge,
    pub invalid_objects: Gauge,
    /// NetworkPolicies enforced as isolation with nothing allowed.
    pub policies_not_understood: Gauge,
    /// Local pods and interfaces denied everything in the last round
    /// because their policy could not be programmed.
    pub failed_closed: Gauge,
    pub compile_seconds: Histogram,
    pub program_seconds: Histogram,
    /// From learning of a change to the end of the round that enforced it.
    pub time_to_enforce: Histogram,
    /// From a link or route event to the classifiers of the new
    /// interfaces it brought being attached.
    pub time_to_attach: Histogram,
    /// How long interfaces were held pending before their state was known.
    pub pending_window: Histogram,
    pub rounds: Counter,
    pub round_errors: Counter,
    /// Node-wide programming steps that failed (a full `SERVICES`, an
    /// identity write), by step.
    pub node_errors: Family<StepLabel, Counter>,
    pub watch: WatchMetrics,
    /// Set after the first successful programming round (and never unset:
    /// a lost API connection does not stop enforcement).
    ready: AtomicBool,
}

/// The `step` label of `palisade_node_step_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabel {
    pub step: &'static str,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut reg = Registry::with_prefix("palisade");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            pods: Gauge::default(),
            policies: Gauge::default(),
            identities: Gauge::default(),
            invalid_objects: Gauge::default(),
            policies_not_understood: Gauge::default(),
            failed_closed: Gauge::default(),
            // 1 ms to about 16 s.
            compile_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            program_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            // 5 ms to about 80 s: debounce and retries included.
            time_to_enforce: Histogram::new(exponential_buckets(0.005, 2.0, 15)),
            // 0.5 ms to about 8 s.
            time_to_attach: Histogram::new(exponential_buckets(0.0005, 2.0, 15)),
            pending_window: Histogram::new(exponential_buckets(0.005, 2.0, 15)),
            rounds: Counter::default(),
            round_errors: Counter::default(),
            node_errors: Family::default(),
            watch: WatchMetrics::default(),
            ready: AtomicBool::new(false),
        };
        reg.register(
            "pods_enforced",
            "Local pods whose policy is programmed",
            m.pods.clone(),
        );
        reg.register(
            "policies",
            "NetworkPolicies in the model",
            m.policies.clone(),
        );
        reg.register(
            "identities",
            "Distinct identity numbers of the cluster's pod addresses",
            m.identities.clone(),
        );
        reg.register(
            "invalid_objects",
            "Objects skipped as invalid in the last round",
            m.invalid_objects.clone(),
        );
        reg.register(
            "policies_not_understood",
            "NetworkPolicies not understood in the last round, enforced as isolation with nothing allowed",
            m.policies_not_understood.clone(),
        );
        reg.register(
            "pods_failed_closed",
            "Local pods (or interfaces) denied all traffic after the last round because their policy \
             exceeds a map's capacity or their maps or record could not be written",
            m.failed_closed.clone(),
        );
        reg.register(
            "compile_seconds",
            "Time to compile the model for this node",
            m.compile_seconds.clone(),
        );
        reg.register(
            "program_seconds",
            "Time to program the kernel maps and attachments",
            m.program_seconds.clone(),
        );
        reg.register(
            "time_to_enforce_seconds",
            "Time from learning of a change (API event, manifest edit, interface seen) to the end of the round that programmed it",
            m.time_to_enforce.clone(),
        );
        reg.register(
            "time_to_attach_seconds",
            "Time from seeing a new interface's route or link to its classifiers being attached (held pending or programmed)",
            m.time_to_attach.clone(),
        );
        reg.register(
            "pending_window_seconds",
            "Time an interface was held pending (dropping) before its pod's policy or open state was programmed",
            m.pending_window.clone(),
        );
        reg.register("rounds", "Programming rounds", m.rounds.clone());
        reg.register(
            "round_errors",
            "Programming rounds that left pods to retry or failed",
            m.round_errors.clone(),
        );
        reg.register(
            "node_step_errors",
            "Node-wide programming steps (IDENTITIES, LOCAL_ADDRS, SERVICES, commit) that failed; \
             what they could not write fails closed until a round succeeds",
            m.node_errors.clone(),
        );
        reg.register(
            "watch_restarts",
            "Watch errors after which a watcher reconnected or listed again",
            m.watch.restarts.clone(),
        );
        reg.register(
            "watch_relists",
            "Full lists after the first one (410 Gone)",
            m.watch.relists.clone(),
        );
        *m.registry.lock().unwrap() = reg;
        Arc::new(m)
    }

    /// Adds metrics computed at scrape time (the datapath's counters).
    pub fn register_collector(&self, c: Box<dyn prometheus_client::collector::Collector>) {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register_collector(c);
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &reg);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed() {
        let m = Metrics::new();
        m.pods.set(3);
        m.rounds.inc();
        m.compile_seconds.observe(0.002);
        m.watch
            .restarts
            .get_or_create(&[("resource", "pods")])
            .inc();
        let text = m.encode();
        for line in [
            "palisade_pods_enforced 3",
            "palisade_rounds_total 1",
            "palisade_compile_seconds_count 1",
            "palisade_watch_restarts_total{resource=\"pods\"} 1",
            "# TYPE palisade_program_seconds histogram",
            "# TYPE palisade_time_to_enforce_seconds histogram",
            "# TYPE palisade_pending_window_seconds histogram",
            "# TYPE palisade_time_to_attach_seconds histogram",
            "# TYPE palisade_policies gauge",
            "# TYPE palisade_pods_failed_closed gauge",
            "# TYPE palisade_identities gauge",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        assert!(!m.ready());
        m.set_ready();
        assert!(m.ready());
    }
}
