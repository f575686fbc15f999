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
use std::process::Command;

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

/// The devices of `ip -j route show default` output.
pub fn parse_default_devs(json: &[u8]) -> Result<BTreeSet<String>> {
    Ok(super::iface::route_entries(json)?
        .iter()
        .filter_map(|r| r.get("dev")?.as_str().map(str::to_string))
        .collect())
}

/// The interface indexes `spec` names now.
pub fn resolve(spec: &UplinkSpec) -> Result<BTreeSet<u32>> {
    let names: BTreeSet<String> = match spec {
        UplinkSpec::Off => return Ok(BTreeSet::new()),
        UplinkSpec::Names(n) => n.iter().cloned().collect(),
        UplinkSpec::Auto => {
            let mut devs = BTreeSet::new();
            for family in ["-4", "-6"] {
                let out = super::command::output(
                    Command::new("ip").args(["-j", family, "route", "show", "default"]),
                )?;
                if !out.status.success() {
                    bail!(
                        "`ip -j {family} route show default` failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                devs.extend(parse_default_devs(&out.stdout)?);
            }
            devs.extend(overlay_devs()?);
            devs
        }
    };
    Ok(names.iter().filter_map(|n| sys::ifindex(n)).collect())
}

/// Kinds of overlay devices whose TC egress sees the inner Ethernet frame.
/// IPIP and WireGuard devices are L3 (no Ethernet header), which
/// `node_egress` does not parse: `docs/ebpf.md` says what that leaves.
const OVERLAY_KINDS: [&str; 2] = ["vxlan", "geneve"];

/// The overlay devices of this network namespace.
fn overlay_devs() -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for kind in OVERLAY_KINDS {
        let o =
            super::command::output(Command::new("ip").args(["-j", "link", "show", "type", kind]))?;
        if !o.status.success() {
            bail!(
                "`ip -j link show type {kind}` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        out.extend(parse_link_names(&o.stdout)?);
    }
    Ok(out)
}

/// The `ifname`s of `ip -j link show` output.
pub fn parse_link_names(json: &[u8]) -> Result<BTreeSet<String>> {
    if json.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(BTreeSet::new());
    }
    let links: Vec<serde_json::Value> =
        serde_json::from_slice(json).context("parse `ip -j link show` output")?;
    Ok(links
        .iter()
        .filter_map(|l| l.get("ifname")?.as_str().map(str::to_string))
        .collect())
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

    #[test]
    fn default_route_devices() {
        let json = br#"[{"dst":"default","gateway":"10.0.0.1","dev":"eth0","flags":[]},
                        {"dst":"default","gateway":"10.0.1.1","dev":"eth1","metric":200}]"#;
        let devs = parse_default_devs(json).unwrap();
        assert_eq!(devs.into_iter().collect::<Vec<_>>(), ["eth0", "eth1"]);
        assert!(parse_default_devs(b"\n").unwrap().is_empty());
    }

    #[test]
    fn link_names() {
        let json = br#"[{"ifindex":7,"ifname":"flannel.1","flags":["UP"]},
                        {"ifindex":9,"ifname":"vxlan.calico"}]"#;
        let names = parse_link_names(json).unwrap();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["flannel.1", "vxlan.calico"]
        );
        assert!(parse_link_names(b"").unwrap().is_empty());
    }
}
