//! The node's uplinks: `node_egress` on TC egress of each device that
//! carries pod traffic to other nodes, where a client's egress to a Service
//! whose backend is elsewhere is decided after DNAT (`docs/ebpf.md`,
//! "Services"). Links are pinned at `uplinks/<ifindex>-node_egress` and
//! re-adopted on restart like the pod links (`attach.rs`).

use super::attach::{attach_first, program, remove_pin, replace_program};
use super::load::PinLayout;
use super::sys;
use anyhow::{bail, Context, Result};
use aya::programs::links::FdLink;
use aya::programs::TcAttachType;
use aya::Ebpf;
use palisade_common::names;
use std::collections::BTreeSet;

/// Which devices are uplinks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UplinkSpec {
    /// The devices of the default routes (IPv4 and IPv6), and every L2
    /// overlay device (VXLAN, Geneve: flannel's `flannel.1`, Calico's
    /// `vxlan.calico`, Cilium's `cilium_vxlan`): a pod's packet to a
    /// backend on another node crosses such a device before it is
    /// encapsulated, so the inner header is still there to decide on.
    Auto,
    /// These devices (those that exist).
    Names(Vec<String>),
    /// None: cross-node Service traffic is then not checked after DNAT.
    Off,
}

impl std::str::FromStr for UplinkSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => UplinkSpec::Auto,
            "none" => UplinkSpec::Off,
            list => {
                let names: Vec<String> = list.split(',').map(|n| n.trim().to_string()).collect();
                if names.iter().any(|n| n.is_empty() || n.len() > 15) {
                    bail!("--uplink {list:?}: expected auto, none or a comma-separated list of interface names");
                }
                UplinkSpec::Names(names)
            }
        })
    }
}

/// The interface indexes `spec` names now. `default_devs`: the devices
/// of the default routes when the caller has just read the routing table
/// (else read here).
pub fn resolve(
    spec: &UplinkSpec,
    default_devs: Option<&BTreeSet<String>>,
) -> Result<BTreeSet<u32>> {
    let names: BTreeSet<String> = match spec {
        UplinkSpec::Off => return Ok(BTreeSet::new()),
        UplinkSpec::Names(n) => n.iter().cloned().collect(),
        UplinkSpec::Auto => {
            let mut devs = match default_devs {
                Some(d) => d.clone(),
                None => super::iface::routes()?.default_devs,
            };
            devs.extend(overlay_devs());
            devs
        }
    };
    Ok(names.iter().filter_map(|n| sys::ifindex(n)).collect())
}

/// Kinds of overlay devices whose TC egress sees the inner Ethernet frame.
/// IPIP and WireGuard devices are L3 (no Ethernet header), which
/// `node_egress` does not parse: `docs/ebpf.md` says what that leaves.
const OVERLAY_KINDS: [&str; 2] = ["vxlan", "geneve"];

/// The overlay devices of this network namespace (kinds cached per
/// interface: a round asks without running a command).
fn overlay_devs() -> BTreeSet<String> {
    sys::interfaces()
        .into_iter()
        .filter(|(i, name)| {
            super::iface::kind_of(*i, name).is_some_and(|k| OVERLAY_KINDS.contains(&k.as_str()))
        })
        .map(|(_, name)| name)
        .collect()
}

fn pinned(layout: &PinLayout) -> Result<BTreeSet<u32>> {
    let dir = layout.uplinks_dir();
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let ifindex = name
            .strip_suffix(&format!("-{}", names::PROG_NODE_EGRESS))
            .and_then(|i| i.parse().ok());
        match ifindex {
            Some(i) => {
                out.insert(i);
            }
            None => remove_pin(&dir.join(&name)),
        }
    }
    Ok(out)
}

/// Re-adopts pinned uplink links (switched to the loaded program); those
/// of vanished devices are unpinned. Returns the live ones.
pub fn adopt(ebpf: &mut Ebpf, layout: &PinLayout) -> Result<BTreeSet<u32>> {
    let mut live = BTreeSet::new();
    for ifindex in pinned(layout)? {
        let path = layout.uplink(ifindex);
        match sys::tcx_link_info(&path) {
            Ok(info) if info.ifindex == ifindex => {
                replace_program(ebpf, names::PROG_NODE_EGRESS, &path)?;
                live.insert(ifindex);
            }
            Ok(_) => remove_pin(&path),
            Err(e) => {
                tracing::warn!(pin = %path.display(), error = %format!("{e:#}"), "unreadable uplink pin")
            }
        }
    }
    Ok(live)
}

/// Attaches `node_egress` to TC egress of `ifindex`.
pub fn attach(ebpf: &mut Ebpf, layout: &PinLayout, ifindex: u32) -> Result<()> {
    let path = layout.uplink(ifindex);
    remove_pin(&path);
    let ifname =
        sys::ifname(ifindex).with_context(|| format!("interface {ifindex} does not exist"))?;
    let p = program(ebpf, names::PROG_NODE_EGRESS)?;
    let id = attach_first(p, &ifname, TcAttachType::Egress)
        .with_context(|| format!("attach {} to {ifname}", names::PROG_NODE_EGRESS))?;
    let link = FdLink::try_from(p.take_link(id)?)
        .map_err(|_| anyhow::anyhow!("attaching to {ifname} did not create a TCX link"))?;
    link.pin(&path)
        .with_context(|| format!("pin link {}", path.display()))?;
    tracing::info!(ifname, ifindex, "uplink attached");
    Ok(())
}

/// Detaches `node_egress` from `ifindex`.
pub fn detach(layout: &PinLayout, ifindex: u32) {
    remove_pin(&layout.uplink(ifindex));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!("auto".parse::<UplinkSpec>().unwrap(), UplinkSpec::Auto);
        assert_eq!("none".parse::<UplinkSpec>().unwrap(), UplinkSpec::Off);
        assert_eq!(
            "eth0, ens5".parse::<UplinkSpec>().unwrap(),
            UplinkSpec::Names(vec!["eth0".into(), "ens5".into()])
        );
        assert!("eth0,,x".parse::<UplinkSpec>().is_err());
        assert!("a-name-much-longer-than-ifnamsiz"
            .parse::<UplinkSpec>()
            .is_err());
    }
}
