//! The classifiers' place in an interface's TCX chain, on a real veth:
//! attached first, whatever was there before, so nothing can pass a packet
//! around them; an allowed packet goes on (`TCX_NEXT`) to the programs
//! after them, a dropped one ends there.

use std::net::IpAddr;

use anyhow::{ensure, Result};
use aya::programs::{SchedClassifier, TcAttachType};
use aya::sys::{enable_stats, Stats};
use palisade_common::*;
use palisade_tests::classifier::{
    ip_key,
    netns::{in_private_netns, link_up, try_send_frame, veth},
    packet::Packet,
    Classifier, Hook, NOOP,
};

const POD4: &str = "10.0.0.1";
const PEER4: &str = "10.0.0.2";
const FRAMES: u64 = 40;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The names of the programs on `iface`'s TCX chain at `at`, in order.
fn chain(iface: &str, at: TcAttachType) -> Result<Vec<String>> {
    let (_, progs) = SchedClassifier::query_tcx(iface, at)?;
    Ok(progs
        .iter()
        .map(|p| p.name_as_str().unwrap_or("?").to_string())
        .collect())
}

/// How often the program `id` on `iface` ran (statistics must be on).
fn runs(iface: &str, at: TcAttachType, id: u32) -> Result<u64> {
    let (_, progs) = SchedClassifier::query_tcx(iface, at)?;
    let p = progs.iter().find(|p| p.id() == id);
    Ok(p.map_or(0, |p| p.run_count()))
}

/// Sends `frame` FRAMES times out of `ifindex`; returns how many left.
fn send(ifindex: u32, frame: &[u8]) -> Result<u64> {
    let mut sent = 0;
    for _ in 0..FRAMES {
        sent += u64::from(try_send_frame(ifindex, frame)?);
    }
    Ok(sent)
}

#[test]
fn classifiers_go_first_and_hand_allowed_packets_on() -> Result<()> {
    in_private_netns(|| {
        let (host, _) = veth("pl-chain-host", "pl-chain-pod")?;
        link_up("pl-chain-host")?;
        link_up("pl-chain-pod")?;
        let mut c = Classifier::load()?;
        // Another agent's program, attached before Palisade's.
        let other = c.attach_noop(TcAttachType::Egress, "pl-chain-host")?;
        let mut ep = Endpoint {
            flags: EP_ISOLATED_INGRESS,
            ..Default::default()
        };
        ep.addrs[0] = ip_key(ip(POD4));
        c.set_endpoint(host, &ep)?;
        c.attach(Hook::Ingress, "pl-chain-host")?;
        let order = chain("pl-chain-host", TcAttachType::Egress)?;
        ensure!(
            order == [Hook::Ingress.program(), NOOP],
            "chain order {order:?}"
        );

        let _stats = enable_stats(Stats::RunTime)?;
        // Nothing allows PEER4 in: dropped at Palisade, unseen after it.
        let denied = Packet::udp(ip(PEER4), ip(POD4), 4000, 53).build();
        let before = runs("pl-chain-host", TcAttachType::Egress, other)?;
        ensure!(send(host, &denied)? == 0, "a denied frame left");
        let after = runs("pl-chain-host", TcAttachType::Egress, other)?;
        ensure!(
            after - before < FRAMES,
            "the program after Palisade ran {} times for {FRAMES} dropped frames",
            after - before
        );
        // Not IP (ARP) is allowed: every frame reaches the next program.
        let allowed = palisade_tests::classifier::packet::arp();
        let before = runs("pl-chain-host", TcAttachType::Egress, other)?;
        ensure!(send(host, &allowed)? == FRAMES, "an allowed frame dropped");
        let after = runs("pl-chain-host", TcAttachType::Egress, other)?;
        ensure!(
            after - before >= FRAMES,
            "the program after Palisade ran {} times for {FRAMES} allowed frames",
            after - before
        );
        Ok(())
    })
}
