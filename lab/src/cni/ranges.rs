//! host-local's address ranges for one node: one subnet and gateway per
//! address family that has pods.
//!
//! Pod addresses come from manifests, not from the IPAM, so the lab asks
//! host-local for each pod's own addresses (static requests) and only has
//! to pick ranges that accept them. host-local only hands out addresses
//! strictly between a subnet's network address and (IPv4) its broadcast
//! address, refuses a subnet smaller than /30 (/126), and refuses to give
//! out the gateway. So, per family: the smallest prefix covering the
//! node's pods that is at least that big and has none of them on its
//! network or broadcast address, widened one bit at a time until some
//! address in it can be the gateway (the first one that is no pod's and
//! not reserved by the plumbing). A node given an explicit range
//! (`LabSpec::ipam_range`, a cluster node's pod CIDR) uses it instead,
//! after checking it accepts every pod.

use crate::cluster_spec::Cidr;
use crate::spec::PodSpec;
use anyhow::{bail, Result};
use palisade_policy::Family;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One host-local range: the subnet pods' addresses are taken from, and
/// the gateway (on the bridge, or on every host veth for ptp).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IpamRange {
    pub subnet: Cidr,
    pub gateway: IpAddr,
}

impl IpamRange {
    pub fn family(&self) -> Family {
        Family::of(&self.subnet.addr)
    }
}

impl std::fmt::Display for IpamRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (gateway {})", self.subnet, self.gateway)
    }
}

fn width(f: Family) -> u8 {
    match f {
        Family::V4 => 32,
        Family::V6 => 128,
    }
}

fn bits(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

fn addr(f: Family, b: u128) -> IpAddr {
    match f {
        // Callers only pass values below 2^32 for IPv4.
        Family::V4 => Ipv4Addr::from(b as u32).into(),
        Family::V6 => Ipv6Addr::from(b).into(),
    }
}

/// Host bits of a `len`-bit prefix in a `w`-bit address.
fn host_mask(w: u8, len: u8) -> u128 {
    let host = u32::from(w - len);
    if host == 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    }
}

/// The addresses host-local may hand out in `subnet`: first and last.
fn usable(subnet: &Cidr) -> (u128, u128) {
    let f = Family::of(&subnet.addr);
    let net = bits(&subnet.addr);
    let last = net | host_mask(width(f), subnet.len);
    let last = if f == Family::V4 { last - 1 } else { last };
    (net + 1, last)
}

/// The first usable address of `subnet` not in `taken` and not reserved.
fn pick_gateway(subnet: &Cidr, taken: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    let f = Family::of(&subnet.addr);
    let (first, last) = usable(subnet);
    // At most |taken| + 2 reserved candidates can be skipped.
    let tries = taken.len() as u128 + 3;
    (first..=last)
        .take(tries.min(last.saturating_sub(first) + 1) as usize)
        .map(|b| addr(f, b))
        .find(|ip| !taken.contains(ip) && !crate::topology::reserved(ip))
}

/// `subnet` as a range, with its first free address as the gateway; `None`
/// when host-local could not allocate from it.
pub fn range_in(subnet: Cidr, taken: &BTreeSet<IpAddr>) -> Option<IpamRange> {
    let w = width(Family::of(&subnet.addr));
    if subnet.len > w - 2 || bits(&subnet.addr) & host_mask(w, subnet.len) != 0 {
        return None;
    }
    let gateway = pick_gateway(&subnet, taken)?;
    Some(IpamRange { subnet, gateway })
}

/// Checks that `r` accepts every pod address of its family.
fn check_given(r: &IpamRange, pods: &[(IpAddr, String)], taken: &BTreeSet<IpAddr>) -> Result<()> {
    let f = r.family();
    let w = width(f);
    if r.subnet.len > w - 2 {
        bail!(
            "ipam range {r}: host-local needs a subnet of at least /{}",
            w - 2
        );
    }
    if bits(&r.subnet.addr) & host_mask(w, r.subnet.len) != 0 {
        bail!("ipam range {r}: the subnet has host bits set");
    }
    let (first, last) = usable(&r.subnet);
    let inside = |ip: &IpAddr| Family::of(ip) == f && (first..=last).contains(&bits(ip));
    if !inside(&r.gateway) || crate::topology::reserved(&r.gateway) {
        bail!("ipam range {r}: the gateway is not a usable address of the subnet");
    }
    if taken.contains(&r.gateway) {
        bail!("ipam range {r}: the gateway is a pod address");
    }
    for (ip, key) in pods.iter().filter(|(ip, _)| Family::of(ip) == f) {
        if !inside(ip) {
            bail!(
                "pod {key}: ips: {ip} is not an address host-local can give out of ipam range {r}"
            );
        }
    }
    Ok(())
}

/// The smallest range covering `pods` (all of family `f`, at least one).
fn covering(f: Family, pods: &[(IpAddr, String)], taken: &BTreeSet<IpAddr>) -> Result<IpamRange> {
    let w = width(f);
    let lo = pods.iter().map(|(ip, _)| bits(ip)).min().expect("pods");
    let hi = pods.iter().map(|(ip, _)| bits(ip)).max().expect("pods");
    let diff = lo ^ hi;
    let common = if diff == 0 {
        w
    } else {
        w - (128 - diff.leading_zeros()) as u8
    };
    for len in (0..=common.min(w - 2)).rev() {
        let subnet = Cidr::new(addr(f, lo & !host_mask(w, len)), len);
        let (first, last) = usable(&subnet);
        if pods
            .iter()
            .any(|(ip, _)| !(first..=last).contains(&bits(ip)))
        {
            continue;
        }
        if let Some(gateway) = pick_gateway(&subnet, taken) {
            return Ok(IpamRange { subnet, gateway });
        }
    }
    let keys: Vec<&str> = pods.iter().map(|(_, k)| k.as_str()).collect();
    bail!(
        "pods {}: no {f:?} subnet covers them with room for a gateway",
        keys.join(", ")
    )
}

/// The ranges of a node holding `pods`: `given` ranges where present
/// (checked), computed ones for the other families that have pods.
/// `avoid` lists more addresses the gateway must not take (pods of other
/// nodes of a cluster: a gateway address is local to its node).
pub fn plan(
    pods: &[PodSpec],
    given: &[IpamRange],
    avoid: &BTreeSet<IpAddr>,
) -> Result<Vec<IpamRange>> {
    let addrs: Vec<(IpAddr, String)> = pods
        .iter()
        .flat_map(|p| p.ips.iter().map(move |ip| (*ip, p.key())))
        .collect();
    let mut taken = avoid.clone();
    taken.extend(addrs.iter().map(|(ip, _)| *ip));
    let mut out = Vec::new();
    for f in [Family::V4, Family::V6] {
        let mine: Vec<(IpAddr, String)> = addrs
            .iter()
            .filter(|(ip, _)| Family::of(ip) == f)
            .cloned()
            .collect();
        let of_f: Vec<&IpamRange> = given.iter().filter(|r| r.family() == f).collect();
        if of_f.len() > 1 {
            bail!("ipam ranges: more than one {f:?} range");
        }
        if let Some(r) = of_f.first() {
            check_given(r, &mine, &taken)?;
            out.push(**r);
        } else if !mine.is_empty() {
            out.push(covering(f, &mine, &taken)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ips: &[&str]) -> PodSpec {
        PodSpec {
            namespace: "x".into(),
            name: name.into(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            ports: vec![],
        }
    }

    fn range(subnet: &str, len: u8, gw: &str) -> IpamRange {
        IpamRange {
            subnet: Cidr::new(subnet.parse().unwrap(), len),
            gateway: gw.parse().unwrap(),
        }
    }

    #[test]
    fn smallest_covering_prefix_with_a_free_gateway() {
        let pods = [
            pod("a", &["10.0.0.10", "fd00::10"]),
            pod("b", &["10.0.0.11", "fd00::11"]),
            pod("c", &["10.0.0.12", "fd00::12"]),
        ];
        let r = plan(&pods, &[], &BTreeSet::new()).unwrap();
        assert_eq!(
            r,
            vec![
                range("10.0.0.8", 29, "10.0.0.9"),
                // fd00::10 is the network address of every smaller prefix.
                range("fd00::", 123, "fd00::1")
            ]
        );
    }

    #[test]
    fn widens_past_network_broadcast_and_taken_gateways() {
        // One pod: a /30 at least (host-local's smallest).
        let r = plan(&[pod("a", &["10.0.0.10"])], &[], &BTreeSet::new()).unwrap();
        assert_eq!(r, vec![range("10.0.0.8", 30, "10.0.0.9")]);
        // .11 is the broadcast address of 10.0.0.8/30.
        let r = plan(&[pod("a", &["10.0.0.11"])], &[], &BTreeSet::new()).unwrap();
        assert_eq!(r, vec![range("10.0.0.8", 29, "10.0.0.9")]);
        // .9 and .10 are pods: the only other usable address of the /30 is
        // gone, so the /29 and its next free address.
        let pods = [pod("a", &["10.0.0.9"]), pod("b", &["10.0.0.10"])];
        let r = plan(&pods, &[], &BTreeSet::new()).unwrap();
        assert_eq!(r, vec![range("10.0.0.8", 29, "10.0.0.11")]);
        // A pod of another node is never a gateway either.
        let avoid = BTreeSet::from(["10.0.0.9".parse().unwrap()]);
        let r = plan(&[pod("a", &["10.0.0.10"])], &[], &avoid).unwrap();
        assert_eq!(r, vec![range("10.0.0.8", 29, "10.0.0.11")]);
    }

    #[test]
    fn only_families_with_pods() {
        let r = plan(&[pod("a", &["fd00::5"])], &[], &BTreeSet::new()).unwrap();
        assert_eq!(r, vec![range("fd00::4", 126, "fd00::6")]);
    }

    #[test]
    fn given_ranges_are_checked() {
        let pods = [pod("a", &["10.244.1.10", "fd00:244:1::a"])];
        let given = [range("10.244.1.0", 24, "10.244.1.1")];
        let r = plan(&pods, &given, &BTreeSet::new()).unwrap();
        assert_eq!(r[0], given[0]);
        assert_eq!(r[1].subnet.len, 126);

        let outside = [range("10.244.2.0", 24, "10.244.2.1")];
        let e = plan(&pods, &outside, &BTreeSet::new()).unwrap_err();
        assert!(e.to_string().contains("pod x/a"), "{e}");
        let gw_is_pod = [range("10.244.1.0", 24, "10.244.1.10")];
        assert!(plan(&pods, &gw_is_pod, &BTreeSet::new()).is_err());
        let too_small = [range("10.244.1.10", 31, "10.244.1.11")];
        assert!(plan(&pods, &too_small, &BTreeSet::new()).is_err());
        let host_bits = [range("10.244.1.5", 24, "10.244.1.1")];
        assert!(plan(&pods, &host_bits, &BTreeSet::new()).is_err());
    }
}
