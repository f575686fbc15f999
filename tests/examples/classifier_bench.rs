//! Cost of the classifiers per packet, through BPF_PROG_TEST_RUN with
//! `repeat`, plus the program sizes the verifier accepted. Run as root:
//! `cargo run --release -p palisade-tests --example classifier_bench`;
//! with `PALISADE_EBPF_BASELINE=<object>` an older build of the object is
//! measured in the same rounds and the ratios printed.
//!
//! The flood section measures denied packets with deny events on (the
//! agent's default) against a harness with events switched off, in the
//! same rounds: under a flood almost every event is rate-limited and
//! counted as lost, and that path must stay cheap.
//!
//! The kernel's figure includes BPF_PROG_TEST_RUN's own per-run overhead:
//! the object's `noop` classifier, measured the same way in the same rounds,
//! is the floor to subtract. Numbers vary by machine: this prints, it never
//! judges.

use std::net::IpAddr;

use anyhow::{ensure, Result};
use aya::VerifierLogLevel;
use palisade_common::*;
use palisade_tests::classifier::bench::{measure, Case};
use palisade_tests::classifier::{
    allow_as_next, bits, class, ip_key, packet::arp, packet::Packet, Classifier, DirMaps, Hook,
    IFINDEX, TCX_DROP, TCX_NEXT,
};

const REPEAT: u32 = 200_000;
const ROUNDS: usize = 5;
/// The host interface of the local client pod (`other`).
const CLIENT_IFINDEX: u32 = IFINDEX + 1;
const POD4: &str = "10.0.0.1";
const PEER4: &str = "10.0.0.2";
const POD6: &str = "fd00::1";
const PEER6: &str = "fd00::2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Programs the same endpoint, identities and policy into a harness.
fn program(c: &mut Classifier) -> Result<()> {
    let (pod, peer, other) = (ip(POD4), ip(PEER4), ip("10.0.0.3"));
    let mut ep = Endpoint {
        flags: EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS,
        ..Default::default()
    };
    ep.addrs[0] = ip_key(pod);
    ep.addrs[1] = ip_key(ip(POD6));
    ep.egress.any_port = 1;
    ep.ingress.any_port_class = 9;
    c.set_endpoint(IFINDEX, &ep)?;
    // As the agent does: the pod's flows in a table of its own (objects
    // before per-pod tables have none and use the node-wide one).
    if c.has_map(names::CONNTRACK_POD) {
        c.own_conntrack(u32::from(ep.slot), CONNTRACK_POD_DEFAULT)?;
    }
    // A pod of this node (`other`) whose egress is not isolated: the
    // server's ingress hook finds it as a new flow's sender
    // (`deferred::client`) and leaves its egress undecided.
    let mut client = Endpoint {
        slot: 1,
        ..Default::default()
    };
    client.addrs[0] = ip_key(other);
    c.set_endpoint(CLIENT_IFINDEX, &client)?;
    c.set_identity(peer, 32, 300)?;
    c.set_identity(ip(PEER6), 128, 300)?;
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
            spill_values: vec![],
        },
    )?;
    // The flows the established cases replay.
    for (src, dst) in [(POD4, PEER4), (POD6, PEER6)] {
        let open = Packet::tcp(ip(src), ip(dst), 40000, 443).build();
        ensure!(
            allow_as_next(c.run(Hook::Egress, &open)?) == TCX_NEXT,
            "egress to peer must pass"
        );
    }
    Ok(())
}

fn sizes(c: &Classifier, label: &str) -> Result<()> {
    for hook in [Hook::Ingress, Hook::Egress] {
        let info = c.program(hook).info()?;
        println!(
            "{label:9} {:12} xlated {:>6} bytes ({} insns), jited {:>6} bytes, verified insns {:?}",
            hook.program(),
            info.size_translated().unwrap_or(0),
            info.size_translated().unwrap_or(0) / 8,
            info.size_jitted(),
            info.verified_instruction_count(),
        );
    }
    Ok(())
}

fn cases() -> Vec<Case> {
    let (pod, peer, other) = (ip(POD4), ip(PEER4), ip("10.0.0.3"));
    let case = |name, hook, frame, want| Case {
        name,
        hook,
        frame,
        want,
        forwarded_from: 0,
    };
    let established = Packet::tcp(pod, peer, 40000, 443).build();
    vec![
        case(
            "no-op classifier (floor)",
            None,
            established.clone(),
            TCX_NEXT,
        ),
        case("ARP", Some(Hook::Ingress), arp(), TCX_NEXT),
        case(
            "established TCP (conntrack hit)",
            Some(Hook::Egress),
            established,
            TCX_NEXT,
        ),
        case(
            "reply TCP (conntrack hit)",
            Some(Hook::Ingress),
            Packet::tcp(peer, pod, 443, 40000).build(),
            TCX_NEXT,
        ),
        case(
            "established TCP over IPv6",
            Some(Hook::Egress),
            Packet::tcp(ip(POD6), ip(PEER6), 40000, 443).build(),
            TCX_NEXT,
        ),
        case(
            "new flow, bits path, denied",
            Some(Hook::Egress),
            Packet::tcp(pod, other, 40001, 443).build(),
            TCX_DROP,
        ),
        case(
            "new flow, full spill path, denied",
            Some(Hook::Ingress),
            Packet::tcp(other, pod, 40002, 80).build(),
            TCX_DROP,
        ),
        Case {
            forwarded_from: CLIENT_IFINDEX,
            ..case(
                "same, from a pod of this node",
                Some(Hook::Ingress),
                Packet::tcp(other, pod, 40002, 80).build(),
                TCX_DROP,
            )
        },
    ]
}

/// Denied packets with deny events on (`loud`) and off (`quiet`), best of
/// `ROUNDS` interleaved; prints the ratio and what became of the events.
fn flood(loud: &mut Classifier, quiet: &Classifier, cases: &[Case]) -> Result<()> {
    let denied: Vec<&Case> = cases.iter().filter(|c| c.want == TCX_DROP).collect();
    let lost_before =
        loud.events_lost(EVENTS_LOST_SAMPLED)? + loud.events_lost(EVENTS_LOST_FULL)?;
    // Start the flood with an empty ring buffer.
    loud.events()?;
    let mut best = vec![[u128::MAX; 2]; denied.len()];
    for round in 0..ROUNDS {
        for (i, case) in denied.iter().enumerate() {
            let pair: [&Classifier; 2] = if round % 2 == 0 {
                [loud, quiet]
            } else {
                [quiet, loud]
            };
            for c in pair {
                let (v, ns) = case.run(c, REPEAT)?;
                ensure!(v == TCX_DROP, "{}: verdict {v}", case.name);
                let slot = usize::from(!std::ptr::eq(c, &*loud));
                best[i][slot] = best[i][slot].min(ns);
            }
        }
    }
    let lost =
        loud.events_lost(EVENTS_LOST_SAMPLED)? + loud.events_lost(EVENTS_LOST_FULL)? - lost_before;
    let delivered = loud.events()?.len();
    println!("deny flood, ns per packet, events on vs off (same rounds):");
    for (i, case) in denied.iter().enumerate() {
        let [on, off] = best[i];
        println!(
            "  {:36} on {:>5}  off {:>5}  ratio {:.3}",
            case.name,
            on,
            off,
            on as f64 / off.max(1) as f64
        );
    }
    let sent = (ROUNDS * denied.len()) as u64 * u64::from(REPEAT);
    println!("  {sent} denied packets: {delivered} events delivered, {lost} counted as lost");
    Ok(())
}

fn main() -> Result<()> {
    let mut c = Classifier::load()?;
    program(&mut c)?;
    sizes(&c, "current")?;
    // `PALISADE_EBPF_BASELINE=<object>`: an older build measured alongside.
    let mut base = match std::env::var_os("PALISADE_EBPF_BASELINE") {
        Some(p) => Some(Classifier::load_from(
            std::path::Path::new(&p),
            VerifierLogLevel::default(),
        )?),
        None => None,
    };
    if let Some(b) = base.as_mut() {
        program(b)?;
        sizes(b, "baseline")?;
    }
    let cases = cases();
    let mut harnesses = vec![&c];
    harnesses.extend(base.as_ref());
    let best = measure(&harnesses, &cases, ROUNDS, REPEAT)?;
    let floor = best[0][0];
    println!("ns per packet, best of {ROUNDS} x {REPEAT} runs (above floor):");
    for (i, case) in cases.iter().enumerate() {
        let now = best[0][i];
        print!(
            "  {:36} {:>5} ({:>4})",
            case.name,
            now,
            now.saturating_sub(floor)
        );
        if best.len() > 1 && i > 0 {
            let was = best[1][i];
            let (a, b) = (now.saturating_sub(floor), was.saturating_sub(floor));
            print!(
                "   baseline {:>5} ({:>4})  ratio {:.2}",
                was,
                b,
                a as f64 / b.max(1) as f64
            );
        }
        println!();
    }
    let mut quiet = Classifier::load()?;
    program(&mut quiet)?;
    quiet.set_events(0)?;
    flood(&mut c, &quiet, &cases)?;
    Ok(())
}
