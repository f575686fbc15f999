//! Audit mode: the `palisade.dev/enforcement` annotation (loading and its
//! validation), and the oracle's verdicts when enforced and audit policies
//! meet on one pod.

use palisade_common::PROTO_TCP;
use palisade_policy::{
    build, evaluate, load_str, matrix_cells, render_cells, DirVerdict, Direction, Enforcement,
    Family, Flow, Model, ProbePort, RuleRef, ENFORCEMENT_ANNOTATION,
};
use std::net::IpAddr;

const PODS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: probe, namespace: shop, labels: {app: probe}}
status: {podIP: 10.0.0.3}
";

/// A policy selecting `app: <app>` with the given annotation value (none
/// when `None`) and spec body (indented two spaces, under `spec:`).
fn policy(name: &str, app: &str, enforcement: Option<&str>, spec: &str) -> String {
    let annotations = match enforcement {
        Some(v) => format!("\n  annotations: {{palisade.dev/enforcement: {v:?}}}"),
        None => String::new(),
    };
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: shop{annotations}\nspec:\n  podSelector: {{matchLabels: {{app: {app}}}}}\n{spec}"
    )
}

fn model(policies: &[String]) -> Model {
    let text = format!("{PODS}{}", policies.concat());
    let m = load_str(&text, "audit.yaml");
    assert!(m.errors.is_empty(), "{:#?}", m.errors);
    m
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(src: &str, dst: &str, port: u16) -> Flow {
    Flow {
        src: ip(src),
        dst: ip(dst),
        proto: PROTO_TCP,
        dport: port,
    }
}

fn rule(policy: &str, direction: Direction, rule: usize) -> RuleRef {
    RuleRef {
        policy: policy.into(),
        direction,
        rule,
    }
}

const WEB: &str = "10.0.0.1";
const DB: &str = "10.0.0.2";
const PROBE: &str = "10.0.0.3";

/// Ingress to db from web on 5432 only.
const FROM_WEB_5432: &str =
    "  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]\n";
/// Ingress to db from anything on 80.
const ANY_80: &str = "  ingress: [{ports: [{port: 80}]}]\n";
const DENY_INGRESS: &str = "  policyTypes: [Ingress]\n";

#[test]
fn annotation_values_load() {
    let m = model(&[
        policy("absent", "db", None, DENY_INGRESS),
        policy("enforced", "db", Some("enforce"), DENY_INGRESS),
        policy("audited", "db", Some("audit"), DENY_INGRESS),
    ]);
    let modes: Vec<(&str, Enforcement)> = m
        .policies
        .iter()
        .map(|p| (p.name.as_str(), p.enforcement))
        .collect();
    assert_eq!(
        modes,
        [
            ("absent", Enforcement::Enforce),
            ("audited", Enforcement::Audit),
            ("enforced", Enforcement::Enforce),
        ]
    );
}

#[test]
fn unknown_annotation_values_enforce_with_a_warning() {
    for bad in ["x", "Audit", "AUDIT", "", " audit", "enforced", "dry-run"] {
        let text = format!(
            "{PODS}{}{}",
            policy("typo", "db", Some(bad), DENY_INGRESS),
            policy("good", "web", None, DENY_INGRESS)
        );
        let m = load_str(&text, "audit.yaml");
        assert!(m.errors.is_empty(), "{bad:?}: {:#?}", m.errors);
        assert_eq!(m.warnings.len(), 1, "{bad:?}: {:#?}", m.warnings);
        let w = &m.warnings[0];
        assert_eq!(
            w.to_string(),
            format!(
                r#"audit.yaml: NetworkPolicy shop/typo: metadata.annotations["palisade.dev/enforcement"]: unknown value {bad:?} (must be "audit" or "enforce"): the policy is enforced"#
            )
        );
        // Kept and enforced, rules and all; the warning travels with it.
        let typo = m.policies.iter().find(|p| p.name == "typo").unwrap();
        assert_eq!(typo.enforcement, Enforcement::Enforce, "{bad:?}");
        assert!(typo.unreadable.is_none());
        assert_eq!(typo.warnings.len(), 1);
        // db is isolated and its ingress denied, not "would deny".
        let v = evaluate(&m, &tcp(WEB, DB, 80));
        assert_eq!(v.ingress, DirVerdict::Denied(vec!["shop/typo".into()]));
        assert!(!v.allowed());
    }
}

#[test]
fn api_objects_carry_the_annotation_too() {
    let np = |name: &str, value: Option<&str>| {
        let mut meta = serde_json::json!({"name": name, "namespace": "shop"});
        if let Some(v) = value {
            meta["annotations"] = serde_json::json!({ ENFORCEMENT_ANNOTATION: v });
        }
        serde_json::from_value(serde_json::json!({
            "metadata": meta,
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
        }))
        .unwrap()
    };
    let m = build(
        vec![],
        vec![],
        vec![
            np("a", Some("audit")),
            np("b", None),
            np("c", Some("enforce")),
            np("d", Some("bogus")),
        ],
        vec![],
    );
    let modes: Vec<(&str, Enforcement)> = m
        .policies
        .iter()
        .map(|p| (p.name.as_str(), p.enforcement))
        .collect();
    assert_eq!(
        modes,
        [
            ("a", Enforcement::Audit),
            ("b", Enforcement::Enforce),
            ("c", Enforcement::Enforce),
            ("d", Enforcement::Enforce),
        ]
    );
    assert!(m.errors.is_empty(), "{:#?}", m.errors);
    assert_eq!(m.warnings.len(), 1);
    assert_eq!(m.warnings[0].source, None);
    assert_eq!(
        m.warnings[0].to_string(),
        r#"NetworkPolicy shop/d: metadata.annotations["palisade.dev/enforcement"]: unknown value "bogus" (must be "audit" or "enforce"): the policy is enforced"#
    );
}

#[test]
fn audit_only_isolation_would_deny() {
    let m = model(&[policy("db-audit", "db", Some("audit"), FROM_WEB_5432)]);
    // What the audit policy allows is allowed, by its rule.
    let v = evaluate(&m, &tcp(WEB, DB, 5432));
    assert_eq!(
        v.ingress,
        DirVerdict::Allowed(vec![rule("shop/db-audit", Direction::Ingress, 0)])
    );
    assert!(v.allowed() && !v.would_deny());
    // What it does not allow passes, as "would deny", naming the policy.
    for flow in [tcp(PROBE, DB, 5432), tcp(WEB, DB, 80)] {
        let v = evaluate(&m, &flow);
        assert_eq!(
            v.ingress,
            DirVerdict::WouldDeny(vec!["shop/db-audit".into()])
        );
        assert!(v.ingress.allows() && v.ingress.would_deny());
        assert!(v.allowed() && v.would_deny());
        assert_eq!(v.egress, DirVerdict::NotIsolated);
    }
}

#[test]
fn enforced_policy_wins_over_audit_on_the_same_pod() {
    // The audit policy allows anything on 80; the enforced one only web on
    // 5432. The enforced policy alone decides db's ingress.
    let m = model(&[
        policy("a-audit-wide", "db", Some("audit"), ANY_80),
        policy("b-enforced", "db", None, FROM_WEB_5432),
    ]);
    let v = evaluate(&m, &tcp(PROBE, DB, 80));
    assert_eq!(
        v.ingress,
        DirVerdict::Denied(vec!["shop/b-enforced".into()])
    );
    assert!(!v.allowed() && !v.would_deny());
    let v = evaluate(&m, &tcp(WEB, DB, 5432));
    assert_eq!(
        v.ingress,
        DirVerdict::Allowed(vec![rule("shop/b-enforced", Direction::Ingress, 0)])
    );
    // Audit rules never show as the reason something is allowed there.
    let v = evaluate(&m, &tcp(WEB, DB, 80));
    assert_eq!(
        v.ingress,
        DirVerdict::Denied(vec!["shop/b-enforced".into()])
    );

    // Two audit policies isolating together: the would-deny names both.
    let m = model(&[
        policy("a-audit", "db", Some("audit"), ANY_80),
        policy("b-audit", "db", Some("audit"), FROM_WEB_5432),
    ]);
    let v = evaluate(&m, &tcp(PROBE, DB, 5432));
    assert_eq!(
        v.ingress,
        DirVerdict::WouldDeny(vec!["shop/a-audit".into(), "shop/b-audit".into()])
    );
    let v = evaluate(&m, &tcp(PROBE, DB, 80));
    assert_eq!(
        v.ingress,
        DirVerdict::Allowed(vec![rule("shop/a-audit", Direction::Ingress, 0)])
    );
}

#[test]
fn audit_ingress_with_enforced_egress() {
    // web: ingress isolated by an audit policy, egress by an enforced one
    // allowing only db on 5432.
    let m = model(&[
        policy("web-in-audit", "web", Some("audit"), DENY_INGRESS),
        policy(
            "web-out",
            "web",
            None,
            "  policyTypes: [Egress]\n  egress: [{to: [{podSelector: {matchLabels: {app: db}}}], ports: [{port: 5432}]}]\n",
        ),
    ]);
    let v = evaluate(&m, &tcp(PROBE, WEB, 80));
    assert_eq!(
        v.ingress,
        DirVerdict::WouldDeny(vec!["shop/web-in-audit".into()])
    );
    assert!(v.allowed() && v.would_deny());
    let v = evaluate(&m, &tcp(WEB, PROBE, 80));
    assert_eq!(v.egress, DirVerdict::Denied(vec!["shop/web-out".into()]));
    assert!(!v.allowed());
    let v = evaluate(&m, &tcp(WEB, DB, 5432));
    assert_eq!(
        v.egress,
        DirVerdict::Allowed(vec![rule("shop/web-out", Direction::Egress, 0)])
    );
    // A packet one side denies is denied, not "would deny", even when the
    // other side would only have warned.
    let m = model(&[
        policy("web-in-audit", "web", Some("audit"), DENY_INGRESS),
        policy("probe-out", "probe", None, "  policyTypes: [Egress]\n"),
    ]);
    let v = evaluate(&m, &tcp(PROBE, WEB, 80));
    assert!(v.ingress.would_deny());
    assert!(!v.egress.allows());
    assert!(!v.allowed() && !v.would_deny());
}

#[test]
fn audit_all_puts_every_policy_in_audit_mode() {
    let mut m = model(&[
        policy("db-in", "db", None, FROM_WEB_5432),
        policy("web-in", "web", Some("audit"), DENY_INGRESS),
    ]);
    assert!(!evaluate(&m, &tcp(PROBE, DB, 80)).allowed());
    m.audit_all();
    assert!(m
        .policies
        .iter()
        .all(|p| p.enforcement == Enforcement::Audit));
    let v = evaluate(&m, &tcp(PROBE, DB, 80));
    assert_eq!(v.ingress, DirVerdict::WouldDeny(vec!["shop/db-in".into()]));
    assert!(v.allowed() && v.would_deny());
}

#[test]
fn matrix_marks_would_deny() {
    let m = model(&[
        policy("db-audit", "db", Some("audit"), FROM_WEB_5432),
        policy("probe-deny", "probe", None, DENY_INGRESS),
    ]);
    let probe = ProbePort {
        port: 5432,
        protocol: palisade_policy::Protocol::Tcp,
    };
    let cells = matrix_cells(&m, &[probe], Family::V4);
    let get = |from: &str, to: &str| {
        cells
            .iter()
            .find(|c| c.entry.from == from && c.entry.to == to)
            .map(|c| (c.entry.allowed, c.would_deny))
            .unwrap()
    };
    assert_eq!(get("shop/web", "shop/db"), (true, false));
    assert_eq!(get("shop/probe", "shop/db"), (true, true));
    assert_eq!(get("shop/web", "shop/probe"), (false, false));
    assert_eq!(
        render_cells(&cells),
        "5432/TCP\n\
         -          shop/db shop/probe shop/web\n\
         shop/db       -        X         .\n\
         shop/probe    ~        -         .\n\
         shop/web      .        X         -\n"
    );
    // The plain matrix keeps its shape: the entries, no marks.
    let entries = palisade_policy::matrix(&m, &[probe], Family::V4);
    let plain: Vec<_> = cells.into_iter().map(|c| c.entry).collect();
    assert_eq!(entries, plain);
}
