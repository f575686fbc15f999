//! `palisade-bench`: the datapath benchmark (run by `cargo xtask bench`).
//!
//! One lab node with a client, a server and an outsider pod; the server
//! selected by policies totalling R rules; every engine (no policy, a no-op
//! TC program, Palisade, iptables as plugins build it, nftables at its
//! best) programmed with the same policies in turn, and measured with the
//! same load (request/response, connect/request/response/close, one bulk
//! stream). See `docs/bench.md`.

mod bpfstats;
mod classifier;
mod collect;
mod engines;
mod figures;
mod frame;
mod iptables;
mod load;
mod manifests;
mod memory;
mod nft;
mod plot;
mod report;
mod run;
mod stats;
mod workload;

use anyhow::Result;
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "palisade-bench",
    about = "Palisade datapath benchmark in the network-namespace lab"
)]
pub struct Args {
    /// Fewer rule counts (0, 100, 10000), 3 rounds of 1 s per measurement.
    #[arg(long)]
    pub quick: bool,
    /// Rule counts, comma-separated (default 0,10,100,1000,10000).
    #[arg(long, value_delimiter = ',')]
    pub rules: Vec<usize>,
    /// Engines, comma-separated (default: all that are available).
    #[arg(long, value_delimiter = ',')]
    pub engines: Vec<String>,
    /// Rounds per rule count (default 5, quick 3; at least 1).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Duration of each measurement in milliseconds (default 2000, quick 1000).
    #[arg(long)]
    pub duration_ms: Option<u64>,
    /// The `palisade` binary (default: `$PALISADE_BIN`, else the workspace's debug build).
    #[arg(long)]
    pub palisade_bin: Option<PathBuf>,
    /// The classifiers' object (default: `$PALISADE_EBPF_OBJECT`, else the
    /// workspace's eBPF build).
    #[arg(long)]
    pub ebpf_object: Option<PathBuf>,
    /// Where report.json goes (default: target/bench/report.json of the workspace).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn main() -> Result<()> {
    run::run(Args::parse())
}
