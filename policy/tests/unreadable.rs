//! NetworkPolicies Palisade cannot understand: kept, isolating what could
//! be read of their pods and directions, allowing nothing, while other
//! policies on the same pods still allow what they allow.

use palisade_common::{PROTO_TCP, PROTO_UDP};
use palisade_policy::{
    build, evaluate, load_str, DirVerdict, Direction, Enforcement, Flow, Model, RuleRef,
};
use std::net::IpAddr;

/// Pods web (app: web) and db (app: db) in shop, other in elsewhere.
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
metadata: {name: other, namespace: elsewhere, labels: {app: db}}
status: {podIP: 10.0.0.3}
";
const WEB: &str = "10.0.0.1";
const DB: &str = "10.0.0.2";
const OTHER: &str = "10.0.0.3";

/// A NetworkPolicy `name` in shop with `spec` (YAML flow mapping body).
fn policy(name: &str, annotations: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: {name}, namespace: shop, annotations: {{{annotations}}}}}\n\
         spec: {{{spec}}}\n"
    )
}

fn model(policies: &[String]) -> Model {
    let m = load_str(&format!("{PODS}{}", policies.concat()), "np.yaml");
    assert!(m.errors.is_empty(), "{:#?}", m.errors);
    m
}

fn flow(src: &str, dst: &str, proto: u8, dport: u16) -> Flow {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    Flow {
        src: ip(src),
        dst: ip(dst),
        proto,
        dport,
    }
}

fn denied(by: &str) -> DirVerdict {
    DirVerdict::Denied(vec![by.to_string()])
}

/// Allows everything into db on TCP 5432, but with a port out of range
/// in a second rule.
const BAD_PORT: &str = "podSelector: {matchLabels: {app: db}}, \
    ingress: [{ports: [{port: 5432}]}, {ports: [{port: 0}]}]";

#[test]
fn an_unreadable_policy_isolates_its_pods_with_nothing_allowed() {
    let m = model(&[policy("bad", "", BAD_PORT)]);
    let bad = &m.policies[0];
    assert_eq!(
        bad.unreadable.as_ref().map(|i| i.field.as_str()),
        Some("spec.ingress[1].ports[0].port")
    );
    // Its selector and directions were read: db, ingress only.
    assert!(bad.isolates_ingress && !bad.isolates_egress);
    // Even the rule that read well allows nothing.
    assert_eq!(
        evaluate(&m, &flow(WEB, DB, PROTO_TCP, 5432)).ingress,
        denied("shop/bad")
    );
    // Its other direction and the pods it does not select are untouched.
    assert_eq!(
        evaluate(&m, &flow(DB, WEB, PROTO_TCP, 80)).egress,
        DirVerdict::NotIsolated
    );
    assert!(evaluate(&m, &flow(DB, WEB, PROTO_TCP, 80)).allowed());
    assert!(evaluate(&m, &flow(WEB, OTHER, PROTO_TCP, 5432)).allowed());
    assert_eq!(
        bad.unreadable_note().unwrap(),
        "spec.ingress[1].ports[0].port: 0 is out of range 1-65535; \
         its pods are isolated for ingress with nothing allowed"
    );
}

#[test]
fn other_policies_on_the_same_pods_still_allow() {
    let good = policy(
        "good",
        "",
        "podSelector: {matchLabels: {app: db}}, \
         ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]",
    );
    let m = model(&[policy("bad", "", BAD_PORT), good]);
    let v = evaluate(&m, &flow(WEB, DB, PROTO_TCP, 5432));
    assert_eq!(
        v.ingress,
        DirVerdict::Allowed(vec![RuleRef {
            policy: "shop/good".into(),
            direction: Direction::Ingress,
            rule: 0,
        }])
    );
    // What only the unreadable policy would have allowed stays denied,
    // and the denial names both isolating policies.
    assert_eq!(
        evaluate(&m, &flow(WEB, DB, PROTO_TCP, 5433)).ingress,
        DirVerdict::Denied(vec!["shop/bad".into(), "shop/good".into()])
    );
}

#[test]
fn a_selector_that_does_not_read_isolates_the_whole_namespace() {
    // A number where a selector belongs: the object does not even have
    // the shape of a NetworkPolicy. Its policyTypes still read.
    let m = model(&[policy(
        "bad",
        "",
        "podSelector: 5, policyTypes: [Egress], egress: [{}]",
    )]);
    assert_eq!(m.warnings.len(), 1, "{:#?}", m.warnings);
    assert_eq!(m.warnings[0].field, "spec.podSelector");
    let bad = &m.policies[0];
    assert!(!bad.isolates_ingress && bad.isolates_egress);
    for pod in [WEB, DB] {
        let v = evaluate(&m, &flow(pod, OTHER, PROTO_UDP, 53));
        assert_eq!(v.egress, denied("shop/bad"), "{pod}");
        let v = evaluate(&m, &flow(OTHER, pod, PROTO_TCP, 80));
        assert_eq!(v.ingress, DirVerdict::NotIsolated, "{pod}");
    }
    // Another namespace's pod is not touched.
    assert!(evaluate(&m, &flow(OTHER, WEB, PROTO_TCP, 80)).allowed());
}

#[test]
fn directions_that_do_not_read_are_both() {
    // policyTypes a string instead of a list; podSelector readable.
    let m = model(&[policy(
        "bad",
        "",
        "podSelector: {matchLabels: {app: db}}, policyTypes: Ingress",
    )]);
    let bad = &m.policies[0];
    assert!(bad.unreadable.is_some());
    assert!(bad.isolates_ingress && bad.isolates_egress);
    let v = evaluate(&m, &flow(DB, WEB, PROTO_TCP, 80));
    assert_eq!(v.egress, denied("shop/bad"));
    assert!(evaluate(&m, &flow(OTHER, WEB, PROTO_TCP, 80)).allowed());
    // Without policyTypes, an `egress` section that does not read still
    // says egress is isolated, as for any policy.
    let m = model(&[policy(
        "bad",
        "",
        "podSelector: {matchLabels: {app: db}}, egress: 7",
    )]);
    assert!(m.policies[0].isolates_ingress && m.policies[0].isolates_egress);
    // A policy type that is not one reads as neither: both.
    let m = model(&[policy(
        "bad",
        "",
        "podSelector: {matchLabels: {app: db}}, policyTypes: [Ingress, Sideways]",
    )]);
    assert!(m.policies[0].isolates_ingress && m.policies[0].isolates_egress);
    assert_eq!(
        m.policies[0].unreadable.as_ref().unwrap().field,
        "spec.policyTypes[1]"
    );
}

#[test]
fn an_unreadable_audit_policy_would_deny() {
    let m = model(&[policy("bad", "palisade.dev/enforcement: audit", BAD_PORT)]);
    assert_eq!(m.policies[0].enforcement, Enforcement::Audit);
    let v = evaluate(&m, &flow(WEB, DB, PROTO_TCP, 5432));
    assert_eq!(v.ingress, DirVerdict::WouldDeny(vec!["shop/bad".into()]));
    assert!(v.allowed() && v.would_deny());
}

#[test]
fn an_unknown_enforcement_value_and_a_bad_field_both_count() {
    let m = model(&[policy("bad", "palisade.dev/enforcement: Audit", BAD_PORT)]);
    let fields: Vec<&str> = m.warnings.iter().map(|w| w.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.ingress[1].ports[0].port",
            r#"metadata.annotations["palisade.dev/enforcement"]"#
        ]
    );
    // Enforced: denied, not "would deny".
    let v = evaluate(&m, &flow(WEB, DB, PROTO_TCP, 5432));
    assert_eq!(v.ingress, denied("shop/bad"));
}

#[test]
fn manifests_and_api_objects_read_alike() {
    let text = format!("{PODS}{}", policy("bad", "", BAD_PORT));
    let loaded = load_str(&text, "np.yaml");
    let np = serde_yaml::from_str::<serde_json::Value>(&policy("bad", "", BAD_PORT)[4..]).unwrap();
    let built = build(
        vec![],
        vec![],
        vec![serde_json::from_value(np).unwrap()],
        vec![],
    );
    assert_eq!(loaded.policies, built.policies);
    assert_eq!(loaded.warnings[0].message, built.warnings[0].message);
}
