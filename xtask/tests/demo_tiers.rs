//! `cargo xtask demo` on the examples, whose Admin ClusterNetworkPolicy
//! denies the cloud metadata address and lets monitoring scrape postgres
//! although a NetworkPolicy isolates it: the metadata host behind each
//! node is reached before enforcement and not after, the scrape is
//! measured allowed, and `palisade check` names the Admin rules. Needs
//! root and the built binaries.

mod common;

use common::{lab_lock, xtask};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(180);

#[test]
fn the_demo_shows_the_admin_tier_on_real_packets() {
    let _one_at_a_time = lab_lock();
    // JSON mode: stdout holds the matrix alone, the report goes to stderr.
    let run = xtask(&["demo", "--output", "json"], LIMIT);
    assert!(run.ok, "demo failed; stderr:\n{}", run.stderr);
    let err = &run.stderr;
    for expected in [
        "Cloud metadata 169.254.169.254 80/TCP (a host behind each node), before: reached from 6 of 6 pods",
        "Cloud metadata 169.254.169.254 80/TCP, after: reached from 0 of 6 pods",
        "denied by ClusterNetworkPolicy cluster-guard (Admin tier, priority 10), egress rule 0 \
         (deny-cloud-metadata): Deny",
        "Allowed by an Admin Accept although a NetworkPolicy isolates data/postgres-0: \
         monitoring/prometheus-0 -> data/postgres-0 9187/TCP: measured allowed",
        "ingress of data/postgres-0: allowed by ClusterNetworkPolicy cluster-guard (Admin tier, \
         priority 10), ingress rule 0 (allow-monitoring-scrape): Accept",
        "measured == expected",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    let measured: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    let scrape = measured
        .iter()
        .find(|e| {
            e["from"] == "monitoring/prometheus-0"
                && e["to"] == "data/postgres-0"
                && e["port"] == 9187
        })
        .expect("the scrape is probed");
    assert_eq!(scrape["allowed"], true);
    let other = measured
        .iter()
        .find(|e| e["from"] == "shop/api-0" && e["to"] == "data/postgres-0" && e["port"] == 9187)
        .expect("another pod's scrape is probed");
    assert_eq!(
        other["allowed"], false,
        "only monitoring gets past the NetworkPolicy"
    );
}
