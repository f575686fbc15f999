//! The node's Service frontends (ClusterIP, protocol, port): the one-shot
//! compile and the incremental compiler agree on them through Service
//! changes.

use palisade_compiler::{compile, Change, Compiler, Frontend, IdentityAllocator};
use palisade_policy::{load_str, Model, Protocol, Service};
use std::collections::BTreeSet;
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn model() -> Model {
    let m = load_str(
        "
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIPs: [10.96.0.10, 'fd00:96::10']
  selector: {app: web}
  ports: [{port: 80}, {port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec: {clusterIP: 10.96.0.20, ports: [{port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: shop}
spec: {clusterIP: None, selector: {app: web}}
",
        "svc.yaml",
    );
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    m
}

/// `"10.96.0.10:80"` is TCP 80; `"10.96.0.10:53u"` UDP 53.
fn ips(list: &[&str]) -> BTreeSet<Frontend> {
    list.iter()
        .map(|s| {
            let (addr, port) = s.rsplit_once(':').unwrap();
            let (port, protocol) = match port.strip_suffix('u') {
                Some(p) => (p, Protocol::Udp),
                None => (port, Protocol::Tcp),
            };
            Frontend {
                ip: ip(addr.trim_matches(|c| c == '[' || c == ']')),
                protocol,
                port: port.parse().unwrap(),
            }
        })
        .collect()
}

#[test]
fn every_cluster_ip_of_the_cluster_is_compiled_for_any_node() {
    let m = model();
    let node = compile(&m, "any-node", &mut IdentityAllocator::new());
    assert_eq!(
        node.services,
        ips(&[
            "10.96.0.10:80",
            "10.96.0.10:53u",
            "[fd00:96::10]:80",
            "[fd00:96::10]:53u",
            "10.96.0.20:5432"
        ])
    );
}

#[test]
fn the_incremental_compiler_keeps_the_set_current() {
    let m = model();
    let mut c = Compiler::new("n1");
    let svc =
        |name: &str| -> Service { m.services.iter().find(|s| s.name == name).unwrap().clone() };

    let a = c.apply(Change::UpsertService(svc("web")));
    assert!(a.services && a.pods.is_empty() && !a.identities);
    assert_eq!(
        c.compiled().services,
        ips(&[
            "10.96.0.10:80",
            "10.96.0.10:53u",
            "[fd00:96::10]:80",
            "[fd00:96::10]:53u"
        ])
    );
    // The same Service again changes nothing.
    assert!(!c.apply(Change::UpsertService(svc("web"))).services);
    assert!(!c.apply(Change::UpsertService(svc("headless"))).services);

    // A new ClusterIP replaces the old one.
    let mut moved = svc("web");
    moved.cluster_ips = vec![ip("10.96.0.11")];
    assert!(c.apply(Change::UpsertService(moved)).services);
    assert_eq!(
        c.compiled().services,
        ips(&["10.96.0.11:80", "10.96.0.11:53u"])
    );

    // Another Service taking the address over keeps it while either has it.
    let mut taker = svc("db");
    taker.cluster_ips = vec![ip("10.96.0.11")];
    taker.ports = svc("web").ports;
    assert!(!c.apply(Change::UpsertService(taker)).services);
    let gone = c.apply(Change::DeleteService {
        namespace: "shop".into(),
        name: "web".into(),
    });
    assert!(!gone.services);
    assert_eq!(
        c.compiled().services,
        ips(&["10.96.0.11:80", "10.96.0.11:53u"])
    );
    assert!(
        c.apply(Change::DeleteService {
            namespace: "data".into(),
            name: "db".into(),
        })
        .services
    );
    assert!(c.compiled().services.is_empty());

    // Loading the whole model gives what the changes one by one give.
    for s in &m.services {
        c.apply(Change::UpsertService(s.clone()));
    }
    let whole = Compiler::from_model(&m, "n1", IdentityAllocator::new());
    assert_eq!(c.compiled().services, whole.compiled().services);
}
