//! The classifier's own cost per packet at R rules, through
//! BPF_PROG_TEST_RUN, while the agent enforces the workload.
//!
//! The object is loaded a second time with every map opened at the agent's
//! pins: the programs measured read exactly the endpoint records, identity
//! trie, per-pod inner maps and conntrack the agent programmed for R rules.
//! Frames go through `pod_ingress` as if on the server's host veth (its
//! ifindex in the skb, so the server's endpoint record is the one used):
//!
//! - new flow: a SYN from the client on a port never used before: conntrack
//!   miss, the policy lookup that allows it (its rule is the workload's
//!   last), conntrack entry created. A new port per run, so every run is a
//!   first packet;
//! - established: an ACK of a connection opened before: conntrack hit;
//! - denied: a SYN from the outsider: the longest lookup chain (no lookup
//!   can settle early), dropped, its event rate-limited;
//! - noop: the object's `noop` program on the established frame: the cost
//!   of running any program through BPF_PROG_TEST_RUN, the floor.
//!
//! Each figure is the median over single runs (repeat 1: a repeated frame
//! would be a new flow only once), taken alternately so that a drift of the
//! machine touches all four alike. A single run's figure is the kernel's
//! time around one program run, which includes one clock read: the noop
//! figure carries the same overhead, so differences to it are the
//! classifier's work.

use crate::frame::{tcp4, TCP_ACK, TCP_SYN};
use crate::stats::median;
use anyhow::{ensure, Context, Result};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use aya::{Ebpf, EbpfLoader};
use palisade_common::names;
use std::net::Ipv4Addr;
use std::path::Path;

/// Runs per case and measurement: a few tens of milliseconds in all.
const SAMPLES: u16 = 2000;
/// Source ports of the new flows: below the client's ephemeral range, so
/// that no flow of the load tool is ever among them.
const FIRST_NEW_PORT: u16 = 1024;
const ESTABLISHED_PORT: u16 = 999;

const TCX_DROP: u32 = 2;
/// `TCX_NEXT` (-1) as BPF_PROG_TEST_RUN reports it: the verdict of an
/// allowed packet.
const TCX_NEXT: u32 = u32::MAX;
/// Offset of `ifindex` in `struct __sk_buff` (UAPI, stable).
const SKB_IFINDEX_OFFSET: usize = 40;
const NOOP: &str = "noop";

/// Median ns per packet of one measurement.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Sample {
    pub new_flow_ns: f64,
    pub established_ns: f64,
    /// Absent when the server is not isolated (R = 0): the outsider's
    /// packets are then allowed, and a repeated frame is no new flow.
    pub denied_ns: Option<f64>,
    pub noop_ns: f64,
}

/// Who sends what to whom.
pub struct Flows {
    pub client: Ipv4Addr,
    pub outsider: Ipv4Addr,
    pub server: Ipv4Addr,
    pub server_port: u16,
    /// The server's host veth in the node namespace.
    pub ifindex: u32,
    /// Whether a policy isolates the server (the outsider is then denied).
    pub isolated: bool,
}

/// Loads `object` over the maps pinned in `pins` (the agent's node
/// directory) and measures. Must run in the node namespace: the kernel
/// resolves the skb's ifindex in the caller's namespace.
pub fn measure(object: &[u8], pins: &Path, flows: &Flows) -> Result<Sample> {
    let ebpf = load(object, pins)?;
    let prog = |name: &str| -> Result<&SchedClassifier> {
        ebpf.program(name)
            .with_context(|| format!("the eBPF object has no program {name}"))?
            .try_into()
            .with_context(|| format!("{name} is not a TC classifier"))
    };
    let ingress = prog(names::PROG_INGRESS)?;
    let noop = prog(NOOP)?;
    let f = flows;
    let established = tcp4(f.client, f.server, ESTABLISHED_PORT, f.server_port, TCP_ACK);
    let open = tcp4(f.client, f.server, ESTABLISHED_PORT, f.server_port, TCP_SYN);
    let denied = tcp4(f.outsider, f.server, 40000, f.server_port, TCP_SYN);
    ensure!(
        run(ingress, &open, f.ifindex)?.0 == TCX_NEXT,
        "the client's SYN to {}:{} is not allowed by the programmed policy",
        f.server,
        f.server_port
    );

    let (mut new_ns, mut est_ns, mut deny_ns, mut noop_ns) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..SAMPLES {
        let syn = tcp4(
            f.client,
            f.server,
            FIRST_NEW_PORT + i,
            f.server_port,
            TCP_SYN,
        );
        let mut cases = vec![
            Case::new(noop, &established, TCX_NEXT, &mut noop_ns, "noop"),
            Case::new(ingress, &syn, TCX_NEXT, &mut new_ns, "new flow"),
            Case::new(ingress, &established, TCX_NEXT, &mut est_ns, "established"),
        ];
        if f.isolated {
            cases.push(Case::new(
                ingress,
                &denied,
                TCX_DROP,
                &mut deny_ns,
                "denied",
            ));
        }
        for c in cases {
            let (verdict, ns) = run(c.prog, c.frame, f.ifindex)?;
            ensure!(
                verdict == c.want,
                "{} packet: verdict {verdict}, expected {}",
                c.what,
                c.want
            );
            c.out.push(ns);
        }
    }
    Ok(Sample {
        new_flow_ns: median(&new_ns),
        established_ns: median(&est_ns),
        denied_ns: f.isolated.then(|| median(&deny_ns)),
        noop_ns: median(&noop_ns),
    })
}

/// One frame through one program, and where its times go.
struct Case<'a> {
    prog: &'a SchedClassifier,
    frame: &'a [u8],
    want: u32,
    out: &'a mut Vec<f64>,
    what: &'static str,
}

impl<'a> Case<'a> {
    fn new(
        prog: &'a SchedClassifier,
        frame: &'a [u8],
        want: u32,
        out: &'a mut Vec<f64>,
        what: &'static str,
    ) -> Self {
        Case {
            prog,
            frame,
            want,
            out,
            what,
        }
    }
}

/// The object with its maps opened at the pins that exist (every map the
/// agent pinned); only `pod_ingress` and `noop` are loaded.
fn load(object: &[u8], pins: &Path) -> Result<Ebpf> {
    let parsed = aya_obj::Object::parse(object).context("parsing the eBPF object")?;
    let pinned: Vec<(String, std::path::PathBuf)> = parsed
        .maps
        .keys()
        .map(|n| (n.clone(), pins.join(n)))
        .filter(|(_, p)| p.exists())
        .collect();
    ensure!(
        pinned.iter().any(|(n, _)| n == names::ENDPOINTS),
        "no pinned {} in {}: the agent has not programmed the node",
        names::ENDPOINTS,
        pins.display()
    );
    // The agent embeds its own copy of the object: one built at another
    // time could declare other layouts, and aya reuses a pin without
    // comparing. The programs would then read the maps as garbage.
    for (name, path) in &pinned {
        let info = aya::maps::MapInfo::from_pin(path)
            .with_context(|| format!("opening the pinned map {}", path.display()))?;
        let want = &parsed.maps[name];
        ensure!(
            info.key_size() == want.key_size() && info.value_size() == want.value_size(),
            "pinned map {name}: key/value {}/{} bytes, the eBPF object declares {}/{}: the agent \
             was built from another object (rebuild both with `cargo xtask build`)",
            info.key_size(),
            info.value_size(),
            want.key_size(),
            want.value_size()
        );
    }
    let mut loader = EbpfLoader::new();
    for (name, path) in &pinned {
        loader.map_pin_path(name.as_str(), path.as_path());
    }
    let mut ebpf = loader
        .load(object)
        .context("loading the eBPF object over the agent's pinned maps")?;
    for name in [names::PROG_INGRESS, NOOP] {
        let p: &mut SchedClassifier = ebpf
            .program_mut(name)
            .with_context(|| format!("the eBPF object has no program {name}"))?
            .try_into()
            .with_context(|| format!("{name} is not a TC classifier"))?;
        p.load()
            .with_context(|| format!("loading {name} (verifier)"))?;
    }
    Ok(ebpf)
}

/// One run of `frame` on the device `ifindex`: verdict and nanoseconds.
fn run(prog: &SchedClassifier, frame: &[u8], ifindex: u32) -> Result<(u32, f64)> {
    let mut out = vec![0u8; frame.len() + 256];
    // The head of a `struct __sk_buff` up to `ifindex`; the kernel zero-fills
    // the rest.
    let mut ctx = [0u8; SKB_IFINDEX_OFFSET + 8];
    ctx[SKB_IFINDEX_OFFSET..SKB_IFINDEX_OFFSET + 4].copy_from_slice(&ifindex.to_ne_bytes());
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx),
        repeat: 1,
        ..TestRunOptions::new()
    };
    let r = prog.test_run(opts).context("BPF_PROG_TEST_RUN")?;
    Ok((r.return_value, r.duration.as_nanos() as f64))
}
