//! Which overlay carries pod traffic between the nodes of a cluster lab,
//! and, for VXLAN, what each node's tunnel endpoint is: flannel's lease of
//! a node (one pod subnet per node and family, the subnet's network
//! address on the VXLAN device, the device's MAC and the node's underlay
//! address), computed from the cluster spec instead of a lease store.

use crate::cluster_spec::{underlay_addrs, Cidr, ClusterSpec, UNDERLAY_V4, UNDERLAY_V6};
use crate::cni::IpamRange;
use anyhow::{bail, Result};
use palisade_policy::Family;
use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// How pod traffic crosses from node to node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Overlay {
    /// Plain routing over the underlay: `<pod CIDR> via <node's underlay
    /// address>` (Calico in BGP mode, flannel's host-gw).
    #[default]
    None,
    /// VXLAN laid out as flannel's vxlan backend does: `flannel.1` (and
    /// `flannel-v6.1`) on every node, static neighbour and FDB entries for
    /// every other node, pod subnets routed onto the device.
    Vxlan,
}

impl Overlay {
    pub const ALL: [Overlay; 2] = [Overlay::None, Overlay::Vxlan];

    fn name(self) -> &'static str {
        match self {
            Overlay::None => "none",
            Overlay::Vxlan => "vxlan",
        }
    }
}

impl fmt::Display for Overlay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Overlay {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Overlay> {
        Overlay::ALL
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| anyhow::anyhow!("unknown overlay {s:?} (expected none or vxlan)"))
    }
}

/// The VXLAN device of IPv4 pod traffic (flannel's name for VNI 1).
pub const VXLAN_DEV: &str = "flannel.1";
/// The VXLAN device of IPv6 pod traffic in a dual-stack flannel.
pub const VXLAN_V6_DEV: &str = "flannel-v6.1";
/// flannel's default VNI.
pub const VXLAN_VNI: u32 = 1;
/// The Linux kernel's (and flannel's) VXLAN port, not IANA's 4789.
pub const VXLAN_PORT: u16 = 8472;

/// One node's VXLAN endpoint for one address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vtep {
    /// `VXLAN_DEV` or `VXLAN_V6_DEV`.
    pub device: &'static str,
    /// The node's pod subnet of this family (flannel's lease subnet):
    /// what the other nodes route onto their device.
    pub subnet: Cidr,
    /// The subnet's network address, on the device as /32 or /128 (the
    /// other nodes' route gateway and permanent neighbour).
    pub addr: IpAddr,
    /// The device's MAC (fixed per node: flannel keeps it stable across
    /// restarts through a node annotation; here the index gives it).
    pub mac: [u8; 6],
    /// The node's underlay address: the VXLAN source, and the FDB
    /// destination on the other nodes.
    pub underlay: IpAddr,
}

impl Vtep {
    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }

    /// The MAC as `ip` prints it.
    pub fn mac_string(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

fn bits(ip: &IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(*a)), 32),
        IpAddr::V6(a) => (u128::from(*a), 128),
    }
}

fn from_bits(f: Family, b: u128) -> IpAddr {
    match f {
        // Only IPv4 values (below 2^32) come here for V4.
        Family::V4 => Ipv4Addr::from(b as u32).into(),
        Family::V6 => Ipv6Addr::from(b).into(),
    }
}

/// All bits of a `width`-bit address.
fn all_ones(width: u8) -> u128 {
    if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    }
}

/// The network mask of a `len`-bit prefix in a `width`-bit address.
fn net_mask(width: u8, len: u8) -> u128 {
    let host = u32::from(width - len);
    if host >= 128 {
        0
    } else {
        all_ones(width) & !((1u128 << host) - 1)
    }
}

/// The smallest prefix covering every one of `prefixes` (one family, at
/// least one), widened while its network address is in `avoid` (it
/// becomes the VXLAN device's address, which must be no pod's).
fn covering(prefixes: &[Cidr], avoid: &BTreeSet<IpAddr>) -> Option<Cidr> {
    let f = Family::of(&prefixes.first()?.addr);
    let (_, width) = bits(&prefixes[0].addr);
    let lo = prefixes
        .iter()
        .map(|c| bits(&c.addr).0 & net_mask(width, c.len))
        .min()?;
    let hi = prefixes
        .iter()
        .map(|c| bits(&c.addr).0 | (all_ones(width) & !net_mask(width, c.len)))
        .max()?;
    let diff = lo ^ hi;
    let common = if diff == 0 {
        width
    } else {
        width - (128 - diff.leading_zeros()) as u8
    };
    let shortest = prefixes.iter().map(|c| c.len).min()?;
    let mut len = common.min(shortest);
    loop {
        let net = from_bits(f, lo & net_mask(width, len));
        if !avoid.contains(&net) && !crate::topology::reserved(&net) {
            return Some(Cidr::new(net, len));
        }
        len = len.checked_sub(1)?;
    }
}

/// Every node's endpoints (in spec order; a family only where the node
/// has pod CIDRs or a host-local range of it), `ranges` being
/// `ClusterSpec::ipam_ranges()`. A node's subnet of a family covers its
/// pod CIDRs and its host-local subnet of that family (flannel's subnet is
/// the node's podCIDR and the bridge's subnet at once); host prefixes give
/// the smallest covering prefix. Fails, naming both nodes, when two nodes'
/// subnets overlap (flannel routes one subnet per node) and when one
/// reaches into the underlay.
pub(crate) fn vteps(spec: &ClusterSpec, ranges: &[Vec<IpamRange>]) -> Result<Vec<Vec<Vtep>>> {
    let pods: BTreeSet<IpAddr> = spec
        .nodes
        .iter()
        .flat_map(|n| n.pods.iter().flat_map(|p| p.ips.iter().copied()))
        .collect();
    let mut out: Vec<Vec<Vtep>> = Vec::new();
    for (k, n) in spec.nodes.iter().enumerate() {
        let (u4, u6) = underlay_addrs(k);
        let node_ranges = ranges.get(k).map(Vec::as_slice).unwrap_or_default();
        let mut mine = Vec::new();
        for (f, device, underlay, tag) in [
            (Family::V4, VXLAN_DEV, IpAddr::from(u4), 4u8),
            (Family::V6, VXLAN_V6_DEV, IpAddr::from(u6), 6u8),
        ] {
            let prefixes: Vec<Cidr> = n
                .pod_cidrs
                .iter()
                .copied()
                .chain(node_ranges.iter().map(|r| r.subnet))
                .filter(|c| Family::of(&c.addr) == f)
                .collect();
            if prefixes.is_empty() {
                continue;
            }
            let Some(subnet) = covering(&prefixes, &pods) else {
                bail!(
                    "cluster spec: node {}: vxlan: no {f:?} subnet covers its pod CIDRs \
                     with a network address that is no pod's",
                    n.name
                );
            };
            for u in [UNDERLAY_V4, UNDERLAY_V6] {
                if subnet.covers(&u) || u.covers(&subnet) {
                    bail!(
                        "cluster spec: node {}: vxlan subnet {subnet} overlaps the underlay {u}",
                        n.name
                    );
                }
            }
            let index = u8::try_from(k).expect("at most 250 nodes");
            mine.push(Vtep {
                device,
                subnet,
                addr: subnet.addr,
                mac: [0x0e, 0xfc, 0x00, index, 0x00, tag],
                underlay,
            });
        }
        for (j, theirs) in out.iter().enumerate() {
            for a in &mine {
                if let Some(b) = theirs
                    .iter()
                    .find(|b| a.subnet.covers(&b.subnet) || b.subnet.covers(&a.subnet))
                {
                    bail!(
                        "cluster spec: node {}: vxlan subnet {} overlaps {} of node {}: \
                         flannel routes one subnet per node, so give each node pod CIDRs \
                         of its own (not interleaved host prefixes)",
                        n.name,
                        a.subnet,
                        b.subnet,
                        spec.nodes[j].name
                    );
                }
            }
        }
        out.push(mine);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_spec::NodeSpec;
    use crate::cni::CniLayout;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn host(s: &str) -> Cidr {
        let a = ip(s);
        Cidr::new(a, if a.is_ipv4() { 32 } else { 128 })
    }

    #[test]
    fn names_round_trip() {
        for o in Overlay::ALL {
            assert_eq!(o.to_string().parse::<Overlay>().unwrap(), o);
        }
        assert_eq!(Overlay::default(), Overlay::None);
        let e = "geneve".parse::<Overlay>().unwrap_err().to_string();
        assert!(e.contains("none or vxlan"), "{e}");
    }

    #[test]
    fn covering_prefixes_avoid_pod_network_addresses() {
        let none = BTreeSet::new();
        let c = covering(&[Cidr::new(ip("10.244.1.0"), 24)], &none).unwrap();
        assert_eq!(c, Cidr::new(ip("10.244.1.0"), 24));
        let c = covering(&[host("10.0.0.10"), host("10.0.0.12")], &none).unwrap();
        assert_eq!(c, Cidr::new(ip("10.0.0.8"), 29));
        // 10.0.0.8 is a pod: /29, /30, /31 and /32 all start there.
        let pods = BTreeSet::from([ip("10.0.0.8")]);
        let c = covering(&[host("10.0.0.8"), host("10.0.0.9")], &pods).unwrap();
        assert_eq!(c, Cidr::new(ip("10.0.0.0"), 28));
        let c = covering(&[host("fd00::10"), Cidr::new(ip("fd00::"), 123)], &none).unwrap();
        assert_eq!(c, Cidr::new(ip("fd00::"), 123));
    }

    fn two_nodes() -> ClusterSpec {
        let a = NodeSpec::new("a", 0);
        let b = NodeSpec::new("b", 1);
        let ips = |n: &NodeSpec| {
            [
                n.addr(Family::V4, 10).unwrap(),
                n.addr(Family::V6, 10).unwrap(),
            ]
        };
        ClusterSpec::new("t")
            .node(a.clone().pod("x", "p", &ips(&a), &[]))
            .node(b.clone().pod("x", "q", &ips(&b), &[]))
    }

    #[test]
    fn per_node_subnets_as_flannel_leases() {
        for layout in CniLayout::ALL {
            let spec = two_nodes().cni(layout);
            let v = vteps(&spec, &spec.ipam_ranges().unwrap()).unwrap();
            assert_eq!(v.len(), 2);
            let a4 = v[0][0];
            assert_eq!(a4.device, VXLAN_DEV);
            assert_eq!(a4.subnet, Cidr::new(ip("10.244.1.0"), 24), "{layout}");
            assert_eq!(a4.addr, ip("10.244.1.0"));
            assert_eq!(a4.underlay, ip("198.51.100.1"));
            assert_eq!(a4.mac_string(), "0e:fc:00:00:00:04");
            let b6 = v[1][1];
            assert_eq!(b6.device, VXLAN_V6_DEV);
            assert_eq!(b6.addr, ip("fd00:244:2::"));
            assert_eq!(b6.underlay, ip("fd00:198::2"));
            assert_eq!(b6.mac_string(), "0e:fc:00:01:00:06");
        }
    }

    #[test]
    fn interleaved_nodes_are_refused() {
        let node = |name: &str, pods: &[(&str, &str)]| {
            let mut n = NodeSpec::new(name, 0);
            n.pod_cidrs = pods.iter().map(|(_, a)| host(a)).collect();
            for (p, a) in pods {
                n = n.pod("x", p, &[ip(a)], &[]);
            }
            n
        };
        let spec = ClusterSpec::new("t")
            .cni(CniLayout::Ptp)
            .node(node("a", &[("p", "10.0.0.10"), ("q", "10.0.0.12")]))
            .node(node("b", &[("r", "10.0.0.11")]));
        let e = vteps(&spec, &spec.ipam_ranges().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("node b") && e.contains("node a") && e.contains("overlaps"),
            "{e}"
        );
        // Separate host prefixes are fine; a lone pod's /32 starts at the
        // pod itself, so the subnet widens to where it does not.
        let spec = ClusterSpec::new("t")
            .node(node("a", &[("p", "10.0.0.10")]))
            .node(node("b", &[("r", "10.0.1.10")]));
        let v = vteps(&spec, &spec.ipam_ranges().unwrap()).unwrap();
        assert_eq!(v[0][0].subnet, Cidr::new(ip("10.0.0.8"), 30));
        assert_eq!(v[1][0].addr, ip("10.0.1.8"));
    }
}
