//! The host interface found on real links: a node and a pod, each a
//! network namespace this test creates (and deletes on drop), joined by a
//! veth whose node end is a bridge port, as the `bridge` plugin leaves it.

mod common;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Scratch, TestHolder};
use palisade_cni::links::IpLinks;
use palisade_cni::{run_with, Env, RecordStore};
use serde_json::json;

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `pl-cnitest-<random>-node` and `-pod`, deleted on drop (panics too).
struct Lab {
    node: String,
    pod: String,
}

impl Lab {
    fn new() -> Lab {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let tag = format!("{:x}{:x}", std::process::id(), nanos);
        let lab = Lab {
            node: format!("pl-cnitest-{tag}-node"),
            pod: format!("pl-cnitest-{tag}-pod"),
        };
        sh(&["ip", "netns", "add", &lab.node]);
        sh(&["ip", "netns", "add", &lab.pod]);
        let n = lab.node.as_str();
        // A decoy pair first, so that index coincidences would show.
        sh(&[
            "ip", "-n", n, "link", "add", "decoy0", "type", "veth", "peer", "name", "decoy1",
        ]);
        sh(&["ip", "-n", n, "link", "add", "cni0", "type", "bridge"]);
        sh(&[
            "ip", "-n", n, "link", "add", "vethpod0", "type", "veth", "peer", "name", "eth0",
            "netns", &lab.pod,
        ]);
        sh(&["ip", "-n", n, "link", "set", "vethpod0", "master", "cni0"]);
        lab
    }

    fn netns_path(name: &str) -> String {
        format!("/run/netns/{name}")
    }

    fn node_ifindex(&self, dev: &str) -> u32 {
        let out = Command::new("ip")
            .args(["-n", &self.node, "-j", "link", "show", "dev", dev])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["ifindex"].as_u64().unwrap() as u32
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.node, &self.pod] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn add(lab: &Lab, interfaces: serde_json::Value) -> (i32, Option<palisade_cni::Record>, String) {
    let state = Scratch::new("kernel");
    let pod_ns = Lab::netns_path(&lab.pod);
    let env = Env::from_pairs([
        ("CNI_COMMAND", "ADD".to_string()),
        ("CNI_CONTAINERID", "kerneltest".to_string()),
        ("CNI_NETNS", pod_ns.clone()),
        ("CNI_IFNAME", "eth0".to_string()),
    ]);
    let stdin = json!({
        "cniVersion": "1.0.0", "name": "cbr0", "type": "palisade-cni", "stateDir": state.path(),
        "prevResult": {"cniVersion": "1.0.0", "interfaces": interfaces,
                       "ips": [{"address": "10.244.0.9/24", "interface": 0}]}
    });
    let holder = TestHolder::default();
    let links = IpLinks::in_netns(Lab::netns_path(&lab.node));
    let out = run_with(&env, &serde_json::to_vec(&stdin).unwrap(), &holder, &links);
    let rec = RecordStore::new(state.path())
        .read("kerneltest", "eth0")
        .unwrap();
    (
        out.exit_code,
        rec,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn bridge_layout_holds_the_veth_not_the_bridge() {
    let lab = Lab::new();
    let pod_ns = Lab::netns_path(&lab.pod);
    let want = lab.node_ifindex("vethpod0");

    // As the bridge plugin reports it: bridge, host veth, container side.
    let (code, rec, out) = add(
        &lab,
        json!([
            {"name": "eth0", "sandbox": pod_ns},
            {"name": "cni0"},
            {"name": "vethpod0"},
        ]),
    );
    assert_eq!(code, 0, "{out}");
    let rec = rec.unwrap();
    assert_eq!(
        (rec.host_interface.as_str(), rec.host_ifindex),
        ("vethpod0", want)
    );

    // The bridge alone listed: still the veth, found from the pod's side.
    let (code, rec, out) = add(
        &lab,
        json!([{"name": "eth0", "sandbox": pod_ns}, {"name": "cni0"}]),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(rec.unwrap().host_interface, "vethpod0");
}

#[test]
fn container_only_result_finds_the_peer_from_inside_the_pod() {
    let lab = Lab::new();
    let pod_ns = Lab::netns_path(&lab.pod);
    let (code, rec, out) = add(&lab, json!([{"name": "eth0", "sandbox": pod_ns}]));
    assert_eq!(code, 0, "{out}");
    let rec = rec.unwrap();
    assert_eq!(rec.host_interface, "vethpod0");
    assert_eq!(rec.host_ifindex, lab.node_ifindex("vethpod0"));
    assert_eq!(rec.ips, vec!["10.244.0.9/24"]);
}

#[test]
fn missing_pod_interface_fails_closed() {
    let lab = Lab::new();
    sh(&["ip", "-n", &lab.pod, "link", "del", "eth0"]);
    let pod_ns = Lab::netns_path(&lab.pod);
    let (code, rec, out) = add(
        &lab,
        json!([{"name": "eth0", "sandbox": pod_ns}, {"name": "cni0"}]),
    );
    assert_eq!(code, 1);
    assert!(rec.is_none());
    assert!(
        out.contains("\"code\":100") && out.contains("cni0: is a bridge"),
        "{out}"
    );
}
