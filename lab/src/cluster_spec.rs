//! What a multi-node lab is made of: nodes, each with a name, its pod
//! CIDRs and its pods; how pods are wired and how their traffic crosses
//! between nodes.

use crate::cni::{ChainedPlugin, CniLayout, IpamRange};
use crate::spec::{PodSpec, ServedPort};
use crate::underlay::{Overlay, Vtep};
use anyhow::{bail, Result};
use palisade_policy::Family;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address prefix (`10.244.1.0/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, len: u8) -> Cidr {
        Cidr { addr, len }
    }

    fn bits(ip: &IpAddr) -> (u128, u8) {
        match ip {
            IpAddr::V4(a) => (u128::from(u32::from(*a)), 32),
            IpAddr::V6(a) => (u128::from(*a), 128),
        }
    }

    /// Whether `ip` (of the same family) lies inside.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        if Family::of(ip) != Family::of(&self.addr) {
            return false;
        }
        let (a, width) = Self::bits(&self.addr);
        let (b, _) = Self::bits(ip);
        let shift = u32::from(width - self.len.min(width));
        shift >= u32::from(width) || (a >> shift) == (b >> shift)
    }

    /// Whether `other` lies wholly inside this prefix.
    pub fn covers(&self, other: &Cidr) -> bool {
        self.len <= other.len && self.contains(&other.addr)
    }

    fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(&other.addr) || other.contains(&self.addr)
    }

    fn valid(&self) -> bool {
        let (_, width) = Self::bits(&self.addr);
        self.len <= width
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The underlay: one segment all nodes sit on (TEST-NET-2 and a ULA
/// prefix; both only exist inside the lab's namespaces).
pub const UNDERLAY_V4: Cidr = Cidr {
    addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)),
    len: 24,
};
pub const UNDERLAY_V6: Cidr = Cidr {
    addr: IpAddr::V6(Ipv6Addr::new(0xfd00, 0x198, 0, 0, 0, 0, 0, 0)),
    len: 64,
};

/// Node `index`'s underlay addresses (`198.51.100.<index+1>`,
/// `fd00:198::<index+1>`).
pub fn underlay_addrs(index: usize) -> (Ipv4Addr, Ipv6Addr) {
    let host = u8::try_from(index + 1).expect("fewer than 255 nodes");
    (
        Ipv4Addr::new(198, 51, 100, host),
        Ipv6Addr::new(0xfd00, 0x198, 0, 0, 0, 0, 0, u16::from(host)),
    )
}

/// One node: its name (`spec.nodeName` of its pods, `--node` of its agent),
/// the prefixes its pods' addresses come from, and its pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub pod_cidrs: Vec<Cidr>,
    pub pods: Vec<PodSpec>,
}

impl NodeSpec {
    /// A node with the pod CIDRs `10.244.<index+1>.0/24` and
    /// `fd00:244:<index+1>::/64` (as a cluster's IPAM hands out per-node
    /// blocks) and no pods yet.
    pub fn new(name: &str, index: usize) -> NodeSpec {
        let k = u8::try_from(index + 1).expect("fewer than 255 nodes");
        NodeSpec {
            name: name.to_string(),
            pod_cidrs: vec![
                Cidr::new(Ipv4Addr::new(10, 244, k, 0).into(), 24),
                Cidr::new(
                    Ipv6Addr::new(0xfd00, 0x244, u16::from(k), 0, 0, 0, 0, 0).into(),
                    64,
                ),
            ],
            pods: Vec::new(),
        }
    }

    /// Adds a pod; its addresses must lie in the node's pod CIDRs.
    pub fn pod(
        mut self,
        namespace: &str,
        name: &str,
        ips: &[IpAddr],
        ports: &[ServedPort],
    ) -> Self {
        self.pods.push(PodSpec {
            namespace: namespace.to_string(),
            name: name.to_string(),
            ips: ips.to_vec(),
            ports: ports.to_vec(),
        });
        self
    }

    /// The `host`-th address of the node's pod CIDR of `family`
    /// (`10.244.1.<host>`), for building pods.
    pub fn addr(&self, family: Family, host: u16) -> Option<IpAddr> {
        let c = self
            .pod_cidrs
            .iter()
            .find(|c| Family::of(&c.addr) == family)?;
        Some(match c.addr {
            IpAddr::V4(a) => Ipv4Addr::from(u32::from(a) + u32::from(host)).into(),
            IpAddr::V6(a) => Ipv6Addr::from(u128::from(a) + u128::from(host)).into(),
        })
    }
}

/// A whole cluster lab.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterSpec {
    pub label: String,
    pub nodes: Vec<NodeSpec>,
    /// How every node wires its pods (`LabSpec::cni`).
    pub cni: CniLayout,
    /// Plugins after the main one, on every node (`LabSpec::chain`).
    pub chain: Vec<ChainedPlugin>,
    /// How pod traffic crosses between nodes (plain routes by default).
    pub overlay: Overlay,
}

impl ClusterSpec {
    pub fn new(label: impl Into<String>) -> ClusterSpec {
        ClusterSpec {
            label: label.into(),
            ..ClusterSpec::default()
        }
    }

    pub fn node(mut self, node: NodeSpec) -> ClusterSpec {
        self.nodes.push(node);
        self
    }

    /// Every node wires its pods with `layout`.
    pub fn cni(mut self, layout: CniLayout) -> ClusterSpec {
        self.cni = layout;
        self
    }

    /// Plugins appended after the main one on every node.
    pub fn chain(mut self, plugins: Vec<ChainedPlugin>) -> ClusterSpec {
        self.chain = plugins;
        self
    }

    /// How pod traffic crosses between nodes.
    pub fn overlay(mut self, overlay: Overlay) -> ClusterSpec {
        self.overlay = overlay;
        self
    }

    /// Every node's VXLAN endpoints (per node, IPv4 first), as
    /// `Overlay::Vxlan` programs them whatever `overlay` is: each node's
    /// pod subnet (the smallest prefix covering its pod CIDRs and its
    /// host-local subnet, per family), the device address and MAC. Fails
    /// when nodes' subnets overlap.
    pub fn vteps(&self) -> Result<Vec<Vec<Vtep>>> {
        crate::underlay::vteps(self, &self.ipam_ranges()?)
    }

    /// host-local's ranges of every node (empty lists for the routed
    /// layout). A node's pod CIDR of a family is its subnet when it holds
    /// all the node's pods of that family and host-local can allocate from
    /// it (as a node's podCIDR is flannel's subnet); otherwise the
    /// smallest range covering them. Gateways are never any node's pod.
    pub fn ipam_ranges(&self) -> Result<Vec<Vec<IpamRange>>> {
        if self.cni == CniLayout::Routed {
            return Ok(vec![Vec::new(); self.nodes.len()]);
        }
        let all: BTreeSet<IpAddr> = self
            .nodes
            .iter()
            .flat_map(|n| n.pods.iter().flat_map(|p| p.ips.iter().copied()))
            .collect();
        self.nodes
            .iter()
            .map(|n| {
                let given = pod_cidr_ranges(n, &all);
                crate::cni::plan(&n.pods, &given, &all)
                    .map_err(|e| e.context(format!("cluster spec: node {}", n.name)))
            })
            .collect()
    }

    /// Everything `LabSpec::validate` checks per node, plus: node names
    /// unique and non-empty, pod names and addresses unique across nodes,
    /// every pod address inside its node's pod CIDRs, pod CIDRs disjoint
    /// from each other and from the underlay; with VXLAN, nodes' subnets
    /// (`vteps`) disjoint from each other and from the underlay.
    pub fn validate(&self) -> Result<()> {
        if self.nodes.is_empty() {
            bail!("cluster spec {}: nodes: none", self.label);
        }
        if self.nodes.len() > 250 {
            bail!("cluster spec {}: nodes: at most 250", self.label);
        }
        let mut names = BTreeSet::new();
        let mut cidrs: Vec<(Cidr, &str)> = Vec::new();
        let mut all = crate::spec::LabSpec::new(self.label.clone());
        for n in &self.nodes {
            if n.name.is_empty() || !names.insert(n.name.as_str()) {
                bail!(
                    "cluster spec {}: node {:?}: name: empty or used twice",
                    self.label,
                    n.name
                );
            }
            for c in &n.pod_cidrs {
                if !c.valid() {
                    bail!(
                        "cluster spec: node {}: pod_cidrs: {c} is not a prefix",
                        n.name
                    );
                }
                for u in [UNDERLAY_V4, UNDERLAY_V6] {
                    if c.overlaps(&u) {
                        bail!(
                            "cluster spec: node {}: pod_cidrs: {c} overlaps the underlay {u}",
                            n.name
                        );
                    }
                }
                if let Some((o, other)) = cidrs.iter().find(|(o, _)| o.overlaps(c)) {
                    bail!(
                        "cluster spec: node {}: pod_cidrs: {c} overlaps {o} of node {other}",
                        n.name
                    );
                }
                cidrs.push((*c, &n.name));
            }
            for p in &n.pods {
                for ip in &p.ips {
                    if !n.pod_cidrs.iter().any(|c| c.contains(ip)) {
                        bail!(
                            "cluster spec: node {}: pod {}: ips: {ip} is outside the node's pod CIDRs",
                            n.name,
                            p.key()
                        );
                    }
                }
                all.pods.push(p.clone());
            }
        }
        // Duplicate pods and addresses across nodes, reserved addresses.
        all.validate()?;
        self.validate_ranges()?;
        if self.overlay == Overlay::Vxlan {
            self.vteps()?;
        }
        Ok(())
    }

    /// host-local's subnets stay off the underlay; a bridge's subnet is
    /// on-link in each of its pods, so it must hold no other node's pod
    /// (that pod would be looked for on the bridge, never routed).
    fn validate_ranges(&self) -> Result<()> {
        let ranges = self.ipam_ranges()?;
        for (n, rs) in self.nodes.iter().zip(&ranges) {
            for r in rs {
                for u in [UNDERLAY_V4, UNDERLAY_V6] {
                    if r.subnet.overlaps(&u) {
                        bail!(
                            "cluster spec: node {}: ipam range {r} overlaps the underlay {u}",
                            n.name
                        );
                    }
                }
                if self.cni != CniLayout::Bridge {
                    continue;
                }
                for other in self.nodes.iter().filter(|o| o.name != n.name) {
                    if let Some(p) = other
                        .pods
                        .iter()
                        .find(|p| p.ips.iter().any(|ip| r.subnet.contains(ip)))
                    {
                        bail!(
                            "cluster spec: node {}: bridge subnet {} holds pod {} of node {}: \
                             give each node pod CIDRs of its own, or use another layout",
                            n.name,
                            r.subnet,
                            p.key(),
                            other.name
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

/// The node's pod CIDRs usable as host-local ranges as they are (see
/// `ClusterSpec::ipam_ranges`), each with its first free address as the
/// gateway. Host prefixes (a node whose pods follow no per-node block)
/// and prefixes host-local would not accept every pod from give none.
fn pod_cidr_ranges(n: &NodeSpec, taken: &BTreeSet<IpAddr>) -> Vec<IpamRange> {
    let mut out: Vec<IpamRange> = Vec::new();
    for c in &n.pod_cidrs {
        if out.iter().any(|r| r.family() == Family::of(&c.addr)) {
            continue;
        }
        let Some(r) = crate::cni::range_in(*c, taken) else {
            continue;
        };
        if crate::cni::plan(&n.pods, &[r], taken).is_ok() {
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_containment() {
        let c = Cidr::new(ip("10.244.1.0"), 24);
        assert!(c.contains(&ip("10.244.1.200")));
        assert!(!c.contains(&ip("10.244.2.1")));
        assert!(!c.contains(&ip("fd00::1")));
        assert!(Cidr::new(ip("0.0.0.0"), 0).contains(&ip("1.2.3.4")));
        assert!(UNDERLAY_V6.contains(&ip("fd00:198::2")));
    }

    #[test]
    fn validation_names_node_and_field() {
        let a = NodeSpec::new("a", 0);
        let b = NodeSpec::new("b", 1);
        let pod_ip = b.addr(Family::V4, 10).unwrap();
        let bad = ClusterSpec::new("t")
            .node(a.clone().pod("x", "p", &[pod_ip], &[]))
            .node(b.clone());
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("node a") && e.contains("outside"), "{e}");

        let same = ClusterSpec::new("t").node(a.clone()).node(a.clone());
        assert!(same
            .validate()
            .unwrap_err()
            .to_string()
            .contains("used twice"));

        let mut overlapping = b.clone();
        overlapping.pod_cidrs[0] = Cidr::new(ip("10.244.0.0"), 16);
        let e = ClusterSpec::new("t")
            .node(a.clone())
            .node(overlapping)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlaps"), "{e}");

        let ok = ClusterSpec::new("t")
            .node(
                a.clone()
                    .pod("x", "p", &[a.addr(Family::V4, 10).unwrap()], &[]),
            )
            .node(
                b.clone()
                    .pod("x", "q", &[pod_ip, b.addr(Family::V6, 10).unwrap()], &[]),
            );
        ok.validate().unwrap();
        assert_eq!(b.addr(Family::V6, 10).unwrap(), ip("fd00:244:2::a"));
    }

    #[test]
    fn ipam_ranges_use_pod_cidrs_or_cover_the_pods() {
        let a = NodeSpec::new("a", 0);
        let b = NodeSpec::new("b", 1);
        let ips = |n: &NodeSpec, h| {
            [
                n.addr(Family::V4, h).unwrap(),
                n.addr(Family::V6, h).unwrap(),
            ]
        };
        let spec = ClusterSpec::new("t")
            .cni(CniLayout::Bridge)
            .node(a.clone().pod("x", "p", &ips(&a, 1), &[]))
            .node(b.clone().pod("x", "q", &ips(&b, 10), &[]));
        spec.validate().unwrap();
        let r = spec.ipam_ranges().unwrap();
        // Node a's pod took .1: the gateway is the next address.
        assert_eq!(r[0][0].subnet, a.pod_cidrs[0]);
        assert_eq!(r[0][0].gateway, ip("10.244.1.2"));
        assert_eq!(r[1][0].gateway, ip("10.244.2.1"));
        assert_eq!(r[1][1].subnet, b.pod_cidrs[1]);
        assert_eq!(r[1][1].gateway, ip("fd00:244:2::1"));
        assert!(ClusterSpec::new("t").ipam_ranges().unwrap().is_empty());
    }

    #[test]
    fn bridge_subnets_must_not_hold_other_nodes_pods() {
        // Host prefixes: the covering subnet of node a (10.0.0.8/29) holds
        // node b's pod. Fine for ptp (routed via the gateway), not for a
        // bridge (on-link in every pod of a).
        let node = |name: &str, pods: &[(&str, &str)]| {
            let mut n = NodeSpec::new(name, 0);
            n.pod_cidrs = pods.iter().map(|(_, a)| Cidr::new(ip(a), 32)).collect();
            for (p, a) in pods {
                n = n.pod("x", p, &[ip(a)], &[]);
            }
            n
        };
        let spec = ClusterSpec::new("t")
            .node(node("a", &[("p", "10.0.0.10"), ("q", "10.0.0.12")]))
            .node(node("b", &[("r", "10.0.0.11")]));
        spec.clone().cni(CniLayout::Ptp).validate().unwrap();
        let r = spec.clone().cni(CniLayout::Ptp).ipam_ranges().unwrap();
        // No gateway is a pod of either node.
        assert_eq!(r[0][0].gateway, ip("10.0.0.9"));
        assert_eq!(r[1][0].gateway, ip("10.0.0.9"));
        let e = spec
            .cni(CniLayout::Bridge)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("node a") && e.contains("pod x/r") && e.contains("node b"),
            "{e}"
        );
    }
}
