//! Cost of the classifiers per packet, through BPF_PROG_TEST_RUN with
//! `repeat`, plus the program sizes the verifier accepted. Run as root:
//! `cargo run --release -p palisade-tests --example classifier_bench`.
//!
//! The kernel's figure includes BPF_PROG_TEST_RUN's own per-run overhead;
//! the ARP row (the classifier returns after reading one field) is the floor
//! to subtract. Numbers vary by machine: this prints, it never judges.

use std::net::IpAddr;

use anyhow::{ensure, Result};
use palisade_common::*;
use palisade_tests::classifier::{
    bits, class, ip_key, packet::arp, packet::Packet, Classifier, DirMaps, Hook, IFINDEX, TCX_DROP,
    TCX_PASS,
};

const REPEAT: u32 = 200_000;
const ROUNDS: usize = 5;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn main() -> Result<()> {
    let mut c = Classifier::load()?;
    for hook in [Hook::Ingress, Hook::Egress] {
        let info = c.program(hook).info()?;
        println!(
            "{:12} xlated {:>6} bytes ({} insns), jited {:>6} bytes, verified insns {:?}",
            hook.program(),
            info.size_translated().unwrap_or(0),
            info.size_translated().unwrap_or(0) / 8,
            info.size_jitted(),
            info.verified_instruction_count(),
        );
    }

    let (pod, peer, other) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
    let mut ep = Endpoint {
        flags: EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS,
        ..Default::default()
    };
    ep.addrs[0] = ip_key(pod);
    ep.egress.any_port = 1;
    ep.ingress.any_port_class = 9;
    c.set_endpoint(IFINDEX, &ep)?;
    c.set_identity(peer, 32, 300)?;
    c.set_identity(other, 32, 301)?;
    c.set_policy(
        PolicyKey {
            ifindex: IFINDEX,
            generation: 0,
            direction: DIR_EGRESS,
        },
        &DirMaps {
            identity: vec![(300, bits(1))],
            ..Default::default()
        },
    )?;
    // Ingress: only spilled groups, so a denial walks every lookup.
    c.set_policy(
        PolicyKey {
            ifindex: IFINDEX,
            generation: 0,
            direction: DIR_INGRESS,
        },
        &DirMaps {
            identity: vec![(300, bits(0))],
            cidr: vec![(ip("10.0.0.0"), 8, class(0, 4))],
            port: vec![(PROTO_TCP, 80, 16, class(0, 5))],
            spill: vec![SpillKey {
                kind: SPILL_IDENTITY,
                peer: 999,
                port_class: 5,
            }],
        },
    )?;

    let established = Packet::tcp(pod, peer, 40000, 443).build();
    ensure!(
        c.run(Hook::Egress, &established)? == TCX_PASS,
        "egress to peer must pass"
    );
    let cases: Vec<(&str, Hook, Vec<u8>, u32)> = vec![
        ("ARP (floor)", Hook::Ingress, arp(), TCX_PASS),
        (
            "established TCP (conntrack hit)",
            Hook::Egress,
            established,
            TCX_PASS,
        ),
        (
            "reply TCP (reversed conntrack hit)",
            Hook::Ingress,
            Packet::tcp(peer, pod, 443, 40000).build(),
            TCX_PASS,
        ),
        (
            "new flow, bits path, denied",
            Hook::Egress,
            Packet::tcp(pod, other, 40001, 443).build(),
            TCX_DROP,
        ),
        (
            "new flow, full spill path, denied",
            Hook::Ingress,
            Packet::tcp(other, pod, 40002, 80).build(),
            TCX_DROP,
        ),
    ];
    let mut best = vec![u128::MAX; cases.len()];
    for round in 0..ROUNDS {
        // Reverse the order every other round so drift hits all cases alike.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..cases.len()).collect()
        } else {
            (0..cases.len()).rev().collect()
        };
        for i in order {
            let (_, hook, frame, want) = &cases[i];
            let (v, ns) = c.run_repeat(*hook, frame, REPEAT)?;
            ensure!(v == *want, "{}: verdict {v}, expected {want}", cases[i].0);
            best[i] = best[i].min(ns);
        }
    }
    println!("ns per packet (best of {ROUNDS} x {REPEAT} runs):");
    for (i, (name, ..)) in cases.iter().enumerate() {
        println!(
            "  {name:40} {:>5}  (floor subtracted: {})",
            best[i],
            best[i] - best[0]
        );
    }
    Ok(())
}
