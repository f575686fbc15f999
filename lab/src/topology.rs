//! Plumbing a node and its pods the way Calico does.
//!
//! - Node namespace: forwarding on (v4 and v6), reverse-path filtering off,
//!   an `uplink0` device (ifb: a sink, since not every kernel has the
//!   dummy driver) holding the node address and the default route
//!   (what a real node's uplink provides: a source address for ARP towards
//!   pods, and a route to the pods' gateway address that is not via the
//!   pod's own interface, which proxy ARP needs to answer), and a
//!   gatewayless host route to `192.0.2.254` on it: clouds put their
//!   gateway on the uplink that way (GCE: `10.128.0.1 dev ens4 scope link`,
//!   Hetzner: `172.31.1.1 dev eth0`), so an agent meets one uplink route
//!   shaped like a pod's route whose device is no pod's.
//! - Per pod: a veth pair, `cali<hash>` in the node namespace and `eth0` in
//!   the pod's; the pod's addresses as /32 and /128 on `eth0`; in the node,
//!   `<ip>/32 dev cali...` and `<ip>/128 dev cali...` routes (what an agent
//!   uses to find a pod's interface); in the pod, default routes through the
//!   host side: `169.254.1.1` (answered by proxy ARP on the host veth, with
//!   no proxy delay) and `fe80::1` (a link-local address on the host veth).
//! - DAD is off everywhere so addresses work at once.
//!
//! With a plugin layout (`cni`), the node is set up the same way, each pod
//! namespace gets the same settings and its loopback up (the runtime's job,
//! before any plugin runs), and the plugins do the rest.

use crate::cmd::ip_batch;
use crate::names;
use crate::netns::{sysctls, NetNs};
use crate::spec::PodSpec;
use anyhow::{Context, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The pods' IPv4 gateway (never assigned: proxy ARP answers for it).
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pods' IPv6 gateway, a link-local address of every host veth.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// The node's own address, on its uplink (TEST-NET-1: never routed).
pub const NODE_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The node's own IPv6 address (documentation range: never routed). A
/// node with no global IPv6 address masquerades to a link-local one, which
/// replies over UDP and raw sockets cannot reach.
pub const NODE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const UPLINK: &str = "uplink0";
/// The cloud-style gateway on the uplink (TEST-NET-1, like the node
/// address): only a `scope link` host route points at it, nothing sends
/// to it, and no pod may take it.
pub const UPLINK_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);

/// Addresses pods cannot use because the plumbing uses them.
pub fn reserved(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => *a == GATEWAY_V4 || *a == NODE_V4 || *a == UPLINK_GATEWAY_V4,
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80 || *a == NODE_V6,
    }
}

fn kv(k: &str, v: &'static str) -> (String, &'static str) {
    (k.to_string(), v)
}

/// Settings of a fresh namespace, before any interface is made in or
/// moved into it (devices copy the `default` values when they appear).
fn base_sysctls(node: bool) -> Vec<(String, &'static str)> {
    let mut s = vec![
        kv("net/ipv4/conf/all/rp_filter", "0"),
        kv("net/ipv4/conf/default/rp_filter", "0"),
        kv("net/ipv6/conf/all/accept_dad", "0"),
        kv("net/ipv6/conf/default/accept_dad", "0"),
        kv("net/ipv6/conf/default/accept_ra", "0"),
    ];
    if node {
        s.extend([
            kv("net/ipv4/ip_forward", "1"),
            kv("net/ipv4/conf/all/forwarding", "1"),
            kv("net/ipv4/conf/default/forwarding", "1"),
            kv("net/ipv6/conf/all/forwarding", "1"),
            kv("net/ipv6/conf/default/forwarding", "1"),
        ]);
    }
    s
}

/// Creates the namespaces (one `ip` process for all of them).
pub fn create_netns(names: &[String]) -> Result<()> {
    let lines: Vec<String> = names.iter().map(|n| format!("netns add {n}")).collect();
    ip_batch(None, &lines, false).context("creating lab namespaces")
}

pub fn setup_node(node: &NetNs) -> Result<()> {
    sysctls(node, &base_sysctls(true))?;
    let lines = vec![
        "link set lo up".to_string(),
        format!("link add {UPLINK} type ifb"),
        format!("link set {UPLINK} up"),
        format!("addr add {NODE_V4}/32 dev {UPLINK}"),
        format!("addr add {NODE_V6}/128 dev {UPLINK} nodad"),
        format!("route add default dev {UPLINK}"),
        // The default route stays gatewayless: the gateway route only
        // exists to be seen (it attracts no traffic, being one address).
        format!("route add {UPLINK_GATEWAY_V4}/32 dev {UPLINK} scope link"),
    ];
    ip_batch(Some(node.name()), &lines, false).context("setting up the node namespace")
}

/// A fresh pod namespace's settings, before any interface appears in it
/// (devices copy the `default` sysctls, so a plugin's veth gets DAD off).
pub fn prepare_pod(pod_ns: &NetNs, pod: &PodSpec) -> Result<()> {
    sysctls(pod_ns, &base_sysctls(false)).with_context(|| format!("pod {}", pod.key()))
}

/// What a runtime does to a sandbox before the plugins run: settings and
/// loopback up (the `loopback` plugin's whole job).
pub fn prepare_cni_pod(pod_ns: &NetNs, pod: &PodSpec) -> Result<()> {
    prepare_pod(pod_ns, pod)?;
    ip_batch(Some(pod_ns.name()), &["link set lo up".to_string()], false)
        .with_context(|| format!("pod {}: loopback", pod.key()))
}

/// Wires one pod: veth pair, addresses, routes, per-interface settings.
pub fn setup_pod(node: &NetNs, pod_ns: &NetNs, pod: &PodSpec, host_veth: &str) -> Result<()> {
    prepare_pod(pod_ns, pod)?;
    wire_node_side(node, pod_ns, pod, host_veth, &[], None)?;
    wire_pod_side(pod_ns, pod, true)
}

/// Deletes the pod's veth pair and wires it again with its host side at
/// index `ifindex` (the old one's, normally), the pod's addresses only if
/// `addresses` (without them no packet reaches the pod: see
/// [`add_pod_addresses`]). Deleting and creating the host side are one
/// `ip -batch`: a watcher that reads routes and links in between is
/// unlikely, not impossible.
pub fn replug_pod(
    node: &NetNs,
    pod_ns: &NetNs,
    pod: &PodSpec,
    host_veth: &str,
    ifindex: u32,
    addresses: bool,
) -> Result<()> {
    let first = [format!("link del {host_veth}")];
    wire_node_side(node, pod_ns, pod, host_veth, &first, Some(ifindex))
        .with_context(|| format!("re-creating {host_veth} at index {ifindex}"))?;
    wire_pod_side(pod_ns, pod, addresses)
}

/// The pod's addresses on its interface (after a [`replug_pod`] without).
pub fn add_pod_addresses(pod_ns: &NetNs, pod: &PodSpec) -> Result<()> {
    let lines = address_lines(pod);
    ip_batch(Some(pod_ns.name()), &lines, false)
        .with_context(|| format!("pod {}: addresses", pod.key()))
}

/// The host side: the veth pair (after the commands `before`, at index
/// `index` if given), its link-local gateway, the pod's host routes and
/// the interface's settings.
fn wire_node_side(
    node: &NetNs,
    pod_ns: &NetNs,
    pod: &PodSpec,
    host_veth: &str,
    before: &[String],
    index: Option<u32>,
) -> Result<()> {
    let key = pod.key();
    let index = index.map(|i| format!(" index {i}")).unwrap_or_default();
    let mut node_lines = before.to_vec();
    node_lines.extend([
        format!(
            "link add {host_veth}{index} type veth peer name {} netns {}",
            names::POD_IFACE,
            pod_ns.name()
        ),
        format!("link set {host_veth} up"),
        format!("addr add {GATEWAY_V6}/64 dev {host_veth} nodad"),
    ]);
    for ip in &pod.ips {
        let plen = if ip.is_ipv4() { 32 } else { 128 };
        node_lines.push(format!("route add {ip}/{plen} dev {host_veth}"));
    }
    ip_batch(Some(node.name()), &node_lines, false)
        .with_context(|| format!("pod {key}: node side"))?;

    let conf = |family: &str, key: &str| format!("net/{family}/conf/{host_veth}/{key}");
    sysctls(
        node,
        &[
            (conf("ipv4", "proxy_arp"), "1"),
            (conf("ipv4", "rp_filter"), "0"),
            // Proxy ARP answers after a random delay of up to 0.8 s by
            // default; Calico sets it to 0, and so do we (probes are short).
            (format!("net/ipv4/neigh/{host_veth}/proxy_delay"), "0"),
        ],
    )
    .with_context(|| format!("pod {key}: host veth settings"))
}

fn address_lines(pod: &PodSpec) -> Vec<String> {
    let eth = names::POD_IFACE;
    pod.ips
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(a) => format!("addr add {a}/32 dev {eth}"),
            IpAddr::V6(a) => format!("addr add {a}/128 dev {eth} nodad"),
        })
        .collect()
}

/// The pod side: interface up, addresses (if `addresses`), default routes
/// through the host side.
fn wire_pod_side(pod_ns: &NetNs, pod: &PodSpec, addresses: bool) -> Result<()> {
    let eth = names::POD_IFACE;
    let mut pod_lines = vec!["link set lo up".to_string(), format!("link set {eth} up")];
    if addresses {
        pod_lines.extend(address_lines(pod));
    }
    for ip in &pod.ips {
        match ip {
            IpAddr::V4(_) => pod_lines.push(format!(
                "route add default via {GATEWAY_V4} dev {eth} onlink"
            )),
            IpAddr::V6(_) => {
                pod_lines.push(format!("route add default via {GATEWAY_V6} dev {eth}"))
            }
        }
    }
    ip_batch(Some(pod_ns.name()), &pod_lines, false)
        .with_context(|| format!("pod {}: pod side", pod.key()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plumbing_addresses_are_reserved() {
        for a in [
            "169.254.1.1",
            "192.0.2.1",
            "192.0.2.254",
            "fe80::1",
            "fe80::5",
            "2001:db8::1",
        ] {
            assert!(reserved(&a.parse().unwrap()), "{a}");
        }
        for a in ["192.0.2.253", "10.0.0.1", "fd00::1"] {
            assert!(!reserved(&a.parse().unwrap()), "{a}");
        }
    }
}
