//! The upstream NetworkPolicy e2e cases as table tests: each loads
//! `tests/scenarios/topology.yaml` (namespaces x, y, z with pods a, b, c)
//! plus one scenario's policies and asserts the oracle's FULL reachability
//! matrix. Expectations are written the way the upstream tests write them:
//! everything allowed, then exceptions (`expect_peer`, `expect_all_ingress`,
//! ...). A pod to itself is never probed (upstream ignores loopback too).
//!
//! Upstream tests probe a subset of the nine pods; these probe all nine, so
//! a few expectations gain a line for pods upstream leaves out (marked).

use palisade_policy::{load_paths, matrix, render_table, Family, MatrixEntry, Model, ProbePort};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios")
}

fn load(scenario: &str) -> Model {
    let dir = scenarios_dir();
    let model = load_paths(&[dir.join("topology.yaml"), dir.join(scenario)]);
    assert!(model.errors.is_empty(), "{scenario}: {:#?}", model.errors);
    assert_eq!(model.pods.len(), 9, "{scenario}: topology pods");
    assert!(!model.policies.is_empty(), "{scenario}: no policies loaded");
    model
}

/// An expected truth table: `from/to -> allowed` for every ordered pair of
/// distinct pods.
struct Reach(BTreeMap<(String, String), bool>);

/// `*` (every pod), `x/*` (every pod of x) or `x/a`.
fn pattern_matches(pattern: &str, pod: &str) -> bool {
    match pattern.strip_suffix("/*") {
        _ if pattern == "*" => true,
        Some(ns) => pod.split('/').next() == Some(ns),
        None => pattern == pod,
    }
}

impl Reach {
    fn new(default: bool) -> Reach {
        let pods: Vec<String> = NAMESPACES
            .iter()
            .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
            .collect();
        let mut cells = BTreeMap::new();
        for from in &pods {
            for to in &pods {
                if from != to {
                    cells.insert((from.clone(), to.clone()), default);
                }
            }
        }
        Reach(cells)
    }

    fn expect_peer(&mut self, from: &str, to: &str, allowed: bool) {
        let mut hit = false;
        for ((f, t), v) in self.0.iter_mut() {
            if pattern_matches(from, f) && pattern_matches(to, t) {
                *v = allowed;
                hit = true;
            }
        }
        assert!(hit, "expectation {from} -> {to} matches no pair");
    }

    fn expect(&mut self, from: &str, to: &str, allowed: bool) {
        self.expect_peer(from, to, allowed)
    }

    fn expect_all_ingress(&mut self, to: &str, allowed: bool) {
        self.expect_peer("*", to, allowed)
    }

    fn expect_all_egress(&mut self, from: &str, allowed: bool) {
        self.expect_peer(from, "*", allowed)
    }
}

/// Asserts the matrix of `scenario` for one probe and family.
fn check(scenario: &str, probe: &str, family: Family, expect: impl FnOnce(&mut Reach)) {
    let model = load(scenario);
    let probe: ProbePort = probe.parse().unwrap();
    let mut reach = Reach::new(true);
    expect(&mut reach);

    let actual = matrix(&model, &[probe], family);
    let expected: Vec<MatrixEntry> = reach
        .0
        .iter()
        .map(|((from, to), allowed)| MatrixEntry {
            from: from.clone(),
            to: to.clone(),
            port: probe.port,
            protocol: probe.protocol,
            allowed: *allowed,
        })
        .collect();
    if actual != expected {
        let wrong: Vec<String> = expected
            .iter()
            .filter(|e| !actual.contains(e))
            .map(|e| {
                format!(
                    "{} -> {}: expected {}",
                    e.from,
                    e.to,
                    if e.allowed { "allow" } else { "deny" }
                )
            })
            .collect();
        panic!(
            "{scenario} {probe} {family:?}: matrix differs\nexpected:\n{}actual:\n{}differences:\n  {}",
            render_table(&expected),
            render_table(&actual),
            wrong.join("\n  ")
        );
    }
}

fn check4(scenario: &str, probe: &str, expect: impl FnOnce(&mut Reach)) {
    check(scenario, probe, Family::V4, expect)
}

/// Same expectation on both families (policies without ipBlocks).
fn check46(scenario: &str, probe: &str, expect: impl Fn(&mut Reach)) {
    check(scenario, probe, Family::V4, &expect);
    check(scenario, probe, Family::V6, &expect);
}

/// Every scenario directory must be covered below.
const SCENARIOS: &[&str] = &[
    "allow-all",
    "allow-from-all-namespaces",
    "allow-ingress-for-target",
    "any-pod-selectors",
    "default-deny-all",
    "default-deny-ingress",
    "deny-egress-namespace",
    "deny-egress-pod-selector",
    "deny-ingress-from-other-namespaces",
    "egress-allow-all-precedence",
    "egress-cidr",
    "egress-cidr-except",
    "egress-cidr-except-dual-stack",
    "egress-denied-client-side",
    "egress-namespace-not-in",
    "egress-port-80-only",
    "egress-to-pod-in-other-namespace",
    "end-port",
    "ingress-allow-all-precedence",
    "ingress-and-egress-together",
    "ingress-any-port-of-protocol",
    "ingress-cidr-except",
    "ingress-egress-independent",
    "ingress-port-80-only",
    "ipblock-overlap-union",
    "multiple-pod-and-namespace-selectors",
    "named-port-egress",
    "named-port-from-namespace",
    "named-port-ingress",
    "named-port-protocol-mismatch",
    "namespace-selector",
    "namespace-selector-match-expressions",
    "namespace-selector-no-match",
    "pod-and-namespace-selector",
    "pod-in-other-namespace",
    "pod-or-namespace-selector",
    "pod-selector",
    "pod-selector-exists",
    "pod-selector-match-expressions",
    "policy-types-default-ingress-only",
    "policy-types-default-with-egress",
    "policy-types-egress-ignores-ingress-rules",
    "ports",
    "sctp-is-not-tcp",
    "sctp-policy-isolates",
    "stacked-policies",
    "udp-is-not-tcp",
];

#[test]
fn every_scenario_directory_is_listed() {
    let mut dirs: Vec<String> = std::fs::read_dir(scenarios_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    assert_eq!(dirs, SCENARIOS);
}

#[test]
fn topology_without_policies_allows_everything() {
    let dir = scenarios_dir();
    let model = load_paths(&[dir.join("topology.yaml")]);
    assert!(model.errors.is_empty(), "{:#?}", model.errors);
    assert_eq!(model.namespaces.len(), 3);
    for family in [Family::V4, Family::V6] {
        let m = matrix(
            &model,
            &["80/TCP".parse().unwrap(), "81/SCTP".parse().unwrap()],
            family,
        );
        assert_eq!(m.len(), 2 * 9 * 8);
        assert!(m.iter().all(|e| e.allowed));
    }
}

#[test]
fn default_deny_ingress() {
    for probe in ["80/TCP", "80/UDP", "80/SCTP"] {
        check46("default-deny-ingress", probe, |r| {
            r.expect_peer("*", "x/*", false)
        });
    }
}

#[test]
fn default_deny_all() {
    check46("default-deny-all", "80/TCP", |r| {
        r.expect_peer("*", "x/*", false);
        r.expect_peer("x/*", "*", false);
    });
}

#[test]
fn pod_selector() {
    for scenario in ["pod-selector", "pod-selector-match-expressions"] {
        check46(scenario, "80/TCP", |r| {
            r.expect_all_ingress("x/a", false);
            r.expect("x/b", "x/a", true);
        });
    }
}

#[test]
fn allow_ingress_for_target() {
    check46("allow-ingress-for-target", "80/TCP", |r| {
        // upstream: ExpectAllIngress(x/b, false); x/c (not probed
        // upstream) is under the same deny-all.
        r.expect_all_ingress("x/*", false);
        r.expect_all_ingress("x/a", true);
    });
}

#[test]
fn allow_from_all_namespaces() {
    check46("allow-from-all-namespaces", "80/TCP", |_| {});
}

#[test]
fn namespace_selector() {
    for scenario in ["namespace-selector", "namespace-selector-match-expressions"] {
        check46(scenario, "80/TCP", |r| {
            r.expect_peer("x/*", "x/a", false);
            r.expect_peer("z/*", "x/a", false);
        });
    }
}

#[test]
fn pod_or_namespace_selector() {
    check46("pod-or-namespace-selector", "80/TCP", |r| {
        r.expect("x/c", "x/a", false);
    });
}

#[test]
fn pod_and_namespace_selector() {
    check46("pod-and-namespace-selector", "80/TCP", |r| {
        r.expect_all_ingress("x/a", false);
        r.expect("y/b", "x/a", true);
        r.expect("z/b", "x/a", true);
    });
}

#[test]
fn multiple_pod_and_namespace_selectors() {
    check46("multiple-pod-and-namespace-selectors", "80/TCP", |r| {
        r.expect_peer("x/*", "x/a", false);
        r.expect("y/a", "x/a", false);
        r.expect("z/a", "x/a", false); // not probed upstream
    });
}

#[test]
fn any_pod_selectors() {
    check46("any-pod-selectors", "80/TCP", |r| {
        r.expect_all_ingress("x/a", false);
        r.expect("x/b", "x/a", true);
        r.expect("x/c", "x/a", true);
    });
}

#[test]
fn pod_in_other_namespace() {
    for probe in ["80/TCP", "80/UDP", "80/SCTP"] {
        check46("pod-in-other-namespace", probe, |r| {
            r.expect_all_ingress("x/a", false);
            r.expect("y/a", "x/a", true);
        });
    }
}

#[test]
fn ports() {
    check46("ports", "81/TCP", |r| {
        r.expect_peer("x/*", "x/a", false);
        r.expect_peer("y/*", "x/a", true);
        r.expect_peer("z/*", "x/a", false);
    });
    check46("ports", "80/TCP", |r| r.expect_all_ingress("x/a", false));
    check46("ports", "81/UDP", |r| r.expect_all_ingress("x/a", false));
}

#[test]
fn stacked_policies() {
    for probe in ["80/TCP", "81/TCP"] {
        check46("stacked-policies", probe, |r| {
            r.expect_peer("x/*", "x/a", false);
            r.expect_peer("y/*", "x/a", true);
            r.expect_peer("z/*", "x/a", false);
        });
    }
}

#[test]
fn allow_all() {
    for probe in ["80/TCP", "81/TCP", "80/UDP", "81/SCTP"] {
        check46("allow-all", probe, |_| {});
    }
}

#[test]
fn named_port_ingress() {
    check46("named-port-ingress", "81/TCP", |_| {});
    check46("named-port-ingress", "80/TCP", |r| {
        r.expect_peer("*", "x/*", false)
    });
    // serve-81-tcp is TCP only
    check46("named-port-ingress", "81/UDP", |r| {
        r.expect_peer("*", "x/*", false)
    });
}

#[test]
fn named_port_from_namespace() {
    check46("named-port-from-namespace", "80/TCP", |r| {
        r.expect_peer("x/*", "x/a", false);
        r.expect_peer("z/*", "x/a", false);
    });
    check46("named-port-from-namespace", "81/TCP", |r| {
        r.expect_all_ingress("x/a", false)
    });
}

#[test]
fn named_port_egress() {
    // The name resolves on each destination pod.
    check46("named-port-egress", "80/TCP", |_| {});
    check46("named-port-egress", "81/TCP", |r| {
        r.expect_peer("x/*", "*", false)
    });
}

#[test]
fn named_port_protocol_mismatch() {
    for probe in ["80/TCP", "80/UDP"] {
        check46("named-port-protocol-mismatch", probe, |r| {
            r.expect_all_ingress("x/a", false)
        });
    }
}

#[test]
fn deny_ingress_from_other_namespaces() {
    check46("deny-ingress-from-other-namespaces", "80/TCP", |r| {
        r.expect_peer("y/*", "x/*", false);
        r.expect_peer("z/*", "x/*", false);
    });
}

#[test]
fn namespace_selector_no_match() {
    check46("namespace-selector-no-match", "80/TCP", |r| {
        r.expect_all_ingress("x/a", false)
    });
}

#[test]
fn deny_egress() {
    check46("deny-egress-pod-selector", "80/TCP", |r| {
        r.expect_all_egress("x/a", false)
    });
    check46("deny-egress-namespace", "80/TCP", |r| {
        r.expect_peer("x/*", "*", false)
    });
}

#[test]
fn ingress_and_egress_together() {
    check46("ingress-and-egress-together", "80/TCP", |r| {
        r.expect_all_ingress("x/a", false);
        r.expect("x/b", "x/a", true);
    });
    check46("ingress-and-egress-together", "81/TCP", |r| {
        r.expect_all_ingress("x/a", false);
        r.expect_all_egress("x/a", false);
        r.expect("x/b", "x/a", true);
    });
}

#[test]
fn egress_denied_client_side() {
    check46("egress-denied-client-side", "80/TCP", |r| {
        r.expect_peer("x/a", "*", false);
        r.expect_peer("*", "y/a", false);
        r.expect_peer("x/a", "y/a", true);
        r.expect_peer("*", "y/b", false);
    });
}

#[test]
fn egress_to_pod_in_other_namespace() {
    check46("egress-to-pod-in-other-namespace", "80/TCP", |r| {
        r.expect_all_egress("x/a", false);
        r.expect("x/a", "y/a", true);
    });
}

#[test]
fn ingress_any_port_of_protocol() {
    check46("ingress-any-port-of-protocol", "80/TCP", |_| {});
    check46("ingress-any-port-of-protocol", "80/UDP", |r| {
        r.expect_peer("*", "x/a", false)
    });
}

#[test]
fn allow_all_precedence() {
    check46("ingress-port-80-only", "81/TCP", |r| {
        r.expect_peer("*", "x/*", false)
    });
    check46("ingress-port-80-only", "80/TCP", |_| {});
    check46("ingress-allow-all-precedence", "81/TCP", |_| {});
    check46("egress-port-80-only", "81/TCP", |r| {
        r.expect_peer("x/*", "*", false)
    });
    check46("egress-port-80-only", "80/TCP", |_| {});
    check46("egress-allow-all-precedence", "81/TCP", |_| {});
}

#[test]
fn egress_cidr() {
    check4("egress-cidr", "80/TCP", |r| {
        r.expect_all_egress("x/a", false);
        r.expect("x/a", "y/b", true);
    });
    // The block is IPv4: over IPv6 the isolated x/a reaches nothing.
    check("egress-cidr", "80/TCP", Family::V6, |r| {
        r.expect_all_egress("x/a", false)
    });
}

#[test]
fn egress_cidr_except() {
    check4("egress-cidr-except", "80/TCP", |r| {
        r.expect("x/a", "x/b", false)
    });
    check("egress-cidr-except", "80/TCP", Family::V6, |r| {
        r.expect_all_egress("x/a", false)
    });
    check46("egress-cidr-except-dual-stack", "80/TCP", |r| {
        r.expect("x/a", "x/b", false)
    });
}

#[test]
fn ipblock_overlap_union() {
    check4("ipblock-overlap-union", "80/TCP", |_| {});
}

#[test]
fn ingress_cidr_except() {
    check4("ingress-cidr-except", "80/TCP", |r| {
        r.expect_all_ingress("x/a", false);
        r.expect("y/a", "x/a", true);
        r.expect("y/c", "x/a", true);
    });
    check("ingress-cidr-except", "80/TCP", Family::V6, |r| {
        r.expect_all_ingress("x/a", false)
    });
}

#[test]
fn ingress_egress_independent() {
    check46("ingress-egress-independent", "80/TCP", |r| {
        r.expect_all_ingress("x/a", false)
    });
}

#[test]
fn sctp_and_udp_are_not_tcp() {
    check46("sctp-is-not-tcp", "81/TCP", |r| {
        r.expect_peer("*", "x/*", false)
    });
    check46("sctp-is-not-tcp", "81/SCTP", |r| {
        r.expect_peer("*", "x/*", false);
        r.expect_all_ingress("x/a", true);
    });
    check46("sctp-policy-isolates", "81/TCP", |r| {
        r.expect_all_ingress("x/a", false)
    });
    check46("sctp-policy-isolates", "80/SCTP", |_| {});
    check46("udp-is-not-tcp", "81/TCP", |r| {
        r.expect_all_ingress("x/a", false)
    });
    check46("udp-is-not-tcp", "81/UDP", |_| {});
}

#[test]
fn egress_namespace_not_in() {
    check46("egress-namespace-not-in", "80/TCP", |r| {
        r.expect_peer("x/a", "y/*", false)
    });
}

#[test]
fn end_port() {
    for probe in ["80/TCP", "81/TCP"] {
        check46("end-port", probe, |r| {
            r.expect_all_ingress("x/a", false);
            r.expect_peer("y/*", "x/a", true);
        });
    }
    for probe in ["82/TCP", "80/UDP"] {
        check46("end-port", probe, |r| r.expect_all_ingress("x/a", false));
    }
}

#[test]
fn policy_types_defaulting() {
    check46("policy-types-default-with-egress", "80/TCP", |r| {
        r.expect_all_ingress("x/a", false);
        r.expect_all_egress("x/a", false);
    });
    check46("policy-types-default-ingress-only", "80/TCP", |r| {
        r.expect_all_ingress("x/a", false);
        r.expect("x/b", "x/a", true);
    });
    check46("policy-types-egress-ignores-ingress-rules", "80/TCP", |r| {
        r.expect_all_egress("x/a", false);
        r.expect("x/a", "x/b", true);
    });
}

#[test]
fn pod_selector_exists() {
    check46("pod-selector-exists", "80/TCP", |r| {
        r.expect_peer("y/*", "z/*", false)
    });
}
