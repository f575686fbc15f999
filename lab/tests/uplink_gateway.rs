//! The cloud-style gateway route on every lab node's uplink (GCE's
//! `10.128.0.1 dev ens4 scope link`): present after `Lab::up`, shaped
//! like a pod's host route but on no pod's device, reserved against pods,
//! and attracting no pod traffic. Needs root and `ip`.

use palisade_lab::{
    Family, Lab, LabSpec, ProbePort, Protocol, PROBE_TIMEOUT, UPLINK, UPLINK_GATEWAY_V4,
};
use serde_json::Value;
use std::process::Command;

const PORTS: [ProbePort; 1] = [ProbePort {
    port: 80,
    protocol: Protocol::Tcp,
}];

fn ip_json(netns: &str, args: &[&str]) -> Vec<Value> {
    let out = Command::new("ip")
        .args(["-n", netns, "-j"])
        .args(args)
        .output()
        .expect("running ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    v.as_array().cloned().unwrap_or_default()
}

#[test]
fn gateway_route_on_the_uplink() {
    let spec = LabSpec::new("uplink_gateway")
        .pod(
            "x",
            "a",
            &["10.0.0.10".parse().unwrap(), "fd00::10".parse().unwrap()],
            &PORTS,
        )
        .pod(
            "x",
            "b",
            &["10.0.0.11".parse().unwrap(), "fd00::11".parse().unwrap()],
            &PORTS,
        );
    let lab = Lab::up(&spec).expect("lab up");
    let node = lab.node_netns();
    let gw = UPLINK_GATEWAY_V4.to_string();

    let routes = ip_json(&node, &["-4", "route", "show", "scope", "link"]);
    let r = routes
        .iter()
        .find(|r| r["dst"] == gw.as_str())
        .unwrap_or_else(|| panic!("no {gw} route: {routes:#?}"));
    assert_eq!(r["dev"], UPLINK, "{r}");
    assert!(r.get("gateway").is_none(), "{r}");

    // Pods are still reached through their own interfaces, and talk.
    for p in lab.pods() {
        let v4 = p.spec.ip(Family::V4).unwrap().to_string();
        let got = &ip_json(&node, &["route", "get", &v4])[0];
        assert_eq!(got["dev"], p.host_veth.as_str(), "{got}");
    }
    assert_eq!(
        ip_json(&node, &["route", "get", &gw])[0]["dev"],
        UPLINK,
        "the gateway itself is on the uplink"
    );
    let dst = lab.ip("x/b", Family::V4).unwrap();
    assert!(lab
        .probe("x/a", dst, 80, Protocol::Tcp, PROBE_TIMEOUT)
        .unwrap());

    // No pod may take the gateway's address.
    let bad = LabSpec::new("uplink_gateway_bad").pod("x", "a", &[UPLINK_GATEWAY_V4.into()], &PORTS);
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("cannot be a pod address"), "{e}");
    lab.teardown().expect("teardown");
}
