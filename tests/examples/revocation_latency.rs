//! How long a policy change takes to reach an established flow: from the
//! moment the new policy file is in place to the first dropped packet of a
//! flow it refuses, for TCP and UDP, and whether every such flow was cut.
//!
//! One lab node with x/client and x/server (`palisade_tests::revocation`),
//! both isolated both ways and both allowing client -> server:80, and an
//! agent following the manifests directory (`--poll-ms`, 50 by default as
//! in the lab). Each run opens a new flow (a TCP connection or a UDP
//! socket) sending a numbered message every `--period-us`; once it is
//! echoed, and after a random part of the polling period (so that the
//! change lands anywhere in it), the allowing policies are removed. The first dropped packet is
//! the send time of the first message that got no echo (the resolution is
//! the period). A flow is cut when nothing it sent after the agent's round
//! came back (it keeps sending for `AFTER_CUT`). Then the allows are put
//! back for the next run. TCP and UDP runs alternate.
//!
//! ```console
//! cargo xtask build
//! cargo run -p palisade-tests --example revocation_latency -- [--runs 20] [--period-us 1000] [--poll-ms 50]
//! ```

use anyhow::{bail, Context, Result};
use palisade_lab::Protocol;
use palisade_tests::echo_flow::Flow;
use palisade_tests::revocation::{policies, Node, CLIENT_EGRESS, ISOLATE, SERVER_INGRESS};
use std::time::Duration;

/// The longest one flow runs.
const LIMIT: Duration = Duration::from_secs(30);
/// How long a flow keeps sending after the agent's round: long enough for
/// TCP to retransmit the first lost segment.
const AFTER_CUT: Duration = Duration::from_millis(300);

struct Args {
    runs: usize,
    period: Duration,
    poll: Duration,
}

/// One run's figures, in ms from the file write.
struct Run {
    first_drop: f64,
    round: f64,
    cut: bool,
}

/// A random duration below `max`: the change lands anywhere in the
/// agent's polling period, not in step with its last round.
fn jitter(max: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_nanos(r % max.as_nanos().max(1) as u64)
}

fn run(node: &Node, protocol: Protocol, args: &Args) -> Result<Run> {
    let allow = policies(&[ISOLATE, CLIENT_EGRESS, SERVER_INGRESS]);
    node.change(&allow)?;
    let flow = Flow::start(
        &node.lab,
        "x/client",
        "x/server",
        protocol,
        80,
        args.period,
        LIMIT,
    )?;
    flow.wait_echoes(50, Duration::from_secs(5))?;
    std::thread::sleep(jitter(args.poll));
    let change = node.change(ISOLATE)?;
    std::thread::sleep(AFTER_CUT);
    let r = flow.finish();
    if let Some(e) = &r.error {
        bail!("{}: {e}", r.name);
    }
    let Some(first) = r.first_lost() else {
        bail!("{}: nothing lost: the flow was not cut", r.summary());
    };
    if r.sent[first] < change.written {
        bail!("{}: lost before the change", r.summary());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(Run {
        first_drop: ms(r.sent[first] - change.written),
        round: ms(change.enforced - change.written),
        cut: r.echoed_sent_from(change.enforced) == 0,
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(protocol: Protocol, runs: &[Run]) {
    let sorted = |f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (drop, round) = (sorted(|r| r.first_drop), sorted(|r| r.round));
    println!(
        "{}: n={}, cut {}/{}, write -> first dropped packet: median {:.1} ms, p99 {:.1} ms, max {:.1} ms \
         (write -> agent round seen: median {:.1} ms, p99 {:.1} ms)",
        protocol.name(),
        runs.len(),
        runs.iter().filter(|r| r.cut).count(),
        runs.len(),
        percentile(&drop, 0.5),
        percentile(&drop, 0.99),
        drop[drop.len() - 1],
        percentile(&round, 0.5),
        percentile(&round, 0.99),
    );
}

fn parse() -> Result<Args> {
    let mut a = Args {
        runs: 20,
        period: Duration::from_millis(1),
        poll: Duration::from_millis(50),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || -> Result<u64> {
            args.next()
                .with_context(|| format!("{flag} needs a value"))?
                .parse()
                .with_context(|| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--runs" => a.runs = value()? as usize,
            "--period-us" => a.period = Duration::from_micros(value()?),
            "--poll-ms" => a.poll = Duration::from_millis(value()?),
            other => bail!("unknown argument {other:?}"),
        }
    }
    if a.runs == 0 || a.period.is_zero() || a.poll < Duration::from_millis(10) {
        bail!("--runs and --period-us must be > 0, --poll-ms >= 10 (the agent's floor)");
    }
    Ok(a)
}

fn main() -> Result<()> {
    let args = parse()?;
    let node = Node::up_polling("revocation_latency", ISOLATE, Some(args.poll))?;
    println!(
        "{} runs per protocol, a message every {:?}, agent polling every {:?}",
        args.runs, args.period, args.poll
    );
    let (mut tcp, mut udp) = (Vec::new(), Vec::new());
    for i in 0..args.runs {
        for (protocol, out) in [(Protocol::Tcp, &mut tcp), (Protocol::Udp, &mut udp)] {
            let r = run(&node, protocol, &args).with_context(|| {
                format!("run {i}, {}\nagent log:\n{}", protocol.name(), node.log())
            })?;
            eprintln!(
                "run {i} {}: first dropped {:.1} ms, round seen {:.1} ms, cut {}",
                protocol.name(),
                r.first_drop,
                r.round,
                r.cut
            );
            out.push(r);
        }
    }
    report(Protocol::Tcp, &tcp);
    report(Protocol::Udp, &udp);
    Ok(())
}
