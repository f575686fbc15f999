//! Which host interface belongs to the pod: the host-side peer of the
//! container interface `CNI_IFNAME`.
//!
//! Plugins report it differently. `ptp` lists the host veth (no sandbox)
//! and the container interface; `bridge` lists the bridge too, with no
//! sandbox either, and the bridge is shared by every pod on the node so it
//! must never be chosen; Calico and Cilium may list only the container
//! side. So the kernel has the last word: a candidate must be a veth, and
//! when the result does not single one out, the container interface's peer
//! index (read inside the pod's namespace) names it.

use anyhow::Context;

use crate::result::PrevResult;

/// What the kernel says about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
    pub ifindex: u32,
    /// `linkinfo.info_kind`: "veth", "bridge", ...; None for physical NICs.
    pub kind: Option<String>,
    /// The peer's ifindex (veth), in the peer's namespace.
    pub peer_ifindex: Option<u32>,
}

/// Link lookups, behind a trait so the choice is testable without a kernel.
pub trait Links {
    /// The link called `name` in the namespace the plugin runs in.
    fn host_link(&self, name: &str) -> anyhow::Result<Option<LinkInfo>>;
    /// The link with index `ifindex` in the namespace the plugin runs in.
    fn host_link_by_index(&self, ifindex: u32) -> anyhow::Result<Option<LinkInfo>>;
    /// The link called `name` inside the network namespace at `netns`.
    fn netns_link(&self, netns: &str, name: &str) -> anyhow::Result<Option<LinkInfo>>;
}

/// The interface to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInterface {
    pub name: String,
    pub ifindex: u32,
}

/// Finds the host-side veth of container interface `ifname` in `netns`.
pub fn find_host_interface(
    prev: &PrevResult,
    netns: &str,
    ifname: &str,
    links: &dyn Links,
) -> anyhow::Result<HostInterface> {
    let mut rejected = Vec::new();
    let mut veths = Vec::new();
    for iface in prev.interfaces.iter().filter(|i| i.on_host()) {
        match links.host_link(&iface.name) {
            Ok(None) => rejected.push(format!("{}: no such host interface", iface.name)),
            Ok(Some(link)) => match link.kind.as_deref() {
                Some("veth") => veths.push(link),
                Some(kind) => rejected.push(format!("{}: is a {kind}, not a veth", iface.name)),
                None => rejected.push(format!("{}: is not a veth", iface.name)),
            },
            Err(e) => rejected.push(format!("{}: {e:#}", iface.name)),
        }
    }

    // The common case (ptp, bridge): the plugin names exactly one veth.
    if let [only] = veths.as_slice() {
        return Ok(HostInterface {
            name: only.name.clone(),
            ifindex: only.ifindex,
        });
    }

    match peer_of_container(netns, ifname, links) {
        Ok(found) => {
            if veths.iter().any(|v| v.ifindex == found.ifindex) || veths.is_empty() {
                return Ok(found);
            }
            rejected.push(format!(
                "the container side's peer {} is not among the interfaces prevResult lists",
                found.name
            ));
        }
        Err(e) => rejected.push(format!("peer lookup in {netns}: {e:#}")),
    }
    if veths.len() > 1 {
        let names: Vec<&str> = veths.iter().map(|v| v.name.as_str()).collect();
        rejected.push(format!("several veths listed: {}", names.join(", ")));
    }
    anyhow::bail!(
        "no host-side veth found for container interface {ifname:?}: {}",
        if rejected.is_empty() {
            "prevResult lists no host interface".to_string()
        } else {
            rejected.join("; ")
        }
    )
}

/// The host end of the veth whose container end is `ifname` in `netns`,
/// checked both ways (each end's peer index names the other), so that an
/// ifindex that merely happens to exist on the host is never claimed.
fn peer_of_container(
    netns: &str,
    ifname: &str,
    links: &dyn Links,
) -> anyhow::Result<HostInterface> {
    let inside = links
        .netns_link(netns, ifname)?
        .with_context(|| format!("no interface {ifname:?} in the container"))?;
    if inside.kind.as_deref() != Some("veth") {
        anyhow::bail!(
            "container interface {ifname:?} is a {}, not a veth: it has no host-side peer to hold",
            inside
                .kind
                .as_deref()
                .unwrap_or("device without a link kind")
        );
    }
    let peer = inside
        .peer_ifindex
        .with_context(|| format!("container interface {ifname:?} reports no peer index"))?;
    let host = links
        .host_link_by_index(peer)?
        .with_context(|| format!("no host interface with index {peer} (the peer of {ifname:?})"))?;
    if host.kind.as_deref() != Some("veth") || host.peer_ifindex != Some(inside.ifindex) {
        anyhow::bail!(
            "host interface {} (index {peer}) is not the peer of container interface {ifname:?}",
            host.name
        );
    }
    Ok(HostInterface {
        name: host.name,
        ifindex: host.ifindex,
    })
}
