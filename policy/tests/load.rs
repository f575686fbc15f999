//! Loading and validation: every bad input names the file, the object and
//! the field, and everything else still loads.

use palisade_policy::{
    build, load_paths, load_str, Direction, InputError, Model, Peer, PortMatch, Protocol,
    SelectorOp,
};
use std::net::IpAddr;
use std::path::PathBuf;

const NS_X: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: blue}}
";

fn pod(ns: &str, name: &str, ip: &str) -> String {
    format!(
        "
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}
spec:
  nodeName: node-1
  containers:
    - name: main
      ports:
        - {{name: http, containerPort: 8080}}
        - {{name: dns, containerPort: 53, protocol: UDP}}
        - {{containerPort: 9090}}
status:
  phase: Running
  podIPs: [{{ip: {ip}}}]
"
    )
}

/// A NetworkPolicy `bad` in x with the given spec (indented YAML).
fn policy_with_spec(spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: bad, namespace: x}}
spec:
{spec}"
    )
}

fn docs(parts: &[&str]) -> String {
    parts.join("\n---\n")
}

/// Loads a valid namespace, pod and policy next to `bad`, asserts the one
/// error names `object` and `field`, and that the rest loaded.
fn assert_single_error(bad: &str, object: &str, field: &str, message_part: &str) -> InputError {
    let good_policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: good, namespace: x}
spec: {podSelector: {}}
";
    let text = docs(&[NS_X, &pod("x", "web", "10.0.0.1"), bad, good_policy]);
    let model = load_str(&text, "cluster/manifests.yaml");
    assert_eq!(model.errors.len(), 1, "errors: {:#?}", model.errors);
    let e = model.errors[0].clone();
    assert_eq!(e.source.as_deref(), Some("cluster/manifests.yaml"));
    assert_eq!(e.object, object, "{e}");
    assert_eq!(e.field, field, "{e}");
    assert!(
        e.message.contains(message_part),
        "message {:?} lacks {message_part:?}",
        e.message
    );
    assert!(e.to_string().starts_with("cluster/manifests.yaml: "), "{e}");
    // Everything else is there.
    assert!(model.namespace("x").is_some());
    assert!(model.pod("x", "web").is_some());
    assert!(model.policies.iter().any(|p| p.name == "good"));
    e
}

/// A policy `bad` that fails validation is not skipped: it stays, not
/// understood (no rules), and the one warning names the field; the rest
/// loads without error.
fn assert_policy_error(spec: &str, field: &str, message_part: &str) {
    let good_policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: good, namespace: x}
spec: {podSelector: {}}
";
    let text = docs(&[
        NS_X,
        &pod("x", "web", "10.0.0.1"),
        &policy_with_spec(spec),
        good_policy,
    ]);
    let model = load_str(&text, "cluster/manifests.yaml");
    assert!(model.errors.is_empty(), "{spec}: {:#?}", model.errors);
    assert_eq!(model.warnings.len(), 1, "{spec}: {:#?}", model.warnings);
    let w = &model.warnings[0];
    assert_eq!(w.source.as_deref(), Some("cluster/manifests.yaml"));
    assert_eq!(w.object, "NetworkPolicy x/bad", "{w}");
    assert_eq!(w.field, field, "{w}");
    assert!(
        w.message.contains(message_part),
        "{w} lacks {message_part:?}"
    );
    assert!(
        w.message
            .contains("policy not understood: its pods are isolated for"),
        "{w}"
    );
    let bad = model
        .policies
        .iter()
        .find(|p| p.name == "bad")
        .expect("kept");
    let issue = bad.unreadable.as_ref().expect("marked unreadable");
    assert_eq!(issue.field, field);
    assert!(bad.rules(Direction::Ingress).is_empty() && bad.rules(Direction::Egress).is_empty());
    assert!(bad.isolates_ingress, "{spec}: every case isolates ingress");
    assert!(model.policies.iter().any(|p| p.name == "good"));
    assert!(model.pod("x", "web").is_some());
}

#[test]
fn bad_policies_are_reported_and_not_understood() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]",
            "spec.ingress[0].from[0].ipBlock.cidr",
            "not a CIDR",
        ),
        (
            "podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 10.0.0.1}}]}]",
            "spec.ingress[0].from[0].ipBlock.cidr",
            "not a CIDR",
        ),
        (
            "podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]",
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "strictly inside",
        ),
        (
            "podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.0.0.0/8]}}]}]",
            "spec.ingress[0].from[0].ipBlock.except[1]",
            "strictly inside",
        ),
        (
            "podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 0.0.0.0/0, except: ['::/1']}}]}]",
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "strictly inside",
        ),
        (
            "podSelector: {}\ningress: [{ports: [{port: 0}]}]",
            "spec.ingress[0].ports[0].port",
            "out of range",
        ),
        (
            "podSelector: {}\ningress: [{ports: [{port: 80}, {port: 70000}]}]",
            "spec.ingress[0].ports[1].port",
            "out of range",
        ),
        (
            "podSelector: {}\ningress: [{ports: [{port: 90, endPort: 80}]}]",
            "spec.ingress[0].ports[0].endPort",
            "less than port",
        ),
        (
            "podSelector: {}\ningress: [{ports: [{port: 90, endPort: 65536}]}]",
            "spec.ingress[0].ports[0].endPort",
            "out of range",
        ),
        (
            "podSelector: {}\ningress: [{ports: [{port: http, endPort: 90}]}]",
            "spec.ingress[0].ports[0].endPort",
            "numeric port",
        ),
        (
            "podSelector: {}\ningress: [{ports: [{endPort: 90}]}]",
            "spec.ingress[0].ports[0].endPort",
            "requires a numeric port",
        ),
        (
            "podSelector: {}\ningress: [{ports: [{port: HTTP}]}]",
            "spec.ingress[0].ports[0].port",
            "lowercase",
        ),
        (
            "podSelector: {}\ningress: [{ports: [{port: '80'}]}]",
            "spec.ingress[0].ports[0].port",
            "at least one letter",
        ),
        (
            "podSelector: {}\ningress: [{ports: [{port: a-very-long-port-name}]}]",
            "spec.ingress[0].ports[0].port",
            "1-15",
        ),
        (
            "podSelector: {}\ningress: [{ports: [{port: 80, protocol: ICMP}]}]",
            "spec.ingress[0].ports[0].protocol",
            "unsupported protocol",
        ),
        (
            "podSelector: {}\ningress: [{ports: [{port: 80, protocol: tcp}]}]",
            "spec.ingress[0].ports[0].protocol",
            "unsupported protocol",
        ),
        (
            "podSelector: {matchExpressions: [{key: pod, operator: Equals, values: [a]}]}",
            "spec.podSelector.matchExpressions[0].operator",
            "unknown operator",
        ),
        (
            "podSelector: {matchExpressions: [{key: pod, operator: In}]}",
            "spec.podSelector.matchExpressions[0].values",
            "non-empty",
        ),
        (
            "podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: []}]}",
            "spec.podSelector.matchExpressions[0].values",
            "non-empty",
        ),
        (
            "podSelector: {matchExpressions: [{key: pod, operator: Exists, values: [a]}]}",
            "spec.podSelector.matchExpressions[0].values",
            "must be empty",
        ),
        (
            "podSelector: {matchExpressions: [{key: pod, operator: DoesNotExist, values: [a]}]}",
            "spec.podSelector.matchExpressions[0].values",
            "must be empty",
        ),
        (
            "podSelector: {matchLabels: {'-pod': a}}",
            "spec.podSelector.matchLabels[\"-pod\"]",
            "label key",
        ),
        (
            "podSelector: {}\ningress: [{from: [{namespaceSelector: {matchLabels: {team: 'not valid'}}}]}]",
            "spec.ingress[0].from[0].namespaceSelector.matchLabels[\"team\"]",
            "label value",
        ),
        (
            "podSelector: {}\npolicyTypes: [Ingress, Both]",
            "spec.policyTypes[1]",
            "must be Ingress or Egress",
        ),
        (
            "podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]",
            "spec.ingress[0].from[0]",
            "may not be combined",
        ),
        (
            "podSelector: {}\ningress: [{from: [{}]}]",
            "spec.ingress[0].from[0]",
            "must specify",
        ),
        (
            "podSelector: {}\negress: [{to: [{podSelector: {}}, {ipBlock: {cidr: banana/8}}]}]",
            "spec.egress[0].to[1].ipBlock.cidr",
            "not a CIDR",
        ),
        (
            // A type error the k8s-openapi types reject: the field path comes
            // from the deserializer.
            "podSelector: {}\ningress: [{ports: [{port: [80]}]}]",
            "spec.ingress[0].ports[0].port",
            "",
        ),
    ];
    for (spec, field, message) in cases {
        assert_policy_error(spec, field, message);
    }
}

#[test]
fn policy_without_spec_or_name() {
    let no_spec = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: x}
";
    // Without a spec nothing is known but its namespace: every pod of it,
    // both directions.
    let model = load_str(no_spec, "np.yaml");
    assert!(model.errors.is_empty(), "{:#?}", model.errors);
    assert_eq!(model.warnings[0].field, "spec");
    let p = &model.policies[0];
    assert!(p.unreadable.is_some() && p.isolates_ingress && p.isolates_egress);
    assert_eq!(p.pod_selector, Default::default());
    // Without a name it cannot be told apart from other policies: skipped.
    let no_name = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: x}
spec: {podSelector: {}}
";
    assert_single_error(
        no_name,
        "NetworkPolicy x/<unnamed>",
        "metadata.name",
        "missing",
    );
}

#[test]
fn bad_pods_are_reported_and_skipped() {
    let with = |body: &str| {
        format!(
            "
apiVersion: v1
kind: Pod
metadata: {{name: bad, namespace: x}}
{body}"
        )
    };
    let cases: &[(String, &str, &str)] = &[
        (with("status: {podIP: 10.0.0.300}"), "status.podIP", "not an IP address"),
        (
            with("status: {podIPs: [{ip: 10.0.0.7}, {ip: 10.0.0.8}]}"),
            "status.podIPs[1].ip",
            "one address per family",
        ),
        (
            with("spec: {containers: [{name: c, ports: [{containerPort: 0}]}]}\nstatus: {podIP: 10.0.0.7}"),
            "spec.containers[0].ports[0].containerPort",
            "out of range",
        ),
        (
            with("spec: {containers: [{name: c}, {name: d, ports: [{containerPort: 80, name: Web}]}]}\nstatus: {podIP: 10.0.0.7}"),
            "spec.containers[1].ports[0].name",
            "port name",
        ),
        (
            with("spec: {containers: [{name: c, ports: [{containerPort: 80, protocol: ICMP}]}]}\nstatus: {podIP: 10.0.0.7}"),
            "spec.containers[0].ports[0].protocol",
            "unsupported protocol",
        ),
        (
            with("status: {phase: Sleeping, podIP: 10.0.0.7}"),
            "status.phase",
            "unknown phase",
        ),
        // 10.0.0.1 belongs to x/web already.
        (with("status: {podIP: 10.0.0.1}"), "status.podIPs", "x/web"),
        (
            "
apiVersion: v1
kind: Pod
metadata: {name: bad, namespace: x, labels: {'app name': x}}
status: {podIP: 10.0.0.7}"
                .to_string(),
            "metadata.labels[\"app name\"]",
            "label key",
        ),
    ];
    for (bad, field, message) in cases {
        assert_single_error(bad, "Pod x/bad", field, message);
    }
}

#[test]
fn duplicate_objects_keep_the_first() {
    let text = docs(&[
        NS_X,
        &pod("x", "web", "10.0.0.1"),
        &pod("x", "web", "10.0.0.2"),
        NS_X,
    ]);
    let model = load_str(&text, "dup.yaml");
    assert_eq!(model.errors.len(), 2, "{:#?}", model.errors);
    assert_eq!(model.errors[0].object, "Namespace x");
    assert_eq!(model.errors[1].object, "Pod x/web");
    assert!(model.errors[1]
        .message
        .contains("already defined in dup.yaml"));
    assert_eq!(model.pods.len(), 1);
    assert_eq!(
        model.pods[0].ips,
        vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn unparsable_documents_are_reported_and_the_rest_loads() {
    let text = docs(&[NS_X, "kind: [unclosed", &pod("x", "web", "10.0.0.1")]);
    let model = load_str(&text, "broken.yaml");
    assert_eq!(model.errors.len(), 1, "{:#?}", model.errors);
    let e = &model.errors[0];
    assert_eq!(e.source.as_deref(), Some("broken.yaml"));
    // NS_X and a blank line take lines 1-5; the broken document starts at its
    // `---` on line 6.
    assert_eq!(e.object, "document 2 (line 6)");
    assert_eq!(e.field, "syntax");
    // `kind: [unclosed` is on line 7 of the file.
    assert!(e.message.contains("at line 7 column 7"), "{}", e.message);
    // The documents around the broken one loaded.
    assert!(model.namespace("x").is_some());
    assert!(model.pod("x", "web").is_some());

    let model = load_str(&docs(&[NS_X, "- just\n- a list"]), "list.yaml");
    assert_eq!(model.errors.len(), 1);
    assert_eq!(model.errors[0].object, "document 2 (line 6)");
    assert_eq!(model.errors[0].message, "not an object");
}

#[test]
fn finished_hostnetwork_and_addressless_pods_are_left_out_silently() {
    let pending = "
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: x}
status: {phase: Pending, podIP: 10.0.0.9}
";
    let done = "
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: x}
status: {phase: Succeeded, podIP: 10.0.0.1}
";
    let no_ip = "
apiVersion: v1
kind: Pod
metadata: {name: no-ip, namespace: x}
status: {phase: Running}
";
    let host = "
apiVersion: v1
kind: Pod
metadata: {name: host, namespace: x}
spec: {hostNetwork: true, containers: []}
status: {phase: Running, podIP: 192.168.0.1}
";
    let no_phase = "
apiVersion: v1
kind: Pod
metadata: {name: no-phase, namespace: x}
status: {podIP: 10.0.0.2}
";
    // `done` shares 10.0.0.1 with web: a finished pod never conflicts.
    let model = load_str(
        &docs(&[
            pending,
            done,
            no_ip,
            host,
            no_phase,
            &pod("x", "web", "10.0.0.1"),
        ]),
        "pods.yaml",
    );
    assert!(model.errors.is_empty(), "{:#?}", model.errors);
    let names: Vec<_> = model.pods.iter().map(|p| p.name.as_str()).collect();
    // A Pending pod with an address runs init containers: it takes part.
    assert_eq!(names, ["no-phase", "pending", "web"]);
    assert!(model.pod("x", "pending").unwrap().pending);
    assert!(!model.pod("x", "web").unwrap().pending);
}

#[test]
fn pods_get_ports_ips_and_node() {
    let dual = "
apiVersion: v1
kind: Pod
metadata: {name: dual, namespace: x}
spec: {nodeName: node-2, containers: [{name: c, ports: [{name: web, containerPort: 80, protocol: SCTP}]}]}
status: {podIP: 10.0.0.5, podIPs: [{ip: 10.0.0.5}, {ip: 'fd00::5'}]}
";
    let model = load_str(&docs(&[dual, &pod("x", "web", "10.0.0.1")]), "p.yaml");
    assert!(model.errors.is_empty(), "{:#?}", model.errors);
    let p = model.pod("x", "dual").unwrap();
    assert_eq!(p.node.as_deref(), Some("node-2"));
    assert_eq!(
        p.ips,
        vec![
            "10.0.0.5".parse::<IpAddr>().unwrap(),
            "fd00::5".parse().unwrap()
        ]
    );
    assert_eq!(p.ports.len(), 1);
    assert_eq!(p.ports[0].protocol, Protocol::Sctp);
    assert_eq!(
        model.pod_by_ip("fd00::5".parse().unwrap()).unwrap().name,
        "dual"
    );

    // Protocol defaults to TCP; unnamed ports are not recorded.
    let web = model.pod("x", "web").unwrap();
    let ports: Vec<_> = web
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.port, p.protocol))
        .collect();
    assert_eq!(
        ports,
        [("http", 8080, Protocol::Tcp), ("dns", 53, Protocol::Udp)]
    );
}

#[test]
fn namespaces_get_the_name_label_and_implicit_ones_exist() {
    let lying = "
apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {kubernetes.io/metadata.name: other}}
";
    let unnamespaced_pol = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p}
spec: {podSelector: {}}
";
    let model = load_str(
        &docs(&[NS_X, lying, &pod("z", "web", "10.0.0.1"), unnamespaced_pol]),
        "n.yaml",
    );
    assert!(model.errors.is_empty(), "{:#?}", model.errors);
    let x = model.namespace("x").unwrap();
    assert_eq!(x.labels.get("team").map(String::as_str), Some("blue"));
    assert_eq!(
        x.labels
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("x")
    );
    let y = model.namespace("y").unwrap();
    assert_eq!(
        y.labels
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("y")
    );
    // z (a pod's) and default (an object without namespace) are implicit.
    for implicit in ["z", "default"] {
        let ns = model.namespace(implicit).unwrap();
        assert_eq!(ns.labels.len(), 1);
        assert_eq!(ns.labels["kubernetes.io/metadata.name"], implicit);
    }
    assert_eq!(model.policies[0].namespace, "default");

    let bad = "
apiVersion: v1
kind: Namespace
metadata: {name: Not_Valid}
";
    assert_single_error(bad, "Namespace Not_Valid", "metadata.name", "lowercase");
}

#[test]
fn policy_types_defaulting() {
    let pol = |name: &str, spec: &str| {
        policy_with_spec(spec).replace("name: bad", &format!("name: {name}"))
    };
    let text = docs(&[
        &pol("none", "podSelector: {}"),
        &pol("ingress-rules", "podSelector: {}\ningress: [{}]"),
        &pol("egress-empty", "podSelector: {}\negress: []"),
        &pol("egress-null", "podSelector: {}\negress:"),
        &pol(
            "types-empty",
            "podSelector: {}\npolicyTypes: []\negress: [{}]",
        ),
        &pol(
            "egress-only",
            "podSelector: {}\npolicyTypes: [Egress]\ningress: [{}]",
        ),
        &pol("both", "podSelector: {}\npolicyTypes: [Ingress, Egress]"),
    ]);
    let model = load_str(&text, "t.yaml");
    assert!(model.errors.is_empty(), "{:#?}", model.errors);
    let types = |name: &str| {
        let p = model.policies.iter().find(|p| p.name == name).unwrap();
        (p.isolates_ingress, p.isolates_egress)
    };
    assert_eq!(types("none"), (true, false));
    assert_eq!(types("ingress-rules"), (true, false));
    assert_eq!(types("egress-empty"), (true, true));
    assert_eq!(types("egress-null"), (true, false));
    assert_eq!(types("types-empty"), (true, true));
    assert_eq!(types("egress-only"), (false, true));
    assert_eq!(types("both"), (true, true));
    // Rules of a direction the policy does not isolate are dropped.
    let egress_only = model
        .policies
        .iter()
        .find(|p| p.name == "egress-only")
        .unwrap();
    assert!(egress_only.ingress.is_empty());
    assert!(egress_only.rules(Direction::Egress).is_empty());
}

#[test]
fn empty_lists_mean_all_and_values_are_normalized() {
    let spec = "
podSelector: {matchExpressions: [{key: tier, operator: NotIn, values: [db]}]}
ingress:
  - from: []
    ports: []
  - from:
      - ipBlock: {cidr: 10.1.2.3/16, except: [10.1.2.0/24]}
      - namespaceSelector: {}
    ports:
      - {}
      - {port: 80, endPort: 90, protocol: UDP}
      - {port: http}
";
    let model = load_str(&docs(&[&policy_with_spec(spec)]), "t.yaml");
    assert!(model.errors.is_empty(), "{:#?}", model.errors);
    let p = &model.policies[0];
    assert_eq!(p.pod_selector.match_expressions[0].op, SelectorOp::NotIn);
    assert_eq!(p.ingress[0].peers, None);
    assert_eq!(p.ingress[0].ports, None);
    let peers = p.ingress[1].peers.as_ref().unwrap();
    assert_eq!(
        peers[0],
        Peer::IpBlock {
            cidr: "10.1.0.0/16".parse().unwrap(),
            except: vec!["10.1.2.0/24".parse().unwrap()],
        }
    );
    match &peers[1] {
        Peer::Pods {
            namespaces: Some(ns),
            pods: None,
        } => assert!(ns.is_empty()),
        other => panic!("{other:?}"),
    }
    let ports = p.ingress[1].ports.as_ref().unwrap();
    assert_eq!(
        (ports[0].protocol, &ports[0].port),
        (Protocol::Tcp, &PortMatch::Any)
    );
    assert_eq!(
        (ports[1].protocol, &ports[1].port),
        (Protocol::Udp, &PortMatch::Range { port: 80, end: 90 })
    );
    assert_eq!(ports[2].port, PortMatch::Named("http".into()));
}

#[test]
fn lists_json_and_other_kinds() {
    // kubectl-style List, a typed list whose items omit kind (as the API
    // returns them), and kinds that play no part.
    let json = r#"
{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}},
  {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": "x"}}
]}
{"apiVersion": "v1", "kind": "PodList", "items": [
  {"metadata": {"name": "web", "namespace": "x"}, "status": {"podIP": "10.0.0.1"}},
  {"metadata": {"name": "bad", "namespace": "x"}, "status": {"podIP": "nope"}}
]}
{"apiVersion": "crd.projectcalico.org/v1", "kind": "NetworkPolicy", "metadata": {"name": "calico"}}
"#;
    let model = load_str(json, "cluster.json");
    assert_eq!(model.errors.len(), 1, "{:#?}", model.errors);
    assert_eq!(model.errors[0].object, "Pod x/bad");
    assert_eq!(model.errors[0].field, "status.podIP");
    assert!(model.namespace("x").is_some());
    assert!(model.pod("x", "web").is_some());
    assert!(model.policies.is_empty());
}

/// A scratch directory removed on drop, even when the test fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("palisade-policy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn directories_are_read_recursively_in_order() {
    let dir = TempDir::new("dirs");
    // Files in any order: the policy's namespace and pods come later.
    dir.write("a-policies/p.yml", &policy_with_spec("podSelector: {}"));
    dir.write("b/c/pods.json", r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"x"},"status":{"podIP":"10.0.0.1"}}"#);
    dir.write("b/ns.yaml", NS_X);
    dir.write("b/notes.txt", "not: [a manifest");
    dir.write(".hidden/broken.yaml", "kind: [");
    dir.write("b/broken.yaml", "kind: [");
    let explicit = dir.write("extra.manifest", &pod("x", "api", "10.0.0.2"));

    let model = load_paths(&[dir.0.clone(), explicit]);
    assert_eq!(model.errors.len(), 1, "{:#?}", model.errors);
    assert!(model.errors[0]
        .source
        .as_deref()
        .unwrap()
        .ends_with("b/broken.yaml"));
    assert_eq!(model.namespace("x").unwrap().labels["team"], "blue");
    assert_eq!(model.pods.len(), 2);
    assert_eq!(model.policies.len(), 1);

    let missing = dir.0.join("missing");
    let model = load_paths(std::slice::from_ref(&missing));
    assert_eq!(model.errors.len(), 1);
    assert_eq!(model.errors[0].object, "file");
}

#[test]
fn build_takes_api_objects() {
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::api::networking::v1 as net;
    let from_yaml = |s: &str| serde_yaml::from_str::<serde_json::Value>(s).unwrap();
    let ns: core::Namespace = serde_json::from_value(from_yaml(NS_X)).unwrap();
    let p: core::Pod = serde_json::from_value(from_yaml(&pod("x", "web", "10.0.0.1"))).unwrap();
    let bad: net::NetworkPolicy = serde_json::from_value(from_yaml(&policy_with_spec(
        "podSelector: {}\npolicyTypes: [Sideways]",
    )))
    .unwrap();
    let model: Model = build(vec![ns], vec![p], vec![bad], vec![]);
    assert!(model.errors.is_empty(), "{:#?}", model.errors);
    assert_eq!(model.warnings.len(), 1);
    assert_eq!(model.warnings[0].source, None);
    assert_eq!(model.warnings[0].to_string(), "NetworkPolicy x/bad: spec.policyTypes[0]: unknown policy type \"Sideways\": must be Ingress or Egress; policy not understood: its pods are isolated for ingress and egress with nothing allowed");
    assert_eq!(model.pods.len(), 1);
}

#[test]
fn document_order_does_not_matter() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios");
    let mut text = std::fs::read_to_string(dir.join("topology.yaml")).unwrap();
    text.push_str(
        &std::fs::read_to_string(dir.join("egress-denied-client-side/policies.yaml")).unwrap(),
    );
    let forward = load_str(&text, "f.yaml");
    let mut docs: Vec<&str> = text.split("\n---\n").collect();
    docs.reverse();
    let backward = load_str(&docs.join("\n---\n"), "b.yaml");
    assert!(forward.errors.is_empty() && backward.errors.is_empty());
    assert_eq!(forward.namespaces, backward.namespaces);
    assert_eq!(forward.pods, backward.pods);
    assert_eq!(forward.policies, backward.policies);
    assert_eq!(forward.pods.len(), 9);
    assert_eq!(forward.policies.len(), 3);
}
