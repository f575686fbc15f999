//! The underlay of a multi-node lab: one L2 segment joining the node
//! namespaces, and how pod traffic crosses it (`ClusterSpec::overlay`).
//!
//! The segment is a bridge, `underlay0`, in the first node's namespace
//! (the lab's "switch"); every other node gets a veth whose node side is
//! its `underlay0` and whose other end (`ulp<k>`) is a port of the bridge.
//! Each node has `198.51.100.<k+1>/24` and `fd00:198::<k+1>/64` on its
//! `underlay0`. No route here is a gatewayless host route (every node's
//! `uplink0` has the cloud-style one, see `topology`).
//!
//! - `Overlay::None`: for every other node, `route add <pod CIDR> via
//!   <that node's underlay address>`: pods reach remote pods by routing
//!   alone, as with Calico in BGP mode without encapsulation. With the
//!   bridge layout a node's host-local subnets, when its pod CIDRs do not
//!   already cover them, are routed to it the same way (flannel's
//!   host-gw: the subnet is on the node's bridge).
//! - `Overlay::Vxlan`: flannel's vxlan backend (`vxlan`); the underlay
//!   carries only the encapsulated UDP between node addresses, and no pod
//!   prefix is routed over it.

mod overlay;
mod vxlan;

pub(crate) use overlay::vteps;
pub use overlay::{Overlay, Vtep, VXLAN_DEV, VXLAN_PORT, VXLAN_V6_DEV, VXLAN_VNI};
pub use vxlan::{UNDERLAY_MTU, VXLAN_MTU};

use crate::cluster_spec::{underlay_addrs, Cidr, ClusterSpec, UNDERLAY_V4, UNDERLAY_V6};
use crate::cmd::ip_batch;
use crate::cni::{CniLayout, IpamRange};
use anyhow::{Context, Result};
use std::net::IpAddr;

/// The underlay device of every node.
pub const UNDERLAY: &str = "underlay0";

/// Wires the nodes of `spec` (their namespaces `netns`, in spec order)
/// together; `ranges` are `spec.ipam_ranges()`.
pub fn wire(netns: &[String], spec: &ClusterSpec, ranges: &[Vec<IpamRange>]) -> Result<()> {
    let Some(hub) = netns.first() else {
        return Ok(());
    };
    let nodes = &spec.nodes;
    // With VXLAN the segment carries 1500-byte pod packets plus their
    // encapsulation; left alone otherwise.
    let mtu = match spec.overlay {
        Overlay::None => String::new(),
        Overlay::Vxlan => format!(" mtu {UNDERLAY_MTU}"),
    };
    let mut hub_lines = vec![
        format!("link add {UNDERLAY}{mtu} type bridge forward_delay 0 stp_state 0"),
        format!("link set {UNDERLAY} up"),
    ];
    for (k, ns) in netns.iter().enumerate().skip(1) {
        hub_lines.push(format!(
            "link add ulp{k}{mtu} type veth peer name {UNDERLAY}{mtu} netns {ns}"
        ));
        hub_lines.push(format!("link set ulp{k} master {UNDERLAY}"));
        hub_lines.push(format!("link set ulp{k} up"));
    }
    ip_batch(Some(hub), &hub_lines, false).context("creating the underlay bridge")?;

    for (k, ns) in netns.iter().enumerate() {
        let (v4, v6) = underlay_addrs(k);
        let mut lines = Vec::new();
        if k > 0 {
            lines.push(format!("link set {UNDERLAY} up"));
        }
        lines.push(format!("addr add {v4}/{} dev {UNDERLAY}", UNDERLAY_V4.len));
        lines.push(format!(
            "addr add {v6}/{} dev {UNDERLAY} nodad",
            UNDERLAY_V6.len
        ));
        if spec.overlay == Overlay::None {
            lines.extend(plain_routes(spec, ranges, k));
        }
        ip_batch(Some(ns), &lines, false)
            .with_context(|| format!("underlay of node {}", nodes[k].name))?;
    }

    if spec.overlay == Overlay::Vxlan {
        let vteps = vteps(spec, ranges)?;
        for (k, ns) in netns.iter().enumerate() {
            vxlan::wire(ns, &nodes[k].name, k, &vteps)?;
        }
    }
    Ok(())
}

/// `Overlay::None`: node `k`'s routes to every other node's pod CIDRs
/// (and bridge subnets they do not cover) via its underlay address.
fn plain_routes(spec: &ClusterSpec, ranges: &[Vec<IpamRange>], k: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for (j, other) in spec.nodes.iter().enumerate() {
        if j == k {
            continue;
        }
        let (gw4, gw6) = underlay_addrs(j);
        // A bridge puts its node's whole subnet on the bridge: routed to
        // that node too, unless the pod CIDR routes already cover it.
        let extra: Vec<Cidr> = ranges
            .get(j)
            .into_iter()
            .flatten()
            .map(|r| r.subnet)
            .filter(|_| spec.cni == CniLayout::Bridge)
            .filter(|s| !other.pod_cidrs.iter().any(|c| c.covers(s)))
            .collect();
        for c in other.pod_cidrs.iter().chain(&extra) {
            let via: IpAddr = match c.addr {
                IpAddr::V4(_) => gw4.into(),
                IpAddr::V6(_) => gw6.into(),
            };
            lines.push(format!("route add {c} via {via} dev {UNDERLAY}"));
        }
    }
    lines
}
