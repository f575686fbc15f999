//! Node traffic across two nodes: a pod's own node always reaches it, a
//! remote node is an ordinary peer that `ipBlock` decides, as upstream
//! says (kubelet probes come from the pod's own node only).
//!
//! Needs the `palisade` binary (`cargo xtask build`).

use palisade_lab::Lab;
use palisade_tests::cluster::TwoNodes;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// Whether a TCP connection from `lab`'s node namespace to `to`:80 gets
/// a byte echoed.
fn node_reaches(lab: &Lab, to: IpAddr) -> bool {
    lab.run_in_node(move || {
        let Ok(mut s) =
            TcpStream::connect_timeout(&SocketAddr::new(to, 80), Duration::from_millis(800))
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(800)));
        let mut b = [0u8; 1];
        s.write_all(b"n").is_ok() && s.read_exact(&mut b).is_ok()
    })
    .unwrap()
}

/// Ingress of every pod in x: only from `cidrs` (none: deny all).
fn x_ingress_from(cidrs: &[String]) -> Value {
    let from: Vec<Value> = cidrs
        .iter()
        .map(|c| json!({"ipBlock": {"cidr": c}}))
        .collect();
    let ingress = if from.is_empty() {
        json!([])
    } else {
        json!([{"from": from}])
    };
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "x-ingress", "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": ingress},
    })
}

#[test]
fn multinode_own_node_always_remote_node_by_ip_block() {
    let env = TwoNodes::up("multinode_node_traffic");
    let (a, b) = (&env.cluster.nodes()[0], &env.cluster.nodes()[1]);
    // x/a runs on node-a (the first node).
    let target = env.cluster.ip("x/a", palisade_lab::Family::V4).unwrap();
    assert_eq!(env.cluster.node_of("x/a").unwrap().name, a.name);

    env.change(|api| {
        api.apply(x_ingress_from(&[])).unwrap();
    });
    assert!(
        node_reaches(&a.lab, target),
        "own node, deny-all\n{}",
        env.log(0)
    );
    assert!(
        !node_reaches(&b.lab, target),
        "remote node, deny-all\n{}",
        env.log(0)
    );

    let remote = format!("{}/32", b.underlay_v4);
    env.change(|api| {
        api.apply(x_ingress_from(&[remote])).unwrap();
    });
    assert!(
        node_reaches(&b.lab, target),
        "remote node, allowed by ipBlock\n{}",
        env.log(0)
    );
    assert!(
        node_reaches(&a.lab, target),
        "own node, ipBlock elsewhere\n{}",
        env.log(0)
    );
}
