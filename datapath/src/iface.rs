//! Finding pod interfaces, from two sources:
//!
//! - attachment records of the chained CNI plugin (`palisade-cni`), which
//!   name the pod, its host-side interface and its addresses: the only
//!   source on bridge CNIs (flannel, the `bridge` plugin, kubenet), where
//!   pods have no host route;
//! - host routes: a local pod's host-side interface is the device of the
//!   host route (/32 or /128, no gateway) to the pod's address in the main
//!   table of the agent's network namespace. Point-to-point CNIs and Calico
//!   install exactly such routes. We read them with `ip -j route`
//!   (iproute2's stable JSON output), which keeps netlink parsing out of
//!   the agent.
//!
//! A route's device is taken only when it is a veth or netkit device: an
//! uplink with a gateway-less host route (GCE's `10.128.0.1 dev ens4`), a
//! bridge, a tunnel or a dummy device is never a pod's, and holding it
//! pending would cut the node off.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
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
    Ok(routes()?.hosts)
}

/// What a round reads of the main routing table, in one dump per family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    /// Host routes, by destination address.
    pub hosts: BTreeMap<IpAddr, HostRoute>,
    /// The devices of the default routes (the uplinks, with `--uplink auto`).
    pub default_devs: BTreeSet<String>,
}

/// The main table's host routes and default route devices.
pub fn routes() -> Result<Routes> {
    let mut out = Routes::default();
    for family in ["-4", "-6"] {
        let output = super::command::output(
            Command::new("ip").args(["-j", family, "route", "show", "table", "main"]),
        )?;
        if !output.status.success() {
            bail!(
                "`ip -j {family} route show table main` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let routes = route_entries(&output.stdout)?;
        out.default_devs.extend(default_devs(&routes));
        let gateways = gateway_devs(&routes);
        for (ip, ifname) in host_routes_of(&routes) {
            // A device that routes to a gateway is an uplink or a tunnel:
            // its gateway-less host routes (GCE's `10.128.0.1 dev ens4`)
            // lead to routers, never to pods.
            if gateways.contains(&ifname) {
                continue;
            }
            // The name can vanish between the route dump and this lookup:
            // such an interface is simply not there yet on the next poll.
            let Some(ifindex) = super::sys::ifindex(&ifname) else {
                continue;
            };
            out.hosts.insert(
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

/// The devices of the default routes among `routes`.
pub fn default_devs(routes: &[serde_json::Value]) -> BTreeSet<String> {
    routes
        .iter()
        .filter(|r| r.get("dst").and_then(|d| d.as_str()) == Some("default"))
        .filter_map(|r| r.get("dev")?.as_str().map(str::to_string))
        .collect()
}

/// The entries of `ip -j route` output, parsed once for both readers below
/// (and the uplinks'). Empty output is no routes.
pub fn route_entries(json: &[u8]) -> Result<Vec<serde_json::Value>> {
    if json.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Vec::new());
    }
    serde_json::from_slice(json).context("parse `ip -j route` output")
}

/// (address, device) of the unicast host routes without a gateway.
pub fn host_routes_of(routes: &[serde_json::Value]) -> Vec<(IpAddr, String)> {
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
    out
}

/// The devices of routes through a gateway, and of default routes (with a
/// gateway or not).
pub fn gateway_devs(routes: &[serde_json::Value]) -> BTreeSet<String> {
    routes
        .iter()
        .filter(|r| {
            r.get("gateway").is_some()
                || r.get("via").is_some()
                || r.get("dst").and_then(|d| d.as_str()) == Some("default")
        })
        .filter_map(|r| r.get("dev")?.as_str().map(str::to_string))
        .collect()
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

/// A pod interface the CNI plugin recorded (see the `palisade-cni` crate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub ifindex: u32,
    pub ifname: String,
    /// `namespace/name`, when the runtime passed them.
    pub pod: Option<String>,
    pub ips: Vec<IpAddr>,
}

/// Matches the host routes against the local pods' addresses (no CNI
/// records; devices checked with [`is_pod_device`]).
pub fn match_pods<'a>(
    routes: &BTreeMap<IpAddr, HostRoute>,
    pods: impl IntoIterator<Item = (&'a str, &'a [IpAddr])>,
) -> Interfaces {
    let devices = PodDevices::scan();
    let none = BTreeSet::new();
    match_all(routes, &[], pods, &none, &|i, n| {
        devices.is_pod_device(i, n)
    })
}

/// Matches CNI attachments, then host routes, against the local pods.
///
/// `pods` yields (`namespace/name`, addresses). An attachment belongs to
/// the pod it names, else to the pod owning one of its addresses; one whose
/// interface index now names another device is stale and ignored. Routes
/// count only over devices `pod_device` accepts and not already attached.
/// A pod whose addresses route over two different interfaces is reported
/// and takes the first; an interface that carries routes of two pods keeps
/// the first pod only. Interfaces with no known pod are `unknown` (held
/// pending), except those routed only to addresses of `elsewhere`, the
/// pods the model places on other nodes: they are not this node's pods (an
/// agent under the wrong `--node` would otherwise hold every pod of the
/// node pending, cutting it off).
pub fn match_all<'a>(
    routes: &BTreeMap<IpAddr, HostRoute>,
    attachments: &[Attachment],
    pods: impl IntoIterator<Item = (&'a str, &'a [IpAddr])>,
    elsewhere: &BTreeSet<IpAddr>,
    pod_device: &dyn Fn(u32, &str) -> bool,
) -> Interfaces {
    let pods: Vec<(&str, &[IpAddr])> = pods.into_iter().collect();
    let mut out = Interfaces::default();
    let mut owner: BTreeMap<u32, String> = BTreeMap::new();
    for a in attachments {
        if super::sys::ifname(a.ifindex).as_deref() != Some(a.ifname.as_str()) {
            continue;
        }
        let pod = pods.iter().find(|(key, ips)| {
            a.pod.as_deref() == Some(*key)
                || (a.pod.is_none() && ips.iter().any(|ip| a.ips.contains(ip)))
        });
        match pod {
            Some((key, _)) if !out.pods.contains_key(*key) => {
                owner.insert(a.ifindex, key.to_string());
                out.pods.insert(key.to_string(), a.ifindex);
            }
            _ => {
                out.unknown.insert(a.ifindex, a.ifname.clone());
            }
        }
    }
    let attached: BTreeSet<u32> = attachments.iter().map(|a| a.ifindex).collect();
    let routes: BTreeMap<IpAddr, &HostRoute> = routes
        .iter()
        .filter(|(_, r)| !attached.contains(&r.ifindex) && pod_device(r.ifindex, &r.ifname))
        .map(|(ip, r)| (*ip, r))
        .collect();
    let mut claimed: BTreeSet<IpAddr> = Default::default();
    for (key, ips) in pods {
        if out.pods.contains_key(key) {
            continue;
        }
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
    for (ip, r) in &routes {
        if !claimed.contains(ip) && !owner.contains_key(&r.ifindex) && !elsewhere.contains(ip) {
            out.unknown.insert(r.ifindex, r.ifname.clone());
        }
    }
    out
}

/// What tells a pod's host-side device from the node's own, read once per
/// round: the devices that hold a subnet address (a global address with a
/// prefix shorter than a host's: an uplink, an underlay, a bridge with its
/// gateway). A pod's host side holds none (Calico, Cilium) or only host
/// addresses (the `ptp` plugin puts the pod's gateway there as a /32).
#[derive(Clone, Debug, Default)]
pub struct PodDevices {
    subnet_devs: BTreeSet<String>,
}

impl PodDevices {
    /// Reads this network namespace's addresses; on error nothing is
    /// excluded by address (the kind check still applies).
    pub fn scan() -> PodDevices {
        match super::node_addrs::subnet_devices() {
            Ok(subnet_devs) => PodDevices { subnet_devs },
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot read the node's addresses");
                PodDevices::default()
            }
        }
    }

    /// Whether `ifname` (index `ifindex`) can be a pod's host side: a veth
    /// or netkit device holding no subnet address. A node whose uplink is
    /// a veth (kind, k3d, the lab's underlay) has a subnet address there.
    pub fn is_pod_device(&self, ifindex: u32, ifname: &str) -> bool {
        !self.subnet_devs.contains(ifname) && is_pod_kind(ifindex, ifname)
    }
}

/// Whether `ifname` (index `ifindex`) is a veth or netkit device, the kinds
/// a pod's host side has. The answer is cached per index and name: an
/// interface does not change kind, and this runs every round.
pub fn is_pod_kind(ifindex: u32, ifname: &str) -> bool {
    // Unknown now (the device may be going away): not a pod's.
    kind_of(ifindex, ifname).is_some_and(|k| matches!(k.as_str(), "veth" | "netkit"))
}

/// The link kind of `ifname` (index `ifindex`), cached per index and name:
/// an interface does not change kind, and rounds ask every time. `None`
/// when unreadable (not remembered: a later round asks again).
pub fn kind_of(ifindex: u32, ifname: &str) -> Option<String> {
    static KINDS: std::sync::Mutex<BTreeMap<(u32, String), String>> =
        std::sync::Mutex::new(BTreeMap::new());
    let key = (ifindex, ifname.to_string());
    if let Some(v) = KINDS.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Some(v.clone());
    }
    let kind = link_kind(ifname)?;
    KINDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, kind.clone());
    Some(kind)
}

/// Kinds whose driver has the kind's name: asked of ethtool, a new pod
/// interface costs no subprocess.
const DRIVER_KINDS: [&str; 4] = ["veth", "netkit", "vxlan", "geneve"];

/// The link kind (`veth`, `bridge`, `vxlan`, ...; empty for a physical
/// device) of `ifname`: its driver when that names one of
/// [`DRIVER_KINDS`], else from `ip -j -d link show`; `None` when
/// unreadable.
fn link_kind(ifname: &str) -> Option<String> {
    if let Some(d) = super::sys::driver(ifname).filter(|d| DRIVER_KINDS.contains(&d.as_str())) {
        return Some(d);
    }
    let out = super::command::output(
        Command::new("ip").args(["-j", "-d", "link", "show", "dev", ifname]),
    )
    .map_err(|e| tracing::warn!(error = %format!("{e:#}"), "cannot read a link's kind"))
    .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_link_kind(&out.stdout)
}

fn parse_link_kind(json: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let link = v.as_array()?.first()?;
    Some(
        link.get("linkinfo")
            .and_then(|i| i.get("info_kind"))
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string(),
    )
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
        let got = host_routes_of(&route_entries(V4.as_bytes()).unwrap());
        assert_eq!(
            got,
            vec![
                ("10.0.0.5".parse().unwrap(), "veth1".to_string()),
                ("10.0.0.6".parse().unwrap(), "veth2".to_string())
            ]
        );
    }

    #[test]
    fn devices_routing_to_a_gateway() {
        let got = gateway_devs(&route_entries(V4.as_bytes()).unwrap());
        assert_eq!(got.into_iter().collect::<Vec<_>>(), ["eth0"]);
        assert!(gateway_devs(&route_entries(b"").unwrap()).is_empty());
    }

    #[test]
    fn ipv6_host_routes_and_empty_output() {
        let got = host_routes_of(
            &route_entries(
                br#"[{"dst":"fd00::5","dev":"veth1","metric":1024,"flags":[],"pref":"medium"},
            {"dst":"fd00::/64","dev":"eth0","flags":[]}]"#,
            )
            .unwrap(),
        );
        assert_eq!(got, vec![("fd00::5".parse().unwrap(), "veth1".to_string())]);
        assert!(route_entries(b"\n").unwrap().is_empty());
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
        let any = |_: u32, _: &str| true;
        let pods = [("ns/a", a.as_slice()), ("ns/b", b.as_slice())];
        let none = BTreeSet::new();
        let got = match_all(&routes, &[], pods, &none, &any);
        assert_eq!(got.pods, [("ns/a".to_string(), 5)].into_iter().collect());
        assert_eq!(
            got.unknown,
            [(6, "veth2".to_string())].into_iter().collect()
        );
        // A device that is not a pod's is never claimed, even pending.
        let only_veth1 = |i: u32, _: &str| i == 5;
        let got = match_all(&routes, &[], pods, &none, &only_veth1);
        assert_eq!(got.pods, [("ns/a".to_string(), 5)].into_iter().collect());
        assert!(got.unknown.is_empty(), "{:?}", got.unknown);
        // A route to a pod of another node is not this node's pod.
        let far: BTreeSet<IpAddr> = ["10.0.0.6".parse().unwrap()].into_iter().collect();
        let got = match_all(&routes, &[], pods, &far, &any);
        assert_eq!(got.pods, [("ns/a".to_string(), 5)].into_iter().collect());
        assert!(got.unknown.is_empty(), "{:?}", got.unknown);
    }

    #[test]
    fn link_kinds_from_ip_link() {
        let veth = br#"[{"ifindex":5,"ifname":"veth1","linkinfo":{"info_kind":"veth"}}]"#;
        assert_eq!(parse_link_kind(veth).as_deref(), Some("veth"));
        let nic = br#"[{"ifindex":2,"ifname":"ens4","link_type":"ether"}]"#;
        assert_eq!(parse_link_kind(nic).as_deref(), Some(""));
        assert_eq!(parse_link_kind(b"[]"), None);
        // This namespace's loopback is no pod device.
        assert!(!is_pod_kind(1, "lo"));
    }

    /// In a network namespace of its own (removed before any assertion).
    #[test]
    fn drivers_name_the_kinds_of_pod_devices() {
        let ns = format!("palisade-drv-{}", std::process::id());
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap()
        };
        assert!(ip(&["netns", "add", &ns]).status.success());
        let made = ip(&[
            "-n", &ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
        ]);
        let bridge = ip(&["-n", &ns, "link", "add", "b0", "type", "bridge"]);
        let path = format!("/run/netns/{ns}");
        let seen = std::thread::spawn(move || {
            let f = std::fs::File::open(path).unwrap();
            // SAFETY: setns of this thread only, with a valid netns fd.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0);
            (
                super::super::sys::driver("v0"),
                super::super::sys::driver("b0"),
                link_kind("v0"),
            )
        })
        .join();
        ip(&["netns", "del", &ns]);
        assert!(made.status.success() && bridge.status.success());
        let (veth, bridge, kind) = seen.unwrap();
        assert_eq!(veth.as_deref(), Some("veth"));
        assert_eq!(bridge.as_deref(), Some("bridge"));
        assert_eq!(kind.as_deref(), Some("veth"));
    }
}
