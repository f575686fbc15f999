//! How long a new pod is held closed by `palisade-cni` before its policy
//! is enforced, with the agent up and with it down, and how many probes
//! got through a held pod (which must be none).
//!
//! A lab node wired by the reference `bridge` (or `ptp`) plugin with
//! `palisade-cni` chained; pods are added one by one as a runtime adds
//! them (ADD through the chain), and a UDP echo is asked of each from the
//! node every millisecond until it answers (node traffic is allowed once
//! the pod is programmed, dropped while it is held).
//!
//! - agent up: from the end of the pod's ADD to its first answer;
//! - agent down: pods are added with no agent running, probed for a while
//!   (every answer is an unfiltered packet), then the agent starts: from
//!   its start to each pod's first answer.
//!
//! ```console
//! cargo xtask build
//! cargo run -p palisade-tests --example pending_window -- [--pods 20] [--layout bridge|ptp]
//! ```

use anyhow::{bail, Context, Result};
use palisade_lab::{
    palisade_bin, write_manifest, AgentOptions, AgentProcess, Cidr, CniLayout, IpamRange, Lab,
    LabSpec, PodSpec, ProbePort, Protocol,
};
use palisade_tests::kernel::Scratch;
use palisade_tests::lab::wired;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

const PORT: ProbePort = ProbePort {
    port: 80,
    protocol: Protocol::Udp,
};
/// How long one pod may stay unanswered before the run gives up.
const LIMIT: Duration = Duration::from_secs(20);
/// How long held pods are probed while the agent is down.
const DOWN_FOR: Duration = Duration::from_secs(2);

fn pod(i: u16) -> PodSpec {
    PodSpec {
        namespace: "w".into(),
        name: format!("p{i}"),
        ips: vec![IpAddr::V4(Ipv4Addr::new(
            10,
            66,
            (i / 200) as u8,
            (10 + i % 200) as u8,
        ))],
        ports: vec![PORT],
    }
}

fn manifests(n: u16) -> String {
    let mut out = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: w}\n");
    for i in 0..=n {
        let p = pod(i);
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: w}}\n\
             spec: {{nodeName: node-1}}\nstatus: {{phase: Running, podIP: {}}}\n",
            p.name, p.ips[0]
        ));
    }
    out
}

/// Asks `ip`:80 for a UDP echo every millisecond until it answers or
/// `limit` passes; when it answered.
fn first_answer(lab: &Lab, ip: IpAddr, limit: Duration) -> Result<Option<Instant>> {
    lab.run_in_node(move || -> Result<Option<Instant>> {
        let s = UdpSocket::bind(("0.0.0.0", 0))?;
        s.set_read_timeout(Some(Duration::from_millis(1)))?;
        let end = Instant::now() + limit;
        let mut buf = [0u8; 64];
        while Instant::now() < end {
            s.send_to(b"held?", (ip, PORT.port))?;
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                if &buf[..n] == b"held?" {
                    return Ok(Some(Instant::now()));
                }
            }
        }
        Ok(None)
    })?
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{what}: {} pods, median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms[ms.len() - 1]
    );
}

struct Node {
    lab: Lab,
    opts: AgentOptions,
    _scratch: Scratch,
}

fn node(label: &str, layout: CniLayout, n: u16) -> Result<Node> {
    let scratch = Scratch::new(label);
    let spec = LabSpec::new(label)
        .ipam_range(IpamRange {
            subnet: Cidr::new(IpAddr::V4(Ipv4Addr::new(10, 66, 0, 0)), 16),
            gateway: IpAddr::V4(Ipv4Addr::new(10, 66, 255, 254)),
        })
        .pod("w", "p0", &pod(0).ips, &[PORT]);
    let (spec, args) = wired(spec, layout, &scratch, "node-1");
    let lab = Lab::up(&spec)?;
    let dir = lab.dir().join("manifests");
    std::fs::create_dir_all(&dir)?;
    write_manifest(&dir.join("pods.yaml"), &manifests(n))?;
    let mut opts = AgentOptions::new(palisade_bin()?, vec![dir], "node-1", scratch.bpffs());
    opts.args = args;
    Ok(Node {
        lab,
        opts,
        _scratch: scratch,
    })
}

fn agent_up(layout: CniLayout, n: u16) -> Result<()> {
    let mut node = node("pending_up", layout, n)?;
    let agent = node.lab.start_agent(&node.opts)?;
    node.lab.wait_agent(&agent, 0, LIMIT)?;
    let mut ms = Vec::new();
    for i in 1..=n {
        let p = pod(i);
        node.lab.add_pod(&p)?;
        let added = Instant::now();
        let Some(at) = first_answer(&node.lab, p.ips[0], LIMIT)? else {
            bail!(
                "{} never answered:\n{}",
                p.name,
                node.lab.log(&agent.process)
            );
        };
        ms.push((at - added).as_secs_f64() * 1e3);
    }
    report("agent up: end of ADD -> enforced", ms);
    Ok(())
}

fn agent_down(layout: CniLayout, n: u16) -> Result<()> {
    let mut node = node("pending_down", layout, n)?;
    for i in 1..=n {
        node.lab.add_pod(&pod(i))?;
    }
    // No agent: every pod is held. Each answer would be an unfiltered packet.
    let mut through = 0;
    let per_pod = DOWN_FOR / u32::from(n);
    for i in 1..=n {
        if first_answer(&node.lab, pod(i).ips[0], per_pod)?.is_some() {
            through += 1;
        }
    }
    println!("agent down: {n} held pods probed for {DOWN_FOR:?}: {through} answered (unfiltered)");
    let started = Instant::now();
    let agent: AgentProcess = node.lab.start_agent(&node.opts)?;
    let mut ms = Vec::new();
    for i in 1..=n {
        let p = pod(i);
        let Some(at) = first_answer(&node.lab, p.ips[0], LIMIT)? else {
            bail!(
                "{} never answered:\n{}",
                p.name,
                node.lab.log(&agent.process)
            );
        };
        ms.push((at - started).as_secs_f64() * 1e3);
    }
    report("agent down: agent start -> enforced", ms);
    Ok(())
}

fn main() -> Result<()> {
    let mut n: u16 = 20;
    let mut layout = CniLayout::Bridge;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--pods" => n = args.next().context("--pods N")?.parse()?,
            "--layout" => layout = args.next().context("--layout bridge|ptp")?.parse()?,
            other => bail!("unknown argument {other:?}"),
        }
    }
    if layout == CniLayout::Routed || n == 0 {
        bail!("--layout bridge|ptp (the plugin holds pods) and --pods > 0");
    }
    println!("layout {layout}, {n} pods per case");
    agent_up(layout, n)?;
    agent_down(layout, n)
}
