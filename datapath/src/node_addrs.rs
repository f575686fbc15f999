//! The node's own addresses: every address configured on any interface of
//! the agent's network namespace (the node's), both families, loopback
//! excepted. Traffic between a pod and any of them is node traffic, always
//! allowed (`RULE_NODE` in `docs/ebpf.md`): kubelet probes come from
//! whichever address the route to the pod picks (the uplink's, a bridge's
//! gateway address, a tunnel device's), so a list from the Node object
//! would miss some.
//!
//! Read with `getifaddrs(3)`: no subprocess, cheap enough for every round.

use anyhow::Result;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One address of an interface: its name, the address, its netmask.
struct IfAddr {
    name: String,
    ip: IpAddr,
    mask: Option<IpAddr>,
}

/// Every IP address of every interface of this network namespace, from
/// one `getifaddrs` walk.
fn if_addrs() -> Result<Vec<IfAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned; its
        // name is a C string and its addresses are null or sockaddrs of
        // their family.
        let ifa = unsafe { &*cur };
        if let Some(ip) = unsafe { sockaddr_ip(ifa.ifa_addr) } {
            let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
            out.push(IfAddr {
                name: name.to_string_lossy().into_owned(),
                ip,
                mask: unsafe { sockaddr_ip(ifa.ifa_netmask) },
            });
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The addresses of every interface of this network namespace, loopback
/// addresses excepted (a pod's 127.0.0.1 is its own, never the node).
pub fn read() -> Result<BTreeSet<IpAddr>> {
    Ok(if_addrs()?
        .into_iter()
        .map(|a| a.ip)
        .filter(|ip| !ip.is_loopback())
        .collect())
}

/// The names of the interfaces that hold a subnet address: a global
/// address (not loopback, not link-local) whose netmask is shorter than a
/// host's. These are the node's own networks' devices (uplink, underlay,
/// bridge), never a pod's host side.
pub fn subnet_devices() -> Result<BTreeSet<String>> {
    Ok(if_addrs()?
        .into_iter()
        .filter(|a| !a.ip.is_loopback() && !link_local(&a.ip))
        .filter(|a| a.mask.is_some_and(|m| !host_mask(&m)))
        .map(|a| a.name)
        .collect())
}

fn link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// A /32 or /128 netmask.
fn host_mask(mask: &IpAddr) -> bool {
    match mask {
        IpAddr::V4(m) => m.octets() == [255; 4],
        IpAddr::V6(m) => m.octets() == [255; 16],
    }
}

/// The IP address in a `sockaddr`, `None` for other families.
///
/// # Safety
/// `sa` is null or points to a valid sockaddr of the family it declares.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    match i32::from((*sa).sa_family) {
        libc::AF_INET => {
            let sin = &*(sa as *const libc::sockaddr_in);
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            let sin6 = &*(sa as *const libc::sockaddr_in6);
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn masks_and_scopes() {
        assert!(super::host_mask(&"255.255.255.255".parse().unwrap()));
        assert!(!super::host_mask(&"255.255.255.0".parse().unwrap()));
        assert!(super::link_local(&"fe80::1".parse().unwrap()));
        assert!(super::link_local(&"169.254.1.1".parse().unwrap()));
        assert!(!super::link_local(&"fd00::1".parse().unwrap()));
        // Loopback's 127.0.0.1/8 is not counted: only global subnets.
        assert!(!super::subnet_devices().unwrap().contains("lo"));
    }

    #[test]
    fn loopback_is_left_out_and_the_rest_is_read() {
        let addrs = super::read().unwrap();
        assert!(addrs.iter().all(|ip| !ip.is_loopback()), "{addrs:?}");
        // Whatever this machine has, each address is one `ip addr` lists.
        let out = std::process::Command::new("ip")
            .args(["-j", "addr", "show"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let listed: std::collections::BTreeSet<std::net::IpAddr> = v
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["local"].as_str().and_then(|s| s.parse().ok()))
            .filter(|ip: &std::net::IpAddr| !ip.is_loopback())
            .collect();
        assert_eq!(addrs, listed);
    }
}
