//! What a multi-node lab is made of: nodes, each with a name, its pod
//! CIDRs and its pods.

use crate::spec::{PodSpec, ServedPort};
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
}

impl ClusterSpec {
    pub fn new(label: impl Into<String>) -> ClusterSpec {
        ClusterSpec {
            label: label.into(),
            nodes: Vec::new(),
        }
    }

    pub fn node(mut self, node: NodeSpec) -> ClusterSpec {
        self.nodes.push(node);
        self
    }

    /// Everything `LabSpec::validate` checks per node, plus: node names
    /// unique and non-empty, pod names and addresses unique across nodes,
    /// every pod address inside its node's pod CIDRs, pod CIDRs disjoint
    /// from each other and from the underlay.
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
        all.validate()
    }
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
}
