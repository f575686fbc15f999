//! The underlay of a multi-node lab: one L2 segment joining the node
//! namespaces, and plain routes to each node's pod CIDRs through it.
//!
//! The segment is a bridge, `underlay0`, in the first node's namespace
//! (the lab's "switch"); every other node gets a veth whose node side is
//! its `underlay0` and whose other end (`ulp<k>`) is a port of the bridge.
//! Each node has `198.51.100.<k+1>/24` and `fd00:198::<k+1>/64` on its
//! `underlay0`, and for every other node `route add <pod CIDR> via <that
//! node's underlay address>`: pods reach remote pods by routing alone, as
//! with Calico in BGP mode without encapsulation. With the bridge layout a
//! node's host-local subnets, when its pod CIDRs do not already cover
//! them, are routed to it the same way (flannel's host-gw: the subnet is
//! on the node's bridge). No route here is a gatewayless host route, so an
//! agent never mistakes the underlay for a pod interface.

use crate::cluster_spec::{underlay_addrs, Cidr, NodeSpec, UNDERLAY_V4, UNDERLAY_V6};
use crate::cmd::ip_batch;
use anyhow::{Context, Result};
use std::net::IpAddr;

/// The underlay device of every node.
pub const UNDERLAY: &str = "underlay0";

/// Wires `nodes` (their namespaces, in spec order) together; `subnets[j]`
/// are more prefixes of node `j` to route to it.
pub fn wire(netns: &[String], nodes: &[NodeSpec], subnets: &[Vec<Cidr>]) -> Result<()> {
    let Some(hub) = netns.first() else {
        return Ok(());
    };
    let mut hub_lines = vec![
        format!("link add {UNDERLAY} type bridge forward_delay 0 stp_state 0"),
        format!("link set {UNDERLAY} up"),
    ];
    for (k, ns) in netns.iter().enumerate().skip(1) {
        hub_lines.push(format!(
            "link add ulp{k} type veth peer name {UNDERLAY} netns {ns}"
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
        for (j, other) in nodes.iter().enumerate() {
            if j == k {
                continue;
            }
            let (gw4, gw6) = underlay_addrs(j);
            let extra = subnets.get(j).into_iter().flatten();
            for c in other.pod_cidrs.iter().chain(extra) {
                let via: IpAddr = match c.addr {
                    IpAddr::V4(_) => gw4.into(),
                    IpAddr::V6(_) => gw6.into(),
                };
                lines.push(format!("route add {c} via {via} dev {UNDERLAY}"));
            }
        }
        ip_batch(Some(ns), &lines, false)
            .with_context(|| format!("underlay of node {}", nodes[k].name))?;
    }
    Ok(())
}
