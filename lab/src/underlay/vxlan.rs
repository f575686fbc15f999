//! The VXLAN overlay of a cluster lab, programmed on each node the way
//! flannel's vxlan backend programs it: no learning, no multicast, every
//! peer written in statically.
//!
//! On node `k`, per family it has a subnet of (see `overlay::vteps`):
//!
//! ```text
//! ip link add flannel.1 address <mac> mtu 1500 type vxlan id 1 local <underlay IPv4> dev underlay0 dstport 8472 nolearning
//! ip addr add 10.244.1.0/32 dev flannel.1
//! # for every other node j:
//! ip neigh replace <j's flannel.1 addr> lladdr <j's MAC> dev flannel.1 nud permanent
//! bridge fdb replace <j's MAC> dev flannel.1 dst <j's underlay IPv4> self permanent
//! ip route replace <j's subnet> via <j's flannel.1 addr> dev flannel.1 onlink
//! ```
//!
//! and the same over IPv6 with `flannel-v6.1`. The route goes in last, as
//! flannel adds it last: with the neighbour and FDB entries in place the
//! kernel never has to resolve anything. The address is a /32 (/128) so no
//! subnet or broadcast route appears for it; it is the node's source for
//! traffic it sends to remote pods itself.
//!
//! MTU: flannel gives pods the VXLAN device's MTU (the uplink's minus
//! 50). The lab's pods keep 1500 (the plugins' default), so the underlay
//! is made larger instead (`UNDERLAY_MTU`) and both devices are set to
//! 1500: as with flannel, no pod packet is ever too big for the tunnel.

use super::overlay::{Vtep, VXLAN_PORT, VXLAN_VNI};
use super::UNDERLAY;
use crate::cmd::ip_batch;
use anyhow::{bail, Context, Result};
use palisade_policy::Family;
use std::io::Write;
use std::process::{Command, Stdio};

/// The underlay's MTU with VXLAN: 1500-byte pod packets plus the largest
/// encapsulation (IPv6 outer header: 40 + 8 UDP + 8 VXLAN + 14 Ethernet).
pub const UNDERLAY_MTU: u32 = 1570;
/// The VXLAN devices' MTU: the pods'.
pub const VXLAN_MTU: u32 = 1500;

/// Creates node `k`'s devices and its entries for every other node;
/// `vteps[j]` are node `j`'s endpoints.
pub fn wire(netns: &str, node: &str, k: usize, vteps: &[Vec<Vtep>]) -> Result<()> {
    let mine = &vteps[k];
    let mut devices = Vec::new();
    for v in mine {
        let dev = v.device;
        devices.extend([
            format!(
                "link add {dev} address {} mtu {VXLAN_MTU} type vxlan id {VXLAN_VNI} local {} \
                 dev {UNDERLAY} dstport {VXLAN_PORT} nolearning",
                v.mac_string(),
                v.underlay,
            ),
            address(v),
            format!("link set {dev} up"),
        ]);
    }
    let mut neighbours = Vec::new();
    let mut fdb = Vec::new();
    let mut routes = Vec::new();
    let peers = vteps
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != k)
        .flat_map(|(_, theirs)| theirs);
    for t in peers {
        // A peer is reachable in a family only if this node has a
        // device of it too.
        let Some(v) = mine.iter().find(|v| v.family() == t.family()) else {
            continue;
        };
        let dev = v.device;
        let mac = t.mac_string();
        neighbours.push(format!(
            "neigh replace {} lladdr {mac} dev {dev} nud permanent",
            t.addr
        ));
        fdb.push(format!(
            "fdb replace {mac} dev {dev} dst {} self permanent",
            t.underlay
        ));
        routes.push(format!(
            "route replace {} via {} dev {dev} onlink",
            t.subnet, t.addr
        ));
    }
    let what = |s: &str| format!("node {node}: vxlan {s}");
    ip_batch(Some(netns), &devices, false).with_context(|| what("devices"))?;
    ip_batch(Some(netns), &neighbours, false).with_context(|| what("neighbours"))?;
    bridge_batch(netns, &fdb).with_context(|| what("forwarding entries"))?;
    ip_batch(Some(netns), &routes, false).with_context(|| what("routes"))
}

/// The device's own address as a host prefix (`nodad` is IPv6 only).
fn address(v: &Vtep) -> String {
    match v.family() {
        Family::V4 => format!("addr add {}/32 dev {}", v.addr, v.device),
        Family::V6 => format!("addr add {}/128 dev {} nodad", v.addr, v.device),
    }
}

/// Runs `lines` as one `bridge -batch -` in `netns` (FDB entries are not
/// `ip`'s to write).
fn bridge_batch(netns: &str, lines: &[String]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut child = Command::new("bridge")
        .args(["-n", netns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running `bridge -batch` (is iproute2 installed?)")?;
    let script = lines.join("\n") + "\n";
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())
        .context("feeding `bridge -batch`")?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`bridge -batch` in netns {netns} failed ({}): {}\nscript:\n{script}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
