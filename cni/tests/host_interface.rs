//! Choosing the host interface from each plugin's `prevResult` shape.

mod common;

use common::{fixture_text, link, FakeLinks, NETNS};
use palisade_cni::hostif::{find_host_interface, HostInterface};
use palisade_cni::json::Json;
use palisade_cni::result::PrevResult;

fn prev(name: &str) -> PrevResult {
    PrevResult::from_json(&Json::parse(fixture_text(name).as_bytes()).unwrap()).unwrap()
}

#[test]
fn ptp_names_the_host_veth() {
    let links = FakeLinks::node("veth8c1e2f4a");
    let got = find_host_interface(&prev("prev/ptp.json"), NETNS, "eth0", &links).unwrap();
    assert_eq!(
        got,
        HostInterface {
            name: "veth8c1e2f4a".into(),
            ifindex: 7
        }
    );
    // One veth listed: no need to look inside the pod.
    assert_eq!(*links.netns_lookups.borrow(), 0);
}

#[test]
fn bridge_is_never_chosen() {
    let links = FakeLinks::node("veth4f0a9b2e");
    let got = find_host_interface(&prev("prev/bridge.json"), NETNS, "eth0", &links).unwrap();
    assert_eq!(got.name, "veth4f0a9b2e");
}

#[test]
fn bridge_result_without_a_live_veth_fails_rather_than_take_the_bridge() {
    // The veth is gone and the pod namespace has no peer: only the bridge is left.
    let mut links = FakeLinks::node("veth-other");
    links.netns.clear();
    let err = find_host_interface(&prev("prev/bridge.json"), NETNS, "eth0", &links).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("cni0: is a bridge"), "{text}");
    assert!(
        text.contains("veth4f0a9b2e: no such host interface"),
        "{text}"
    );
}

#[test]
fn calico_result_without_host_interface_uses_the_peer_index() {
    let links = FakeLinks::node("cali1f2e3d4c5b6");
    let got = find_host_interface(&prev("prev/calico.json"), NETNS, "eth0", &links).unwrap();
    assert_eq!(
        got,
        HostInterface {
            name: "cali1f2e3d4c5b6".into(),
            ifindex: 7
        }
    );
    assert_eq!(*links.netns_lookups.borrow(), 1);
}

#[test]
fn peer_index_must_point_back() {
    // Host index 7 exists but is the peer of some other pod's interface.
    let mut links = FakeLinks::node("cali1f2e3d4c5b6");
    links.host[2] = link("cali1f2e3d4c5b6", 7, Some("veth"), Some(9));
    let err = find_host_interface(&prev("prev/calico.json"), NETNS, "eth0", &links).unwrap_err();
    assert!(format!("{err:#}").contains("is not the peer"), "{err:#}");
}

#[test]
fn non_veth_container_interface_is_refused() {
    let mut links = FakeLinks::node("x");
    links.netns = vec![(NETNS.into(), link("eth0", 2, Some("ipvlan"), Some(2)))];
    let err = find_host_interface(&prev("prev/calico.json"), NETNS, "eth0", &links).unwrap_err();
    assert!(format!("{err:#}").contains("ipvlan, not a veth"), "{err:#}");
}

#[test]
fn two_listed_veths_are_told_apart_by_the_peer() {
    let text =
        r#"{"interfaces":[{"name":"vethA"},{"name":"vethB"},{"name":"eth0","sandbox":"/ns"}]}"#;
    let prev = PrevResult::from_json(&Json::parse(text.as_bytes()).unwrap()).unwrap();
    let links = FakeLinks {
        host: vec![
            link("vethA", 10, Some("veth"), Some(3)),
            link("vethB", 11, Some("veth"), Some(2)),
        ],
        netns: vec![("/ns".into(), link("eth0", 2, Some("veth"), Some(11)))],
        ..Default::default()
    };
    assert_eq!(
        find_host_interface(&prev, "/ns", "eth0", &links)
            .unwrap()
            .name,
        "vethB"
    );
}
