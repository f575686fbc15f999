//! Services: loading, validation errors naming object and field, and the
//! backends of a Service port (what kube-proxy DNATs to).

use palisade_policy::{build, load_str, Family, Model, Protocol, TargetPort};
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pod(name: &str, app: &str, ip: &str, phase: &str, web_port: u16) -> String {
    format!(
        "
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, labels: {{app: {app}}}}}
spec:
  nodeName: n1
  containers:
    - name: main
      ports:
        - {{name: web, containerPort: {web_port}}}
        - {{name: dns, containerPort: 53, protocol: UDP}}
status:
  phase: {phase}
  podIPs: [{{ip: {ip}}}]
"
    )
}

/// A Service `shop/<name>` with the given spec (indented YAML).
fn service(name: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
{spec}"
    )
}

fn load(parts: &[String]) -> Model {
    load_str(&parts.join("\n---\n"), "svc.yaml")
}

#[test]
fn a_service_loads_with_ips_ports_and_selector() {
    let m = load(&[service(
        "web",
        "
clusterIP: 10.96.0.10
clusterIPs: [10.96.0.10, 'fd00:96::10']
selector: {app: web}
ports:
  - {name: http, port: 80, targetPort: web}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
  - {name: metrics, port: 9090}
  - {name: str, port: 81, targetPort: '8081'}",
    )]);
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    let s = m.service("shop", "web").expect("loaded");
    assert_eq!(s.cluster_ips, [ip("10.96.0.10"), ip("fd00:96::10")]);
    assert_eq!(s.cluster_ip(Family::V6), Some(ip("fd00:96::10")));
    let targets: Vec<(u16, Protocol, TargetPort)> = s
        .ports
        .iter()
        .map(|p| (p.port, p.protocol, p.target.clone()))
        .collect();
    assert_eq!(
        targets,
        [
            (80, Protocol::Tcp, TargetPort::Name("web".into())),
            (53, Protocol::Udp, TargetPort::Number(5353)),
            (9090, Protocol::Tcp, TargetPort::Number(9090)),
            (81, Protocol::Tcp, TargetPort::Number(8081)),
        ]
    );
    assert_eq!(
        s.selector.as_ref().unwrap().get("app").map(String::as_str),
        Some("web")
    );
    assert_eq!(
        m.service_by_ip(ip("fd00:96::10")).map(|s| s.key()),
        Some("shop/web".to_string())
    );
    // The namespace a Service lives in exists in the model.
    assert!(m.namespace("shop").is_some());
}

#[test]
fn headless_external_name_and_selectorless_services_have_no_ips_or_backends() {
    let m = load(&[
        pod("a", "web", "10.0.0.1", "Running", 8080),
        service(
            "headless",
            "clusterIP: None\nselector: {app: web}\nports: [{port: 80}]",
        ),
        service(
            "alias",
            "type: ExternalName\nexternalName: db.example.com\nports: [{port: 80}]",
        ),
        service("manual", "clusterIP: 10.96.0.11\nports: [{port: 80}]"),
        service(
            "empty",
            "clusterIP: 10.96.0.12\nselector: {}\nports: [{port: 80}]",
        ),
    ]);
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    assert!(m
        .service("shop", "headless")
        .unwrap()
        .cluster_ips
        .is_empty());
    assert!(m.service("shop", "alias").unwrap().cluster_ips.is_empty());
    for name in ["manual", "empty"] {
        let s = m.service("shop", name).unwrap();
        assert_eq!(s.selector, None, "{name}");
        assert!(m.backends(s, &s.ports[0]).is_empty(), "{name}");
    }
}

/// One bad Service next to a good one: exactly one error, naming the
/// Service and the field; the good one still loads.
fn assert_error(spec: &str, field: &str, message_part: &str) {
    let m = load(&[
        service("bad", spec),
        service("good", "clusterIP: 10.96.0.99\nports: [{port: 80}]"),
    ]);
    assert_eq!(m.errors.len(), 1, "{spec}: {:?}", m.errors);
    let e = &m.errors[0];
    assert_eq!(e.object, "Service shop/bad", "{spec}");
    assert_eq!(e.field, field, "{spec}");
    assert!(
        e.message.contains(message_part),
        "{spec}: {:?} lacks {message_part:?}",
        e.message
    );
    assert_eq!(e.source.as_deref(), Some("svc.yaml"));
    assert!(m.service("shop", "bad").is_none());
    assert!(m.service("shop", "good").is_some());
}

#[test]
fn bad_services_name_object_and_field() {
    assert_error(
        "clusterIP: 10.96.0.300",
        "spec.clusterIP",
        "not an IP address",
    );
    assert_error(
        "clusterIPs: [10.96.0.1, nope]",
        "spec.clusterIPs[1]",
        "not an IP address",
    );
    assert_error(
        "clusterIPs: [10.96.0.1, 10.96.0.2]",
        "spec.clusterIPs[1]",
        "one ClusterIP per family",
    );
    assert_error(
        "clusterIP: 10.96.0.1\nclusterIPs: [10.96.0.2]",
        "spec.clusterIPs[0]",
        "differs from spec.clusterIP",
    );
    assert_error(
        "clusterIPs: [None, 10.96.0.2]",
        "spec.clusterIPs[1]",
        "headless",
    );
    assert_error(
        "clusterIP: 0.0.0.0",
        "spec.clusterIP",
        "cannot be a ClusterIP",
    );
    assert_error(
        "clusterIP: 10.96.0.1\nports: [{port: 0}]",
        "spec.ports[0].port",
        "out of range",
    );
    assert_error(
        "clusterIP: 10.96.0.1\nports: [{port: 80}, {port: 70000}]",
        "spec.ports[1].port",
        "out of range",
    );
    assert_error(
        "clusterIP: 10.96.0.1\nports: [{port: 80, protocol: ICMP}]",
        "spec.ports[0].protocol",
        "unsupported protocol",
    );
    assert_error(
        "clusterIP: 10.96.0.1\nports: [{port: 80, protocol: tcp}]",
        "spec.ports[0].protocol",
        "unsupported protocol",
    );
    assert_error(
        "clusterIP: 10.96.0.1\nports: [{port: 80, targetPort: 0}]",
        "spec.ports[0].targetPort",
        "out of range",
    );
    assert_error(
        "clusterIP: 10.96.0.1\nports: [{port: 80, targetPort: 'not_a_name!'}]",
        "spec.ports[0].targetPort",
        "",
    );
    assert_error(
        "clusterIP: 10.96.0.1\nports: [{name: a, port: 80}, {name: b, port: 80}]",
        "spec.ports[1].port",
        "listed twice",
    );
    assert_error(
        "clusterIP: 10.96.0.1\nselector: {'bad key!': x}",
        "spec.selector[\"bad key!\"]",
        "",
    );
    // A type error inside the object names the path serde failed at.
    assert_error(
        "clusterIP: 10.96.0.1\nports: [{port: eighty}]",
        "spec.ports[0].port",
        "",
    );
}

#[test]
fn two_services_cannot_share_a_cluster_ip() {
    let m = load(&[
        service("first", "clusterIP: 10.96.0.1"),
        service("second", "clusterIP: 10.96.0.1"),
    ]);
    assert_eq!(m.errors.len(), 1, "{:?}", m.errors);
    assert_eq!(m.errors[0].object, "Service shop/second");
    assert_eq!(m.errors[0].field, "spec.clusterIPs");
    assert!(m.errors[0].message.contains("Service shop/first"));
    assert_eq!(m.services.len(), 1);
}

#[test]
fn backends_are_running_selected_pods_with_named_targets_resolved() {
    let m = load(&[
        pod("a", "web", "10.0.0.1", "Running", 8080),
        pod("b", "web", "10.0.0.2", "Running", 8081),
        pod("c", "web", "10.0.0.3", "Pending", 8080),
        pod("d", "db", "10.0.0.4", "Running", 8080),
        service(
            "web",
            "
clusterIP: 10.96.0.10
selector: {app: web}
ports:
  - {name: http, port: 80, targetPort: web}
  - {name: dns, port: 53, protocol: UDP, targetPort: dns}
  - {name: sctp, port: 80, protocol: SCTP, targetPort: web}
  - {name: plain, port: 81, targetPort: 9000}",
        ),
    ]);
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    let s = m.service("shop", "web").unwrap();
    let backends = |port: u16, proto: Protocol| -> Vec<(String, u16)> {
        m.backends(s, s.port(port, proto).unwrap())
            .iter()
            .map(|b| (b.pod.key(), b.port))
            .collect()
    };
    // Named target: each pod's own number; Pending and unselected pods out.
    assert_eq!(
        backends(80, Protocol::Tcp),
        [("shop/a".to_string(), 8080), ("shop/b".to_string(), 8081)]
    );
    assert_eq!(
        backends(53, Protocol::Udp),
        [("shop/a".to_string(), 53), ("shop/b".to_string(), 53)]
    );
    // No pod declares `web` for SCTP: no backends for that port.
    assert!(backends(80, Protocol::Sctp).is_empty());
    assert_eq!(
        backends(81, Protocol::Tcp),
        [("shop/a".to_string(), 9000), ("shop/b".to_string(), 9000)]
    );
}

#[test]
fn services_from_api_objects_build_like_manifests() {
    let svc = |name: &str, ip: &str| {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "selector": {"app": "web"},
                     "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}
        }))
        .unwrap()
    };
    let m = build(
        vec![],
        vec![],
        vec![],
        vec![
            svc("b", "10.96.0.2"),
            svc("a", "10.96.0.1"),
            svc("bad", "x"),
        ],
    );
    let keys: Vec<String> = m.services.iter().map(|s| s.key()).collect();
    assert_eq!(keys, ["shop/a", "shop/b"], "sorted, bad one out");
    assert_eq!(m.errors.len(), 1);
    assert_eq!(m.errors[0].object, "Service shop/bad");
    assert_eq!(m.errors[0].field, "spec.clusterIPs[0]");
    assert_eq!(m.errors[0].source, None);
}
