//! Pod interfaces in the test's namespace, and the programs TCX runs on
//! them.

use super::run;
use aya::programs::{SchedClassifier, TcAttachType};
use serde_json::Value;

/// A veth pair whose host side `host` routes `ip` (a pod interface, ptp
/// style, as a CNI plugin leaves it); the host side's ifindex. The peer is
/// `<host>p`.
pub fn add_pod_iface(host: &str, ip: &str) -> u32 {
    let peer = format!("{host}p");
    run(
        "ip",
        &["link", "add", host, "type", "veth", "peer", "name", &peer],
    );
    run("ip", &["link", "set", host, "up"]);
    run("ip", &["link", "set", &peer, "up"]);
    run("ip", &["route", "add", &format!("{ip}/32"), "dev", host]);
    ifindex(host)
}

/// The ifindex of `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> u32 {
    // Not /sys/class/net: sysfs shows the namespace it was mounted in.
    let v: Value = serde_json::from_str(&run("ip", &["-j", "link", "show", name])).unwrap();
    v[0]["ifindex"].as_u64().expect("ifindex") as u32
}

/// Programs attached by TCX to an interface (ingress, egress). Asked of the
/// kernel through aya: bpftool 7.1 does not know TCX links yet.
pub fn tcx_progs(ifname: &str) -> (usize, usize) {
    let count = |hook| {
        SchedClassifier::query_tcx(ifname, hook)
            .expect("query tcx")
            .1
            .len()
    };
    (count(TcAttachType::Ingress), count(TcAttachType::Egress))
}

/// The interfaces of `node`'s pods found from the host routes, as the agent
/// finds them.
pub fn pod_interfaces(
    node: &palisade_compiler::CompiledNode,
) -> palisade::datapath::iface::Interfaces {
    use palisade::datapath::iface;
    let routes = iface::host_routes().expect("read host routes");
    iface::match_pods(
        &routes,
        node.pods
            .iter()
            .map(|(k, p)| (k.as_str(), p.ips.as_slice())),
    )
}
