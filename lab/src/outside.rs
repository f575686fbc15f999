//! A host outside the cluster, behind one node: a cloud's metadata server
//! (`169.254.169.254`) or any external address a policy names.
//!
//! It gets a namespace of its own (`pl-<id>-o`, removed with the lab),
//! joined to the node by a veth pair: `out0` in the node, `eth0` in the
//! host, which holds the address as a /32. The node routes the address
//! through a gateway on `out0` (the address itself, `onlink`), as a cloud
//! node reaches its metadata server through its own link: an agent takes
//! no device that routes to a gateway for a pod's interface, and the
//! address is no address of the node (traffic to the node is always
//! allowed, so a policy could not be shown refusing it). The host's
//! default route is its link; proxy ARP on `out0` answers for the pods.

use crate::cmd::ip_batch;
use crate::lab::Lab;
use crate::names;
use crate::netns::{sysctls, NetNs};
use crate::server::PodServer;
use crate::spec::ServedPort;
use anyhow::{Context, Result};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The node side of the outside host's link.
pub const OUTSIDE_IFACE: &str = "out0";

impl Lab {
    /// Adds the outside host at `addr`, serving `ports` on it until the
    /// returned server drops. One per lab.
    pub fn add_outside_host(&self, addr: Ipv4Addr, ports: &[ServedPort]) -> Result<PodServer> {
        let node = self.node.clone().context("lab has no node namespace")?;
        let name = names::outside_netns(&self.id);
        crate::topology::create_netns(std::slice::from_ref(&name))?;
        let host = Arc::new(NetNs::open(&name)?);
        let off = |k: &str| (format!("net/ipv4/conf/{k}/rp_filter"), "0");
        sysctls(&host, &[off("all"), off("default")])?;
        let eth = names::POD_IFACE;
        ip_batch(
            Some(node.name()),
            &[
                format!("link add {OUTSIDE_IFACE} type veth peer name {eth} netns {name}"),
                format!("link set {OUTSIDE_IFACE} up"),
                format!("route add {addr}/32 via {addr} dev {OUTSIDE_IFACE} onlink"),
            ],
            false,
        )
        .context("outside host: node side")?;
        sysctls(
            &node,
            &[
                (format!("net/ipv4/conf/{OUTSIDE_IFACE}/proxy_arp"), "1"),
                (format!("net/ipv4/conf/{OUTSIDE_IFACE}/rp_filter"), "0"),
                (format!("net/ipv4/neigh/{OUTSIDE_IFACE}/proxy_delay"), "0"),
            ],
        )
        .context("outside host: node link settings")?;
        ip_batch(
            Some(&name),
            &[
                "link set lo up".to_string(),
                format!("link set {eth} up"),
                format!("addr add {addr}/32 dev {eth}"),
                format!("route add default dev {eth}"),
            ],
            false,
        )
        .context("outside host: its side")?;
        PodServer::start_on(host, &format!("outside host {addr}"), ports, &[addr.into()])
    }
}
