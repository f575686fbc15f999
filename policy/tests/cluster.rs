//! ClusterNetworkPolicy and Node loading: validation errors name the file,
//! the object and the field; what cannot be understood below a rule is read
//! fail closed, with a warning naming the field.

use palisade_policy::{
    load_str, Action, ClusterPeer, ClusterPolicy, ClusterRule, InputError, Model, PodSet,
    PortMatch, PortSpec, Protocol, Selector, Tier,
};
use std::net::IpAddr;

/// A ClusterNetworkPolicy `name` with the given spec (indented YAML).
fn cnp(name: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {{name: {name}}}
spec:
{spec}"
    )
}

/// A valid Admin policy with `rules` (an `ingress:` or `egress:` block).
fn admin(rules: &str) -> String {
    cnp(
        "p",
        &format!("tier: Admin\npriority: 10\nsubject: {{namespaces: {{}}}}\n{rules}"),
    )
}

fn load(text: &str) -> Model {
    load_str(text, "c.yaml")
}

/// The only policy of `text`, which must load without errors.
fn only_policy(text: &str) -> (ClusterPolicy, Vec<InputError>) {
    let m = load(text);
    assert_eq!(m.errors, [], "no object skipped");
    assert_eq!(m.cluster_policies.len(), 1);
    (m.cluster_policies[0].clone(), m.warnings)
}

fn labels(pairs: &[(&str, &str)]) -> Selector {
    Selector {
        match_labels: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        match_expressions: vec![],
    }
}

/// The warnings' (object, field) pairs.
fn fields(warnings: &[InputError]) -> Vec<(&str, &str)> {
    warnings
        .iter()
        .map(|w| (w.object.as_str(), w.field.as_str()))
        .collect()
}

#[test]
fn a_full_policy_loads_into_the_model() {
    let text = admin(
        "ingress:
- name: from-monitoring
  action: Accept
  from:
  - namespaces: {matchLabels: {team: mon}}
  - pods: {namespaceSelector: {matchLabels: {team: web}}, podSelector: {matchLabels: {app: fe}}}
  protocols:
  - tcp: {destinationPort: {number: 443}}
  - udp: {destinationPort: {range: {start: 1000, end: 2000}}}
  - destinationNamedPort: metrics
egress:
- action: Deny
  to:
  - networks: [10.1.2.3/8, 'fd00::/8']
  - nodes: {matchLabels: {role: control}}
- action: Pass
  to:
  - pods: {podSelector: {}}
",
    );
    let (p, warnings) = only_policy(&text);
    assert_eq!(warnings, []);
    let named = |protocol| PortSpec {
        protocol,
        port: PortMatch::Named("metrics".into()),
    };
    let expected = ClusterPolicy {
        name: "p".into(),
        tier: Tier::Admin,
        priority: 10,
        subject: PodSet::default(),
        ingress: vec![ClusterRule {
            name: Some("from-monitoring".into()),
            action: Action::Accept,
            peers: vec![
                ClusterPeer::Pods(PodSet {
                    namespaces: labels(&[("team", "mon")]),
                    pods: Selector::default(),
                }),
                ClusterPeer::Pods(PodSet {
                    namespaces: labels(&[("team", "web")]),
                    pods: labels(&[("app", "fe")]),
                }),
            ],
            ports: Some(vec![
                PortSpec {
                    protocol: Protocol::Tcp,
                    port: PortMatch::Range {
                        port: 443,
                        end: 443,
                    },
                },
                PortSpec {
                    protocol: Protocol::Udp,
                    port: PortMatch::Range {
                        port: 1000,
                        end: 2000,
                    },
                },
                named(Protocol::Tcp),
                named(Protocol::Udp),
                named(Protocol::Sctp),
            ]),
        }],
        egress: vec![
            ClusterRule {
                name: None,
                action: Action::Deny,
                peers: vec![
                    // Host bits are read as the network, as for ipBlock.
                    ClusterPeer::Networks(vec![
                        "10.0.0.0/8".parse().unwrap(),
                        "fd00::/8".parse().unwrap(),
                    ]),
                    ClusterPeer::Nodes(labels(&[("role", "control")])),
                ],
                ports: None,
            },
            ClusterRule {
                name: None,
                action: Action::Pass,
                peers: vec![ClusterPeer::Pods(PodSet::default())],
                ports: None,
            },
        ],
        warnings: vec![],
    };
    assert_eq!(p, expected);
}

#[test]
fn policies_are_in_evaluation_order_and_duplicates_are_reported() {
    let subject = "subject: {pods: {podSelector: {matchLabels: {app: a}}}}";
    let text = [
        cnp("zz", &format!("tier: Baseline\npriority: 0\n{subject}")),
        cnp("b", &format!("tier: Admin\npriority: 5\n{subject}")),
        cnp("a", &format!("tier: Admin\npriority: 5\n{subject}")),
        cnp("c", &format!("tier: Admin\npriority: 1\n{subject}")),
        cnp("a", &format!("tier: Admin\npriority: 9\n{subject}")),
    ]
    .join("---\n");
    let m = load(&text);
    let order: Vec<(Tier, u32, &str)> = m
        .cluster_policies
        .iter()
        .map(|p| (p.tier, p.priority, p.name.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            (Tier::Admin, 1, "c"),
            (Tier::Admin, 5, "a"),
            (Tier::Admin, 5, "b"),
            (Tier::Baseline, 0, "zz"),
        ]
    );
    assert_eq!(
        fields(&m.errors),
        [("ClusterNetworkPolicy a", "metadata.name")]
    );
    assert_eq!(
        m.cluster_policies[1].subject,
        PodSet {
            namespaces: Selector::default(),
            pods: labels(&[("app", "a")]),
        }
    );
}

/// Loads `bad` beside a valid policy: the bad one is skipped with one
/// error naming it and `field`, whose message contains `part`.
fn assert_skipped(bad: &str, object: &str, field: &str, part: &str) {
    let text = format!("{bad}---\n{}", admin(""));
    let m = load(&text);
    assert_eq!(m.cluster_policies.len(), 1, "the valid policy loads");
    assert_eq!(m.errors.len(), 1, "{:?}", m.errors);
    let e = &m.errors[0];
    assert_eq!(e.source.as_deref(), Some("c.yaml"));
    assert_eq!((e.object.as_str(), e.field.as_str()), (object, field));
    assert!(e.message.contains(part), "{e}");
    assert!(e
        .to_string()
        .starts_with(&format!("c.yaml: {object}: {field}: ")));
}

#[test]
fn objects_without_a_readable_tier_priority_subject_or_name_are_skipped() {
    let ok_subject = "subject: {namespaces: {}}";
    let cases = [
        (
            cnp("t", &format!("tier: Root\npriority: 1\n{ok_subject}")),
            "ClusterNetworkPolicy t",
            "spec.tier",
            "unknown variant `Root`",
        ),
        (
            cnp("t", &format!("priority: 1\n{ok_subject}")),
            "ClusterNetworkPolicy t",
            "spec",
            "missing field `tier`",
        ),
        (
            cnp("t", &format!("tier: Admin\npriority: 1001\n{ok_subject}")),
            "ClusterNetworkPolicy t",
            "spec.priority",
            "1001 is out of range 0-1000",
        ),
        (
            cnp("t", &format!("tier: Admin\npriority: -1\n{ok_subject}")),
            "ClusterNetworkPolicy t",
            "spec.priority",
            "out of range",
        ),
        (
            cnp("t", "tier: Admin\npriority: 1\nsubject: {}"),
            "ClusterNetworkPolicy t",
            "spec.subject",
            "exactly one of namespaces, pods",
        ),
        (
            cnp(
                "t",
                "tier: Admin\npriority: 1\nsubject: {namespaces: {}, pods: {podSelector: {}}}",
            ),
            "ClusterNetworkPolicy t",
            "spec.subject",
            "exactly one",
        ),
        (
            // A subject field of a newer version: nothing says whom it is for.
            cnp("t", "tier: Admin\npriority: 1\nsubject: {serviceAccounts: {}}"),
            "ClusterNetworkPolicy t",
            "spec.subject",
            "exactly one",
        ),
        (
            cnp(
                "t",
                "tier: Admin\npriority: 1\nsubject: {namespaces: {matchExpressions: [{key: a, operator: In}]}}",
            ),
            "ClusterNetworkPolicy t",
            "spec.subject.namespaces.matchExpressions[0].values",
            "must be non-empty",
        ),
        (
            cnp("Bad_Name", &format!("tier: Admin\npriority: 1\n{ok_subject}")),
            "ClusterNetworkPolicy Bad_Name",
            "metadata.name",
            "lowercase",
        ),
        (
            "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: t}\n"
                .to_string(),
            "ClusterNetworkPolicy t",
            "(root)",
            "missing field `spec`",
        ),
    ];
    for (bad, object, field, part) in cases {
        assert_skipped(&bad, object, field, part);
    }
}

/// The one rule of `rules` as loaded, and the warnings' fields and
/// messages.
fn one_rule(rules: &str) -> (ClusterRule, Vec<(String, String)>) {
    let (p, warnings) = only_policy(&admin(rules));
    let rule = p.ingress.iter().chain(&p.egress).next().unwrap().clone();
    assert!(warnings
        .iter()
        .all(|w| w.object == "ClusterNetworkPolicy p"));
    let w = warnings.into_iter().map(|w| (w.field, w.message)).collect();
    (rule, w)
}

fn assert_warning(warnings: &[(String, String)], field: &str, part: &str) {
    assert!(
        warnings.iter().any(|(f, m)| f == field && m.contains(part)),
        "no warning on {field} containing {part:?}: {warnings:?}"
    );
}

#[test]
fn an_unknown_peer_matches_nothing_in_accept_and_everything_in_deny_and_pass() {
    let peers = "- namespaces: {matchLabels: {a: b}}\n  - serviceAccounts: {name: x}";
    let (r, w) = one_rule(&format!("egress:\n- action: Accept\n  to:\n  {peers}"));
    assert_eq!(r.action, Action::Accept);
    assert_eq!(r.peers.len(), 1, "only the readable peer is kept");
    assert_warning(&w, "spec.egress[0].to[1]", "this peer matches nothing");

    let (r, _) = one_rule("egress:\n- action: Accept\n  to:\n  - futurePeer: {}");
    assert_eq!(r.peers, [], "no readable peer: the rule matches nothing");

    let (r, w) = one_rule(&format!("ingress:\n- action: Deny\n  from:\n  {peers}"));
    assert_eq!(r.action, Action::Deny);
    assert!(r.peers.contains(&ClusterPeer::All));
    assert_warning(
        &w,
        "spec.ingress[0].from[1]",
        "this rule matches every peer",
    );

    // A Pass matching every peer would skip the rest of the tier: it denies.
    let (r, w) = one_rule(&format!("ingress:\n- action: Pass\n  from:\n  {peers}"));
    assert_eq!(r.action, Action::Deny);
    assert!(r.peers.contains(&ClusterPeer::All));
    assert_warning(
        &w,
        "spec.ingress[0].from[1]",
        "this Pass rule denies instead",
    );
}

#[test]
fn an_unknown_protocol_entry_matches_nothing_in_accept_and_every_port_in_deny() {
    let rule = |action: &str| {
        format!(
            "ingress:\n- action: {action}\n  from: [{{namespaces: {{}}}}]\n  protocols:\n  - tcp: {{destinationPort: {{number: 80}}}}\n  - icmp: {{type: 8}}"
        )
    };
    let (r, w) = one_rule(&rule("Accept"));
    assert_eq!(
        r.ports,
        Some(vec![PortSpec {
            protocol: Protocol::Tcp,
            port: PortMatch::Range { port: 80, end: 80 }
        }])
    );
    assert_warning(
        &w,
        "spec.ingress[0].protocols[1]",
        "this protocol entry matches nothing",
    );
    let (r, _) = one_rule(
        "ingress:\n- action: Accept\n  from: [{namespaces: {}}]\n  protocols: [{icmp: {}}]",
    );
    assert_eq!(r.ports, Some(vec![]), "no readable entry: no port matches");
    let (r, w) = one_rule(&rule("Deny"));
    assert_eq!((r.action, r.ports), (Action::Deny, None));
    assert_warning(
        &w,
        "spec.ingress[0].protocols[1]",
        "this rule matches every port",
    );
    let (r, _) = one_rule(&rule("Pass"));
    assert_eq!((r.action, r.ports), (Action::Deny, None));
    // A protocol without a port field this version knows.
    let (r, w) = one_rule(
        "ingress:\n- action: Deny\n  from: [{namespaces: {}}]\n  protocols: [{tcp: {sourcePort: 5}}]",
    );
    assert_eq!(r.ports, None);
    assert_warning(&w, "spec.ingress[0].protocols[0].tcp", "destinationPort");
}

#[test]
fn domain_names_match_nothing_with_a_warning() {
    let (r, w) = one_rule(
        "egress:\n- action: Accept\n  to:\n  - domainNames: ['*.example.com']\n  - networks: [192.0.2.0/24]",
    );
    assert_eq!(
        r.peers,
        [ClusterPeer::Networks(vec!["192.0.2.0/24".parse().unwrap()])]
    );
    assert_eq!(
        w,
        [(
            "spec.egress[0].to[0].domainNames".to_string(),
            "domainNames peers are not supported; this peer matches nothing".to_string()
        )]
    );
    // In a Deny rule (upstream allows them in Accept rules only) matching
    // nothing would open: it matches every peer.
    let (r, w) = one_rule("egress:\n- action: Deny\n  to: [{domainNames: [example.com]}]");
    assert_eq!(r.peers, [ClusterPeer::All]);
    assert_warning(&w, "spec.egress[0].to[0].domainNames", "not supported");
}

/// Each problem inside a rule: the field named, and the rule read fail
/// closed (an Accept rule's bad part matches nothing, a Deny rule's
/// matches everything).
#[test]
fn every_rule_validation_names_its_field() {
    let from = "from: [{namespaces: {}}]";
    let cases: &[(&str, &str, &str)] = &[
        (
            "ingress:\n- action: Deny\n  from: []",
            "spec.ingress[0].from",
            "at least one peer",
        ),
        (
            &format!("ingress:\n- action: Deny\n  {from}\n  protocols: []"),
            "spec.ingress[0].protocols",
            "must not be empty",
        ),
        (
            "ingress:\n- action: Deny\n  from: [{namespaces: {}, pods: {podSelector: {}}}]",
            "spec.ingress[0].from[0]",
            "exactly one field",
        ),
        (
            // Ingress peers have no networks.
            "ingress:\n- action: Deny\n  from: [{networks: [10.0.0.0/8]}]",
            "spec.ingress[0].from[0]",
            "no peer field",
        ),
        (
            "ingress:\n- action: Deny\n  from: [{pods: {podSelector: {matchLabels: {'bad key': x}}}}]",
            "spec.ingress[0].from[0].pods.podSelector.matchLabels[\"bad key\"]",
            "label key",
        ),
        (
            "egress:\n- action: Deny\n  to: [{nodes: {matchExpressions: [{key: a, operator: Is}]}}]",
            "spec.egress[0].to[0].nodes.matchExpressions[0].operator",
            "unknown operator",
        ),
        (
            "egress:\n- action: Deny\n  to: [{networks: []}]",
            "spec.egress[0].to[0].networks",
            "must not be empty",
        ),
        (
            "egress:\n- action: Deny\n  to: [{networks: [10.0.0.0/8, 10.0.0.300/8]}]",
            "spec.egress[0].to[0].networks[1]",
            "is not a CIDR",
        ),
        (
            "egress:\n- action: Deny\n  to: [{networks: [10.0.0.1]}]",
            "spec.egress[0].to[0].networks[0]",
            "is not a CIDR",
        ),
        (
            &format!("ingress:\n- action: Deny\n  {from}\n  protocols: [{{tcp: {{destinationPort: {{number: 80}}}}, destinationNamedPort: http}}]"),
            "spec.ingress[0].protocols[0]",
            "exactly one field",
        ),
        (
            &format!("ingress:\n- action: Deny\n  {from}\n  protocols: [{{udp: {{destinationPort: {{number: 0}}}}}}]"),
            "spec.ingress[0].protocols[0].udp.destinationPort.number",
            "0 is out of range 1-65535",
        ),
        (
            &format!("ingress:\n- action: Deny\n  {from}\n  protocols: [{{sctp: {{destinationPort: {{number: 65536}}}}}}]"),
            "spec.ingress[0].protocols[0].sctp.destinationPort.number",
            "out of range",
        ),
        (
            &format!("ingress:\n- action: Deny\n  {from}\n  protocols: [{{tcp: {{destinationPort: {{range: {{start: 90, end: 80}}}}}}}}]"),
            "spec.ingress[0].protocols[0].tcp.destinationPort.range.end",
            "80 is less than start 90",
        ),
        (
            &format!("ingress:\n- action: Deny\n  {from}\n  protocols: [{{tcp: {{destinationPort: {{range: {{start: 0, end: 80}}}}}}}}]"),
            "spec.ingress[0].protocols[0].tcp.destinationPort.range.start",
            "out of range",
        ),
        (
            &format!("ingress:\n- action: Deny\n  {from}\n  protocols: [{{tcp: {{destinationPort: {{number: 80, range: {{start: 1, end: 2}}}}}}}}]"),
            "spec.ingress[0].protocols[0].tcp.destinationPort",
            "exactly one of number, range",
        ),
        (
            &format!("ingress:\n- action: Deny\n  {from}\n  protocols: [{{tcp: {{destinationPort: {{}}}}}}]"),
            "spec.ingress[0].protocols[0].tcp.destinationPort",
            "no field this version knows",
        ),
        (
            &format!("ingress:\n- action: Deny\n  {from}\n  protocols: [{{destinationNamedPort: HTTP}}]"),
            "spec.ingress[0].protocols[0].destinationNamedPort",
            "lowercase",
        ),
        (
            "egress:\n- action: Deny\n  to: [{networks: [10.0.0.0/8]}]\n  protocols: [{destinationNamedPort: http}]",
            "spec.egress[0]",
            "cannot be combined with destinationNamedPort",
        ),
        (
            // An action of a newer version: the rule does not deserialize.
            "egress:\n- action: Log\n  to: [{networks: [10.0.0.0/8]}]",
            "spec.egress[0].action",
            "unknown variant `Log`",
        ),
        (
            "egress:\n- action: Deny\n  to: {networks: [10.0.0.0/8]}",
            "spec.egress[0].to",
            "invalid type: map, expected a sequence",
        ),
    ];
    for (rules, field, part) in cases {
        let (r, w) = one_rule(rules);
        assert_warning(&w, field, part);
        // Every Deny rule above ends up matching at least every port of
        // every peer it named: nothing it closed opens.
        assert_eq!(r.action, Action::Deny, "{rules}");
        let all_peers = r.peers.contains(&ClusterPeer::All);
        assert!(all_peers || r.ports.is_none(), "{rules}: {r:?}");
    }
}

#[test]
fn accept_rules_that_cannot_be_read_match_nothing() {
    let cases = [
        "ingress:\n- action: Accept\n  from: []",
        "egress:\n- action: Accept\n  to: [{networks: [10.0.0.0/8]}]\n  protocols: [{destinationNamedPort: http}]",
        "egress:\n- action: Accept\n  to: [{networks: 5}]",
        "ingress:\n- action: Accept\n  from: [{pods: {namespaceSelector: {}}}]",
    ];
    for rules in cases {
        let (r, w) = one_rule(rules);
        assert_eq!(r.action, Action::Accept, "{rules}");
        assert_eq!(r.peers, [], "{rules}");
        assert_eq!(w.len(), 1, "{rules}: {w:?}");
        assert!(w[0].1.contains("matches nothing"), "{w:?}");
    }
    // Only the rule that does not deserialize is set aside.
    let (p, w) = only_policy(&admin(
        "egress:\n- action: Accept\n  to: [{networks: 5}]\n- action: Deny\n  to: [{networks: [10.0.0.0/8]}]",
    ));
    assert_eq!(p.egress.len(), 2);
    assert_eq!(
        p.egress[1].peers,
        [ClusterPeer::Networks(vec!["10.0.0.0/8".parse().unwrap()])]
    );
    assert_eq!(
        fields(&w),
        [("ClusterNetworkPolicy p", "spec.egress[0].to[0].networks")]
    );
}

#[test]
fn limits_on_counts_and_names_are_reported_and_the_content_used() {
    let long = "n".repeat(101);
    let rule = format!("- name: {long}\n  action: Deny\n  from: [{{namespaces: {{}}}}]\n");
    let (p, w) = only_policy(&admin(&format!("ingress:\n{}", rule.repeat(26))));
    assert_eq!(p.ingress.len(), 26);
    assert_eq!(p.ingress[0].name.as_deref(), Some(long.as_str()));
    let w: Vec<(String, String)> = w.into_iter().map(|w| (w.field, w.message)).collect();
    assert_warning(&w, "spec.ingress", "26 rules, at most 25 allowed");
    assert_warning(&w, "spec.ingress[0].name", "101 characters, at most 100");

    let nets: Vec<String> = (0..26).map(|i| format!("10.{i}.0.0/16")).collect();
    let (r, w) = one_rule(&format!(
        "egress:\n- action: Deny\n  to: [{{networks: [{}]}}]",
        nets.join(", ")
    ));
    assert!(matches!(&r.peers[0], ClusterPeer::Networks(n) if n.len() == 26));
    assert_warning(&w, "spec.egress[0].to[0].networks", "26 networks");
}

#[test]
fn nodes_load_with_labels_and_ip_addresses() {
    let text = "
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {role: control}}
status:
  addresses:
  - {type: InternalIP, address: 192.168.1.10}
  - {type: Hostname, address: node-1}
  - {type: InternalIP, address: 'fd00::10'}
  - {type: ExternalIP, address: 192.168.1.10}
---
apiVersion: v1
kind: Node
metadata: {name: node-0}
---
apiVersion: v1
kind: Node
metadata: {name: node-2}
status:
  addresses: [{type: InternalIP, address: 192.168.1.300}]
";
    let m = load(text);
    let names: Vec<&str> = m.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["node-0", "node-1"]);
    let ips: Vec<IpAddr> = ["192.168.1.10", "fd00::10"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(m.nodes[1].addresses, ips);
    assert_eq!(
        m.nodes[1].labels.get("role").map(String::as_str),
        Some("control")
    );
    assert!(m.nodes[0].addresses.is_empty());
    assert_eq!(
        fields(&m.errors),
        [("Node node-2", "status.addresses[0].address")]
    );
    assert!(m.errors[0].to_string().starts_with("c.yaml: Node node-2: "));
}
