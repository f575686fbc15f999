//! Finding pod interfaces: a local pod's host-side interface is the device of
//! the host route (/32 or /128, no gateway) to the pod's address in the main
//! table of the agent's network namespace. Point-to-point CNIs and Calico
//! install exactly such routes. We read them with `ip -j route` (iproute2's
//! stable JSON output), which keeps netlink parsing out of the agent.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;

/// A host route to one address over one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRoute {
    pub ip: IpAddr,
    pub ifname: String,
    pub ifindex: u32,
}

/// Host routes of the main table, by destination address.
pub fn host_routes() -> Result<BTreeMap<IpAddr, HostRoute>> {
    let mut out = BTreeMap::new();
    for family in ["-4", "-6"] {
        let output = Command::new("ip")
            .args(["-j", family, "route", "show", "table", "main"])
            .output()
            .context("run `ip -j route show` (iproute2 is required)")?;
        if !output.status.success() {
            bail!(
                "`ip -j {family} route show table main` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        for (ip, ifname) in parse_routes(&output.stdout)? {
            // The name can vanish between the route dump and this lookup:
            // such an interface is simply not there yet on the next poll.
            let Some(ifindex) = super::sys::ifindex(&ifname) else {
                continue;
            };
            out.insert(
                ip,
                HostRoute {
                    ip,
                    ifname,
                    ifindex,
                },
            );
        }
    }
    Ok(out)
}

/// Extracts (address, device) of unicast host routes without a gateway from
/// `ip -j route` output.
pub fn parse_routes(json: &[u8]) -> Result<Vec<(IpAddr, String)>> {
    if json.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Vec::new());
    }
    let routes: Vec<serde_json::Value> =
        serde_json::from_slice(json).context("parse `ip -j route` output")?;
    let mut out = Vec::new();
    for r in routes {
        let (Some(dst), Some(dev)) = (
            r.get("dst").and_then(|v| v.as_str()),
            r.get("dev").and_then(|v| v.as_str()),
        ) else {
            continue;
        };
        if r.get("gateway").is_some() || r.get("via").is_some() {
            continue;
        }
        if let Some(t) = r.get("type").and_then(|v| v.as_str()) {
            if t != "unicast" {
                continue;
            }
        }
        // iproute2 prints host routes without their prefix length.
        let ip = match dst.split_once('/') {
            None => dst.parse::<IpAddr>().ok(),
            Some((addr, len)) => {
                let ip = addr.parse::<IpAddr>().ok();
                let full = match ip {
                    Some(IpAddr::V4(_)) => "32",
                    Some(IpAddr::V6(_)) => "128",
                    None => continue,
                };
                if len == full {
                    ip
                } else {
                    None
                }
            }
        };
        if let Some(ip) = ip {
            out.push((ip, dev.to_string()));
        }
    }
    Ok(out)
}

/// The interfaces the agent manages, found from the routes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interfaces {
    /// Local pod (`namespace/name`) -> ifindex.
    pub pods: BTreeMap<String, u32>,
    /// Interfaces with a host route to an address no local pod has (yet):
    /// they are held pending (drop) until their pod's policy is known.
    pub unknown: BTreeMap<u32, String>,
}

/// Matches the host routes against the local pods' addresses.
///
/// `pods` yields (`namespace/name`, addresses). A pod whose addresses route
/// over two different interfaces is reported and takes the first; an
/// interface that carries routes of two pods keeps the first pod only.
pub fn match_pods<'a>(
    routes: &BTreeMap<IpAddr, HostRoute>,
    pods: impl IntoIterator<Item = (&'a str, &'a [IpAddr])>,
) -> Interfaces {
    let mut out = Interfaces::default();
    let mut owner: BTreeMap<u32, String> = BTreeMap::new();
    let mut claimed: std::collections::BTreeSet<IpAddr> = Default::default();
    for (key, ips) in pods {
        let mut found: Option<u32> = None;
        for ip in ips {
            let Some(r) = routes.get(ip) else { continue };
            claimed.insert(*ip);
            match found {
                None => found = Some(r.ifindex),
                Some(i) if i != r.ifindex => {
                    tracing::error!(pod = key, %ip, ifname = %r.ifname, "pod addresses route over different interfaces; using the first");
                }
                Some(_) => {}
            }
        }
        let Some(ifindex) = found else { continue };
        if let Some(other) = owner.get(&ifindex) {
            tracing::error!(pod = key, other = %other, ifindex, "two pods route over one interface; keeping the first");
            continue;
        }
        owner.insert(ifindex, key.to_string());
        out.pods.insert(key.to_string(), ifindex);
    }
    for (ip, r) in routes {
        if !claimed.contains(ip) && !owner.contains_key(&r.ifindex) {
            out.unknown.insert(r.ifindex, r.ifname.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &str = r#"[
        {"dst":"default","gateway":"192.168.1.1","dev":"eth0","flags":[]},
        {"dst":"10.0.0.5","dev":"veth1","scope":"link","flags":[]},
        {"dst":"10.0.0.6/32","dev":"veth2","scope":"link","flags":[]},
        {"dst":"10.0.0.0/24","dev":"eth0","proto":"kernel","scope":"link","prefsrc":"10.0.0.1","flags":[]},
        {"type":"blackhole","dst":"10.0.0.9","flags":[]},
        {"dst":"10.0.0.7","gateway":"10.0.0.254","dev":"eth0","flags":[]}
    ]"#;

    #[test]
    fn only_gatewayless_host_routes_count() {
        let got = parse_routes(V4.as_bytes()).unwrap();
        assert_eq!(
            got,
            vec![
                ("10.0.0.5".parse().unwrap(), "veth1".to_string()),
                ("10.0.0.6".parse().unwrap(), "veth2".to_string())
            ]
        );
    }

    #[test]
    fn ipv6_host_routes_and_empty_output() {
        let got = parse_routes(
            br#"[{"dst":"fd00::5","dev":"veth1","metric":1024,"flags":[],"pref":"medium"},
            {"dst":"fd00::/64","dev":"eth0","flags":[]}]"#,
        )
        .unwrap();
        assert_eq!(got, vec![("fd00::5".parse().unwrap(), "veth1".to_string())]);
        assert!(parse_routes(b"\n").unwrap().is_empty());
    }

    #[test]
    fn pods_and_unknown_interfaces() {
        let route = |ip: &str, ifname: &str, ifindex| {
            let ip: IpAddr = ip.parse().unwrap();
            (
                ip,
                HostRoute {
                    ip,
                    ifname: ifname.into(),
                    ifindex,
                },
            )
        };
        let routes: BTreeMap<_, _> = [
            route("10.0.0.5", "veth1", 5),
            route("fd00::5", "veth1", 5),
            route("10.0.0.6", "veth2", 6),
        ]
        .into_iter()
        .collect();
        let a: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        let b: Vec<IpAddr> = vec!["10.0.0.8".parse().unwrap()];
        let got = match_pods(&routes, [("ns/a", a.as_slice()), ("ns/b", b.as_slice())]);
        assert_eq!(got.pods, [("ns/a".to_string(), 5)].into_iter().collect());
        assert_eq!(
            got.unknown,
            [(6, "veth2".to_string())].into_iter().collect()
        );
    }
}
