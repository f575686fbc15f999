//! Finding pod interfaces, from two sources:
//!
//! - attachment records of the chained CNI plugin (`palisade-cni`), which
//!   name the pod, its host-side interface and its addresses: the only
//!   source on bridge CNIs (flannel, the `bridge` plugin, kubenet), where
//!   pods have no host route;
//! - host routes: a local pod's host-side interface is the device of the
//!   host route (/32 or /128, no gateway) to the pod's address in the main
//!   table of the agent's network namespace. Point-to-point CNIs and Calico
//!   install exactly such routes. Every round reads them with a netlink
//!   dump (`route_dump.rs`): two `ip -j route` processes per round were
//!   most of the time from a new pod's route to its classifiers.
//!
//! A route's device is taken only when it is a veth or netkit device: an
//! uplink with a gateway-less host route (GCE's `10.128.0.1 dev ens4`), a
//! bridge, a tunnel or a dummy device is never a pod's, and holding it
//! pending would cut the node off.

use anyhow::Result;
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

/// The main table's gateway-less unicast host routes and its default
/// route devices, read over netlink (`route_dump.rs`).
pub fn routes() -> Result<Routes> {
    let mut out = Routes::default();
    for family in [libc::AF_INET, libc::AF_INET6] {
        let table = super::route_dump::main_table(family as u8)?;
        // A device that routes to a gateway (or is a default route's) is
        // an uplink or a tunnel: its gateway-less host routes (GCE's
        // `10.128.0.1 dev ens4`) lead to routers, never to pods.
        let gateways: BTreeSet<u32> = table
            .iter()
            .filter(|r| r.gateway || r.dst.is_none())
            .filter_map(|r| r.oif)
            .collect();
        let defaults = table.iter().filter(|r| r.dst.is_none());
        out.default_devs
            .extend(defaults.filter_map(|r| super::sys::ifname(r.oif?)));
        for r in &table {
            let (Some(ip), Some(ifindex)) = (r.host(), r.oif) else {
                continue;
            };
            if gateways.contains(&ifindex) {
                continue;
            }
            // An interface gone since the dump is simply not there yet on
            // the next look.
            let Some(ifname) = super::sys::ifname(ifindex) else {
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

    /// Runs `setup` (ip commands, `-n` added) in a network namespace of
    /// its own, then `f` on a thread inside it; the namespace is removed
    /// before the result is looked at.
    fn in_netns<R: Send + 'static>(
        tag: &str,
        setup: &[&str],
        f: impl FnOnce() -> R + Send + 'static,
    ) -> R {
        let ns = format!("palisade-{tag}-{}", std::process::id());
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap()
        };
        assert!(ip(&["netns", "add", &ns]).status.success());
        let failed: Vec<String> = setup
            .iter()
            .filter_map(|line| {
                let mut args = vec!["-n", ns.as_str()];
                args.extend(line.split_whitespace());
                let out = ip(&args);
                (!out.status.success()).then(|| format!("{line}: {out:?}"))
            })
            .collect();
        let path = format!("/run/netns/{ns}");
        let got = std::thread::spawn(move || {
            let f_ns = std::fs::File::open(path).unwrap();
            // SAFETY: setns of this thread only, with a valid netns fd.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f_ns), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0);
            f()
        })
        .join();
        ip(&["netns", "del", &ns]);
        assert!(failed.is_empty(), "{failed:?}");
        got.unwrap()
    }

    #[test]
    fn only_gatewayless_host_routes_of_pod_devices_count() {
        let setup = [
            "link add e0 type veth peer name e0p",
            "link add v1 type veth peer name v1p",
            "link add v2 type veth peer name v2p",
            "link set e0 up",
            "link set v1 up",
            "link set v2 up",
            "addr add 10.0.0.1/24 dev e0",
            "-6 addr add fd00::1/64 dev e0 nodad",
            "route add default via 10.0.0.254 dev e0",
            "route add 10.0.0.5/32 dev v1",
            "route add 10.0.0.6/32 dev v2",
            // Through a gateway, or gateway-less on the uplink: routers.
            "route add 10.0.0.7/32 via 10.0.0.254 dev e0",
            "route add 10.0.0.8/32 dev e0",
            "route add blackhole 10.0.0.9/32",
            // Not a host route.
            "route add 10.1.0.0/24 dev v2",
            "-6 route add fd00:1::5/128 dev v1",
        ];
        let got = in_netns("routes", &setup, routes).unwrap();
        let hosts: Vec<(String, &str)> = got
            .hosts
            .values()
            .map(|r| (r.ip.to_string(), r.ifname.as_str()))
            .collect();
        assert_eq!(
            hosts,
            [
                ("10.0.0.5".to_string(), "v1"),
                ("10.0.0.6".to_string(), "v2"),
                ("fd00:1::5".to_string(), "v1")
            ]
        );
        assert_eq!(got.default_devs.into_iter().collect::<Vec<_>>(), ["e0"]);
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

    #[test]
    fn drivers_name_the_kinds_of_pod_devices() {
        let setup = [
            "link add v0 type veth peer name v1",
            "link add b0 type bridge",
        ];
        let (veth, bridge, kind) = in_netns("drv", &setup, || {
            (
                super::super::sys::driver("v0"),
                super::super::sys::driver("b0"),
                link_kind("v0"),
            )
        });
        assert_eq!(veth.as_deref(), Some("veth"));
        assert_eq!(bridge.as_deref(), Some("bridge"));
        assert_eq!(kind.as_deref(), Some("veth"));
    }
}
