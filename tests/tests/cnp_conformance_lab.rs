//! The upstream ClusterNetworkPolicy conformance suite
//! (`tests/cnp-conformance`) on real packets: two lab nodes as the
//! topology places the pods, one agent per node following the manifests,
//! every step's objects applied and every upstream assertion probed with
//! TCP, UDP or SCTP from the client pod's namespace (SCTP: the lab's raw
//! INIT/INIT-ACK responder and probe, this kernel having no SCTP sockets).
//! The node-peer tests probe a hostNetwork server in node-2's namespace.
//!
//! One lab per shard (admin tier, baseline tier, experimental features);
//! a shard runs its tests in upstream's order and fails listing every
//! probe that disagreed with upstream, after printing a line per test.
//!
//! Needs `palisade` (`cargo xtask build`) and root.

use palisade_tests::cnp_conformance::lab::{ConformanceLab, TestRun};
use palisade_tests::cnp_conformance::{ConformanceTest, Profile, Suite};

fn shard(label: &str, pick: impl Fn(&ConformanceTest) -> bool) {
    let suite = Suite::load().unwrap_or_else(|e| panic!("{e:#}"));
    let tests: Vec<&ConformanceTest> = suite.tests.iter().filter(|t| pick(t)).collect();
    assert!(!tests.is_empty(), "{label}: no tests");
    let mut lab = ConformanceLab::up(label, &suite).unwrap_or_else(|e| panic!("{e:#}"));
    let mut runs: Vec<TestRun> = Vec::new();
    for test in &tests {
        let run = lab
            .run(&suite, test)
            .unwrap_or_else(|e| panic!("{}: {e:#}\nagent logs:\n{}", test.name, lab.logs()));
        assert_eq!(
            run.probes,
            test.probe_count(),
            "{}: every probe ran",
            test.name
        );
        runs.push(run);
    }
    lab.agents_alive().unwrap_or_else(|e| panic!("{e:#}"));
    for r in &runs {
        eprintln!(
            "{label}: {:<40} {} {:>3} probes, {:>3} failed{}",
            r.name,
            if r.failures.is_empty() {
                "PASS"
            } else {
                "FAIL"
            },
            r.probes,
            r.failures.len(),
            if r.caveats.is_empty() {
                String::new()
            } else {
                format!(", {} not checked", r.caveats.len())
            }
        );
        for c in &r.caveats {
            eprintln!("  {c}");
        }
    }
    let failures: Vec<&String> = runs.iter().flat_map(|r| &r.failures).collect();
    let failed: Vec<&str> = runs
        .iter()
        .filter(|r| !r.failures.is_empty())
        .map(|r| r.name.as_str())
        .collect();
    assert!(
        failures.is_empty(),
        "{label}: {} of {} tests failed ({failed:?}), {} probes:\n{}\nagent logs:\n{}",
        failed.len(),
        runs.len(),
        failures.len(),
        failures
            .iter()
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        lab.logs()
    );
}

fn standard_of(tier: &'static str) -> impl Fn(&ConformanceTest) -> bool {
    move |t| t.profile == Profile::Standard && t.name.starts_with(tier)
}

#[test]
fn cnp_conformance_admin_tier() {
    shard("cnp_admin", standard_of("CNPAdminTier"));
}

#[test]
fn cnp_conformance_baseline_tier() {
    shard("cnp_baseline", standard_of("CNPBaselineTier"));
}

#[test]
fn cnp_conformance_experimental() {
    shard("cnp_experimental", |t| t.profile == Profile::Experimental);
}

/// The shards together run every test once.
#[test]
fn shards_cover_the_suite() {
    let suite = Suite::load().unwrap();
    let admin = standard_of("CNPAdminTier");
    let baseline = standard_of("CNPBaselineTier");
    for t in &suite.tests {
        let n = [admin(t), baseline(t), t.profile == Profile::Experimental]
            .iter()
            .filter(|b| **b)
            .count();
        assert_eq!(n, 1, "{} is in {n} shards", t.name);
    }
}
